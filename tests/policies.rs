//! Policies end to end: a real 3-node cluster, real HTTP, a real local
//! HTTP service behind an `http` data source.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn credit_graph(tag: &str) -> Value {
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"income": "number", "debt": "number", "customer": "string"}}},
            {"id": "ratio", "type": "transform", "config": {"assign": {"ratio": "input.debt / input.income"}}},
            {"id": "br", "type": "branch"},
            {"id": "deny", "type": "output", "config": {"fields": {"decision": "'deny'", "ratio": "ratio", "v": format!("'{tag}'")}}},
            {"id": "approve", "type": "output", "config": {"fields": {"decision": "'approve'", "ratio": "ratio", "v": format!("'{tag}'")}}}
        ],
        "edges": [
            {"from": "in", "to": "ratio"},
            {"from": "ratio", "to": "br"},
            {"from": "br", "to": "deny", "when": "ratio > 0.5"},
            {"from": "br", "to": "approve"}
        ]
    })
}

/// A minimal HTTP/1.1 server: `/score/<name>` answers JSON for alice,
/// 404 for anyone else; `/slow/<x>` answers after 3 s.
async fn http_service(hits: Arc<AtomicUsize>) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let hits = hits.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                hits.fetch_add(1, Ordering::SeqCst);
                let (status, body) = if path == "/score/alice" {
                    ("200 OK", r#"{"score": 42}"#.to_string())
                } else if path.starts_with("/slow/") {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    ("200 OK", r#"{"score": 1}"#.to_string())
                } else {
                    ("404 Not Found", r#"{"error": "none"}"#.to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_end_to_end() {
    let root = tempfile::tempdir().expect("tempdir");
    let root_path = root.path().canonicalize().expect("canonical root");
    let root_s = root_path.to_string_lossy().to_string();
    // The local http service behind the sources listens on loopback.
    let c = Cluster::formed(
        3,
        2,
        &["--fs-root", &root_s, "--http-sources-allow", "127.0.0.1"],
    )
    .await;

    // --- policies and validation ---
    let p = c
        .json_success(
            0,
            "POST",
            "/v1/policies",
            Some(json!({"name": "credit", "description": "limits"})),
        )
        .await;
    let id = p["id"].as_str().expect("id").to_string();
    let (s, v) = c
        .json_retrying(1, "POST", "/v1/policies", Some(json!({"name": "credit"})))
        .await;
    assert_eq!(s, 409, "{v}");

    let mut cyclic = credit_graph("x");
    cyclic["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"from": "br", "to": "ratio", "when": "false"}));
    let mut unknown_field = credit_graph("x");
    unknown_field["nodes"][1]["config"]["assign"]["ratio"] = json!("input.salary / 2.0");
    let mut enqueue = credit_graph("x");
    enqueue["nodes"][1] = json!({"id": "ratio", "type": "enqueue", "config": {"queue": "no-such-queue", "kind": "k"}});
    let mut no_source = credit_graph("x");
    no_source["nodes"][1] = json!({"id": "ratio", "type": "lookup", "config": {"source": "nope", "key": "input.customer", "as": "ratio"}});
    for (g, node, needle) in [
        (cyclic, "", "cycle"),
        (unknown_field, "\"ratio\"", "input.salary"),
        (
            enqueue,
            "\"ratio\"",
            "queue \"no-such-queue\" does not exist",
        ),
        (no_source, "\"ratio\"", "does not exist"),
    ] {
        let (s, v) = c
            .json_retrying(
                2,
                "POST",
                &format!("/v1/policies/{id}/versions"),
                Some(json!({"graph": g})),
            )
            .await;
        assert_eq!(s, 400, "{v}");
        assert_eq!(v["error"]["code"], "invalid_graph");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(node) && m.contains(needle), "{m}");
    }

    // --- version 1, sync runs, traces, runs readable from any node ---
    let v1 = c
        .json_success(
            1,
            "POST",
            &format!("/v1/policies/{id}/versions"),
            Some(json!({"graph": credit_graph("v1")})),
        )
        .await;
    assert_eq!(v1["version"], 1);
    let run = c
        .json_success(
            0,
            "POST",
            &format!("/v1/policies/{id}/runs"),
            Some(json!({"input": {"income": 100, "debt": 80, "customer": "a"}})),
        )
        .await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(
        run["output"],
        json!({"decision": "deny", "ratio": 0.8, "v": "v1"})
    );
    let trace = run["trace"].as_array().unwrap();
    assert_eq!(
        trace
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["in", "ratio", "br", "deny"]
    );
    assert_eq!(trace[2]["branch"], "deny");
    assert!(trace
        .iter()
        .all(|t| t["duration_us"].is_u64() && t["started"].is_u64()));
    let run_id = run["id"].as_str().unwrap().to_string();
    for i in 0..3 {
        let r = c
            .json_success(i, "GET", &format!("/v1/runs/{run_id}"), None)
            .await;
        assert_eq!(r, run, "run read from node {}", i + 1);
    }
    let approve = c
        .json_success(
            2,
            "POST",
            "/v1/policies/credit/runs",
            Some(json!({"input": {"income": 100, "debt": 10, "customer": "b"}})),
        )
        .await;
    assert_eq!(approve["output"]["decision"], "approve");
    // Bad input: 400, nothing recorded.
    let (s, v) = c
        .json_retrying(
            0,
            "POST",
            &format!("/v1/policies/{id}/runs"),
            Some(json!({"input": {"income": "lots"}})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    // Async: a bad input is still a 400; a good one is 202 + a running run
    // that a `policy.run` job finishes.
    let (s, v) = c
        .json_retrying(
            0,
            "POST",
            &format!("/v1/policies/{id}/runs"),
            Some(json!({"input": {}, "mode": "async"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_input", "{v}");
    let (s, v) = c
        .json_retrying(
            0,
            "POST",
            &format!("/v1/policies/{id}/runs"),
            Some(
                json!({"input": {"income": 100, "debt": 90, "customer": "async"}, "mode": "async"}),
            ),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["status"], "running", "{v}");
    let async_id = v["id"].as_str().expect("run id").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let r = c
            .json_success(2, "GET", &format!("/v1/runs/{async_id}"), None)
            .await;
        if r["status"] != "running" {
            break r;
        }
        assert!(Instant::now() < deadline, "async run still running: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"]["decision"], "deny", "{done}");
    assert_eq!(done["output"]["ratio"], 0.9, "{done}");
    assert!(!done["trace"].as_array().unwrap().is_empty(), "{done}");
    let q = c.json_success(1, "GET", "/v1/queues/_policies", None).await;
    assert_eq!(q["counts"]["succeeded"], 1, "{q}");

    // --- immutability: no API path changes a version's graph ---
    let (s, v) = c
        .json_retrying(
            0,
            "PATCH",
            &format!("/v1/policies/{id}"),
            Some(json!({"graph": credit_graph("evil")})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = c
        .json_retrying(
            0,
            "PATCH",
            &format!("/v1/policies/{id}/versions/1"),
            Some(json!({"graph": credit_graph("evil")})),
        )
        .await;
    assert_eq!(s, 405);
    let (s, _) = c
        .json_retrying(
            0,
            "POST",
            &format!("/v1/policies/{id}/versions/1"),
            Some(json!({"graph": credit_graph("evil")})),
        )
        .await;
    assert_eq!(s, 405);
    let p = c
        .json_success(
            0,
            "PATCH",
            &format!("/v1/policies/{id}"),
            Some(json!({"description": "new"})),
        )
        .await;
    assert_eq!(p["description"], "new");

    // --- allocation: version 2 inactive, then a 50/50 split ---
    let v2 = c
        .json_success(
            0,
            "POST",
            &format!("/v1/policies/{id}/versions"),
            Some(json!({"graph": credit_graph("v2"), "activate": false})),
        )
        .await;
    assert_eq!(v2["version"], 2);
    let again = c
        .json_success(2, "GET", &format!("/v1/policies/{id}/versions/1"), None)
        .await;
    assert_eq!(again["graph"], credit_graph("v1"), "version 1 unchanged");
    let (s, _) = c
        .json_retrying(
            0,
            "PATCH",
            &format!("/v1/policies/{id}"),
            Some(json!({"allocation": [{"version": 7, "weight": 1}]})),
        )
        .await;
    assert_eq!(s, 400);
    c.json_success(
        1,
        "PATCH",
        &format!("/v1/policies/{id}"),
        Some(json!({"allocation": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]})),
    )
    .await;
    // Keyed runs are recorded once from cluster version 6 on (below, each
    // request is a run): counted below.
    c.wait_version(6).await;
    let mut per_version = [0; 3];
    for k in 0..40 {
        let body = json!({"input": {"income": 10, "debt": 1, "customer": "c"}, "run_key": format!("cust-{k}")});
        let a = c
            .json_success(
                k % 3,
                "POST",
                &format!("/v1/policies/{id}/runs"),
                Some(body.clone()),
            )
            .await;
        let b = c
            .json_success(
                (k + 1) % 3,
                "POST",
                &format!("/v1/policies/{id}/runs"),
                Some(body),
            )
            .await;
        assert_eq!(a["version"], b["version"], "same run_key, same version");
        // And the same run: a run_key records one run (cluster version 6).
        assert_eq!(a["id"], b["id"], "same run_key, same run");
        assert_eq!(a["output"]["v"], format!("v{}", a["version"]));
        per_version[a["version"].as_u64().unwrap() as usize] += 1;
    }
    assert!(per_version[1] > 5 && per_version[2] > 5, "{per_version:?}");
    let forced = c
        .json_success(
            0,
            "POST",
            &format!("/v1/policies/{id}/runs"),
            Some(json!({"input": {"income": 10, "debt": 1, "customer": "c"}, "version": 2})),
        )
        .await;
    assert_eq!(forced["version"], 2);

    // --- runs listing: newest first, filters, cursor pagination ---
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(cur) => format!("/v1/runs?policy={id}&version=2&limit=7&cursor={cur}"),
            None => format!("/v1/runs?policy={id}&version=2&limit=7"),
        };
        let page = c.json_success(1, "GET", &q, None).await;
        for r in page["runs"].as_array().unwrap() {
            assert_eq!(r["version"], 2);
            seen.push(r["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), per_version[2] + 1);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first, no duplicates"
    );

    // --- batch equals one by one ---
    let inputs: Vec<Value> = (0..60)
        .map(|i| json!({"income": 100 + i, "debt": i * 3, "customer": format!("b{i}")}))
        .collect();
    let b = c
        .json_success(
            2,
            "POST",
            &format!("/v1/policies/{id}/runs/batch"),
            Some(json!({"inputs": inputs, "version": 1})),
        )
        .await;
    let results = b["results"].as_array().unwrap();
    assert_eq!(results.len(), inputs.len());
    for (i, input) in inputs.iter().enumerate().step_by(7) {
        let one = c
            .json_success(
                0,
                "POST",
                &format!("/v1/policies/{id}/runs"),
                Some(json!({"input": input, "version": 1})),
            )
            .await;
        assert_eq!(results[i]["output"], one["output"], "input {i}");
    }
    let (s, _) = c
        .json_retrying(
            2,
            "POST",
            &format!("/v1/policies/{id}/runs/batch"),
            Some(json!({"inputs": vec![json!({}); 10_001]})),
        )
        .await;
    assert_eq!(s, 400);

    // --- lookups: kv and http data sources, error policies ---
    c.put_ok(0, "scores/alice", r#"{"value": 7}"#).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let svc = http_service(hits.clone()).await;
    c.json_success(
        0,
        "POST",
        "/v1/data-sources",
        Some(json!({"name": "scores", "kind": "kv", "key_template": "scores/{key}"})),
    )
    .await;
    c.json_success(1, "POST", "/v1/data-sources", Some(json!({"name": "web", "kind": "http", "url_template": format!("{svc}/score/{{key}}"), "timeout_ms": 1000, "retries": 1, "cache_ttl_ms": 60000}))).await;
    c.json_success(1, "POST", "/v1/data-sources", Some(json!({"name": "slow", "kind": "http", "url_template": format!("{svc}/slow/{{key}}"), "timeout_ms": 200}))).await;
    let (s, _) = c
        .json_retrying(
            1,
            "POST",
            "/v1/data-sources",
            Some(json!({"name": "scores", "kind": "kv", "key_template": "x/{key}"})),
        )
        .await;
    assert_eq!(s, 409);
    let (s, v) = c
        .json_retrying(
            1,
            "POST",
            "/v1/data-sources",
            Some(json!({"name": "emb", "kind": "vector", "collection": "c", "k": 3, "field": "v"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let sources = c.json_success(2, "GET", "/v1/data-sources", None).await;
    assert_eq!(sources["data_sources"].as_array().unwrap().len(), 3);

    let lp = c
        .json_success(0, "POST", "/v1/policies", Some(json!({"name": "enrich"})))
        .await;
    let lid = lp["id"].as_str().unwrap().to_string();
    let lookup_graph = |kv_err: Value| {
        let mut kv = json!({"source": "scores", "key": "input.customer", "as": "score"});
        if let Value::Object(m) = kv_err {
            for (k, v) in m {
                kv[k] = v;
            }
        }
        json!({
            "nodes": [
                {"id": "in", "type": "input", "config": {"fields": {"customer": "string"}}},
                {"id": "kv", "type": "lookup", "config": kv},
                {"id": "web", "type": "lookup", "config": {"source": "web", "key": "input.customer", "as": "web", "on_error": "default", "default": {"score": 0}}},
                {"id": "slow", "type": "lookup", "config": {"source": "slow", "key": "input.customer", "as": "slow", "on_error": "skip"}},
                {"id": "out", "type": "output", "config": {"fields": {"kv": "score", "web": "web.score", "slow": "slow"}}}
            ],
            "edges": [{"from": "in", "to": "kv"}, {"from": "kv", "to": "web"}, {"from": "web", "to": "slow"}, {"from": "slow", "to": "out"}]
        })
    };
    c.json_success(
        0,
        "POST",
        &format!("/v1/policies/{lid}/versions"),
        Some(json!({"graph": lookup_graph(json!({}))})),
    )
    .await;
    let r = c
        .json_success(
            1,
            "POST",
            &format!("/v1/policies/{lid}/runs"),
            Some(json!({"input": {"customer": "alice"}})),
        )
        .await;
    assert_eq!(
        r["output"],
        json!({"kv": {"value": 7}, "web": 42, "slow": null}),
        "{r}"
    );
    let slow = r["trace"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "slow")
        .unwrap()
        .clone();
    assert!(
        slow["error"].as_str().unwrap().contains("timed out"),
        "{slow}"
    );
    // fail: the kv key is missing for bob.
    let r = c
        .json_success(
            1,
            "POST",
            &format!("/v1/policies/{lid}/runs"),
            Some(json!({"input": {"customer": "bob"}})),
        )
        .await;
    assert_eq!(r["status"], "failed");
    assert!(r["error"].as_str().unwrap().contains("\"kv\""), "{r}");
    let failed = c
        .json_success(2, "GET", "/v1/runs?policy=enrich&status=failed", None)
        .await;
    assert_eq!(failed["runs"].as_array().unwrap().len(), 1);
    // default for kv; the web 404 falls back to its default too.
    c.json_success(
        0,
        "POST",
        &format!("/v1/policies/{lid}/versions"),
        Some(json!({"graph": lookup_graph(json!({"on_error": "default", "default": -1}))})),
    )
    .await;
    let r = c
        .json_success(
            2,
            "POST",
            &format!("/v1/policies/{lid}/runs"),
            Some(json!({"input": {"customer": "bob"}})),
        )
        .await;
    assert_eq!(
        r["output"],
        json!({"kv": -1, "web": 0, "slow": null}),
        "{r}"
    );
    // skip
    c.json_success(
        0,
        "POST",
        &format!("/v1/policies/{lid}/versions"),
        Some(json!({"graph": lookup_graph(json!({"on_error": "skip"}))})),
    )
    .await;
    let r = c
        .json_success(
            0,
            "POST",
            &format!("/v1/policies/{lid}/runs"),
            Some(json!({"input": {"customer": "bob"}})),
        )
        .await;
    assert_eq!(r["output"]["kv"], Value::Null, "{r}");
    // The http cache: alice's score is fetched at most once per node
    // within the TTL (each node has its own cache).
    let before = hits.load(Ordering::SeqCst);
    for _ in 0..3 {
        c.json_success(
            0,
            "POST",
            &format!("/v1/policies/{lid}/runs"),
            Some(json!({"input": {"customer": "alice"}})),
        )
        .await;
    }
    let web_hits = hits.load(Ordering::SeqCst) - before;
    // 3 slow calls (never cached: they fail) + at most 1 score fetch.
    assert!(web_hits <= 4, "{web_hits} requests");

    // --- orreryctl, over the gRPC Policies service ---
    let good = c.dir.path().join("graph.json");
    std::fs::write(&good, credit_graph("cli").to_string()).unwrap();
    let mut bad_graph = credit_graph("cli");
    bad_graph["nodes"][1]["config"]["assign"]["ratio"] = json!("input.salary * 2.0");
    let bad = c.dir.path().join("bad.json");
    std::fs::write(&bad, json!({"graph": bad_graph}).to_string()).unwrap();
    c.ctl_ok(
        1,
        &[
            "policies",
            "create",
            "cli-pol",
            "--description",
            "from the CLI",
        ],
    );
    let out = c.ctl(
        1,
        &[
            "policies",
            "version",
            "create",
            "cli-pol",
            "--file",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"ratio\"") && err.contains("input.salary"),
        "{err}"
    );
    c.ctl_ok(
        1,
        &[
            "policies",
            "version",
            "create",
            "cli-pol",
            "--file",
            good.to_str().unwrap(),
        ],
    );
    let listed = c.ctl_json(2, &["policies", "list"]);
    assert!(listed["policies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "cli-pol"));
    let shown = c.ctl_json(0, &["policies", "show", "cli-pol"]);
    assert_eq!(shown["versions"][0]["graph"], credit_graph("cli"));
    let run = c.ctl_json(
        2,
        &[
            "policies",
            "run",
            "cli-pol",
            "--input",
            r#"{"income": 10, "debt": 9, "customer": "z"}"#,
        ],
    );
    assert_eq!(run["output"]["decision"], "deny");
    let got = c.ctl_json(0, &["runs", "get", run["id"].as_str().unwrap()]);
    assert_eq!(got["output"], run["output"]);
    assert_eq!(got["trace"], run["trace"]);
    let list = c.ctl_json(1, &["runs", "list", "--policy", "cli-pol"]);
    assert_eq!(list["runs"].as_array().unwrap().len(), 1);

    // --- delete ---
    c.json_success(0, "DELETE", "/v1/data-sources/slow", None)
        .await;
    c.json_success(0, "DELETE", &format!("/v1/policies/{lid}"), None)
        .await;
    let (s, _) = c
        .json_retrying(1, "GET", &format!("/v1/policies/{lid}"), None)
        .await;
    assert_eq!(s, 404);

    // --- enqueue nodes submit a real job; the run records its id ---
    c.json_success(0, "POST", "/v1/queues", Some(json!({"name": "reviews"})))
        .await;
    let ep = c
        .json_success(
            1,
            "POST",
            "/v1/policies",
            Some(json!({"name": "review-flow"})),
        )
        .await;
    let eid = ep["id"].as_str().unwrap().to_string();
    let review_graph = json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"customer": "string", "amount": "number"}}},
            {"id": "send", "type": "enqueue", "config": {
                "queue": "reviews", "kind": "review.manual", "as": "job",
                "params": {"customer": "input.customer", "twice": "input.amount * 2.0", "tag": "'policy'"}}},
            {"id": "out", "type": "output", "config": {"fields": {"decision": "'review'", "job": "job"}}}
        ],
        "edges": [{"from": "in", "to": "send"}, {"from": "send", "to": "out"}]
    });
    c.json_success(
        2,
        "POST",
        &format!("/v1/policies/{eid}/versions"),
        Some(json!({"graph": review_graph})),
    )
    .await;
    let run = c
        .json_success(
            0,
            "POST",
            &format!("/v1/policies/{eid}/runs"),
            Some(json!({"input": {"customer": "carol", "amount": 21}})),
        )
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let job_id = run["output"]["job"].as_str().expect("job id").to_string();
    let send = run["trace"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "send")
        .expect("send in trace")
        .clone();
    assert_eq!(send["type"], "enqueue");
    assert_eq!(send["output"]["job_id"], json!(job_id));
    let job = c
        .json_success(2, "GET", &format!("/v1/jobs/{job_id}"), None)
        .await;
    assert_eq!(job["queue"], "reviews");
    assert_eq!(job["kind"], "review.manual");
    // Submitted with the run's dedupe key, so re-evaluating the run (a
    // retried policy.run job) finds this job instead of adding one.
    assert_eq!(
        job["dedupe_key"],
        json!(orrery_server::enqueue_dedupe_key(
            run["id"].as_str().unwrap(),
            "send"
        ))
    );
    assert_eq!(
        job["params"],
        json!({"customer": "carol", "twice": 42.0, "tag": "policy"})
    );
    let got = c
        .json_success(
            1,
            "GET",
            &format!("/v1/runs/{}", run["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(got["output"]["job"], json!(job_id));
    // A batch evaluates the graph but submits nothing.
    let b = c
        .json_success(
            1,
            "POST",
            &format!("/v1/policies/{eid}/runs/batch"),
            Some(json!({"inputs": [{"customer": "dave", "amount": 1}]})),
        )
        .await;
    let counts = c.json_success(0, "GET", "/v1/queues/reviews", None).await;
    assert_eq!(counts["counts"]["queued"], 1, "{counts} {b}");
    // An enqueue node naming a queue that does not exist: 400 naming the node.
    let mut bad = review_graph.clone();
    bad["nodes"][1]["config"]["queue"] = json!("nowhere");
    let (s, v) = c
        .json_retrying(
            0,
            "POST",
            &format!("/v1/policies/{eid}/versions"),
            Some(json!({"graph": bad})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("\"send\"") && m.contains("\"nowhere\" does not exist"),
        "{m}"
    );

    // --- policy.backtest: v1 against v2 on a JSONL file under the fs root ---
    let mut lines = String::new();
    let mut denies = 0;
    for n in 0..40u32 {
        let debt = (n * 7) % 100;
        if f64::from(debt) / 100.0 > 0.5 {
            denies += 1;
        }
        lines.push_str(
            &json!({"income": 100, "debt": debt, "customer": format!("c{n}")}).to_string(),
        );
        lines.push('\n');
    }
    lines.push_str("{\"income\": \"bad\"}\n");
    std::fs::write(root_path.join("history.jsonl"), lines).expect("write inputs");
    c.json_success(0, "POST", "/v1/queues", Some(json!({"name": "backtests"})))
        .await;
    let job = c
        .json_success(
            1,
            "POST",
            "/v1/jobs",
            Some(
                json!({"queue": "backtests", "kind": "policy.backtest", "params": {
            "policy": id, "version": 1, "input_file": "history.jsonl", "compare_with_version": 2}}),
            ),
        )
        .await;
    let job_id = job["id"].as_str().expect("job id").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let j = c
            .json_success(2, "GET", &format!("/v1/jobs/{job_id}"), None)
            .await;
        if j["state"] == "succeeded" || j["state"] == "failed" || j["state"] == "dead" {
            break j;
        }
        assert!(Instant::now() < deadline, "backtest not finished: {j}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(done["state"], "succeeded", "{done}");
    let r = &done["result"];
    assert_eq!(r["inputs"], 41, "{r}");
    assert_eq!(r["distribution"]["deny"], denies, "{r}");
    assert_eq!(r["distribution"]["approve"], 40 - denies, "{r}");
    assert_eq!(r["distribution"]["<failed>"], 1, "{r}");
    assert_eq!(r["compare"]["version"], 2, "{r}");
    assert_eq!(r["compare"]["distribution"], r["distribution"], "{r}");
    // v1 and v2 differ only in the "v" tag, so every successful output differs.
    assert_eq!(r["compare"]["differ"], 40, "{r}");
    let ex = r["compare"]["examples"].as_array().unwrap();
    assert_eq!(ex.len(), 10, "{r}");
    assert_eq!(ex[0]["output"]["v"], "v1");
    assert_eq!(ex[0]["compare_output"]["v"], "v2");
    // Params are checked when the job is submitted: a path outside the fs
    // root is a 400 naming the field, and no job is created.
    let (s, v) = c
        .json_retrying(
            1,
            "POST",
            "/v1/jobs",
            Some(
                json!({"queue": "backtests", "kind": "policy.backtest", "params": {
            "policy": id, "version": 1, "input_file": "../../etc/passwd.jsonl"}}),
            ),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_params", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("params.input_file"),
        "{v}"
    );
    // A well-formed name whose file is missing on the worker fails the job
    // with the reason.
    let job = c
        .json_success(
            1,
            "POST",
            "/v1/jobs",
            Some(
                json!({"queue": "backtests", "kind": "policy.backtest", "params": {
            "policy": id, "version": 1, "input_file": "missing.jsonl"}}),
            ),
        )
        .await;
    let job_id = job["id"].as_str().expect("job id").to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let j = c
            .json_success(2, "GET", &format!("/v1/jobs/{job_id}"), None)
            .await;
        if j["state"] == "dead" || j["state"] == "failed" {
            let e = j["last_error"].as_str().unwrap_or_default();
            assert!(
                e.contains("input_file") && e.contains("missing.jsonl"),
                "{j}"
            );
            break;
        }
        assert_ne!(j["state"], "succeeded", "{j}");
        assert!(Instant::now() < deadline, "bad backtest not failed: {j}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls a run until it leaves `running`.
async fn finished(c: &Cluster, i: usize, run_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = c
            .json_success(i, "GET", &format!("/v1/runs/{run_id}"), None)
            .await;
        if r["status"] != "running" {
            return r;
        }
        assert!(Instant::now() < deadline, "run still running: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn error_message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A graph that looks up the nearest neighbours of `input.embedding` in
/// the vector source `source` and branches on the nearest one's payload.
fn fraud_graph(source: &str, key: &str, on_error: Value) -> Value {
    let mut lookup = json!({"source": source, "key": key, "as": "near"});
    if let Value::Object(m) = on_error {
        for (k, v) in m {
            lookup[k] = v;
        }
    }
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"embedding": "array", "amount": "number"}}},
            {"id": "nn", "type": "lookup", "config": lookup},
            {"id": "br", "type": "branch"},
            {"id": "deny", "type": "output", "config": {"fields": {"decision": "'deny'", "like": "near[0].payload.label", "id": "near[0].id"}}},
            {"id": "approve", "type": "output", "config": {"fields": {"decision": "'approve'", "neighbours": "size(near)"}}}
        ],
        "edges": [
            {"from": "in", "to": "nn"},
            {"from": "nn", "to": "br"},
            {"from": "br", "to": "deny", "when": "size(near) > 0 && near[0].payload.risk == 'high'"},
            {"from": "br", "to": "approve"}
        ]
    })
}

/// Vector data sources and lookups, async runs over gRPC (client and
/// orreryctl), and backtest params checked when the job is submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_lookups_grpc_async_runs_and_backtest_checks() {
    let root = tempfile::tempdir().expect("tempdir");
    let root_path = root.path().canonicalize().expect("canonical root");
    let root_s = root_path.to_string_lossy().to_string();
    let c = Cluster::formed(3, 2, &["--fs-root", &root_s]).await;
    c.wait_caught_up(0, Duration::from_secs(60)).await;

    // --- a collection with a few labelled points ---
    c.json_success(
        0,
        "POST",
        "/v1/collections",
        Some(json!({"name": "cases", "dim": 3, "metric": "l2"})),
    )
    .await;
    let points = json!({"points": [
        {"id": 1, "vector": [1.0, 0.0, 0.0], "payload": {"risk": "high", "label": "ring-a"}},
        {"id": 2, "vector": [0.0, 1.0, 0.0], "payload": {"risk": "low", "label": "regular"}},
        {"id": 3, "vector": [0.0, 0.0, 1.0], "payload": {"risk": "low", "label": "new"}},
        {"id": 4, "vector": [0.8, 0.3, 0.0], "payload": {"risk": "high", "label": "ring-b"}}
    ]});
    let r = c
        .json_success(1, "PUT", "/v1/collections/cases/points", Some(points))
        .await;
    assert_eq!(r["upserted"], 4, "{r}");
    let indexed = wait_until(Duration::from_secs(60), || async {
        let (s, v) = c
            .json_retrying(0, "GET", "/v1/collections/cases", None)
            .await;
        s == 200
            && v["points"] == 4
            && v["shard_states"]
                .as_array()
                .is_some_and(|a| a.iter().all(|s| s["index"] == "ready"))
    })
    .await;
    assert!(indexed.is_ok(), "collection never indexed");

    // --- vector data sources: validated at creation ---
    for (body, needle) in [
        (
            json!({"name": "v", "kind": "vector", "collection": "nope", "k": 2, "vector_field": "embedding"}),
            "collection \"nope\" does not exist",
        ),
        (
            json!({"name": "v", "kind": "vector", "collection": "cases", "k": 0, "vector_field": "embedding"}),
            "k must be 1..=1000",
        ),
        (
            json!({"name": "v", "kind": "vector", "collection": "cases", "k": 1001, "vector_field": "embedding"}),
            "k must be 1..=1000",
        ),
        (
            json!({"name": "v", "kind": "vector", "collection": "cases", "k": 2}),
            "vector_field",
        ),
        (
            json!({"name": "v", "kind": "vector", "collection": "cases", "k": 2, "vector_field": ""}),
            "vector_field",
        ),
        (
            json!({"name": "v", "kind": "vector", "collection": "cases", "k": 2, "vector_field": "e", "filter": {"must": 3}}),
            "filter",
        ),
    ] {
        let (s, v) = c
            .json_retrying(0, "POST", "/v1/data-sources", Some(body.clone()))
            .await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(error_message(&v).contains(needle), "{body}: {v}");
    }
    let src = c.json_success(0,
        "POST",
        "/v1/data-sources",
        Some(json!({"name": "similar", "kind": "vector", "collection": "cases", "k": 2, "vector_field": "embedding"})),
    )
    .await;
    assert_eq!(src["kind"], "vector", "{src}");
    assert_eq!(src["k"], 2, "{src}");
    assert_eq!(src["with_payload"], true, "{src}");
    c.json_success(1,
        "POST",
        "/v1/data-sources",
        Some(json!({"name": "similar_low", "kind": "vector", "collection": "cases", "k": 1,
                    "vector_field": "embedding", "filter": {"must": [{"key": "risk", "match": "low"}]}})),
    )
    .await;
    let listed = c.json_success(2, "GET", "/v1/data-sources", None).await;
    let low = listed["data_sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "similar_low")
        .cloned()
        .expect("listed");
    assert_eq!(low["filter"]["must"][0]["key"], "risk", "{low}");

    // --- a policy branching on the nearest neighbour's payload ---
    let p = c
        .json_success(0, "POST", "/v1/policies", Some(json!({"name": "fraud"})))
        .await;
    let id = p["id"].as_str().unwrap().to_string();
    // The key "input" is an object: the query vector is its vector_field.
    c.json_success(
        0,
        "POST",
        &format!("/v1/policies/{id}/versions"),
        Some(json!({"graph": fraud_graph("similar", "input", json!({}))})),
    )
    .await;
    let run = c
        .json_success(
            1,
            "POST",
            &format!("/v1/policies/{id}/runs"),
            Some(json!({"input": {"embedding": [0.95, 0.05, 0.0], "amount": 10}})),
        )
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["output"],
        json!({"decision": "deny", "like": "ring-a", "id": 1}),
        "{run}"
    );
    let trace = run["trace"].as_array().unwrap();
    assert_eq!(trace[1]["id"], "nn", "{run}");
    let hits = trace[1]["output"].as_array().expect("hits in the trace");
    assert_eq!(hits.len(), 2, "{run}");
    assert_eq!(hits[0]["id"], 1, "{run}");
    assert_eq!(hits[1]["id"], 4, "{run}");
    assert_eq!(hits[1]["payload"]["label"], "ring-b", "{run}");
    assert!(hits[0]["score"].as_f64().unwrap() < hits[1]["score"].as_f64().unwrap());
    assert_eq!(trace[2]["branch"], "deny", "{run}");
    // Near a low-risk point: approved, through another node.
    let run = c
        .json_success(
            2,
            "POST",
            &format!("/v1/policies/{id}/runs"),
            Some(json!({"input": {"embedding": [0.0, 0.9, 0.1], "amount": 10}})),
        )
        .await;
    assert_eq!(
        run["output"],
        json!({"decision": "approve", "neighbours": 2}),
        "{run}"
    );
    assert_eq!(run["trace"][2]["branch"], "approve", "{run}");

    // The key may also be the vector itself; the source's filter applies.
    c.json_success(
        0,
        "POST",
        &format!("/v1/policies/{id}/versions"),
        Some(json!({"graph": fraud_graph("similar_low", "input.embedding", json!({}))})),
    )
    .await;
    let run = c
        .json_success(
            0,
            "POST",
            &format!("/v1/policies/{id}/runs"),
            Some(json!({"input": {"embedding": [0.95, 0.05, 0.0], "amount": 10}})),
        )
        .await;
    assert_eq!(run["version"], 2, "{run}");
    assert_eq!(run["output"]["decision"], "approve", "{run}");
    let hits = run["trace"][1]["output"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{run}");
    assert_eq!(hits[0]["payload"]["risk"], "low", "{run}");

    // --- failing lookups follow on_error ---
    // fail (the default): a wrong dimension fails the run at the lookup.
    c.json_success(
        0,
        "POST",
        &format!("/v1/policies/{id}/versions"),
        Some(json!({"graph": fraud_graph("similar", "input", json!({}))})),
    )
    .await;
    let run = c
        .json_success(
            1,
            "POST",
            &format!("/v1/policies/{id}/runs"),
            Some(json!({"input": {"embedding": [1.0, 0.0], "amount": 10}})),
        )
        .await;
    assert_eq!(run["status"], "failed", "{run}");
    let e = run["error"].as_str().unwrap();
    assert!(
        e.contains("\"nn\"") && e.contains("has 2 components"),
        "{run}"
    );
    assert_eq!(run["trace"].as_array().unwrap().len(), 2, "{run}");
    assert!(run["trace"][1]["error"].as_str().unwrap().contains("dim 3"));
    // A non-numeric vector fails too.
    let run = c
        .json_success(
            1,
            "POST",
            &format!("/v1/policies/{id}/runs"),
            Some(json!({"input": {"embedding": [1.0, "x", 0.0], "amount": 10}})),
        )
        .await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"].as_str().unwrap().contains("vector[1]"),
        "{run}"
    );
    // default: the run goes on with the default value.
    c.json_success(0,
        "POST",
        &format!("/v1/policies/{id}/versions"),
        Some(json!({"graph": fraud_graph("similar", "input", json!({"on_error": "default", "default": []}))})),
    )
    .await;
    let run = c
        .json_success(
            2,
            "POST",
            &format!("/v1/policies/{id}/runs"),
            Some(json!({"input": {"embedding": [1.0, 0.0], "amount": 10}})),
        )
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["output"],
        json!({"decision": "approve", "neighbours": 0}),
        "{run}"
    );
    let te = run["trace"][1]["error"].as_str().unwrap();
    assert!(
        te.contains("has 2 components") && te.contains("default used"),
        "{run}"
    );

    // --- async runs over gRPC: the client, then orreryctl ---
    let mut client = c.grpc(1).await.expect("connect");
    let r = client
        .policy_run_async(
            &id,
            &json!({"embedding": [0.95, 0.05, 0.0], "amount": 5}).to_string(),
            Some(1),
            Some("k-1".into()),
        )
        .await
        .expect("async run");
    assert_eq!(r.status, "running");
    assert_eq!(r.version, 1);
    let mut done = client.run_get(&r.id).await.expect("get");
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.status == "running" {
        assert!(Instant::now() < deadline, "async gRPC run still running");
        tokio::time::sleep(Duration::from_millis(200)).await;
        done = client.run_get(&r.id).await.expect("get");
    }
    assert_eq!(done.status, "succeeded", "{done:?}");
    let out: Value = serde_json::from_str(done.output_json.as_deref().unwrap()).unwrap();
    assert_eq!(out["decision"], "deny", "{out}");
    assert_eq!(done.run_key.as_deref(), Some("k-1"));
    // A bad input is refused when submitted, not recorded as a failed run.
    let e = client
        .policy_run_async(&id, "{}", None, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is required"), "{e}");
    let started = c.ctl_json(
        2,
        &[
            "policies",
            "run",
            &id,
            "--input",
            r#"{"embedding": [0.0, 1.0, 0.0], "amount": 1}"#,
            "--async",
        ],
    );
    assert_eq!(started["status"], "running", "{started}");
    let done = finished(&c, 0, started["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"]["decision"], "approve", "{done}");

    // --- a deleted collection is a lookup error under on_error ---
    c.json_success(0, "DELETE", "/v1/collections/cases", None)
        .await;
    let run = c
        .json_success(
            0,
            "POST",
            &format!("/v1/policies/{id}/runs"),
            Some(json!({"input": {"embedding": [1.0, 0.0, 0.0], "amount": 10}})),
        )
        .await;
    assert_eq!(run["output"]["neighbours"], 0, "{run}");
    let te = run["trace"][1]["error"].as_str().unwrap();
    assert!(te.contains("\"cases\" does not exist"), "{run}");

    // --- backtest params are checked when the job is submitted ---
    c.json_success(0, "POST", "/v1/queues", Some(json!({"name": "bt"})))
        .await;
    for (params, field) in [
        (
            json!({"policy": "nope", "version": 1, "input_file": "h.jsonl"}),
            "params.policy",
        ),
        (
            json!({"policy": id, "version": 99, "input_file": "h.jsonl"}),
            "params.version",
        ),
        (
            json!({"policy": "fraud", "version": 1, "input_file": "h.jsonl", "compare_with_version": 42}),
            "params.compare_with_version",
        ),
        (
            json!({"policy": id, "version": 1, "input_file": "/etc/h.jsonl"}),
            "params.input_file",
        ),
        (
            json!({"policy": id, "version": 1, "input_file": "h.txt"}),
            "params.input_file",
        ),
        (
            json!({"policy": id, "input_file": "h.jsonl"}),
            "params.version",
        ),
    ] {
        let (s, v) = c
            .json_retrying(
                1,
                "POST",
                "/v1/jobs",
                Some(json!({"queue": "bt", "kind": "policy.backtest", "params": params})),
            )
            .await;
        assert_eq!(s, 400, "{params}: {v}");
        assert_eq!(v["error"]["code"], "invalid_params", "{v}");
        assert!(error_message(&v).contains(field), "{params}: {v}");
    }
    let q = c.json_success(2, "GET", "/v1/queues/bt", None).await;
    assert_eq!(q["counts"]["queued"], 0, "{q}");
    // Valid params are accepted (by name or id, with a comparison).
    let (s, v) = c.json_retrying(1,
        "POST",
        "/v1/jobs",
        Some(json!({"queue": "bt", "kind": "policy.backtest", "params":
            {"policy": "fraud", "version": 1, "input_file": "h.jsonl", "compare_with_version": 2}})),
    )
    .await;
    assert!(s == 200 || s == 201, "{v}");
}
