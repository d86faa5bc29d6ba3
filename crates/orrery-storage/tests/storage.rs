//! Tests for `orrery-storage`: openraft's own storage suite, plus targeted
//! tests for persistence across reopen, corruption detection, snapshots and a
//! model-based property test of the log.
//!
//! `openraft::storage::LogFlushed` (the `append` callback) cannot be built
//! outside openraft, so `LogStore::append` is exercised by openraft's suite and
//! by a real single-node `Raft`. Other tests plant log entries directly in the
//! node's write-ahead log with [`plant`], as `append` does (`encode(&entry)`
//! under the entry's index and leader); `raft_single_node_*` checks that
//! against what `append` actually stored.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StoredMembership, Vote,
};
use orrery_storage::{
    decode, encode, EntryLeader, LogStore, NewEntry, NodeStorage, StateMachine, StateMachineStore,
    Wal, SEGMENT_BYTES,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Test type config and domain state machine
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestCmd {
    /// Appends `value` to the list under `key`.
    Push { key: String, value: u64 },
    /// Removes the list under `key`.
    Clear { key: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestResp {
    /// Length of the list after the command, and the index that applied it.
    Len {
        len: usize,
        index: u64,
    },
    Empty,
    /// A command whose apply panicked (this state never panics).
    Failed(String),
}

openraft::declare_raft_types!(
    pub TestConfig:
        D = TestCmd,
        R = TestResp,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TestConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// Deterministic domain state: named lists of numbers.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestState {
    lists: BTreeMap<String, Vec<u64>>,
    /// Index of the last command applied (blank/membership entries excluded).
    last_cmd_index: u64,
}

impl StateMachine<TestConfig> for TestState {
    fn apply(&mut self, index: u64, cmd: TestCmd) -> TestResp {
        self.last_cmd_index = index;
        match cmd {
            TestCmd::Push { key, value } => {
                let list = self.lists.entry(key).or_default();
                list.push(value);
                TestResp::Len {
                    len: list.len(),
                    index,
                }
            }
            TestCmd::Clear { key } => {
                self.lists.remove(&key);
                TestResp::Len { len: 0, index }
            }
        }
    }

    /// Applies as `apply` does, but answers `Empty`, so tests can tell
    /// which of the two the store called.
    fn apply_unobserved(&mut self, index: u64, cmd: TestCmd) -> TestResp {
        self.apply(index, cmd);
        TestResp::Empty
    }

    fn empty_response() -> TestResp {
        TestResp::Empty
    }

    fn failed_response(message: String) -> TestResp {
        TestResp::Failed(message)
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        encode(self).map_err(|e| e.to_string())
    }

    fn restore(data: &[u8]) -> Result<Self, String> {
        decode(data).map_err(|e| e.to_string())
    }
}

type C = TestConfig;
type Log = LogStore<C>;
type Sm = StateMachineStore<C, TestState>;
type SErr = StorageError<u64>;

const GROUP: u64 = 7;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn lid(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn blank(term: u64, index: u64) -> Entry<C> {
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Blank,
    }
}

fn push(term: u64, index: u64, key: &str, value: u64) -> Entry<C> {
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Normal(TestCmd::Push {
            key: key.into(),
            value,
        }),
    }
}

fn membership(term: u64, index: u64, voters: &[u64]) -> Entry<C> {
    let set: BTreeSet<u64> = voters.iter().copied().collect();
    let nodes: BTreeMap<u64, BasicNode> = voters
        .iter()
        .map(|id| (*id, BasicNode::new(format!("10.0.0.{id}:7000"))))
        .collect();
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![set], nodes)),
    }
}

/// A mixed entry (blank / command / membership) chosen by index, so that every
/// payload kind goes through the codec.
fn mixed(term: u64, index: u64) -> Entry<C> {
    match index % 5 {
        0 => blank(term, index),
        3 => membership(term, index, &[1, 2, 3]),
        _ => push(term, index, &format!("k{}", index % 3), index * 10),
    }
}

fn new_entry(e: &Entry<C>) -> NewEntry {
    NewEntry {
        index: e.log_id.index,
        leader: EntryLeader {
            term: e.log_id.leader_id.term,
            node: e.log_id.leader_id.node_id,
        },
        bytes: encode(e).unwrap(),
    }
}

/// Writes entries as `LogStore::append` does, and waits until they are on
/// disk.
fn plant(storage: &NodeStorage, group: u64, entries: &[Entry<C>]) {
    let wal = storage.wal();
    wal.append(
        group,
        entries.iter().map(new_entry).collect(),
        Box::new(|r| r.unwrap()),
    );
    wal.sync().unwrap();
}

/// The segment files of a node's write-ahead log, oldest first.
fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

/// Opens `dir`, retrying briefly: after every handle of a previous
/// `NodeStorage` is dropped, its flusher task still owns a `sled::Db` clone
/// until it next runs and sees its channel closed, and sled keeps the
/// directory locked until then.
async fn open_node(dir: &Path) -> NodeStorage {
    let mut last = None;
    for _ in 0..400 {
        match NodeStorage::open(dir) {
            Ok(s) => return s,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("cannot reopen {}: {:?}", dir.display(), last);
}

async fn all_entries(log: &mut Log) -> Vec<Entry<C>> {
    log.try_get_log_entries(..).await.unwrap()
}

fn ids(entries: &[Entry<C>]) -> Vec<LogId<u64>> {
    entries.iter().map(|e| e.log_id).collect()
}

fn indexes(entries: &[Entry<C>]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

fn flip_byte(tree: &sled::Tree, key: &[u8], at: impl Fn(usize) -> usize) {
    let mut v = tree
        .get(key)
        .unwrap()
        .expect("record to corrupt exists")
        .to_vec();
    let i = at(v.len());
    v[i] ^= 0x20;
    tree.insert(key, v).unwrap();
    tree.flush().unwrap();
}

async fn snapshot_bytes(sm: &mut Sm) -> Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)> {
    sm.get_current_snapshot()
        .await
        .unwrap()
        .map(|s| (s.meta, s.snapshot.into_inner()))
}

// ---------------------------------------------------------------------------
// 1. openraft's own storage test suite
// ---------------------------------------------------------------------------

/// Keeps the node's storage and its directory alive for one suite case.
/// Field order matters: the storage is dropped before the directory.
struct Guard {
    _storage: NodeStorage,
    _dir: TempDir,
}

struct Builder;

impl StoreBuilder<C, Log, Sm, Guard> for Builder {
    async fn build(&self) -> Result<(Guard, Log, Sm), SErr> {
        let dir = tempfile::tempdir().unwrap();
        let storage = NodeStorage::open(dir.path()).unwrap();
        let log = LogStore::open(&storage, GROUP).unwrap();
        let sm = StateMachineStore::open(&storage, GROUP).unwrap();
        Ok((
            Guard {
                _storage: storage,
                _dir: dir,
            },
            log,
            sm,
        ))
    }
}

/// The suite creates one tokio runtime per case, so this is a plain test.
#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

// ---------------------------------------------------------------------------
// Reading back
// ---------------------------------------------------------------------------

#[tokio::test]
async fn read_back_ranges_and_log_state() {
    let dir = tempfile::tempdir().unwrap();
    let storage = NodeStorage::open(dir.path()).unwrap();
    let mut log = Log::open(&storage, GROUP).unwrap();

    assert!(log.is_pristine());
    let st = log.get_log_state().await.unwrap();
    assert_eq!((st.last_purged_log_id, st.last_log_id), (None, None));
    assert!(all_entries(&mut log).await.is_empty());

    let entries: Vec<_> = (1..=20).map(|i| mixed(1 + i / 8, i)).collect();
    plant(&storage, GROUP, &entries);
    assert!(!log.is_pristine());

    let st = log.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, None);
    assert_eq!(st.last_log_id, Some(entries[19].log_id));

    // Full contents, payloads included.
    let got = all_entries(&mut log).await;
    assert_eq!(format!("{got:?}"), format!("{entries:?}"));

    async fn check<R>(log: &mut Log, range: R, want: Vec<u64>)
    where
        R: RangeBounds<u64> + Clone + std::fmt::Debug + Send + Sync,
    {
        let got = log.try_get_log_entries(range.clone()).await.unwrap();
        assert_eq!(indexes(&got), want, "range {range:?}");
    }
    check(&mut log, 3..7, (3..7).collect()).await;
    check(&mut log, 3..=7, (3..=7).collect()).await;
    check(&mut log, ..5, (1..5).collect()).await;
    check(&mut log, ..=5, (1..=5).collect()).await;
    check(&mut log, 15.., (15..=20).collect()).await;
    check(&mut log, 0..3, vec![1, 2]).await;
    check(&mut log, 20..=20, vec![20]).await;
    check(&mut log, 5..5, vec![]).await;
    check(&mut log, 21..30, vec![]).await;
    check(&mut log, 18..100, vec![18, 19, 20]).await;
    check(
        &mut log,
        (Bound::Excluded(3), Bound::Included(6)),
        vec![4, 5, 6],
    )
    .await;
    check(
        &mut log,
        (Bound::Excluded(3), Bound::Excluded(6)),
        vec![4, 5],
    )
    .await;
    check(&mut log, (Bound::Excluded(20), Bound::Unbounded), vec![]).await;
    // Inverted or out-of-range bounds must not panic.
    #[allow(clippy::reversed_empty_ranges)]
    check(&mut log, 9..4, vec![]).await;
    check(
        &mut log,
        (Bound::Excluded(u64::MAX), Bound::Unbounded),
        vec![],
    )
    .await;
    check(&mut log, u64::MAX.., vec![]).await;

    // The reader handed to openraft sees the same log, including later writes.
    let mut reader = log.get_log_reader().await;
    assert_eq!(
        indexes(&reader.try_get_log_entries(10..12).await.unwrap()),
        vec![10, 11]
    );
    plant(&storage, GROUP, &[blank(3, 21)]);
    assert_eq!(
        indexes(&reader.try_get_log_entries(20..).await.unwrap()),
        vec![20, 21]
    );

    assert_eq!(log.verify().unwrap(), 21);
}

#[tokio::test]
async fn groups_on_one_node_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let storage = NodeStorage::open(dir.path()).unwrap();
    let mut a = Log::open(&storage, 1).unwrap();
    let mut b = Log::open(&storage, 2).unwrap();
    plant(
        &storage,
        1,
        &(1..=10).map(|i| blank(1, i)).collect::<Vec<_>>(),
    );
    plant(
        &storage,
        2,
        &(1..=4).map(|i| push(2, i, "x", i)).collect::<Vec<_>>(),
    );

    a.purge(lid(1, 5)).await.unwrap();
    b.truncate(lid(2, 3)).await.unwrap();
    a.save_vote(&Vote::new(4, 1)).await.unwrap();

    assert_eq!(
        indexes(&all_entries(&mut a).await),
        (6..=10).collect::<Vec<_>>()
    );
    assert_eq!(indexes(&all_entries(&mut b).await), vec![1, 2]);
    assert_eq!(b.get_log_state().await.unwrap().last_purged_log_id, None);
    assert_eq!(b.read_vote().await.unwrap(), None);
    assert_eq!(a.group(), 1);
    assert_eq!(b.group(), 2);
}

