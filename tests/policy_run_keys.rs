//! Idempotent policy runs (cluster version 6): a run requested with a
//! `run_key` is recorded once per policy and key, through any node, in
//! sync and async mode and under concurrent attempts; a real 3-node
//! cluster over TLS with tokens, real job queues.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Submits a job to `queue` and decides by `input.amount`.
fn graph(queue: &str) -> Value {
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"amount": "number"}}},
            {"id": "send", "type": "enqueue", "config": {
                "queue": queue, "kind": "review.manual", "as": "job",
                "params": {"amount": "input.amount"}}},
            {"id": "out", "type": "output", "config": {"fields": {
                "decision": "input.amount > 10.0 ? 'approve' : 'deny'"}}}
        ],
        "edges": [{"from": "in", "to": "send"}, {"from": "send", "to": "out"}]
    })
}

async fn queued(c: &Cluster, queue: &str) -> u64 {
    let v = c
        .json_success(0, "GET", &format!("/v1/queues/{queue}"), None)
        .await;
    v["counts"]["queued"].as_u64().unwrap_or(u64::MAX)
}

async fn finished(c: &Cluster, run_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = c
            .json_success(2, "GET", &format!("/v1/runs/{run_id}"), None)
            .await;
        if r["status"] != "running" {
            return r;
        }
        assert!(Instant::now() < deadline, "run still running: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_key_records_one_run() {
    let c = Cluster::formed(3, 4, &[]).await;
    c.wait_version(6).await;
    c.json_success(0, "POST", "/v1/queues", Some(json!({"name": "review"})))
        .await;
    let p = c
        .json_success(0, "POST", "/v1/policies", Some(json!({"name": "orders"})))
        .await;
    let pid = p["id"].as_str().unwrap().to_string();
    c.json_success(
        1,
        "POST",
        &format!("/v1/policies/{pid}/versions"),
        Some(json!({"graph": graph("review")})),
    )
    .await;
    let runs = format!("/v1/policies/{pid}/runs");

    // Sync: the first attempt records; retries through every node answer
    // with that run, and its enqueue submitted one job.
    let body = json!({"input": {"amount": 15}, "run_key": "order-1"});
    let first = c.json_success(0, "POST", &runs, Some(body.clone())).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["output"]["decision"], "approve", "{first}");
    let id = first["id"].as_str().unwrap().to_string();
    for i in [1, 2, 0] {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let again = c.json_success(i, "POST", &runs, Some(body.clone())).await;
        assert_eq!(again["id"], first["id"], "{again}");
        assert_eq!(again["output"], first["output"], "{again}");
        assert_eq!(again["created"], first["created"], "{again}");
    }
    assert_eq!(queued(&c, "review").await, 1);
    // The run reads back by its id on any node.
    let got = c
        .json_success(1, "GET", &format!("/v1/runs/{id}"), None)
        .await;
    assert_eq!(got["run_key"], "order-1", "{got}");

    // Another input under the key: 409, nothing recorded or enqueued.
    let (s, v) = c
        .json_retrying(
            2,
            "POST",
            &runs,
            Some(json!({"input": {"amount": 3}, "run_key": "order-1"})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap_or("").contains(&id),
        "{v}"
    );
    assert_eq!(queued(&c, "review").await, 1);

    // Concurrent attempts with one key, through all three nodes: one run,
    // one job (their enqueues share a dedupe key).
    let body = json!({"input": {"amount": 20}, "run_key": "order-2"});
    let attempts = (0..6).map(|i| c.json_success(i % 3, "POST", &runs, Some(body.clone())));
    let answers = futures::future::join_all(attempts).await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(queued(&c, "review").await, 2);

    // Async: a retry answers with the running (or finished) run; one
    // evaluation job, one enqueue; a later sync attempt gets the result.
    let body = json!({"input": {"amount": 5}, "run_key": "order-3", "mode": "async"});
    let (s, a) = c.json_retrying(0, "POST", &runs, Some(body.clone())).await;
    assert_eq!(s, 202, "{a}");
    let (s, b) = c.json_retrying(1, "POST", &runs, Some(body)).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(a["id"], b["id"], "{a} {b}");
    let aid = a["id"].as_str().unwrap().to_string();
    let done = finished(&c, &aid).await;
    assert_eq!(done["output"]["decision"], "deny", "{done}");
    let sync = c
        .json_success(
            2,
            "POST",
            &runs,
            Some(json!({"input": {"amount": 5}, "run_key": "order-3"})),
        )
        .await;
    assert_eq!(sync["id"], a["id"], "{sync}");
    assert_eq!(sync["status"], "succeeded", "{sync}");
    assert_eq!(queued(&c, "review").await, 3);

    // The policy's runs: one per key, none twice.
    let list = c
        .json_success(0, "GET", &format!("/v1/runs?policy={pid}&limit=100"), None)
        .await;
    let keys: Vec<&str> = list["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["run_key"].as_str().unwrap_or("-"))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["order-1", "order-2", "order-3"], "{list}");

    // Without a key every request is a new run, as before.
    let plain = json!({"input": {"amount": 1}});
    let x = c.json_success(0, "POST", &runs, Some(plain.clone())).await;
    let y = c.json_success(0, "POST", &runs, Some(plain)).await;
    assert_ne!(x["id"], y["id"]);
}
