//! Durable storage for Orrery's Raft groups.
//!
//! Each node has one write-ahead log (`wal/`, see `wal.rs`) holding the log
//! entries of every group hosted there, and one sled database (`sled/`) in
//! which each group has two trees (`g{id}.meta`: vote, commit index, purge
//! point; `g{id}.snap`: the snapshot). The design follows the "persistent
//! snapshot" model that openraft documents for storage-v2:
//!
//! * the **log** and the **vote** are durable (fsync'd) before openraft is told
//!   so; log appends from every group on the node share one writer thread, so
//!   a burst of writes costs one fsync (group commit);
//! * the **state machine** lives in memory and is rebuilt on start from the
//!   last snapshot plus the log after it, which is why snapshots are fsync'd
//!   before the log below them may be purged;
//! * every stored record carries a CRC32 so that a flipped byte is reported as
//!   corruption instead of being applied or replicated.

pub mod backup_file;
mod codec;
mod log_store;
mod manifest;
mod seed;
mod sled_sync;
mod state_machine;
mod wal;

pub use codec::{decode, encode, CodecError};
pub use log_store::LogStore;
pub use manifest::{GroupMark, Manifest};
pub use seed::seed_group;
pub use sled_sync::SledFiles;
pub use state_machine::{SmHandle, SnapshotBuilder, StateMachine, StateMachineStore};
pub use wal::{EntryLeader, NewEntry, Wal, WalStats, SEGMENT_BYTES};

use orrery_types::GroupId;
use std::path::Path;

/// Votes of groups dropped from this node, by group id (big-endian).
const DROPPED_TREE: &str = "dropped";

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
    #[error("write-ahead log: {0}")]
    Io(String),
    /// The log or sled holds less than this node durably acknowledged: its
    /// files were damaged (sled drops a damaged segment and all after it).
    #[error("group {group} lost durable state ({detail}); the data directory is damaged. Do not restart this node on it: move the directory away and re-add the node under a new id (docs/operations.md, \"Corrupted data directory\")")]
    Lost { group: GroupId, detail: String },
}

/// Test hook (`ORRERY_TEST_POWER_LOSS=1`): sled's periodic background flush
/// is turned off, so sled writes its buffers to the files only when Orrery
/// flushes (fsync) explicitly. `kill -9` of such a node then loses exactly
/// what Orrery did not make durable, as a power cut loses unsynced pages
/// (up to sled's 8 MiB write buffer; beyond that sled writes a full buffer
/// without fsync, which a real power cut could still lose). The
/// write-ahead log needs no hook: it writes a frame only right before
/// fsyncing it. Tests use it to show that nothing is acknowledged before
/// it is flushed.
pub fn power_loss_simulation() -> bool {
    std::env::var_os("ORRERY_TEST_POWER_LOSS").is_some_and(|v| v == "1")
}

/// TEST ONLY (`ORRERY_TEST_SKIP_FSYNC=1`): the write-ahead log skips the
/// `fdatasync` of its frames, so it acknowledges appends that only the page
/// cache holds. It exists to prove that the power-loss tests (the
/// `orrery-faultfs` mount, `tests/power_loss.rs`, the jepsen `power`
/// nemesis) catch a log that does not sync: with it they must find lost
/// writes. Never set it anywhere else; the node logs an error at start
/// while it is on.
pub fn test_skip_fsync() -> bool {
    static SKIP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("ORRERY_TEST_SKIP_FSYNC").is_some_and(|v| v == "1"))
}

/// The node's storage: the write-ahead log and the sled database shared by
/// all groups.
#[derive(Clone)]
pub struct NodeStorage {
    db: sled::Db,
    sled_files: SledFiles,
    wal: Wal,
    manifest: Manifest,
}