// ---------------------------------------------------------------------------
// 2. Truncate and purge
// ---------------------------------------------------------------------------

#[tokio::test]
async fn truncate_and_purge_leave_no_holes_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = NodeStorage::open(dir.path()).unwrap();
        let mut log = Log::open(&storage, GROUP).unwrap();
        let entries: Vec<_> = (1..=10).map(|i| mixed(1, i)).collect();
        plant(&storage, GROUP, &entries);

        // Truncate [7, ..).
        log.truncate(lid(1, 7)).await.unwrap();
        assert_eq!(
            indexes(&all_entries(&mut log).await),
            (1..=6).collect::<Vec<_>>()
        );
        let st = log.get_log_state().await.unwrap();
        assert_eq!(
            (st.last_purged_log_id, st.last_log_id),
            (None, Some(lid(1, 6)))
        );

        // Truncating past the end is a no-op.
        log.truncate(lid(1, 50)).await.unwrap();
        assert_eq!(
            indexes(&all_entries(&mut log).await),
            (1..=6).collect::<Vec<_>>()
        );

        // Purge (.., 3].
        log.purge(lid(1, 3)).await.unwrap();
        assert_eq!(indexes(&all_entries(&mut log).await), vec![4, 5, 6]);
        let st = log.get_log_state().await.unwrap();
        assert_eq!(
            (st.last_purged_log_id, st.last_log_id),
            (Some(lid(1, 3)), Some(lid(1, 6)))
        );
        assert!(log.try_get_log_entries(..4).await.unwrap().is_empty());

        // Appending after truncate continues the log with a new term.
        plant(&storage, GROUP, &[blank(2, 7), blank(2, 8)]);
        assert_eq!(indexes(&all_entries(&mut log).await), vec![4, 5, 6, 7, 8]);
        assert_eq!(
            log.get_log_state().await.unwrap().last_log_id,
            Some(lid(2, 8))
        );
        // Every remaining entry is intact.
        assert_eq!(log.verify().unwrap(), 5);
    }
    {
        let storage = open_node(dir.path()).await;
        let mut log = Log::open(&storage, GROUP).unwrap();
        let st = log.get_log_state().await.unwrap();
        assert_eq!(
            (st.last_purged_log_id, st.last_log_id),
            (Some(lid(1, 3)), Some(lid(2, 8)))
        );
        assert_eq!(indexes(&all_entries(&mut log).await), vec![4, 5, 6, 7, 8]);

        // Purging everything leaves last_log_id == last_purged_log_id.
        log.purge(lid(2, 8)).await.unwrap();
        assert!(all_entries(&mut log).await.is_empty());
        let st = log.get_log_state().await.unwrap();
        assert_eq!(
            (st.last_purged_log_id, st.last_log_id),
            (Some(lid(2, 8)), Some(lid(2, 8)))
        );
    }
    {
        let storage = open_node(dir.path()).await;
        let mut log = Log::open(&storage, GROUP).unwrap();
        let st = log.get_log_state().await.unwrap();
        assert_eq!(
            (st.last_purged_log_id, st.last_log_id),
            (Some(lid(2, 8)), Some(lid(2, 8)))
        );
        assert!(all_entries(&mut log).await.is_empty());
    }
}

#[tokio::test]
async fn purge_beyond_last_log_id() {
    // After a snapshot install, openraft may purge past the local log's end.
    let dir = tempfile::tempdir().unwrap();
    let storage = NodeStorage::open(dir.path()).unwrap();
    let mut log = Log::open(&storage, GROUP).unwrap();
    plant(
        &storage,
        GROUP,
        &(1..=3).map(|i| blank(1, i)).collect::<Vec<_>>(),
    );
    log.purge(lid(5, 40)).await.unwrap();
    assert!(all_entries(&mut log).await.is_empty());
    let st = log.get_log_state().await.unwrap();
    assert_eq!(
        (st.last_purged_log_id, st.last_log_id),
        (Some(lid(5, 40)), Some(lid(5, 40)))
    );
    plant(&storage, GROUP, &[blank(5, 41)]);
    let st = log.get_log_state().await.unwrap();
    assert_eq!(
        (st.last_purged_log_id, st.last_log_id),
        (Some(lid(5, 40)), Some(lid(5, 41)))
    );
}

