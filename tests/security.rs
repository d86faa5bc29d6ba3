//! The security boundary, end to end: TLS and mutual TLS with real
//! handshakes, every endpoint's permission for every role, token
//! revocation and expiry across nodes, JWTs, and the 415 that keeps
//! browsers' cross-site posts out.

mod common;

use common::*;
use orrery_server::auth::perms::{Perm, REST};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A concrete path for a route pattern.
fn concrete(route: &str) -> String {
    route
        .replace("{*key}", "sec-k")
        .replace("{q}", "sec-q")
        .replace("{c}", "sec-c")
        .replace("{v}", "1")
        .replace("{name}", "sec-s")
        .replace("{id}", "sec-x")
        .replace("{*file}", "app.js")
}

/// Sends `method path` with `token` (and `{}` as a JSON body); the
/// status, or None when the answer did not come in time (a stream).
async fn call(
    c: &Cluster,
    i: usize,
    method: &str,
    route: &str,
    token: Option<&str>,
) -> Option<u16> {
    let http = http_client(&c.ca_cert(), token);
    let url = c.nodes[i].url(&concrete(route));
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut r = http.request(m, &url).timeout(Duration::from_secs(3));
    if method != "GET" {
        r = if route == "/v1/kv/{*key}" && method == "PUT" {
            r.body("v")
        } else {
            r.json(&json!({}))
        };
    }
    match r.send().await {
        Ok(resp) => Some(resp.status().as_u16()),
        Err(e) if e.is_timeout() => None,
        Err(e) => panic!("{method} {route}: {e}"),
    }
}

