//! Shadow (challenger) versions, run retention and run filters end to end:
//! a real 3-node cluster over TLS with tokens, real jobs queues.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Sends a request, retrying 503s (leader elections on a loaded machine).
async fn call(
    c: &Cluster,
    i: usize,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let start = Instant::now();
    loop {
        let url = c.nodes[i].url(path);
        let mut req = match method {
            "GET" => c.http.get(&url),
            "POST" => c.http.post(&url),
            "PATCH" => c.http.patch(&url),
            "DELETE" => c.http.delete(&url),
            _ => unreachable!(),
        };
        if let Some(b) = &body {
            req = req.json(b);
        }
        let r = req
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
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        return (status, v);
    }
}

async fn ok(c: &Cluster, i: usize, method: &str, path: &str, body: Option<Value>) -> Value {
    let (s, v) = call(c, i, method, path, body).await;
    assert!(s == 200 || s == 201, "{method} {path}: {s} {v}");
    v
}

/// A graph that submits a job to `queue` and decides by `input.amount`
/// against `threshold`.
fn graph(queue: &str, threshold: f64) -> Value {
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"amount": "number"}}},
            {"id": "send", "type": "enqueue", "config": {
                "queue": queue, "kind": "review.manual", "as": "job",
                "params": {"amount": "input.amount"}}},
            {"id": "out", "type": "output", "config": {"fields": {
                "decision": format!("input.amount > {threshold:.1} ? 'approve' : 'deny'")}}}
        ],
        "edges": [{"from": "in", "to": "send"}, {"from": "send", "to": "out"}]
    })
}

async fn queued(c: &Cluster, queue: &str) -> Value {
    let v = ok(c, 0, "GET", &format!("/v1/queues/{queue}"), None).await;
    v["counts"]["queued"].clone()
}

