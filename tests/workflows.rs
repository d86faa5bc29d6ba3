//! Workflows end to end on a real 3-node cluster (TLS, tokens): the
//! definition checks, cancel, and a fan-out over 100 items with a fan-in,
//! run by a worker over REST while the node that leads the workflow's
//! shard group is killed with SIGKILL. Every step (every item) must
//! succeed exactly once, and no step may be claimed before its
//! dependencies succeeded.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const ITEMS: usize = 100;

/// The shard group a workflow (or job) id names: its shard is bits 40..56.
fn group_of(id: &str) -> u64 {
    let n = u128::from_str_radix(id, 16).expect("hex id");
    ((n >> 40) & 0xffff) as u64 + 1
}

fn place(job: &Value) -> (String, Option<u64>) {
    let p = &job["params"];
    (
        p["workflow"]["step"].as_str().expect("step").to_string(),
        p["index"].as_u64(),
    )
}

/// Claims up to `max` jobs of `queue` from node `i` (None: no answer, e.g.
/// during an election).
async fn claim(c: &Cluster, i: usize, queue: &str, max: u32, lease_s: u32) -> Option<Vec<Value>> {
    let body = json!({"worker_id": "wf-worker", "wait_s": 1, "max": max, "lease_s": lease_s});
    let (s, v) = c
        .json_req(i, "POST", &format!("/v1/queues/{queue}/claim"), Some(body))
        .await;
    match s {
        200 => Some(v["jobs"].as_array().cloned().unwrap_or_default()),
        204 => Some(Vec::new()),
        503 => None,
        _ => panic!("claim -> {s}: {v}"),
    }
}

async fn complete(c: &Cluster, i: usize, job: &Value, result: Value) -> u16 {
    let id = job["id"].as_str().expect("id");
    let body = json!({"token": job["token"], "result": result});
    c.json_req(i, "POST", &format!("/v1/jobs/{id}/complete"), Some(body))
        .await
        .0
}

async fn workflow(c: &Cluster, i: usize, id: &str) -> Value {
    c.json_ok(i, "GET", &format!("/v1/workflows/{id}"), None, 200)
        .await
}

fn step<'a>(w: &'a Value, name: &str) -> &'a Value {
    w["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {w}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_end_to_end() {
    let mut c = Cluster::formed(3, 2, &["--workers", "0"]).await;
    c.wait_version(7).await;
    refused_definitions(&c).await;
    cancel_stops_the_rest(&c).await;
    cli(&c).await;
    fan_out_fan_in_through_a_kill(&mut c).await;
}