impl NodeStorage {
    /// Opens (or creates) the storage under `dir`, replaying the
    /// write-ahead log. Must be called inside a tokio runtime (the manifest
    /// writer is a task).
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        Self::open_with_segment_bytes(dir, SEGMENT_BYTES)
    }

    /// [`NodeStorage::open`] with log segments of `segment_bytes` (tests
    /// use small ones to exercise rotation and deletion).
    pub fn open_with_segment_bytes(dir: &Path, segment_bytes: u64) -> Result<Self, StorageError> {
        if test_skip_fsync() {
            tracing::error!(
                "ORRERY_TEST_SKIP_FSYNC=1: TEST ONLY. The write-ahead log does NOT fsync: \
                 acknowledged writes are lost on power loss. Never run a real node like this."
            );
        }
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
        let wal = Wal::open(&dir.join("wal"), segment_bytes)?;
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
        let sled_files = SledFiles::new(&dir.join("sled"));
        Ok(Self {
            db,
            sled_files,
            wal,
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

    /// sled's files, fsynced after each flush (see [`SledFiles`]).
    pub fn sled_files(&self) -> &SledFiles {
        &self.sled_files
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    pub fn wal(&self) -> &Wal {
        &self.wal
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
        self.wal
            .drop_group(group)
            .map_err(|e| StorageError::Io(format!("dropping group {group}: {e}")))?;
        for suffix in ["log", "meta", "snap"] {
            self.db.drop_tree(format!("g{group}.{suffix}"))?;
        }
        self.sled_files.flush_db(&self.db)?;
        Ok(())
    }

    /// [`NodeStorage::drop_group`], keeping the group's last vote (as not
    /// committed) in the `dropped` tree: if the group is later opened here
    /// again, [`LogStore::open`] starts it with that vote instead of none.
    ///
    /// Why: a replica that moved off this node may come back later, as a
    /// learner with an empty log. Had it forgotten its term, a leader of
    /// an older term, cut off since before the move, could count it in a
    /// quorum of its old configuration and commit, and acknowledge, a
    /// write the current leader never sees. With the term kept, that old
    /// leader's appends are refused.
    pub fn drop_group_keeping_vote(&self, group: GroupId) -> Result<(), StorageError> {
        let meta = self.tree(group, "meta")?;
        let vote = match meta.get(log_store::KEY_VOTE)? {
            Some(raw) => Some(decode::<openraft::Vote<u64>>(&raw)?),
            None => None,
        };
        if let Some(mut v) = vote {
            // Not committed: a committed vote of its own would bring the
            // group back as a leader (of an empty log).
            v.committed = false;
            self.db
                .open_tree(DROPPED_TREE)?
                .insert(group.to_be_bytes(), encode(&v)?)?;
            // Durable before the group's own trees go.
            self.sled_files.flush_db(&self.db)?;
        }
        self.drop_group(group)
    }

    /// The vote a dropped group left behind (see
    /// [`NodeStorage::drop_group_keeping_vote`]), encoded as the `meta`
    /// tree stores it.
    pub(crate) fn dropped_vote(&self, group: GroupId) -> Result<Option<sled::IVec>, StorageError> {
        Ok(self.db.open_tree(DROPPED_TREE)?.get(group.to_be_bytes())?)
    }

    pub(crate) fn tree(&self, group: GroupId, suffix: &str) -> Result<sled::Tree, StorageError> {
        Ok(self.db.open_tree(format!("g{group}.{suffix}"))?)
    }

    /// Flushes everything to disk (fsync).
    pub async fn flush(&self) -> Result<(), StorageError> {
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || wal.sync())
            .await
            .map_err(|e| StorageError::Io(e.to_string()))?
            .map_err(|e| StorageError::Io(e.to_string()))?;
        let (db, files) = (self.db.clone(), self.sled_files.clone());
        tokio::task::spawn_blocking(move || files.flush_db(&db))
            .await
            .map_err(|e| StorageError::Io(e.to_string()))??;
        Ok(())
    }
}

/// Flushes one sled tree (fsync) on a tokio blocking thread.
///
/// Never sled's own `flush_async`: it runs the flush on sled's I/O thread
/// pool, where it waits for a buffer write that is queued on the same pool.
/// When several groups save a vote at once (a node joining a cluster
/// starts every shard group together) every pool thread ended up waiting
/// in such a flush, the writes they waited for never ran, and the node's
/// storage stopped for good: every Raft RPC to it timed out (seen while
/// benchmarking; sled 0.34.7's pool does not grow when its threads block).
pub(crate) async fn flush_tree(tree: &sled::Tree, files: &SledFiles) -> sled::Result<usize> {
    let (tree, files) = (tree.clone(), files.clone());
    tokio::task::spawn_blocking(move || files.flush_tree(&tree))
        .await
        .unwrap_or_else(|e| Err(sled::Error::Io(std::io::Error::other(e.to_string()))))
}

#[cfg(test)]
mod flush_tests {
    use super::*;
    use std::time::Duration;

    /// Many trees written and flushed at once (what a node joining a
    /// cluster does when it starts every shard group and each saves a
    /// vote). With sled's `flush_async` this wedged sled's I/O pool for
    /// good (checked: the test then never finishes); every flush must.
    #[test]
    fn many_concurrent_flushes_all_finish() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // The work runs on a thread of its own: a wedged sled blocks the
        // runtime's workers too, and this thread must still be able to
        // report the failure.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let s = NodeStorage::open(&path).expect("open");
                let tasks: Vec<_> = (0..32u64)
                    .map(|g| {
                        let tree = s.tree(g, "meta").expect("tree");
                        let files = s.sled_files().clone();
                        tokio::spawn(async move {
                            for i in 0u32..20 {
                                tree.insert(i.to_be_bytes(), vec![7u8; 512])
                                    .expect("insert");
                                flush_tree(&tree, &files).await.expect("flush");
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
            });
            let _ = done_tx.send(());
        });
        done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("concurrent flushes never finished: sled's I/O pool is wedged");
    }
}
