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

/// Node `i`'s `orrery_raft_snapshot_index` for `group` (0 before any).
async fn snapshot_index(c: &Cluster, i: usize, group: &str) -> u64 {
    let (_, v) = c.json_req(i, "GET", "/metrics", None).await;
    let text = v.as_str().unwrap_or_default();
    let label = format!("orrery_raft_snapshot_index{{group=\"{group}\"}}");
    text.lines()
        .find_map(|l| l.strip_prefix(label.as_str()))
        .and_then(|rest| rest.trim().parse::<f64>().ok())
        .map_or(0, |x| x as u64)
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
    // Node 3 saves its index with a snapshot taken once the index is
    // current (a snapshot taken while it was still building saves none, so
    // the dump of an earlier, smaller state may be all there is). Once it
    // is ready, writes to the collection's group that leave the collection
    // as it is (KV keys of shard 0) make that group snapshot again, and
    // that snapshot saves the dump of the state a restart restores.
    let ready = wait_until(Duration::from_secs(60), || async {
        let (_, v) = c.json_req(2, "GET", "/v1/collections/docs", None).await;
        v["shard_states"]
            .as_array()
            .is_some_and(|a| a.iter().all(|s| s["index"] == "ready"))
    })
    .await;
    assert!(
        ready.is_ok(),
        "index never ready on node 3:\n{}",
        c.log_tails(20)
    );
    let snapshot_before = snapshot_index(&c, 2, "shard-0").await;
    let keys = (0..)
        .map(|i| format!("nudge-{i}"))
        .filter(|k| orrery_types::shard_for_key(k.as_bytes(), 2) == 0)
        .take(25);
    // A snapshot is due after `--snapshot-logs` entries *and* as many log
    // bytes as the last snapshot's state (~200 KB here): 25 × 20 KB.
    let filler = "x".repeat(20_000);
    for k in keys {
        assert!(c.put(0, &k, &filler).await.status().is_success());
    }
    let saved = wait_until(Duration::from_secs(60), || async {
        snapshot_index(&c, 2, "shard-0").await > snapshot_before && !dumps(&c, 2).is_empty()
    })
    .await;
    assert!(
        saved.is_ok(),
        "no index dump on node 3:\n{}",
        c.log_tails(20)
    );
    // The indexer thread writes the dump the snapshot asked for.
    tokio::time::sleep(Duration::from_secs(1)).await;
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
