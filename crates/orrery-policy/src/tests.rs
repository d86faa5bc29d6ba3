use crate::eval::{check_input, evaluate, evaluate_batch, pick, Effects, NoEffects, Outcome};
use crate::graph::{compile, parse_graph, Catalog, Compiled};
use crate::store::*;
use crate::PolicyError;
use futures::future::BoxFuture;
use proptest::prelude::*;
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::sync::Arc;

fn catalog() -> Catalog {
    let mut c = Catalog::default();
    c.data_sources.insert("scores".into(), "kv".into());
    c.data_sources.insert("web".into(), "http".into());
    c.data_sources.insert("emb".into(), "vector".into());
    c
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

struct MapFx(BTreeMap<String, Json>);

impl Effects for MapFx {
    fn lookup<'a>(&'a self, source: &'a str, key: &'a str) -> BoxFuture<'a, Result<Json, String>> {
        Box::pin(async move {
            self.0
                .get(&format!("{source}/{key}"))
                .cloned()
                .ok_or_else(|| format!("{source}: no value for {key:?}"))
        })
    }
}

fn run(c: &Arc<Compiled>, input: Json, fx: &dyn Effects) -> Outcome {
    let v = check_input(c, &input).unwrap();
    futures::executor::block_on(evaluate(c, v, fx, std::time::Duration::from_secs(30)))
}

fn credit() -> Json {
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"income": "number", "debt": "number", "customer": "string", "vip": "bool?"}}},
            {"id": "ratio", "type": "transform", "config": {"assign": {"ratio": "input.debt / input.income"}}},
            {"id": "br", "type": "branch"},
            {"id": "deny", "type": "output", "config": {"fields": {"decision": "'deny'", "ratio": "ratio"}}},
            {"id": "approve", "type": "output", "config": {"fields": {"decision": "'approve'", "ratio": "ratio"}}}
        ],
        "edges": [
            {"from": "in", "to": "ratio"},
            {"from": "ratio", "to": "br"},
            {"from": "br", "to": "deny", "when": "ratio > 0.5"},
            {"from": "br", "to": "approve"}
        ]
    })
}

#[test]
fn transform_branch_output() {
    let c = build(credit()).unwrap();
    let o = run(
        &c,
        json!({"income": 100, "debt": 80, "customer": "a"}),
        &NoEffects,
    );
    assert_eq!(o.output, Some(json!({"decision": "deny", "ratio": 0.8})));
    assert!(o.succeeded());
    let ids: Vec<&str> = o.trace.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["in", "ratio", "br", "deny"]);
    assert_eq!(o.trace[1].output, Some(json!({"ratio": 0.8})));
    assert_eq!(o.trace[2].branch.as_deref(), Some("deny"));
    let o = run(
        &c,
        json!({"income": 100, "debt": 10, "customer": "a"}),
        &NoEffects,
    );
    assert_eq!(o.output, Some(json!({"decision": "approve", "ratio": 0.1})));
    assert_eq!(o.trace[2].branch.as_deref(), Some("approve"));
}

#[test]
fn branch_conditions_tried_in_order() {
    let g = json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"x": "integer"}}},
            {"id": "b", "type": "branch"},
            {"id": "big", "type": "output", "config": {"fields": {"r": "'big'"}}},
            {"id": "mid", "type": "output", "config": {"fields": {"r": "'mid'"}}},
            {"id": "small", "type": "output", "config": {"fields": {"r": "'small'"}}}
        ],
        "edges": [
            {"from": "in", "to": "b"},
            {"from": "b", "to": "big", "when": "input.x > 100"},
            {"from": "b", "to": "mid", "when": "input.x > 10"},
            {"from": "b", "to": "small"}
        ]
    });
    let c = build(g).unwrap();
    for (x, r) in [(500, "big"), (50, "mid"), (5, "small")] {
        assert_eq!(
            run(&c, json!({"x": x}), &NoEffects).output,
            Some(json!({"r": r}))
        );
    }
}