/// `purge` records the purge point durably before removing the entries, so a
/// crash in between leaves entries at or below it. When the purge point lies
/// past the end of the log (after a snapshot install), the log state must
/// still report `last_log_id >= last_purged_log_id`.
#[tokio::test]
async fn log_state_after_crash_between_purge_steps() {
    let dir = tempfile::tempdir().unwrap();
    let storage = NodeStorage::open(dir.path()).unwrap();
    let mut log = Log::open(&storage, GROUP).unwrap();
    plant(
        &storage,
        GROUP,
        &(1..=5).map(|i| blank(1, i)).collect::<Vec<_>>(),
    );
    let meta = storage.db().open_tree(format!("g{GROUP}.meta")).unwrap();

    // Purge point inside the log, entries not removed yet.
    meta.insert(b"last_purged", encode(&lid(1, 3)).unwrap())
        .unwrap();
    let st = log.get_log_state().await.unwrap();
    assert_eq!(
        (st.last_purged_log_id, st.last_log_id),
        (Some(lid(1, 3)), Some(lid(1, 5)))
    );
    // openraft reads only after the purge point.
    assert_eq!(
        indexes(&log.try_get_log_entries(4..).await.unwrap()),
        vec![4, 5]
    );

    // Purge point past the end of the log, entries not removed yet.
    meta.insert(b"last_purged", encode(&lid(3, 40)).unwrap())
        .unwrap();
    let st = log.get_log_state().await.unwrap();
    assert_eq!(
        (st.last_purged_log_id, st.last_log_id),
        (Some(lid(3, 40)), Some(lid(3, 40)))
    );

    // Redoing the purge (as openraft does) cleans up.
    log.purge(lid(3, 40)).await.unwrap();
    assert!(all_entries(&mut log).await.is_empty());
    let st = log.get_log_state().await.unwrap();
    assert_eq!(
        (st.last_purged_log_id, st.last_log_id),
        (Some(lid(3, 40)), Some(lid(3, 40)))
    );
}

// ---------------------------------------------------------------------------
// 3. Vote and committed
// ---------------------------------------------------------------------------

#[tokio::test]
async fn vote_and_committed_round_trip_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let committed_vote = Vote::new_committed(5, 3);
    {
        let storage = NodeStorage::open(dir.path()).unwrap();
        let mut log = Log::open(&storage, GROUP).unwrap();
        assert!(log.is_pristine());
        assert_eq!(log.read_vote().await.unwrap(), None);
        assert_eq!(log.read_committed().await.unwrap(), None);

        log.save_vote(&Vote::new(4, 2)).await.unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(4, 2)));
        assert!(!log.is_pristine(), "a node that voted is not pristine");
        log.save_vote(&committed_vote).await.unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(committed_vote));

        log.save_committed(Some(lid(5, 9))).await.unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(lid(5, 9)));
        log.save_committed(None).await.unwrap();
        assert_eq!(log.read_committed().await.unwrap(), None);
        log.save_committed(Some(lid(5, 12))).await.unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(lid(5, 12)));
        // Within COMMITTED_WRITE_EVERY (512) of the index last written, a
        // new commit index is held in memory only.
        log.save_committed(Some(lid(5, 100))).await.unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(lid(5, 100)));
        assert_eq!(log.verify().unwrap(), 0);
        // save_committed is deliberately not fsync'd; flush so that the
        // reopen below checks the encoding, not sled's flush timing.
        storage.flush().await.unwrap();
    }
    {
        let storage = open_node(dir.path()).await;
        let mut log = Log::open(&storage, GROUP).unwrap();
        assert!(!log.is_pristine());
        assert_eq!(log.read_vote().await.unwrap(), Some(committed_vote));
        assert!(log.read_vote().await.unwrap().unwrap().is_committed());
        // The last index written: a lagging one is safe (openraft learns the
        // rest from the leader), and it never runs ahead.
        assert_eq!(log.read_committed().await.unwrap(), Some(lid(5, 12)));
        log.save_committed(Some(lid(5, 600))).await.unwrap();
        log.save_committed(Some(lid(5, 700))).await.unwrap();
        storage.flush().await.unwrap();
        // Other groups on the node are untouched.
        let mut other = Log::open(&storage, GROUP + 1).unwrap();
        assert_eq!(other.read_vote().await.unwrap(), None);
        assert!(other.is_pristine());
    }
    {
        let storage = open_node(dir.path()).await;
        let mut log = Log::open(&storage, GROUP).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(lid(5, 600)));
    }
}

// ---------------------------------------------------------------------------
// 4. Snapshots
// ---------------------------------------------------------------------------

/// Applies a mix of entries and returns the expected domain state.
async fn apply_some(sm: &mut Sm, from: u64, to: u64) -> Vec<TestResp> {
    let entries: Vec<_> = (from..=to).map(|i| mixed(2, i)).collect();
    sm.apply(entries).await.unwrap()
}

#[tokio::test]
async fn apply_updates_state_membership_and_responses() {
    let dir = tempfile::tempdir().unwrap();
    let storage = NodeStorage::open(dir.path()).unwrap();
    let mut sm = Sm::open(&storage, GROUP).unwrap();
    assert_eq!(sm.group(), GROUP);
    let handle = sm.handle();
    assert_eq!(handle.last_applied_index(), 0);
    assert_eq!(
        sm.applied_state().await.unwrap(),
        (None, StoredMembership::default())
    );

    let resps = apply_some(&mut sm, 1, 6).await;
    // 1: push k1, 2: push k2, 3: membership, 4: push k1, 5: blank, 6: push k0
    assert_eq!(
        resps,
        vec![
            TestResp::Len { len: 1, index: 1 },
            TestResp::Len { len: 1, index: 2 },
            TestResp::Empty,
            TestResp::Len { len: 2, index: 4 },
            TestResp::Empty,
            TestResp::Len { len: 1, index: 6 },
        ]
    );
    let (applied, mem) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(lid(2, 6)));
    assert_eq!(mem.log_id(), &Some(lid(2, 3)));
    assert_eq!(mem.voter_ids().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(handle.last_applied_index(), 6);
    handle.read(|s| {
        assert_eq!(s.lists["k1"], vec![10, 40]);
        assert_eq!(s.lists["k2"], vec![20]);
        assert_eq!(s.lists["k0"], vec![60]);
        assert_eq!(s.last_cmd_index, 6);
    });

    let resp = sm
        .apply([Entry {
            log_id: lid(2, 7),
            payload: EntryPayload::Normal(TestCmd::Clear { key: "k1".into() }),
        }])
        .await
        .unwrap();
    assert_eq!(resp, vec![TestResp::Len { len: 0, index: 7 }]);
    assert!(handle.read(|s| !s.lists.contains_key("k1")));
    // Nothing is persisted by apply alone: no snapshot yet.
    assert!(sm.get_current_snapshot().await.unwrap().is_none());
}

/// With `observed_by(node)`, responses are built only for entries that
/// `node` appended as leader; the state changes the same either way.
#[tokio::test]
async fn responses_are_built_only_for_the_local_leaders_entries() {
    let dir = tempfile::tempdir().unwrap();
    let storage = NodeStorage::open(dir.path()).unwrap();
    let mut sm = Sm::open(&storage, GROUP).unwrap().observed_by(1);
    let push = |term: u64, leader: u64, index: u64| Entry::<C> {
        log_id: LogId::new(CommittedLeaderId::new(term, leader), index),
        payload: EntryPayload::Normal(TestCmd::Push {
            key: "k".into(),
            value: index,
        }),
    };
    let resps = sm
        .apply([push(1, 2, 1), push(2, 1, 2), push(3, 3, 3), push(3, 3, 4)])
        .await
        .unwrap();
    assert_eq!(
        resps,
        vec![
            TestResp::Empty,
            TestResp::Len { len: 2, index: 2 },
            TestResp::Empty,
            TestResp::Empty,
        ]
    );
    let handle = sm.handle();
    handle.read(|s| {
        assert_eq!(s.lists["k"], vec![1, 2, 3, 4]);
        assert_eq!(s.last_cmd_index, 4);
    });
    // A clone (openraft keeps one for snapshots) keeps the setting.
    let mut again = sm.clone();
    let resps = again.apply([push(4, 1, 5), push(5, 2, 6)]).await.unwrap();
    assert_eq!(
        resps,
        vec![TestResp::Len { len: 5, index: 5 }, TestResp::Empty]
    );
}

