//! The policy side of "untrusted input cannot reach the host": http data
//! sources cannot be turned on the node's own network (SSRF), a costly
//! policy stops at its deadline while the node keeps serving, and policies
//! cannot enqueue `command` jobs. Real nodes, real sockets, real TLS.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

async fn call(c: &Cluster, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let start = Instant::now();
    loop {
        let url = c.nodes[0].url(path);
        let mut req = match method {
            "GET" => c.http.get(&url),
            _ => c.http.post(&url),
        };
        if let Some(b) = &body {
            req = req.json(b);
        }
        let r = req
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        if status == 503 && start.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        return (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        );
    }
}

/// Serves one canned answer per path, over any stream (plain or TLS).
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, redirect_to: String) {
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return,
            Ok(k) => n += k,
        }
    }
    let req = String::from_utf8_lossy(&buf[..n]).to_string();
    let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
    let (status, extra, body) = if path.starts_with("/ok") {
        ("200 OK", String::new(), r#"{"score": 42}"#.to_string())
    } else if path.starts_with("/redirect") {
        (
            "302 Found",
            format!("location: {redirect_to}\r\n"),
            "{}".to_string(),
        )
    } else if path.starts_with("/big") {
        // 2 MiB of valid JSON, over the 1 MiB cap.
        let s = "x".repeat(2 << 20);
        ("200 OK", String::new(), format!("{{\"s\": \"{s}\"}}"))
    } else if path.starts_with("/slow") {
        tokio::time::sleep(Duration::from_secs(20)).await;
        ("200 OK", String::new(), "{}".to_string())
    } else {
        ("404 Not Found", String::new(), "{}".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body.as_bytes()).await;
}

/// A plain HTTP server on 127.0.0.1; its redirects point at `redirect_to`.
async fn http_server(redirect_to: String) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(answer(s, redirect_to.clone()));
        }
    });
    format!("http://{addr}")
}

/// An HTTPS server on 127.0.0.1 with a certificate made here, and that
/// certificate as PEM (for the node's SSL_CERT_FILE).
async fn https_server() -> (String, String) {
    use tokio_rustls::rustls;
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    answer(tls, String::new()).await;
                }
            });
        }
    });
    (format!("https://{addr}"), ck.cert.pem())
}

/// A policy reading source `source` with key `key` (on_error: fail).
fn lookup_graph(source: &str) -> Value {
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"k": "string"}}},
            {"id": "get", "type": "lookup", "config": {"source": source, "key": "input.k", "as": "r"}},
            {"id": "out", "type": "output", "config": {"fields": {"r": "r"}}}
        ],
        "edges": [{"from": "in", "to": "get"}, {"from": "get", "to": "out"}]
    })
}

/// Creates policy `name` reading `source`, runs it on key `key`; the run.
async fn run_lookup(c: &Cluster, name: &str, source: &str, key: &str) -> Value {
    let (s, v) = call(c, "POST", "/v1/policies", Some(json!({"name": name}))).await;
    assert_eq!(s, 201, "{v}");
    let path = format!("/v1/policies/{name}/versions");
    let (s, v) = call(
        c,
        "POST",
        &path,
        Some(json!({"graph": lookup_graph(source), "activate": true})),
    )
    .await;
    assert!(s == 200 || s == 201, "{v}");
    let path = format!("/v1/policies/{name}/runs");
    let (s, v) = call(c, "POST", &path, Some(json!({"input": {"k": key}}))).await;
    assert_eq!(s, 200, "{v}");
    v
}