#[test]
fn runtime_errors_fail_the_run_at_the_node() {
    let g = json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"x": "integer"}}},
            {"id": "t", "type": "transform", "config": {"assign": {"y": "input.x / 0"}}},
            {"id": "out", "type": "output", "config": {"fields": {"y": "y"}}}
        ],
        "edges": [{"from": "in", "to": "t"}, {"from": "t", "to": "out"}]
    });
    let c = build(g).unwrap();
    let o = run(&c, json!({"x": 1}), &NoEffects);
    assert!(!o.succeeded());
    assert!(o.error.as_deref().unwrap().contains("\"t\""), "{o:?}");
    assert!(o.trace.last().unwrap().error.is_some());
    assert_eq!(o.output, None);
}

#[test]
fn input_is_checked() {
    let c = build(credit()).unwrap();
    assert!(
        matches!(check_input(&c, &json!({"income": 1, "customer": "a"})), Err(PolicyError::Input(m)) if m.contains("input.debt"))
    );
    assert!(
        matches!(check_input(&c, &json!({"income": "x", "debt": 1, "customer": "a"})), Err(PolicyError::Input(m)) if m.contains("number"))
    );
    assert!(check_input(&c, &json!([1])).is_err());
    // Optional fields may be absent or null.
    assert!(check_input(
        &c,
        &json!({"income": 1, "debt": 1, "customer": "a", "vip": null})
    )
    .is_ok());
    assert!(check_input(
        &c,
        &json!({"income": 1, "debt": 1, "customer": "a", "vip": 3})
    )
    .is_err());
}

fn alloc_graph(a: u64, b: u64) -> Json {
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"customer": "string"}}},
            {"id": "split", "type": "allocation", "config": {"key": "input.customer", "weights": {"a": a, "b": b}}},
            {"id": "oa", "type": "output", "config": {"fields": {"arm": "'a'"}}},
            {"id": "ob", "type": "output", "config": {"fields": {"arm": "'b'"}}}
        ],
        "edges": [
            {"from": "in", "to": "split"},
            {"from": "split", "to": "oa", "arm": "a"},
            {"from": "split", "to": "ob", "arm": "b"}
        ]
    })
}

#[test]
fn allocation_is_deterministic_and_follows_weights() {
    for (a, b) in [(50, 50), (90, 10), (30, 70)] {
        let c = build(alloc_graph(a, b)).unwrap();
        let mut count_a = 0;
        for i in 0..10_000 {
            let input = json!({"customer": format!("customer-{i}")});
            let o = run(&c, input.clone(), &NoEffects);
            let again = run(&c, input, &NoEffects);
            assert_eq!(o.output, again.output, "same key, same arm");
            if o.output == Some(json!({"arm": "a"})) {
                count_a += 1;
            }
        }
        let share = count_a as f64 / 10_000.0;
        let want = a as f64 / (a + b) as f64;
        assert!(
            (share - want).abs() <= 0.02,
            "weights {a}/{b}: share of a {share}"
        );
    }
}

#[test]
fn version_pick_follows_weights() {
    let choices = [(3u32, 90u64), (4, 10)];
    let mut n4 = 0;
    for i in 0..10_000 {
        let k = format!("key{i}");
        let v = *pick("policy", &k, &choices).unwrap();
        assert_eq!(v, *pick("policy", &k, &choices).unwrap());
        if v == 4 {
            n4 += 1;
        }
    }
    assert!((n4 as f64 / 10_000.0 - 0.10).abs() <= 0.02, "{n4}");
    assert_eq!(pick::<u32>("p", "k", &[(1, 0)]), None);
}

fn lookup_graph(on_error: Json) -> Json {
    let mut cfg = json!({"source": "scores", "key": "input.customer", "as": "score"});
    if let Json::Object(m) = on_error {
        for (k, v) in m {
            cfg[k] = v;
        }
    }
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"customer": "string"}}},
            {"id": "l", "type": "lookup", "config": cfg},
            {"id": "web", "type": "lookup", "config": {"source": "web", "key": "input.customer", "as": "profile", "on_error": "skip"}},
            {"id": "out", "type": "output", "config": {"fields": {"score": "score", "profile": "profile"}}}
        ],
        "edges": [{"from": "in", "to": "l"}, {"from": "l", "to": "web"}, {"from": "web", "to": "out"}]
    })
}

