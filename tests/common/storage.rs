//! What a node whose storage failed must do (tests/storage_full.rs with a
//! full disk, tests/power_loss.rs with a failing fsync): within its grace
//! period say why on /readyz and refuse writes with 503
//! `storage_unavailable` (never a 500), then stop with a failure status.

use super::Cluster;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// Polls node `i` (with `http`, which carries the token) until it has said
/// both, then waits for it to exit; returns its exit status.
pub async fn assert_stops_on_storage_failure(
    c: &mut Cluster,
    i: usize,
    http: &reqwest::Client,
) -> ExitStatus {
    let (mut ready_said, mut put_said) = (false, false);
    let start = Instant::now();
    while !(ready_said && put_said) && start.elapsed() < Duration::from_secs(30) {
        if let Ok(r) = http.get(c.nodes[i].url("/readyz")).send().await {
            let (s, b) = (r.status(), r.text().await.unwrap_or_default());
            ready_said |= s == 503 && b.contains("storage failed");
        }
        if let Ok(r) = http
            .put(c.nodes[i].url("/v1/kv/probe"))
            .body("x")
            .send()
            .await
        {
            let (s, b) = (r.status(), r.text().await.unwrap_or_default());
            assert_ne!(s, 500, "a 500 from a node whose storage failed: {b}");
            put_said |= s == 503 && b.contains("storage_unavailable");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        ready_said,
        "/readyz never said the storage failed; log:\n{}",
        c.log(i)
    );
    assert!(
        put_said,
        "no write was refused with storage_unavailable; log:\n{}",
        c.log(i)
    );
    let mut status = None;
    for _ in 0..100 {
        status = c.exited(i);
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status =
        status.unwrap_or_else(|| panic!("node {} kept running; log:\n{}", i + 1, c.log(i)));
    assert!(
        !status.success(),
        "node {} exited with success after its storage failed",
        i + 1
    );
    status
}
