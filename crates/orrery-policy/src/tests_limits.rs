//! The limits and the deadline: what a costly or oversized graph meets.

use crate::eval::{check_input, evaluate, NoEffects, Outcome};
use crate::graph::{compile, parse_graph, Catalog, Compiled};
use crate::{limits, PolicyError};
use serde_json::{json, Value as Json};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn one_transform(expr: &str) -> Json {
    json!({
        "nodes": [
            {"id": "in", "type": "input", "config": {"fields": {"xs": "array"}}},
            {"id": "t", "type": "transform", "config": {"assign": {"r": expr}}},
            {"id": "out", "type": "output", "config": {"fields": {"r": "r"}}}
        ],
        "edges": [{"from": "in", "to": "t"}, {"from": "t", "to": "out"}]
    })
}

fn build(g: Json) -> Result<Arc<Compiled>, PolicyError> {
    let cat = Catalog {
        queues: Some(["q".to_string()].into_iter().collect()),
        ..Catalog::default()
    };
    compile(&parse_graph(&g)?, &cat)
}

fn run(c: &Arc<Compiled>, input: Json, budget: Duration) -> Outcome {
    let v = check_input(c, &input).unwrap();
    futures::executor::block_on(evaluate(c, v, &NoEffects, budget))
}

/// Nested comprehensions over 3000 items: 9 million steps, seconds of CPU.
const COSTLY: &str = "input.xs.map(x, input.xs.filter(y, y % 7 == x % 7).size()).size()";

#[test]
fn a_costly_expression_stops_at_its_deadline() {
    let c = build(one_transform(COSTLY)).unwrap();
    let xs: Vec<i64> = (0..3000).collect();
    let t = Instant::now();
    let o = run(&c, json!({ "xs": xs }), Duration::from_millis(100));
    let took = t.elapsed();
    assert!(o.timed_out, "{o:?}");
    assert!(
        o.error
            .as_deref()
            .unwrap_or("")
            .starts_with("evaluation_timeout"),
        "{o:?}"
    );
    // Interrupted inside the expression, not after it finished.
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    // The same expression on a small list finishes well within it.
    let o = run(&c, json!({"xs": [1, 2, 3]}), Duration::from_millis(1000));
    assert_eq!(o.output, Some(json!({"r": 3})), "{o:?}");
}

#[test]
fn every_macro_checks_the_deadline() {
    let xs: Vec<i64> = (0..3000).collect();
    for e in [
        "input.xs.all(x, input.xs.all(y, x + y >= 0))",
        "input.xs.exists(x, input.xs.exists(y, x + y < 0))",
        "input.xs.exists_one(x, input.xs.exists_one(y, x + y < 0))",
        "input.xs.map(x, input.xs.map(y, x + y)).size()",
        "input.xs.filter(x, input.xs.filter(y, x == y).size() > 5).size()",
        "input.xs.map(x, x > 0, input.xs.map(y, y * x)).size()",
    ] {
        let c = build(one_transform(e)).unwrap();
        let t = Instant::now();
        let o = run(&c, json!({ "xs": xs }), Duration::from_millis(50));
        assert!(o.timed_out, "{e}: {o:?}");
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{e}: {:?}",
            t.elapsed()
        );
        // Still right where there is time.
        let o = run(&c, json!({"xs": [1, 2]}), Duration::from_secs(5));
        assert!(o.succeeded(), "{e}: {o:?}");
    }
}

#[test]
fn the_deadline_is_checked_between_nodes() {
    let c = build(one_transform("1")).unwrap();
    let o = run(&c, json!({"xs": []}), Duration::ZERO);
    assert!(o.timed_out);
    assert!(o.error.unwrap().contains("node \"in\""));
}

#[test]
fn sizes_are_limited() {
    let long = format!("1{}", " + 1".repeat(limits::MAX_EXPR_BYTES / 4));
    assert!(matches!(
        build(one_transform(&long)),
        Err(PolicyError::TooLarge(_))
    ));
    let nested = "input.xs.map(a, input.xs.map(b, input.xs.map(c, a + b + c)))";
    match build(one_transform(nested)) {
        Err(PolicyError::TooLarge(m)) => assert!(m.contains("nested"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Deeper than the evaluator may recurse, not so deep that the parser
    // refuses it first: parsed (on its big stack), then refused.
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    match build(one_transform(&deep)) {
        Err(PolicyError::TooLarge(m)) => assert!(m.contains("levels deep"), "{m}"),
        other => panic!("{other:?}"),
    }
    // As deep as the parser goes: an error, not a stack overflow.
    let deepest = format!("{}1{}", "(".repeat(200), ")".repeat(200));
    assert!(build(one_transform(&deepest)).is_err());
    let mut nodes = vec![json!({"id": "in", "type": "input", "config": {"fields": {}}})];
    let mut edges = Vec::new();
    for i in 0..limits::MAX_NODES {
        nodes.push(
            json!({"id": format!("t{i}"), "type": "transform", "config": {"assign": {"a": "1"}}}),
        );
        let from = if i == 0 {
            "in".to_string()
        } else {
            format!("t{}", i - 1)
        };
        edges.push(json!({"from": from, "to": format!("t{i}")}));
    }
    let g = json!({"nodes": nodes, "edges": edges});
    assert!(matches!(build(g), Err(PolicyError::TooLarge(_))));
    let c = build(one_transform("1")).unwrap();
    let big = "x".repeat(limits::MAX_INPUT_BYTES);
    assert!(matches!(
        check_input(&c, &json!({"xs": [big]})),
        Err(PolicyError::TooLarge(_))
    ));
}

#[test]
fn graphs_carry_their_deadline() {
    let mut g = one_transform("1");
    g["deadline_ms"] = json!(250);
    assert_eq!(build(g.clone()).unwrap().deadline_ms, Some(250));
    g["deadline_ms"] = json!(0);
    assert!(build(g).is_err());
}

#[test]
fn command_jobs_cannot_be_enqueued() {
    for kind in ["command", "COMMAND", " command"] {
        let g = json!({
            "nodes": [
                {"id": "in", "type": "input", "config": {"fields": {}}},
                {"id": "e", "type": "enqueue", "config": {"queue": "q", "kind": kind, "params": {"argv": "['id']"}}},
                {"id": "out", "type": "output", "config": {"fields": {"ok": "true"}}}
            ],
            "edges": [{"from": "in", "to": "e"}, {"from": "e", "to": "out"}]
        });
        match build(g) {
            Err(PolicyError::Invalid { node, message }) => {
                assert_eq!(node, "e");
                assert!(message.contains("command"), "{message}");
            }
            other => panic!("{kind}: {other:?}"),
        }
    }
}