#[tokio::test]
async fn snapshot_build_and_restore_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, data, state, applied) = {
        let storage = NodeStorage::open(dir.path()).unwrap();
        let mut sm = Sm::open(&storage, GROUP).unwrap();

        // Snapshot of an empty state machine.
        let empty = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(empty.meta.last_log_id, None);
        assert_eq!(
            TestState::restore(&empty.snapshot.into_inner()).unwrap(),
            TestState::default()
        );

        apply_some(&mut sm, 1, 12).await;
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(lid(2, 12)));
        assert_eq!(snap.meta.last_membership.log_id(), &Some(lid(2, 8)));
        assert_ne!(snap.meta.snapshot_id, empty.meta.snapshot_id);
        let data = snap.snapshot.into_inner();
        let state = sm.handle().read(|s| s.clone());
        assert_eq!(TestState::restore(&data).unwrap(), state);

        // get_current_snapshot returns exactly what was built.
        let (cur_meta, cur_data) = snapshot_bytes(&mut sm).await.unwrap();
        assert_eq!(cur_meta, snap.meta);
        assert_eq!(cur_data, data);

        // Applying more does not change the stored snapshot.
        apply_some(&mut sm, 13, 14).await;
        assert_eq!(snapshot_bytes(&mut sm).await.unwrap().0, snap.meta);

        // A second build gets a different id for the later state.
        let snap2 = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_ne!(snap2.meta.snapshot_id, snap.meta.snapshot_id);
        assert_eq!(snap2.meta.last_log_id, Some(lid(2, 14)));
        let state2 = sm.handle().read(|s| s.clone());
        let applied2 = sm.applied_state().await.unwrap();
        (snap2.meta, snap2.snapshot.into_inner(), state2, applied2)
    };
    {
        let storage = open_node(dir.path()).await;
        let mut sm = Sm::open(&storage, GROUP).unwrap();
        assert_eq!(sm.applied_state().await.unwrap(), applied);
        assert_eq!(sm.handle().read(|s| s.clone()), state);
        assert_eq!(sm.handle().last_applied_index(), 14);
        let (cur_meta, cur_data) = snapshot_bytes(&mut sm).await.unwrap();
        assert_eq!(cur_meta, meta);
        assert_eq!(cur_data, data);

        // The restored machine keeps applying from where the snapshot ended.
        let resp = sm.apply([push(3, 15, "k1", 7)]).await.unwrap();
        let len = state.lists.get("k1").map_or(0, Vec::len) + 1;
        assert_eq!(resp, vec![TestResp::Len { len, index: 15 }]);
    }
}

#[tokio::test]
async fn install_snapshot_on_another_node() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let storage_a = NodeStorage::open(dir_a.path()).unwrap();
    let storage_b = NodeStorage::open(dir_b.path()).unwrap();
    let mut a = Sm::open(&storage_a, GROUP).unwrap();
    let mut b = Sm::open(&storage_b, GROUP).unwrap();

    apply_some(&mut a, 1, 9).await;
    let built = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let meta = built.meta.clone();
    let data = built.snapshot.into_inner();

    // b has some older state of its own.
    apply_some(&mut b, 1, 2).await;
    let mut rx = b.begin_receiving_snapshot().await.unwrap();
    assert!(rx.get_ref().is_empty());
    std::io::Write::write_all(&mut *rx, &data).unwrap();
    b.install_snapshot(&meta, rx).await.unwrap();

    let (cur_meta, cur_data) = snapshot_bytes(&mut b).await.unwrap();
    assert_eq!(cur_meta, meta);
    assert_eq!(cur_data, data);
    assert_eq!(
        b.applied_state().await.unwrap(),
        a.applied_state().await.unwrap()
    );
    assert_eq!(
        b.handle().read(|s| s.clone()),
        a.handle().read(|s| s.clone())
    );

    // A snapshot whose contents do not restore is refused and changes nothing.
    let bad_meta = SnapshotMeta {
        last_log_id: Some(lid(9, 100)),
        last_membership: StoredMembership::default(),
        snapshot_id: "bad".into(),
    };
    let err = b
        .install_snapshot(&bad_meta, Box::new(Cursor::new(b"not a snapshot".to_vec())))
        .await;
    assert!(err.is_err());
    assert_eq!(snapshot_bytes(&mut b).await.unwrap().0, meta);
    assert_eq!(b.applied_state().await.unwrap().0, meta.last_log_id);

    // The installed snapshot is durable.
    let state = a.handle().read(|s| s.clone());
    let applied = a.applied_state().await.unwrap();
    drop((b, storage_b));
    let storage_b = open_node(dir_b.path()).await;
    let mut b = Sm::open(&storage_b, GROUP).unwrap();
    assert_eq!(b.applied_state().await.unwrap(), applied);
    assert_eq!(b.handle().read(|s| s.clone()), state);
    assert_eq!(snapshot_bytes(&mut b).await.unwrap().0, meta);
}

/// openraft runs `build_snapshot` in a task of its own, concurrently with the
/// state-machine worker, which may meanwhile install a newer snapshot sent by
/// the leader (and then purge the log up to it). A build that read the state
/// before the install must not overwrite the newer stored snapshot, or a
/// restart would come back at the old index with the log after it purged.
#[tokio::test]
async fn stale_build_does_not_overwrite_newer_installed_snapshot() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let storage_a = NodeStorage::open(dir_a.path()).unwrap();
    let storage_b = NodeStorage::open(dir_b.path()).unwrap();

    // The leader's snapshot at index 50.
    let mut leader = Sm::open(&storage_a, GROUP).unwrap();
    apply_some(&mut leader, 1, 50).await;
    let newer = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let newer_meta = newer.meta.clone();
    let newer_data = newer.snapshot.into_inner();
    let newer_state = leader.handle().read(|s| s.clone());

    // A follower at index 10 builds a snapshot while installing the leader's.
    let mut follower = Sm::open(&storage_b, GROUP).unwrap();
    apply_some(&mut follower, 1, 10).await;
    let mut builder = follower.get_snapshot_builder().await;
    let mut installer = follower.clone();
    let (installed, built) = tokio::join!(
        installer.install_snapshot(&newer_meta, Box::new(Cursor::new(newer_data.clone()))),
        builder.build_snapshot(),
    );
    installed.unwrap();
    let built = built.unwrap();
    assert!(built.meta.last_log_id <= newer_meta.last_log_id);

    let (cur_meta, cur_data) = snapshot_bytes(&mut follower).await.unwrap();
    assert_eq!(cur_meta, newer_meta, "stored snapshot went backwards");
    assert_eq!(cur_data, newer_data);
    assert_eq!(
        follower.applied_state().await.unwrap().0,
        newer_meta.last_log_id
    );

    // After a restart the follower is at the installed snapshot, not before it.
    drop((follower, installer, builder, storage_b));
    let storage_b = open_node(dir_b.path()).await;
    let mut follower = Sm::open(&storage_b, GROUP).unwrap();
    assert_eq!(
        follower.applied_state().await.unwrap().0,
        newer_meta.last_log_id
    );
    assert_eq!(follower.handle().read(|s| s.clone()), newer_state);

    // Building again at a later index still replaces the stored snapshot.
    apply_some(&mut follower, 51, 52).await;
    let later = follower
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snapshot_bytes(&mut follower).await.unwrap().0, later.meta);
    assert_eq!(later.meta.last_log_id, Some(lid(2, 52)));
}

// ---------------------------------------------------------------------------
// 5. Corruption
// ---------------------------------------------------------------------------

/// Reopens `dir`, which must succeed.
fn reopen_ok(dir: &Path) -> NodeStorage {
    NodeStorage::open(dir).unwrap_or_else(|e| panic!("reopen failed: {e}"))
}

async fn indexes_after_reopen(dir: &Path) -> Vec<u64> {
    let storage = reopen_ok(dir);
    let mut log = Log::open(&storage, GROUP).unwrap();
    indexes(&all_entries(&mut log).await)
}

