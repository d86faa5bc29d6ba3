//! A command applies completely or not at all (issue 23, item 5).
//!
//! A test state machine changes several fields one after another and, for
//! commands marked to fail, panics at a chosen point between them, leaving
//! its state half-changed. Random command sequences, with snapshots (and
//! log purges up to them) and restarts at random points, go through the
//! real `StateMachineStore` over a real node storage (sled and the
//! write-ahead log on a temporary directory). Every response and the state
//! after every batch must equal a model that simply skips the failing
//! commands, and a restart that replays the log must reach the same.

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder};
use orrery_storage::{
    decode, encode, EntryLeader, LogStore, NewEntry, NodeStorage, StateMachine, StateMachineStore,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Add {
    key: u8,
    value: u64,
    /// Panic before mutation step `n` (0..=STEPS; STEPS: after every
    /// mutation, just before answering).
    fail_at: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resp {
    Done {
        index: u64,
        sum: u64,
        count: u64,
    },
    /// What `apply_unobserved` answers.
    Unobserved,
    Empty,
    Failed(String),
}

openraft::declare_raft_types!(
    pub Cfg:
        D = Add,
        R = Resp,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<Cfg>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// Number of mutation steps in one apply.
const STEPS: u8 = 4;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acc {
    sum: u64,
    count: u64,
    values: Vec<u64>,
    by_key: BTreeMap<u8, u64>,
    last_index: u64,
}

impl Acc {
    fn change(&mut self, index: u64, cmd: &Add) {
        let fail = |step: u8| {
            if cmd.fail_at == Some(step) {
                panic!("injected failure at step {step}");
            }
        };
        fail(0);
        self.sum += cmd.value;
        fail(1);
        self.count += 1;
        fail(2);
        self.values.push(cmd.value);
        fail(3);
        *self.by_key.entry(cmd.key).or_default() += cmd.value;
        self.last_index = index;
        fail(STEPS);
    }
}

impl StateMachine<Cfg> for Acc {
    fn apply(&mut self, index: u64, cmd: Add) -> Resp {
        self.change(index, &cmd);
        Resp::Done {
            index,
            sum: self.sum,
            count: self.count,
        }
    }
    fn apply_unobserved(&mut self, index: u64, cmd: Add) -> Resp {
        self.change(index, &cmd);
        Resp::Unobserved
    }
    fn empty_response() -> Resp {
        Resp::Empty
    }
    fn failed_response(message: String) -> Resp {
        Resp::Failed(message)
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        encode(self).map_err(|e| e.to_string())
    }
    fn restore(data: &[u8]) -> Result<Self, String> {
        decode(data).map_err(|e| e.to_string())
    }
}

type Sm = StateMachineStore<Cfg, Acc>;
type Log = LogStore<Cfg>;
const GROUP: u64 = 3;
/// This node: entries appended by leader 2 go through `apply_unobserved`.
const LOCAL: u64 = 1;
/// Small segments, so that purges delete some and reads hit the disk.
const SEGMENT_BYTES: u64 = 2048;

#[derive(Debug, Clone)]
enum Step {
    Cmd {
        leader: u64,
        cmd: Add,
    },
    Blank,
    /// Apply what is pending as one batch.
    Apply,
    /// Apply, then build a snapshot; with `purge`, purge the log up to it.
    Snapshot {
        purge: bool,
    },
    /// Apply, then reopen the node and replay the log after the snapshot.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    let cmd = (1u64..=2, 0u8..4, 1u64..1000, 0u8..10, 0u8..=STEPS).prop_map(
        |(leader, key, value, dice, at)| Step::Cmd {
            leader,
            // About one command in five fails.
            cmd: Add {
                key,
                value,
                fail_at: (dice < 2).then_some(at),
            },
        },
    );
    prop_oneof![
        12 => cmd,
        1 => Just(Step::Blank),
        3 => Just(Step::Apply),
        2 => any::<bool>().prop_map(|purge| Step::Snapshot { purge }),
        1 => Just(Step::Restart),
    ]
}

/// What a correct store answers, and its state: failing commands skipped.
#[derive(Default)]
struct Model {
    state: Acc,
    /// Expected response of every entry, by index.
    resps: BTreeMap<u64, Resp>,
}

impl Model {
    fn apply(&mut self, e: &Entry<Cfg>) {
        let index = e.log_id.index;
        let resp = match &e.payload {
            EntryPayload::Normal(cmd) => match cmd.fail_at {
                Some(at) => Resp::Failed(format!(
                    "applying the command at log index {index} failed: injected failure at step {at}"
                )),
                None => {
                    let mut next = self.state.clone();
                    next.change(index, cmd);
                    self.state = next;
                    if e.log_id.leader_id.node_id == LOCAL {
                        Resp::Done {
                            index,
                            sum: self.state.sum,
                            count: self.state.count,
                        }
                    } else {
                        Resp::Unobserved
                    }
                }
            },
            _ => Resp::Empty,
        };
        self.resps.insert(index, resp);
    }
}

fn plant(storage: &NodeStorage, entries: &[Entry<Cfg>]) {
    let new = entries
        .iter()
        .map(|e| NewEntry {
            index: e.log_id.index,
            leader: EntryLeader {
                term: e.log_id.leader_id.term,
                node: e.log_id.leader_id.node_id,
            },
            bytes: encode(e).expect("encode"),
        })
        .collect();
    storage
        .wal()
        .append(GROUP, new, Box::new(|r| r.expect("append")));
    storage.wal().sync().expect("sync");
}

/// Opens `dir`, retrying: a dropped `NodeStorage`'s background task holds
/// sled's directory lock until it next runs.
async fn open_node(dir: &Path) -> NodeStorage {
    let mut last = None;
    for _ in 0..400 {
        match NodeStorage::open_with_segment_bytes(dir, SEGMENT_BYTES) {
            Ok(s) => return s,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("cannot reopen {}: {last:?}", dir.display());
}

async fn open_all(dir: &Path) -> (NodeStorage, Log, Sm) {
    let storage = open_node(dir).await;
    let log = Log::open(&storage, GROUP).expect("log");
    let sm = Sm::open(&storage, GROUP).expect("sm").observed_by(LOCAL);
    (storage, log, sm)
}

/// Applies `entries` as one batch and checks responses and state.
async fn apply_checked(sm: &mut Sm, model: &Model, entries: Vec<Entry<Cfg>>) {
    let Some(last) = entries.last().map(|e| e.log_id.index) else {
        return;
    };
    let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    let got = sm.apply(entries).await.expect("apply");
    let want: Vec<Resp> = indexes.iter().map(|i| model.resps[i].clone()).collect();
    assert_eq!(got, want, "responses of entries {indexes:?}");
    let h = sm.handle();
    assert_eq!(h.last_applied_index(), last);
    let state = h.read(Acc::clone);
    assert_eq!(state, model.state, "state after entry {last}");
}

async fn run(steps: Vec<Step>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, mut log, mut sm) = open_all(dir.path()).await;
    let mut model = Model::default();
    let mut pending: Vec<Entry<Cfg>> = Vec::new();
    let mut next = 1u64;
    // One leader per term: a new leader starts a new term.
    let (mut term, mut current) = (1u64, LOCAL);
    for s in steps {
        match s {
            Step::Cmd { leader, cmd } => {
                if leader != current {
                    (term, current) = (term + 1, leader);
                }
                let log_id = LogId::new(CommittedLeaderId::new(term, leader), next);
                pending.push(Entry {
                    log_id,
                    payload: EntryPayload::Normal(cmd),
                });
                next += 1;
            }
            Step::Blank => {
                let log_id = LogId::new(CommittedLeaderId::new(term, current), next);
                pending.push(Entry {
                    log_id,
                    payload: EntryPayload::Blank,
                });
                next += 1;
            }
            Step::Apply | Step::Snapshot { .. } | Step::Restart => {
                // Entries are in the log before they are applied.
                plant(&storage, &pending);
                pending.iter().for_each(|e| model.apply(e));
                apply_checked(&mut sm, &model, std::mem::take(&mut pending)).await;
                match s {
                    Step::Snapshot { purge } => {
                        let snap = sm
                            .get_snapshot_builder()
                            .await
                            .build_snapshot()
                            .await
                            .expect("snapshot");
                        if let (true, Some(id)) = (purge, snap.meta.last_log_id) {
                            log.purge(id).await.expect("purge");
                        }
                    }
                    Step::Restart => {
                        drop((sm, log, storage));
                        (storage, log, sm) = open_all(dir.path()).await;
                        // As openraft does on start: apply the log after
                        // the snapshot the state machine restored.
                        let from = sm.handle().last_applied_index() + 1;
                        let entries = log.try_get_log_entries(from..next).await.expect("read");
                        apply_checked(&mut sm, &model, entries).await;
                    }
                    _ => {}
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_failing_apply_changes_nothing(steps in proptest::collection::vec(step(), 1..80)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run(steps));
    }
}

/// A command that fails right after a snapshot, with the log below it
/// purged: the rebuild starts from the stored snapshot, not from the log.
#[tokio::test]
async fn rebuild_starts_from_the_stored_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, mut log, mut sm) = open_all(dir.path()).await;
    let add = |index: u64, value: u64, fail_at: Option<u8>| Entry::<Cfg> {
        log_id: LogId::new(CommittedLeaderId::new(1, LOCAL), index),
        payload: EntryPayload::Normal(Add {
            key: 0,
            value,
            fail_at,
        }),
    };
    let first: Vec<_> = (1..=20).map(|i| add(i, i, None)).collect();
    plant(&storage, &first);
    sm.apply(first).await.expect("apply");
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot");
    log.purge(snap.meta.last_log_id.expect("last"))
        .await
        .expect("purge");
    let batch = vec![add(21, 100, None), add(22, 1000, Some(3)), add(23, 7, None)];
    plant(&storage, &batch);
    let resps = sm.apply(batch).await.expect("apply");
    let sum20: u64 = (1..=20).sum();
    assert_eq!(
        resps,
        vec![
            Resp::Done {
                index: 21,
                sum: sum20 + 100,
                count: 21
            },
            Resp::Failed(
                "applying the command at log index 22 failed: injected failure at step 3".into()
            ),
            Resp::Done {
                index: 23,
                sum: sum20 + 107,
                count: 22
            },
        ]
    );
    let values = sm.handle().read(|s| s.values.clone());
    assert_eq!(values.len(), 22);
    assert!(!values.contains(&1000));
}

/// When the log the rebuild needs is gone, the store fails with a storage
/// error instead of serving or continuing from a half-applied state.
#[tokio::test]
async fn a_rebuild_without_its_log_is_a_storage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, _log, mut sm) = open_all(dir.path()).await;
    let add = |index: u64, fail_at: Option<u8>| Entry::<Cfg> {
        log_id: LogId::new(CommittedLeaderId::new(1, LOCAL), index),
        payload: EntryPayload::Normal(Add {
            key: 0,
            value: index,
            fail_at,
        }),
    };
    // Entries 1..=5 applied but never written to the log (no snapshot
    // either), so the state before entry 6 cannot be rebuilt.
    sm.apply((1..=5).map(|i| add(i, None)).collect::<Vec<_>>())
        .await
        .expect("apply");
    plant(&storage, &[add(6, Some(2))]);
    let err = sm.apply(vec![add(6, Some(2))]).await;
    assert!(err.is_err(), "{err:?}");
    assert_eq!(sm.handle().last_applied_index(), 5);
}

// ---------------------------------------------------------------------------
// Through a real single-node openraft `Raft`: the core survives a panic.
// ---------------------------------------------------------------------------

struct NoNetwork;

impl openraft::network::RaftNetworkFactory<Cfg> for NoNetwork {
    type Network = NoNetwork;
    async fn new_client(&mut self, _target: u64, _node: &openraft::BasicNode) -> NoNetwork {
        NoNetwork
    }
}

type RpcErr<E = openraft::error::RaftError<u64>> =
    openraft::error::RPCError<u64, openraft::BasicNode, E>;

fn unreachable<E: std::error::Error>() -> RpcErr<E> {
    openraft::error::RPCError::Unreachable(openraft::error::Unreachable::new(
        &std::io::Error::other("single node"),
    ))
}

impl openraft::network::RaftNetwork<Cfg> for NoNetwork {
    async fn append_entries(
        &mut self,
        _rpc: openraft::raft::AppendEntriesRequest<Cfg>,
        _option: openraft::network::RPCOption,
    ) -> Result<openraft::raft::AppendEntriesResponse<u64>, RpcErr> {
        Err(unreachable())
    }
    async fn install_snapshot(
        &mut self,
        _rpc: openraft::raft::InstallSnapshotRequest<Cfg>,
        _option: openraft::network::RPCOption,
    ) -> Result<
        openraft::raft::InstallSnapshotResponse<u64>,
        RpcErr<openraft::error::RaftError<u64, openraft::error::InstallSnapshotError>>,
    > {
        Err(unreachable())
    }
    async fn vote(
        &mut self,
        _rpc: openraft::raft::VoteRequest<u64>,
        _option: openraft::network::RPCOption,
    ) -> Result<openraft::raft::VoteResponse<u64>, RpcErr> {
        Err(unreachable())
    }
}

async fn start_raft(dir: &Path) -> (openraft::Raft<Cfg>, orrery_storage::SmHandle<Cfg, Acc>) {
    let (_storage, log, sm) = open_all(dir).await;
    let handle = sm.handle();
    let config = openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 100,
        election_timeout_max: 200,
        snapshot_policy: openraft::SnapshotPolicy::Never,
        ..Default::default()
    }
    .validate()
    .expect("config");
    let raft = openraft::Raft::new(LOCAL, std::sync::Arc::new(config), NoNetwork, log, sm)
        .await
        .expect("raft");
    (raft, handle)
}

#[tokio::test]
async fn a_raft_group_answers_a_panicking_command_and_keeps_going() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wait = Some(Duration::from_secs(5));
    let add = |value: u64, fail_at: Option<u8>| Add {
        key: (value % 3) as u8,
        value,
        fail_at,
    };
    let mut model = Acc::default();
    let state = {
        let (raft, handle) = start_raft(dir.path()).await;
        raft.initialize(BTreeMap::from([(LOCAL, openraft::BasicNode::new("n1"))]))
            .await
            .expect("initialize");
        raft.wait(wait)
            .current_leader(LOCAL, "leader")
            .await
            .expect("leader");
        for v in 1..=30u64 {
            // Every seventh command panics, at varying points.
            let fail_at = (v % 7 == 0).then_some((v % 5) as u8);
            let cmd = add(v, fail_at);
            let resp = raft.client_write(cmd.clone()).await.expect("write");
            let index = resp.log_id.index;
            match fail_at {
                Some(at) => assert_eq!(
                    resp.data,
                    Resp::Failed(format!(
                        "applying the command at log index {index} failed: injected failure at step {at}"
                    ))
                ),
                None => {
                    model.change(index, &cmd);
                    assert_eq!(
                        resp.data,
                        Resp::Done {
                            index,
                            sum: model.sum,
                            count: model.count
                        }
                    );
                }
            }
            if v == 15 {
                raft.trigger().snapshot().await.expect("snapshot");
                raft.wait(wait)
                    .snapshot(resp.log_id, "snapshot")
                    .await
                    .expect("snapshot built");
            }
        }
        assert_eq!(handle.read(Acc::clone), model);
        let state = handle.read(Acc::clone);
        raft.shutdown().await.expect("shutdown");
        state
    };
    // A restart replays the log after the snapshot, failures included.
    let (raft, handle) = start_raft(dir.path()).await;
    raft.wait(wait)
        .current_leader(LOCAL, "leader again")
        .await
        .expect("leader");
    let last = raft.metrics().borrow().last_log_index.expect("last");
    raft.wait(wait)
        .applied_index_at_least(Some(last), "replayed")
        .await
        .expect("replayed");
    assert_eq!(handle.read(Acc::clone), state);
    raft.shutdown().await.expect("shutdown");
}
