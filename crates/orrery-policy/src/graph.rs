//! The graph format, its validation and its compilation.
//!
//! A version's graph is validated once, when the version is created, and
//! compiled (CEL parsed, nodes ordered, edges resolved to indices) once per
//! process; evaluation then never looks a name up in a string map.

use crate::{limits, PolicyError};
use cel::common::ast::Expr;
use cel::Program;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// `{nodes: [{id, type, config}], edges: [{from, to, when?, arm?}]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Graph {
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub edges: Vec<Edge>,
    /// How long one run of this graph may evaluate, in ms (see
    /// [`crate::limits`]); the node's default when absent. Part of the
    /// graph so that it is stored with the version it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub config: Json,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
}

/// The type of an input field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Number,
    Integer,
    String,
    Bool,
    Object,
    Array,
}

impl FieldType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "number" => FieldType::Number,
            "integer" => FieldType::Integer,
            "string" => FieldType::String,
            "bool" => FieldType::Bool,
            "object" => FieldType::Object,
            "array" => FieldType::Array,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FieldType::Number => "number",
            FieldType::Integer => "integer",
            FieldType::String => "string",
            FieldType::Bool => "bool",
            FieldType::Object => "object",
            FieldType::Array => "array",
        }
    }
}

/// What a lookup does when its data source fails.
#[derive(Clone, Debug, PartialEq)]
pub enum OnError {
    Fail,
    /// The lookup's name is bound to this value.
    Default(Json),
    /// The lookup's name is bound to `null`.
    Skip,
}

/// What validation needs to know about the rest of the cluster.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// Data source name -> kind (`kv`, `http`, `vector`).
    pub data_sources: BTreeMap<String, String>,
    /// Queue names, when the job queue module is present; `None` when it is not.
    pub queues: Option<BTreeSet<String>>,
}

/// A CEL expression with its source, for traces and errors.
pub struct Expression {
    pub source: String,
    pub program: Program,
    /// The program's tree with a deadline check in every comprehension
    /// iteration ([`crate::limits::instrument`]): what is evaluated.
    pub checked: cel::IdedExpr,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

#[derive(Debug)]
pub enum CompiledKind {
    Input {
        fields: Vec<(String, FieldType, bool)>,
    },
    Transform {
        assign: Vec<(String, Expression)>,
    },
    /// Conditions in edge order, then the default target.
    Branch {
        conditions: Vec<(Expression, usize)>,
        default: usize,
    },
    /// Cumulative weights: an arm is chosen where the bucket falls.
    Allocation {
        key: Expression,
        arms: Vec<(String, u64, usize)>,
        total: u64,
    },
    Lookup {
        source: String,
        key: Expression,
        name: String,
        on_error: OnError,
    },
    /// Submits a job; `name`, when given, is bound to the job id.
    Enqueue {
        queue: String,
        kind: String,
        params: Vec<(String, Expression)>,
        name: Option<String>,
    },
    Output {
        fields: Vec<(String, Expression)>,
    },
    /// Rows of a condition and the values of `columns`, in row order (see
    /// [`crate::graph_nodes`]).
    DecisionTable {
        /// `collect` (every matching row) rather than `first`.
        collect: bool,
        columns: Vec<String>,
        rows: Vec<(Expression, Vec<Expression>)>,
        /// The values when no row matches, in column order.
        default: Option<Vec<Expression>>,
    },
    /// Ends the run with a status and an optional reason.
    Terminate {
        status: String,
        reason: Option<Expression>,
    },
    /// Runs another policy on a mapped input; `name` is bound to the result.
    SubPolicy {
        policy: String,
        version: Option<u32>,
        input: Vec<(String, Expression)>,
        name: String,
    },
}

#[derive(Debug)]
pub struct CompiledNode {
    pub id: String,
    pub kind_name: &'static str,
    pub kind: CompiledKind,
    /// The single successor of input, transform and lookup nodes.
    pub next: Option<usize>,
}

/// A validated, compiled graph: immutable, shared by every evaluation of
/// its version.
#[derive(Debug)]
pub struct Compiled {
    pub nodes: Vec<CompiledNode>,
    pub input: usize,
    /// The graph's own deadline, if it names one.
    pub deadline_ms: Option<u64>,
    /// Slots and lookup groups: what a run needs beyond the nodes.
    pub(crate) plan: crate::plan::Plan,
}

pub(crate) fn err(node: &str, msg: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        node: node.to_string(),
        message: msg.into(),
    }
}