async fn token(c: &Cluster, name: &str, role: &str, extra: Value) -> String {
    let mut body = json!({"name": name, "role": role});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let v = c
        .json_ok(0, "POST", "/v1/auth/tokens", Some(body), 201)
        .await;
    v["token"].as_str().expect("token").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_needs_a_token_and_each_role_gets_what_it_may() {
    let c = Cluster::formed(1, 2, &[]).await;
    // Without a token: 401 (with WWW-Authenticate) on every endpoint but
    // the probes. The table is the router's (auth/perms.rs checks both ways).
    for (method, route, perm) in REST {
        let status = call(&c, 0, method, route, None).await;
        if *perm == Perm::Open {
            assert_eq!(status, Some(200), "{method} {route}");
        } else {
            assert_eq!(status, Some(401), "{method} {route} without a token");
        }
    }
    let resp = http_client(&c.ca_cert(), None)
        .get(c.nodes[0].url("/v1/kv/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer realm=\"orrery\""
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");
    // A token that is not one: 401 too.
    assert_eq!(
        call(&c, 0, "GET", "/v1/kv/{*key}", Some("orr_root_nope")).await,
        Some(401)
    );

    let roles = [
        ("reader", orrery_server::auth::Role::Reader),
        ("writer", orrery_server::auth::Role::Writer),
        ("worker", orrery_server::auth::Role::Worker),
        ("admin", orrery_server::auth::Role::Admin),
    ];
    for (name, role) in roles {
        let t = token(&c, &format!("t-{name}"), name, json!({})).await;
        for (method, route, perm) in REST {
            if matches!(perm, Perm::Open | Perm::Metrics) {
                continue;
            }
            let status = call(&c, 0, method, route, Some(&t)).await;
            if perm.allows(role) {
                assert!(
                    !matches!(status, Some(401 | 403)),
                    "{name} may {method} {route} ({}) but got {status:?}",
                    perm.name()
                );
            } else {
                assert_eq!(
                    status,
                    Some(403),
                    "{name} must not {method} {route} ({})",
                    perm.name()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_a_text_plain_post_to_a_json_endpoint_gets_415_and_changes_nothing() {
    let c = Cluster::formed(1, 2, &[]).await;
    let http = http_client(&c.ca_cert(), Some(c.token()));
    for (method, route, _) in REST {
        if matches!(*method, "GET") || (*method == "PUT" && *route == "/v1/kv/{*key}") {
            continue;
        }
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = http
            .request(m, c.nodes[0].url(&concrete(route)))
            .header("content-type", "text/plain")
            .body(r#"{"name":"csrf","kind":"command","queue":"csrf"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 415, "{method} {route}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unsupported_media_type");
    }
    // The queue a form post tried to create does not exist.
    let (s, _) = c.json_req(0, "GET", "/v1/queues/csrf", None).await;
    assert_eq!(s, 404);
    let (s, v) = c.json_req(0, "GET", "/v1/jobs?queue=csrf", None).await;
    assert_eq!(
        (s, v["jobs"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_everywhere_plain_http_and_foreign_certificates_are_refused() {
    let c = Cluster::formed(1, 1, &[]).await;
    // Plain HTTP to the TLS client port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", c.nodes[0].addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");

    // The peer port: the cluster CA is trusted, but a client must show a
    // certificate the cluster CA signed.
    let peer = c.nodes[0].peer_addr.clone();
    assert!(
        !peer_accepts(&c, &peer, None).await,
        "peer port accepted a client without a certificate"
    );
    let other = tempfile::tempdir().unwrap();
    orrery_tls::create_ca(&other.path().join("ca"), false).unwrap();
    orrery_tls::create_node(
        &other.path().join("ca"),
        &other.path().join("n"),
        &["127.0.0.1".into()],
        false,
    )
    .unwrap();
    assert!(
        !peer_accepts(&c, &peer, Some(&other.path().join("n"))).await,
        "peer port accepted a certificate from another CA"
    );
    // The control: a certificate from the cluster CA gets through.
    let own = c.certs_dir(1);
    assert!(
        peer_accepts(&c, &peer, Some(&own)).await,
        "peer port refused a node certificate"
    );
}

/// Whether the peer port at `addr` keeps a TLS connection open (an HTTP/2
/// SETTINGS frame comes back) for a client trusting the cluster CA and
/// showing the certificate in `certs` (none: no certificate).
async fn peer_accepts(c: &Cluster, addr: &str, certs: Option<&std::path::Path>) -> bool {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(c.ca_cert()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(orrery_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match certs {
        Some(d) => {
            let chain = CertificateDer::pem_file_iter(d.join("node.crt"))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(d.join("node.key")).unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let Ok(mut tls) = connector.connect(name, tcp).await else {
        return false;
    };
    // TLS 1.3: a refused client certificate surfaces on the first read.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    if tls.write_all(preface).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 9];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut buf)).await,
        Ok(Ok(_)) if buf[3] == 0x4
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_tokens_stop_working_on_every_node_within_2s() {
    let c = Cluster::formed(3, 2, &[]).await;
    let t = token(&c, "soon-revoked", "reader", json!({})).await;
    let id = c.json_ok(0, "GET", "/v1/auth/tokens", None, 200).await["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "soon-revoked")
        .map(|x| x["id"].as_str().unwrap().to_string())
        .unwrap();
    // Working on every node (each checks its own replica of the record).
    for i in 0..3 {
        wait_until(Duration::from_secs(5), || async {
            call(&c, i, "GET", "/v1/cluster", Some(&t)).await == Some(200)
        })
        .await
        .unwrap_or_else(|_| panic!("token not accepted by node {}", i + 1));
    }
    c.json_ok(0, "DELETE", &format!("/v1/auth/tokens/{id}"), None, 200)
        .await;
    let revoked_at = Instant::now();
    for i in 0..3 {
        wait_until(Duration::from_secs(2), || async {
            call(&c, i, "GET", "/v1/cluster", Some(&t)).await == Some(401)
        })
        .await
        .unwrap_or_else(|_| panic!("node {} still took a revoked token after 2 s", i + 1));
    }
    eprintln!(
        "revocation took effect everywhere in {:?}",
        revoked_at.elapsed()
    );
    assert!(revoked_at.elapsed() < Duration::from_secs(2));

    let t = token(&c, "short-lived", "reader", json!({"ttl_s": 3})).await;
    let created = Instant::now();
    for i in 0..3 {
        wait_until(Duration::from_secs(2), || async {
            call(&c, i, "GET", "/v1/cluster", Some(&t)).await == Some(200)
        })
        .await
        .unwrap_or_else(|_| panic!("fresh token refused by node {}", i + 1));
    }
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(created.elapsed())).await;
    for i in 0..3 {
        wait_until(Duration::from_secs(2), || async {
            call(&c, i, "GET", "/v1/cluster", Some(&t)).await == Some(401)
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "node {} still took an expired token 2 s after expiry",
                i + 1
            )
        });
    }
    // The list shows what happened.
    let list = c.json_ok(1, "GET", "/v1/auth/tokens", None, 200).await;
    let rec = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id.as_str())
        .cloned();
    assert!(
        rec.is_some_and(|r| r["revoked_ms"].as_u64().is_some()),
        "{list}"
    );
    assert!(
        !list.to_string().contains("hash"),
        "token hashes must not be listed: {list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_good_expired_wrong_key_wrong_audience() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let dir = tempfile::tempdir().unwrap();
    let secret = "a-shared-secret-of-at-least-32-bytes!!";
    let key = dir.path().join("jwt.key");
    std::fs::write(&key, secret).unwrap();
    let key_arg = key.display().to_string();
    let c = Cluster::formed(1, 1, &["--jwt-key", &key_arg, "--jwt-audience", "orrery"]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let jwt = |secret: &str, exp: u64, aud: &str, role: &str| {
        let claims = json!({"sub": "alice@idp", "role": role, "exp": exp, "aud": aud});
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let good = jwt(secret, now + 300, "orrery", "writer");
    assert_eq!(
        call(&c, 0, "PUT", "/v1/kv/{*key}", Some(&good)).await,
        Some(200)
    );
    // A writer may not manage tokens.
    assert_eq!(
        call(&c, 0, "GET", "/v1/auth/tokens", Some(&good)).await,
        Some(403)
    );
    for (what, bad) in [
        ("expired", jwt(secret, now - 120, "orrery", "writer")),
        (
            "wrong key",
            jwt(
                "another-secret-another-secret-another!",
                now + 300,
                "orrery",
                "writer",
            ),
        ),
        (
            "wrong audience",
            jwt(secret, now + 300, "someone-else", "writer"),
        ),
        ("unknown role", jwt(secret, now + 300, "orrery", "root")),
    ] {
        assert_eq!(
            call(&c, 0, "GET", "/v1/kv/{*key}", Some(&bad)).await,
            Some(401),
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_jobs_are_for_admins_and_never_for_anonymous_callers() {
    let c = Cluster::formed(1, 1, &[]).await;
    c.json_ok(0, "POST", "/v1/queues", Some(json!({"name": "cmd"})), 201)
        .await;
    let job = json!({"queue": "cmd", "kind": "command", "params": {"argv": ["true"]}});
    let writer = token(&c, "w", "writer", json!({})).await;
    let r = http_client(&c.ca_cert(), Some(&writer))
        .post(c.nodes[0].url("/v1/jobs"))
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // The same job from the root token (an admin) is accepted, and the job
    // names its submitter.
    let v = c
        .json_ok(0, "POST", "/v1/jobs", Some(job.clone()), 201)
        .await;
    assert_eq!(v["submitted_by"], "root", "{v}");
    // A writer's non-command job is named after the writer, whatever the
    // body claims.
    let r = http_client(&c.ca_cert(), Some(&writer))
        .post(c.nodes[0].url("/v1/jobs"))
        .json(&json!({"queue": "cmd", "kind": "noop", "submitted_by": "root"}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["submitted_by"], "w", "{v}");

    // --insecure: everyone is anonymous, and anonymous callers never
    // submit command jobs.
    let i = Cluster::formed(1, 1, &["--insecure"]).await;
    i.json_ok(0, "POST", "/v1/queues", Some(json!({"name": "cmd"})), 201)
        .await;
    let (s, v) = i.json_req(0, "POST", "/v1/jobs", Some(job)).await;
    assert_eq!(s, 403, "{v}");
    let st = i.json_ok(0, "GET", "/v1/cluster", None, 200).await;
    assert_eq!(st["insecure"], true);
    let text = i.ctl_ok(0, &["status"]);
    assert!(text.contains("--insecure"), "{text}");
}

/// `method path` with `token` and a JSON body: (status, answer).
async fn send(c: &Cluster, token: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = http_client(&c.ca_cert(), Some(token)).request(m, c.nodes[0].url(path));
    if method != "GET" {
        r = r.json(&body);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_tokens_stay_in_their_queues_and_writers_cannot_cancel_commands() {
    let c = Cluster::formed(1, 1, &[]).await;
    for q in ["mine", "theirs"] {
        c.json_ok(0, "POST", "/v1/queues", Some(json!({"name": q})), 201)
            .await;
    }
    let other = c
        .json_ok(
            0,
            "POST",
            "/v1/jobs",
            Some(json!({"queue": "theirs", "kind": "ext"})),
            201,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let w = token(&c, "w-mine", "worker", json!({"queues": ["mine"]})).await;
    let claim = json!({"worker_id": "w1", "kinds": ["ext"], "lease_s": 60});
    // Its own queue: allowed (nothing queued there yet).
    let (s, _) = send(&c, &w, "POST", "/v1/queues/mine/claim", claim.clone()).await;
    assert_eq!(s, 204, "claim from its own queue");
    // Another queue: refused, and the job there is untouched.
    let (s, v) = send(&c, &w, "POST", "/v1/queues/theirs/claim", claim.clone()).await;
    assert_eq!(s, 403, "{v}");
    for (method, path) in [
        ("GET", format!("/v1/jobs/{other}")),
        ("GET", format!("/v1/jobs/{other}/runs")),
        ("GET", format!("/v1/jobs/{other}/logs")),
        ("POST", format!("/v1/jobs/{other}/heartbeat")),
        ("POST", format!("/v1/jobs/{other}/complete")),
        ("POST", format!("/v1/jobs/{other}/fail")),
        ("GET", "/v1/jobs?queue=theirs".to_string()),
        ("GET", "/v1/jobs".to_string()),
    ] {
        let (s, v) = send(&c, &w, method, &path, json!({"token": 1})).await;
        assert_eq!(s, 403, "{method} {path}: {v}");
    }
    let job = c.job(0, &other).await;
    assert_eq!(job["state"], "queued", "{job}");

    // A writer may cancel its jobs, but not a command job.
    let cmd = c
        .json_ok(
            0,
            "POST",
            "/v1/jobs",
            Some(json!({"queue": "theirs", "kind": "command", "params": {"argv": ["true"]}, "run_at_ms": 4102444800000u64})),
            201,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let writer = token(&c, "wr", "writer", json!({})).await;
    let (s, v) = send(
        &c,
        &writer,
        "POST",
        &format!("/v1/jobs/{cmd}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = send(
        &c,
        &writer,
        "POST",
        &format!("/v1/jobs/{other}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

/// Sends one `Peer.Forward` to node `i`'s peer port as a node would (mutual
/// TLS with a certificate from the cluster CA) and returns its answer.
async fn forward(
    c: &Cluster,
    i: usize,
    op: &orrery_server::node::ops::ForwardOp,
) -> Result<orrery_server::node::ops::ForwardOk, orrery_server::ApiError> {
    let certs = orrery_tls::NodeCerts::load(&c.certs_dir(99)).unwrap();
    let peers = orrery_raft::PeerClients::new(None).with_tls(Some(orrery_raft::network::peer_tls(
        &certs.ca_pem,
        &certs.cert_pem,
        &certs.key_pem,
    )));
    let mut client = peers.client(&c.nodes[i].peer_addr).unwrap();
    let reply = client
        .forward(orrery_proto::peer::ForwardRequest {
            payload: orrery_storage::encode(op).unwrap(),
            hops: 0,
        })
        .await
        .expect("forward RPC")
        .into_inner();
    orrery_storage::decode(&reply.payload).expect("forward reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_meets_the_public_apis_rules() {
    use orrery_server::node::ops::ForwardOp;
    use orrery_server::ApiError;
    let c = Cluster::formed(1, 2, &["--max-key-bytes", "64"]).await;
    // An Init with a shard count the API refuses.
    let init = ForwardOp::Write {
        group: 0,
        cmd: orrery_raft::Command::Placement(orrery_placement::PlacementCommand::Init {
            cluster_id: "x".into(),
            shard_count: 1_000_000,
            node_id: 1,
            addr: orrery_types::NodeAddr {
                addr: "a".into(),
                peer_addr: "b".into(),
            },
        }),
    };
    match forward(&c, 0, &init).await {
        Err(ApiError::BadRequest { code, .. }) => assert_eq!(code, "invalid_shards"),
        other => {
            panic!("a forwarded Init with a million shards was not refused as invalid: {other:?}")
        }
    }
    // A key over --max-key-bytes, written straight to a shard group.
    let put = ForwardOp::Write {
        group: orrery_types::shard_group(0),
        cmd: orrery_raft::Command::Kv(orrery_kv::KvCommand::Put {
            key: vec![b'k'; 1000],
            value: b"v".to_vec(),
        }),
    };
    match forward(&c, 0, &put).await {
        Err(ApiError::TooLarge(m)) => assert!(m.contains("key"), "{m}"),
        other => panic!("a forwarded oversized key was not refused: {other:?}"),
    }
    // The same path takes a valid write (the control).
    let ok = ForwardOp::Write {
        group: orrery_types::shard_group(0),
        cmd: orrery_raft::Command::Kv(orrery_kv::KvCommand::Put {
            key: b"fwd".to_vec(),
            value: b"v".to_vec(),
        }),
    };
    assert!(forward(&c, 0, &ok).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_needs_a_token_and_the_role() {
    let c = Cluster::formed(1, 1, &[]).await;
    let connect = |token: Option<String>| {
        let opts = orrery_client::Options {
            ca_cert: Some(c.ca_cert()),
            token,
        };
        let addr = c.nodes[0].addr.clone();
        async move {
            orrery_client::Client::connect_with(&addr, &opts)
                .await
                .expect("connect")
        }
    };
    // No token: UNAUTHENTICATED, before any service runs.
    let mut anon = connect(None).await;
    let e = anon.put("k", "v").await.expect_err("put without a token");
    match e {
        orrery_client::Error::Status(s) => {
            assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}")
        }
        other => panic!("{other}"),
    }
    // A reader reads but may not write: PERMISSION_DENIED naming the permission.
    let reader = token(&c, "grpc-reader", "reader", json!({})).await;
    let mut r = connect(Some(reader)).await;
    assert!(r.get("k").await.expect("reader get").is_none());
    match r.put("k", "v").await.expect_err("reader put") {
        orrery_client::Error::Status(s) => {
            assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
            assert!(s.message().contains("write"), "{}", s.message());
        }
        other => panic!("{other}"),
    }
    // Tokens over gRPC: admins only.
    let listed = r
        .auth()
        .list_tokens(orrery_client::pb::ListTokensRequest {})
        .await
        .expect_err("a reader listed tokens");
    assert_eq!(listed.code(), tonic::Code::PermissionDenied);
    let mut root = connect(Some(c.token().to_string())).await;
    root.put("k", "v").await.expect("root put");
    let all = root
        .auth()
        .list_tokens(orrery_client::pb::ListTokensRequest {})
        .await
        .expect("root lists tokens")
        .into_inner();
    assert!(all.tokens.iter().any(|t| t.name == "grpc-reader"));
}
