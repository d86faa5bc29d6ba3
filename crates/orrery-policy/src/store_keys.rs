//! Idempotent runs (cluster version 6): a run requested with a `run_key`
//! is recorded at most once per policy and key.
//!
//! The server gives such a run an id whose tail is a hash of the policy
//! and the key, and routes runs by that tail, so every attempt with the
//! same key reaches the same shard; there, [`PolicyCommand::PutRunOnce`]
//! checks the key and writes in one apply, so two attempts racing through
//! the log cannot both be recorded. The key index is derived from `runs`
//! (rebuilt on restore, like `run_index`): it needs no snapshot format.
//!
//! [`PolicyCommand::PutRunOnce`]: crate::store::PolicyCommand::PutRunOnce

use crate::store::{PolicyResponse, PolicyState, Run};
use crate::store_ext::RunExt;

impl PolicyState {
    /// Adds `run` to the key index (runs without a key are not in it).
    pub(crate) fn key_run(&mut self, run: &Run) {
        if let Some(k) = &run.run_key {
            self.run_keys
                .entry((run.policy_id.clone(), k.clone()))
                .or_default()
                .insert(run.id.clone());
        }
    }

    /// Removes `run` from the key index; no empty sets are kept (a
    /// restored state, which rebuilds the index, must equal this one).
    pub(crate) fn unkey_run(&mut self, run: &Run) {
        let Some(k) = &run.run_key else { return };
        let key = (run.policy_id.clone(), k.clone());
        if let Some(set) = self.run_keys.get_mut(&key) {
            set.remove(&run.id);
            if set.is_empty() {
                self.run_keys.remove(&key);
            }
        }
    }

    /// The run of `policy_id` recorded here with `run_key`: the oldest,
    /// should runs from before version 6 share it (they were not checked).
    pub fn run_by_key(&self, policy_id: &str, run_key: &str) -> Option<&Run> {
        self.run_keys
            .get(&(policy_id.to_string(), run_key.to_string()))
            .and_then(|ids| ids.first())
            .and_then(|id| self.runs.get(id))
    }

    pub(crate) fn put_run_once(&mut self, run: Run, ext: RunExt) -> PolicyResponse {
        let Some(key) = run.run_key.clone() else {
            return PolicyResponse::Rejected("a run recorded once needs a run_key".into());
        };
        if let Some(old) = self.run_by_key(&run.policy_id, &key) {
            if old.input == run.input {
                return PolicyResponse::RunExisting(Box::new(self.record(old)));
            }
            return PolicyResponse::Conflict(format!(
                "run_key {key:?} was used by run {} with another input",
                old.id
            ));
        }
        // The id's tail hashes policy and key: another key can reach the
        // same id only with a hash collision in the same millisecond.
        if self.runs.contains_key(&run.id) {
            return PolicyResponse::Conflict(format!(
                "run id {} is taken by a run with another key; retry",
                run.id
            ));
        }
        self.put_run(run, ext)
    }
}
