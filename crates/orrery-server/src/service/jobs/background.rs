//! What the jobs domain runs on its own: the execution engine, the
//! lease-expiry and pruning sweep of the shards this node leads, and the
//! report of this node's GPUs to the placement group.

use super::engine_source::EngineSource;
use super::JobsService;
use crate::api::now_ms;
use orrery_exec::KindHandler;
use orrery_queue::{GpuRecord, QueueCommand, QueueResponse};
use orrery_types::{GroupId, PLACEMENT_GROUP};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Finished jobs forgotten per log entry when their retention has passed,
/// and entries per sweep (every 500 ms): up to 8 000 jobs/s per shard.
const PRUNE_BATCH: u32 = 1000;
const PRUNE_ENTRIES_PER_SWEEP: usize = 4;

impl JobsService {
    /// Starts the lease-expiry sweep, and (with `workers > 0`) the execution
    /// engine, with the built-in kinds and `handlers` (kinds other domains
    /// add) and the `hooks` of the pipeline kinds, and its GPU inventory report. Stops when `stop` turns true;
    /// the engine stops with [`Self::shutdown`].
    pub fn start(
        self: &Arc<Self>,
        stop: watch::Receiver<bool>,
        handlers: Vec<(String, Arc<dyn KindHandler>)>,
        hooks: orrery_exec::Hooks,
    ) {
        tokio::spawn(self.clone().run_lease_expiry(stop.clone()));
        tokio::spawn(super::events_hub::run(self.clone(), stop.clone()));
        let cfg = &self.node.cfg;
        if cfg.workers == 0 {
            tracing::info!("no job workers on this node (--workers 0)");
            return;
        }
        let exec = orrery_exec::ExecConfig {
            node_id: cfg.id,
            slots: cfg.workers,
            fs_root: cfg.fs_root.clone(),
            allow_command_jobs: cfg.allow_command_jobs,
            scratch_root: Some(cfg.data_dir.join("scratch")),
            command_user: cfg.command_user.clone(),
            gpus: cfg.gpus.clone(),
            ..Default::default()
        };
        let source = Arc::new(EngineSource(self.clone()));
        let gpus = orrery_exec::GpuInventory::load_selected(exec.gpus.clone());
        let engine = orrery_exec::Engine::start_with_hooks(exec, source, handlers, gpus, hooks);
        let _ = self.engine.set(Arc::new(engine));
        tokio::spawn(self.clone().run_gpu_report(stop));
    }

    /// Stops the execution engine (its running jobs are left to expire).
    pub async fn shutdown(&self) {
        if let Some(e) = self.engine.get() {
            e.shutdown().await;
        }
    }

    /// Shard leaders expire leases that ended, and forget finished jobs
    /// past their retention; runs every 500 ms.
    async fn run_lease_expiry(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => return,
            }
            for g in self.node.registry.all() {
                if g.id == PLACEMENT_GROUP
                    || g.raft.metrics().borrow().current_leader != Some(self.node.id())
                {
                    continue;
                }
                let now = now_ms();
                let due =
                    g.sm.read(|s| s.queue.next_expiry())
                        .is_some_and(|e| e <= now);
                if due {
                    self.expire_leases(g.id, now).await;
                }
                // Finished jobs past the retention period are forgotten, a
                // bounded number per entry so that no apply stalls the shard.
                let retention = self.node.cfg.job_retention.as_millis() as u64;
                let before_ms = now.saturating_sub(retention);
                let prunable =
                    g.sm.read(|s| s.queue.oldest_finished())
                        .is_some_and(|t| t < before_ms);
                if prunable {
                    self.prune(g.id, before_ms).await;
                }
            }
        }
    }

    async fn expire_leases(&self, group: GroupId, now: u64) {
        match self
            .queue_write(group, QueueCommand::ExpireLeases { now_ms: now })
            .await
        {
            Ok(QueueResponse::Expired(n)) if n > 0 => {
                tracing::info!(group, expired = n, "job leases expired");
                self.wake.notify_waiters();
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(group, "lease expiry: {e}"),
        }
    }

    /// A few entries per sweep at most, so that a backlog of expired jobs
    /// drains without starving other writes.
    async fn prune(&self, group: GroupId, before_ms: u64) {
        for _ in 0..PRUNE_ENTRIES_PER_SWEEP {
            let cmd = QueueCommand::Prune {
                before_ms,
                max: PRUNE_BATCH,
            };
            match self.queue_write(group, cmd).await {
                Ok(QueueResponse::Pruned(n)) => {
                    tracing::debug!(group, pruned = n, "finished jobs pruned");
                    if n < PRUNE_BATCH {
                        break;
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!(group, "pruning finished jobs: {e}");
                    break;
                }
            }
        }
    }

    /// Reports the engine's GPU inventory to the placement group every 10 s
    /// (only when it changed, or at least once a minute).
    async fn run_gpu_report(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut last: Option<(Vec<GpuRecord>, Instant)> = None;
        loop {
            let nap = Duration::from_secs(if last.is_none() { 1 } else { 10 });
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = shutdown.changed() => return,
            }
            let Some(engine) = self.engine.get() else {
                continue;
            };
            if !self.node.placement().is_initialized() {
                continue;
            }
            let gpus: Vec<GpuRecord> = engine
                .gpus()
                .into_iter()
                .map(|g| GpuRecord {
                    uuid: g.uuid,
                    index: g.index,
                    name: g.name,
                    memory_total_mb: g.memory_total_mb,
                    memory_used_mb: g.memory_used_mb,
                    utilization_pct: g.utilization_pct,
                    temperature_c: g.temperature_c,
                    compute_capability: g.compute_capability,
                })
                .collect();
            if let Some((prev, at)) = &last {
                if *prev == gpus && at.elapsed() < Duration::from_secs(60) {
                    continue;
                }
            }
            let cmd = QueueCommand::ReportGpus {
                node: self.node.id(),
                gpus: gpus.clone(),
                now_ms: now_ms(),
            };
            match self.queue_write(PLACEMENT_GROUP, cmd).await {
                Ok(_) => last = Some((gpus, Instant::now())),
                Err(e) => tracing::debug!("gpu report: {e}"),
            }
        }
    }
}
