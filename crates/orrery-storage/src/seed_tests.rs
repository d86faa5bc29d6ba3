use super::*;
use crate::{LogStore, StateMachine, StateMachineStore};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{BasicNode, CommittedLeaderId, LogId, Membership, StoredMembership};
use std::collections::{BTreeMap, BTreeSet};

openraft::declare_raft_types!(
    pub C:
        D = String,
        R = String,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<C>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// The state: every command applied, in order.
#[derive(Default)]
struct Lines(Vec<String>);

impl StateMachine<C> for Lines {
    fn apply(&mut self, _index: u64, cmd: String) -> String {
        self.0.push(cmd.clone());
        cmd
    }
    fn empty_response() -> String {
        String::new()
    }
    fn failed_response(message: String) -> String {
        message
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(self.0.join("\n").into_bytes())
    }
    fn restore(data: &[u8]) -> Result<Self, String> {
        let s = String::from_utf8(data.to_vec()).map_err(|e| e.to_string())?;
        Ok(Lines(s.lines().map(str::to_string).collect()))
    }
}

/// A seeded group opens as a node restarted after installing that
/// snapshot: the state, the log purged up to it, the vote and membership.
#[tokio::test]
async fn a_seeded_group_opens_at_its_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let last = LogId::new(CommittedLeaderId::new(4, 9), 120);
    let voters: BTreeSet<u64> = [1, 2].into_iter().collect();
    let nodes: BTreeMap<u64, BasicNode> = voters
        .iter()
        .map(|v| (*v, BasicNode::new(format!("n{v}"))))
        .collect();
    let membership = StoredMembership::new(Some(last), Membership::new(vec![voters], nodes));
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: membership.clone(),
        snapshot_id: "restore-120".into(),
    };
    let vote = Vote::new(5, 1);
    {
        let storage = NodeStorage::open(dir.path()).expect("open");
        seed_group::<C>(&storage, 3, meta.clone(), b"a\nb".to_vec(), vote).expect("seed");
        // Only into a group with nothing in it.
        let again = seed_group::<C>(&storage, 3, meta, b"x".to_vec(), vote);
        assert!(again.is_err(), "seeded twice");
    }
    // sled's background thread may hold the files a moment after the drop.
    let mut reopened = NodeStorage::open(dir.path());
    for _ in 0..400 {
        if reopened.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        reopened = NodeStorage::open(dir.path());
    }
    let storage = reopened.expect("reopen");
    storage
        .check_groups_present()
        .expect("manifest and trees agree");
    assert_eq!(storage.stored_groups(), vec![3]);
    let mut log = LogStore::<C>::open(&storage, 3).expect("log");
    log.check_durable().expect("durable marks");
    assert!(!log.is_pristine());
    let st = log.get_log_state().await.expect("log state");
    assert_eq!(
        (st.last_purged_log_id, st.last_log_id),
        (Some(last), Some(last))
    );
    assert_eq!(log.read_vote().await.expect("vote"), Some(vote));
    let mut sm = StateMachineStore::<C, Lines>::open(&storage, 3).expect("sm");
    let (applied, m) = sm.applied_state().await.expect("applied");
    assert_eq!((applied, m), (Some(last), membership));
    assert_eq!(sm.handle().read(|s| s.0.clone()), vec!["a", "b"]);
}