pub(crate) fn obj<'a>(
    node: &str,
    cfg: &'a Json,
    key: &str,
) -> Result<&'a serde_json::Map<String, Json>, PolicyError> {
    cfg.get(key)
        .and_then(Json::as_object)
        .ok_or_else(|| err(node, format!("config.{key} must be an object")))
}

pub(crate) fn string<'a>(node: &str, cfg: &'a Json, key: &str) -> Result<&'a str, PolicyError> {
    cfg.get(key)
        .and_then(Json::as_str)
        .ok_or_else(|| err(node, format!("config.{key} must be a string")))
}

pub(crate) fn check_keys(node: &str, cfg: &Json, allowed: &[&str]) -> Result<(), PolicyError> {
    match cfg {
        Json::Object(m) => {
            for k in m.keys() {
                if !allowed.contains(&k.as_str()) {
                    return Err(err(
                        node,
                        format!("unknown config key {k:?} (allowed: {})", allowed.join(", ")),
                    ));
                }
            }
            Ok(())
        }
        _ => Err(err(node, "config must be an object")),
    }
}

pub(crate) fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        && !RESERVED.contains(&s)
}

const RESERVED: &[&str] = &[
    "input",
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// Names an expression reads: root identifiers and `input.<field>` selects.
#[derive(Default)]
struct Refs {
    idents: BTreeSet<String>,
    input_fields: BTreeSet<String>,
}

fn collect(e: &Expr, bound: &mut Vec<String>, r: &mut Refs) {
    match e {
        Expr::Ident(n) => {
            if !bound.iter().any(|b| b == n) {
                r.idents.insert(n.clone());
            }
        }
        Expr::Select(s) => {
            if let Expr::Ident(n) = &s.operand.expr {
                if n == "input" && !bound.iter().any(|b| b == n) {
                    r.input_fields.insert(s.field.clone());
                }
            }
            collect(&s.operand.expr, bound, r);
        }
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                collect(&t.expr, bound, r);
            }
            for a in &c.args {
                collect(&a.expr, bound, r);
            }
        }
        Expr::List(l) => {
            for x in &l.elements {
                collect(&x.expr, bound, r);
            }
        }
        Expr::Map(m) => {
            for x in &m.entries {
                collect_entry(&x.expr, bound, r);
            }
        }
        Expr::Struct(s) => {
            for x in &s.entries {
                collect_entry(&x.expr, bound, r);
            }
        }
        Expr::Comprehension(c) => {
            collect(&c.iter_range.expr, bound, r);
            collect(&c.accu_init.expr, bound, r);
            let n = bound.len();
            bound.push(c.iter_var.clone());
            if let Some(v) = &c.iter_var2 {
                bound.push(v.clone());
            }
            bound.push(c.accu_var.clone());
            collect(&c.loop_cond.expr, bound, r);
            collect(&c.loop_step.expr, bound, r);
            collect(&c.result.expr, bound, r);
            bound.truncate(n);
        }
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn collect_entry(e: &cel::common::ast::EntryExpr, bound: &mut Vec<String>, r: &mut Refs) {
    match e {
        cel::common::ast::EntryExpr::StructField(f) => collect(&f.value.expr, bound, r),
        cel::common::ast::EntryExpr::MapEntry(m) => {
            collect(&m.key.expr, bound, r);
            collect(&m.value.expr, bound, r);
        }
    }
}

/// Parses `src` and checks that it reads only `input` fields declared in
/// the input node and names in `scope`.
pub(crate) fn expression(
    node: &str,
    what: &str,
    src: &Json,
    input_fields: &BTreeSet<String>,
    scope: &BTreeSet<String>,
) -> Result<Expression, PolicyError> {
    let src = src
        .as_str()
        .ok_or_else(|| err(node, format!("{what} must be a CEL expression string")))?;
    if src.len() > limits::MAX_EXPR_BYTES {
        return Err(PolicyError::TooLarge(format!(
            "node {node:?}: {what} is {} bytes; an expression may have at most {}",
            src.len(),
            limits::MAX_EXPR_BYTES
        )));
    }
    let program = Program::compile(src).map_err(|e| {
        err(
            node,
            format!("{what}: CEL expression {src:?} does not parse: {e}"),
        )
    })?;
    // Before `collect`, which recurses on the tree as deep as it goes.
    limits::check_shape(program.expression())
        .map_err(|m| PolicyError::TooLarge(format!("node {node:?}: {what}: {m}")))?;
    let mut refs = Refs::default();
    collect(&program.expression().expr, &mut Vec::new(), &mut refs);
    for id in &refs.idents {
        if id != "input" && !scope.contains(id) {
            return Err(err(
                node,
                format!(
                    "{what}: {src:?} refers to unknown name {id:?} (not assigned on every path to this node)"
                ),
            ));
        }
    }
    for f in &refs.input_fields {
        if !input_fields.contains(f) {
            return Err(err(
                node,
                format!(
                    "{what}: {src:?} refers to input.{f}, which the input node does not declare"
                ),
            ));
        }
    }
    Ok(Expression {
        source: src.to_string(),
        checked: limits::instrument(program.expression()),
        program,
    })
}

/// Validates `graph` against `catalog` and compiles it.
///
/// On a thread of its own with a large stack: the CEL parser recurses on
/// nested expressions (up to its own limit of 96 levels), which overflows
/// an ordinary 2 MiB thread stack in debug builds at about 20 levels, and
/// a stack overflow aborts the whole node.
pub fn compile(graph: &Graph, catalog: &Catalog) -> Result<Arc<Compiled>, PolicyError> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("policy-compile".into())
            .stack_size(limits::PARSE_STACK_BYTES)
            .spawn_scoped(s, || compile_here(graph, catalog))
            .map_err(|e| PolicyError::Internal(format!("cannot start a compile thread: {e}")))?
            .join()
            .map_err(|_| PolicyError::Internal("the compile thread panicked".into()))?
    })
}

