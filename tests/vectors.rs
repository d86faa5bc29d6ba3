//! Vector collections end to end: a real 3-node cluster, a generated
//! clustered dataset, recall against exact search, filters, overwrite,
//! delete, restart and rebuild, search through any node, bad input.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

const N: usize = 20_000;
const DIM: usize = 64;

/// xorshift64*: a fixed-seed generator, so the dataset is the same every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn dataset(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut r = Rng(seed);
    let centres: Vec<Vec<f32>> = (0..50)
        .map(|_| (0..DIM).map(|_| r.next()).collect())
        .collect();
    (0..n)
        .map(|i| {
            centres[i % 50]
                .iter()
                .map(|c| c + 0.25 * r.next())
                .collect()
        })
        .collect()
}

async fn call(c: &Cluster, i: usize, method: &str, path: &str, body: Value) -> (u16, Value) {
    let url = c.nodes[i].url(path);
    let req = match method {
        "GET" => c.http.get(url),
        "DELETE" => c.http.delete(url),
        "PUT" => c.http.put(url).json(&body),
        _ => c.http.post(url).json(&body),
    };
    let r = req
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn ok(c: &Cluster, i: usize, method: &str, path: &str, body: Value) -> Value {
    let (s, v) = call(c, i, method, path, body).await;
    assert!(s == 200 || s == 201, "{method} {path}: {s} {v}");
    v
}

fn ids(v: &Value) -> Vec<Value> {
    v["result"]
        .as_array()
        .expect("result")
        .iter()
        .map(|h| h["id"].clone())
        .collect()
}

async fn search(c: &Cluster, i: usize, body: Value, stale: bool) -> Value {
    let path = if stale {
        "/v1/collections/docs/search?consistency=stale"
    } else {
        "/v1/collections/docs/search"
    };
    ok(c, i, "POST", path, body).await
}

/// Waits until every shard's index on node `i` is ready.
async fn wait_indexed(c: &Cluster, i: usize) {
    let r = wait_until(Duration::from_secs(120), || async {
        let (s, v) = call(c, i, "GET", "/v1/collections/docs", Value::Null).await;
        s == 200
            && v["shard_states"]
                .as_array()
                .is_some_and(|a| a.iter().all(|s| s["index"] == "ready"))
    })
    .await;
    assert!(r.is_ok(), "node {} never finished indexing", i + 1);
}

/// Recall@10 of index search through node `i` (stale: its own replicas
/// and indexes) against exact search, at the collection's `ef_search` or
/// at `ef`.
async fn recall(c: &Cluster, i: usize, queries: &[Vec<f32>]) -> f64 {
    recall_at(c, i, queries, None).await
}

async fn recall_at(c: &Cluster, i: usize, queries: &[Vec<f32>], ef: Option<usize>) -> f64 {
    let mut hit = 0;
    for q in queries {
        let mut body = json!({"vector": q, "k": 10, "with_payload": false});
        if let Some(ef) = ef {
            body["ef"] = json!(ef);
        }
        let approx = search(c, i, body, true).await;
        let exact = search(c, i, json!({"vector": q, "k": 10, "exact": true}), true).await;
        let want: HashSet<String> = ids(&exact).iter().map(|v| v.to_string()).collect();
        hit += ids(&approx)
            .iter()
            .filter(|v| want.contains(&v.to_string()))
            .count();
    }
    hit as f64 / (queries.len() * 10) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vector_collections_end_to_end() {
    // Generous Raft timings: the test runs on a loaded 2-core machine.
    let flags = [
        "--heartbeat-ms",
        "300",
        "--election-timeout-ms",
        "2000",
        "--request-timeout-ms",
        "30000",
    ];
    let mut c = Cluster::formed(3, 2, &flags).await;
    c.wait_caught_up(0, Duration::from_secs(60)).await;

    let made = ok(&c, 0, "POST", "/v1/collections", json!({"name": "docs", "dim": DIM, "metric": "l2", "shards": 2, "m": 16, "ef_construction": 200, "ef_search": 128})).await;
    // Two shards: searches scatter and merge.
    assert_eq!(made["shards"], 2);
    assert_eq!(made["replication"], 3);
    let list = ok(&c, 1, "GET", "/v1/collections", Value::Null).await;
    assert_eq!(list["collections"][0]["name"], "docs");

    // Load in large batches through different nodes.
    let data = dataset(N, 42);
    for (b, chunk) in data.chunks(2500).enumerate() {
        let points: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let id = b * 2500 + j;
                json!({"id": id, "vector": v, "payload": {"cat": id % 20, "half": id % 2 == 0, "meta": {"n": id}}})
            })
            .collect();
        let r = ok(
            &c,
            b % 3,
            "PUT",
            "/v1/collections/docs/points",
            json!({"points": points}),
        )
        .await;
        assert_eq!(r["upserted"], 2500);
    }
    c.wait_caught_up(0, Duration::from_secs(120)).await;
    let info = ok(&c, 2, "GET", "/v1/collections/docs", Value::Null).await;
    assert_eq!(info["points"], N);

    // Recall@10 >= 0.95 through every node, on its own replicas.
    let queries = dataset(60, 7);
    for i in 0..3 {
        wait_indexed(&c, i).await;
        let r = recall(&c, i, &queries[i * 20..(i + 1) * 20]).await;
        assert!(r >= 0.95, "recall@10 through node {} is {r}", i + 1);
    }

    // Linearizable search (the default) through any node agrees.
    let a = search(
        &c,
        0,
        json!({"vector": queries[0], "k": 5, "exact": true}),
        false,
    )
    .await;
    let b = search(
        &c,
        2,
        json!({"vector": queries[0], "k": 5, "exact": true}),
        false,
    )
    .await;
    assert_eq!(ids(&a), ids(&b));
    assert!(a["took_ms"].as_f64().is_some());

    // Filtered search: selective filters equal exact filtered search; every
    // result matches; k results when k match.
    for q in &queries[..10] {
        let f = json!({"must": [{"key": "cat", "match": 7}], "must_not": [{"key": "meta.n", "range": {"lt": 100}}]});
        let approx = search(&c, 0, json!({"vector": q, "k": 10, "filter": f}), false).await;
        let exact = search(
            &c,
            0,
            json!({"vector": q, "k": 10, "filter": f, "exact": true}),
            false,
        )
        .await;
        assert_eq!(ids(&approx), ids(&exact));
        assert_eq!(ids(&approx).len(), 10);
        for h in approx["result"].as_array().unwrap() {
            assert_eq!(h["payload"]["cat"], 7);
        }
        let broad = json!({"should": [{"key": "half", "match": true}]});
        let r = search(&c, 1, json!({"vector": q, "k": 10, "filter": broad}), false).await;
        assert_eq!(ids(&r).len(), 10);
        assert!(r["result"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["payload"]["half"] == true));
    }

    // Batch search.
    let batch = ok(
        &c,
        1,
        "POST",
        "/v1/collections/docs/search/batch",
        json!({"searches": [{"vector": queries[0], "k": 3}, {"vector": queries[1], "k": 4}]}),
    )
    .await;
    assert_eq!(batch["results"][0]["result"].as_array().unwrap().len(), 3);
    assert_eq!(batch["results"][1]["result"].as_array().unwrap().len(), 4);

    // Upsert overwrite: point 5 moves onto a query vector and wins it.
    let target = vec![9.0f32; DIM];
    ok(
        &c,
        1,
        "PUT",
        "/v1/collections/docs/points",
        json!({"points": [{"id": 5, "vector": target, "payload": {"cat": 99}}]}),
    )
    .await;
    let p = ok(&c, 2, "GET", "/v1/collections/docs/points/5", Value::Null).await;
    assert_eq!(p["payload"]["cat"], 99);
    let r = search(&c, 0, json!({"vector": target, "k": 1}), false).await;
    assert_eq!(ids(&r), vec![json!(5)]);
    assert_eq!(r["result"][0]["score"], 0.0);

    // Delete by ids and by filter.
    let d = ok(
        &c,
        2,
        "POST",
        "/v1/collections/docs/points/delete",
        json!({"ids": [5, 6]}),
    )
    .await;
    assert_eq!(d["deleted"], 2);
    let (s, _) = call(&c, 0, "GET", "/v1/collections/docs/points/5", Value::Null).await;
    assert_eq!(s, 404);
    let r = search(&c, 0, json!({"vector": target, "k": 1}), false).await;
    assert_ne!(ids(&r), vec![json!(5)]);
    let d = ok(
        &c,
        0,
        "POST",
        "/v1/collections/docs/points/delete",
        json!({"filter": {"must": [{"key": "cat", "match": 19}]}}),
    )
    .await;
    assert_eq!(d["deleted"], N / 20);
    let f = json!({"must": [{"key": "cat", "match": 19}]});
    let r = search(
        &c,
        1,
        json!({"vector": queries[0], "k": 10, "filter": f}),
        false,
    )
    .await;
    assert!(ids(&r).is_empty());
    let info = ok(&c, 0, "GET", "/v1/collections/docs", Value::Null).await;
    assert_eq!(info["points"], N - 2 - N / 20);

    // Bad input: 400/404 naming the field.
    let bad: Vec<(&str, &str, Value, u16, &str)> = vec![
        (
            "POST",
            "/v1/collections/docs/search",
            json!({"vector": [1.0, 2.0], "k": 10}),
            400,
            "dim 64",
        ),
        (
            "POST",
            "/v1/collections/docs/search",
            json!({"vector": queries[0], "k": 0}),
            400,
            "k must be",
        ),
        (
            "POST",
            "/v1/collections/docs/search",
            json!({"vector": queries[0], "k": 1001}),
            400,
            "k must be",
        ),
        (
            "POST",
            "/v1/collections/docs/search",
            json!({"vector": queries[0], "filter": {"must": [{"key": "a"}]}}),
            400,
            "filter.must[0]",
        ),
        (
            "POST",
            "/v1/collections/docs/search",
            json!({"vector": [1, "x"]}),
            400,
            "vector[1]",
        ),
        (
            "POST",
            "/v1/collections/nope/search",
            json!({"vector": queries[0]}),
            404,
            "nope",
        ),
        (
            "PUT",
            "/v1/collections/docs/points",
            json!({"points": [{"id": 1, "vector": [1.0]}]}),
            400,
            "points[0].vector",
        ),
        (
            "PUT",
            "/v1/collections/docs/points",
            json!({"points": [{"id": -1, "vector": queries[0]}]}),
            400,
            "points[0].id",
        ),
        (
            "PUT",
            "/v1/collections/docs/points",
            json!({"points": [{"id": "x", "vector": queries[0]}]}),
            400,
            "points[0].id",
        ),
        (
            "PUT",
            "/v1/collections/nope/points",
            json!({"points": []}),
            404,
            "nope",
        ),
        (
            "POST",
            "/v1/collections/docs/points/delete",
            json!({"filter": {"bad": []}}),
            400,
            "filter.bad",
        ),
        (
            "POST",
            "/v1/collections",
            json!({"name": "x", "dim": 0}),
            400,
            "dim",
        ),
        (
            "POST",
            "/v1/collections",
            json!({"name": "x", "dim": 8, "m": 300}),
            400,
            "m must be",
        ),
        (
            "POST",
            "/v1/collections",
            json!({"name": "x", "dim": 8, "metric": "hamming"}),
            400,
            "metric",
        ),
        (
            "POST",
            "/v1/collections",
            json!({"name": "x", "dim": 8, "shards": 9}),
            400,
            "shards",
        ),
        (
            "POST",
            "/v1/collections",
            json!({"name": "docs", "dim": 8}),
            409,
            "already exists",
        ),
        ("GET", "/v1/collections/nope", Value::Null, 404, "nope"),
        (
            "GET",
            "/v1/collections/docs/points/abc",
            Value::Null,
            400,
            "id",
        ),
    ];
    for (m, path, body, want, text) in bad {
        let (s, v) = call(&c, 1, m, path, body.clone()).await;
        assert_eq!(s, want, "{m} {path} {body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(text),
            "{m} {path}: message {msg:?} lacks {text:?}"
        );
    }
    // NaN cannot be written in JSON; an overflowing float is not finite as f32.
    let mut huge = queries[0].iter().map(|x| json!(x)).collect::<Vec<_>>();
    huge[3] = json!(1e39);
    let (s, v) = call(
        &c,
        0,
        "POST",
        "/v1/collections/docs/search",
        json!({"vector": huge}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("vector[3]"));

    // Restart a node: it rebuilds its indexes from applied state and serves
    // the same answers.
    c.terminate(2);
    c.restart(2).await;
    c.wait_caught_up(0, Duration::from_secs(120)).await;
    wait_indexed(&c, 2).await;
    // The rebuilt graph is not the one built before (inserts run in
    // parallel), and at ef 128 recall on this clustered set varies between
    // builds by a few points around 0.95 (a CI run saw 0.93). At ef 256 it
    // is about 0.99 for a sound graph, while an index missing points or
    // links falls far below: the margin tests the rebuild, not HNSW's
    // variance.
    let r = recall_at(&c, 2, &queries[40..60], Some(256)).await;
    assert!(r >= 0.95, "recall@10 at ef 256 after restart is {r}");
    let info = ok(&c, 2, "GET", "/v1/collections/docs", Value::Null).await;
    assert_eq!(info["points"], N - 2 - N / 20);

    // The CLI (gRPC): show, upsert from JSON lines, get, search, bad input.
    let show = c.ctl_json(0, &["collections", "show", "docs"]);
    assert_eq!(show["shard_states"].as_array().map(Vec::len), Some(2));
    let file = c.dir.path().join("points.jsonl");
    let far = vec![-7.0f32; DIM];
    let lines: Vec<String> = (0..3)
        .map(|i| json!({"id": 900_000 + i, "vector": far, "payload": {"src": "cli"}}).to_string())
        .collect();
    std::fs::write(&file, lines.join("\n")).expect("write jsonl");
    let up = c.ctl_json(
        1,
        &[
            "points",
            "upsert",
            "docs",
            "--file",
            file.to_str().unwrap(),
            "--batch",
            "2",
        ],
    );
    assert_eq!(up["upserted"], 3);
    let got = c.ctl_json(2, &["points", "get", "docs", "900001"]);
    assert_eq!(got["payload"]["src"], "cli");
    let far_json = serde_json::to_string(&far).unwrap();
    let found = c.ctl_json(
        0,
        &[
            "search",
            "docs",
            "--vector",
            &far_json,
            "--k",
            "3",
            "--filter",
            r#"{"must":[{"key":"src","match":"cli"}]}"#,
        ],
    );
    assert_eq!(found["result"].as_array().map(Vec::len), Some(3));
    let out = c.ctl(0, &["search", "docs", "--vector", "[1.0]"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dim 64"));

    // Drop, then re-create under the same name: no old points come back.
    ok(&c, 0, "DELETE", "/v1/collections/docs", Value::Null).await;
    let (s, _) = call(&c, 1, "GET", "/v1/collections/docs", Value::Null).await;
    assert_eq!(s, 404);
    ok(
        &c,
        0,
        "POST",
        "/v1/collections",
        json!({"name": "docs", "dim": DIM, "metric": "cosine"}),
    )
    .await;
    let info = ok(&c, 1, "GET", "/v1/collections/docs", Value::Null).await;
    assert_eq!(info["points"], 0);
}

/// A collection created without `shards` gets one shard (here on a
/// cluster of two voters and two shard groups, where the previous default,
/// one per voter, gave two): the points, searches and per-shard states
/// stay on that one group. An explicit `shards` still wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_is_one_shard() {
    let c = Cluster::formed(2, 2, &[]).await;
    c.wait_caught_up(0, Duration::from_secs(60)).await;
    c.wait_caught_up(1, Duration::from_secs(60)).await;
    let made = ok(
        &c,
        0,
        "POST",
        "/v1/collections",
        json!({"name": "docs", "dim": 2, "metric": "l2"}),
    )
    .await;
    assert_eq!(made["shards"], 1, "{made}");
    let points: Vec<Value> = (0..20)
        .map(|i| json!({"id": i, "vector": [i as f32, 0.0]}))
        .collect();
    let r = ok(
        &c,
        0,
        "PUT",
        "/v1/collections/docs/points",
        json!({"points": points}),
    )
    .await;
    assert_eq!(r["upserted"], 20);
    let hits = search(&c, 0, json!({"vector": [7.2, 0.0], "k": 2}), false).await;
    assert_eq!(ids(&hits), vec![json!(7), json!(8)]);
    // A stale search reads the definition from the node's own placement
    // replica; a name it does not know is still looked up (and missing).
    let hits = search(&c, 0, json!({"vector": [7.2, 0.0], "k": 2}), true).await;
    assert_eq!(ids(&hits), vec![json!(7), json!(8)]);
    let (s, v) = call(
        &c,
        0,
        "POST",
        "/v1/collections/nope/search?consistency=stale",
        json!({"vector": [1.0, 0.0]}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let info = ok(&c, 0, "GET", "/v1/collections/docs", Value::Null).await;
    let states = info["shard_states"].as_array().expect("shard_states");
    assert_eq!(states.len(), 1, "{info}");
    assert_eq!(states[0]["points"], 20);

    let two = ok(
        &c,
        0,
        "POST",
        "/v1/collections",
        json!({"name": "wide", "dim": 2, "shards": 2}),
    )
    .await;
    assert_eq!(two["shards"], 2, "{two}");
    let info = ok(&c, 0, "GET", "/v1/collections/wide", Value::Null).await;
    assert_eq!(info["shard_states"].as_array().map(Vec::len), Some(2));
}
