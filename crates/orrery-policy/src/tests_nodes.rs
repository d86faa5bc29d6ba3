//! The node types of cluster version 4: decision_table, terminate and
//! sub_policy. Sub-policies resolve through [`Resolver`], which holds real
//! compiled graphs by name (what the server's catalog does with Raft).

use crate::eval::{check_input, evaluate, Effects, NoEffects, Outcome};
use crate::graph::{compile, parse_graph, Catalog, Compiled};
use crate::limits::MAX_SUB_POLICY_DEPTH;
use crate::termination::Termination;
use crate::PolicyError;
use futures::future::BoxFuture;
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn catalog() -> Catalog {
    Catalog {
        queues: Some(["q".to_string()].into_iter().collect()),
        ..Catalog::default()
    }
}

fn build(g: Json) -> Result<Arc<Compiled>, PolicyError> {
    compile(&parse_graph(&g)?, &catalog())
}

fn invalid(g: Json) -> (String, String) {
    match build(g) {
        Err(PolicyError::Invalid { node, message }) => (node, message),
        other => panic!("expected invalid, got {other:?}"),
    }
}

fn run_with(c: &Arc<Compiled>, input: Json, fx: &dyn Effects, budget: Duration) -> Outcome {
    let v = check_input(c, &input).unwrap();
    futures::executor::block_on(evaluate(c, v, fx, budget))
}

fn run(c: &Arc<Compiled>, input: Json, fx: &dyn Effects) -> Outcome {
    run_with(c, input, fx, Duration::from_secs(30))
}

fn table(hit: &str, default: Option<Json>) -> Json {
    let mut cfg = json!({
        "hit_policy": hit,
        "rules": [
            {"when": "input.score >= 700", "output": {"tier": "'gold'", "limit": "5000"}},
            {"when": "input.score >= 600", "output": {"tier": "'silver'", "limit": "2000"}},
            {"when": "input.score >= 500", "output": {"limit": "500", "tier": "'bronze'"}}
        ]
    });
    if let Some(d) = default {
        cfg["default"] = d;
    }
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"score": "integer"}}},
            {"id": "t", "type": "decision_table", "config": cfg},
            {"id": "out", "type": "output", "config": {"fields": {"tier": "tier", "limit": "limit"}}}
        ],
        "edges": [{"from": "in", "to": "t"}, {"from": "t", "to": "out"}]
    })
}

#[test]
fn decision_table_first_takes_the_first_matching_row() {
    let c = build(table("first", None)).unwrap();
    let o = run(&c, json!({"score": 650}), &NoEffects);
    assert!(o.succeeded(), "{o:?}");
    assert_eq!(o.output, Some(json!({"tier": "silver", "limit": 2000})));
    let t = &o.trace[1];
    assert_eq!(t.kind, "decision_table");
    assert_eq!(t.rows, Some(vec![1]));
    assert_eq!(t.output, Some(json!({"tier": "silver", "limit": 2000})));
    // 750 matches every row: `first` stops at row 0.
    let o = run(&c, json!({"score": 750}), &NoEffects);
    assert_eq!(o.output, Some(json!({"tier": "gold", "limit": 5000})));
    assert_eq!(o.trace[1].rows, Some(vec![0]));
}

#[test]
fn decision_table_collect_lists_every_matching_row_in_order() {
    let c = build(table("collect", None)).unwrap();
    let o = run(&c, json!({"score": 650}), &NoEffects);
    assert_eq!(
        o.output,
        Some(json!({"tier": ["silver", "bronze"], "limit": [2000, 500]}))
    );
    assert_eq!(o.trace[1].rows, Some(vec![1, 2]));
    let o = run(&c, json!({"score": 900}), &NoEffects);
    assert_eq!(o.trace[1].rows, Some(vec![0, 1, 2]));
    assert_eq!(
        o.output,
        Some(json!({"tier": ["gold", "silver", "bronze"], "limit": [5000, 2000, 500]}))
    );
}

#[test]
fn decision_table_no_match_binds_null_or_empty_lists() {
    let c = build(table("first", None)).unwrap();
    let o = run(&c, json!({"score": 100}), &NoEffects);
    assert!(o.succeeded(), "{o:?}");
    assert_eq!(o.output, Some(json!({"tier": null, "limit": null})));
    assert_eq!(o.trace[1].rows, Some(vec![]));
    let c = build(table("collect", None)).unwrap();
    let o = run(&c, json!({"score": 100}), &NoEffects);
    assert_eq!(o.output, Some(json!({"tier": [], "limit": []})));
}