#[test]
fn lookups_and_error_policies() {
    let fx = MapFx(
        [
            ("scores/alice".to_string(), json!({"value": 7})),
            ("web/alice".to_string(), json!("gold")),
        ]
        .into_iter()
        .collect(),
    );
    let c = build(lookup_graph(json!({}))).unwrap();
    let o = run(&c, json!({"customer": "alice"}), &fx);
    assert_eq!(
        o.output,
        Some(json!({"score": {"value": 7}, "profile": "gold"}))
    );
    // fail (the default policy)
    let o = run(&c, json!({"customer": "bob"}), &fx);
    assert!(!o.succeeded());
    assert!(o.error.unwrap().contains("\"l\""));
    // default
    let c = build(lookup_graph(json!({"on_error": "default", "default": 0}))).unwrap();
    let o = run(&c, json!({"customer": "bob"}), &fx);
    assert_eq!(o.output, Some(json!({"score": 0, "profile": null})));
    assert!(o.trace[1]
        .error
        .as_deref()
        .unwrap()
        .contains("default used"));
    // skip
    let c = build(lookup_graph(json!({"on_error": "skip"}))).unwrap();
    let o = run(&c, json!({"customer": "bob"}), &fx);
    assert_eq!(o.output, Some(json!({"score": null, "profile": null})));
}

fn vector_graph(cfg: Json) -> Json {
    let mut c = json!({"source": "emb", "key": "input.embedding", "as": "near"});
    if let Json::Object(m) = cfg {
        for (k, v) in m {
            c[k] = v;
        }
    }
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"embedding": "array"}}},
            {"id": "l", "type": "lookup", "config": c},
            {"id": "b", "type": "branch"},
            {"id": "hit", "type": "output", "config": {"fields": {"label": "near[0].payload.label"}}},
            {"id": "miss", "type": "output", "config": {"fields": {"label": "'none'"}}}
        ],
        "edges": [
            {"from": "in", "to": "l"}, {"from": "l", "to": "b"},
            {"from": "b", "to": "hit", "when": "size(near) > 0 && near[0].score > 0.5"},
            {"from": "b", "to": "miss"}
        ]
    })
}

#[test]
fn vector_lookups_validate_and_evaluate() {
    // The key reaches the effect as the JSON text of the query vector.
    let fx = MapFx(
        [(
            "emb/[1.0,0.0]".to_string(),
            json!([{"id": 1, "score": 0.9, "payload": {"label": "cat"}}]),
        )]
        .into_iter()
        .collect(),
    );
    let c = build(vector_graph(json!({}))).unwrap();
    let o = run(&c, json!({"embedding": [1.0, 0.0]}), &fx);
    assert_eq!(o.output, Some(json!({"label": "cat"})), "{o:?}");
    assert_eq!(o.trace[2].branch.as_deref(), Some("hit"));
    // A failing search follows on_error: fail, then default.
    let o = run(&c, json!({"embedding": [0.5]}), &fx);
    assert!(!o.succeeded());
    assert_eq!(o.trace[1].id, "l");
    let c = build(vector_graph(json!({"on_error": "default", "default": []}))).unwrap();
    let o = run(&c, json!({"embedding": [0.5]}), &fx);
    assert_eq!(o.output, Some(json!({"label": "none"})));
    assert!(o.trace[1]
        .error
        .as_deref()
        .unwrap()
        .contains("default used"));
    // The key expression is validated like any other.
    let (n, m) = invalid(vector_graph(json!({"key": "input.vec"})));
    assert_eq!(n, "l");
    assert!(m.contains("input.vec"), "{m}");
    let (n, m) = invalid(vector_graph(json!({"source": "nope"})));
    assert_eq!(n, "l");
    assert!(m.contains("\"nope\" does not exist"), "{m}");
}

