//! Operations as they travel between nodes when a request is forwarded.

use orrery_kv::{KvItem, Versioned};
use orrery_raft::{Command, Response};
use orrery_types::{GroupId, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A read against one group's applied state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Query {
    KvGet {
        key: Vec<u8>,
    },
    KvList {
        prefix: Vec<u8>,
        limit: usize,
    },
    /// The placement group's whole state (membership, shard map).
    Placement,
    Jobs(orrery_queue::JobsQuery),
    VectorCatalog,
    VectorSearch(Box<orrery_vector::SearchRequest>),
    VectorGet {
        collection: String,
        uid: u64,
        id: orrery_vector::PointId,
    },
    VectorInfo {
        collection: String,
        uid: u64,
    },
    Policy(orrery_policy::store::PolicyQuery),
    /// The group's whole state, serialised, and the log point it is at (a
    /// backup's section; see `node/backup.rs`).
    GroupCopy,
    /// The group's committed membership: its last applied configuration
    /// (read on the leader, linearizably, by a node deciding whether it may
    /// drop its copy of the group; see `node/group_gc.rs`). Appended last:
    /// bincode numbers variants by position.
    Membership,
    /// Datasets (cluster version 8; the service checks it before sending).
    Dataset(orrery_dataset::DatasetQuery),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum QueryResult {
    KvGet(Option<Versioned>),
    KvList(Vec<KvItem>),
    Placement(Box<orrery_placement::PlacementState>),
    Jobs(orrery_queue::JobsQueryResult),
    VectorCatalog(BTreeMap<String, orrery_vector::CollectionConfig>),
    VectorSearch(Result<Vec<orrery_vector::Hit>, orrery_vector::VectorError>),
    VectorGet(Option<orrery_vector::StoredPoint>),
    VectorInfo(orrery_vector::ShardInfo),
    Policy(orrery_policy::store::PolicyQueryResult),
    GroupCopy(Result<super::backup::GroupCopy, String>),
    Membership(CommittedMembership),
    Dataset(orrery_dataset::DatasetQueryResult),
}

/// A group's applied (so committed) configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedMembership {
    /// Index of the configuration's log entry (0: none applied yet).
    pub index: u64,
    /// Voters of every configuration in it (both halves of a joint one).
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

impl CommittedMembership {
    /// Whether `node` votes in or learns from this configuration.
    pub fn includes(&self, node: NodeId) -> bool {
        self.voters.contains(&node) || self.learners.contains(&node)
    }
}

/// Membership operations, executed by the placement leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AdminOp {
    AddMember {
        id: NodeId,
        addr: String,
        peer_addr: String,
        learner_only: bool,
    },
    RemoveMember {
        id: NodeId,
    },
    PromoteMember {
        id: NodeId,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AdminResult {
    Progress(Vec<String>),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardOp {
    Write {
        group: GroupId,
        cmd: Command,
    },
    Read {
        group: GroupId,
        query: Query,
        linearizable: bool,
    },
    Admin(AdminOp),
    /// Sent by a shard's leader to the shard's preferred leader, once the
    /// leader has paused writes and the target holds its whole log: campaign
    /// now (see `Node::hand_over`).
    Campaign {
        group: GroupId,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardOk {
    Write(Response),
    Read(QueryResult),
    Admin(AdminResult),
    /// Whether the campaign made this node the leader.
    Campaigned(bool),
}

/// One node's view of a group it hosts (the LocalStatus peer RPC).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupReport {
    pub group: GroupId,
    pub node: NodeId,
    pub is_leader: bool,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: u64,
    pub applied: u64,
    pub snapshot: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// On the leader: the last index known to be replicated to each node.
    pub matched: Option<BTreeMap<NodeId, u64>>,
}

impl GroupReport {
    /// On a leader, the highest index stored on a majority of voters.
    pub fn commit_index(&self) -> u64 {
        let Some(m) = &self.matched else {
            return self.applied;
        };
        let mut idx: Vec<u64> = self
            .voters
            .iter()
            .map(|v| {
                if *v == self.node {
                    self.last_log_index
                } else {
                    m.get(v).copied().unwrap_or(0)
                }
            })
            .collect();
        if idx.is_empty() {
            return self.applied;
        }
        idx.sort_unstable_by(|a, b| b.cmp(a));
        idx[idx.len() / 2].max(self.applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_is_majority_match() {
        let r = GroupReport {
            group: 1,
            node: 1,
            is_leader: true,
            leader: Some(1),
            term: 2,
            last_log_index: 10,
            applied: 7,
            snapshot: 0,
            voters: vec![1, 2, 3],
            learners: vec![],
            matched: Some([(1, 10), (2, 8), (3, 3)].into_iter().collect()),
        };
        assert_eq!(r.commit_index(), 8);
    }
}