#[test]
fn decision_table_default_applies_only_when_no_row_matches() {
    let d = json!({"tier": "'none'", "limit": "input.score / 10"});
    let c = build(table("first", Some(d.clone()))).unwrap();
    let o = run(&c, json!({"score": 100}), &NoEffects);
    assert_eq!(o.output, Some(json!({"tier": "none", "limit": 10})));
    let o = run(&c, json!({"score": 550}), &NoEffects);
    assert_eq!(o.output, Some(json!({"tier": "bronze", "limit": 500})));
    let c = build(table("collect", Some(d))).unwrap();
    let o = run(&c, json!({"score": 100}), &NoEffects);
    assert_eq!(o.output, Some(json!({"tier": ["none"], "limit": [10]})));
}

#[test]
fn decision_table_validation_names_the_node() {
    let mut g = table("sometimes", None);
    assert_eq!(invalid(g.clone()).0, "t");
    g = table("first", None);
    g["nodes"][1]["config"]["rules"][2]["output"] = json!({"tier": "'x'"});
    let (node, msg) = invalid(g);
    assert_eq!(node, "t");
    assert!(msg.contains("rules[2].output must name exactly"), "{msg}");
    let mut g = table("first", None);
    g["nodes"][1]["config"]["rules"][0]["when"] = json!("nope > 1");
    let (node, msg) = invalid(g);
    assert_eq!(node, "t");
    assert!(msg.contains("unknown name \"nope\""), "{msg}");
    let mut g = table("first", None);
    g["nodes"][1]["config"]["rules"] = json!([]);
    assert_eq!(invalid(g).0, "t");
    // Over the row limit: TooLarge, naming the node.
    let mut g = table("first", None);
    let row = json!({"when": "true", "output": {"tier": "'a'", "limit": "1"}});
    g["nodes"][1]["config"]["rules"] = Json::Array(vec![row; crate::limits::MAX_TABLE_ROWS + 1]);
    match build(g) {
        Err(PolicyError::TooLarge(m)) => assert!(m.contains("\"t\""), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn decision_table_condition_must_be_a_bool() {
    let mut g = table("first", None);
    g["nodes"][1]["config"]["rules"][0]["when"] = json!("input.score");
    let c = build(g).unwrap();
    let o = run(&c, json!({"score": 1}), &NoEffects);
    let e = o.error.unwrap();
    assert!(e.contains("node \"t\"") && e.contains("not a bool"), "{e}");
}

fn terminating() -> Json {
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"score": "integer"}}},
            {"id": "br", "type": "branch"},
            {"id": "stop", "type": "terminate", "config": {"status": "declined", "reason": "'score ' + string(input.score) + ' too low'"}},
            {"id": "out", "type": "output", "config": {"fields": {"ok": "true"}}}
        ],
        "edges": [
            {"from": "in", "to": "br"},
            {"from": "br", "to": "stop", "when": "input.score < 500"},
            {"from": "br", "to": "out"}
        ]
    })
}

#[test]
fn terminate_ends_the_run_with_its_status_and_reason() {
    let c = build(terminating()).unwrap();
    let o = run(&c, json!({"score": 400}), &NoEffects);
    assert!(o.succeeded(), "{o:?}");
    assert_eq!(o.output, None);
    assert_eq!(
        o.termination,
        Some(Termination {
            status: "declined".into(),
            reason: Some("score 400 too low".into())
        })
    );
    let last = o.trace.last().unwrap();
    assert_eq!(
        (last.id.as_str(), last.kind.as_str()),
        ("stop", "terminate")
    );
    assert_eq!(
        last.output,
        Some(json!({"status": "declined", "reason": "score 400 too low"}))
    );
    // The other path still ends at its output, with no termination.
    let o = run(&c, json!({"score": 800}), &NoEffects);
    assert_eq!(o.output, Some(json!({"ok": true})));
    assert_eq!(o.termination, None);
    // A status alone; the outcome's JSON carries it (old ones parse).
    let mut g = terminating();
    g["nodes"][2]["config"] = json!({"status": "error"});
    let o = run(&build(g).unwrap(), json!({"score": 1}), &NoEffects);
    assert!(o.succeeded());
    let t = o.termination.clone().unwrap();
    assert_eq!((t.status.as_str(), t.reason), ("error", None));
    let text = serde_json::to_value(&o).unwrap();
    assert_eq!(text["termination"], json!({"status": "error"}));
    let old: Outcome =
        serde_json::from_value(json!({"output": null, "trace": [], "error": null})).unwrap();
    assert_eq!(old.termination, None);
}

