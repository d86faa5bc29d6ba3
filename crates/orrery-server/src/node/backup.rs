//! The node side of a backup: one group's state, copied on its leader at
//! one point of its log.
//!
//! The copy is a linearizable read of the whole state (`Node::read` with
//! `Query::GroupCopy`): it runs on the group's leader after openraft's
//! read-index check (and the restart barrier), so it holds every write
//! acknowledged before the read began; it is serialised under the state's
//! read lock together with the id of the last entry applied, so it is the
//! state exactly after that entry. The serialisation is the one snapshots
//! use (`GroupState::snapshot`), so a restore installs it as the group's
//! snapshot.

use super::ops::{Query, QueryResult};
use super::typed::DomainQuery;
use orrery_raft::{GroupState, TypeConfig};
use orrery_storage::backup_file::LogPoint;
use orrery_storage::StateMachine;
use serde::{Deserialize, Serialize};

/// One group's state and the log point it is at.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupCopy {
    pub point: LogPoint,
    /// `GroupState`'s snapshot serialisation (checksummed).
    pub data: Vec<u8>,
}

/// Called under the state's read lock with the last applied log id.
pub(super) fn copy_state(
    s: &GroupState,
    applied: Option<&openraft::LogId<u64>>,
) -> Result<GroupCopy, String> {
    let data = StateMachine::<TypeConfig>::snapshot(s)?;
    let point = applied.map_or(LogPoint::default(), |l| LogPoint {
        index: l.index,
        term: l.leader_id.term,
        leader: l.leader_id.node_id,
    });
    Ok(GroupCopy { point, data })
}

/// The typed read: `node.read(group, CopyGroup, true)`.
pub struct CopyGroup;

impl DomainQuery for CopyGroup {
    type Answer = Result<GroupCopy, String>;
    fn into_query(self) -> Query {
        Query::GroupCopy
    }
    fn answer(r: QueryResult) -> Result<Self::Answer, Box<QueryResult>> {
        match r {
            QueryResult::GroupCopy(c) => Ok(c),
            other => Err(Box::new(other)),
        }
    }
}
