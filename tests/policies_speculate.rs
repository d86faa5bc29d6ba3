//! A sync run evaluates ahead on the receiving node's copy of the policy
//! while it reads the policy linearizably (service/policies/speculate.rs).
//! The run must still follow the allocation as it stands when the request
//! is served: an allocation change that has returned is seen by the next
//! run on every node, even on a follower whose copy has not applied it yet.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Sends a request, retrying 503s (leader elections on a loaded machine).
async fn ok(c: &Cluster, i: usize, method: &str, path: &str, body: Value) -> Value {
    let start = Instant::now();
    loop {
        let url = c.nodes[i].url(path);
        let req = match method {
            "POST" => c.http.post(&url),
            "PATCH" => c.http.patch(&url),
            _ => unreachable!(),
        };
        let r = req
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        if status == 503 && start.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert!(
            status == 200 || status == 201,
            "{method} {path}: {status} {text}"
        );
        return serde_json::from_str(&text).expect("json");
    }
}

/// A pure graph (what is evaluated ahead) whose output names its version.
fn graph(tag: &str) -> Value {
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"income": "number", "debt": "number"}}},
            {"id": "ratio", "type": "transform", "config": {"assign": {"ratio": "input.debt / input.income"}}},
            {"id": "out", "type": "output", "config": {"fields": {"ratio": "ratio", "v": format!("'{tag}'")}}}
        ],
        "edges": [{"from": "in", "to": "ratio"}, {"from": "ratio", "to": "out"}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_follow_an_allocation_change_on_every_node() {
    let c = Cluster::formed(3, 2, &[]).await;
    let p = ok(&c, 0, "POST", "/v1/policies", json!({"name": "spec"})).await;
    let id = p["id"].as_str().expect("id").to_string();
    for tag in ["one", "two"] {
        ok(
            &c,
            0,
            "POST",
            &format!("/v1/policies/{id}/versions"),
            json!({"graph": graph(tag)}),
        )
        .await;
    }
    let input = json!({"income": 100, "debt": 25});
    let runs = format!("/v1/policies/{id}/runs");
    let patch = format!("/v1/policies/{id}");
    // Every node compiles (and caches) both versions first: evaluating
    // ahead needs the version compiled already.
    for v in [1u32, 2] {
        ok(
            &c,
            0,
            "PATCH",
            &patch,
            json!({"allocation": [{"version": v, "weight": 1}]}),
        )
        .await;
        for i in 0..3 {
            let r = ok(&c, i, "POST", &runs, json!({"input": input})).await;
            assert_eq!(r["version"], v, "{r}");
        }
    }
    // Each change goes through one node and is followed at once by a run
    // on each node: its copy of the policy may still hold the previous
    // allocation (followers learn the commit with the next message from
    // the leader), which the run must not use.
    for round in 0..24u32 {
        let v = 1 + round % 2;
        let tag = if v == 1 { "one" } else { "two" };
        let via = (round as usize) % 3;
        ok(
            &c,
            via,
            "PATCH",
            &patch,
            json!({"allocation": [{"version": v, "weight": 1}]}),
        )
        .await;
        for i in 0..3 {
            let r = ok(&c, i, "POST", &runs, json!({"input": input})).await;
            assert_eq!(r["version"], v, "round {round}, node {i}: {r}");
            assert_eq!(r["output"]["v"], tag, "round {round}, node {i}: {r}");
            assert_eq!(r["output"]["ratio"], 0.25, "{r}");
        }
    }
}
