//! The evaluator of compiled plans ([`crate::walk`]) against the one it
//! replaced ([`crate::reference`]): on random valid graphs (every node
//! type, nested branches and allocations, lookups that fail under each
//! `on_error`, enqueues that fail) and random inputs, both give the same
//! output, error and trace, but for the trace's timings.

use crate::eval::{check_input, evaluate, Effects, Outcome};
use crate::graph::{compile, parse_graph, Catalog};
use futures::future::BoxFuture;
use proptest::prelude::*;
use serde_json::{json, Value as Json};
use std::time::Duration;

/// A deterministic source of choices (splitmix64): the graph a seed gives
/// is the same every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const VARS: &[&str] = &["v0", "v1", "v2", "v3", "v4"];

/// A CEL expression over `input` and the names in `scope`. Mostly well
/// typed (of the type `ty` asks for: 0 int, 1 double, 2 bool, 3 string,
/// 4 list) so that most runs get far; sometimes anything, so that type
/// errors and missing keys are compared too.
fn expr(r: &mut Rng, scope: &[String], depth: usize) -> String {
    let ty = r.below(5);
    typed(r, scope, depth, ty)
}

fn typed(r: &mut Rng, scope: &[String], depth: usize, ty: usize) -> String {
    if r.below(10) == 0 {
        return chaos(r, scope, depth);
    }
    let d = depth.saturating_sub(1);
    let leaf = depth == 0 || r.below(3) == 0;
    let t = |r: &mut Rng, ty| typed(r, scope, d, ty);
    match (ty, leaf) {
        (0, true) => r.pick(&["input.i", "1", "0", "7"]).to_string(),
        (0, false) => match r.below(6) {
            0 => format!("({}) + ({})", t(r, 0), t(r, 0)),
            1 => format!("({}) * ({})", t(r, 0), t(r, 0)),
            2 => format!("({}) / ({})", t(r, 0), t(r, 0)),
            3 => format!("size({})", t(r, 4)),
            4 => format!("int({})", t(r, 1)),
            _ => format!("({}) ? ({}) : ({})", t(r, 2), t(r, 0), t(r, 0)),
        },
        (1, true) => r.pick(&["input.n", "2.5", "0.0"]).to_string(),
        (1, false) => match r.below(5) {
            0 => format!("({}) + ({})", t(r, 1), t(r, 1)),
            1 => format!("({}) * ({})", t(r, 1), t(r, 1)),
            2 => format!("({}) / ({})", t(r, 1), t(r, 1)),
            3 => format!("double({})", t(r, 0)),
            _ => format!("({}) ? ({}) : ({})", t(r, 2), t(r, 1), t(r, 1)),
        },
        (2, true) => r.pick(&["input.b", "true", "has(input.o)"]).to_string(),
        (2, false) => match r.below(8) {
            0 => format!("({}) > ({})", t(r, 0), t(r, 0)),
            1 => format!("({}) < ({})", t(r, 1), t(r, 1)),
            2 => format!("({}) == ({})", t(r, 3), t(r, 3)),
            3 => format!("({}) && ({})", t(r, 2), t(r, 2)),
            4 => format!("({}) || !({})", t(r, 2), t(r, 2)),
            5 => format!("({}).exists(e, e > ({}))", t(r, 4), t(r, 0)),
            6 => format!("({}).all(e, e != ({}))", t(r, 4), t(r, 0)),
            _ => format!("({}) in ({})", t(r, 0), t(r, 4)),
        },
        (3, true) => r.pick(&["input.s", "'a'", "''"]).to_string(),
        (3, false) => match r.below(3) {
            0 => format!("({}) + ({})", t(r, 3), t(r, 3)),
            1 => format!("string({})", t(r, 0)),
            _ => format!("string({})", t(r, 1)),
        },
        (_, true) => r.pick(&["input.xs", "[1, 2, 3]", "[]"]).to_string(),
        (_, false) => match r.below(3) {
            0 => format!("({}).map(e, e * 2)", t(r, 4)),
            1 => format!("({}).filter(e, e > 1)", t(r, 4)),
            _ => format!("({}) + ({})", t(r, 4), t(r, 4)),
        },
    }
}

/// Anything: a name of the scope (of whatever type it got), or an
/// operator applied to whatever comes.
fn chaos(r: &mut Rng, scope: &[String], depth: usize) -> String {
    if depth == 0 || r.below(2) == 0 {
        let mut atoms = vec!["input.o", "null", "{'k': 1}", "{'k': 1}.k", "type(input.s)"];
        atoms.extend(scope.iter().map(String::as_str));
        return r.pick(&atoms).to_string();
    }
    let a = expr(r, scope, depth - 1);
    let b = expr(r, scope, depth - 1);
    match r.below(8) {
        0 => format!("({a}) + ({b})"),
        1 => format!("({a}) - ({b})"),
        2 => format!("({a}) % ({b})"),
        3 => format!("({a}) == ({b})"),
        4 => format!("type({a})"),
        5 => format!("size({a})"),
        6 => format!("[({a}), ({b})][0]"),
        _ => format!("({a}) ? ({b}) : null"),
    }
}