#[tokio::test]
async fn corrupt_log_segment_refuses_to_open_and_a_torn_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    // Three frames (one per plant): entries 1-2, 3-4, 5-6.
    let mut ends = Vec::new();
    {
        let storage = NodeStorage::open(dir.path()).unwrap();
        let _log = Log::open(&storage, GROUP).unwrap();
        for i in [1u64, 3, 5] {
            plant(
                &storage,
                GROUP,
                &[push(1, i, "k", i), push(1, i + 1, "k", i + 1)],
            );
            ends.push(std::fs::metadata(&segments(dir.path())[0]).unwrap().len() as usize);
        }
    }
    let seg = segments(dir.path()).pop().unwrap();
    let orig = std::fs::read(&seg).unwrap();
    assert_eq!(orig.len(), ends[2]);
    let write = |bytes: &[u8]| std::fs::write(&seg, bytes).unwrap();

    // A flipped byte in a frame that is followed by another: corruption.
    for at in [ends[0] + 1, (ends[0] + ends[1]) / 2, ends[1] - 1] {
        let mut bad = orig.clone();
        bad[at] ^= 0x20;
        write(&bad);
        let err = NodeStorage::open(dir.path())
            .err()
            .unwrap_or_else(|| panic!("flip at {at} not detected"));
        assert!(
            matches!(err, orrery_storage::StorageError::Corrupt { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("log segment"), "{err}");
    }

    // A damaged entry in the last frame is what an interrupted write
    // leaves: cut off. (A damaged record header is reported even there.)
    let mut bad = orig.clone();
    bad[ends[2] - 9 - 3] ^= 0x20;
    write(&bad);
    assert_eq!(indexes_after_reopen(dir.path()).await, vec![1, 2, 3, 4]);
    assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, ends[1]);

    // A record without its frame trailer, a partial record header, a
    // zero-filled tail: all interrupted writes.
    write(&orig[..ends[2] - 9]);
    assert_eq!(indexes_after_reopen(dir.path()).await, vec![1, 2, 3, 4]);
    for tail in [vec![1u8, 7, 0], vec![0u8; 4096]] {
        let mut b = orig.clone();
        b.extend_from_slice(&tail);
        write(&b);
        assert_eq!(
            indexes_after_reopen(dir.path()).await,
            vec![1, 2, 3, 4, 5, 6]
        );
        assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, ends[2]);
    }

    // Every open starts a new segment; a damaged end of an older one is
    // corruption, not an interrupted write (it was fsync'd before the next
    // segment was written).
    {
        let storage = reopen_ok(dir.path());
        let _log = Log::open(&storage, GROUP).unwrap();
        plant(&storage, GROUP, &[push(1, 7, "k", 7)]);
    }
    assert_eq!(segments(dir.path()).len(), 2);
    write(&orig[..ends[2] - 1]);
    let err = NodeStorage::open(dir.path()).err().expect("must refuse");
    assert!(
        matches!(err, orrery_storage::StorageError::Corrupt { .. }),
        "{err:?}"
    );
    write(&orig);
    assert_eq!(
        indexes_after_reopen(dir.path()).await,
        vec![1, 2, 3, 4, 5, 6, 7]
    );

    // Damage after open, in an entry read from disk, is caught by the
    // entry's own checksum.
    let storage = reopen_ok(dir.path());
    let mut log = Log::open(&storage, GROUP).unwrap();
    let mut bad = orig.clone();
    bad[ends[0] - 12] ^= 0x20;
    write(&bad);
    let err = log.verify().unwrap_err();
    assert!(err.to_string().contains("entry 2"), "{err}");
    assert!(log.try_get_log_entries(2..=2).await.is_err());
    assert_eq!(
        indexes(&log.try_get_log_entries(3..).await.unwrap()),
        vec![3, 4, 5, 6, 7]
    );
}

/// Writes `frames` frames (frame `f` holds entries `f*3+1 ..= f*3+1+f%3`)
/// to a fresh node in `dir`; returns the file length after each frame.
async fn write_frames(dir: &Path, frames: usize) -> (Vec<usize>, Vec<Vec<u64>>) {
    let storage = NodeStorage::open(dir).unwrap();
    let _log = Log::open(&storage, GROUP).unwrap();
    let mut ends = Vec::new();
    let mut contents = Vec::new();
    for f in 0..frames as u64 {
        let first = f * 3 + 1;
        let idx: Vec<u64> = (first..=first + f % 3).collect();
        let entries: Vec<_> = idx.iter().map(|i| push(1, *i, "k", *i * 7)).collect();
        plant(&storage, GROUP, &entries);
        ends.push(std::fs::metadata(&segments(dir)[0]).unwrap().len() as usize);
        contents.push(idx);
    }
    (ends, contents)
}

fn open_outcome(dir: &Path) -> Result<Vec<u64>, orrery_storage::StorageError> {
    let wal = Wal::open(&dir.join("wal"), SEGMENT_BYTES)?;
    let all = wal.read(GROUP, 0..u64::MAX).unwrap();
    Ok(all.into_iter().map(|(i, _)| i).collect())
}

/// A crash can leave any prefix of the last write: replay recovers exactly
/// the frames before it. A flipped byte anywhere before the last frame is
/// reported as corruption, never cut off silently; in the last frame it is
/// either reported or cuts off that frame alone. Every byte position of a
/// four-frame segment is tried.
#[tokio::test]
async fn replay_tells_an_interrupted_write_from_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let frames = 4;
    let (ends, contents) = write_frames(dir.path(), frames).await;
    let seg = segments(dir.path())[0].clone();
    let orig = std::fs::read(&seg).unwrap();
    let last_start = ends[frames - 2];
    let before: Vec<u64> = contents[..frames - 1].concat();
    assert_eq!(open_outcome(dir.path()).unwrap(), contents.concat());
    for p in last_start..orig.len() {
        std::fs::write(&seg, &orig[..p]).unwrap();
        assert_eq!(open_outcome(dir.path()).unwrap(), before, "cut at {p}");
    }
    for p in 0..orig.len() {
        for mask in [0x01u8, 0x80, 0xFF] {
            let mut bad = orig.clone();
            bad[p] ^= mask;
            std::fs::write(&seg, &bad).unwrap();
            match open_outcome(dir.path()) {
                Err(orrery_storage::StorageError::Corrupt { .. }) => {}
                Ok(got) if p >= last_start => assert_eq!(got, before, "flip at {p}"),
                other => {
                    panic!("flip {mask:#04x} at {p} (last frame starts at {last_start}): {other:?}")
                }
            }
        }
    }
}

#[tokio::test]
async fn corrupt_log_metadata_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let storage = NodeStorage::open(dir.path()).unwrap();
    let mut log = Log::open(&storage, GROUP).unwrap();
    log.save_vote(&Vote::new(3, 1)).await.unwrap();
    log.save_committed(Some(lid(3, 4))).await.unwrap();
    plant(
        &storage,
        GROUP,
        &(1..=4).map(|i| blank(3, i)).collect::<Vec<_>>(),
    );
    log.purge(lid(3, 2)).await.unwrap();
    assert_eq!(log.verify().unwrap(), 2);

    let meta = storage.db().open_tree(format!("g{GROUP}.meta")).unwrap();
    for key in [&b"vote"[..], b"committed", b"last_purged"] {
        let orig = meta.get(key).unwrap().unwrap();
        flip_byte(&meta, key, |len| len - 1);
        assert!(
            log.verify().is_err(),
            "corrupt {key:?} not detected by verify"
        );
        match key {
            b"vote" => assert!(log.read_vote().await.is_err()),
            // A store holds the index it saved last in memory; what is read
            // from sled is what a restarted node reads.
            b"committed" => assert!(Log::open(&storage, GROUP)
                .unwrap()
                .read_committed()
                .await
                .is_err()),
            _ => assert!(log.get_log_state().await.is_err()),
        }
        meta.insert(key, orig).unwrap();
        assert!(log.verify().is_ok());
    }
}

