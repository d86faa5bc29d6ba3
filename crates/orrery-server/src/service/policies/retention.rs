//! Run retention: the leader of each shard group forgets runs past their
//! policy's retention, like the jobs domain's pruning of finished jobs
//! (`service/jobs/background.rs`). The leader stamps the time and the
//! retentions into a replicated `PruneRuns`, so every replica forgets the
//! same runs, and a snapshot taken at any point holds exactly what the log
//! up to it left.

use super::shadow::SHADOW_VERSION;
use super::store::unexpected;
use super::PoliciesService;
use crate::api::{now_ms, ApiError};
use orrery_policy::store::{PolicyCommand, PolicyQuery, PolicyQueryResult, PolicyResponse};
use orrery_types::PLACEMENT_GROUP;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Runs forgotten per log entry, and entries per sweep: bounded so that
/// no apply stalls the shard and a backlog drains without starving writes.
const PRUNE_BATCH: u32 = 1000;
const PRUNE_ENTRIES_PER_SWEEP: usize = 4;
/// How often a node looks for runs to forget in the shards it leads.
const SWEEP: Duration = Duration::from_secs(1);

impl PoliciesService {
    /// Starts the retention sweep; stops when `stop` turns true.
    pub fn start_retention(self: &Arc<Self>, stop: watch::Receiver<bool>) {
        tokio::spawn(self.clone().run_retention(stop));
    }

    async fn run_retention(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SWEEP) => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = self.sweep().await {
                tracing::debug!("run retention: {e}");
            }
        }
    }

    /// One sweep over the shard groups this node leads.
    async fn sweep(&self) -> Result<(), ApiError> {
        // PruneRuns needs version 5; before it runs are kept (as before).
        if !self.shadow_active() {
            return Ok(());
        }
        let me = self.node.id();
        let led: Vec<_> = self
            .node
            .registry
            .all()
            .into_iter()
            .filter(|g| {
                g.id != PLACEMENT_GROUP
                    && g.raft.metrics().borrow().current_leader == Some(me)
                    && g.sm.read(|s| s.policy.has_runs())
            })
            .collect();
        if led.is_empty() {
            return Ok(());
        }
        let retention = self.retentions().await?;
        let default = self.node.cfg.policies.run_retention_ms;
        for g in led {
            let now = now_ms();
            let due = g.sm.read(|s| s.policy.prune_due(now, default, &retention));
            if !due {
                continue;
            }
            for _ in 0..PRUNE_ENTRIES_PER_SWEEP {
                let cmd = PolicyCommand::PruneRuns {
                    now_ms: now,
                    default_retention_ms: default,
                    retention: retention.clone(),
                    max: PRUNE_BATCH,
                };
                match self.write(g.id, cmd).await? {
                    PolicyResponse::RunsPruned(n) => {
                        tracing::debug!(group = g.id, pruned = n, "policy runs pruned");
                        if n < PRUNE_BATCH {
                            break;
                        }
                    }
                    other => return Err(unexpected(other)),
                }
            }
        }
        Ok(())
    }

    /// Every policy's own retention, read through the placement leader (a
    /// policy's retention lives in the placement group, its runs in shards).
    async fn retentions(&self) -> Result<Vec<(String, u64)>, ApiError> {
        debug_assert!(self.shadow_active(), "needs version {SHADOW_VERSION}");
        match self
            .read(PLACEMENT_GROUP, PolicyQuery::PoliciesFull)
            .await?
        {
            PolicyQueryResult::PoliciesFull(ps) => Ok(ps
                .into_iter()
                .filter_map(|(p, s)| s.run_retention_ms.map(|ms| (p.id, ms)))
                .collect()),
            other => Err(unexpected(other)),
        }
    }
}
