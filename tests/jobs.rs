//! End-to-end tests of job queues and the execution engine: real 3-node
//! clusters of `orrery` processes. One cluster is shared by the checks of
//! `jobs_end_to_end` (they use distinct queues), and the node kill comes last.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Jc {
    c: Cluster,
    root: PathBuf,
}

impl Jc {
    async fn submit(&self, i: usize, body: Value) -> Value {
        self.c.json_ok(i, "POST", "/v1/jobs", Some(body), 201).await
    }

    async fn job(&self, i: usize, id: &str) -> Value {
        self.c.job(i, id).await
    }

    /// External-worker claim with a 60 s lease (a loaded machine must not
    /// lose it between steps).
    async fn claim(&self, i: usize, queue: &str, wait_s: f64) -> Option<Value> {
        self.claim_lease(i, queue, wait_s, Some(60)).await
    }

    async fn claim_lease(
        &self,
        i: usize,
        queue: &str,
        wait_s: f64,
        lease_s: Option<u32>,
    ) -> Option<Value> {
        let mut body = json!({"worker_id": "ext-1", "wait_s": wait_s});
        if let Some(l) = lease_s {
            body["lease_s"] = json!(l);
        }
        let (s, v) = self
            .c
            .json_req(i, "POST", &format!("/v1/queues/{queue}/claim"), Some(body))
            .await;
        match s {
            200 => Some(v),
            204 => None,
            _ => panic!("claim on {queue} -> {s}: {v}"),
        }
    }

    /// Waits until job `id` is in one of `states`; returns it.
    async fn wait_state(&self, id: &str, states: &[&str], timeout: Duration) -> Value {
        self.c.wait_job(&[0, 1], id, states, timeout).await
    }

    async fn runs(&self, i: usize, id: &str) -> Vec<Value> {
        self.c.job_runs(i, id).await
    }

    async fn create_queue(&self, body: Value) {
        self.c
            .json_ok(0, "POST", "/v1/queues", Some(body), 201)
            .await;
    }
}

fn assert_error(status: u16, v: &Value, want: u16, needle: &str) {
    assert_eq!(status, want, "expected {want}, got {status}: {v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        !v["error"]["code"].as_str().unwrap_or_default().is_empty(),
        "no error code: {v}"
    );
    assert!(
        msg.contains(needle),
        "error message {msg:?} does not mention {needle:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_end_to_end() {
    let root = tempfile::tempdir().expect("tempdir");
    let root_path = root.path().canonicalize().expect("canonical root");
    let root_s = root_path.to_string_lossy().to_string();
    let c = Cluster::formed(
        3,
        3,
        &[
            "--workers",
            "2",
            "--fs-root",
            &root_s,
            "--allow-command-jobs",
        ],
    )
    .await;
    let t = Jc { c, root: root_path };
    bad_input(&t).await;
    dedupe(&t).await;
    bulk_submit_and_complete(&t).await;
    claim_with_completions(&t).await;
    group_commit(&t).await;
    priority_and_delay(&t).await;
    stale_token_and_expiry(&t).await;
    retries_then_dead(&t).await;
    result_cap_heartbeat_and_cancel(&t).await;
    events(&t).await;
    no_gpus(&t).await;
    shared_gpu_offers(&t).await;
    builtin_kinds(&t).await;
    command_cancel_kills_the_process(&t).await;
    workers_on_all_nodes(&t).await;
    queue_info_and_delete(&t).await;
    cli(&t).await;
    kill9_mid_job(t).await;
}

/// Finished jobs are forgotten once the retention period has passed (here
/// 2 s), with their dedupe keys; queued and running jobs are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_forgotten_after_retention() {
    let root = tempfile::tempdir().expect("tempdir");
    let c = Cluster::formed(3, 1, &["--workers", "0", "--job-retention-s", "2"]).await;
    let t = Jc {
        c,
        root: root.path().to_path_buf(),
    };
    t.create_queue(json!({"name": "ret", "lease_s": 60})).await;
    let job = json!({"queue": "ret", "kind": "rk", "dedupe_key": "once"});
    let done = t.submit(0, job.clone()).await;
    let id = done["id"].as_str().unwrap().to_string();
    let kept = t.submit(1, json!({"queue": "ret", "kind": "keep"})).await;
    let kept_id = kept["id"].as_str().unwrap().to_string();
    let claimed =
        t.c.json_req(
            1,
            "POST",
            "/v1/queues/ret/claim",
            Some(json!({"worker_id": "w", "kinds": ["rk"], "lease_s": 60, "wait_s": 2})),
        )
        .await;
    assert_eq!(claimed.0, 200, "{claimed:?}");
    assert_eq!(claimed.1["id"], json!(id));
    t.c.json_ok(
        2,
        "POST",
        &format!("/v1/jobs/{id}/complete"),
        Some(json!({"token": claimed.1["token"], "result": {"r": 1}})),
        200,
    )
    .await;
    // Within the retention period the job and its dedupe key are kept.
    let again =
        t.c.json_ok(0, "POST", "/v1/jobs", Some(job.clone()), 200)
            .await;
    assert_eq!(again["id"], json!(id));
    assert_eq!(t.job(2, &id).await["result"], json!({"r": 1}));
    let start = Instant::now();
    loop {
        let (s, v) =
            t.c.json_req(1, "GET", &format!("/v1/jobs/{id}"), None)
                .await;
        if s == 404 {
            assert_error(s, &v, 404, "retention");
            break;
        }
        assert_eq!(s, 200, "{v}");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "job {id} still kept after 30 s: {v}\n{}",
            t.c.log_tails(30)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The dedupe key is free again: it makes a new job.
    let fresh = t.submit(2, job).await;
    assert_ne!(fresh["id"], json!(id));
    assert_eq!(t.job(0, &kept_id).await["state"], "queued");
}

async fn bad_input(t: &Jc) {
    t.create_queue(json!({"name": "ext", "lease_s": 2, "max_attempts": 3,
        "backoff": {"initial_ms": 300, "multiplier": 2.0, "max_ms": 1000}}))
        .await;
    let (s, v) =
        t.c.json_req(0, "POST", "/v1/queues", Some(json!({"name": "ext"})))
            .await;
    assert_error(s, &v, 409, "already exists");
    let (s, v) =
        t.c.json_req(1, "POST", "/v1/queues", Some(json!({"name": "bad name!"})))
            .await;
    assert_error(s, &v, 400, "name");
    let (s, v) =
        t.c.json_req(
            1,
            "POST",
            "/v1/queues",
            Some(json!({"name": "q", "lease_s": "x"})),
        )
        .await;
    assert_error(s, &v, 400, "lease_s");
    let (s, v) =
        t.c.json_req(
            1,
            "POST",
            "/v1/queues",
            Some(json!({"name": "q", "bogus": 1})),
        )
        .await;
    assert_error(s, &v, 400, "bogus");
    let (s, v) =
        t.c.json_req(
            1,
            "POST",
            "/v1/jobs",
            Some(json!({"queue": "nope", "kind": "x"})),
        )
        .await;
    assert_error(s, &v, 404, "nope");
    let (s, v) =
        t.c.json_req(1, "POST", "/v1/jobs", Some(json!({"queue": "ext"})))
            .await;
    assert_error(s, &v, 400, "kind");
    let (s, v) =
        t.c.json_req(
            2,
            "POST",
            "/v1/jobs",
            Some(json!({"queue": "ext", "kind": "fs.summarize", "params": {}})),
        )
        .await;
    assert_error(s, &v, 400, "params.path");
    let (s, v) =
        t.c.json_req(
            2,
            "POST",
            "/v1/jobs",
            Some(json!({"queue": "ext", "kind": "command", "params": {"argv": "ls"}})),
        )
        .await;
    assert_error(s, &v, 400, "params.argv");
    let (s, v) =
        t.c.json_req(
            2,
            "POST",
            "/v1/jobs",
            Some(json!({"queue": "ext", "kind": "x", "priority": "high"})),
        )
        .await;
    assert_error(s, &v, 400, "priority");
    let (s, v) = t.c.json_req(0, "GET", "/v1/jobs?state=weird", None).await;
    assert_error(s, &v, 400, "state");
    let (s, v) = t.c.json_req(0, "GET", "/v1/jobs/notajob", None).await;
    assert_error(s, &v, 404, "notajob");
    let (s, v) =
        t.c.json_req(0, "GET", "/v1/jobs/0000000000000000ffffffffff", None)
            .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) =
        t.c.json_req(
            0,
            "POST",
            "/v1/queues/nope/claim",
            Some(json!({"worker_id": "w"})),
        )
        .await;
    assert_error(s, &v, 404, "nope");
    let (s, v) =
        t.c.json_req(0, "POST", "/v1/queues/ext/claim", Some(json!({})))
            .await;
    assert_error(s, &v, 400, "worker_id");
    let (s, v) = t.c.json_req(0, "GET", "/v1/events?since=x", None).await;
    assert_error(s, &v, 400, "since");
    let (s, _) = t.c.json_req(0, "POST", "/v1/jobs", None).await;
    assert_eq!(s, 400);
}