#[test]
fn terminate_may_have_no_successor_and_needs_a_status() {
    let mut g = terminating();
    g["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"from": "stop", "to": "out"}));
    let (node, msg) = invalid(g);
    assert_eq!(node, "stop");
    assert!(msg.contains("terminal"), "{msg}");
    for bad in [
        json!({}),
        json!({"status": ""}),
        json!({"status": "not ok"}),
        json!({"status": 3}),
    ] {
        let mut g = terminating();
        g["nodes"][2]["config"] = bad.clone();
        assert_eq!(invalid(g).0, "stop", "{bad}");
    }
}

/// Real compiled graphs by policy name and version; the allocation is the
/// highest version (`None`) unless pinned. Records the nodes that enqueue.
#[derive(Default)]
struct Resolver {
    policies: BTreeMap<String, BTreeMap<u32, Arc<Compiled>>>,
    enqueued: Mutex<Vec<String>>,
}

impl Resolver {
    fn add(&mut self, name: &str, version: u32, g: Json) {
        let c = build(g).unwrap();
        self.policies
            .entry(name.into())
            .or_default()
            .insert(version, c);
    }
}

impl Effects for Resolver {
    fn lookup<'a>(&'a self, source: &'a str, _key: &'a str) -> BoxFuture<'a, Result<Json, String>> {
        Box::pin(async move { Err(format!("{source}: none")) })
    }

    fn enqueue<'a>(
        &'a self,
        node: &'a str,
        _queue: &'a str,
        _kind: &'a str,
        _params: Json,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            let mut e = self.enqueued.lock().map_err(|e| e.to_string())?;
            e.push(node.to_string());
            Ok(Some(format!("job-{}", e.len())))
        })
    }

    fn sub_policy<'a>(
        &'a self,
        policy: &'a str,
        version: Option<u32>,
    ) -> BoxFuture<'a, Result<(u32, Arc<Compiled>), String>> {
        Box::pin(async move {
            let vs = self
                .policies
                .get(policy)
                .ok_or_else(|| "no such policy".to_string())?;
            let found = match version {
                Some(v) => vs.get_key_value(&v),
                None => vs.iter().next_back(),
            };
            found
                .map(|(v, c)| (*v, c.clone()))
                .ok_or_else(|| "no such version".to_string())
        })
    }
}

/// The child: scores an applicant, declines low incomes with a terminate
/// node, and submits a job from a node called `notify`.
fn child() -> Json {
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"income": "number"}}},
            {"id": "br", "type": "branch"},
            {"id": "stop", "type": "terminate", "config": {"status": "declined", "reason": "'low income'"}},
            {"id": "notify", "type": "enqueue", "config": {"queue": "q", "kind": "k", "params": {}}},
            {"id": "out", "type": "output", "config": {"fields": {"score": "input.income / 100.0"}}}
        ],
        "edges": [
            {"from": "in", "to": "br"},
            {"from": "br", "to": "stop", "when": "input.income < 1000.0"},
            {"from": "br", "to": "notify"},
            {"from": "notify", "to": "out"}
        ]
    })
}

/// The parent: runs the child on a mapped input, then decides on its result.
fn parent(version: Option<u32>) -> Json {
    let mut sub =
        json!({"policy": "child", "input": {"income": "input.salary * 12.0"}, "output": "scored"});
    if let Some(v) = version {
        sub["version"] = json!(v);
    }
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"salary": "number"}}},
            {"id": "sub", "type": "sub_policy", "config": sub},
            {"id": "notify", "type": "enqueue", "config": {"queue": "q", "kind": "k", "params": {}}},
            {"id": "out", "type": "output", "config": {"fields": {
                "score": "scored.output == null ? null : scored.output.score",
                "declined": "scored.termination != null && scored.termination.status == 'declined'",
                "version": "scored.version"
            }}}
        ],
        "edges": [{"from": "in", "to": "sub"}, {"from": "sub", "to": "notify"}, {"from": "notify", "to": "out"}]
    })
}

