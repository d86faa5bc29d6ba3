//! Backup and restore end to end: a secure 3-node cluster with data in
//! every domain is backed up under a write load (`orreryctl backup create`
//! and `POST /v1/backup`), then restored into a new 3-node cluster and a
//! new 1-node cluster on other ports; each must hold exactly the
//! backed-up content. A damaged file and a used data directory are refused.

mod common;

use common::load::Load;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SHARDS: u32 = 4;
/// No execution engine: queued jobs stay as the backup saw them.
const FLAGS: &[&str] = &["--workers", "0"];
const POINTS: usize = 40;

/// Everything the test compares, read through the API of node `i`.
#[derive(Debug, PartialEq)]
struct Content {
    /// Every key but the load's.
    kv: BTreeMap<String, Value>,
    /// The load's keys (`load/...`).
    load: BTreeMap<String, Value>,
    /// Queues, jobs and runs; collections and points; policies, versions
    /// and runs; data sources; token records.
    rest: Value,
}

async fn kv_items(c: &Cluster, i: usize) -> BTreeMap<String, Value> {
    let v = c
        .json_ok(i, "GET", "/v1/kv?prefix=&limit=10000", None, 200)
        .await;
    let items = v["items"].as_array().expect("items");
    assert!(items.len() < 10_000, "more keys than one page");
    items
        .iter()
        .map(|it| {
            let k = it["key"].as_str().expect("key").to_string();
            let val = it.get("value").or(it.get("value_base64")).cloned();
            (k, val.unwrap_or(Value::Null))
        })
        .collect()
}

async fn content(c: &Cluster, i: usize) -> Content {
    let (load, kv): (BTreeMap<_, _>, BTreeMap<_, _>) = kv_items(c, i)
        .await
        .into_iter()
        .partition(|(k, _)| k.starts_with("load/"));
    let get = |p: String| async move { c.json_ok(i, "GET", &p, None, 200).await };
    let jobs = get("/v1/jobs?queue=bq&limit=1000".into()).await;
    let mut runs = BTreeMap::new();
    for j in jobs["jobs"].as_array().expect("jobs") {
        let id = j["id"].as_str().expect("job id");
        runs.insert(id.to_string(), get(format!("/v1/jobs/{id}/runs")).await);
    }
    let mut points = Vec::new();
    for p in 0..POINTS {
        points.push(get(format!("/v1/collections/docs/points/{p}")).await);
    }
    let policies = get("/v1/policies".into()).await;
    let mut versions = BTreeMap::new();
    for p in policies["policies"].as_array().expect("policies") {
        let id = p["id"].as_str().expect("policy id");
        versions.insert(
            id.to_string(),
            get(format!("/v1/policies/{id}/versions")).await,
        );
    }
    let rest = json!({
        "queues": get("/v1/queues".into()).await,
        "jobs": jobs,
        "runs": runs,
        "collections": get("/v1/collections".into()).await,
        "points": points,
        "policies": policies,
        "versions": versions,
        "policy_runs": get("/v1/runs?limit=1000".into()).await,
        "data_sources": get("/v1/data-sources".into()).await,
        "tokens": get("/v1/auth/tokens".into()).await,
    });
    Content { kv, load, rest }
}