async fn dedupe(t: &Jc) {
    let body = json!({"queue": "ext", "kind": "dd", "dedupe_key": "order-42", "params": {"n": 1}});
    let a = t.submit(0, body.clone()).await;
    assert_eq!(a["created"], true);
    let b = t.c.json_ok(1, "POST", "/v1/jobs", Some(body), 200).await;
    assert_eq!(b["created"], false);
    assert_eq!(a["id"], b["id"]);
    t.c.json_ok(
        2,
        "POST",
        &format!("/v1/jobs/{}/cancel", a["id"].as_str().unwrap()),
        None,
        200,
    )
    .await;
}

/// Bulk submit and bulk complete, over REST and gRPC: one result per item
/// in order, dedupe inside a batch, a bad item refuses the whole request
/// (nothing enqueued), a stale token or unknown id fails only its item.
async fn bulk_submit_and_complete(t: &Jc) {
    t.create_queue(json!({"name": "bulk", "lease_s": 60})).await;
    let count = |v: &Value| v["jobs"].as_array().map(|a| a.len()).unwrap_or(0);
    let listed = || async {
        count(
            &t.c.json_ok(2, "GET", "/v1/jobs?queue=bulk&limit=1000", None, 200)
                .await,
        )
    };
    // Refused as a whole: item 3 is bad, nothing is enqueued.
    let mut jobs: Vec<Value> = (0..5)
        .map(|n| json!({"queue": "bulk", "kind": "bk", "params": {"n": n}}))
        .collect();
    jobs[3]["priority"] = json!("high");
    let (s, v) =
        t.c.json_req(0, "POST", "/v1/jobs/batch", Some(json!({"jobs": jobs})))
            .await;
    assert_error(s, &v, 400, "jobs[3]");
    assert!(v["error"]["message"].as_str().unwrap().contains("priority"));
    let (s, v) =
        t.c.json_req(
            0,
            "POST",
            "/v1/jobs/batch",
            Some(json!({"jobs": [{"queue": "nope", "kind": "bk"}]})),
        )
        .await;
    assert_error(s, &v, 404, "jobs[0]");
    let (s, v) =
        t.c.json_req(0, "POST", "/v1/jobs/batch", Some(json!({"jobs": []})))
            .await;
    assert_error(s, &v, 400, "at least one");
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"queue": "bulk", "kind": "bk"}))
        .collect();
    let (s, v) =
        t.c.json_req(0, "POST", "/v1/jobs/batch", Some(json!({"jobs": many})))
            .await;
    assert_error(s, &v, 413, "1000");
    assert_eq!(listed().await, 0, "a refused bulk submit enqueued jobs");

    // 40 jobs, two of them with the same dedupe key: 39 created, 1 existing.
    let mut jobs: Vec<Value> = (0..40)
        .map(|n| json!({"queue": "bulk", "kind": "bk", "params": {"n": n}}))
        .collect();
    jobs[10]["dedupe_key"] = json!("same");
    jobs[20]["dedupe_key"] = json!("same");
    let v =
        t.c.json_ok(
            1,
            "POST",
            "/v1/jobs/batch",
            Some(json!({"jobs": jobs})),
            200,
        )
        .await;
    assert_eq!(
        (
            v["created"].clone(),
            v["existing"].clone(),
            v["failed"].clone()
        ),
        (json!(39), json!(1), json!(0)),
        "{v}"
    );
    let got = v["jobs"].as_array().unwrap();
    assert_eq!(got.len(), 40);
    for (n, j) in got.iter().enumerate() {
        assert_eq!(
            j["params"]["n"],
            if n == 20 { json!(10) } else { json!(n) },
            "order: {j}"
        );
        assert_eq!(j["state"], "queued");
    }
    assert_eq!(got[10]["id"], got[20]["id"]);
    assert_eq!(got[20]["created"], false);
    let ids: BTreeSet<String> = got
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 39, "job ids must be unique");
    // Readable from another node; every one queued.
    for id in ids.iter().take(5) {
        assert_eq!(t.job(2, id).await["state"], "queued");
    }
    assert_eq!(listed().await, 39);

    // Claim them all (batch claims), then complete in one request with one
    // stale token and one unknown id mixed in.
    let mut claimed: Vec<Value> = Vec::new();
    let start = Instant::now();
    while claimed.len() < 39 {
        let (s, v) =
            t.c.json_req(
                0,
                "POST",
                "/v1/queues/bulk/claim",
                Some(json!({"worker_id": "bulk-w", "wait_s": 2, "max": 50, "lease_s": 60})),
            )
            .await;
        assert!(s == 200 || s == 204, "claim -> {s}: {v}");
        if s == 200 {
            claimed.extend(v["jobs"].as_array().cloned().unwrap_or_default());
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "claimed only {}",
            claimed.len()
        );
    }
    assert_eq!(claimed.len(), 39);
    let mut completions: Vec<Value> = claimed
        .iter()
        .map(|j| json!({"id": j["id"], "token": j["token"], "result": {"n": j["params"]["n"]}}))
        .collect();
    completions.push(json!({"id": claimed[0]["id"], "token": 7}));
    completions.push(json!({"id": "0000000000000000000000zzzz", "token": 1}));
    let (s, v) =
        t.c.json_req(
            0,
            "POST",
            "/v1/jobs/complete",
            Some(json!({"completions": [{"id": "x"}]})),
        )
        .await;
    assert_error(s, &v, 400, "completions[0]");
    let v =
        t.c.json_ok(
            2,
            "POST",
            "/v1/jobs/complete",
            Some(json!({"completions": completions})),
            200,
        )
        .await;
    let res = v["results"].as_array().unwrap();
    assert_eq!(res.len(), 41);
    assert_eq!(
        (v["completed"].clone(), v["failed"].clone()),
        (json!(39), json!(2)),
        "{v}"
    );
    for (r, j) in res.iter().zip(&claimed) {
        assert_eq!(r["id"], j["id"]);
        assert_eq!(r["state"], "succeeded", "{r}");
    }
    // The stale token: a conflict (the job completed earlier in the same
    // request), and the unknown id: not found.
    assert_eq!(res[39]["error"]["code"], "conflict", "{}", res[39]);
    assert_eq!(res[40]["error"]["code"], "not_found", "{}", res[40]);
    for j in claimed.iter().take(5) {
        let job = t.job(1, j["id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "succeeded");
        assert_eq!(job["result"]["n"], j["params"]["n"]);
        assert_eq!(t.runs(1, j["id"].as_str().unwrap()).await.len(), 1);
    }

    // The same over gRPC.
    let client = t.c.grpc(1).await.expect("grpc connect");
    let reqs: Vec<orrery_client::pb::SubmitRequest> = (0..3)
        .map(|n| orrery_client::pb::SubmitRequest {
            queue: "bulk".into(),
            kind: "bk".into(),
            params_json: format!("{{\"g\": {n}}}"),
            ..Default::default()
        })
        .collect();
    let items = client.submit_jobs(reqs).await.expect("grpc bulk submit");
    assert_eq!(items.len(), 3);
    assert!(items
        .iter()
        .all(|i| i.created && i.error.is_none() && i.job.is_some()));
    let mut claimed: Vec<Value> = Vec::new();
    let start = Instant::now();
    while claimed.len() < 3 {
        if let (200, v) =
            t.c.json_req(
                2,
                "POST",
                "/v1/queues/bulk/claim",
                Some(json!({"worker_id": "bulk-g", "wait_s": 2, "max": 10, "lease_s": 60})),
            )
            .await
        {
            claimed.extend(v["jobs"].as_array().cloned().unwrap_or_default());
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "claimed only {}",
            claimed.len()
        );
    }
    let mut done: Vec<(String, u32, String)> = claimed
        .iter()
        .map(|j| {
            (
                j["id"].as_str().unwrap().to_string(),
                j["token"].as_u64().unwrap() as u32,
                "{\"ok\":true}".to_string(),
            )
        })
        .collect();
    done.push((done[0].0.clone(), 1, String::new()));
    let items = client
        .complete_jobs(done)
        .await
        .expect("grpc bulk complete");
    assert_eq!(items.len(), 4);
    assert!(
        items[..3]
            .iter()
            .all(|i| i.state == "succeeded" && i.error.is_none()),
        "{items:?}"
    );
    assert_eq!(
        items[3].error.as_ref().map(|e| e.code.as_str()),
        Some("conflict")
    );
}

/// A claim that carries the worker's finished jobs: they are completed
/// (each on its own) before the claim looks for work, over REST and gRPC.
async fn claim_with_completions(t: &Jc) {
    // One partition with a concurrency limit of one: a second job can only
    // be claimed once the first is complete.
    t.create_queue(
        json!({"name": "settle", "partitions": 1, "concurrency_limit": 1, "lease_s": 60}),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let j = t
            .submit(
                0,
                json!({"queue": "settle", "kind": "sk", "params": {"n": n}}),
            )
            .await;
        ids.push(j["id"].as_str().unwrap().to_string());
    }
    let claim = |body: Value| async move {
        t.c.json_req(1, "POST", "/v1/queues/settle/claim", Some(body))
            .await
    };
    let (s, v) = claim(json!({"worker_id": "sw", "max": 1, "wait_s": 2})).await;
    assert_eq!(s, 200, "{v}");
    let first = v["jobs"][0].clone();
    assert_eq!(first["id"], json!(ids[0]), "{v}");
    let (s, v) = claim(json!({"worker_id": "sw", "max": 1})).await;
    assert_eq!(s, 204, "the limit holds while the first job runs: {v}");

    // Bad input is refused as a whole, before anything is written.
    let (s, v) = claim(json!({"worker_id": "sw", "complete": "all"})).await;
    assert_error(s, &v, 400, "complete");
    let (s, v) = claim(json!({"worker_id": "sw", "complete": [{"id": ids[0]}]})).await;
    assert_error(s, &v, 400, "complete[0]");
    assert_eq!(t.job(2, &ids[0]).await["state"], "running");

    // The completion frees the slot the claim then takes; a stale token and
    // an unknown id fail on their own.
    let (s, v) = claim(json!({
        "worker_id": "sw",
        "max": 1,
        "wait_s": 2,
        "complete": [
            {"id": ids[0], "token": first["token"], "result": {"n": 0}},
            {"id": ids[0], "token": 7},
            {"id": "nonsense", "token": 1},
        ],
    }))
    .await;
    assert_eq!(s, 200, "{v}");
    let c = &v["completions"];
    assert_eq!(
        (c["completed"].clone(), c["failed"].clone()),
        (json!(1), json!(2)),
        "{v}"
    );
    assert_eq!(c["results"][0]["state"], "succeeded", "{v}");
    assert_eq!(c["results"][1]["error"]["code"], "conflict", "{v}");
    assert!(c["results"][2]["error"]["code"].is_string(), "{v}");
    let second = v["jobs"][0].clone();
    assert_eq!(second["id"], json!(ids[1]), "{v}");
    let done = t.job(2, &ids[0]).await;
    assert_eq!(
        (done["state"].clone(), done["result"].clone()),
        (json!("succeeded"), json!({"n": 0}))
    );

    // Completing the only running job and finding nothing else is still
    // a 200 that reports the completion, not a 204.
    let (s, v) = claim(json!({
        "worker_id": "sw",
        "max": 2,
        "kinds": ["other"],
        "complete": [{"id": ids[1], "token": second["token"]}],
    }))
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["jobs"], json!([]), "{v}");
    assert_eq!(v["completions"]["completed"], 1, "{v}");
    assert_eq!(t.job(0, &ids[1]).await["state"], "succeeded");

    // gRPC: the same in one call.
    let client = t.c.grpc(2).await.expect("grpc connect");
    let got = client
        .claim_jobs("settle", "sw-grpc", 1, 2.0)
        .await
        .expect("grpc claim");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, ids[2]);
    let (next, items) = client
        .claim_jobs_completing(
            "settle",
            "sw-grpc",
            1,
            2.0,
            vec![
                (got[0].id.clone(), got[0].attempts, "{\"g\":1}".into()),
                (got[0].id.clone(), 9, String::new()),
            ],
        )
        .await
        .expect("grpc claim with completions");
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].state, "succeeded", "{items:?}");
    assert_eq!(
        items[1].error.as_ref().map(|e| e.code.as_str()),
        Some("conflict")
    );
    assert_eq!(next.len(), 1, "the completion freed the slot");
    assert_eq!(next[0].id, ids[3]);
    assert_eq!(t.job(1, &ids[2]).await["result"], json!({"g": 1}));
}

