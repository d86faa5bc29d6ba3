//! Durable storage for Orrery's Raft groups, on sled 0.34.
//!
//! One sled database per node holds every group hosted there; each group has
//! three trees (`g{id}.log`, `g{id}.meta`, `g{id}.snap`). The design follows
//! the "persistent snapshot" model that openraft documents for storage-v2:
//!
//! * the **log** and the **vote** are durable (fsync'd) before openraft is told
//!   so; log appends from every group on the node share one flusher task, so a
//!   burst of writes costs one fsync (group commit);
//! * the **state machine** lives in memory and is rebuilt on start from the
//!   last snapshot plus the log after it, which is why snapshots are fsync'd
//!   before the log below them may be purged;
//! * every stored record carries a CRC32 so that a flipped byte is reported as
//!   corruption instead of being applied or replicated.

mod codec;
mod flusher;
mod log_store;
mod manifest;
mod state_machine;

pub use codec::{decode, encode, CodecError};
pub use flusher::Flusher;
pub use log_store::LogStore;
pub use manifest::{GroupMark, Manifest};
pub use state_machine::{SmHandle, SnapshotBuilder, StateMachine, StateMachineStore};

use orrery_types::GroupId;
use std::path::Path;

/// Errors raised by the storage layer outside openraft's own error types.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record in {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    #[error("durability manifest: {0}")]
    Manifest(String),
    /// Sled holds less than this node durably acknowledged: its files were
    /// damaged (sled drops a damaged segment and all after it).
    #[error("group {group} lost durable state ({detail}); the data directory is damaged. Do not restart this node on it: move the directory away and re-add the node under a new id (docs/operations.md, \"Corrupted data directory\")")]
    Lost { group: GroupId, detail: String },
}

/// Test hook (`ORRERY_TEST_POWER_LOSS=1`): sled's periodic background flush
/// is turned off, so sled writes its buffers to the files only when Orrery
/// flushes (fsync) explicitly. `kill -9` of such a node then loses exactly
/// what Orrery did not make durable, as a power cut loses unsynced pages
/// (up to sled's 8 MiB write buffer; beyond that sled writes a full buffer
/// without fsync, which a real power cut could still lose). Tests use it to
/// show that nothing is acknowledged before it is flushed.
pub fn power_loss_simulation() -> bool {
    std::env::var_os("ORRERY_TEST_POWER_LOSS").is_some_and(|v| v == "1")
}

/// The node's storage: one sled database and the flusher shared by all groups.
#[derive(Clone)]
pub struct NodeStorage {
    db: sled::Db,
    flusher: Flusher,
    manifest: Manifest,
}

impl NodeStorage {
    /// Opens (or creates) the database under `dir`. Must be called inside a
    /// tokio runtime: the flusher is a task.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let db = sled::Config::new()
            .path(dir.join("sled"))
            // Durability comes from explicit flushes; sled's own periodic
            // flush is kept as a backstop only.
            .flush_every_ms(if power_loss_simulation() {
                None
            } else {
                Some(1000)
            })
            .open()?;
        let flusher = Flusher::spawn(db.clone());
        let manifest = Manifest::load(dir).map_err(StorageError::Manifest)?;
        let m = manifest.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(300));
            loop {
                tick.tick().await;
                let m = m.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || m.sync()).await {
                    tracing::warn!(error = %e, "writing the durability manifest failed");
                }
            }
        });
        Ok(Self {
            db,
            flusher,
            manifest,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Fails if a group the manifest knows has no trees in sled any more.
    pub fn check_groups_present(&self) -> Result<(), StorageError> {
        let stored = self.stored_groups();
        for g in self.manifest.groups() {
            if !stored.contains(&g) {
                return Err(StorageError::Lost {
                    group: g,
                    detail: "its log and metadata are missing".into(),
                });
            }
        }
        Ok(())
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    pub fn flusher(&self) -> &Flusher {
        &self.flusher
    }

    /// Group ids that have a log on this node, found from tree names.
    pub fn stored_groups(&self) -> Vec<GroupId> {
        let mut groups: Vec<GroupId> = self
            .db
            .tree_names()
            .into_iter()
            .filter_map(|name| {
                let s = std::str::from_utf8(&name).ok()?;
                let rest = s.strip_prefix('g')?.strip_suffix(".meta")?;
                rest.parse().ok()
            })
            .collect();
        groups.sort_unstable();
        groups.dedup();
        groups
    }

    /// Removes every tree of a group (used when a replica leaves this node).
    pub fn drop_group(&self, group: GroupId) -> Result<(), StorageError> {
        // Forget it in the manifest first: a crash midway must not leave a
        // manifest expecting trees that are gone.
        self.manifest
            .forget(group)
            .map_err(|e| StorageError::Manifest(e.to_string()))?;
        for suffix in ["log", "meta", "snap"] {
            self.db.drop_tree(format!("g{group}.{suffix}"))?;
        }
        self.db.flush()?;
        Ok(())
    }

    pub(crate) fn tree(&self, group: GroupId, suffix: &str) -> Result<sled::Tree, StorageError> {
        Ok(self.db.open_tree(format!("g{group}.{suffix}"))?)
    }

    /// Flushes everything to disk (fsync).
    pub async fn flush(&self) -> Result<(), StorageError> {
        self.db.flush_async().await?;
        Ok(())
    }
}
