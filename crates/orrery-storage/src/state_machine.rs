//! `RaftStateMachine` over an in-memory domain state with durable snapshots.
//!
//! The domain state (`M`) is a pure, deterministic value: it sees only the
//! command and the log index, never the clock or the disk. This module owns
//! everything else: last-applied bookkeeping, membership, and persisting
//! snapshots with a checksum.
//!
//! A command applies completely or not at all: a panic in a domain apply is
//! caught, the state is rebuilt to exactly what it was before the command
//! (see `rebuild.rs`), and the command answers
//! [`StateMachine::failed_response`]. The write lock is held across the
//! apply and the rebuild, so readers never see a half-applied command.

mod rebuild;

use crate::codec::{decode, encode};
use crate::{NodeStorage, StorageError as Error};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, RaftTypeConfig, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use orrery_types::GroupId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

pub(crate) const KEY_SNAPSHOT: &[u8] = b"current";

/// The contract every group's domain state fulfils. Implementations must be
/// deterministic: the same commands applied to the same state give the same
/// state and responses on every replica.
pub trait StateMachine<C: RaftTypeConfig>: Default + Send + Sync + 'static {
    /// Applies one committed command. `index` is the command's log index,
    /// usable as a revision number. A panic here is caught and undone (the
    /// command answers [`StateMachine::failed_response`]); it must be as
    /// deterministic as the rest, i.e. depend on the command and the state
    /// only.
    fn apply(&mut self, index: u64, cmd: C::D) -> C::R;
    /// [`StateMachine::apply`] where no client reads the response: on a
    /// follower, or on a leader applying an entry an earlier leader
    /// appended. It must change the state exactly as `apply` does (and
    /// panic exactly when it does); it may return a cheaper response.
    fn apply_unobserved(&mut self, index: u64, cmd: C::D) -> C::R {
        self.apply(index, cmd)
    }
    /// Response for log entries that carry no command (blank, membership).
    fn empty_response() -> C::R;
    /// Response for a command whose apply panicked: it changed nothing, on
    /// any replica. `message` is deterministic (the log index and the
    /// panic's text), so every replica answers the same.
    fn failed_response(message: String) -> C::R;
    /// Serialises the whole state.
    fn snapshot(&self) -> Result<Vec<u8>, String>;
    /// Builds a state from `snapshot`'s output.
    fn restore(data: &[u8]) -> Result<Self, String>;
}

struct Inner<C: RaftTypeConfig, M> {
    last_applied: Option<LogId<C::NodeId>>,
    membership: StoredMembership<C::NodeId, C::Node>,
    state: M,
    /// Indexes after the stored snapshot whose apply panicked: a rebuild
    /// skips them without applying them again (it would find them anyway).
    failed: BTreeSet<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct StoredSnapshot<C: RaftTypeConfig> {
    pub(crate) meta: SnapshotMeta<C::NodeId, C::Node>,
    pub(crate) data: Vec<u8>,
}

/// The leading field of a `StoredSnapshot` record, read without the data.
#[derive(Deserialize)]
#[serde(bound = "")]
struct StoredSnapshotMeta<C: RaftTypeConfig> {
    meta: SnapshotMeta<C::NodeId, C::Node>,
}

/// Read access to a group's applied state, for serving reads.
pub struct SmHandle<C: RaftTypeConfig, M> {
    inner: Arc<RwLock<Inner<C, M>>>,
    snapshot_bytes: Arc<AtomicU64>,
}

impl<C: RaftTypeConfig, M> Clone for SmHandle<C, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            snapshot_bytes: self.snapshot_bytes.clone(),
        }
    }
}

impl<C: RaftTypeConfig, M> SmHandle<C, M> {
    /// Runs `f` on the applied state under a read lock.
    pub fn read<T>(&self, f: impl FnOnce(&M) -> T) -> T {
        let g = self.lock();
        f(&g.state)
    }

    /// Size of the state in the current snapshot (built, installed or
    /// restored on start); 0 before the first.
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes.load(Ordering::Relaxed)
    }

    /// Runs `f` on the applied state and the log id of the last entry
    /// applied to it, under one read lock (a backup's copy of a group is
    /// the state exactly at that entry).
    pub fn read_at<T>(&self, f: impl FnOnce(&M, Option<&LogId<C::NodeId>>) -> T) -> T {
        let g = self.lock();
        f(&g.state, g.last_applied.as_ref())
    }

    /// The configuration of the last membership entry applied here: one
    /// that is committed.
    pub fn applied_membership(&self) -> StoredMembership<C::NodeId, C::Node> {
        self.lock().membership.clone()
    }

    pub fn last_applied_index(&self) -> u64 {
        self.lock()
            .last_applied
            .as_ref()
            .map(|l| l.index)
            .unwrap_or(0)
    }

    fn lock(&self) -> RwLockReadGuard<'_, Inner<C, M>> {
        read_lock(&self.inner)
    }
}

