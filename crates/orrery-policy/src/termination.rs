//! How a run ended when a `terminate` node ended it: a status chosen by the
//! policy author (`approved`, `declined`, `error`, ...) and a reason.
//!
//! Shared by the evaluator (which produces it) and the run record (which
//! stores it), so it lives in a module of its own.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termination {
    /// The status the `terminate` node named, e.g. `approved`.
    pub status: String,
    /// The reason the node gave, if any (a CEL expression's value, as text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
