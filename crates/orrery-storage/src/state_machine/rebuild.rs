//! Undoing a command whose apply panicked.
//!
//! Domain applies change their state in place, so a panic half-way leaves
//! a state that is neither "before" nor "after" the command. Cloning the
//! whole state before every command would undo that, but a shard holds
//! millions of keys. Instead a panic is rare and paid for when it happens:
//! the state before entry `i` is rebuilt from the group's stored snapshot
//! plus the log entries after it up to `i - 1`, which this node holds
//! (openraft purges the log only up to the stored snapshot). Apply is
//! deterministic, so every replica, and this one replaying its log after a
//! restart, reaches the same state and the same error for entry `i`.

use super::{StateMachine, StateMachineStore, StoredSnapshot, KEY_SNAPSHOT};
use crate::codec::decode;
use crate::StorageError as Error;
use openraft::{Entry, EntryPayload, LogId, RaftTypeConfig};
use std::any::Any;
use std::collections::BTreeSet;
use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// How often the rebuild re-reads the snapshot when the log after it has a
/// gap: a snapshot build that read the state before the failing batch took
/// the lock may store a newer snapshot meanwhile, and openraft may then
/// purge the log below it. Once the lock is held no further build can start,
/// so one retry suffices; a gap that persists is damage.
const ATTEMPTS: usize = 3;

/// The text of a panic's payload (what `panic!` was given).
pub(crate) fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

/// Applies one command, catching a panic. A client waits for the response
/// only on the node whose leadership appended the entry; elsewhere the
/// cheaper `apply_unobserved` runs (it must change the state identically).
pub(super) fn apply_caught<C, M>(
    state: &mut M,
    local: Option<u64>,
    log_id: &LogId<u64>,
    cmd: C::D,
) -> Result<C::R, String>
where
    C: RaftTypeConfig<NodeId = u64>,
    M: StateMachine<C>,
{
    let index = log_id.index;
    let observed = local.is_none_or(|n| log_id.leader_id.node_id == n);
    catch_unwind(AssertUnwindSafe(|| {
        if observed {
            state.apply(index, cmd)
        } else {
            state.apply_unobserved(index, cmd)
        }
    }))
    .map_err(|p| panic_message(p.as_ref()))
}

impl<C, M> StateMachineStore<C, M>
where
    C: RaftTypeConfig<NodeId = u64, Entry = Entry<C>, SnapshotData = Cursor<Vec<u8>>>,
    M: StateMachine<C>,
{
    /// The state exactly as it was before entry `before` was applied.
    /// `failed` holds indexes (after the stored snapshot) whose apply is
    /// known to panic; they are skipped, and any other entry found to panic
    /// while replaying is added and skipped too, as it was when first
    /// applied.
    pub(super) fn state_before(&self, before: u64, failed: &mut BTreeSet<u64>) -> Result<M, Error> {
        let group = self.group;
        let mut gap = String::new();
        for _ in 0..ATTEMPTS {
            let stored: Option<StoredSnapshot<C>> = match self.snap_tree.get(KEY_SNAPSHOT)? {
                None => None,
                Some(bytes) => Some(decode(&bytes).map_err(|e| Error::Corrupt {
                    what: format!("group {group} snapshot"),
                    detail: e.to_string(),
                })?),
            };
            let snap_last = stored
                .as_ref()
                .and_then(|s| s.meta.last_log_id)
                .map(|l| l.index);
            // Without a snapshot the log starts at openraft's first index.
            let from = snap_last.map_or(0, |i| i + 1);
            if from > before {
                return Err(Error::Corrupt {
                    what: format!("group {group} state machine"),
                    detail: format!(
                        "the stored snapshot ends at {snap_last:?}, after entry {before} that is being applied"
                    ),
                });
            }
            let raw = self
                .storage
                .wal()
                .read(group, from..before)
                .map_err(|e| Error::Io(format!("group {group} log: {e}")))?;
            // Without a snapshot the log may begin at 0 or at 1.
            let starts = |i: u64| i == from || (snap_last.is_none() && i == 1);
            let first_ok = match raw.first() {
                None => starts(before),
                Some((i, _)) => starts(*i),
            };
            let contiguous = raw.windows(2).all(|w| w[1].0 == w[0].0 + 1)
                && raw.last().is_none_or(|(i, _)| *i + 1 == before);
            if !(first_ok && contiguous) {
                gap = format!(
                    "the log holds {} entries in {from}..{before}, not every one",
                    raw.len()
                );
                continue;
            }
            failed.retain(|i| snap_last.is_none_or(|s| *i > s));
            let data = stored.map(|s| s.data);
            return self.replay(data.as_deref(), &raw, failed);
        }
        Err(Error::Corrupt {
            what: format!("group {group} log, rebuilding the state before entry {before}"),
            detail: gap,
        })
    }

    /// Restores `snapshot` (or the empty state) and applies `entries` on
    /// it, skipping `failed`. Starts over whenever an entry panics, since
    /// that entry left the state half-changed: each pass adds one index to
    /// `failed`, so this ends.
    fn replay(
        &self,
        snapshot: Option<&[u8]>,
        entries: &[(u64, std::sync::Arc<Vec<u8>>)],
        failed: &mut BTreeSet<u64>,
    ) -> Result<M, Error> {
        let group = self.group;
        'pass: loop {
            let mut state = match snapshot {
                None => M::default(),
                Some(d) => catch_unwind(AssertUnwindSafe(|| M::restore(d)))
                    .map_err(|p| panic_message(p.as_ref()))
                    .and_then(|r| r)
                    .map_err(|detail| Error::Corrupt {
                        what: format!("group {group} snapshot contents"),
                        detail,
                    })?,
            };
            for (i, bytes) in entries {
                if failed.contains(i) {
                    continue;
                }
                let entry: Entry<C> = decode(bytes).map_err(|e| Error::Corrupt {
                    what: format!("group {group} log entry {i}"),
                    detail: e.to_string(),
                })?;
                let EntryPayload::Normal(cmd) = entry.payload else {
                    continue;
                };
                if apply_caught::<C, M>(&mut state, self.local, &entry.log_id, cmd).is_err() {
                    failed.insert(*i);
                    continue 'pass;
                }
            }
            return Ok(state);
        }
    }
}