fn compile_here(graph: &Graph, catalog: &Catalog) -> Result<Arc<Compiled>, PolicyError> {
    if graph.nodes.is_empty() {
        return Err(err("", "the graph has no nodes"));
    }
    if graph.nodes.len() > limits::MAX_NODES || graph.edges.len() > limits::MAX_EDGES {
        return Err(PolicyError::TooLarge(format!(
            "the graph has {} nodes and {} edges; at most {} and {} are allowed",
            graph.nodes.len(),
            graph.edges.len(),
            limits::MAX_NODES,
            limits::MAX_EDGES
        )));
    }
    if graph.deadline_ms == Some(0) {
        return Err(err("", "deadline_ms must be a positive number of ms"));
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        if n.id.is_empty() {
            return Err(err("", format!("node #{i} has an empty id")));
        }
        if index.insert(n.id.as_str(), i).is_some() {
            return Err(err(&n.id, "duplicate node id"));
        }
        match n.kind.as_str() {
            "input" | "transform" | "branch" | "allocation" | "lookup" | "output"
            | "decision_table" | "terminate" | "sub_policy" => {}
            "enqueue" => {
                if catalog.queues.is_none() {
                    return Err(err(
                        &n.id,
                        "enqueue nodes need the job queue module, not available in this build",
                    ));
                }
            }
            other => {
                return Err(err(
                    &n.id,
                    format!("unknown node type {other:?} (input, transform, branch, allocation, lookup, enqueue, output, decision_table, terminate, sub_policy)"),
                ))
            }
        }
    }
    let inputs: Vec<&NodeSpec> = graph.nodes.iter().filter(|n| n.kind == "input").collect();
    if inputs.len() != 1 {
        let ids: Vec<&str> = inputs.iter().map(|n| n.id.as_str()).collect();
        return Err(err(
            ids.get(1).copied().unwrap_or(""),
            format!(
                "a graph needs exactly one input node, found {} ({})",
                ids.len(),
                ids.join(", ")
            ),
        ));
    }
    let input = index[inputs[0].id.as_str()];

    // Out-edges per node, in the order given.
    let mut out: Vec<Vec<(&Edge, usize)>> = vec![Vec::new(); graph.nodes.len()];
    let mut indeg = vec![0usize; graph.nodes.len()];
    for e in &graph.edges {
        let f = *index
            .get(e.from.as_str())
            .ok_or_else(|| err(&e.from, "edge from an unknown node"))?;
        let t = *index
            .get(e.to.as_str())
            .ok_or_else(|| err(&e.from, format!("edge to unknown node {:?}", e.to)))?;
        if t == input {
            return Err(err(&e.from, "edges may not lead into the input node"));
        }
        out[f].push((e, t));
        indeg[t] += 1;
    }

    // Kahn's algorithm: a topological order, or the nodes left on a cycle.
    let mut order = Vec::with_capacity(graph.nodes.len());
    let mut deg = indeg.clone();
    let mut ready: Vec<usize> = (0..graph.nodes.len()).filter(|&i| deg[i] == 0).collect();
    while let Some(i) = ready.pop() {
        order.push(i);
        for &(_, t) in &out[i] {
            deg[t] -= 1;
            if deg[t] == 0 {
                ready.push(t);
            }
        }
    }
    if order.len() != graph.nodes.len() {
        let on_cycle = (0..graph.nodes.len())
            .find(|&i| deg[i] > 0)
            .map(|i| graph.nodes[i].id.as_str())
            .unwrap_or("");
        return Err(err(on_cycle, "the graph has a cycle through this node"));
    }
    // Reachability from the input.
    let mut reach = vec![false; graph.nodes.len()];
    reach[input] = true;
    for &i in &order {
        if reach[i] {
            for &(_, t) in &out[i] {
                reach[t] = true;
            }
        }
    }
    if let Some(i) = (0..graph.nodes.len()).find(|&i| !reach[i]) {
        return Err(err(
            &graph.nodes[i].id,
            "node is not reachable from the input node",
        ));
    }

    // Edge shapes per node type; a path ends only at an output, because
    // every other type must have at least one out-edge.
    for (i, n) in graph.nodes.iter().enumerate() {
        let edges = &out[i];
        match n.kind.as_str() {
            "output" | "terminate" => {
                if !edges.is_empty() {
                    return Err(err(
                        &n.id,
                        format!(
                            "a{} {} node is terminal: it may have no out-edges",
                            if n.kind == "output" { "n" } else { "" },
                            n.kind
                        ),
                    ));
                }
            }
            "branch" => {
                if edges.iter().any(|(e, _)| e.arm.is_some()) {
                    return Err(err(&n.id, "branch edges take `when`, not `arm`"));
                }
                let defaults = edges.iter().filter(|(e, _)| e.when.is_none()).count();
                if defaults != 1 {
                    return Err(err(
                        &n.id,
                        format!("a branch needs exactly one out-edge without `when` (the default), found {defaults}"),
                    ));
                }
            }
            "allocation" => {
                if edges.iter().any(|(e, _)| e.when.is_some()) {
                    return Err(err(&n.id, "allocation edges take `arm`, not `when`"));
                }
            }
            _ => {
                if edges.len() != 1 {
                    return Err(err(
                        &n.id,
                        format!(
                            "a {} node needs exactly one out-edge, found {} (a path must end in an output or terminate node)",
                            n.kind,
                            edges.len()
                        ),
                    ));
                }
                if edges[0].0.when.is_some() || edges[0].0.arm.is_some() {
                    return Err(err(
                        &n.id,
                        "only branch edges take `when` and only allocation edges take `arm`",
                    ));
                }
            }
        }
    }

    // Input fields.
    let in_spec = &graph.nodes[input];
    check_keys(&in_spec.id, &in_spec.config, &["fields"])?;
    let mut fields = Vec::new();
    for (name, ty) in obj(&in_spec.id, &in_spec.config, "fields")? {
        let ty = ty.as_str().ok_or_else(|| {
            err(
                &in_spec.id,
                format!("field {name:?}: the type must be a string"),
            )
        })?;
        let (t, optional) = match ty.strip_suffix('?') {
            Some(t) => (t, true),
            None => (ty, false),
        };
        let t = FieldType::parse(t).ok_or_else(|| {
            err(
                &in_spec.id,
                format!("field {name:?}: unknown type {ty:?} (number, integer, string, bool, object, array; `?` for optional)"),
            )
        })?;
        fields.push((name.clone(), t, optional));
    }
    let input_fields: BTreeSet<String> = fields.iter().map(|f| f.0.clone()).collect();

    // Names definitely assigned when a node starts: the intersection over
    // its predecessors of what each had assigned when it finished.
    let mut scope_in: Vec<Option<BTreeSet<String>>> = vec![None; graph.nodes.len()];
    scope_in[input] = Some(BTreeSet::new());
    let mut compiled: Vec<Option<CompiledNode>> = (0..graph.nodes.len()).map(|_| None).collect();
    for &i in &order {
        let n = &graph.nodes[i];
        let scope = scope_in[i].clone().unwrap_or_default();
        let cfg = &n.config;
        let mut assigned = scope.clone();
        let next = out[i].first().map(|(_, t)| *t);
        let kind = match n.kind.as_str() {
            "input" => CompiledKind::Input {
                fields: fields.clone(),
            },
            "transform" => {
                check_keys(&n.id, cfg, &["assign"])?;
                let mut assign = Vec::new();
                for (name, src) in obj(&n.id, cfg, "assign")? {
                    if !valid_name(name) {
                        return Err(err(
                            &n.id,
                            format!("cannot assign {name:?}: not an identifier, or reserved"),
                        ));
                    }
                    assign.push((
                        name.clone(),
                        expression(&n.id, &format!("assign.{name}"), src, &input_fields, &scope)?,
                    ));
                    assigned.insert(name.clone());
                }
                CompiledKind::Transform { assign }
            }
            "branch" => {
                if !matches!(cfg, Json::Null) {
                    check_keys(&n.id, cfg, &[])?;
                }
                let mut conditions = Vec::new();
                let mut default = 0;
                for (e, t) in &out[i] {
                    match &e.when {
                        Some(w) => conditions.push((
                            expression(
                                &n.id,
                                &format!("edge to {:?}: when", e.to),
                                &Json::String(w.clone()),
                                &input_fields,
                                &scope,
                            )?,
                            *t,
                        )),
                        None => default = *t,
                    }
                }
                CompiledKind::Branch {
                    conditions,
                    default,
                }
            }
            "allocation" => {
                check_keys(&n.id, cfg, &["key", "weights"])?;
                let key = expression(
                    &n.id,
                    "key",
                    cfg.get("key").unwrap_or(&Json::Null),
                    &input_fields,
                    &scope,
                )?;
                let weights = obj(&n.id, cfg, "weights")?;
                if weights.is_empty() {
                    return Err(err(&n.id, "weights must name at least one arm"));
                }
                let mut arms = Vec::new();
                let mut total = 0u64;
                for (arm, w) in weights {
                    let w = w.as_u64().filter(|w| *w <= 1_000_000).ok_or_else(|| {
                        err(
                            &n.id,
                            format!("weight of arm {arm:?} must be an integer 0..=1000000"),
                        )
                    })?;
                    let edge = out[i]
                        .iter()
                        .find(|(e, _)| e.arm.as_deref() == Some(arm.as_str()))
                        .ok_or_else(|| {
                            err(
                                &n.id,
                                format!("arm {arm:?} has no out-edge with \"arm\": {arm:?}"),
                            )
                        })?;
                    total += w;
                    arms.push((arm.clone(), total, edge.1));
                }
                if total == 0 {
                    return Err(err(&n.id, "the weights sum to 0"));
                }
                for (e, _) in &out[i] {
                    match &e.arm {
                        Some(a) if weights.contains_key(a) => {}
                        Some(a) => {
                            return Err(err(
                                &n.id,
                                format!("edge to {:?} names arm {a:?}, which has no weight", e.to),
                            ))
                        }
                        None => {
                            return Err(err(&n.id, format!("edge to {:?} needs an `arm`", e.to)))
                        }
                    }
                }
                CompiledKind::Allocation { key, arms, total }
            }
            "lookup" => {
                check_keys(&n.id, cfg, &["source", "key", "as", "on_error", "default"])?;
                let source = string(&n.id, cfg, "source")?;
                // A vector lookup's key is its query vector (or an object
                // holding it); its type is only known at run time, where a
                // wrong one is a lookup error under the node's on_error.
                if !catalog.data_sources.contains_key(source) {
                    return Err(err(&n.id, format!("data source {source:?} does not exist")));
                }
                let key = expression(
                    &n.id,
                    "key",
                    cfg.get("key").unwrap_or(&Json::Null),
                    &input_fields,
                    &scope,
                )?;
                let name = string(&n.id, cfg, "as")?;
                if !valid_name(name) {
                    return Err(err(
                        &n.id,
                        format!("config.as {name:?} is not an identifier, or is reserved"),
                    ));
                }
                let on_error = match cfg.get("on_error").map(|v| v.as_str()) {
                    None | Some(Some("fail")) => OnError::Fail,
                    Some(Some("skip")) => OnError::Skip,
                    Some(Some("default")) => {
                        OnError::Default(cfg.get("default").cloned().ok_or_else(|| {
                            err(&n.id, "on_error \"default\" needs config.default")
                        })?)
                    }
                    _ => {
                        return Err(err(
                            &n.id,
                            "config.on_error must be \"fail\", \"default\" or \"skip\"",
                        ))
                    }
                };
                if cfg.get("default").is_some() && !matches!(on_error, OnError::Default(_)) {
                    return Err(err(
                        &n.id,
                        "config.default is used only with on_error \"default\"",
                    ));
                }
                assigned.insert(name.to_string());
                CompiledKind::Lookup {
                    source: source.to_string(),
                    key,
                    name: name.to_string(),
                    on_error,
                }
            }
            "enqueue" => {
                check_keys(&n.id, cfg, &["queue", "kind", "params", "as"])?;
                let queue = string(&n.id, cfg, "queue")?;
                if !catalog.queues.as_ref().is_some_and(|q| q.contains(queue)) {
                    return Err(err(&n.id, format!("queue {queue:?} does not exist")));
                }
                let kind = string(&n.id, cfg, "kind")?;
                if kind.is_empty() || kind.len() > 128 {
                    return Err(err(&n.id, "config.kind must be 1..=128 characters"));
                }
                refuse_kind(kind).map_err(|m| err(&n.id, m))?;
                let mut params = Vec::new();
                if let Some(p) = cfg.get("params") {
                    let p = p.as_object().ok_or_else(|| {
                        err(&n.id, "config.params must be an object of CEL expressions")
                    })?;
                    for (name, src) in p {
                        params.push((
                            name.clone(),
                            expression(
                                &n.id,
                                &format!("params.{name}"),
                                src,
                                &input_fields,
                                &scope,
                            )?,
                        ));
                    }
                }
                let name = match cfg.get("as") {
                    None => None,
                    Some(v) => {
                        let name = v.as_str().filter(|s| valid_name(s)).ok_or_else(|| {
                            err(&n.id, "config.as must be an identifier, not reserved")
                        })?;
                        assigned.insert(name.to_string());
                        Some(name.to_string())
                    }
                };
                CompiledKind::Enqueue {
                    queue: queue.to_string(),
                    kind: kind.to_string(),
                    params,
                    name,
                }
            }
            "output" => {
                check_keys(&n.id, cfg, &["fields"])?;
                let mut fields = Vec::new();
                for (name, src) in obj(&n.id, cfg, "fields")? {
                    fields.push((
                        name.clone(),
                        expression(&n.id, &format!("fields.{name}"), src, &input_fields, &scope)?,
                    ));
                }
                CompiledKind::Output { fields }
            }
            "decision_table" => crate::graph_nodes::decision_table(
                &n.id,
                cfg,
                &input_fields,
                &scope,
                &mut assigned,
            )?,
            "terminate" => crate::graph_nodes::terminate(&n.id, cfg, &input_fields, &scope)?,
            "sub_policy" => {
                crate::graph_nodes::sub_policy(&n.id, cfg, &input_fields, &scope, &mut assigned)?
            }
            _ => return Err(err(&n.id, "unknown node type")),
        };
        for &(_, t) in &out[i] {
            scope_in[t] = Some(match scope_in[t].take() {
                None => assigned.clone(),
                Some(s) => s.intersection(&assigned).cloned().collect(),
            });
        }
        compiled[i] = Some(CompiledNode {
            id: n.id.clone(),
            kind_name: match n.kind.as_str() {
                "input" => "input",
                "transform" => "transform",
                "branch" => "branch",
                "allocation" => "allocation",
                "lookup" => "lookup",
                "enqueue" => "enqueue",
                "decision_table" => "decision_table",
                "terminate" => "terminate",
                "sub_policy" => "sub_policy",
                _ => "output",
            },
            kind,
            next,
        });
    }
    let nodes = compiled
        .into_iter()
        .map(|c| c.ok_or_else(|| err("", "internal: node not compiled")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Compiled {
        plan: crate::plan::Plan::build(&nodes),
        nodes,
        input,
        deadline_ms: graph.deadline_ms,
    }))
}

