//! What bounds a policy's cost: static limits checked when a graph is
//! compiled, and the run deadline, which CEL itself cannot enforce.
//!
//! The `cel` crate has no way to interrupt an expression. So every
//! comprehension (`all`, `exists`, `exists_one`, `map`, `filter`) is
//! rewritten at compile time to call [`TICK`] on each iteration; the
//! evaluator binds [`TICK`] to a function that fails once the run's
//! deadline has passed, which ends the expression with an error. Work
//! outside comprehensions is bounded by the expression's length (at most
//! [`MAX_EXPR_BYTES`], so at most a few thousand operations, each linear in
//! the size of its operands) and by [`MAX_EXPR_DEPTH`]; nesting of
//! comprehensions is capped by [`MAX_COMPREHENSION_NESTING`].

use cel::common::ast::{CallExpr, EntryExpr, Expr, LiteralValue};
use cel::IdedExpr;

/// Nodes in one graph.
pub const MAX_NODES: usize = 200;
/// Edges in one graph.
pub const MAX_EDGES: usize = 1_000;
/// Rows of one decision table.
pub const MAX_TABLE_ROWS: usize = 256;
/// Output columns of one decision table.
pub const MAX_TABLE_COLUMNS: usize = 32;
/// `sub_policy` runs nested in one another (a run of a policy that runs a
/// policy that... counts one per level): deeper is an error, which is also
/// what ends a cycle between policies that appeared after their versions
/// were created.
pub const MAX_SUB_POLICY_DEPTH: usize = 8;
/// Bytes of one CEL expression's source.
pub const MAX_EXPR_BYTES: usize = 4_096;
/// Depth of one expression's syntax tree (the evaluator recurses on it).
pub const MAX_EXPR_DEPTH: usize = 32;
/// Stack of the thread that parses expressions (see [`crate::graph::compile`]).
pub const PARSE_STACK_BYTES: usize = 64 << 20;
/// Stack an evaluating thread needs for an expression [`MAX_EXPR_DEPTH`]
/// deep, with room to spare in debug builds.
pub const EVAL_STACK_BYTES: usize = 16 << 20;
/// Comprehensions (macros such as `map` or `exists`) nested in one another.
pub const MAX_COMPREHENSION_NESTING: usize = 2;
/// Bytes of a run's input, as JSON.
pub const MAX_INPUT_BYTES: usize = 256 * 1024;
/// A run's deadline when its version names none.
pub const DEFAULT_DEADLINE_MS: u64 = 100;
/// The largest deadline a version may ask for, unless the node allows more
/// (`--policy-max-deadline-ms`).
pub const DEFAULT_MAX_DEADLINE_MS: u64 = 1_000;

/// The function every comprehension iteration calls; bound per evaluation
/// to the run's deadline. A user may call it too: it only ever returns
/// `true` or fails past the deadline.
pub const TICK: &str = "__orrery_deadline";

/// Checks the depth and comprehension nesting of a parsed expression.
pub fn check_shape(e: &IdedExpr) -> Result<(), String> {
    fn walk(e: &IdedExpr, depth: usize, nesting: usize) -> Result<(), String> {
        if depth > MAX_EXPR_DEPTH {
            return Err(format!(
                "the expression is nested more than {MAX_EXPR_DEPTH} levels deep"
            ));
        }
        let d = depth + 1;
        match &e.expr {
            Expr::Call(c) => {
                if let Some(t) = &c.target {
                    walk(t, d, nesting)?;
                }
                c.args.iter().try_for_each(|a| walk(a, d, nesting))
            }
            Expr::Select(s) => walk(&s.operand, d, nesting),
            Expr::List(l) => l.elements.iter().try_for_each(|x| walk(x, d, nesting)),
            Expr::Map(m) => m
                .entries
                .iter()
                .try_for_each(|x| entry(&x.expr, d, nesting)),
            Expr::Struct(s) => s
                .entries
                .iter()
                .try_for_each(|x| entry(&x.expr, d, nesting)),
            Expr::Comprehension(c) => {
                let n = nesting + 1;
                if n > MAX_COMPREHENSION_NESTING {
                    return Err(format!(
                        "comprehensions (all, exists, exists_one, map, filter) may be nested at most {MAX_COMPREHENSION_NESTING} deep"
                    ));
                }
                walk(&c.iter_range, d, nesting)?;
                walk(&c.accu_init, d, nesting)?;
                walk(&c.loop_cond, d, n)?;
                walk(&c.loop_step, d, n)?;
                walk(&c.result, d, n)
            }
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Ok(()),
        }
    }
    fn entry(e: &EntryExpr, depth: usize, nesting: usize) -> Result<(), String> {
        match e {
            EntryExpr::StructField(f) => walk(&f.value, depth, nesting),
            EntryExpr::MapEntry(m) => {
                walk(&m.key, depth, nesting)?;
                walk(&m.value, depth, nesting)
            }
        }
    }
    walk(e, 0, 0)
}

