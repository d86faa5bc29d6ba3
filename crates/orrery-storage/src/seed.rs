//! Seeding a group of a new node's storage from a snapshot: what
//! `orrery restore` writes, so that the node starts with the group's state
//! at a backup's log point and no log after it.

use crate::codec::encode;
use crate::log_store::{KEY_PURGED, KEY_VOTE};
use crate::state_machine::{StoredSnapshot, KEY_SNAPSHOT};
use crate::{NodeStorage, StorageError as Error};
use openraft::{Entry, RaftTypeConfig, SnapshotMeta, Vote};
use orrery_types::GroupId;

/// Stores `data` as group `group`'s current snapshot, with the log purged
/// up to the snapshot's last log id and `vote` as the stored vote, then
/// flushes. On start openraft restores the snapshot, finds an empty log
/// that begins after it, and elects a leader among the snapshot's
/// membership.
///
/// `vote` must not be below the snapshot's last log id (a term lower than
/// the last entry's would make the first leader's entries sort below the
/// ones it follows). Refuses a group that already has any state here.
pub fn seed_group<C>(
    storage: &NodeStorage,
    group: GroupId,
    meta: SnapshotMeta<C::NodeId, C::Node>,
    data: Vec<u8>,
    vote: Vote<u64>,
) -> Result<(), Error>
where
    C: RaftTypeConfig<NodeId = u64, Entry = Entry<C>>,
{
    let exists = |what: &str| Error::Corrupt {
        what: format!("group {group}"),
        detail: format!("cannot seed it: it already has {what} here"),
    };
    if !storage.wal().is_empty(group) {
        return Err(exists("a log"));
    }
    let meta_tree = storage.tree(group, "meta")?;
    let snap_tree = storage.tree(group, "snap")?;
    if !meta_tree.is_empty() {
        return Err(exists("metadata"));
    }
    if !snap_tree.is_empty() {
        return Err(exists("a snapshot"));
    }
    let last = meta.last_log_id;
    let stored = StoredSnapshot::<C> { meta, data };
    snap_tree.insert(KEY_SNAPSHOT, encode(&stored)?)?;
    if let Some(last) = &last {
        meta_tree.insert(KEY_PURGED, encode(last)?)?;
    }
    meta_tree.insert(KEY_VOTE, encode(&vote)?)?;
    // sled's flush alone is not durable (sled_sync.rs).
    storage.sled_files().flush_db(storage.db())?;
    let m = storage.manifest();
    m.record_vote(group, vote.leader_id.term, vote.leader_id.node_id)
        .map_err(|e| Error::Manifest(e.to_string()))?;
    if let Some(last) = last {
        m.record_committed(group, last.index);
    }
    m.sync().map_err(|e| Error::Manifest(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
#[path = "seed_tests.rs"]
mod tests;