#[test]
fn vector_query_shapes() {
    use crate::eval::vector_query;
    assert_eq!(vector_query("[1, 2.5]", "e"), Ok(vec![1.0, 2.5]));
    assert_eq!(vector_query(r#"{"e": [0.5], "x": 1}"#, "e"), Ok(vec![0.5]));
    assert!(vector_query(r#"{"x": [1]}"#, "e")
        .unwrap_err()
        .contains("no \"e\" field"));
    assert!(vector_query(r#"{"e": "abc"}"#, "e")
        .unwrap_err()
        .contains("must be a list"));
    assert!(vector_query(r#"[1, "a"]"#, "e")
        .unwrap_err()
        .contains("vector[1]"));
    assert!(vector_query("1e300", "e").is_err());
    assert!(vector_query("[1e300]", "e").unwrap_err().contains("finite"));
    assert!(vector_query("alice", "e").is_err());
}

/// Lookups that do not depend on each other are started together.
#[test]
fn independent_lookups_run_concurrently() {
    struct Barrier(std::sync::Arc<tokio_like::Count>);
    mod tokio_like {
        pub struct Count(pub std::sync::atomic::AtomicUsize);
    }
    impl Effects for Barrier {
        fn lookup<'a>(&'a self, _s: &'a str, _k: &'a str) -> BoxFuture<'a, Result<Json, String>> {
            Box::pin(async move {
                use std::sync::atomic::Ordering;
                self.0 .0.fetch_add(1, Ordering::SeqCst);
                // Completes only once both lookups have started: a
                // sequential evaluator would never see 2 here.
                let mut polls = 0;
                futures::future::poll_fn(|cx| {
                    polls += 1;
                    if self.0 .0.load(Ordering::SeqCst) >= 2 || polls > 1000 {
                        std::task::Poll::Ready(())
                    } else {
                        cx.waker().wake_by_ref();
                        std::task::Poll::Pending
                    }
                })
                .await;
                Ok(json!(self.0 .0.load(Ordering::SeqCst)))
            })
        }
    }
    let c = build(lookup_graph(json!({}))).unwrap();
    let fx = Barrier(std::sync::Arc::new(tokio_like::Count(0.into())));
    let o = run(&c, json!({"customer": "x"}), &fx);
    assert_eq!(o.output, Some(json!({"score": 2, "profile": 2})));
}

#[test]
fn validation_errors_name_the_node() {
    let base = credit();
    // cycle
    let mut g = base.clone();
    g["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"from": "br", "to": "ratio", "when": "false"}));
    let (n, m) = invalid(g);
    assert!(
        m.contains("cycle") && (n == "ratio" || n == "br"),
        "{n} {m}"
    );
    // two inputs
    let mut g = base.clone();
    g["nodes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "in2", "type": "input", "config": {"fields": {}}}));
    let (n, m) = invalid(g);
    assert_eq!(n, "in2");
    assert!(m.contains("exactly one input"), "{m}");
    // no input
    let g =
        json!({"nodes": [{"id": "o", "type": "output", "config": {"fields": {}}}], "edges": []});
    assert!(invalid(g).1.contains("exactly one input"));
    // unreachable
    let mut g = base.clone();
    g["nodes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "lost", "type": "output", "config": {"fields": {}}}));
    assert_eq!(
        invalid(g),
        (
            "lost".into(),
            "node is not reachable from the input node".into()
        )
    );
    // path not ending in an output
    let mut g = base.clone();
    g["nodes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "dead", "type": "transform", "config": {"assign": {"z": "1"}}}));
    g["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"from": "br", "to": "dead", "when": "false"}));
    let (n, m) = invalid(g);
    assert_eq!(n, "dead");
    assert!(m.contains("must end in an output"), "{m}");
    // branch without default
    let mut g = base.clone();
    g["edges"][3]["when"] = json!("true");
    let (n, m) = invalid(g);
    assert_eq!(n, "br");
    assert!(m.contains("without `when`"), "{m}");
    // bad config types
    let mut g = base.clone();
    g["nodes"][1]["config"] = json!({"assign": "x"});
    assert_eq!(invalid(g).0, "ratio");
    let mut g = base.clone();
    g["nodes"][0]["config"]["fields"]["income"] = json!("money");
    let (n, m) = invalid(g);
    assert_eq!(n, "in");
    assert!(m.contains("unknown type"), "{m}");
    let mut g = base.clone();
    g["nodes"][1]["config"]["extra"] = json!(1);
    assert!(invalid(g).1.contains("unknown config key"));
    // CEL that does not parse
    let mut g = base.clone();
    g["nodes"][1]["config"]["assign"]["ratio"] = json!("input.debt / ");
    let (n, m) = invalid(g);
    assert_eq!(n, "ratio");
    assert!(m.contains("does not parse"), "{m}");
    // unknown input field
    let mut g = base.clone();
    g["nodes"][1]["config"]["assign"]["ratio"] = json!("input.salary / 2.0");
    let (n, m) = invalid(g);
    assert_eq!(n, "ratio");
    assert!(m.contains("input.salary"), "{m}");
    // unknown name
    let mut g = base.clone();
    g["nodes"][3]["config"]["fields"]["x"] = json!("score + 1");
    let (n, m) = invalid(g);
    assert_eq!(n, "deny");
    assert!(m.contains("\"score\""), "{m}");
    // a name assigned on only one path is not in scope after the join
    let g = json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"x": "integer"}}},
            {"id": "b", "type": "branch"},
            {"id": "t", "type": "transform", "config": {"assign": {"y": "1"}}},
            {"id": "out", "type": "output", "config": {"fields": {"y": "y"}}}
        ],
        "edges": [{"from": "in", "to": "b"}, {"from": "b", "to": "t", "when": "input.x > 1"}, {"from": "b", "to": "out"}, {"from": "t", "to": "out"}]
    });
    let (n, m) = invalid(g);
    assert_eq!(n, "out");
    assert!(m.contains("every path"), "{m}");
    // comprehension variables are not unknown names
    let g = json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"xs": "array"}}},
            {"id": "out", "type": "output", "config": {"fields": {"all": "input.xs.all(v, v > 0)"}}}
        ],
        "edges": [{"from": "in", "to": "out"}]
    });
    let c = build(g).unwrap();
    assert_eq!(
        run(&c, json!({"xs": [1, 2]}), &NoEffects).output,
        Some(json!({"all": true}))
    );
    // unknown data source, vector source, enqueue without queues
    let mut g = lookup_graph(json!({}));
    g["nodes"][1]["config"]["source"] = json!("nope");
    let (n, m) = invalid(g);
    assert_eq!(n, "l");
    assert!(m.contains("does not exist"), "{m}");
    let mut g = base.clone();
    g["nodes"][1]["type"] = json!("enqueue");
    let (n, m) = invalid(g);
    assert_eq!(n, "ratio");
    assert_eq!(
        m,
        "enqueue nodes need the job queue module, not available in this build"
    );
    // unknown node type, duplicate id, edge to nowhere
    let mut g = base.clone();
    g["nodes"][1]["type"] = json!("loop");
    assert!(invalid(g).1.contains("unknown node type"));
    let mut g = base.clone();
    g["nodes"][2]["id"] = json!("ratio");
    assert_eq!(invalid(g).1, "duplicate node id");
    let mut g = base.clone();
    g["edges"][0]["to"] = json!("ghost");
    assert!(invalid(g).1.contains("ghost"));
    // allocation: arm without an edge, zero weights, edge with unknown arm
    let mut g = alloc_graph(50, 50);
    g["edges"][2]["arm"] = json!("c");
    let (n, m) = invalid(g);
    assert_eq!(n, "split");
    assert!(m.contains("arm"), "{m}");
    assert!(invalid(alloc_graph(0, 0)).1.contains("sum to 0"));
    // lookup on_error default without default
    let (n, m) = invalid(lookup_graph(json!({"on_error": "default"})));
    assert_eq!(n, "l");
    assert!(m.contains("config.default"), "{m}");
    // output with out-edges
    let mut g = base;
    g["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"from": "deny", "to": "approve"}));
    assert!(invalid(g).1.contains("terminal"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn batch_equals_one_by_one(inputs in prop::collection::vec((1u32..1000, 0u32..1000, "[a-z]{1,6}"), 1..50)) {
        let c = build(credit()).unwrap();
        let inputs: Vec<Json> = inputs.into_iter().map(|(i, d, cu)| json!({"income": i, "debt": d, "customer": cu})).collect();
        let f = |i: &Json| run(&c, i.clone(), &NoEffects);
        let batch = evaluate_batch(&inputs, f);
        prop_assert_eq!(batch.len(), inputs.len());
        for (i, b) in inputs.iter().zip(&batch) {
            let one = run(&c, i.clone(), &NoEffects);
            prop_assert_eq!(&one.output, &b.output);
            prop_assert_eq!(&one.error, &b.error);
            let path = |o: &Outcome| o.trace.iter().map(|t| (t.id.clone(), t.output.clone(), t.branch.clone())).collect::<Vec<_>>();
            prop_assert_eq!(path(&one), path(b));
        }
    }
}

// ---- the domain module ----

fn cmd_strategy() -> impl Strategy<Value = PolicyCommand> {
    let id = prop::sample::select(vec!["p1", "p2", "p3"]);
    prop_oneof![
        (
            id.clone(),
            prop::sample::select(vec!["a", "b", "c"]),
            0u64..100
        )
            .prop_map(|(id, n, t)| PolicyCommand::CreatePolicy {
                id: id.into(),
                name: n.into(),
                description: "d".into(),
                now_ms: t
            }),
        (
            id.clone(),
            prop::option::of("[a-z]{0,3}"),
            prop::option::of(prop::collection::vec((1u32..4, 0u64..5), 0..3)),
            0u64..100
        )
            .prop_map(|(id, d, a, t)| PolicyCommand::UpdatePolicy {
                id: id.into(),
                description: d,
                allocation: a,
                now_ms: t
            }),
        id.clone()
            .prop_map(|id| PolicyCommand::DeletePolicy { id: id.into() }),
        (id.clone(), "[a-z]{1,4}", any::<bool>(), 0u64..100).prop_map(|(id, g, a, t)| {
            PolicyCommand::CreateVersion {
                policy_id: id.into(),
                graph: g,
                created_by: "u".into(),
                activate: a,
                now_ms: t,
            }
        }),
        (id.clone(), 1u32..4, 0u64..100).prop_map(|(id, v, t)| PolicyCommand::ArchiveVersion {
            policy_id: id.into(),
            version: v,
            now_ms: t
        }),
        prop::sample::select(vec!["s1", "s2"]).prop_map(|n| PolicyCommand::CreateDataSource {
            source: DataSource {
                name: n.into(),
                kind: DataSourceKind::Kv {
                    key_template: "k/{key}".into()
                },
                created_ms: 1
            }
        }),
        (
            prop::sample::select(vec!["s2", "s3"]),
            1u32..10,
            any::<bool>()
        )
            .prop_map(|(n, k, with_payload)| PolicyCommand::CreateDataSource {
                source: DataSource {
                    name: n.into(),
                    kind: DataSourceKind::Vector {
                        collection: "c".into(),
                        k,
                        field: "embedding".into(),
                        filter: with_payload.then(|| r#"{"must":[]}"#.to_string()),
                        with_payload,
                    },
                    created_ms: 2
                }
            }),
        prop::sample::select(vec!["s1", "s2", "s3"])
            .prop_map(|n| PolicyCommand::DeleteDataSource { name: n.into() }),
        (
            (0u64..50, id, 1u32..3, any::<bool>()),
            (
                prop::option::of(prop::sample::select(vec!["k1", "k2"])),
                any::<bool>(),
                0u8..2
            )
        )
            .prop_map(|((t, p, v, ok), (key, once, input))| {
                let run = Run {
                    id: format!("{t:012x}00"),
                    policy_id: p.into(),
                    version: v,
                    status: if ok {
                        RunStatus::Succeeded
                    } else {
                        RunStatus::Running
                    },
                    run_key: key.map(str::to_string),
                    input: format!("{{\"n\":{input}}}"),
                    output: None,
                    trace: "[]".into(),
                    error: None,
                    created_ms: t,
                    finished_ms: None,
                };
                // Keyed runs recorded once (cluster version 6), or plainly
                // (a job's final write; runs from before version 6).
                if once {
                    PolicyCommand::PutRunOnce {
                        run,
                        ext: Default::default(),
                    }
                } else {
                    PolicyCommand::PutRun { run }
                }
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn apply_is_deterministic_and_snapshots_round_trip(cmds in prop::collection::vec(cmd_strategy(), 0..40), cut in 0usize..40) {
        let mut a = PolicyState::default();
        let mut b = PolicyState::default();
        let mut ra = Vec::new();
        for (i, c) in cmds.iter().enumerate() {
            if i == cut {
                b = PolicyState::restore(&b.snapshot().unwrap()).unwrap();
                prop_assert_eq!(&a, &b);
            }
            ra.push(a.apply(c.clone()));
            prop_assert_eq!(&ra[i], &b.apply(c.clone()));
        }
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(PolicyState::restore(&a.snapshot().unwrap()).unwrap(), a);
    }

    /// No command changes a version's graph once created.
    #[test]
    fn versions_are_immutable(cmds in prop::collection::vec(cmd_strategy(), 0..60)) {
        let mut s = PolicyState::default();
        let mut seen: BTreeMap<(String, u32), String> = BTreeMap::new();
        for c in cmds {
            // Deleting a policy deletes its versions; only a new policy
            // could reuse the id (ids are random in practice).
            if let PolicyCommand::DeletePolicy { id } = &c {
                seen.retain(|(p, _), _| p != id);
            }
            s.apply(c);
            for pid in ["p1", "p2", "p3"] {
                if let PolicyQueryResult::Versions(vs) = s.query(&PolicyQuery::Versions { policy_id: pid.into() }) {
                    for v in vs {
                        let g = seen.entry((pid.into(), v.version)).or_insert_with(|| v.graph.clone());
                        prop_assert_eq!(&*g, &v.graph);
                    }
                }
            }
        }
    }
}

#[test]
fn policies_versions_allocation_and_runs() {
    let mut s = PolicyState::default();
    let p = |r| match r {
        PolicyResponse::Policy(p) => p,
        other => panic!("{other:?}"),
    };
    let pol = p(s.apply(PolicyCommand::CreatePolicy {
        id: "p".into(),
        name: "credit".into(),
        description: "".into(),
        now_ms: 5,
    }));
    assert_eq!(pol.created_ms, 5);
    assert!(matches!(
        s.apply(PolicyCommand::CreatePolicy {
            id: "q".into(),
            name: "credit".into(),
            description: "".into(),
            now_ms: 6
        }),
        PolicyResponse::Conflict(_)
    ));
    for i in 0..2 {
        let r = s.apply(PolicyCommand::CreateVersion {
            policy_id: "p".into(),
            graph: "{}".into(),
            created_by: "me".into(),
            activate: i == 0,
            now_ms: 7,
        });
        assert!(
            matches!(r, PolicyResponse::Version(ref v) if v.version == i + 1),
            "{r:?}"
        );
    }
    // v2 was not activated: v1 keeps the traffic.
    let pol = match s.query(&PolicyQuery::Policy { id: "p".into() }) {
        PolicyQueryResult::Policy(Some(p)) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(pol.allocation, vec![(1, 100)]);
    assert!(matches!(
        s.apply(PolicyCommand::UpdatePolicy {
            id: "p".into(),
            description: None,
            allocation: Some(vec![(9, 1)]),
            now_ms: 8
        }),
        PolicyResponse::Rejected(_)
    ));
    let pol = p(s.apply(PolicyCommand::UpdatePolicy {
        id: "p".into(),
        description: Some("x".into()),
        allocation: Some(vec![(1, 90), (2, 10)]),
        now_ms: 9,
    }));
    assert_eq!((pol.description.as_str(), pol.updated_ms), ("x", 9));
    assert!(matches!(
        s.apply(PolicyCommand::ArchiveVersion {
            policy_id: "p".into(),
            version: 2,
            now_ms: 10
        }),
        PolicyResponse::Conflict(_)
    ));
    // runs: newest first, filters, cursor
    for t in 0..10u64 {
        let run = Run {
            id: format!("{t:012x}ab"),
            policy_id: "p".into(),
            version: (t % 2 + 1) as u32,
            status: RunStatus::Succeeded,
            run_key: None,
            input: "{}".into(),
            output: None,
            trace: "[]".into(),
            error: None,
            created_ms: t,
            finished_ms: Some(t),
        };
        s.apply(PolicyCommand::PutRun { run });
    }
    let f = RunFilter {
        policy_id: Some("p".into()),
        version: Some(1),
        status: None,
        before: None,
        limit: 3,
    };
    let page = s.list_runs(&f);
    assert_eq!(
        page.iter().map(|r| r.created_ms).collect::<Vec<_>>(),
        [8, 6, 4]
    );
    let page2 = s.list_runs(&RunFilter {
        before: Some(page[2].id.clone()),
        ..f
    });
    assert_eq!(
        page2.iter().map(|r| r.created_ms).collect::<Vec<_>>(),
        [2, 0]
    );
    // A finished run is not overwritten by a late "running" record.
    let mut late = page2[0].clone();
    late.status = RunStatus::Running;
    s.apply(PolicyCommand::PutRun { run: late.clone() });
    assert!(
        matches!(s.query(&PolicyQuery::Run { id: late.id }), PolicyQueryResult::Run(Some(r)) if r.status == RunStatus::Succeeded)
    );
    assert_eq!(
        s.apply(PolicyCommand::DeletePolicy { id: "p".into() }),
        PolicyResponse::Deleted
    );
    assert_eq!(
        s.query(&PolicyQuery::Versions {
            policy_id: "p".into()
        }),
        PolicyQueryResult::Versions(vec![])
    );
}

struct QueueFx(std::sync::Mutex<Vec<(String, String, Json)>>);

impl Effects for QueueFx {
    fn lookup<'a>(&'a self, source: &'a str, _key: &'a str) -> BoxFuture<'a, Result<Json, String>> {
        Box::pin(async move { Err(format!("{source}: none")) })
    }

    fn enqueue<'a>(
        &'a self,
        _node: &'a str,
        queue: &'a str,
        kind: &'a str,
        params: Json,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            let mut v = self.0.lock().map_err(|e| e.to_string())?;
            v.push((queue.to_string(), kind.to_string(), params));
            Ok(Some(format!("job-{}", v.len())))
        })
    }
}

fn enqueue_graph() -> Json {
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"customer": "string", "amount": "number"}}},
            {"id": "review", "type": "enqueue", "config": {
                "queue": "reviews", "kind": "review.manual", "as": "job",
                "params": {"customer": "input.customer", "double": "input.amount * 2.0"}}},
            {"id": "out", "type": "output", "config": {"fields": {"decision": "'review'", "job": "job"}}}
        ],
        "edges": [{"from": "in", "to": "review"}, {"from": "review", "to": "out"}]
    })
}