#[test]
fn sub_policy_runs_the_child_binds_its_output_and_nests_its_trace() {
    let mut r = Resolver::default();
    r.add("child", 1, child());
    let c = build(parent(None)).unwrap();
    assert_eq!(
        c.sub_policies(),
        vec![("sub".to_string(), "child".to_string(), None)]
    );
    let o = run(&c, json!({"salary": 1000}), &r);
    assert!(o.succeeded(), "{o:?}");
    assert_eq!(
        o.output,
        Some(json!({"score": 120.0, "declined": false, "version": 1}))
    );
    let sub = &o.trace[1];
    assert_eq!((sub.id.as_str(), sub.kind.as_str()), ("sub", "sub_policy"));
    let ids: Vec<&str> = sub.children.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["in", "br", "notify", "out"]);
    assert_eq!(
        sub.output,
        Some(json!({"output": {"score": 120.0}, "termination": null, "version": 1}))
    );
    // The child's enqueue went through the same effects, under a node
    // path of its own (its dedupe key cannot collide with the parent's).
    assert_eq!(*r.enqueued.lock().unwrap(), ["sub/notify", "notify"]);
    // The nested trace survives its JSON form; an old trace parses.
    let text = serde_json::to_string(&o.trace).unwrap();
    let back: Vec<crate::eval::TraceEntry> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, o.trace);
    let old: crate::eval::TraceEntry =
        serde_json::from_value(json!({"id": "a", "type": "input", "started": 1, "duration_us": 0}))
            .unwrap();
    assert!(old.children.is_empty() && old.rows.is_none());
}

#[test]
fn a_childs_terminate_ends_only_the_child() {
    let mut r = Resolver::default();
    r.add("child", 1, child());
    let c = build(parent(None)).unwrap();
    let o = run(&c, json!({"salary": 10}), &r);
    assert!(o.succeeded(), "{o:?}");
    assert_eq!(o.termination, None);
    assert_eq!(
        o.output,
        Some(json!({"score": null, "declined": true, "version": 1}))
    );
    assert_eq!(
        o.trace[1].output,
        Some(
            json!({"output": null, "termination": {"status": "declined", "reason": "low income"}, "version": 1})
        )
    );
    assert_eq!(o.trace[1].children.last().unwrap().id, "stop");
}

#[test]
fn sub_policy_pins_a_version_and_checks_the_childs_input() {
    let mut r = Resolver::default();
    r.add("child", 1, child());
    let mut v2 = child();
    v2["nodes"][4]["config"]["fields"]["score"] = json!("-1.0");
    r.add("child", 2, v2);
    let o = run(&build(parent(None)).unwrap(), json!({"salary": 1000}), &r);
    assert_eq!(o.output.unwrap()["version"], json!(2));
    let o = run(
        &build(parent(Some(1))).unwrap(),
        json!({"salary": 1000}),
        &r,
    );
    assert_eq!(o.output.unwrap()["score"], json!(120.0));
    // A mapped input the child's input node refuses fails the parent,
    // naming the node.
    let mut g = parent(None);
    g["nodes"][1]["config"]["input"] = json!({"income": "'lots'"});
    let o = run(&build(g).unwrap(), json!({"salary": 1000}), &r);
    let e = o.error.unwrap();
    assert!(
        e.starts_with("node \"sub\"") && e.contains("input.income"),
        "{e}"
    );
    // So does a policy the resolver does not know.
    let mut g = parent(None);
    g["nodes"][1]["config"]["policy"] = json!("ghost");
    let o = run(&build(g).unwrap(), json!({"salary": 1000}), &r);
    assert!(o.error.unwrap().contains("node \"sub\""));
}

#[test]
fn a_child_error_fails_the_parent_naming_the_node() {
    let mut r = Resolver::default();
    let mut bad = child();
    bad["nodes"][4]["config"]["fields"]["score"] = json!("input.income / 0");
    r.add("child", 1, bad);
    let o = run(&build(parent(None)).unwrap(), json!({"salary": 1000}), &r);
    assert!(!o.succeeded());
    let e = o.error.unwrap();
    assert!(
        e.starts_with("node \"sub\": policy \"child\" version 1 failed: node \"out\""),
        "{e}"
    );
    assert_eq!(
        o.trace[1].error.as_deref().map(|s| s.contains("failed")),
        Some(true)
    );
    assert_eq!(o.trace[1].children.last().unwrap().id, "out");
}