/// Data in every domain, made before the backup and not changed after.
async fn populate(c: &Cluster) -> String {
    for k in 0..50 {
        c.put_ok(k % 3, &format!("data/{k:03}"), &format!("v{k}"))
            .await;
    }
    c.put_ok(0, "data/binary", "\u{00e9}t\u{00e9}").await;
    c.json_ok(
        0,
        "POST",
        "/v1/queues",
        Some(json!({"name": "bq", "lease_s": 300})),
        201,
    )
    .await;
    for j in 0..12 {
        let body = json!({"queue": "bq", "kind": "work", "params": {"n": j}, "priority": j % 3});
        c.json_ok(j % 3, "POST", "/v1/jobs", Some(body), 201).await;
    }
    // One attempt finished (a run with an outcome), one leased.
    for (n, finish) in [(0, true), (1, false)] {
        let claim = json!({"worker_id": format!("w{n}"), "wait_s": 5, "lease_s": 300});
        let v = c
            .json_ok(1, "POST", "/v1/queues/bq/claim", Some(claim), 200)
            .await;
        let id = v["id"].as_str().expect("claimed job id").to_string();
        if finish {
            let done = json!({"token": v["token"], "result": {"ok": true}});
            c.json_ok(
                2,
                "POST",
                &format!("/v1/jobs/{id}/complete"),
                Some(done),
                200,
            )
            .await;
        }
    }
    let coll = json!({"name": "docs", "dim": 4, "metric": "cosine"});
    c.json_ok(0, "POST", "/v1/collections", Some(coll), 201)
        .await;
    let points: Vec<Value> = (0..POINTS)
        .map(|p| {
            let f = p as f32;
            json!({"id": p, "vector": [1.0, f, f * 0.5, 2.0 - f], "payload": {"n": p}})
        })
        .collect();
    c.json_ok(
        1,
        "PUT",
        "/v1/collections/docs/points",
        Some(json!({"points": points})),
        200,
    )
    .await;
    let p = c
        .json_ok(
            2,
            "POST",
            "/v1/policies",
            Some(json!({"name": "limit"})),
            201,
        )
        .await;
    let pid = p["id"].as_str().expect("policy id").to_string();
    for tag in ["one", "two"] {
        let graph = json!({
            "nodes": [
                {"id": "in", "type": "input", "config": {"fields": {"x": "number"}}},
                {"id": "out", "type": "output", "config": {"fields": {"big": "input.x > 10", "v": format!("'{tag}'")}}}
            ],
            "edges": [{"from": "in", "to": "out"}]
        });
        c.json_ok(
            0,
            "POST",
            &format!("/v1/policies/{pid}/versions"),
            Some(json!({"graph": graph})),
            201,
        )
        .await;
    }
    for x in [3, 30] {
        c.json_ok(
            1,
            "POST",
            &format!("/v1/policies/{pid}/runs"),
            Some(json!({"input": {"x": x}})),
            200,
        )
        .await;
    }
    let t = c
        .json_ok(
            0,
            "POST",
            "/v1/auth/tokens",
            Some(json!({"name": "writer", "role": "writer"})),
            201,
        )
        .await;
    t["token"].as_str().expect("token").to_string()
}

fn restore(c: &Cluster, file: &Path, i: usize) -> std::process::Output {
    let members: Vec<String> = c
        .nodes
        .iter()
        .map(|n| format!("{}@{}/{}", n.id, n.addr, n.peer_addr))
        .collect();
    let n = &c.nodes[i];
    Command::new(orrery_bin())
        .arg("restore")
        .arg("--from")
        .arg(file)
        .arg("--data-dir")
        .arg(&n.data_dir)
        .args(["--id", &n.id.to_string(), "--members", &members.join(",")])
        .output()
        .expect("run orrery restore")
}