struct Gen {
    r: Rng,
    nodes: Vec<Json>,
    edges: Vec<Json>,
}

impl Gen {
    fn id(&self) -> String {
        format!("n{}", self.nodes.len())
    }

    /// Appends a node reached from `from` (with `edge` fields) and what
    /// follows it, down to outputs; `scope` is what is assigned on the way.
    fn node(&mut self, from: &str, edge: Json, scope: &[String], left: usize) {
        let id = self.id();
        let mut e = json!({"from": from, "to": id});
        if let (Some(e), Some(extra)) = (e.as_object_mut(), edge.as_object()) {
            e.extend(extra.clone());
        }
        self.edges.push(e);
        let kind = if left == 0 { 0 } else { self.r.below(7) };
        let mut scope = scope.to_vec();
        match kind {
            1 | 2 => {
                // Every assignment reads the scope the node starts with.
                let before = scope.clone();
                let mut assign = serde_json::Map::new();
                for _ in 0..=self.r.below(2) {
                    let name = self.r.pick(VARS).to_string();
                    assign.insert(name.clone(), json!(expr(&mut self.r, &before, 3)));
                    if !scope.contains(&name) {
                        scope.push(name);
                    }
                }
                self.nodes
                    .push(json!({"id": id, "type": "transform", "config": {"assign": assign}}));
                self.node(&id, json!({}), &scope, left - 1);
            }
            3 => {
                self.nodes.push(json!({"id": id, "type": "branch"}));
                for _ in 0..=self.r.below(2) {
                    let when = expr(&mut self.r, &scope, 2);
                    self.node(&id, json!({"when": when}), &scope, left / 2);
                }
                self.node(&id, json!({}), &scope, left / 2);
            }
            4 => {
                let key = expr(&mut self.r, &scope, 2);
                let (a, b) = (self.r.below(3), 1 + self.r.below(3));
                self.nodes.push(json!({"id": id, "type": "allocation",
                    "config": {"key": key, "weights": {"a": a, "b": b}}}));
                self.node(&id, json!({"arm": "a"}), &scope, left / 2);
                self.node(&id, json!({"arm": "b"}), &scope, left / 2);
            }
            5 => {
                let name = self.r.pick(VARS).to_string();
                let mut cfg =
                    json!({"source": "scores", "key": expr(&mut self.r, &scope, 2), "as": name});
                match self.r.below(3) {
                    0 => cfg["on_error"] = json!("skip"),
                    1 => {
                        cfg["on_error"] = json!("default");
                        cfg["default"] = json!({"d": 1});
                    }
                    _ => {}
                }
                self.nodes
                    .push(json!({"id": id, "type": "lookup", "config": cfg}));
                if !scope.contains(&name) {
                    scope.push(name);
                }
                self.node(&id, json!({}), &scope, left - 1);
            }
            6 => {
                let mut cfg = json!({"queue": "q", "kind": "k",
                    "params": {"p": expr(&mut self.r, &scope, 2)}});
                if self.r.below(2) == 0 {
                    let name = self.r.pick(VARS).to_string();
                    cfg["as"] = json!(name);
                    if !scope.contains(&name) {
                        scope.push(name);
                    }
                }
                self.nodes
                    .push(json!({"id": id, "type": "enqueue", "config": cfg}));
                self.node(&id, json!({}), &scope, left - 1);
            }
            _ => {
                let mut fields = serde_json::Map::new();
                for f in 0..=self.r.below(2) {
                    fields.insert(format!("f{f}"), json!(expr(&mut self.r, &scope, 3)));
                }
                self.nodes
                    .push(json!({"id": id, "type": "output", "config": {"fields": fields}}));
            }
        }
    }
}

fn graph(seed: u64) -> Json {
    let mut g = Gen {
        r: Rng(seed),
        nodes: vec![json!({"id": "in", "type": "input", "config": {"fields": {
            "n": "number", "i": "integer", "s": "string", "b": "bool",
            "o": "integer?", "xs": "array"}}})],
        edges: Vec::new(),
    };
    g.node("in", json!({}), &[], 8);
    json!({"nodes": g.nodes, "edges": g.edges})
}