/// A policy that runs itself: only the depth limit stops it.
#[test]
fn a_cycle_at_run_time_ends_at_the_depth_limit() {
    let looping = json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"n": "integer"}}},
            {"id": "again", "type": "sub_policy", "config": {"policy": "loop", "input": {"n": "input.n + 1"}}},
            {"id": "out", "type": "output", "config": {"fields": {"n": "again.output.n"}}}
        ],
        "edges": [{"from": "in", "to": "again"}, {"from": "again", "to": "out"}]
    });
    let mut r = Resolver::default();
    r.add("loop", 1, looping);
    let c = r.policies["loop"][&1].clone();
    let o = run(&c, json!({"n": 0}), &r);
    let e = o.error.clone().unwrap();
    assert!(
        e.contains(&format!("nested more than {MAX_SUB_POLICY_DEPTH} deep")),
        "{e}"
    );
    assert!(!o.timed_out);
    // The nesting is in the trace, one level per run, as deep as allowed.
    let mut depth = 0;
    let mut t = &o.trace;
    while let Some(sub) = t.iter().find(|e| e.id == "again") {
        depth += 1;
        t = &sub.children;
    }
    assert_eq!(depth, MAX_SUB_POLICY_DEPTH + 1);
}

/// The child runs on what is left of the parent's deadline.
#[test]
fn a_child_counts_against_the_parents_deadline() {
    let slow_child = json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"xs": "array"}}},
            {"id": "spin", "type": "transform", "config": {"assign": {"x": "input.xs.map(x, input.xs.filter(y, y % 7 == x % 7).size()).size()"}}},
            {"id": "out", "type": "output", "config": {"fields": {"x": "x"}}}
        ],
        "edges": [{"from": "in", "to": "spin"}, {"from": "spin", "to": "out"}]
    });
    let parent = json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"xs": "array"}}},
            {"id": "sub", "type": "sub_policy", "config": {"policy": "slow", "input": {"xs": "input.xs"}}},
            {"id": "out", "type": "output", "config": {"fields": {"x": "sub.output"}}}
        ],
        "edges": [{"from": "in", "to": "sub"}, {"from": "sub", "to": "out"}]
    });
    let mut r = Resolver::default();
    r.add("slow", 1, slow_child);
    let c = build(parent).unwrap();
    let t = std::time::Instant::now();
    let xs: Vec<i64> = (0..3000).collect();
    let o = run_with(&c, json!({ "xs": xs }), &r, Duration::from_millis(100));
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert!(o.timed_out, "{o:?}");
    assert!(o.error.unwrap().contains("evaluation_timeout"));
}

#[test]
fn sub_policy_validation_names_the_node() {
    let bad = [
        json!({"input": {}}),
        json!({"policy": "a b", "input": {}}),
        json!({"policy": "c", "version": 0, "input": {}}),
        json!({"policy": "c"}),
        json!({"policy": "c", "input": {"x": "nope"}}),
        json!({"policy": "c", "input": {}, "output": "in valid"}),
        json!({"policy": "c", "input": {}, "extra": 1}),
    ];
    for cfg in bad {
        let mut g = parent(None);
        g["nodes"][1]["config"] = cfg.clone();
        assert_eq!(invalid(g).0, "sub", "{cfg}");
    }
    // Without `output`, the node id is the name: it must be an identifier.
    let mut g = parent(None);
    g["nodes"][1]["id"] = json!("sub-1");
    g["nodes"][1]["config"] = json!({"policy": "c", "input": {}});
    g["edges"] = json!([{"from": "in", "to": "sub-1"}, {"from": "sub-1", "to": "notify"}, {"from": "notify", "to": "out"}]);
    g["nodes"][3]["config"]["fields"] = json!({"x": "1"});
    let (node, msg) = invalid(g);
    assert_eq!(node, "sub-1");
    assert!(msg.contains("config.output is needed"), "{msg}");
}

#[test]
fn the_new_node_types_are_marked_for_the_version_gate() {
    assert!(build(table("first", None)).unwrap().uses_v4_nodes());
    assert!(build(terminating()).unwrap().uses_v4_nodes());
    assert!(build(parent(None)).unwrap().uses_v4_nodes());
    let plain = json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {}}},
            {"id": "out", "type": "output", "config": {"fields": {"a": "1"}}}
        ],
        "edges": [{"from": "in", "to": "out"}]
    });
    assert!(!build(plain).unwrap().uses_v4_nodes());
}