/// A new cluster of `n` nodes on other ports, restored from `file` and
/// started; the source's root token is its root token.
async fn restored(file: &Path, n: usize, token: &str) -> Cluster {
    let mut c = Cluster::start(0, &[]).await;
    for _ in 0..n {
        c.plan_node(FLAGS, None, &[]);
    }
    for i in 0..n {
        let out = restore(&c, file, i);
        assert!(
            out.status.success(),
            "restore of node {}: {}",
            i + 1,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for i in 0..n {
        c.restart(i).await;
    }
    c.set_root_token(token);
    for i in 0..n {
        let url = c.nodes[i].url("/readyz");
        wait_until(Duration::from_secs(60), || async {
            c.http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await
        .unwrap_or_else(|_| panic!("restored node {} not ready:\n{}", i + 1, c.log_tails(30)));
    }
    c
}

/// The restored cluster holds exactly the backup: the data made before
/// it, every load write acknowledged before it began, and no load write
/// the source does not have.
async fn check_restored(
    c: &Cluster,
    before: &Content,
    source_end: &Content,
    acked_before: &[(String, String)],
    writer: &str,
    source_id: &str,
) {
    for i in 0..c.nodes.len() {
        let got = content(c, i).await;
        eprintln!(
            "restored {}-node cluster, node {}: {} load keys ({} acknowledged before the backup, {} in the source at the end)",
            c.nodes.len(),
            i + 1,
            got.load.len(),
            acked_before.len(),
            source_end.load.len()
        );
        assert_eq!(got.kv, before.kv, "keys read through node {}", i + 1);
        assert_eq!(
            got.rest,
            before.rest,
            "jobs, points, policies, tokens through node {}",
            i + 1
        );
        for (k, v) in acked_before {
            assert_eq!(
                got.load.get(k),
                Some(&json!(v)),
                "acknowledged before the backup: {k}"
            );
        }
        for (k, v) in &got.load {
            assert_eq!(
                source_end.load.get(k),
                Some(v),
                "restored {k} the source never had"
            );
        }
    }
    let cl = c.json_ok(0, "GET", "/v1/cluster", None, 200).await;
    assert_ne!(
        cl["cluster_id"].as_str(),
        Some(source_id),
        "a new cluster id"
    );
    assert_eq!(cl["members"].as_array().map(Vec::len), Some(c.nodes.len()));
    // It takes writes: with the root token, and with a token made in the
    // source cluster.
    c.put_ok(0, "after/restore", "yes").await;
    let w = http_client(&c.ca_cert(), Some(writer));
    let r = w
        .put(c.nodes[c.nodes.len() - 1].url("/v1/kv/after/writer"))
        .body("w")
        .send()
        .await
        .expect("put with the writer token");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let (s, body) = c.get(0, "after/writer", "linearizable").await;
    assert_eq!((s, body.as_str()), (200, "w"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_under_load_restores_into_new_clusters() {
    let src = Cluster::formed(3, SHARDS, FLAGS).await;
    let writer = populate(&src).await;
    let source_id = src.json_ok(0, "GET", "/v1/cluster", None, 200).await["cluster_id"]
        .as_str()
        .expect("cluster id")
        .to_string();
    let before = content(&src, 0).await;
    assert_eq!(before.kv.len(), 51);

    let bases: Vec<String> = src.nodes.iter().map(|n| n.url("")).collect();
    let load = Load::start(src.http.clone(), bases, 3);
    load.wait_for_more(100).await;
    let acked_before = load.acked_so_far();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cluster.backup");
    let took = std::time::Instant::now();
    let out = src.ctl_ok(
        1,
        &["backup", "create", "--out", file.to_str().expect("path")],
    );
    eprintln!(
        "backup: {} bytes in {:?}, {} writes acknowledged before it",
        std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0),
        took.elapsed(),
        acked_before.len()
    );
    assert!(out.contains("checksums ok"), "{out}");
    assert!(!dir.path().join("cluster.backup.partial").exists());
    load.wait_for_more(50).await;

    // The REST front gives a file just as good; a reader may not take one.
    let body = src
        .http
        .post(src.nodes[2].url("/v1/backup"))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("POST /v1/backup");
    assert_eq!(body.status(), 200);
    assert_eq!(body.headers()["content-type"], "application/octet-stream");
    let rest_file = dir.path().join("rest.backup");
    std::fs::write(&rest_file, body.bytes().await.expect("backup body")).expect("write");
    let v = src.ctl_json(0, &["backup", "verify", rest_file.to_str().expect("path")]);
    assert_eq!(
        v["groups"].as_array().map(Vec::len),
        Some(SHARDS as usize + 1)
    );
    assert_eq!(v["cluster_id"], source_id.as_str());
    let reader = src
        .json_ok(
            0,
            "POST",
            "/v1/auth/tokens",
            Some(json!({"name": "r", "role": "reader"})),
            201,
        )
        .await;
    let r = http_client(&src.ca_cert(), reader["token"].as_str())
        .post(src.nodes[0].url("/v1/backup"))
        .send()
        .await
        .expect("POST /v1/backup as a reader");
    assert_eq!(r.status(), 403);

    let (acked, failed, _) = load.finish().await;
    assert!(failed.is_empty(), "load failures: {failed:?}");
    assert!(acked.len() > acked_before.len());
    // The reader token was made after the backup: compare without it.
    src.json_ok(
        0,
        "DELETE",
        &format!("/v1/auth/tokens/{}", reader["id"].as_str().expect("id")),
        None,
        200,
    )
    .await;
    let mut source_end = content(&src, 0).await;
    source_end.rest["tokens"] = before.rest["tokens"].clone();
    assert!(source_end.load.len() >= acked.len());
    let token = src.token().to_string();
    drop(src);

    // A damaged file is refused, and nothing is written.
    let bytes = std::fs::read(&file).expect("read backup");
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x10;
    let bad_file = dir.path().join("bad.backup");
    std::fs::write(&bad_file, &bad).expect("write");
    let mut probe = Cluster::start(0, &[]).await;
    probe.plan_node(FLAGS, None, &[]);
    let out = restore(&probe, &bad_file, 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("damaged"), "{err}");
    assert!(
        !probe.nodes[0].data_dir.exists(),
        "restore wrote into the data directory"
    );
    // A directory in use is refused.
    std::fs::create_dir_all(&probe.nodes[0].data_dir).expect("mkdir");
    std::fs::write(probe.nodes[0].data_dir.join("node_id"), "1\n").expect("write");
    let out = restore(&probe, &file, 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not empty"), "{err}");

    let three = restored(&file, 3, &token).await;
    check_restored(
        &three,
        &before,
        &source_end,
        &acked_before,
        &writer,
        &source_id,
    )
    .await;
    drop(three);
    let one = restored(&file, 1, &token).await;
    check_restored(
        &one,
        &before,
        &source_end,
        &acked_before,
        &writer,
        &source_id,
    )
    .await;
}
