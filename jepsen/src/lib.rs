//! Orrery's fault-injection suite: the history format, checkers and (in the
//! `orrery-jepsen` binary) the harness that drives real nodes.

pub mod access;
pub mod check;
pub mod db;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod procfs;
pub mod procs;
pub mod recorder;
pub mod results;
pub mod runner;
pub mod stats;
pub mod workflow_ops;
pub mod workload;
