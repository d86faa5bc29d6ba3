//! Snapshots: the state is its serde (bincode, standard config) encoding;
//! the derived indexes are rebuilt on restore.

use crate::tally::{Interner, Tally};
use crate::QueueState;

/// Marks the workflows extension of a queue snapshot.
const WORKFLOWS_TAG: &[u8] = b"orrery-workflows-1";

impl QueueState {
    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        let cfg = bincode::config::standard();
        let mut out = bincode::serde::encode_to_vec(self, cfg).map_err(|e| e.to_string())?;
        // The extension: workflows, after the base encoding and a tag.
        // Without workflows nothing is appended, and the bytes are exactly
        // the base format older builds read.
        if !self.workflows.is_empty() {
            out.extend_from_slice(WORKFLOWS_TAG);
            let w =
                bincode::serde::encode_to_vec(&self.workflows, cfg).map_err(|e| e.to_string())?;
            out.extend_from_slice(&w);
        }
        Ok(out)
    }

    pub fn restore(data: &[u8]) -> Result<Self, String> {
        let cfg = bincode::config::standard();
        let (mut s, used): (Self, usize) = bincode::serde::decode_from_slice(data, cfg)
            .map_err(|e| format!("queue snapshot: {e}"))?;
        let rest = &data[used..];
        if !rest.is_empty() {
            let Some(w) = rest.strip_prefix(WORKFLOWS_TAG) else {
                return Err("queue snapshot: unknown data after the jobs".into());
            };
            s.workflows = bincode::serde::decode_from_slice(w, cfg)
                .map(|(v, _)| v)
                .map_err(|e| format!("queue snapshot (workflows): {e}"))?;
            s.index_workflows();
        }
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