/// Sums a counter over every node's `/metrics`.
async fn counter(t: &Jc, name: &str) -> f64 {
    t.c.counter_sum(name).await
}

/// Concurrent single-job requests are merged into shared log entries, and
/// each still gets exactly its own answer: every submit its own job (a
/// dedupe key shared by two concurrent submits gives one job), every claim
/// jobs no other claim got, every completion its own job.
async fn group_commit(t: &Jc) {
    t.create_queue(json!({"name": "gc", "lease_s": 120})).await;
    let requests0 = counter(t, "orrery_group_commit_requests_total").await;
    let entries0 = counter(t, "orrery_group_commit_entries_total").await;
    let submits = (0..150).map(|n| async move {
        let mut body = json!({"queue": "gc", "kind": "gc", "params": {"n": n}});
        if n < 20 {
            body["dedupe_key"] = json!(format!("pair-{}", n % 10));
        }
        let (s, v) = t.c.json_req(n % 3, "POST", "/v1/jobs", Some(body)).await;
        assert!(s == 201 || s == 200, "submit {n} -> {s}: {v}");
        (n, s, v)
    });
    let mut ids = BTreeSet::new();
    let mut by_key: BTreeMap<usize, Vec<(u16, String)>> = BTreeMap::new();
    for (n, s, v) in futures::future::join_all(submits).await {
        let id = v["id"].as_str().expect("job id").to_string();
        if n < 20 {
            by_key.entry(n % 10).or_default().push((s, id.clone()));
        } else {
            assert_eq!(s, 201);
            assert_eq!(
                v["params"]["n"],
                json!(n),
                "submit {n} got another job: {v}"
            );
        }
        ids.insert(id);
    }
    for (k, pair) in &by_key {
        let mut statuses: Vec<u16> = pair.iter().map(|p| p.0).collect();
        statuses.sort();
        assert_eq!(statuses, vec![200, 201], "dedupe pair {k}: {pair:?}");
        assert_eq!(pair[0].1, pair[1].1, "dedupe pair {k} got two jobs");
    }
    assert_eq!(ids.len(), 140, "130 plain jobs and 10 deduplicated ones");

    // 30 workers claim concurrently until every job is out; none twice.
    let claimed = std::sync::Mutex::new(Vec::<(String, u64)>::new());
    let workers = (0..30).map(|w| {
        let claimed = &claimed;
        async move {
            loop {
                let body = json!({"worker_id": format!("gc-{w}"), "max": 3, "wait_s": 0});
                let (s, v) =
                    t.c.json_req(w % 3, "POST", "/v1/queues/gc/claim", Some(body))
                        .await;
                match s {
                    204 => return,
                    200 => {
                        let mut c = claimed.lock().unwrap();
                        for j in v["jobs"].as_array().expect("jobs") {
                            c.push((
                                j["id"].as_str().expect("id").to_string(),
                                j["token"].as_u64().expect("token"),
                            ));
                        }
                    }
                    503 => tokio::time::sleep(Duration::from_millis(100)).await,
                    _ => panic!("claim -> {s}: {v}"),
                }
            }
        }
    });
    futures::future::join_all(workers).await;
    let claimed = claimed.into_inner().unwrap();
    let distinct: BTreeSet<&String> = claimed.iter().map(|(id, _)| id).collect();
    assert_eq!(distinct.len(), claimed.len(), "a job was claimed twice");
    assert_eq!(
        distinct.into_iter().cloned().collect::<BTreeSet<String>>(),
        ids,
        "claims did not take exactly the submitted jobs"
    );

    let completes = claimed
        .iter()
        .enumerate()
        .map(|(i, (id, token))| async move {
            let body = json!({"token": token, "result": {"i": i}});
            let (s, v) =
                t.c.json_req(
                    i % 3,
                    "POST",
                    &format!("/v1/jobs/{id}/complete"),
                    Some(body),
                )
                .await;
            assert_eq!(s, 200, "complete {id} -> {v}");
            assert_eq!(
                v["id"],
                json!(id),
                "a completion answered for another job: {v}"
            );
            assert_eq!(v["state"], "succeeded");
            assert_eq!(v["result"]["i"], json!(i), "{v}");
        });
    futures::future::join_all(completes).await;
    let requests = counter(t, "orrery_group_commit_requests_total").await - requests0;
    let entries = counter(t, "orrery_group_commit_entries_total").await - entries0;
    // 150 submits, 140 completions and the claims all went through lanes,
    // and concurrent ones shared entries.
    assert!(requests >= 290.0, "{requests} writes through group commit");
    assert!(
        entries < requests * 0.9,
        "{requests} concurrent writes became {entries} log entries: nothing was merged"
    );
}

