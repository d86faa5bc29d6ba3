//! The policy node types of cluster version 4 (sub_policy, decision_table,
//! terminate) on a real cluster over REST: a parent policy running a child,
//! its nested trace and termination, cycles and archived pins refused at
//! version creation, and the version gate.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A version of `policy` refused with 400 `invalid_graph` naming `node`;
/// the error message.
async fn refused(c: &Cluster, policy: &str, graph: Value, node: &str) -> String {
    let (s, v) = c
        .json_retrying(
            1,
            "POST",
            &format!("/v1/policies/{policy}/versions"),
            Some(json!({"graph": graph})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_graph", "{v}");
    let m = v["error"]["message"].as_str().unwrap_or("").to_string();
    assert!(m.contains(&format!("node {node:?}")), "{m}");
    m
}

/// The child: a tier from a decision table; too many debts end it with a
/// terminate node.
fn scoring() -> Value {
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"income": "number", "debts": "integer"}}},
            {"id": "tiers", "type": "decision_table", "config": {
                "hit_policy": "first",
                "rules": [
                    {"when": "input.income >= 5000.0", "output": {"tier": "'gold'", "limit": "20000"}},
                    {"when": "input.income >= 2000.0", "output": {"tier": "'silver'", "limit": "5000"}}
                ],
                "default": {"tier": "'basic'", "limit": "500"}
            }},
            {"id": "br", "type": "branch"},
            {"id": "too_many_debts", "type": "terminate", "config": {"status": "declined", "reason": "'debts: ' + string(input.debts)"}},
            {"id": "out", "type": "output", "config": {"fields": {"tier": "tier", "limit": "limit"}}}
        ],
        "edges": [
            {"from": "in", "to": "tiers"},
            {"from": "tiers", "to": "br"},
            {"from": "br", "to": "too_many_debts", "when": "input.debts > 5"},
            {"from": "br", "to": "out"}
        ]
    })
}