fn source(name: &str, url: &str, extra: Value) -> Value {
    let mut s = json!({"name": name, "kind": "http", "url_template": url});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            s[k] = v;
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sources_cannot_reach_the_host() {
    // 127.0.0.2 is loopback too, and not allowlisted: the redirect target.
    let svc = http_server("http://127.0.0.2:9/ok".into()).await;
    let (tls, pem) = https_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).expect("write ca");
    let ca_s = ca.to_string_lossy().to_string();
    let c = Cluster::start_with_env(
        1,
        &["--http-sources-allow", "127.0.0.1"],
        &[("SSL_CERT_FILE", &ca_s)],
    )
    .await;
    c.form(1);

    // Refused at creation: forbidden address literals, schemes, userinfo.
    for url in [
        "http://127.0.0.2/{key}",
        "http://169.254.169.254/latest/meta-data/{key}",
        "http://10.0.0.1/{key}",
        "http://192.168.1.1/{key}",
        "http://[::1]/{key}",
        "http://[::ffff:169.254.169.254]/{key}",
        "http://0x7f.2/{key}",
        "ftp://example.com/{key}",
        "http://user:pw@example.com/{key}",
    ] {
        let (s, v) = call(
            &c,
            "POST",
            "/v1/data-sources",
            Some(source("bad", url, json!({}))),
        )
        .await;
        assert_eq!(s, 400, "{url}: {v}");
        assert_eq!(v["error"]["code"], "invalid_source", "{url}: {v}");
    }
    for extra in [
        json!({"timeout_ms": 30_001}),
        json!({"timeout_ms": 0}),
        json!({"retries": 11}),
    ] {
        let (s, v) = call(
            &c,
            "POST",
            "/v1/data-sources",
            Some(source("bad", &format!("{svc}/ok"), extra.clone())),
        )
        .await;
        assert_eq!(s, 400, "{extra}: {v}");
    }

    // Allowed, and working: the allowlisted loopback server, over http and
    // over https with a certificate trusted through SSL_CERT_FILE.
    let ok_sources = [
        ("plain", format!("{svc}/ok/{{key}}")),
        ("tls", format!("{tls}/ok/{{key}}")),
    ];
    for (name, url) in &ok_sources {
        let (s, v) = call(
            &c,
            "POST",
            "/v1/data-sources",
            Some(source(name, url, json!({}))),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        let run = run_lookup(&c, &format!("p-{name}"), name, "a").await;
        assert_eq!(run["status"], "succeeded", "{name}: {run}");
        assert_eq!(run["output"]["r"]["score"], 42, "{run}");
    }

    // Refused at lookup time: a key that makes the host an address, a
    // redirect, an oversize body. (A name resolving to loopback: in the
    // other test, whose node allows no loopback address.)
    let port = svc.rsplit(':').next().unwrap().to_string();
    let cases = [
        (
            "bykey",
            format!("http://127.0.0.{{key}}:{port}/ok"),
            "2",
            "loopback",
        ),
        (
            "redirect",
            format!("{svc}/redirect/{{key}}"),
            "x",
            "redirects are not followed",
        ),
        ("big", format!("{svc}/big/{{key}}"), "x", "larger than"),
    ];
    for (name, url, key, needle) in &cases {
        let (s, v) = call(
            &c,
            "POST",
            "/v1/data-sources",
            Some(source(name, url, json!({}))),
        )
        .await;
        assert_eq!(s, 201, "{name}: {v}");
        let run = run_lookup(&c, &format!("p-{name}"), name, key).await;
        assert_eq!(run["status"], "failed", "{name}: {run}");
        let e = run["error"].as_str().unwrap_or_default();
        assert!(e.contains(needle), "{name}: {e}");
    }

    // A slow server holds a lookup no longer than its deadline, retries
    // included (before: timeout_ms per attempt, 11 attempts).
    let url = format!("{svc}/slow/{{key}}");
    let body = source("slow", &url, json!({"timeout_ms": 500, "retries": 10}));
    let (s, v) = call(&c, "POST", "/v1/data-sources", Some(body)).await;
    assert_eq!(s, 201, "{v}");
    let t = Instant::now();
    let run = run_lookup(&c, "p-slow", "slow", "x").await;
    let took = t.elapsed();
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out"),
        "{run}"
    );
    // The policy and version creation are in `took` too: generous bound.
    assert!(took < Duration::from_secs(4), "the lookup took {took:?}");
}