async fn priority_and_delay(t: &Jc) {
    t.create_queue(json!({"name": "prio", "partitions": 1}))
        .await;
    let sub = |p: i64, extra: Value| {
        let mut b = json!({"queue": "prio", "kind": "ext", "priority": p});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                b[k] = v;
            }
        }
        b
    };
    let low = t.submit(0, sub(0, json!({}))).await;
    let high = t.submit(1, sub(5, json!({}))).await;
    let delayed = t.submit(2, sub(9, json!({"delay_ms": 3000}))).await;
    let mid = t.submit(0, sub(2, json!({}))).await;
    let delayed_j = t.job(0, delayed["id"].as_str().unwrap()).await;
    assert!(
        delayed_j["waiting"]
            .as_str()
            .unwrap_or_default()
            .contains("run_at"),
        "{delayed_j}"
    );
    let mut order = Vec::new();
    for _ in 0..3 {
        let j = t.claim(1, "prio", 0.0).await.expect("a job to claim");
        order.push(j["id"].clone());
    }
    assert_eq!(
        order,
        vec![high["id"].clone(), mid["id"].clone(), low["id"].clone()]
    );
    let j = t
        .claim(0, "prio", 20.0)
        .await
        .expect("delayed job after its run_at");
    assert_eq!(j["id"], delayed["id"]);
    let runs = t.runs(1, j["id"].as_str().unwrap()).await;
    assert!(
        runs[0]["started_ms"].as_u64().unwrap() >= j["run_at_ms"].as_u64().unwrap(),
        "claimed before run_at: {j}"
    );
}

