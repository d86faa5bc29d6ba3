//! `orreryctl` covers what the policies REST API does: update (allocation),
//! version list/get/archive, batch runs, data sources, delete — against a
//! real secure cluster, each result checked through REST as well.

mod common;

use common::*;
use serde_json::{json, Value};

fn graph(tag: &str) -> Value {
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"amount": "number"}}},
            {"id": "br", "type": "branch"},
            {"id": "big", "type": "output", "config": {"fields": {"size": "'big'", "v": format!("'{tag}'")}}},
            {"id": "small", "type": "output", "config": {"fields": {"size": "'small'", "v": format!("'{tag}'")}}}
        ],
        "edges": [
            {"from": "in", "to": "br"},
            {"from": "br", "to": "big", "when": "input.amount > 100.0"},
            {"from": "br", "to": "small"}
        ]
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn orreryctl_covers_the_policies_api() {
    let c = Cluster::formed(3, 2, &[]).await;
    let dir = c.dir.path();
    let write = |name: &str, v: &Value| {
        let p = dir.join(name);
        std::fs::write(&p, v.to_string()).expect("write file");
        p.to_string_lossy().to_string()
    };
    let g1 = write("g1.json", &graph("v1"));
    let g2 = write("g2.json", &graph("v2"));

    c.ctl_ok(0, &["policies", "create", "cli-pol"]);
    c.ctl_ok(
        1,
        &["policies", "version", "create", "cli-pol", "--file", &g1],
    );
    c.ctl_ok(
        2,
        &[
            "policies",
            "version",
            "create",
            "cli-pol",
            "--file",
            &g2,
            "--inactive",
        ],
    );

    // version list / get
    let vs = c.ctl_json(0, &["policies", "version", "list", "cli-pol"]);
    let versions: Vec<u64> = vs["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].as_u64().expect("version"))
        .collect();
    assert_eq!(versions, vec![1, 2], "{vs}");
    let v2 = c.ctl_json(1, &["policies", "version", "get", "cli-pol", "2"]);
    assert_eq!(v2["graph"], graph("v2"), "{v2}");

    // update: the allocation moves all traffic to v2; checked over REST.
    let updated = c.ctl_json(
        2,
        &[
            "policies",
            "update",
            "cli-pol",
            "--allocation",
            "1=0,2=10",
            "--description",
            "moved",
        ],
    );
    assert_eq!(updated["description"], "moved", "{updated}");
    let id = updated["id"].as_str().expect("id").to_string();
    let rest = c
        .json_ok(0, "GET", &format!("/v1/policies/{id}"), None, 200)
        .await;
    assert_eq!(
        rest["allocation"],
        json!([{"version": 1, "weight": 0}, {"version": 2, "weight": 10}]),
        "{rest}"
    );
    let bad = c.ctl(0, &["policies", "update", "cli-pol", "--allocation", "1:5"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("VERSION=WEIGHT"));
    let nothing = c.ctl(0, &["policies", "update", "cli-pol"]);
    assert!(!nothing.status.success());

    // archive: refused while v2 has weight, done for v1 (weight 0).
    let refused = c.ctl(1, &["policies", "version", "archive", "cli-pol", "2"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("receives traffic"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let archived = c.ctl_json(1, &["policies", "version", "archive", "cli-pol", "1"]);
    assert_eq!(archived["archived"], true, "{archived}");
    let v1 = c
        .json_ok(
            2,
            "GET",
            &format!("/v1/policies/{id}/versions/1"),
            None,
            200,
        )
        .await;
    assert_eq!(v1["archived"], true, "{v1}");

    // run-batch: a JSON array and JSON lines give the same results, in order.
    let arr = write("inputs.json", &json!([{"amount": 500}, {"amount": 5}]));
    let lines = dir.join("inputs.jsonl");
    std::fs::write(&lines, "{\"amount\": 500}\n\n{\"amount\": 5}\n").expect("write");
    for f in [arr, lines.to_string_lossy().to_string()] {
        let r = c.ctl_json(0, &["policies", "run-batch", "cli-pol", "--inputs", &f]);
        assert_eq!(r["version"], 2, "{r}");
        let sizes: Vec<&str> = r["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|x| x["output"]["size"].as_str().unwrap_or("?"))
            .collect();
        assert_eq!(sizes, vec!["big", "small"], "{r}");
    }
    let bad_lines = write("bad.jsonl", &json!("x"));
    std::fs::write(&bad_lines, "{\"amount\": 1}\nnot json\n").expect("write");
    let out = c.ctl(
        0,
        &["policies", "run-batch", "cli-pol", "--inputs", &bad_lines],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));

    // data sources: create, list (also over REST), a duplicate refused, delete.
    let src = write(
        "src.json",
        &json!({"name": "limits", "kind": "kv", "key_template": "limits/{key}"}),
    );
    c.ctl_ok(0, &["data-sources", "create", "--file", &src]);
    let listed = c.ctl_json(1, &["data-sources", "list"]);
    assert_eq!(listed["data_sources"][0]["name"], "limits", "{listed}");
    let again = c.ctl(2, &["data-sources", "create", "--file", &src]);
    assert!(!again.status.success());
    let rest = c.json_ok(2, "GET", "/v1/data-sources", None, 200).await;
    assert_eq!(
        rest["data_sources"].as_array().map(Vec::len),
        Some(1),
        "{rest}"
    );
    c.ctl_ok(2, &["data-sources", "delete", "limits"]);
    let rest = c.json_ok(0, "GET", "/v1/data-sources", None, 200).await;
    assert_eq!(rest["data_sources"], json!([]), "{rest}");

    // delete: gone over REST too.
    c.ctl_ok(0, &["policies", "delete", "cli-pol"]);
    let (status, _) = c
        .json_req(1, "GET", &format!("/v1/policies/{id}"), None)
        .await;
    assert_eq!(status, 404);
    let missing = c.ctl(1, &["policies", "delete", "cli-pol"]);
    assert!(!missing.status.success());
}