/// The parent: runs `child` (pinned to `version` if given), collects flags
/// with a `collect` table, and ends with a terminate node or an output.
fn loan(child: &str, version: Option<u32>) -> Value {
    let mut sub = json!({"policy": child, "input": {"income": "input.income", "debts": "input.debts"}, "output": "scored"});
    if let Some(v) = version {
        sub["version"] = json!(v);
    }
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"income": "number", "debts": "integer", "amount": "integer"}}},
            {"id": "score", "type": "sub_policy", "config": sub},
            {"id": "flags", "type": "decision_table", "config": {
                "hit_policy": "collect",
                "rules": [
                    {"when": "input.amount > 10000", "output": {"flag": "'large'"}},
                    {"when": "input.debts > 2", "output": {"flag": "'indebted'"}}
                ]
            }},
            {"id": "br", "type": "branch"},
            {"id": "child_declined", "type": "terminate", "config": {"status": "declined", "reason": "'scoring: ' + scored.termination.reason"}},
            {"id": "over_limit", "type": "terminate", "config": {"status": "review", "reason": "'over the ' + scored.output.tier + ' limit'"}},
            {"id": "approve", "type": "output", "config": {"fields": {"tier": "scored.output.tier", "flags": "flag", "child_version": "scored.version"}}}
        ],
        "edges": [
            {"from": "in", "to": "score"},
            {"from": "score", "to": "flags"},
            {"from": "flags", "to": "br"},
            {"from": "br", "to": "child_declined", "when": "scored.termination != null"},
            {"from": "br", "to": "over_limit", "when": "input.amount > scored.output.limit"},
            {"from": "br", "to": "approve"}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_policy_decision_table_and_terminate_over_rest() {
    let c = Cluster::formed(3, 2, &[]).await;
    // A new cluster of this build reaches version 4 by itself.
    let v4 = wait_until(Duration::from_secs(60), || async {
        let (s, v) = c.json_req(0, "GET", "/v1/cluster/version", None).await;
        s == 200 && v["active"].as_u64() >= Some(4)
    })
    .await;
    assert!(v4.is_ok(), "cluster version 4\n{}", c.log_tails(30));

    let a = c
        .json_success(0, "POST", "/v1/policies", Some(json!({"name": "scoring"})))
        .await;
    let a_id = a["id"].as_str().unwrap().to_string();
    let b = c
        .json_success(0, "POST", "/v1/policies", Some(json!({"name": "loan"})))
        .await;
    let b_id = b["id"].as_str().unwrap().to_string();
    // A sub_policy naming a policy that does not exist, or a version it
    // does not have: refused, naming the node.
    let m = refused(&c, &b_id, loan("nobody", None), "score").await;
    assert!(m.contains("policy \"nobody\" does not exist"), "{m}");
    let m = refused(&c, &b_id, loan("scoring", Some(7)), "score").await;
    assert!(m.contains("has no version 7"), "{m}");

    let v = c
        .json_success(
            1,
            "POST",
            &format!("/v1/policies/{a_id}/versions"),
            Some(json!({"graph": scoring()})),
        )
        .await;
    assert_eq!(v["version"], 1);
    let v = c
        .json_success(
            2,
            "POST",
            &format!("/v1/policies/{b_id}/versions"),
            Some(json!({"graph": loan("scoring", None)})),
        )
        .await;
    assert_eq!(v["version"], 1);

    // Approved: the child's output bound, the flags collected.
    let path = format!("/v1/policies/{b_id}/runs");
    let run = c
        .json_success(
            0,
            "POST",
            &path,
            Some(json!({"input": {"income": 3000, "debts": 3, "amount": 1000}})),
        )
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["output"],
        json!({"tier": "silver", "flags": ["indebted"], "child_version": 1}),
        "{run}"
    );
    assert!(run["termination"].is_null(), "{run}");
    let trace = run["trace"].as_array().unwrap();
    let ids: Vec<&str> = trace.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["in", "score", "flags", "br", "approve"], "{run}");
    let sub = &trace[1];
    assert_eq!(sub["type"], "sub_policy");
    let child_ids: Vec<&str> = sub["children"]
        .as_array()
        .unwrap_or_else(|| panic!("no nested trace: {sub}"))
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(child_ids, ["in", "tiers", "br", "out"], "{sub}");
    assert_eq!(sub["children"][1]["rows"], json!([1]), "{sub}");
    assert_eq!(
        sub["output"],
        json!({"output": {"tier": "silver", "limit": 5000}, "termination": null, "version": 1})
    );
    assert_eq!(trace[2]["rows"], json!([1]), "{run}");
    // The stored run keeps the nested trace.
    let id = run["id"].as_str().unwrap();
    let stored = c
        .json_success(2, "GET", &format!("/v1/runs/{id}"), None)
        .await;
    assert_eq!(stored["trace"], run["trace"]);

    // The parent's terminate: succeeded, no output, the termination.
    let run = c
        .json_success(
            1,
            "POST",
            &path,
            Some(json!({"input": {"income": 3000, "debts": 0, "amount": 9000}})),
        )
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"], Value::Null, "{run}");
    assert_eq!(
        run["termination"],
        json!({"status": "review", "reason": "over the silver limit"}),
        "{run}"
    );
    // The child's terminate ends only the child: visible in the nested
    // trace and the bound value, and the parent decides on it.
    let run = c
        .json_success(
            2,
            "POST",
            &path,
            Some(json!({"input": {"income": 9000, "debts": 9, "amount": 100}})),
        )
        .await;
    assert_eq!(
        run["termination"],
        json!({"status": "declined", "reason": "scoring: debts: 9"}),
        "{run}"
    );
    let sub = &run["trace"][1];
    assert_eq!(
        sub["children"].as_array().unwrap().last().unwrap()["id"],
        "too_many_debts"
    );
    assert_eq!(
        sub["output"]["termination"],
        json!({"status": "declined", "reason": "debts: 9"})
    );
    assert_eq!(sub["output"]["output"], Value::Null);

    // Batches carry the termination per result.
    let batch = c
        .json_success(
            0,
            "POST",
            &format!("/v1/policies/{b_id}/runs/batch"),
            Some(json!({"inputs": [
                {"income": 6000, "debts": 0, "amount": 20000},
                {"income": 100, "debts": 0, "amount": 50000}
            ]})),
        )
        .await;
    let r = batch["results"].as_array().unwrap();
    assert_eq!(
        r[0]["output"],
        json!({"tier": "gold", "flags": ["large"], "child_version": 1}),
        "{batch}"
    );
    assert!(r[0].get("termination").is_none(), "{batch}");
    assert_eq!(
        r[1]["termination"],
        json!({"status": "review", "reason": "over the basic limit"}),
        "{batch}"
    );

    // gRPC: the sync run and the batch carry the termination too.
    let mut client = c.grpc(2).await.expect("connect");
    let input = json!({"income": 9000, "debts": 9, "amount": 100}).to_string();
    let r = client
        .policy_run(&b_id, &input, None, None)
        .await
        .expect("grpc run");
    assert_eq!(r.status, "succeeded");
    let t = r.termination.expect("termination over gRPC");
    assert_eq!(
        (t.status.as_str(), t.reason.as_deref()),
        ("declined", Some("scoring: debts: 9"))
    );
    let b = client
        .policy_run_batch(&b_id, vec![input], None)
        .await
        .expect("grpc batch");
    let t = b.results[0].termination.clone().expect("batch termination");
    assert_eq!(t.status, "declined");

    // A version of the child that runs the parent: loan's allocation runs
    // scoring, so scoring -> loan -> scoring is a cycle.
    let mut cyclic = scoring();
    cyclic["nodes"][2] = json!({"id": "br", "type": "sub_policy", "config": {"policy": "loan", "input": {"income": "input.income", "debts": "input.debts", "amount": "1"}, "output": "again"}});
    cyclic["nodes"][3] =
        json!({"id": "too_many_debts", "type": "terminate", "config": {"status": "never"}});
    cyclic["edges"] = json!([
        {"from": "in", "to": "tiers"},
        {"from": "tiers", "to": "br"},
        {"from": "br", "to": "too_many_debts"}
    ]);
    cyclic["nodes"].as_array_mut().unwrap().pop();
    let m = refused(&c, &a_id, cyclic, "br").await;
    assert!(m.contains("scoring -> loan -> scoring"), "{m}");
    // A policy running itself is the shortest cycle.
    let m = refused(&c, &b_id, loan("loan", None), "score").await;
    assert!(m.contains("cycle"), "{m}");

    // A pinned version that is archived is refused; the same pin on a
    // live version is accepted.
    let v2 = c
        .json_success(
            0,
            "POST",
            &format!("/v1/policies/{a_id}/versions"),
            Some(json!({"graph": scoring(), "activate": false})),
        )
        .await;
    assert_eq!(v2["version"], 2);
    c.json_success(
        1,
        "POST",
        &format!("/v1/policies/{b_id}/versions"),
        Some(json!({"graph": loan("scoring", Some(2))})),
    )
    .await;
    c.json_success(
        1,
        "POST",
        &format!("/v1/policies/{a_id}/versions/2/archive"),
        None,
    )
    .await;
    let m = refused(&c, &b_id, loan("scoring", Some(2)), "score").await;
    assert!(
        m.contains("version 2 of policy \"scoring\" is archived"),
        "{m}"
    );
    // At run time too: loan v2 pins the now archived version; the run
    // fails naming the node.
    let run = c
        .json_success(
            2,
            "POST",
            &path,
            Some(json!({"input": {"income": 1, "debts": 0, "amount": 1}})),
        )
        .await;
    assert_eq!(run["status"], "failed", "{run}");
    let e = run["error"].as_str().unwrap();
    assert!(
        e.starts_with("node \"score\"") && e.contains("archived"),
        "{e}"
    );
}

/// Below cluster version 4 a graph with a new node type is refused as the
/// gate refuses commands; an old-style graph is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_node_types_need_cluster_version_4() {
    let c = Cluster::start_with_env(3, &[], &[("ORRERY_TEST_MAX_CLUSTER_VERSION", "3")]).await;
    c.form(1);
    let p = c
        .json_success(0, "POST", "/v1/policies", Some(json!({"name": "old"})))
        .await;
    let id = p["id"].as_str().unwrap().to_string();
    let (s, v) = c
        .json_retrying(
            1,
            "POST",
            &format!("/v1/policies/{id}/versions"),
            Some(json!({"graph": scoring()})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "cluster_version_too_low", "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("4 (policy-node-types)"), "{m}");
    let plain = json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"income": "number"}}},
            {"id": "out", "type": "output", "config": {"fields": {"double": "input.income * 2.0"}}}
        ],
        "edges": [{"from": "in", "to": "out"}]
    });
    let v = c
        .json_success(
            2,
            "POST",
            &format!("/v1/policies/{id}/versions"),
            Some(json!({"graph": plain})),
        )
        .await;
    assert_eq!(v["version"], 1);
}