/// Lookups that answer some keys, fail others; enqueues likewise. Both
/// evaluators see the same answers for the same calls.
struct Fx;

fn digest(s: &str) -> u64 {
    orrery_types::stable_hash(s.as_bytes())
}

impl Effects for Fx {
    fn lookup<'a>(&'a self, source: &'a str, key: &'a str) -> BoxFuture<'a, Result<Json, String>> {
        Box::pin(async move {
            match digest(key) % 3 {
                0 => Err(format!("{source}: no value for {key:?}")),
                1 => Ok(json!(key.len())),
                // One entry: a CEL map iterates in the order of a `HashMap`
                // seeded per instance, which differs between two
                // evaluations (either evaluator's), and shows in errors
                // that print a map or a list made from one. Every map the
                // generator makes has one entry for that reason.
                _ => Ok(json!({"key": key})),
            }
        })
    }

    fn enqueue<'a>(
        &'a self,
        node: &'a str,
        _queue: &'a str,
        _kind: &'a str,
        params: Json,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            let p = params.to_string();
            match digest(&p) % 4 {
                0 => Err(format!("queue full for {p}")),
                1 => Ok(None),
                _ => Ok(Some(format!("job-{node}-{}", p.len()))),
            }
        })
    }
}

fn input() -> impl Strategy<Value = Json> {
    (
        prop_oneof![Just(0.0), -1e3..1e3f64],
        prop_oneof![Just(0i64), -5..5i64, Just(i64::MAX)],
        "[a-c]{0,3}",
        any::<bool>(),
        prop_oneof![
            Just(None),
            Just(Some(Json::Null)),
            (0..3i64).prop_map(|i| Some(json!(i)))
        ],
        prop::collection::vec(-2..4i64, 0..4),
    )
        .prop_map(|(n, i, s, b, o, xs)| {
            let mut v = json!({"n": n, "i": i, "s": s, "b": b, "xs": xs});
            if let Some(o) = o {
                v["o"] = o;
            }
            v
        })
}

/// An outcome without what depends on the clock.
fn timeless(mut o: Outcome) -> Outcome {
    for t in &mut o.trace {
        t.started = 0;
        t.duration_us = 0;
    }
    o
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn compiled_evaluator_matches_the_reference(
        seed in any::<u64>(),
        inputs in prop::collection::vec(input(), 1..5),
    ) {
        let g = graph(seed);
        let cat = Catalog {
            data_sources: [("scores".to_string(), "kv".to_string())].into_iter().collect(),
            queues: Some(["q".to_string()].into_iter().collect()),
        };
        let c = match compile(&parse_graph(&g).unwrap(), &cat) {
            Ok(c) => c,
            // Should not happen (scope is tracked per path); not a failure
            // of the evaluator if it does.
            Err(e) => {
                prop_assert!(matches!(e, crate::PolicyError::Invalid { .. }), "{e:?} for {g}");
                return Ok(());
            }
        };
        let budget = Duration::from_secs(30);
        for i in &inputs {
            let v = check_input(&c, i).unwrap();
            let new = futures::executor::block_on(evaluate(&c, v.clone(), &Fx, budget));
            let old = futures::executor::block_on(crate::reference::evaluate(&c, v, &Fx, budget));
            prop_assert_eq!(timeless(new), timeless(old), "graph {} input {}", g, i);
        }
    }
}

/// The generator makes graphs of every node type that compile, and runs
/// that end in every way (so that the property test compares them all).
#[test]
fn the_generator_covers_every_node_type_and_ending() {
    let cat = Catalog {
        data_sources: [("scores".to_string(), "kv".to_string())]
            .into_iter()
            .collect(),
        queues: Some(["q".to_string()].into_iter().collect()),
    };
    let mut kinds = std::collections::BTreeSet::new();
    let (mut compiled, mut ok, mut failed) = (0, 0, 0);
    let input = json!({"n": 1.5, "i": 2, "s": "ab", "b": true, "xs": [1, 2]});
    for seed in 0..200 {
        let g = graph(seed);
        let Ok(c) = compile(&parse_graph(&g).unwrap(), &cat) else {
            continue;
        };
        compiled += 1;
        for n in &c.nodes {
            kinds.insert(n.kind_name);
        }
        let v = check_input(&c, &input).unwrap();
        let o = futures::executor::block_on(evaluate(&c, v, &Fx, Duration::from_secs(30)));
        if o.succeeded() {
            ok += 1;
        } else {
            failed += 1;
        }
    }
    assert!(compiled >= 150, "only {compiled} of 200 graphs compile");
    assert_eq!(kinds.len(), 7, "{kinds:?}");
    assert!(ok >= 20 && failed >= 20, "{ok} succeeded, {failed} failed");
}
