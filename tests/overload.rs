//! Overload protection on the client port: requests beyond
//! `--max-requests` are answered 503 `overloaded` at once (REST and gRPC)
//! while probes still answer, and connections beyond `--max-connections`
//! are closed as soon as they are accepted.

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
