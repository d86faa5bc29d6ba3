//! `/v1/events/stream` followers wait on the node's one events watcher and
//! receive a new event as it happens (not by polling every shard each).

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_receive_new_events() {
    let c = Cluster::formed(3, 4, &["--workers", "0"]).await;
    c.json_ok(0, "POST", "/v1/queues", Some(json!({"name": "ev"})), 201)
        .await;
    // Three followers on different nodes, from now on.
    let now = c
        .json_ok(0, "GET", "/v1/events?limit=10000", None, 200)
        .await;
    let cursor = now["cursor"].as_str().unwrap_or_default().to_string();
    let mut followers = Vec::new();
    for i in 0..3 {
        let r = c
            .http
            .get(c.nodes[i].url(&format!("/v1/events/stream?since={cursor}")))
            .send()
            .await
            .expect("open the events stream");
        assert_eq!(r.status(), 200);
        followers.push(r);
    }
    // Nothing is pending; a new job's event must reach every follower.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let j = c
        .json_ok(
            1,
            "POST",
            "/v1/jobs",
            Some(json!({"queue": "ev", "kind": "evt"})),
            201,
        )
        .await;
    let id = j["id"].as_str().expect("job id").to_string();
    for (i, mut r) in followers.into_iter().enumerate() {
        let mut body = String::new();
        // Generous: the watcher looks every 300 ms; a follower that missed
        // its notification would wait 30 s.
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            while !body.contains(&id) {
                match r.chunk().await {
                    Ok(Some(b)) => body.push_str(&String::from_utf8_lossy(&b)),
                    _ => break,
                }
            }
        })
        .await;
        assert!(
            got.is_ok() && body.contains(&id),
            "follower {i} saw: {body}"
        );
    }
}