async fn stale_token_and_expiry(t: &Jc) {
    let job = t.submit(0, json!({"queue": "ext", "kind": "st"})).await;
    let id = job["id"].as_str().unwrap().to_string();
    let first = t.claim_lease(1, "ext", 5.0, None).await.expect("claim");
    assert_eq!(first["id"], job["id"]);
    assert_eq!(first["token"], 1);
    // Lease 2 s, then backoff 300 ms: the job comes back and is re-claimed.
    let second = t
        .claim_lease(2, "ext", 20.0, None)
        .await
        .expect("re-claim after expiry");
    assert_eq!(second["id"], job["id"]);
    assert_eq!(second["token"], 2);
    let (s, v) =
        t.c.json_req(
            0,
            "POST",
            &format!("/v1/jobs/{id}/complete"),
            Some(json!({"token": 1, "result": {"x": 1}})),
        )
        .await;
    assert_error(s, &v, 409, "token 1");
    let (s, v) =
        t.c.json_req(
            0,
            "POST",
            &format!("/v1/jobs/{id}/heartbeat"),
            Some(json!({"token": 1})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    let done =
        t.c.json_ok(
            1,
            "POST",
            &format!("/v1/jobs/{id}/complete"),
            Some(json!({"token": 2, "result": {"x": 2}})),
            200,
        )
        .await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["result"], json!({"x": 2}));
    let (s, _) =
        t.c.json_req(
            2,
            "POST",
            &format!("/v1/jobs/{id}/complete"),
            Some(json!({"token": 2, "result": {"x": 3}})),
        )
        .await;
    assert_eq!(s, 409, "a second completion must be rejected");
    let runs = t.runs(2, &id).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["outcome"], "expired");
    assert_eq!(runs[1]["outcome"], "succeeded");
    assert_eq!(t.job(0, &id).await["result"], json!({"x": 2}));
}

async fn retries_then_dead(t: &Jc) {
    let job = t.submit(0, json!({"queue": "ext", "kind": "flaky"})).await;
    let id = job["id"].as_str().unwrap().to_string();
    let mut failed_at = Vec::new();
    for attempt in 1..=3u64 {
        let j = t
            .claim(attempt as usize % 3, "ext", 20.0)
            .await
            .expect("claim");
        assert_eq!(j["id"], job["id"]);
        assert_eq!(j["token"], attempt);
        let after =
            t.c.json_ok(
                0,
                "POST",
                &format!("/v1/jobs/{id}/fail"),
                Some(json!({"token": attempt, "error": format!("boom {attempt}")})),
                200,
            )
            .await;
        failed_at.push(after["updated_ms"].as_u64().unwrap());
        if attempt < 3 {
            assert_eq!(after["state"], "queued");
            let delay =
                after["run_at_ms"].as_u64().unwrap() - after["updated_ms"].as_u64().unwrap();
            assert_eq!(
                delay,
                300 * (1 << (attempt - 1)),
                "backoff after attempt {attempt}"
            );
        } else {
            assert_eq!(after["state"], "dead");
            assert_eq!(after["last_error"], "boom 3");
        }
    }
    let runs = t.runs(1, &id).await;
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|r| r["outcome"] == "failed"));
    // The claims honoured the backoff.
    for (i, r) in runs.iter().enumerate().skip(1) {
        let started = r["started_ms"].as_u64().unwrap();
        assert!(
            started >= failed_at[i - 1] + 300 * (1 << (i - 1)),
            "attempt {} started early",
            i + 1
        );
    }
}

async fn result_cap_heartbeat_and_cancel(t: &Jc) {
    let job = t.submit(0, json!({"queue": "ext", "kind": "big"})).await;
    let id = job["id"].as_str().unwrap().to_string();
    let j = t.claim(0, "ext", 5.0).await.expect("claim");
    assert_eq!(j["id"], job["id"]);
    let tok = j["token"].as_u64().unwrap();
    let big = "x".repeat(1_100_000);
    let (s, v) =
        t.c.json_req(
            1,
            "POST",
            &format!("/v1/jobs/{id}/complete"),
            Some(json!({"token": tok, "result": big})),
        )
        .await;
    assert_error(s, &v, 413, "limit");
    let hb =
        t.c.json_ok(
            2,
            "POST",
            &format!("/v1/jobs/{id}/heartbeat"),
            Some(json!({"token": tok})),
            200,
        )
        .await;
    assert_eq!(hb["cancelled"], false);
    assert_eq!(t.job(0, &id).await["state"], "running");
    // Cancel while running: the worker learns it from its heartbeat.
    let c =
        t.c.json_ok(1, "POST", &format!("/v1/jobs/{id}/cancel"), None, 200)
            .await;
    assert_eq!(c["state"], "running");
    assert_eq!(c["cancel_requested"], true);
    let hb =
        t.c.json_ok(
            2,
            "POST",
            &format!("/v1/jobs/{id}/heartbeat"),
            Some(json!({"token": tok})),
            200,
        )
        .await;
    assert_eq!(hb["cancelled"], true);
    let f =
        t.c.json_ok(
            0,
            "POST",
            &format!("/v1/jobs/{id}/fail"),
            Some(json!({"token": tok, "error": "cancelled"})),
            200,
        )
        .await;
    assert_eq!(f["state"], "cancelled");
    // Cancel of a queued job is immediate; of a finished one a 409.
    let q = t
        .submit(
            1,
            json!({"queue": "ext", "kind": "never", "delay_ms": 600000}),
        )
        .await;
    let qid = q["id"].as_str().unwrap();
    let c =
        t.c.json_ok(2, "POST", &format!("/v1/jobs/{qid}/cancel"), None, 200)
            .await;
    assert_eq!(c["state"], "cancelled");
    let (s, v) =
        t.c.json_req(
            0,
            "POST",
            &format!("/v1/jobs/{id}/complete"),
            Some(json!({"token": tok})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
}

async fn events(t: &Jc) {
    let all = t.c.json_ok(0, "GET", "/v1/events", None, 200).await;
    let evs = all["events"].as_array().unwrap();
    assert!(evs.iter().any(|e| e["type"] == "enqueued"));
    assert!(evs.iter().any(|e| e["type"] == "claimed"));
    assert!(evs.iter().any(|e| e["type"] == "dead"));
    for e in evs {
        for f in ["seq", "type", "job_id", "attempt", "payload", "ts"] {
            assert!(e.get(f).is_some(), "event without {f}: {e}");
        }
    }
    let cursor = all["cursor"].as_str().unwrap().to_string();
    let again =
        t.c.json_ok(1, "GET", &format!("/v1/events?since={cursor}"), None, 200)
            .await;
    assert_eq!(again["events"].as_array().unwrap().len(), 0, "{again}");
    let j = t
        .submit(
            2,
            json!({"queue": "ext", "kind": "evt", "delay_ms": 600000}),
        )
        .await;
    let newer =
        t.c.json_ok(1, "GET", &format!("/v1/events?since={cursor}"), None, 200)
            .await;
    let newer = newer["events"].as_array().unwrap();
    assert_eq!(newer.len(), 1, "{newer:?}");
    assert_eq!(newer[0]["job_id"], j["id"]);
    // SSE resumes from Last-Event-ID.
    let resp =
        t.c.http
            .get(t.c.nodes[0].url("/v1/events/stream"))
            .header("Last-Event-ID", &cursor)
            .send()
            .await
            .expect("sse");
    assert_eq!(resp.status(), 200);
    let mut body = String::new();
    let mut stream = resp;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !body.contains("\n\n") && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), stream.chunk()).await {
            Ok(Ok(Some(b))) => body.push_str(&String::from_utf8_lossy(&b)),
            _ => break,
        }
    }
    assert!(
        body.contains(j["id"].as_str().unwrap()),
        "SSE did not resume with the new event: {body}"
    );
    assert!(body.contains("id: "), "SSE events carry ids: {body}");
    t.c.json_ok(
        0,
        "POST",
        &format!("/v1/jobs/{}/cancel", j["id"].as_str().unwrap()),
        None,
        200,
    )
    .await;
}

