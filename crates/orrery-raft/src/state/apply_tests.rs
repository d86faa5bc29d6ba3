//! A command whose apply panics half-way through `GroupState` (the test
//! failpoint in `state.rs`) changes nothing and answers
//! `Response::Failed`, through the real state machine store.

use super::failpoint;
use super::*;
use crate::TypeConfig;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use orrery_storage::{encode, EntryLeader, NewEntry, NodeStorage, StateMachineStore};

const GROUP: u64 = 5;

fn put(index: u64, key: &[u8], value: &[u8]) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Command::Kv(KvCommand::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        })),
    }
}

/// Puts `entries` in the group's log, as the log store's append does.
fn plant(storage: &NodeStorage, entries: &[Entry<TypeConfig>]) {
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

#[tokio::test]
async fn a_panicking_apply_leaves_the_group_state_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = NodeStorage::open(dir.path()).expect("storage");
    let mut sm = StateMachineStore::<TypeConfig, GroupState>::open(&storage, GROUP)
        .expect("sm")
        .observed_by(1);
    let before = vec![put(1, b"a", b"1"), put(2, b"b", b"2")];
    plant(&storage, &before);
    sm.apply(before).await.expect("apply");
    // A snapshot in between: the rebuild restores it, then replays entry 3.
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot");
    let batch = vec![
        put(3, b"a", b"3"),
        put(4, failpoint::KEY, b"x"),
        put(5, b"c", b"5"),
    ];
    plant(&storage, &batch);
    let resps = sm.apply(batch).await.expect("apply");
    assert_eq!(
        resps,
        vec![
            Response::Kv(KvResponse::Put { revision: 3 }),
            Response::Failed {
                message: "applying the command at log index 4 failed: \
                          test failpoint after applying entry 4"
                    .into()
            },
            Response::Kv(KvResponse::Put { revision: 5 }),
        ]
    );
    // The model: the same commands without the failing one.
    let mut model = GroupState::default();
    for (i, k, v) in [(1, "a", "1"), (2, "b", "2"), (3, "a", "3"), (5, "c", "5")] {
        model.apply(
            i,
            Command::Kv(KvCommand::Put {
                key: k.as_bytes().to_vec(),
                value: v.as_bytes().to_vec(),
            }),
        );
    }
    let h = sm.handle();
    assert_eq!(h.last_applied_index(), 5);
    h.read(|s| {
        assert!(s.kv.get(failpoint::KEY).is_none());
        assert_eq!(*s, model);
    });
}