/// Nested comprehensions over 3000 items: seconds of CPU without a deadline.
fn costly_graph(deadline_ms: Option<u64>) -> Value {
    let mut g = json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"xs": "array"}}},
            {"id": "t", "type": "transform", "config": {"assign": {"r": "input.xs.map(x, input.xs.filter(y, y % 7 == x % 7).size()).size()"}}},
            {"id": "out", "type": "output", "config": {"fields": {"r": "r"}}}
        ],
        "edges": [{"from": "in", "to": "t"}, {"from": "t", "to": "out"}]
    });
    if let Some(d) = deadline_ms {
        g["deadline_ms"] = json!(d);
    }
    g
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costly_policies_stop_at_their_deadline_and_the_node_keeps_serving() {
    let c = Cluster::formed(1, 1, &[]).await;
    let (s, v) = call(&c, "POST", "/v1/policies", Some(json!({"name": "costly"}))).await;
    assert_eq!(s, 201, "{v}");
    let versions = "/v1/policies/costly/versions";

    // Limits refused at creation, with their codes.
    let (s, v) = call(
        &c,
        "POST",
        versions,
        Some(json!({"graph": costly_graph(Some(5_000))})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deadline_ms"),
        "{v}"
    );
    let mut long = costly_graph(None);
    long["nodes"][1]["config"]["assign"]["r"] = json!(format!("1{}", " + 1".repeat(1100)));
    let (s, v) = call(&c, "POST", versions, Some(json!({"graph": long}))).await;
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["error"]["code"], "too_large", "{v}");

    let (s, v) = call(
        &c,
        "POST",
        versions,
        Some(json!({"graph": costly_graph(None), "activate": true})),
    )
    .await;
    assert!(s == 200 || s == 201, "{v}");
    let xs: Vec<i64> = (0..3000).collect();
    let input = json!({"input": {"xs": xs}});

    // Baseline KV latency, then the same while costly runs are in flight.
    c.put_ok(0, "probe", "v").await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let (s, _) = c.get(0, "probe", "linearizable").await;
        assert_eq!(s, 200);
        idle.push(t.elapsed());
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut runners = Vec::new();
    for _ in 0..4 {
        let (stop, input) = (stop.clone(), input.clone());
        let http = c.http.clone();
        let url = c.nodes[0].url("/v1/policies/costly/runs");
        runners.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let t = Instant::now();
                let r = http.post(&url).json(&input).send().await.expect("run");
                let status = r.status().as_u16();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                seen.push((status, v, t.elapsed()));
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut busy = Vec::new();
    for _ in 0..60 {
        let t = Instant::now();
        let (s, _) = c.get(0, "probe", "linearizable").await;
        assert_eq!(s, 200);
        busy.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut runs = 0;
    for r in runners {
        for (status, v, took) in r.await.expect("runner") {
            runs += 1;
            assert_eq!(status, 422, "{v}");
            assert_eq!(v["error"]["code"], "evaluation_timeout", "{v}");
            // 100 ms of evaluation, plus recording the failed run.
            assert!(took < Duration::from_secs(3), "a run took {took:?}");
        }
    }
    assert!(runs >= 4, "only {runs} runs finished");
    busy.sort();
    idle.sort();
    let p99 = busy[busy.len() * 99 / 100];
    assert!(
        p99 < Duration::from_millis(500),
        "KV GET p99 {p99:?} while costly runs were in flight (idle max {:?})",
        idle.last()
    );

    // A host name is resolved and checked at lookup time: localhost is
    // loopback, and this node allows nothing.
    let src = source("byname", "http://localhost:9/ok/{key}", json!({}));
    let (s, v) = call(&c, "POST", "/v1/data-sources", Some(src)).await;
    assert_eq!(s, 201, "{v}");
    let run = run_lookup(&c, "p-byname", "byname", "x").await;
    assert_eq!(run["status"], "failed", "{run}");
    let e = run["error"].as_str().unwrap_or_default();
    assert!(e.contains("loopback") && e.contains("localhost"), "{e}");

    // A small input finishes; a command enqueue is refused at creation.
    let (s, v) = call(
        &c,
        "POST",
        "/v1/policies/costly/runs",
        Some(json!({"input": {"xs": [1, 2]}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "succeeded", "{v}");
    let (s, v) = call(&c, "POST", "/v1/queues", Some(json!({"name": "q"}))).await;
    assert!(s == 200 || s == 201, "{v}");
    let cmd = json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {}}},
            {"id": "e", "type": "enqueue", "config": {"queue": "q", "kind": "command", "params": {"argv": "['touch', '/tmp/pwned']"}}},
            {"id": "out", "type": "output", "config": {"fields": {"ok": "true"}}}
        ],
        "edges": [{"from": "in", "to": "e"}, {"from": "e", "to": "out"}]
    });
    let (s, v) = call(&c, "POST", versions, Some(json!({"graph": cmd}))).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_graph", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("command"),
        "{v}"
    );
}