async fn no_gpus(t: &Jc) {
    let g = t.c.json_ok(1, "GET", "/v1/gpus", None, 200).await;
    if !g["gpus"].as_array().unwrap().is_empty() {
        eprintln!("this machine has GPUs; the no-GPU checks are not applicable: {g}");
        return;
    }
    t.create_queue(json!({"name": "gpu"})).await;
    let j = t
        .submit(
            0,
            json!({"queue": "gpu", "kind": "command", "params": {"argv": ["true"]},
                          "resources": {"gpus": 1}}),
        )
        .await;
    let id = j["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let j = t.job(2, id).await;
    assert_eq!(j["state"], "queued", "{j}");
    assert_eq!(j["waiting"], "waiting: no node has 1 free GPU", "{j}");
    t.c.json_ok(0, "POST", &format!("/v1/jobs/{id}/cancel"), None, 200)
        .await;
}

/// An external worker's claim may offer GPUs its shared jobs hold
/// (`shared_gpus`): only `shared_gpu` jobs take those; an exclusive GPU job
/// needs a free GPU. (Kind `render` runs on no node, so only this worker
/// claims these jobs.)
async fn shared_gpu_offers(t: &Jc) {
    t.create_queue(json!({"name": "gpu-ext"})).await;
    let submit = |prio: i32, shared: bool| {
        t.submit(
            1,
            json!({"queue": "gpu-ext", "kind": "render", "params": {}, "priority": prio,
                   "resources": {"gpus": 1, "shared_gpu": shared}}),
        )
    };
    let excl = submit(9, false).await["id"].clone();
    let s1 = submit(5, true).await["id"].clone();
    let s2 = submit(5, true).await["id"].clone();
    let claim = |extra: Value| async move {
        let mut body = json!({"worker_id": "gpu-w", "kinds": ["render"], "max": 10,
                              "wait_s": 1, "lease_s": 60});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        t.c.json_req(2, "POST", "/v1/queues/gpu-ext/claim", Some(body))
            .await
    };
    let (s, v) = claim(json!({"shared_gpus": "GPU-x"})).await;
    assert_error(s, &v, 400, "shared_gpus");
    let (s, v) = claim(json!({"shared_gpus": [{"uuid": "GPU-x", "free_memory_mb": 8000}]})).await;
    assert_eq!(s, 200, "{v}");
    let ids: Vec<&Value> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| &j["id"])
        .collect();
    assert_eq!(ids, vec![&s1, &s2], "only the shared jobs: {v}");
    let (s, v) = claim(json!({"shared_gpus": [{"uuid": "GPU-x"}]})).await;
    assert_eq!(s, 204, "the exclusive job needs a free GPU: {v}");
    let (s, v) = claim(json!({"free_gpus": [{"uuid": "GPU-y"}]})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["jobs"][0]["id"], excl, "{v}");
    // The same offers over gRPC, with cores.
    let big = t
        .submit(
            1,
            json!({"queue": "gpu-ext", "kind": "render", "params": {}, "priority": 9,
                   "resources": {"cpus": 4}}),
        )
        .await["id"]
        .clone();
    let s3 = submit(5, true).await["id"].clone();
    let excl2 = submit(1, false).await["id"].clone();
    let client = t.c.grpc(0).await.unwrap();
    let offer = |shared: bool, free: bool, cpus: u32| orrery_client::ClaimOffer {
        kinds: vec!["render".into()],
        lease_s: Some(60),
        free_gpus: if free {
            vec![("GPU-y".into(), None)]
        } else {
            vec![]
        },
        shared_gpus: if shared {
            vec![("GPU-x".into(), Some(8000))]
        } else {
            vec![]
        },
        free_cpus: Some(cpus),
    };
    let ids = |jobs: Vec<orrery_client::pb::Job>| -> Vec<Value> {
        jobs.into_iter().map(|j| json!(j.id)).collect()
    };
    let got = client
        .claim_jobs_offering("gpu-ext", "gpu-g", 10, 1.0, &offer(true, false, 2))
        .await
        .unwrap();
    assert_eq!(ids(got), vec![s3.clone()], "2 cores and a shared GPU");
    let got = client
        .claim_jobs_offering("gpu-ext", "gpu-g", 10, 1.0, &offer(false, true, 4))
        .await
        .unwrap();
    assert_eq!(ids(got), vec![big.clone(), excl2.clone()]);
    for id in [&excl, &s1, &s2, &big, &s3, &excl2] {
        let id = id.as_str().unwrap();
        t.c.json_ok(0, "POST", &format!("/v1/jobs/{id}/cancel"), None, 200)
            .await;
    }
}

/// A plain sequential walk: (files, dirs, bytes, by_extension).
fn walk(p: &Path, acc: &mut (u64, u64, u64, BTreeMap<String, (u64, u64)>)) {
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let md = std::fs::symlink_metadata(e.path()).unwrap();
        if md.is_dir() {
            acc.1 += 1;
            walk(&e.path(), acc);
        } else if md.is_file() {
            acc.0 += 1;
            acc.2 += md.len();
            let ext = e
                .path()
                .extension()
                .map(|x| x.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            let x = acc.3.entry(ext).or_default();
            x.0 += 1;
            x.1 += md.len();
        }
    }
}