#[test]
fn enqueue_node_submits_and_binds_the_job_id() {
    let mut cat = catalog();
    cat.queues = Some(["reviews".to_string()].into_iter().collect());
    let c = compile(&parse_graph(&enqueue_graph()).unwrap(), &cat).unwrap();
    assert_eq!(c.queues().into_iter().collect::<Vec<_>>(), ["reviews"]);
    let fx = QueueFx(Default::default());
    let o = run(&c, json!({"customer": "c1", "amount": 21}), &fx);
    assert!(o.succeeded(), "{o:?}");
    assert_eq!(
        o.output,
        Some(json!({"decision": "review", "job": "job-1"}))
    );
    assert_eq!(o.trace[1].kind, "enqueue");
    assert_eq!(
        o.trace[1].output.as_ref().unwrap()["job_id"],
        json!("job-1")
    );
    let sent = fx.0.lock().unwrap().clone();
    assert_eq!(
        sent,
        vec![(
            "reviews".to_string(),
            "review.manual".to_string(),
            json!({"customer": "c1", "double": 42.0})
        )]
    );
    // Effects that cannot enqueue fail the run at that node.
    let o = run(&c, json!({"customer": "c1", "amount": 1}), &NoEffects);
    assert!(o.error.unwrap().contains("\"review\""));
    // An unknown queue, or a bad config, names the node.
    let mut g = enqueue_graph();
    g["nodes"][1]["config"]["queue"] = json!("nope");
    match compile(&parse_graph(&g).unwrap(), &cat) {
        Err(PolicyError::Invalid { node, message }) => {
            assert_eq!(node, "review");
            assert!(message.contains("\"nope\" does not exist"), "{message}");
        }
        other => panic!("expected invalid, got {other:?}"),
    }
    let mut g = enqueue_graph();
    g["nodes"][1]["config"]["params"]["x"] = json!("unknown_name");
    match compile(&parse_graph(&g).unwrap(), &cat) {
        Err(PolicyError::Invalid { node, .. }) => assert_eq!(node, "review"),
        other => panic!("expected invalid, got {other:?}"),
    }
}