/// Job kinds a policy may never submit: `command` runs an arbitrary
/// process on a worker host, and a policy's input is untrusted. Checked
/// when a version is compiled and again by the server when it submits.
pub fn refuse_kind(kind: &str) -> Result<(), String> {
    if kind.trim().eq_ignore_ascii_case("command") {
        return Err(
            "enqueue nodes may not submit `command` jobs (they run host processes); submit them from a trusted client instead"
                .to_string(),
        );
    }
    Ok(())
}

impl Compiled {
    /// Data sources the graph's lookups read.
    pub fn sources(&self) -> BTreeSet<String> {
        self.nodes
            .iter()
            .filter_map(|n| match &n.kind {
                CompiledKind::Lookup { source, .. } => Some(source.clone()),
                _ => None,
            })
            .collect()
    }

    /// Queues the graph's enqueue nodes submit to.
    pub fn queues(&self) -> BTreeSet<String> {
        self.nodes
            .iter()
            .filter_map(|n| match &n.kind {
                CompiledKind::Enqueue { queue, .. } => Some(queue.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn has_lookups(&self) -> bool {
        !self.sources().is_empty()
    }

    /// The `sub_policy` nodes: (node id, policy name, pinned version).
    pub fn sub_policies(&self) -> Vec<(String, String, Option<u32>)> {
        self.nodes
            .iter()
            .filter_map(|n| match &n.kind {
                CompiledKind::SubPolicy {
                    policy, version, ..
                } => Some((n.id.clone(), policy.clone(), *version)),
                _ => None,
            })
            .collect()
    }

    /// Whether evaluating this graph may wait on anything but CPU: a
    /// lookup, or another policy's run (which may have lookups of its own
    /// and needs the server to resolve it).
    pub fn waits(&self) -> bool {
        self.has_lookups() || !self.sub_policies().is_empty()
    }

    /// Whether the graph uses a node type that needs cluster version 4
    /// ([`NODE_TYPES_VERSION`]).
    pub fn uses_v4_nodes(&self) -> bool {
        self.nodes.iter().any(|n| {
            matches!(
                n.kind,
                CompiledKind::DecisionTable { .. }
                    | CompiledKind::Terminate { .. }
                    | CompiledKind::SubPolicy { .. }
            )
        })
    }
}

/// The cluster version that admits `sub_policy`, `decision_table` and
/// `terminate` nodes (orrery-raft's `version.rs`, "policy-node-types").
pub const NODE_TYPES_VERSION: u32 = 4;

/// Parses a graph from JSON with a clear error.
pub fn parse_graph(v: &Json) -> Result<Graph, PolicyError> {
    serde_json::from_value(v.clone()).map_err(|e| err("", format!("graph: {e}")))
}