async fn builtin_kinds(t: &Jc) {
    t.create_queue(json!({"name": "files"})).await;
    // A generated tree.
    let tree = t.root.join("tree");
    let mut n = 0u64;
    for d in 0..4 {
        for s in 0..3 {
            let dir = tree.join(format!("d{d}/s{s}"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..5 {
                n += 1;
                let ext = ["txt", "log", "BIN", "dat", ""][f % 5];
                let name = if ext.is_empty() {
                    format!("f{f}")
                } else {
                    format!("f{f}.{ext}")
                };
                std::fs::write(dir.join(name), vec![b'a'; (n * 37 % 1000) as usize]).unwrap();
            }
        }
    }
    let mut acc = (0, 0, 0, BTreeMap::new());
    walk(&tree, &mut acc);
    let j = t
        .submit(
            1,
            json!({"queue": "files", "kind": "fs.summarize", "params": {"path": "tree"}}),
        )
        .await;
    let j = t
        .wait_state(
            j["id"].as_str().unwrap(),
            &["succeeded", "failed", "dead"],
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(j["state"], "succeeded", "{j}");
    let r = &j["result"];
    assert_eq!(r["files"], acc.0);
    assert_eq!(r["dirs"], acc.1);
    assert_eq!(r["bytes"], acc.2);
    let by: BTreeMap<String, (u64, u64)> = r["by_extension"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v["files"].as_u64().unwrap(), v["bytes"].as_u64().unwrap()),
            )
        })
        .collect();
    assert_eq!(by, acc.3);
    assert_eq!(r["largest"].as_array().unwrap().len(), 10);
    let runs = t.runs(0, j["id"].as_str().unwrap()).await;
    assert_eq!(runs.last().unwrap()["exit_code"], 0, "{runs:?}");

    // Traversal attempts fail with a clear error and touch nothing outside.
    for path in ["../", "/etc", "tree/../../"] {
        let j = t
            .submit(
                2,
                json!({"queue": "files", "kind": "fs.summarize", "params": {"path": path}}),
            )
            .await;
        let id = j["id"].as_str().unwrap();
        let j = t
            .wait_state(
                id,
                &["succeeded", "failed", "dead"],
                Duration::from_secs(90),
            )
            .await;
        assert_ne!(j["state"], "succeeded", "traversal {path} was allowed: {j}");
        let err = j["last_error"].as_str().unwrap_or_default();
        assert!(
            err.contains("params.path") || err.contains("outside"),
            "unclear error for {path}: {err}"
        );
    }
    let outside = std::fs::canonicalize(&t.root)
        .unwrap()
        .parent()
        .unwrap()
        .join("escape");
    let _ = std::os::unix::fs::symlink(&outside, t.root.join("escape-link"));
    std::fs::create_dir_all(&outside).unwrap();
    let j = t
        .submit(
            2,
            json!({"queue": "files", "kind": "fs.summarize", "params": {"path": "escape-link"}}),
        )
        .await;
    let j = t
        .wait_state(
            j["id"].as_str().unwrap(),
            &["succeeded", "failed", "dead"],
            Duration::from_secs(90),
        )
        .await;
    assert_ne!(
        j["state"], "succeeded",
        "a symlink out of the root was followed: {j}"
    );

    // CSV transform.
    let csv_dir = t.root.join("csv");
    std::fs::create_dir_all(&csv_dir).unwrap();
    std::fs::write(
        csv_dir.join("a.csv"),
        "name,age,city\nann,31,oslo\nbob,19,rome\ncid,45,oslo\n",
    )
    .unwrap();
    std::fs::write(csv_dir.join("b.csv"), "name,age,city\ndan,50,oslo\n").unwrap();
    let j = t
        .submit(
            0,
            json!({"queue": "files", "kind": "fs.csv_transform", "params": {
            "input_glob": "csv/*.csv", "output_dir": "csv-out",
            "select": ["name", "city"], "rename": {"city": "town"},
            "filter": {"column": "city", "op": "eq", "value": "oslo"}}}),
        )
        .await;
    let j = t
        .wait_state(
            j["id"].as_str().unwrap(),
            &["succeeded", "failed", "dead"],
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(j["state"], "succeeded", "{j}");
    let files = j["result"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{j}");
    let a = files
        .iter()
        .find(|f| f["input"] == "csv/a.csv")
        .expect("a.csv in result");
    assert_eq!(
        (a["rows_in"].as_u64(), a["rows_out"].as_u64()),
        (Some(3), Some(2))
    );
    let out = std::fs::read_to_string(t.root.join("csv-out/a.csv")).unwrap();
    assert_eq!(out.trim(), "name,town\nann,oslo\ncid,oslo");

    // Thumbnails.
    let img_dir = t.root.join("img");
    std::fs::create_dir_all(&img_dir).unwrap();
    image::RgbImage::from_fn(400, 200, |x, y| image::Rgb([x as u8, y as u8, 7]))
        .save(img_dir.join("wide.png"))
        .unwrap();
    let j = t
        .submit(1, json!({"queue": "files", "kind": "image.thumbnail",
                          "params": {"input_glob": "img/*.png", "output_dir": "thumbs", "max_side": 100}}))
        .await;
    let j = t
        .wait_state(
            j["id"].as_str().unwrap(),
            &["succeeded", "failed", "dead"],
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(j["state"], "succeeded", "{j}");
    let f = &j["result"]["files"][0];
    assert_eq!(
        (f["width"].as_u64(), f["height"].as_u64()),
        (Some(400), Some(200)),
        "{j}"
    );
    assert_eq!(
        (f["thumb_width"].as_u64(), f["thumb_height"].as_u64()),
        (Some(100), Some(50)),
        "{j}"
    );
    let out = t.root.join(f["output"].as_str().unwrap());
    let dims = image::image_dimensions(&out).unwrap();
    assert_eq!(dims, (100, 50));
}

async fn command_cancel_kills_the_process(t: &Jc) {
    t.create_queue(json!({"name": "cmd"})).await;
    // The command runs as the node's command user (nobody, as the tests
    // run as root): it writes its pid where anyone may.
    let pid_dir = t.root.join("cmd-pid");
    std::fs::create_dir_all(&pid_dir).unwrap();
    let anyone = std::os::unix::fs::PermissionsExt::from_mode(0o777);
    std::fs::set_permissions(&pid_dir, anyone).unwrap();
    let pidfile = pid_dir.join("cmd.pid");
    let script = format!(
        "echo started; echo $$ > {}; exec sleep 120",
        pidfile.display()
    );
    let j = t
        .submit(
            0,
            json!({"queue": "cmd", "kind": "command", "params": {"argv": ["sh", "-c", script]}}),
        )
        .await;
    let id = j["id"].as_str().unwrap().to_string();
    t.wait_state(&id, &["running"], Duration::from_secs(60))
        .await;
    wait_until(Duration::from_secs(30), || async {
        std::fs::read_to_string(&pidfile)
            .map(|s| !s.trim().is_empty())
            .unwrap_or(false)
    })
    .await
    .expect("the command started");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    // Logs are readable from every node (proxied to the node that runs it).
    for i in 0..3 {
        let r =
            t.c.http
                .get(t.c.nodes[i].url(&format!("/v1/jobs/{id}/logs")))
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 200, "logs via node {}", i + 1);
        assert!(r.text().await.unwrap().contains("started"));
    }
    // Follow streams what is there, and ends when the run ends.
    let follow =
        t.c.http
            .get(t.c.nodes[1].url(&format!("/v1/jobs/{id}/logs?follow=true")))
            .send()
            .await
            .unwrap();
    assert_eq!(follow.status(), 200);
    let cancelled_at = Instant::now();
    t.c.json_ok(2, "POST", &format!("/v1/jobs/{id}/cancel"), None, 200)
        .await;
    let j = t
        .wait_state(
            &id,
            &["cancelled", "succeeded", "failed", "dead"],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(j["state"], "cancelled", "{j}");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(15),
        "cancel took {:?}",
        cancelled_at.elapsed()
    );
    wait_until(Duration::from_secs(10), || async {
        // A zombie still has a /proc entry until reaped; look at its state.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(true)
    })
    .await
    .expect("the cancelled command's process was killed");
    let text = tokio::time::timeout(Duration::from_secs(20), follow.text())
        .await
        .expect("follow ended")
        .unwrap();
    assert!(text.contains("started"), "{text}");
    assert!(text.contains("event: end"), "{text}");
}

async fn workers_on_all_nodes(t: &Jc) {
    t.create_queue(json!({"name": "spread"})).await;
    let mut ids = Vec::new();
    for i in 0..24 {
        let j = t
            .submit(0, json!({"queue": "spread", "kind": "command", "params": {"argv": ["sleep", "0.5"]}, "priority": i % 3}))
            .await;
        ids.push(j["id"].as_str().unwrap().to_string());
    }
    let mut nodes = BTreeSet::new();
    for id in &ids {
        let j = t
            .wait_state(
                id,
                &["succeeded", "failed", "dead"],
                Duration::from_secs(120),
            )
            .await;
        assert_eq!(j["state"], "succeeded", "{j}");
        let runs = t.runs(0, id).await;
        assert_eq!(
            runs.iter().filter(|r| r["outcome"] == "succeeded").count(),
            1
        );
        nodes.insert(runs.last().unwrap()["node"].as_u64().unwrap());
    }
    assert_eq!(nodes.len(), 3, "jobs ran only on nodes {nodes:?}");
    let listed =
        t.c.json_ok(
            2,
            "GET",
            "/v1/jobs?queue=spread&state=succeeded&limit=10",
            None,
            200,
        )
        .await;
    let page1: Vec<String> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(page1.len(), 10);
    let cursor = listed["next_cursor"].as_str().unwrap();
    let listed =
        t.c.json_ok(
            1,
            "GET",
            &format!("/v1/jobs?queue=spread&limit=100&cursor={cursor}"),
            None,
            200,
        )
        .await;
    let page2: Vec<String> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    let mut all: Vec<String> = page1.into_iter().chain(page2).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(all, sorted, "listing is id (time) ordered and complete");
    all.dedup();
    assert_eq!(all.len(), 24);
}

async fn queue_info_and_delete(t: &Jc) {
    let q = t.c.json_ok(1, "GET", "/v1/queues/spread", None, 200).await;
    assert_eq!(q["counts"]["succeeded"], 24, "{q}");
    assert_eq!(q["counts"]["queued"], 0);
    assert!(q["oldest_queued_age_ms"].is_null());
    let list = t.c.json_ok(2, "GET", "/v1/queues", None, 200).await;
    assert!(list["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"] == "spread"));
    t.create_queue(json!({"name": "busy"})).await;
    let j = t.submit(0, json!({"queue": "busy", "kind": "ext"})).await;
    let q = t.c.json_ok(1, "GET", "/v1/queues/busy", None, 200).await;
    assert_eq!(q["counts"]["queued"], 1);
    assert!(q["oldest_queued_age_ms"].as_u64().is_some());
    let (s, v) = t.c.json_req(0, "DELETE", "/v1/queues/busy", None).await;
    assert_error(s, &v, 409, "queued");
    t.c.json_ok(
        0,
        "POST",
        &format!("/v1/jobs/{}/cancel", j["id"].as_str().unwrap()),
        None,
        200,
    )
    .await;
    t.c.json_ok(2, "DELETE", "/v1/queues/busy", None, 200).await;
    let (s, _) = t.c.json_req(1, "GET", "/v1/queues/busy", None).await;
    assert_eq!(s, 404);
}

/// orreryctl (over gRPC): queues, submit, get, list, logs, gpus.
async fn cli(t: &Jc) {
    let c = &t.c;
    c.ctl_ok(1, &["queues", "create", "cliq", "--lease-s", "20"]);
    let out = c.ctl(1, &["queues", "create", "cliq"]);
    assert!(!out.status.success(), "duplicate queue accepted");
    let qs = c.ctl_json(0, &["queues", "list"]);
    assert!(qs
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"] == "cliq" && q["lease_s"] == 20));
    let j = c.ctl_json(
        2,
        &[
            "jobs",
            "submit",
            "--queue",
            "cliq",
            "--kind",
            "command",
            "--params",
            r#"{"argv": ["sh", "-c", "echo hello-cli"]}"#,
        ],
    );
    let id = j["id"].as_str().unwrap().to_string();
    t.wait_state(&id, &["succeeded"], Duration::from_secs(60))
        .await;
    let got = c.ctl_json(0, &["jobs", "get", &id]);
    assert_eq!(got["state"], "succeeded");
    let logs = c.ctl_ok(1, &["jobs", "logs", &id]);
    assert!(logs.contains("hello-cli"), "{logs}");
    let logs = c.ctl_ok(2, &["jobs", "logs", &id, "--follow"]);
    assert!(logs.contains("hello-cli"), "{logs}");
    let list = c.ctl_json(0, &["jobs", "list", "--queue", "cliq"]);
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
    let show = c.ctl_json(0, &["queues", "show", "cliq"]);
    assert_eq!(show["counts"]["succeeded"], 1);
    let bad = c.ctl(
        0,
        &[
            "jobs",
            "submit",
            "--queue",
            "cliq",
            "--kind",
            "fs.summarize",
            "--params",
            "{}",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("params.path"));
    let g = c.ctl_json(0, &["gpus"]);
    assert!(g["gpus"].is_array());
    let text = c.ctl_ok(0, &["gpus"]);
    assert!(!text.is_empty());
}

async fn kill9_mid_job(mut t: Jc) {
    // Enough attempts that leases lost to the re-election after the kill
    // (heartbeats cannot commit meanwhile) do not make jobs dead.
    t.create_queue(json!({"name": "crash", "lease_s": 3, "max_attempts": 10}))
        .await;
    let mut ids = Vec::new();
    for _ in 0..12 {
        let j = t
            .submit(
                0,
                json!({"queue": "crash", "kind": "command", "params": {"argv": ["sleep", "2"]}}),
            )
            .await;
        ids.push(j["id"].as_str().unwrap().to_string());
    }
    // Wait until node 3 runs one of them, then kill it.
    let start = Instant::now();
    let victim_jobs: Vec<String> = loop {
        let mut on3 = Vec::new();
        for id in &ids {
            let (s, j) =
                t.c.json_req(0, "GET", &format!("/v1/jobs/{id}"), None)
                    .await;
            if s == 200 && j["state"] == "running" && j["lease"]["node"] == 3 {
                on3.push(id.clone());
            }
        }
        if !on3.is_empty() {
            break on3;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "node 3 never ran a job\n{}",
            t.c.log_tails(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    t.c.kill9(2);
    let mut moved = 0;
    for id in &ids {
        let start = Instant::now();
        let j = loop {
            let (s, j) =
                t.c.json_req(
                    start.elapsed().as_secs() as usize % 2,
                    "GET",
                    &format!("/v1/jobs/{id}"),
                    None,
                )
                .await;
            if s == 200
                && ["succeeded", "failed", "dead", "cancelled"]
                    .iter()
                    .any(|x| j["state"] == *x)
            {
                break j;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "job {id} never finished: {j}\n{}",
                t.c.log_tails(30)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(j["state"], "succeeded", "{j}");
        let runs = t.runs(0, id).await;
        let ok: Vec<&Value> = runs
            .iter()
            .filter(|r| r["outcome"] == "succeeded")
            .collect();
        assert_eq!(
            ok.len(),
            1,
            "job {id} completed {} times: {runs:?}",
            ok.len()
        );
        // A job can finish on node 3 just before the kill; otherwise its
        // attempt there expired and another node ran it.
        if victim_jobs.contains(id) && ok[0]["node"] != 3 {
            assert!(
                runs.iter()
                    .any(|r| r["node"] == 3 && r["outcome"] == "expired"),
                "{runs:?}"
            );
            moved += 1;
        }
    }
    assert!(
        moved > 0,
        "no job of the killed node was finished elsewhere"
    );
}