async fn refused_definitions(c: &Cluster) {
    c.json_ok(
        0,
        "POST",
        "/v1/queues",
        Some(json!({"name": "wf-bad"})),
        201,
    )
    .await;
    for (steps, needle) in [
        (
            json!([{"name": "a", "kind": "k", "depends_on": ["b"]}, {"name": "b", "kind": "k", "depends_on": ["a"]}]),
            "cycle",
        ),
        (
            json!([{"name": "a", "kind": "k", "depends_on": ["nope"]}]),
            "step \"a\": depends on unknown step \"nope\"",
        ),
        (
            json!([{"name": "a", "kind": "k"}, {"name": "b", "kind": "k", "for_each": "a"}]),
            "step \"b\": for_each",
        ),
        (
            json!([{"name": "a", "kind": "k", "on_failure": "retry"}]),
            "step \"a\": on_failure",
        ),
        (json!([{"name": "a", "kind": "command"}]), "step \"a\""),
    ] {
        let (s, v) = c
            .json_req(
                0,
                "POST",
                "/v1/workflows",
                Some(json!({"queue": "wf-bad", "steps": steps})),
            )
            .await;
        assert!(s == 400 || s == 403, "{steps} -> {s}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
    }
    let (s, _) = c
        .json_req(
            0,
            "POST",
            "/v1/workflows",
            Some(json!({"queue": "no-such-q", "steps": [{"name": "a", "kind": "k"}]})),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = c
        .json_req(0, "GET", "/v1/workflows/0000000000000000000000000a", None)
        .await;
    assert_eq!(s, 404);
    // Nothing was enqueued by the refused definitions.
    assert_eq!(claim(c, 0, "wf-bad", 10, 30).await, Some(vec![]));
}

/// Cancel: the queued root is cancelled, the running one asked to stop,
/// and the dependents are never created.
async fn cancel_stops_the_rest(c: &Cluster) {
    c.json_ok(
        0,
        "POST",
        "/v1/queues",
        Some(json!({"name": "wf-cancel"})),
        201,
    )
    .await;
    let steps = json!([
        {"name": "a", "kind": "wf.a", "priority": 5},
        {"name": "b", "kind": "wf.b"},
        {"name": "c", "kind": "wf.c", "depends_on": ["a", "b"]},
    ]);
    let w = c
        .json_ok(
            1,
            "POST",
            "/v1/workflows",
            Some(json!({"queue": "wf-cancel", "steps": steps})),
            201,
        )
        .await;
    let id = w["id"].as_str().expect("id").to_string();
    assert_eq!(step(&w, "c")["state"], "pending");
    let a = claim(c, 0, "wf-cancel", 1, 60).await.expect("claim");
    assert_eq!(a.len(), 1);
    assert_eq!(place(&a[0]).0, "a");
    let w = c
        .json_ok(2, "POST", &format!("/v1/workflows/{id}/cancel"), None, 200)
        .await;
    assert_eq!(w["state"], "cancelled", "{w}");
    assert_eq!(step(&w, "b")["state"], "cancelled", "{w}");
    assert_eq!(step(&w, "c")["state"], "skipped", "{w}");
    assert_eq!(step(&w, "a")["state"], "running", "{w}");
    // The running job learns of it at its heartbeat and may still finish.
    let aid = a[0]["id"].as_str().unwrap();
    let hb = c
        .json_ok(
            0,
            "POST",
            &format!("/v1/jobs/{aid}/heartbeat"),
            Some(json!({"token": a[0]["token"]})),
            200,
        )
        .await;
    assert_eq!(hb["cancelled"], true, "{hb}");
    assert_eq!(complete(c, 0, &a[0], json!(1)).await, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        claim(c, 1, "wf-cancel", 10, 30).await,
        Some(vec![]),
        "nothing claimable after a cancel"
    );
    let w = workflow(c, 0, &id).await;
    assert_eq!(w["state"], "cancelled");
    assert!(step(&w, "c")["jobs"].as_array().unwrap().is_empty(), "{w}");
    // Cancelling again answers the same; a finished workflow cannot be.
    c.json_ok(1, "POST", &format!("/v1/workflows/{id}/cancel"), None, 200)
        .await;
}

/// `orreryctl workflows start|get|cancel` (REST, TLS, the root token).
async fn cli(c: &Cluster) {
    c.json_ok(
        0,
        "POST",
        "/v1/queues",
        Some(json!({"name": "wf-cli"})),
        201,
    )
    .await;
    let def = c.dir.path().join("wf.json");
    let body = json!({"queue": "wf-cli", "steps": [
        {"name": "a", "kind": "wf.a"}, {"name": "b", "kind": "wf.b", "depends_on": ["a"]}]});
    std::fs::write(&def, body.to_string()).expect("write wf.json");
    let w = c.ctl_json(1, &["workflows", "start", "--file", def.to_str().unwrap()]);
    let id = w["id"].as_str().expect("id").to_string();
    assert_eq!(step(&w, "b")["state"], "pending", "{w}");
    let text = c.ctl_ok(2, &["workflows", "get", &id]);
    assert!(
        text.contains("running") && text.contains("pending"),
        "{text}"
    );
    let w = c.ctl_json(0, &["workflows", "cancel", &id]);
    assert_eq!(w["state"], "cancelled", "{w}");
    let bad = c.ctl(0, &["workflows", "get", "0000000000000000000000000a"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("404"),
        "{bad:?}"
    );
}

/// What the worker saw: every (step, item) it completed, in order.
#[derive(Default)]
struct Seen {
    done: BTreeMap<(String, Option<u64>), String>,
    /// (step, item) claimed after it had succeeded.
    rerun_after_success: Vec<(String, Option<u64>)>,
}

impl Seen {
    fn check_claimed(&mut self, job: &Value) {
        let (step, idx) = place(job);
        let deps = &job["params"]["deps"];
        if self.done.contains_key(&(step.clone(), idx)) {
            self.rerun_after_success.push((step.clone(), idx));
        }
        match step.as_str() {
            "list" => {}
            "each" => {
                assert!(
                    self.done.contains_key(&("list".into(), None)),
                    "an item before its list"
                );
                assert_eq!(deps["list"].as_array().map(Vec::len), Some(ITEMS));
                assert_eq!(job["params"]["item"], json!(idx.unwrap() * 10));
            }
            "total" => {
                let items = (0..ITEMS as u64)
                    .filter(|i| self.done.contains_key(&("each".into(), Some(*i))))
                    .count();
                assert_eq!(items, ITEMS, "the fan-in ran before all of its items");
                let got: Vec<Value> = deps["each"].as_array().expect("fan-in array").clone();
                let want: Vec<Value> = (0..ITEMS as u64)
                    .map(|i| json!({"x": i * 10 + 1}))
                    .collect();
                assert_eq!(got, want);
            }
            other => panic!("unexpected step {other}"),
        }
    }
}

/// The node (index) that leads group `g`, as node `i` sees it.
async fn leader_of(c: &Cluster, i: usize, g: u64) -> Option<usize> {
    let (s, v) = c.json_req(i, "GET", "/v1/cluster/status", None).await;
    if s != 200 {
        return None;
    }
    v["groups"].as_array()?.iter().find(|x| x["group"] == g)?["leader"]
        .as_u64()
        .map(|n| n as usize - 1)
}

async fn fan_out_fan_in_through_a_kill(c: &mut Cluster) {
    // Short leases so the jobs the killed node's worker held come back
    // soon; attempts enough that the re-election costs none its life.
    c.json_ok(
        0,
        "POST",
        "/v1/queues",
        Some(json!({"name": "wf", "lease_s": 4, "max_attempts": 10})),
        201,
    )
    .await;
    let steps = json!([
        {"name": "list", "kind": "wf.list"},
        {"name": "each", "kind": "wf.item", "depends_on": ["list"], "for_each": "list"},
        {"name": "total", "kind": "wf.total", "depends_on": ["each"]},
    ]);
    let w = c
        .json_ok(
            0,
            "POST",
            "/v1/workflows",
            Some(json!({"queue": "wf", "steps": steps, "input": {"n": ITEMS}})),
            201,
        )
        .await;
    let id = w["id"].as_str().expect("id").to_string();
    assert_eq!(w["state"], "running");
    assert_eq!(step(&w, "list")["state"], "claimable", "{w}");
    assert_eq!(step(&w, "each")["state"], "pending", "{w}");
    let group = group_of(&id);
    let mut seen = Seen::default();

    // The root: nothing else is claimable before it succeeds.
    let list = claim(c, 0, "wf", 10, 30).await.expect("claim");
    assert_eq!(list.len(), 1, "only the root is claimable: {list:?}");
    seen.check_claimed(&list[0]);
    assert_eq!(list[0]["params"]["input"]["n"], ITEMS);
    let items: Vec<u64> = (0..ITEMS as u64).map(|i| i * 10).collect();
    assert_eq!(complete(c, 0, &list[0], json!(items)).await, 200);
    seen.done
        .insert(("list".into(), None), list[0]["id"].to_string());

    // A worker on the group's leader takes some items; the leader dies
    // with them running.
    let victim = leader_of(c, 0, group).await.expect("a leader");
    let held = loop {
        match claim(c, victim, "wf", 7, 4).await {
            Some(j) if !j.is_empty() => break j,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    for j in &held {
        seen.check_claimed(j);
    }
    let held_ids: BTreeSet<String> = held
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    c.kill9(victim);
    let alive: Vec<usize> = (0..3).filter(|i| *i != victim).collect();

    // The other workers run everything to the end, through the others.
    let start = Instant::now();
    let mut turn = 0;
    while !seen.done.contains_key(&("total".into(), None)) {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the workflow never finished: {} done\n{}",
            seen.done.len(),
            c.log_tails(30)
        );
        turn += 1;
        let node = alive[turn % alive.len()];
        let Some(jobs) = claim(c, node, "wf", 25, 30).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        for j in jobs {
            seen.check_claimed(&j);
            let (step, idx) = place(&j);
            let result = match step.as_str() {
                "each" => json!({"x": j["params"]["item"].as_u64().unwrap() + 1}),
                _ => json!({"sum": ITEMS}),
            };
            // A completion lost to the election is retried until it
            // commits or its lease is gone (409: the job runs again).
            let s = loop {
                let s = complete(c, node, &j, result.clone()).await;
                if s != 503 {
                    break s;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            // A 409 after an answer lost in the election: the job may have
            // succeeded with this very attempt.
            let ours = s == 200 || {
                let runs = c.job_runs(node, j["id"].as_str().unwrap()).await;
                runs.iter()
                    .any(|r| r["attempt"] == j["token"] && r["outcome"] == "succeeded")
            };
            if ours {
                let prev = seen.done.insert((step.clone(), idx), j["id"].to_string());
                assert!(prev.is_none(), "{step}[{idx:?}] succeeded twice");
            } else {
                assert_eq!(s, 409, "complete {step}[{idx:?}] -> {s}");
            }
        }
    }
    assert!(
        seen.rerun_after_success.is_empty(),
        "claimed after success: {:?}",
        seen.rerun_after_success
    );
    assert_eq!(seen.done.len(), ITEMS + 2);

    let node = alive[0];
    let w = workflow(c, node, &id).await;
    assert_eq!(w["state"], "succeeded", "{w}");
    assert_eq!(step(&w, "total")["result"], json!({"sum": ITEMS}));
    let each = step(&w, "each");
    let jobs = each["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), ITEMS, "one job per item");
    assert!(jobs.iter().all(|j| j["state"] == "succeeded"), "{each}");
    // Every job ran to success once; the held ones first expired.
    let mut expired = 0;
    for j in jobs
        .iter()
        .chain(step(&w, "list")["jobs"].as_array().unwrap())
        .chain(step(&w, "total")["jobs"].as_array().unwrap())
    {
        let jid = j["id"].as_str().unwrap();
        let runs = c.job_runs(node, jid).await;
        let ok: Vec<&Value> = runs
            .iter()
            .filter(|r| r["outcome"] == "succeeded")
            .collect();
        assert_eq!(
            ok.len(),
            1,
            "job {jid} succeeded {} times: {runs:?}",
            ok.len()
        );
        assert_eq!(
            runs.last().map(|r| &r["outcome"]),
            Some(&json!("succeeded")),
            "a run after success: {runs:?}"
        );
        if held_ids.contains(jid) {
            expired += runs.iter().filter(|r| r["outcome"] == "expired").count();
        }
    }
    assert!(
        expired >= held_ids.len(),
        "the held jobs' leases did not expire: {expired}"
    );
}

/// Below cluster version 7 a workflow is refused before it is proposed
/// (an older node could not decode the entry), and nothing is enqueued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_version_7_workflows_are_refused() {
    let c = Cluster::start_with_env(
        1,
        &["--workers", "0"],
        &[("ORRERY_TEST_MAX_CLUSTER_VERSION", "6")],
    )
    .await;
    c.form(1);
    wait_until(Duration::from_secs(60), || async {
        let (s, v) = c.json_req(0, "GET", "/v1/cluster/version", None).await;
        s == 200 && v["active"] == 6
    })
    .await
    .expect("cluster version 6");
    c.json_ok(0, "POST", "/v1/queues", Some(json!({"name": "old"})), 201)
        .await;
    let (s, v) = c
        .json_req(
            0,
            "POST",
            "/v1/workflows",
            Some(json!({"queue": "old", "steps": [{"name": "a", "kind": "k"}]})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "cluster_version_too_low", "{v}");
    assert_eq!(claim(&c, 0, "old", 10, 30).await, Some(vec![]));
}