#[tokio::test]
async fn corrupt_snapshot_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let storage = NodeStorage::open(dir.path()).unwrap();
    {
        let mut sm = Sm::open(&storage, GROUP).unwrap();
        apply_some(&mut sm, 1, 5).await;
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
    }
    let snap = storage.db().open_tree(format!("g{GROUP}.snap")).unwrap();
    let orig = snap.get(b"current").unwrap().unwrap();

    for at in [0usize, 4, orig.len() / 2, orig.len() - 1] {
        flip_byte(&snap, b"current", |_| at);
        let err = Sm::open(&storage, GROUP)
            .err()
            .expect("corrupt snapshot must not open");
        assert!(
            matches!(err, orrery_storage::StorageError::Corrupt { .. }),
            "{err:?}"
        );
        snap.insert(b"current", orig.clone()).unwrap();
    }

    // Truncated record.
    snap.insert(b"current", &orig[..3]).unwrap();
    assert!(Sm::open(&storage, GROUP).is_err());

    // A record with a valid checksum whose contents the domain state machine
    // rejects is reported too.
    #[derive(Serialize)]
    struct FakeStored {
        meta: SnapshotMeta<u64, BasicNode>,
        data: Vec<u8>,
    }
    let fake = FakeStored {
        meta: SnapshotMeta {
            last_log_id: Some(lid(1, 1)),
            last_membership: Default::default(),
            snapshot_id: "x".into(),
        },
        data: b"garbage".to_vec(),
    };
    snap.insert(b"current", encode(&fake).unwrap()).unwrap();
    let err = Sm::open(&storage, GROUP)
        .err()
        .expect("bad contents must not open");
    assert!(err.to_string().contains("snapshot contents"), "{err}");

    // Restoring the original record makes the group usable again.
    snap.insert(b"current", orig).unwrap();
    let mut sm = Sm::open(&storage, GROUP).unwrap();
    assert_eq!(sm.applied_state().await.unwrap().0, Some(lid(2, 5)));
}

// ---------------------------------------------------------------------------
// 7. stored_groups, drop_group
// ---------------------------------------------------------------------------

#[tokio::test]
async fn stored_groups_survive_reopen_and_drop_group() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = NodeStorage::open(dir.path()).unwrap();
        assert!(storage.stored_groups().is_empty());
        for g in [42u64, 3, 10, 1] {
            let mut log = Log::open(&storage, g).unwrap();
            let _sm = Sm::open(&storage, g).unwrap();
            log.save_vote(&Vote::new(1, g)).await.unwrap();
        }
        // Opening twice does not duplicate.
        let _ = Log::open(&storage, 3).unwrap();
        assert_eq!(storage.stored_groups(), vec![1, 3, 10, 42]);
        // An unrelated tree is not a group.
        storage.db().open_tree("gx.meta").unwrap();
        storage.db().open_tree("other").unwrap();
        storage.flush().await.unwrap();
    }
    {
        let storage = open_node(dir.path()).await;
        assert_eq!(storage.stored_groups(), vec![1, 3, 10, 42]);
        storage.drop_group(3).unwrap();
        assert_eq!(storage.stored_groups(), vec![1, 10, 42]);
    }
    {
        let storage = open_node(dir.path()).await;
        assert_eq!(storage.stored_groups(), vec![1, 10, 42]);
        let mut log = Log::open(&storage, 10).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(1, 10)));
        // A dropped group comes back empty.
        let mut gone = Log::open(&storage, 3).unwrap();
        assert!(gone.is_pristine());
        assert_eq!(gone.read_vote().await.unwrap(), None);
        assert!(Sm::open(&storage, 3)
            .unwrap()
            .get_current_snapshot()
            .await
            .unwrap()
            .is_none());
    }
}

/// A group dropped keeping its vote (a replica moved off the node) comes
/// back with no entries and no snapshot, but with its last vote, no longer
/// committed, across a restart; other groups are untouched.
#[tokio::test]
async fn a_group_dropped_keeping_its_vote_comes_back_with_that_term_only() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = NodeStorage::open(dir.path()).unwrap();
        for g in [5u64, 6] {
            let mut log = Log::open(&storage, g).unwrap();
            log.save_vote(&Vote::new_committed(7, 2)).await.unwrap();
        }
        plant(&storage, 5, &[push(7, 1, "a", 1), push(7, 2, "b", 2)]);
        plant(&storage, 6, &[push(7, 1, "c", 3)]);
        storage.flush().await.unwrap();
        storage.drop_group_keeping_vote(5).unwrap();
        assert_eq!(storage.stored_groups(), vec![6]);
    }
    let storage = open_node(dir.path()).await;
    assert_eq!(storage.stored_groups(), vec![6]);
    let mut back = Log::open(&storage, 5).unwrap();
    assert_eq!(back.verify().unwrap(), 0);
    assert!(all_entries(&mut back).await.is_empty());
    assert_eq!(back.read_vote().await.unwrap(), Some(Vote::new(7, 2)));
    assert!(Sm::open(&storage, 5)
        .unwrap()
        .get_current_snapshot()
        .await
        .unwrap()
        .is_none());
    let mut other = Log::open(&storage, 6).unwrap();
    assert_eq!(all_entries(&mut other).await.len(), 1);
    // A group dropped without keeping its vote still comes back empty.
    storage.drop_group(6).unwrap();
    let mut gone = Log::open(&storage, 6).unwrap();
    assert!(gone.is_pristine());
    assert_eq!(gone.read_vote().await.unwrap(), None);
}

// ---------------------------------------------------------------------------
// Write-ahead log
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wal_acknowledges_appends_in_order_across_groups() {
    let dir = tempfile::tempdir().unwrap();
    const N: u64 = 500;
    {
        let storage = NodeStorage::open(dir.path()).unwrap();
        let done = Arc::new(Mutex::new(Vec::new()));
        for i in 0..N {
            let done = done.clone();
            storage.wal().append(
                i % 5,
                vec![new_entry(&push(1, i / 5 + 1, "k", i))],
                Box::new(move |r| {
                    r.unwrap();
                    done.lock().unwrap().push(i);
                }),
            );
        }
        storage.wal().sync().unwrap();
        assert_eq!(*done.lock().unwrap(), (0..N).collect::<Vec<_>>());
        let st = storage.wal().stats();
        assert_eq!(st.appends, N);
        assert!((1..=N).contains(&st.syncs), "{st:?}");
        assert!(st.bytes > N * 40 && st.segments == 1, "{st:?}");
    }
    let storage = reopen_ok(dir.path());
    for g in 0..5u64 {
        let mut log = Log::open(&storage, g).unwrap();
        let all = all_entries(&mut log).await;
        assert_eq!(indexes(&all), (1..=N / 5).collect::<Vec<_>>(), "group {g}");
    }
}

#[tokio::test]
async fn log_segments_rotate_and_fully_purged_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (1u64, 2u64);
    {
        let storage = NodeStorage::open_with_segment_bytes(dir.path(), 1024).unwrap();
        let mut la = Log::open(&storage, a).unwrap();
        let mut lb = Log::open(&storage, b).unwrap();
        // Entries large enough that compaction leaves these busy logs alone.
        let key = "k".repeat(400);
        for i in (1..=200u64).step_by(10) {
            let batch: Vec<_> = (i..i + 10).map(|j| push(1, j, &key, j)).collect();
            plant(&storage, a, &batch);
            plant(&storage, b, &batch);
        }
        let before = segments(dir.path()).len();
        assert!(before > 5, "only {before} segments");
        // Group b still needs all its entries; a keeps its last 50.
        la.purge(lid(1, 150)).await.unwrap();
        assert_eq!(
            indexes(&all_entries(&mut lb).await),
            (1..=200).collect::<Vec<_>>()
        );
        assert_eq!(lb.verify().unwrap(), 200);
        lb.purge(lid(1, 150)).await.unwrap();
        let after = segments(dir.path()).len();
        assert!(after < before * 3 / 4, "{before} -> {after} segments");
        for log in [&mut la, &mut lb] {
            assert_eq!(
                indexes(&all_entries(log).await),
                (151..=200).collect::<Vec<_>>()
            );
        }
    }
    {
        // Replay (and reads from disk) after the deletion.
        let storage = reopen_ok(dir.path());
        for g in [a, b] {
            let mut log = Log::open(&storage, g).unwrap();
            assert_eq!(log.verify().unwrap(), 50);
            assert_eq!(
                indexes(&all_entries(&mut log).await),
                (151..=200).collect::<Vec<_>>()
            );
        }
        // A dropped group's entries do not come back, and stop holding
        // segments.
        storage.drop_group(b).unwrap();
        let mut la = Log::open(&storage, a).unwrap();
        la.purge(lid(1, 200)).await.unwrap();
        plant(&storage, a, &[push(1, 201, "k", 201)]);
    }
    let storage = reopen_ok(dir.path());
    assert!(Log::open(&storage, b).unwrap().is_pristine());
    let mut la = Log::open(&storage, a).unwrap();
    assert_eq!(indexes(&all_entries(&mut la).await), vec![201]);
    assert!(
        segments(dir.path()).len() <= 2,
        "{:?}",
        segments(dir.path())
    );
}

