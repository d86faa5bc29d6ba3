//! A restarted node loads its vector indexes from the dumps saved with its
//! snapshots instead of rebuilding them, and answers the same searches.

mod common;

use common::{wait_until, Cluster};
use serde_json::{json, Value};
use std::time::Duration;

const N: usize = 2000;
const DIM: usize = 16;

fn vector(i: usize) -> Vec<f32> {
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn dumps(c: &Cluster, i: usize) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(c.nodes[i].data_dir.join("vector-index"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "hnsw"))
                .collect()
        })
        .unwrap_or_default()
}

async fn top10(c: &Cluster, i: usize, q: &[f32]) -> Vec<Value> {
    let v = c
        .json_ok(
            i,
            "POST",
            "/v1/collections/docs/search?consistency=stale",
            Some(json!({"vector": q, "k": 10})),
            200,
        )
        .await;
    v["hits"]
        .as_array()
        .or_else(|| v.as_array())
        .map(|a| a.iter().map(|h| h["id"].clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_node_loads_its_index_instead_of_rebuilding() {
    // Snapshots every 20 entries, so the load below is snapshotted.
    let mut c = Cluster::formed(3, 2, &["--snapshot-logs", "20", "--keep-logs", "10"]).await;
    c.json_ok(
        0,
        "POST",
        "/v1/collections",
        Some(json!({"name": "docs", "dim": DIM, "metric": "l2", "shards": 1})),
        201,
    )
    .await;
    for b in 0..(N / 50) {
        let points: Vec<Value> = (b * 50..(b + 1) * 50)
            .map(|i| json!({"id": i, "vector": vector(i), "payload": {"i": i}}))
            .collect();
        c.json_ok(
            b % 3,
            "PUT",
            "/v1/collections/docs/points",
            Some(json!({"points": points})),
            200,
        )
        .await;
    }
    c.wait_caught_up(0, Duration::from_secs(120)).await;
    // Node 3 saves its index with a snapshot taken once it is current.
    let saved = wait_until(Duration::from_secs(60), || async {
        let (_, v) = c.json_req(2, "GET", "/v1/collections/docs", None).await;
        let ready = v["shard_states"]
            .as_array()
            .is_some_and(|a| a.iter().all(|s| s["index"] == "ready"));
        if ready {
            // A write makes the group snapshot again with the index current.
            c.put(0, "nudge", "x").await;
        }
        ready && !dumps(&c, 2).is_empty()
    })
    .await;
    assert!(
        saved.is_ok(),
        "no index dump on node 3:\n{}",
        c.log_tails(20)
    );
    let queries: Vec<Vec<f32>> = (0..10).map(|i| vector(100_000 + i)).collect();
    let mut before = Vec::new();
    for q in &queries {
        before.push(top10(&c, 2, q).await);
    }

    c.terminate(2);
    c.restart(2).await;
    let loaded = wait_until(Duration::from_secs(60), || async {
        c.log(2).contains("loaded vector index of \"docs\"")
    })
    .await;
    assert!(
        loaded.is_ok(),
        "node 3 did not load its index dump:\n{}",
        c.log_tails(30)
    );
    assert!(
        !c.log(2).contains("ignoring index dump"),
        "{}",
        c.log_tails(30)
    );
    // Loaded, not rebuilt: ready as soon as the entries after the dump's
    // snapshot (replayed from the log) are inserted — seconds, where a
    // rebuild starts over (`building`).
    let ready = wait_until(Duration::from_secs(10), || async {
        let (_, info) = c.json_req(2, "GET", "/v1/collections/docs", None).await;
        info["shard_states"]
            .as_array()
            .is_some_and(|a| a.iter().all(|s| s["index"] == "ready"))
    })
    .await;
    assert!(ready.is_ok(), "{}", c.log_tails(30));
    for (q, want) in queries.iter().zip(&before) {
        assert_eq!(
            &top10(&c, 2, q).await,
            want,
            "same neighbours after the load"
        );
    }
}
