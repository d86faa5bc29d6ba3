//! Snapshots: the state is its serde (bincode, standard config) encoding;
//! the derived indexes are rebuilt on restore.

use crate::tally::{Interner, Tally};
use crate::QueueState;

impl QueueState {
    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).map_err(|e| e.to_string())
    }

    pub fn restore(data: &[u8]) -> Result<Self, String> {
        let mut s: Self = bincode::serde::decode_from_slice(data, bincode::config::standard())
            .map(|(v, _)| v)
            .map_err(|e| format!("queue snapshot: {e}"))?;
        s.finished = s
            .jobs
            .values()
            .filter(|j| j.state.is_terminal())
            .filter_map(|j| j.finished_ms.map(|t| (t, j.id)))
            .collect();
        // Each job was decoded with names of its own: share them again.
        let mut names = Interner::default();
        for j in s.jobs.values_mut() {
            j.queue = names.get(&j.queue);
            j.kind = names.get(&j.kind);
        }
        s.names = names;
        s.tally = Tally::of(s.jobs.values().map(|j| &**j));
        Ok(s)
    }
}