/// The lock is poisoned only if a writer panics while holding it. No
/// domain code runs unguarded under the write lock: `apply` catches every
/// panic of a domain apply and rebuilds the state before answering, the
/// rebuild catches the panics of `restore` and `apply` too, and the other
/// writers only assign whole values. So a poisoned lock (which would take
/// a panic in our own bookkeeping) still holds a consistent state, and
/// taking it keeps readers from panicking in turn.
fn read_lock<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// The state machine store of one group.
pub struct StateMachineStore<C: RaftTypeConfig, M> {
    group: GroupId,
    /// This node's id: only entries it appended as leader have a client
    /// waiting for their response here. `None`: every response is built.
    local: Option<u64>,
    inner: Arc<RwLock<Inner<C, M>>>,
    snap_tree: sled::Tree,
    storage: NodeStorage,
    snapshot_seq: Arc<AtomicU64>,
    snapshot_bytes: Arc<AtomicU64>,
}

fn sm_err<NID: openraft::NodeId>(verb: ErrorVerb, e: impl ToString) -> StorageError<NID> {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

fn snap_err<NID: openraft::NodeId>(verb: ErrorVerb, e: impl ToString) -> StorageError<NID> {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

impl<C, M> StateMachineStore<C, M>
where
    C: RaftTypeConfig<NodeId = u64, Entry = Entry<C>, SnapshotData = Cursor<Vec<u8>>>,
    M: StateMachine<C>,
{
    /// Opens the group's state machine, restoring the last snapshot if any.
    pub fn open(storage: &NodeStorage, group: GroupId) -> Result<Self, Error> {
        let snap_tree = storage.tree(group, "snap")?;
        let mut inner = Inner {
            last_applied: None,
            membership: StoredMembership::default(),
            state: M::default(),
            failed: BTreeSet::new(),
        };
        let mut snapshot_bytes = 0;
        if let Some(bytes) = snap_tree.get(KEY_SNAPSHOT)? {
            let stored: StoredSnapshot<C> = decode(&bytes).map_err(|e| Error::Corrupt {
                what: format!("group {group} snapshot"),
                detail: e.to_string(),
            })?;
            inner.state = M::restore(&stored.data).map_err(|e| Error::Corrupt {
                what: format!("group {group} snapshot contents"),
                detail: e,
            })?;
            inner.last_applied = stored.meta.last_log_id;
            inner.membership = stored.meta.last_membership.clone();
            snapshot_bytes = stored.data.len() as u64;
        }
        Ok(Self {
            group,
            local: None,
            inner: Arc::new(RwLock::new(inner)),
            snap_tree,
            storage: storage.clone(),
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            snapshot_bytes: Arc::new(AtomicU64::new(snapshot_bytes)),
        })
    }

    /// Builds responses only for entries that node `local` appended as
    /// leader (see [`StateMachine::apply_unobserved`]).
    pub fn observed_by(mut self, local: u64) -> Self {
        self.local = Some(local);
        self
    }

    pub fn handle(&self) -> SmHandle<C, M> {
        SmHandle {
            inner: self.inner.clone(),
            snapshot_bytes: self.snapshot_bytes.clone(),
        }
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    /// See [`read_lock`] for why a poisoned lock is still consistent.
    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, Inner<C, M>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `stored` as the current snapshot, unless a newer one is already
    /// stored: openraft builds snapshots in a task of its own, so a build
    /// that read the state before a concurrent `install_snapshot` may finish
    /// after it, and must not replace the installed (newer) snapshot, below
    /// which the log may already be purged.
    async fn save_snapshot(
        &self,
        stored: &StoredSnapshot<C>,
    ) -> Result<(), StorageError<C::NodeId>> {
        let bytes = encode(stored).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        loop {
            let current = self
                .snap_tree
                .get(KEY_SNAPSHOT)
                .map_err(|e| snap_err(ErrorVerb::Read, e))?;
            if let Some(cur) = &current {
                // An unreadable record is simply replaced.
                if let Ok(cur) = decode::<StoredSnapshotMeta<C>>(cur) {
                    if cur.meta.last_log_id > stored.meta.last_log_id {
                        return Ok(());
                    }
                }
            }
            let swapped = self
                .snap_tree
                .compare_and_swap(KEY_SNAPSHOT, current, Some(bytes.as_slice()))
                .map_err(|e| snap_err(ErrorVerb::Write, e))?;
            if swapped.is_ok() {
                break;
            }
            // Raced with another save: compare again.
        }
        // The log below this snapshot may be purged as soon as we return.
        self.storage
            .flush()
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        self.snapshot_bytes
            .store(stored.data.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Builds a snapshot from a consistent copy of the state.
pub struct SnapshotBuilder<C: RaftTypeConfig, M> {
    store: StateMachineStore<C, M>,
}

impl<C: RaftTypeConfig, M> Clone for StateMachineStore<C, M> {
    fn clone(&self) -> Self {
        Self {
            group: self.group,
            local: self.local,
            inner: self.inner.clone(),
            snap_tree: self.snap_tree.clone(),
            storage: self.storage.clone(),
            snapshot_seq: self.snapshot_seq.clone(),
            snapshot_bytes: self.snapshot_bytes.clone(),
        }
    }
}

impl<C, M> RaftSnapshotBuilder<C> for SnapshotBuilder<C, M>
where
    C: RaftTypeConfig<NodeId = u64, Entry = Entry<C>, SnapshotData = Cursor<Vec<u8>>>,
    M: StateMachine<C>,
{
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError<C::NodeId>> {
        let (data, last_applied, membership) = {
            let g = read_lock(&self.store.inner);
            // A panic in `snapshot` fails this build, not openraft's core.
            let data = catch_unwind(AssertUnwindSafe(|| g.state.snapshot()))
                .map_err(|p| rebuild::panic_message(p.as_ref()))
                .and_then(|r| r)
                .map_err(|e| sm_err(ErrorVerb::Read, e))?;
            (data, g.last_applied, g.membership.clone())
        };
        let seq = self.store.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, seq),
            None => format!("none-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot::<C> {
            meta: meta.clone(),
            data,
        };
        self.store.save_snapshot(&stored).await?;
        tracing::debug!(group = self.store.group, snapshot = %meta.snapshot_id, bytes = stored.data.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl<C, M> RaftStateMachine<C> for StateMachineStore<C, M>
where
    C: RaftTypeConfig<NodeId = u64, Entry = Entry<C>, SnapshotData = Cursor<Vec<u8>>>,
    M: StateMachine<C>,
{
    type SnapshotBuilder = SnapshotBuilder<C, M>;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<C::NodeId>>,
            StoredMembership<C::NodeId, C::Node>,
        ),
        StorageError<C::NodeId>,
    > {
        let g = read_lock(&self.inner);
        Ok((g.last_applied, g.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<C::R>, StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Held across each apply and any rebuild: readers see a state only
        // between whole commands.
        let mut g = self.write_lock();
        let mut out = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            match entry.payload {
                EntryPayload::Blank => out.push(M::empty_response()),
                EntryPayload::Normal(cmd) => {
                    match rebuild::apply_caught::<C, M>(&mut g.state, self.local, &log_id, cmd) {
                        Ok(r) => out.push(r),
                        Err(panic) => {
                            let index = log_id.index;
                            tracing::error!(group = self.group, index, %panic, "apply panicked; undoing the command");
                            let inner = &mut *g;
                            inner.state = self
                                .state_before(index, &mut inner.failed)
                                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                            inner.failed.insert(index);
                            out.push(M::failed_response(format!(
                                "applying the command at log index {index} failed: {panic}"
                            )));
                        }
                    }
                }
                EntryPayload::Membership(m) => {
                    g.membership = StoredMembership::new(Some(log_id), m);
                    out.push(M::empty_response());
                }
            }
            // Only once the entry's outcome is settled.
            g.last_applied = Some(log_id);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<C::SnapshotData>, StorageError<C::NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<C::NodeId, C::Node>,
        snapshot: Box<C::SnapshotData>,
    ) -> Result<(), StorageError<C::NodeId>> {
        let data = snapshot.into_inner();
        let state = M::restore(&data).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let stored = StoredSnapshot::<C> {
            meta: meta.clone(),
            data,
        };
        // Persist before replacing the in-memory state, so that a crash in
        // between restarts from the new snapshot, never from a mix.
        self.save_snapshot(&stored).await?;
        let mut g = self.write_lock();
        g.state = state;
        g.failed.clear();
        g.last_applied = meta.last_log_id;
        g.membership = meta.last_membership.clone();
        tracing::info!(group = self.group, snapshot = %meta.snapshot_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<C>>, StorageError<C::NodeId>> {
        match self
            .snap_tree
            .get(KEY_SNAPSHOT)
            .map_err(|e| snap_err(ErrorVerb::Read, e))?
        {
            None => Ok(None),
            Some(bytes) => {
                let stored: StoredSnapshot<C> =
                    decode(&bytes).map_err(|e| snap_err(ErrorVerb::Read, e))?;
                Ok(Some(Snapshot {
                    meta: stored.meta,
                    snapshot: Box::new(Cursor::new(stored.data)),
                }))
            }
        }
    }
}