fn ids(v: &Value) -> Vec<String> {
    v["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

async fn wait_version_5(c: &Cluster) {
    wait_until(Duration::from_secs(60), || async {
        let (s, v) = c.json_req(0, "GET", "/v1/cluster/version", None).await;
        s == 200 && v["active"].as_u64() >= Some(5)
    })
    .await
    .unwrap_or_else(|_| panic!("cluster version 5 never active\n{}", c.log_tails(20)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_versions_retention_and_filters() {
    let mut c = Cluster::formed(3, 2, &["--snapshot-logs", "30"]).await;
    wait_version_5(&c).await;
    for q in ["live-q", "shadow-q"] {
        ok(&c, 0, "POST", "/v1/queues", Some(json!({"name": q}))).await;
    }
    let p = ok(
        &c,
        1,
        "POST",
        "/v1/policies",
        Some(json!({"name": "limits"})),
    )
    .await;
    let pid = p["id"].as_str().unwrap().to_string();
    assert_eq!(p["shadow_version"], Value::Null, "{p}");
    let versions = format!("/v1/policies/{pid}/versions");
    // v1 live (enqueues to live-q), v2 the challenger (enqueues to
    // shadow-q), v3 to be archived.
    ok(
        &c,
        0,
        "POST",
        &versions,
        Some(json!({"graph": graph("live-q", 10.0)})),
    )
    .await;
    let body = json!({"graph": graph("shadow-q", 20.0), "activate": false});
    ok(&c, 0, "POST", &versions, Some(body.clone())).await;
    ok(&c, 0, "POST", &versions, Some(body)).await;
    ok(&c, 0, "POST", &format!("{versions}/3/archive"), None).await;

    let pol = format!("/v1/policies/{pid}");
    let runs = format!("/v1/policies/{pid}/runs");
    // Before a shadow is set: no shadow in the run.
    let r0 = ok(&c, 2, "POST", &runs, Some(json!({"input": {"amount": 1}}))).await;
    assert_eq!(r0["shadow"], Value::Null, "{r0}");

    // Refusals: no such version (400), an archived one (409).
    let (s, v) = call(&c, 0, "PATCH", &pol, Some(json!({"shadow_version": 99}))).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_shadow_version")),
        "{v}"
    );
    let (s, v) = call(&c, 0, "PATCH", &pol, Some(json!({"shadow_version": 3}))).await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = call(&c, 0, "PATCH", &pol, Some(json!({"run_retention_ms": 0}))).await;
    assert_eq!(s, 400, "{v}");
    let v = ok(&c, 1, "PATCH", &pol, Some(json!({"shadow_version": 2}))).await;
    assert_eq!(v["shadow_version"], 2, "{v}");
    assert_eq!(v["run_retention_ms"], Value::Null, "{v}");
    // The shadow version cannot be archived while it is the shadow.
    let (s, v) = call(&c, 0, "POST", &format!("{versions}/2/archive"), None).await;
    assert_eq!(s, 409, "{v}");

    // Three runs: 5 (both deny), 15 (live approves, shadow denies), 25
    // (both approve).
    let mut shadowed = Vec::new();
    for amount in [5, 15, 25] {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = ok(
            &c,
            amount % 3,
            "POST",
            &runs,
            Some(json!({"input": {"amount": amount}})),
        )
        .await;
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["version"], 1, "{r}");
        assert_eq!(r["shadow"]["version"], 2, "{r}");
        assert_eq!(r["shadow"]["error"], Value::Null, "{r}");
        assert_eq!(
            r["shadow"]["would_enqueue"],
            json!(["send -> shadow-q"]),
            "{r}"
        );
        // The caller gets the live output only.
        let live = if amount > 10 { "approve" } else { "deny" };
        let shadow = if amount > 20 { "approve" } else { "deny" };
        assert_eq!(r["output"]["decision"], live, "{r}");
        assert_eq!(r["shadow"]["output"]["decision"], shadow, "{r}");
        shadowed.push(r);
    }
    // Every live run submitted its job; no shadow submitted one.
    assert_eq!(queued(&c, "live-q").await, 4);
    assert_eq!(queued(&c, "shadow-q").await, 0);
    let got = ok(
        &c,
        0,
        "GET",
        &format!("/v1/runs/{}", shadowed[1]["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(got["shadow"]["output"]["decision"], "deny", "{got}");

    // The comparison: 3 shadowed runs, 2 agree, the 15 differs.
    let cmp = ok(&c, 2, "GET", &format!("{pol}/shadow"), None).await;
    assert_eq!(cmp["compared"], 3, "{cmp}");
    assert_eq!(cmp["agreed"], 2, "{cmp}");
    assert_eq!(cmp["differed"], 1, "{cmp}");
    assert_eq!(cmp["differing"][0]["id"], shadowed[1]["id"], "{cmp}");
    assert!((cmp["agreement_rate"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    // Paged: one run per page, the cursor continues.
    let page = ok(&c, 0, "GET", &format!("{pol}/shadow?limit=1"), None).await;
    assert_eq!(
        (page["compared"].as_u64(), page["agreed"].as_u64()),
        (Some(1), Some(1)),
        "{page}"
    );
    let cur = page["next_cursor"].as_str().expect("cursor");
    let page = ok(
        &c,
        0,
        "GET",
        &format!("{pol}/shadow?limit=1&cursor={cur}"),
        None,
    )
    .await;
    assert_eq!(page["differed"], 1, "{page}");

    // The same through orreryctl (gRPC).
    let v = c.ctl_json(1, &["policies", "shadow", "compare", &pid]);
    assert_eq!(
        (v["compared"].as_u64(), v["agreed"].as_u64()),
        (Some(3), Some(2)),
        "{v}"
    );
    assert_eq!(v["differing"][0]["id"], shadowed[1]["id"], "{v}");

    // Filters: version, status, time.
    let t1 = shadowed[1]["created"].as_u64().unwrap();
    let all = ok(&c, 0, "GET", &format!("/v1/runs?policy={pid}"), None).await;
    assert_eq!(ids(&all).len(), 4, "{all}");
    let v = ok(
        &c,
        1,
        "GET",
        &format!("/v1/runs?policy={pid}&since={t1}"),
        None,
    )
    .await;
    assert_eq!(
        ids(&v),
        [&shadowed[2]["id"], &shadowed[1]["id"]].map(|i| i.as_str().unwrap().to_string())
    );
    let v = ok(
        &c,
        1,
        "GET",
        &format!("/v1/runs?policy={pid}&until={t1}"),
        None,
    )
    .await;
    assert_eq!(ids(&v).len(), 2, "{v}");
    assert!(!ids(&v).contains(&shadowed[1]["id"].as_str().unwrap().to_string()));
    let v = ok(
        &c,
        2,
        "GET",
        &format!("/v1/runs?policy={pid}&version=2"),
        None,
    )
    .await;
    assert!(ids(&v).is_empty(), "{v}");
    let v = ok(
        &c,
        2,
        "GET",
        &format!("/v1/runs?policy={pid}&version=1&status=failed"),
        None,
    )
    .await;
    assert!(ids(&v).is_empty(), "{v}");
    let v = ok(
        &c,
        2,
        "GET",
        &format!("/v1/runs?policy={pid}&status=succeeded&limit=2"),
        None,
    )
    .await;
    assert_eq!(ids(&v).len(), 2, "{v}");
    let (s, v) = call(&c, 0, "GET", "/v1/runs?since=yesterday", None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_time")),
        "{v}"
    );
    let v = ok(
        &c,
        0,
        "GET",
        &format!("/v1/runs?policy={pid}&outcome=approved"),
        None,
    )
    .await;
    assert!(ids(&v).is_empty(), "no terminate node ran: {v}");
    let t = t1.to_string();
    let v = c.ctl_json(2, &["runs", "list", "--policy", &pid, "--since", &t]);
    assert_eq!(ids(&v).len(), 2, "{v}");
    assert_eq!(v["runs"][0]["shadow"]["version"], 2, "{v}");
    let v = c.ctl_json(
        2,
        &[
            "runs",
            "list",
            "--policy",
            &pid,
            "--until",
            &t,
            "--version",
            "1",
        ],
    );
    assert_eq!(ids(&v).len(), 2, "{v}");

    // Clearing the shadow: the next run has none.
    let v = ok(&c, 1, "PATCH", &pol, Some(json!({"shadow_version": null}))).await;
    assert_eq!(v["shadow_version"], Value::Null, "{v}");
    let v = c.ctl_json(0, &["policies", "shadow", "set", &pid, "2"]);
    assert_eq!(v["shadow_version"], 2, "{v}");
    let v = c.ctl_json(0, &["policies", "shadow", "clear", &pid]);
    assert_eq!(v["shadow_version"], Value::Null, "{v}");
    let r = ok(&c, 0, "POST", &runs, Some(json!({"input": {"amount": 2}}))).await;
    assert_eq!(r["shadow"], Value::Null, "{r}");

    // Retention: a policy keeping its runs 3 s loses them; `limits` keeps its.
    let short = ok(
        &c,
        0,
        "POST",
        "/v1/policies",
        Some(json!({"name": "short"})),
    )
    .await;
    let sid = short["id"].as_str().unwrap().to_string();
    ok(
        &c,
        0,
        "POST",
        &format!("/v1/policies/{sid}/versions"),
        Some(json!({"graph": graph("live-q", 1.0)})),
    )
    .await;
    let v = ok(
        &c,
        0,
        "PATCH",
        &format!("/v1/policies/{sid}"),
        Some(json!({"run_retention_ms": 3000})),
    )
    .await;
    assert_eq!(v["run_retention_ms"], 3000, "{v}");
    // And through orreryctl, by name: set, clear (the node default), set.
    let v = c.ctl_json(1, &["policies", "retention", "clear", "short"]);
    assert_eq!(v["run_retention_ms"], Value::Null, "{v}");
    let v = c.ctl_json(1, &["policies", "retention", "set", "short", "3000"]);
    assert_eq!(v["run_retention_ms"], 3000, "{v}");
    for amount in 0..3 {
        ok(
            &c,
            amount,
            "POST",
            &format!("/v1/policies/{sid}/runs"),
            Some(json!({"input": {"amount": amount}})),
        )
        .await;
    }
    let v = ok(&c, 0, "GET", &format!("/v1/runs?policy={sid}"), None).await;
    assert_eq!(ids(&v).len(), 3, "{v}");
    // Enough writes that every shard takes a snapshot (--snapshot-logs 30).
    for i in 0..80 {
        c.put_ok(i % 3, &format!("fill/{i}"), "x").await;
    }
    let pruned = wait_until(Duration::from_secs(30), || async {
        let (s, v) = call(&c, 1, "GET", &format!("/v1/runs?policy={sid}"), None).await;
        s == 200 && ids(&v).is_empty()
    })
    .await;
    assert!(
        pruned.is_ok(),
        "runs past their retention were kept\n{}",
        c.log_tails(20)
    );
    let v = ok(&c, 0, "GET", &format!("/v1/runs?policy={pid}"), None).await;
    assert_eq!(
        ids(&v).len(),
        5,
        "runs of the default retention were pruned: {v}"
    );

    // Every node restarts from its snapshot and log: the pruned runs stay
    // gone, the others keep their shadow results.
    for i in 0..3 {
        c.terminate(i);
    }
    for i in 0..3 {
        c.restart(i).await;
    }
    c.wait_caught_up(0, Duration::from_secs(60)).await;
    for i in 0..3 {
        let v = ok(&c, i, "GET", &format!("/v1/runs?policy={sid}"), None).await;
        assert!(ids(&v).is_empty(), "node {i}: {v}");
        let got = ok(
            &c,
            i,
            "GET",
            &format!("/v1/runs/{}", shadowed[1]["id"].as_str().unwrap()),
            None,
        )
        .await;
        assert_eq!(
            got["shadow"]["output"]["decision"], "deny",
            "node {i}: {got}"
        );
    }
    let p = ok(&c, 2, "GET", &format!("/v1/policies/{sid}"), None).await;
    assert_eq!(p["run_retention_ms"], 3000, "{p}");
    let cmp = ok(&c, 1, "GET", &format!("{pol}/shadow"), None).await;
    assert_eq!(
        (cmp["compared"].as_u64(), cmp["agreed"].as_u64()),
        (Some(3), Some(2)),
        "{cmp}"
    );
}

/// Below cluster version 5 the new operations are refused by the gate,
/// and runs are still recorded (in the old format).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_version_5_the_new_operations_are_refused() {
    let c = Cluster::start_with_env(1, &[], &[("ORRERY_TEST_MAX_CLUSTER_VERSION", "4")]).await;
    c.form(1);
    wait_until(Duration::from_secs(60), || async {
        let (s, v) = c.json_req(0, "GET", "/v1/cluster/version", None).await;
        s == 200 && v["active"] == 4
    })
    .await
    .expect("cluster version 4");
    let p = ok(&c, 0, "POST", "/v1/policies", Some(json!({"name": "old"}))).await;
    let pid = p["id"].as_str().unwrap().to_string();
    ok(&c, 0, "POST", "/v1/queues", Some(json!({"name": "live-q"}))).await;
    ok(
        &c,
        0,
        "POST",
        &format!("/v1/policies/{pid}/versions"),
        Some(json!({"graph": graph("live-q", 1.0)})),
    )
    .await;
    let pol = format!("/v1/policies/{pid}");
    for body in [
        json!({"shadow_version": 1}),
        json!({"run_retention_ms": 1000}),
    ] {
        let (s, v) = call(&c, 0, "PATCH", &pol, Some(body)).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (409, Some("cluster_version_too_low")),
            "{v}"
        );
    }
    let (s, v) = call(&c, 0, "GET", &format!("{pol}/shadow"), None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("cluster_version_too_low")),
        "{v}"
    );
    let (s, v) = call(&c, 0, "GET", "/v1/runs?since=0", None).await;
    assert_eq!(s, 409, "{v}");
    let r = ok(
        &c,
        0,
        "POST",
        &format!("{pol}/runs"),
        Some(json!({"input": {"amount": 3}})),
    )
    .await;
    assert_eq!(r["status"], "succeeded", "{r}");
    let v = ok(
        &c,
        0,
        "GET",
        &format!("/v1/runs?policy={pid}&status=succeeded"),
        None,
    )
    .await;
    assert_eq!(ids(&v), [r["id"].as_str().unwrap().to_string()]);
    assert_eq!(v["runs"][0]["shadow"], Value::Null, "{v}");
}
