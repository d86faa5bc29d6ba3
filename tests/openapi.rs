//! The OpenAPI document every node serves, and the regressions that
//! fuzzing it with schemathesis found (scripts/schemathesis.sh).

mod common;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_the_committed_document_without_a_token() {
    let c = Cluster::formed(3, 2, &[]).await;
    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json"),
    )
    .expect("docs/openapi.json");
    let anonymous = http_client(&c.ca_cert(), None);
    for n in &c.nodes {
        let resp = anonymous
            .get(n.url("/v1/openapi.json"))
            .send()
            .await
            .expect("GET /v1/openapi.json");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let text = resp.text().await.expect("body");
        assert_eq!(text, committed, "a node serves another document");
        let v: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["openapi"], "3.1.0");
        assert_eq!(
            v["paths"]["/healthz"]["get"]["security"],
            Value::Array(vec![])
        );
        assert_eq!(
            v["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}

/// Found by schemathesis: a query string or path segment axum could not
/// decode was refused with a plain-text 400 (`Failed to deserialize query
/// string: duplicate field`), not the JSON error every endpoint documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_queries_and_paths_are_json_errors() {
    let c = Cluster::formed(1, 2, &[]).await;
    for (path, code) in [
        ("/v1/jobs?state=queued&state=running", "invalid_query"),
        ("/v1/jobs/x/logs?local=1&local=1", "invalid_query"),
        ("/v1/runs?limit=1&limit=2", "invalid_query"),
        ("/v1/events?since=1&since=2", "invalid_query"),
        ("/v1/policies/%FF", "invalid_path"),
        ("/v1/collections/%C3%28/points/1", "invalid_path"),
    ] {
        let resp = c
            .http
            .get(c.nodes[0].url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 400, "{path}");
        assert_eq!(resp.headers()["content-type"], "application/json", "{path}");
        let v: Value = resp.json().await.expect("JSON body");
        assert_eq!(v["error"]["code"], code, "{path}: {v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
}

/// Found by schemathesis: an answer given before the request's body was
/// read (here the 415 of a `text/plain` body) ended its HTTP/1 connection
/// without `Connection: close`, so a client's next request on that pooled
/// connection failed with a reset instead of getting its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_before_the_body_is_read_close_the_connection_openly() {
    let c = Cluster::formed(1, 2, &[]).await;
    let pem = std::fs::read(c.ca_cert()).expect("ca.crt");
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(1)
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA"))
        .build()
        .expect("client");
    let auth = format!("Bearer {}", c.token());
    for i in 0..30 {
        let refused = client
            .post(c.nodes[0].url("/v1/queues"))
            .header("authorization", &auth)
            .header("content-type", "text/plain")
            .body("x".repeat(100))
            .send()
            .await
            .unwrap_or_else(|e| panic!("415 request {i}: {e}"));
        assert_eq!(refused.status(), 415);
        assert_eq!(refused.headers()["connection"], "close");
        // The next request, on a pooled connection if one was kept.
        let ok = client
            .get(c.nodes[0].url("/v1/queues"))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i} after a 415: {e}"));
        assert_eq!(ok.status(), 200);
        // A body that was read keeps the connection.
        let read = client
            .post(c.nodes[0].url("/v1/queues/none/claim"))
            .header("authorization", &auth)
            .json(&serde_json::json!({"worker_id": "w"}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("claim {i}: {e}"));
        assert_eq!(read.status(), 404);
        assert!(read.headers().get("connection").is_none());
    }
}
