//! The apply and query arms of cluster version 5 (shadow versions, run
//! retention, stored terminations); the data is described in `store_ext`.

use crate::store::{Policy, PolicyResponse, PolicyState, Run};
use crate::store_ext::{prunable, PolicySettings, RunFilterExt, RunRecord, MAX_RUN_RETENTION_MS};
use std::collections::BTreeMap;

impl PolicyState {
    /// The policy's settings (the default when none were set).
    pub fn settings(&self, policy_id: &str) -> PolicySettings {
        self.ext
            .settings
            .get(policy_id)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn is_shadow(&self, policy_id: &str, version: u32) -> bool {
        self.ext
            .settings
            .get(policy_id)
            .is_some_and(|s| s.shadow_version == Some(version))
    }

    /// Every policy's own run retention, for the leader's prune command.
    pub fn run_retentions(&self) -> Vec<(String, u64)> {
        self.ext
            .settings
            .iter()
            .filter_map(|(id, s)| s.run_retention_ms.map(|ms| (id.clone(), ms)))
            .collect()
    }

    /// Whether this group holds any run (the sweep reads the retentions
    /// only for groups that do).
    pub fn has_runs(&self) -> bool {
        !self.runs.is_empty()
    }

    /// Whether a [`crate::store::PolicyCommand::PruneRuns`] with these
    /// arguments would forget anything (the leader asks before proposing).
    pub fn prune_due(
        &self,
        now_ms: u64,
        default_retention_ms: u64,
        retention: &[(String, u64)],
    ) -> bool {
        let retention: BTreeMap<String, u64> = retention.iter().cloned().collect();
        !prunable(
            &self.run_index,
            &self.runs,
            now_ms,
            default_retention_ms,
            &retention,
            1,
        )
        .is_empty()
    }

    pub(crate) fn record(&self, r: &Run) -> RunRecord {
        RunRecord {
            run: r.clone(),
            ext: self.ext.runs.get(&r.id).cloned().unwrap_or_default(),
        }
    }

    /// Newest first, as [`PolicyState::list_runs`], with the extras and
    /// the filters of version 5.
    pub(crate) fn list_runs_full(&self, f: &RunFilterExt) -> Vec<RunRecord> {
        let iter: Box<dyn Iterator<Item = &Run>> = match &f.base.before {
            Some(b) => Box::new(
                self.runs
                    .range::<String, _>(..b.clone())
                    .rev()
                    .map(|(_, r)| r),
            ),
            None => Box::new(self.runs.values().rev()),
        };
        iter.filter(|r| f.matches(r, self.ext.runs.get(&r.id)))
            .take(f.base.limit)
            .map(|r| self.record(r))
            .collect()
    }

    pub(crate) fn set_settings(
        &mut self,
        id: String,
        shadow_version: Option<Option<u32>>,
        run_retention_ms: Option<Option<u64>>,
        now_ms: u64,
    ) -> PolicyResponse {
        let Some(p) = self.policies.get(&id) else {
            return PolicyResponse::NotFound(format!("policy {id} not found"));
        };
        if let Some(Some(v)) = shadow_version {
            match self.versions.get(&(id.clone(), v)) {
                None => {
                    return PolicyResponse::Rejected(format!("shadow version {v} does not exist"))
                }
                Some(ver) if ver.archived => {
                    return PolicyResponse::Conflict(format!("shadow version {v} is archived"))
                }
                _ => {}
            }
        }
        if let Some(Some(ms)) = run_retention_ms {
            if ms == 0 || ms > MAX_RUN_RETENTION_MS {
                return PolicyResponse::Rejected(format!(
                    "run_retention_ms must be 1..={MAX_RUN_RETENTION_MS}, got {ms}"
                ));
            }
        }
        let mut p: Policy = p.clone();
        let mut s = self.settings(&id);
        if let Some(v) = shadow_version {
            s.shadow_version = v;
        }
        if let Some(ms) = run_retention_ms {
            s.run_retention_ms = ms;
        }
        p.updated_ms = p.updated_ms.max(now_ms);
        self.policies.insert(id.clone(), p.clone());
        // Only non-default settings are kept: a policy whose settings were
        // all cleared leaves the snapshot in the base format.
        if s.is_default() {
            self.ext.settings.remove(&id);
        } else {
            self.ext.settings.insert(id, s.clone());
        }
        PolicyResponse::PolicySettings(Box::new((p, s)))
    }

    pub(crate) fn prune_runs(
        &mut self,
        now_ms: u64,
        default_retention_ms: u64,
        retention: Vec<(String, u64)>,
        max: u32,
    ) -> PolicyResponse {
        let retention: BTreeMap<String, u64> = retention.into_iter().collect();
        let gone = prunable(
            &self.run_index,
            &self.runs,
            now_ms,
            default_retention_ms,
            &retention,
            max as usize,
        );
        for id in &gone {
            if let Some(r) = self.runs.remove(id) {
                self.unkey_run(&r);
                if let Some(set) = self.run_index.get_mut(&r.policy_id) {
                    set.remove(&(r.created_ms, r.id.clone()));
                    if set.is_empty() {
                        self.run_index.remove(&r.policy_id);
                    }
                }
            }
            self.ext.runs.remove(id);
        }
        PolicyResponse::RunsPruned(gone.len() as u32)
    }
}
