//! The execution plan of a compiled graph, and the state a run keeps in it.
//!
//! Built once per version with the rest of [`Compiled`]: every name a node
//! assigns gets a slot, so a run holds its variables in a vector instead
//! of a map it would clone for every node, and the CEL context of a node
//! borrows them through a [`VariableResolver`] instead of copying them in.
//! The standard CEL environment is built once per process ([`env`]): a
//! fresh `Context::default()` builds it anew, which was most of the cost
//! of evaluating a node.

use crate::graph::{CompiledKind, CompiledNode};
use crate::limits::TICK;
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, ResolveResult, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// The message of the error that ends an expression past its deadline.
pub(crate) const PAST_DEADLINE: &str = "the run passed its deadline";

/// Slots and lookup groups of a compiled graph.
#[derive(Debug, Default)]
pub struct Plan {
    /// Every name some node assigns, sorted: slot `i` holds `names[i]`.
    names: Vec<String>,
    /// Per node, the slots it writes, in the order of its assignments
    /// (a transform's `assign`, a lookup's or an enqueue's `as`, a
    /// decision table's columns, a sub-policy's `output`).
    pub(crate) writes: Vec<Vec<usize>>,
    /// Per lookup node, the consecutive lookups that start with it and do
    /// not read each other's results: they run concurrently.
    pub(crate) groups: Vec<Vec<usize>>,
}

impl Plan {
    pub(crate) fn build(nodes: &[CompiledNode]) -> Plan {
        let assigned = |n: &CompiledNode| -> Vec<String> {
            match &n.kind {
                CompiledKind::Transform { assign } => {
                    assign.iter().map(|(name, _)| name.clone()).collect()
                }
                CompiledKind::Lookup { name, .. } => vec![name.clone()],
                CompiledKind::Enqueue { name: Some(n), .. } => vec![n.clone()],
                CompiledKind::DecisionTable { columns, .. } => columns.clone(),
                CompiledKind::SubPolicy { name, .. } => vec![name.clone()],
                _ => Vec::new(),
            }
        };
        let mut names: Vec<String> = nodes.iter().flat_map(assigned).collect();
        names.sort();
        names.dedup();
        let slot = |n: &String| names.binary_search(n).unwrap_or(0);
        let writes = nodes
            .iter()
            .map(|n| assigned(n).iter().map(slot).collect())
            .collect();
        let groups = (0..nodes.len()).map(|i| lookup_group(nodes, i)).collect();
        Plan {
            names,
            writes,
            groups,
        }
    }

    fn slot(&self, name: &str) -> Option<usize> {
        self.names.binary_search_by(|n| n.as_str().cmp(name)).ok()
    }

    pub(crate) fn slots(&self) -> usize {
        self.names.len()
    }
}

/// Consecutive lookups from `at` whose keys do not read each other's
/// results (empty when `at` is no lookup).
fn lookup_group(nodes: &[CompiledNode], at: usize) -> Vec<usize> {
    let CompiledKind::Lookup { name, .. } = &nodes[at].kind else {
        return Vec::new();
    };
    let mut group = vec![at];
    let mut names: Vec<&str> = vec![name];
    let mut nx = nodes[at].next;
    while let Some(n) = nx {
        match &nodes[n].kind {
            CompiledKind::Lookup { key, name, .. }
                if !names
                    .iter()
                    .any(|d| key.program.references().has_variable(d)) =>
            {
                group.push(n);
                names.push(name);
                nx = nodes[n].next;
            }
            _ => break,
        }
    }
    group
}

/// The standard environment, shared by every evaluation.
fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

/// A run's values: its input and one slot per assigned name.
pub(crate) struct Scope {
    input: Box<dyn Val>,
    vals: Vec<Option<Box<dyn Val>>>,
}

/// CEL's own form of a value, as `Context::add_variable_from_value` makes it.
fn boxed(v: Value) -> Result<Box<dyn Val>, String> {
    Box::<dyn Val>::try_from(v).map_err(|e| format!("internal: value has no CEL form: {e}"))
}

impl Scope {
    pub(crate) fn new(plan: &Plan, input: Value) -> Result<Scope, String> {
        Ok(Scope {
            input: boxed(input)?,
            vals: (0..plan.slots()).map(|_| None).collect(),
        })
    }

    pub(crate) fn set(&mut self, slot: usize, v: Value) -> Result<(), String> {
        let v = boxed(v)?;
        match self.vals.get_mut(slot) {
            Some(s) => {
                *s = Some(v);
                Ok(())
            }
            None => Err(format!("internal: no slot {slot}")),
        }
    }
}

/// The scope as CEL sees it: `input` and the names assigned so far.
struct Vars<'a> {
    plan: &'a Plan,
    scope: &'a Scope,
}

impl VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, name: &str) -> Option<CowVal<'b, 'b>> {
        if name == "input" {
            return Some(CowVal::Borrowed(self.scope.input.as_ref()));
        }
        let slot = self.plan.slot(name)?;
        self.scope.vals[slot]
            .as_deref()
            .map(|v| CowVal::Borrowed(v as &dyn Val))
    }
}

/// A CEL context for a stretch of nodes evaluated under one deadline: the
/// shared environment and [`TICK`] bound to the deadline, built once; each
/// node lends it the scope as it is then.
pub(crate) struct Cel {
    root: Option<Context<'static, 'static>>,
}

impl Cel {
    pub(crate) fn new(deadline: Instant) -> Result<Cel, String> {
        let mut ctx = Context::with_env(env());
        ctx.add_function(TICK, move || -> ResolveResult {
            if Instant::now() >= deadline {
                Err(ExecutionError::function_error(TICK, PAST_DEADLINE))
            } else {
                Ok(Value::Bool(true))
            }
        })
        .map_err(|e| format!("internal: {e:?}"))?;
        Ok(Cel { root: Some(ctx) })
    }

    /// Runs `f` with a context that reads `scope`. The context is taken
    /// apart and rebuilt around the scope (moves, no allocation) because
    /// it borrows its resolver for as long as it lives.
    pub(crate) fn with<R>(
        &mut self,
        plan: &Plan,
        scope: &Scope,
        f: impl FnOnce(&Context<'_, '_>) -> R,
    ) -> Result<R, String> {
        let Some(Context::Root { functions, env, .. }) = self.root.take() else {
            return Err("internal: the CEL context was lost".into());
        };
        let vars = Vars { plan, scope };
        let ctx = Context::Root {
            functions,
            variables: BTreeMap::new(),
            resolver: Some(&vars),
            env,
        };
        let r = f(&ctx);
        if let Context::Root { functions, env, .. } = ctx {
            self.root = Some(Context::Root {
                functions,
                variables: BTreeMap::new(),
                resolver: None,
                env,
            });
        }
        Ok(r)
    }
}