/// A group that rarely writes never reaches its snapshot, so it never
/// purges; its few entries must not keep every later segment on disk.
#[tokio::test]
async fn a_rarely_written_group_does_not_pin_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (idle, busy) = (1u64, 2u64);
    let mut most = 0;
    {
        let storage = NodeStorage::open_with_segment_bytes(dir.path(), 1024).unwrap();
        let _li = Log::open(&storage, idle).unwrap();
        let mut lb = Log::open(&storage, busy).unwrap();
        plant(&storage, idle, &[push(1, 1, "i", 1), push(1, 2, "i", 2)]);
        for i in (1..=400u64).step_by(10) {
            let batch: Vec<_> = (i..i + 10).map(|j| push(1, j, "k", j)).collect();
            plant(&storage, busy, &batch);
            // The busy group keeps little log, as after snapshots.
            lb.purge(lid(1, i + 4)).await.unwrap();
            storage.wal().sync().unwrap();
            most = most.max(segments(dir.path()).len());
        }
        assert!(most <= 8, "up to {most} segments on disk");
        assert!(storage.wal().stats().moved > 0);
        assert!(
            storage.wal().stats().bytes > 20 * 1024,
            "too few writes to matter"
        );
    }
    let storage = reopen_ok(dir.path());
    let mut li = Log::open(&storage, idle).unwrap();
    let got = all_entries(&mut li).await;
    assert_eq!(ids(&got), vec![lid(1, 1), lid(1, 2)]);
    assert_eq!(li.verify().unwrap(), 2);
    let mut lb = Log::open(&storage, busy).unwrap();
    assert_eq!(
        indexes(&all_entries(&mut lb).await),
        (396..=400).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_log_kept_in_sled_by_an_older_version_moves_to_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = NodeStorage::open(dir.path()).unwrap();
        let tree = storage.db().open_tree(format!("g{GROUP}.log")).unwrap();
        for i in 1..=6u64 {
            tree.insert(i.to_be_bytes(), encode(&mixed(2, i)).unwrap())
                .unwrap();
        }
        let meta = storage.db().open_tree(format!("g{GROUP}.meta")).unwrap();
        meta.insert(b"last_purged", encode(&lid(2, 2)).unwrap())
            .unwrap();
        storage.db().flush().unwrap();
    }
    let expect: Vec<LogId<u64>> = (3..=6).map(|i| lid(2, i)).collect();
    for _ in 0..2 {
        let storage = reopen_ok(dir.path());
        let mut log = Log::open(&storage, GROUP).unwrap();
        assert_eq!(ids(&all_entries(&mut log).await), expect);
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id, Some(lid(2, 6)));
        let name = format!("g{GROUP}.log");
        assert!(!storage
            .db()
            .tree_names()
            .iter()
            .any(|n| n == name.as_bytes()));
    }
}

// ---------------------------------------------------------------------------
// LogStore::append through a real single-node Raft
// ---------------------------------------------------------------------------

struct NoNetwork;

impl RaftNetworkFactory<C> for NoNetwork {
    type Network = NoNetwork;
    async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> Self::Network {
        NoNetwork
    }
}

fn unreachable_err<E: std::error::Error>() -> RPCError<u64, BasicNode, E> {
    RPCError::Unreachable(openraft::error::Unreachable::new(&std::io::Error::other(
        "single node",
    )))
}

impl RaftNetwork<C> for NoNetwork {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable_err())
    }
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<C>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(unreachable_err())
    }
    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable_err())
    }
}

fn raft_config() -> Arc<openraft::Config> {
    Arc::new(
        openraft::Config {
            heartbeat_interval: 50,
            election_timeout_min: 100,
            election_timeout_max: 200,
            snapshot_policy: openraft::SnapshotPolicy::Never,
            ..Default::default()
        }
        .validate()
        .unwrap(),
    )
}

async fn start_raft(
    storage: &NodeStorage,
) -> (openraft::Raft<C>, orrery_storage::SmHandle<C, TestState>) {
    let log = Log::open(storage, GROUP).unwrap();
    let sm = Sm::open(storage, GROUP).unwrap();
    let handle = sm.handle();
    let raft = openraft::Raft::new(1, raft_config(), NoNetwork, log, sm)
        .await
        .unwrap();
    (raft, handle)
}

const WAIT: Option<Duration> = Some(Duration::from_secs(5));

#[tokio::test]
async fn raft_single_node_append_apply_snapshot_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (state, last_index, snap_index) = {
        let storage = NodeStorage::open(dir.path()).unwrap();
        let (raft, handle) = start_raft(&storage).await;
        raft.initialize(BTreeMap::from([(1u64, BasicNode::new("127.0.0.1:1"))]))
            .await
            .unwrap();
        raft.wait(WAIT).current_leader(1, "leader").await.unwrap();

        for i in 0..30u64 {
            let key = format!("k{}", i % 4);
            let resp = raft
                .client_write(TestCmd::Push { key, value: i })
                .await
                .unwrap();
            assert_eq!(
                resp.data,
                TestResp::Len {
                    len: (i / 4 + 1) as usize,
                    index: resp.log_id.index
                }
            );
        }
        let metrics = raft.metrics().borrow().clone();
        let last_index = metrics.last_log_index.unwrap();

        // What append stored is what `plant` writes, with no holes.
        let stored = storage.wal().read(GROUP, 0..u64::MAX).unwrap();
        assert_eq!(stored.len() as u64, last_index + 1);
        for (expect, (index, bytes)) in stored.into_iter().enumerate() {
            assert_eq!(index, expect as u64);
            let e: Entry<C> = decode(&bytes).unwrap();
            assert_eq!(e.log_id.index, index);
            assert_eq!(storage.wal().last(GROUP).map(|(i, _)| i), Some(last_index));
        }

        raft.trigger().snapshot().await.unwrap();
        raft.wait(WAIT)
            .snapshot(metrics.last_applied.unwrap(), "snapshot")
            .await
            .unwrap();
        let snap_index = 20;
        raft.trigger().purge_log(snap_index).await.unwrap();
        raft.wait(WAIT)
            .metrics(|m| m.purged.map(|p| p.index) == Some(snap_index), "purged")
            .await
            .unwrap();

        // More writes after the snapshot: these must be re-applied on restart.
        for i in 30..35u64 {
            raft.client_write(TestCmd::Push {
                key: "tail".into(),
                value: i,
            })
            .await
            .unwrap();
        }
        let last_index = raft.metrics().borrow().last_log_index.unwrap();
        raft.wait(WAIT)
            .applied_index(Some(last_index), "applied")
            .await
            .unwrap();
        let state = handle.read(|s| s.clone());
        assert_eq!(state.lists["tail"], (30..35).collect::<Vec<_>>());
        assert_eq!(state.last_cmd_index, last_index);

        let log = Log::open(&storage, GROUP).unwrap();
        assert_eq!(log.verify().unwrap(), last_index - snap_index);
        raft.shutdown().await.unwrap();
        (state, last_index, snap_index)
    };

    // Restart: the state machine comes back from the snapshot, then the log
    // after it is re-applied.
    let storage = open_node(dir.path()).await;
    {
        let mut log = Log::open(&storage, GROUP).unwrap();
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id.map(|l| l.index), Some(snap_index));
        assert_eq!(st.last_log_id.map(|l| l.index), Some(last_index));
        let mut sm = Sm::open(&storage, GROUP).unwrap();
        let applied = sm.applied_state().await.unwrap().0.unwrap().index;
        assert!(
            applied >= snap_index && applied < last_index,
            "snapshot at {applied}"
        );
    }
    let (raft, handle) = start_raft(&storage).await;
    raft.wait(WAIT)
        .current_leader(1, "leader again")
        .await
        .unwrap();
    raft.wait(WAIT)
        .applied_index_at_least(Some(last_index), "re-applied")
        .await
        .unwrap();
    let after = handle.read(|s| s.clone());
    assert_eq!(after.lists, state.lists);
    let resp = raft
        .client_write(TestCmd::Push {
            key: "tail".into(),
            value: 99,
        })
        .await
        .unwrap();
    assert_eq!(
        resp.data,
        TestResp::Len {
            len: 6,
            index: resp.log_id.index
        }
    );
    raft.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------
