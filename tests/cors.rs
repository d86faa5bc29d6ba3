//! Browsers and scrapers: CORS answers only the configured origin and
//! exposes the headers browser clients read; `/metrics` is open only with
//! `--metrics-public`.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_only_for_the_configured_origin_and_metrics_public_only_when_asked() {
    let c = Cluster::formed(1, 1, &[]).await;
    let preflight = |c: &Cluster, origin: &str| {
        http_client(&c.ca_cert(), None)
            .request(reqwest::Method::OPTIONS, c.nodes[0].url("/v1/kv/x"))
            .header("origin", origin.to_string())
            .header("access-control-request-method", "PUT")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let r = preflight(&c, "https://evil.example").await.unwrap();
    assert!(
        r.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        r.headers()
    );
    let (s, _) = c.json_req(0, "GET", "/metrics", None).await;
    assert_eq!(s, 200, "metrics with a token");

    let d = Cluster::formed(
        1,
        1,
        &[
            "--cors-origin",
            "https://console.example",
            "--metrics-public",
        ],
    )
    .await;
    let r = preflight(&d, "https://console.example").await.unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://console.example"
    );
    // An actual call from that origin exposes the headers browser clients
    // read: a write's revision, Retry-After, the request id.
    let r = d
        .http
        .put(d.nodes[0].url("/v1/kv/cors"))
        .header("origin", "https://console.example")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let exposed = r
        .headers()
        .get("access-control-expose-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_lowercase();
    for h in ["x-orrery-revision", "retry-after", "x-request-id"] {
        assert!(exposed.contains(h), "{h} not exposed: {exposed:?}");
    }
    // Another origin is never named (the browser then refuses the call).
    let r = preflight(&d, "https://evil.example").await.unwrap();
    let allowed = r.headers().get("access-control-allow-origin");
    assert!(
        allowed.is_none_or(|v| v == "https://console.example"),
        "{:?}",
        r.headers()
    );
    let r = http_client(&d.ca_cert(), None)
        .get(d.nodes[0].url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "--metrics-public serves /metrics without a token"
    );
}