/// Ids of the nodes [`instrument`] adds: far above any the parser assigns.
const SYNTHETIC_ID: u64 = u64::MAX / 2;

fn call(func: &str, args: Vec<IdedExpr>) -> IdedExpr {
    IdedExpr {
        id: SYNTHETIC_ID,
        expr: Expr::Call(CallExpr {
            func_name: func.to_string(),
            target: None,
            args,
        }),
    }
}

/// `TICK() ? e : null`: the value of `e`, or the deadline's error. A
/// conditional (not `&&`) because CEL's logical operators swallow an
/// error when the other operand decides the result.
fn guarded(e: IdedExpr) -> IdedExpr {
    let null = IdedExpr {
        id: SYNTHETIC_ID,
        expr: Expr::Literal(LiteralValue::Null),
    };
    call(
        cel::common::ast::operators::CONDITIONAL,
        vec![call(TICK, Vec::new()), e, null],
    )
}

fn is_ident(e: &IdedExpr, name: &str) -> bool {
    matches!(&e.expr, Expr::Ident(n) if n == name)
}

/// A copy of `e` whose every comprehension iteration calls [`TICK`]. The
/// shapes the interpreter runs in place (`map`/`filter` appending to an
/// empty list; `all`/`exists` folding with `&&`/`||`) keep their shape, so
/// they keep their fast paths: only their element or loop condition is
/// wrapped.
pub fn instrument(e: &IdedExpr) -> IdedExpr {
    let mut e = e.clone();
    walk_mut(&mut e);
    e
}

fn walk_mut(e: &mut IdedExpr) {
    match &mut e.expr {
        Expr::Call(c) => {
            if let Some(t) = &mut c.target {
                walk_mut(t);
            }
            c.args.iter_mut().for_each(walk_mut);
        }
        Expr::Select(s) => walk_mut(&mut s.operand),
        Expr::List(l) => l.elements.iter_mut().for_each(walk_mut),
        Expr::Map(m) => m.entries.iter_mut().for_each(|x| entry_mut(&mut x.expr)),
        Expr::Struct(s) => s.entries.iter_mut().for_each(|x| entry_mut(&mut x.expr)),
        Expr::Comprehension(c) => {
            walk_mut(&mut c.iter_range);
            walk_mut(&mut c.accu_init);
            walk_mut(&mut c.loop_cond);
            walk_mut(&mut c.loop_step);
            walk_mut(&mut c.result);
            let accu = c.accu_var.clone();
            if !matches!(c.loop_cond.expr, Expr::Literal(_)) {
                // all/exists: the condition is checked before every step,
                // and an error there ends the loop at once.
                let cond = std::mem::replace(&mut c.loop_cond, call(TICK, Vec::new()));
                c.loop_cond = guarded(cond);
            } else if !wrap_append(&mut c.loop_step, &accu) {
                let step = std::mem::replace(&mut c.loop_step, call(TICK, Vec::new()));
                c.loop_step = guarded(step);
            }
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// Wraps the appended elements (or the guard) of a `map`/`filter` step,
/// `@result + [x]` or `g ? @result + [x] : @result`; false when the step
/// has neither shape.
fn wrap_append(step: &mut IdedExpr, accu: &str) -> bool {
    let Expr::Call(c) = &mut step.expr else {
        return false;
    };
    if c.target.is_some() {
        return false;
    }
    let ops = cel::common::ast::operators::ADD;
    if c.func_name == ops && c.args.len() == 2 && is_ident(&c.args[0], accu) {
        if let Expr::List(l) = &mut c.args[1].expr {
            for x in l.elements.iter_mut() {
                let v = std::mem::replace(x, call(TICK, Vec::new()));
                *x = guarded(v);
            }
            return true;
        }
        return false;
    }
    if c.func_name == cel::common::ast::operators::CONDITIONAL
        && c.args.len() == 3
        && is_ident(&c.args[2], accu)
    {
        let g = std::mem::replace(&mut c.args[0], call(TICK, Vec::new()));
        c.args[0] = guarded(g);
        return true;
    }
    false
}

fn entry_mut(e: &mut EntryExpr) {
    match e {
        EntryExpr::StructField(f) => walk_mut(&mut f.value),
        EntryExpr::MapEntry(m) => {
            walk_mut(&mut m.key);
            walk_mut(&mut m.value);
        }
    }
}
