//! Overload protection on the client port: requests beyond
//! `--max-requests` wait at most `--queue-wait-ms` and are answered 503
//! `overloaded` (REST and gRPC) while probes still answer; requests not
//! answered within `--request-deadline-ms` (or a shorter `grpc-timeout`)
//! get 503 `timeout`; connections beyond `--max-connections` are closed as
//! soon as they are accepted. Memory under excess load:
//! tests/overload_memory.rs.

mod common;

use common::{http_client, wait_until, Cluster};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_beyond_the_cap_are_shed_at_once() {
    let mut c = Cluster::formed(3, 2, &["--max-requests", "4"]).await;
    // Without a quorum, writes to node 1 wait out the request timeout
    // (5 s): each holds one of its 4 slots meanwhile.
    c.kill9(1);
    c.kill9(2);
    let http = http_client(&c.ca_cert(), Some(c.token()));
    // The order in which answers arrive: the shed ones must come before
    // any of the held ones.
    let order = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..20)
        .map(|k| {
            let (http, order) = (http.clone(), order.clone());
            let url = c.nodes[0].url(&format!("/v1/kv/k{k}"));
            tokio::spawn(async move {
                let r = http.put(url).body("v").send().await.expect("an answer");
                let status = r.status().as_u16();
                let retry = r.headers().get("retry-after").is_some();
                let body = r.text().await.unwrap_or_default();
                let shed = status == 503 && body.contains("\"overloaded\"");
                assert!(!shed || retry, "a shed request without Retry-After");
                order.lock().unwrap().push(shed);
            })
        })
        .collect();
    // While they wait, probes answer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let h = c
        .http
        .get(c.nodes[0].url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(h.status(), 200, "a probe was shed");
    // gRPC callers are shed too, with UNAVAILABLE and the error code.
    let mut g = c.grpc(0).await.expect("grpc client");
    match g.put("grpc", "v").await {
        Err(orrery_client::Error::Status(s)) => {
            assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
            assert_eq!(
                s.metadata()
                    .get("orrery-error-code")
                    .map(|v| v.to_str().unwrap()),
                Some("overloaded")
            );
        }
        other => panic!("a gRPC put on a full node: {other:?}"),
    }
    for t in tasks {
        t.await.expect("request task");
    }
    let order = order.lock().unwrap().clone();
    let shed = order.iter().filter(|s| **s).count();
    assert_eq!(shed, 16, "answers in order (true = shed): {order:?}");
    assert!(
        order[..16].iter().all(|s| *s),
        "a held request answered before a shed one: {order:?}"
    );
    let m = c
        .http
        .get(c.nodes[0].url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(m.contains("orrery_requests_shed_total 17"), "{m}");
    // Each waited in the queue first (--queue-wait-ms, 250 ms by default),
    // which is still far shorter than the held requests' 5 s.
    assert!(m.contains("orrery_requests_queue_shed_total 17"), "{m}");
}

/// A body that sends `first` bytes of the `total` it announced, then
/// nothing more: a client stalled mid-upload.
fn stalled_body(first: usize) -> reqwest::Body {
    let head = futures::stream::once(async move {
        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; first]))
    });
    reqwest::Body::wrap_stream(futures::StreamExt::chain(head, futures::stream::pending()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_past_their_deadline_get_503_timeout() {
    let mut c = Cluster::formed(
        3,
        2,
        &[
            "--request-timeout-ms",
            "1500",
            "--request-deadline-ms",
            "3000",
        ],
    )
    .await;
    let http = http_client(&c.ca_cert(), Some(c.token()));
    // A REST upload that stalls: its handler waits for the body until the
    // node's deadline cuts it off.
    let started = std::time::Instant::now();
    let r = http
        .put(c.nodes[0].url("/v1/kv/stalled"))
        .header("content-length", "1000")
        .body(stalled_body(10))
        .send()
        .await
        .expect("an answer before the body ended");
    let took = started.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    // The body was left unread: this connection cannot serve another.
    assert_eq!(
        r.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let body: serde_json::Value = r.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(8),
        "answered after {took:?}"
    );
    // Nothing was written.
    let (status, _) = c.get(0, "stalled", "linearizable").await;
    assert_eq!(status, 404);

    // Without a quorum, the services' own wait (--request-timeout-ms,
    // 1.5 s) ends first: 503 unavailable/outcome_unknown, not timeout.
    c.kill9(1);
    c.kill9(2);
    let addr = c.nodes[0].addr.clone();
    let mut h2 = common::h2c::connect(&addr, &c.ca_cert())
        .await
        .expect("an HTTP/2 connection");
    let put = orrery_proto::v1::PutRequest {
        key: b"g".to_vec(),
        value: b"v".to_vec(),
    };
    let call = |h2: &mut h2::client::SendRequest<bytes::Bytes>, timeout: Option<&str>| {
        let head = common::h2c::grpc_head(&addr, "/orrery.v1.Kv/Put", c.token(), timeout);
        let (resp, mut body) = h2.send_request(head, false).expect("a stream");
        body.send_data(common::h2c::grpc_frame(&put), true)
            .expect("the message");
        resp
    };
    let started = std::time::Instant::now();
    let resp = call(&mut h2, None).await.expect("an answer");
    let took = started.elapsed();
    let (status, code) = common::h2c::grpc_status(resp).await;
    assert_eq!(status.as_deref(), Some("14"), "UNAVAILABLE, {code:?}");
    assert_ne!(code.as_deref(), Some("timeout"), "after {took:?}");
    // A caller's shorter grpc-timeout wins over both: DEADLINE_EXCEEDED,
    // code `timeout`, long before the services' 1.5 s.
    let started = std::time::Instant::now();
    let resp = call(&mut h2, Some("300m")).await.expect("an answer");
    let took = started.elapsed();
    let (status, code) = common::h2c::grpc_status(resp).await;
    assert_eq!(status.as_deref(), Some("4"), "DEADLINE_EXCEEDED, {code:?}");
    assert_eq!(code.as_deref(), Some("timeout"));
    assert!(
        took >= Duration::from_millis(290),
        "answered after {took:?}"
    );
    let m = c
        .http
        .get(c.nodes[0].url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(m.contains("orrery_requests_timed_out_total 2"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed() {
    let c = Cluster::start(1, &["--max-connections", "4"]).await;
    let url = c.nodes[0].url("/healthz");
    // Each client keeps its connection open in its pool.
    let mut kept = Vec::new();
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..8 {
        let client = http_client(&c.ca_cert(), None);
        match client.get(&url).send().await {
            Ok(r) if r.status() == 200 => ok += 1,
            Ok(r) => panic!("an answer other than 200: {}", r.status()),
            Err(e) => {
                assert!(e.is_connect() || e.is_request(), "{e:?}");
                refused += 1;
            }
        }
        kept.push(client);
    }
    // The harness's own client holds one connection too.
    assert!(ok <= 4 && refused >= 4, "ok {ok}, refused {refused}");
    // Closing connections frees their places.
    drop(kept);
    wait_until(Duration::from_secs(10), || async {
        let fresh = http_client(&c.ca_cert(), None);
        fresh
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await
    .expect("a new connection is served once others closed");
}
