//! Policies: versioned decision graphs evaluated with CEL.
//!
//! * [`graph`]: the graph format, validation and compilation;
//! * [`eval`]: the evaluator (per-node traces, allocation, lookups);
//! * [`store`]: the deterministic domain module (policies, versions, data
//!   sources, runs).
//!
//! No I/O here: lookups go through [`eval::Effects`], which the server
//! implements.

pub mod eval;
pub mod graph;
mod graph_nodes;
pub mod limits;
mod plan;
pub mod store;
mod store_apply;
pub mod store_ext;
mod store_keys;
pub mod termination;
mod walk;
mod walk_nodes;

#[cfg(test)]
mod reference;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_compiled;
#[cfg(test)]
mod tests_limits;
#[cfg(test)]
mod tests_nodes;
#[cfg(test)]
mod tests_run_keys;
#[cfg(test)]
mod tests_shadow_retention;

/// The one error type of this crate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The graph is invalid; `node` names the node at fault ("" for the
    /// graph as a whole).
    #[error("node {node:?}: {message}")]
    Invalid { node: String, message: String },
    /// A run's input does not match the input node.
    #[error("{0}")]
    Input(String),
    /// A graph, expression or input over a limit of [`limits`].
    #[error("{0}")]
    TooLarge(String),
    #[error("internal: {0}")]
    Internal(String),
}