// 6. Model-based property test
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// Append `n` entries; `new_term` starts a new term first.
    Append {
        n: u64,
        new_term: bool,
    },
    /// Truncate at a position in the non-purged log (as a fraction).
    Truncate(u8),
    /// Purge up to a position in the log (as a fraction); 255 = past the end.
    Purge(u8),
    Vote(u64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..8, any::<bool>()).prop_map(|(n, new_term)| Op::Append { n, new_term }),
        2 => any::<u8>().prop_map(Op::Truncate),
        2 => any::<u8>().prop_map(Op::Purge),
        1 => (1u64..100).prop_map(Op::Vote),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Default)]
struct Model {
    entries: Vec<LogId<u64>>,
    purged: Option<LogId<u64>>,
    term: u64,
    vote: Option<Vote<u64>>,
}

impl Model {
    fn last(&self) -> Option<LogId<u64>> {
        self.entries.last().copied().or(self.purged)
    }
    fn next_index(&self) -> u64 {
        self.last().map_or(0, |l| l.index + 1)
    }
}

fn pick(lo: u64, hi: u64, frac: u8) -> u64 {
    // lo..=hi
    lo + (hi - lo) * u64::from(frac) / 255
}

async fn check_model(log: &mut Log, model: &Model) {
    let st = log.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, model.purged, "last_purged");
    assert_eq!(st.last_log_id, model.last(), "last_log_id");
    let all = all_entries(log).await;
    assert_eq!(ids(&all), model.entries, "contents");
    assert_eq!(log.verify().unwrap(), model.entries.len() as u64);
    assert_eq!(log.read_vote().await.unwrap(), model.vote);
    if let (Some(first), Some(last)) = (model.entries.first(), model.entries.last()) {
        let (a, b) = (first.index, last.index);
        let mid = a + (b - a) / 2;
        let got = log.try_get_log_entries(mid..=b).await.unwrap();
        assert_eq!(ids(&got), model.entries[(mid - a) as usize..].to_vec());
        let got = log.try_get_log_entries(..mid).await.unwrap();
        assert_eq!(ids(&got), model.entries[..(mid - a) as usize].to_vec());
    }
}

/// Small segments, so that the model test also rotates, compacts and
/// deletes segments between its checks and reopens.
const MODEL_SEGMENT_BYTES: u64 = 200;

async fn run_ops(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut storage =
        NodeStorage::open_with_segment_bytes(dir.path(), MODEL_SEGMENT_BYTES).unwrap();
    let mut log = Log::open(&storage, GROUP).unwrap();
    let mut model = Model {
        term: 1,
        ..Default::default()
    };
    for op in ops {
        match op {
            Op::Append { n, new_term } => {
                if new_term {
                    model.term += 1;
                }
                let start = model.next_index();
                let entries: Vec<_> = (start..start + n).map(|i| mixed(model.term, i)).collect();
                plant(&storage, GROUP, &entries);
                model.entries.extend(entries.iter().map(|e| e.log_id));
            }
            Op::Truncate(frac) => {
                // openraft only truncates entries that are not committed, hence
                // never at or below the purge point.
                let Some(first) = model.entries.first() else {
                    continue;
                };
                let last = model.entries.last().unwrap();
                let at = pick(first.index, last.index, frac);
                let pos = (at - first.index) as usize;
                log.truncate(model.entries[pos]).await.unwrap();
                model.entries.truncate(pos);
            }
            Op::Purge(frac) => {
                if frac == 255 {
                    // Past the end, as after a snapshot install.
                    model.term += 1;
                    let id = LogId::new(
                        CommittedLeaderId::new(model.term, 1),
                        model.next_index() + 3,
                    );
                    log.purge(id).await.unwrap();
                    model.entries.clear();
                    model.purged = Some(id);
                    continue;
                }
                let Some(first) = model.entries.first() else {
                    continue;
                };
                let last = model.entries.last().unwrap();
                let at = pick(first.index, last.index, frac);
                let pos = (at - first.index) as usize;
                let id = model.entries[pos];
                log.purge(id).await.unwrap();
                model.entries.drain(..=pos);
                model.purged = Some(id);
            }
            Op::Vote(term) => {
                let v = Vote::new(term, 1);
                log.save_vote(&v).await.unwrap();
                model.vote = Some(v);
            }
            Op::Reopen => {
                drop(log);
                drop(storage);
                storage = reopen_model(dir.path());
                log = Log::open(&storage, GROUP).unwrap();
            }
        }
        check_model(&mut log, &model).await;
    }
    drop(log);
    drop(storage);
    let storage = reopen_model(dir.path());
    let mut log = Log::open(&storage, GROUP).unwrap();
    check_model(&mut log, &model).await;
}

/// Reopens the model test's storage. sled's flusher thread can hold the
/// database (and its file lock) for a moment after the last handle is
/// dropped; on a loaded machine the reopen then fails with "could not
/// acquire lock". That is the test reopening within one process, not a
/// restart (a new process waits for the old one to exit), so it retries.
fn reopen_model(dir: &Path) -> NodeStorage {
    let start = std::time::Instant::now();
    loop {
        match NodeStorage::open_with_segment_bytes(dir, MODEL_SEGMENT_BYTES) {
            Ok(s) => return s,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && start.elapsed() < std::time::Duration::from_secs(10) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("reopen failed: {e}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..25)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_ops(ops));
    }
}

#[tokio::test]
async fn manifest_detects_a_log_or_vote_that_went_back() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open_node(dir.path()).await;
        let entries: Vec<Entry<C>> = (1..=10).map(|i| blank(1, i)).collect();
        plant(&storage, 7, &entries);
        let mut log = Log::open(&storage, 7).unwrap();
        log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        log.save_committed(Some(lid(1, 10))).await.unwrap();
        storage.manifest().sync().unwrap();
        log.check_durable().unwrap();
    }
    // Reopen: the manifest is read back and the intact log passes.
    {
        let storage = open_node(dir.path()).await;
        assert_eq!(
            storage
                .manifest()
                .mark(7)
                .map(|m| (m.vote_term, m.committed)),
            Some((1, Some(10)))
        );
        storage.check_groups_present().unwrap();
        let log = Log::open(&storage, 7).unwrap();
        log.check_durable().unwrap();
        // Entries after the commit index may go (truncation); those up to it may not.
        let mut log = log;
        log.truncate(lid(1, 8)).await.unwrap();
        let err = log.check_durable().unwrap_err();
        assert!(
            err.to_string().contains("lost durable state"),
            "unexpected error: {err}"
        );
    }
    // A vote older than the recorded one, and a group gone missing.
    {
        let storage = open_node(dir.path()).await;
        storage.manifest().record_vote(8, 3, 2).unwrap();
        let err = storage.check_groups_present().unwrap_err();
        assert!(err.to_string().contains("group 8"), "{err}");
        let log = Log::open(&storage, 8).unwrap();
        assert!(
            log.check_durable().is_err(),
            "missing vote must be detected"
        );
        // Dropping a group on purpose forgets it.
        storage.drop_group(8).unwrap();
        storage.manifest().forget(7).unwrap();
        storage.check_groups_present().unwrap();
    }
}
