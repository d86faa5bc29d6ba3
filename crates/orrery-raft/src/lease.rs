//! Leader leases: linearizable reads without a heartbeat round each time.
//!
//! A read-index round ([`crate::read_index`]) that *arrived* at `t0` and
//! succeeded proves that a quorum acknowledged this leader's heartbeats
//! sent after `t0`. openraft's followers refuse every vote for
//! `election_timeout_max` after they last heard from their leader (their
//! own lease, `Engine::handle_vote_req`), and a node that restarted,
//! having forgotten when it last heard from one, refuses votes for as long
//! after it starts (`Registry::grants_votes`, enforced where vote RPCs
//! arrive). So until `t0 + election_timeout_max`, measured on the
//! followers' clocks, no other leader can be elected — except with this
//! node's own vote, which it gives only after it stopped leading.
//!
//! The leader therefore keeps a **lease** of `t0 + lease_len` with
//! `lease_len` well below `election_timeout_max` (default: half the
//! minimum election timeout), and while it holds one serves a
//! linearizable read by asking its own Raft core — not the network —
//! whether it still leads under the same vote and membership, and reading
//! at the commit index the core reports (once an entry of its own term is
//! committed, so that index covers everything earlier leaders committed).
//!
//! The clock assumption (docs/architecture.md, "Reads"): monotonic clocks
//! of the nodes advance at rates that differ by less than
//! `election_timeout_max / lease_len` (4× with the defaults) over a lease;
//! absolute offsets do not matter (each node measures only its own
//! intervals, so the jepsen clock nemesis, which shifts clocks, cannot
//! break it). A process paused past its lease finds it expired when it
//! resumes: the check against the clock is made after the core answered.
//! `--read-lease-ms 0` turns leases off.

use openraft::{LogId, Vote};
use orrery_types::NodeId;
use std::time::Instant;

/// A leadership confirmed by a round, good until `until`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Lease {
    /// The vote this node led under when the confirmed round arrived.
    pub vote: Vote<NodeId>,
    /// The effective membership's log id then: a round confirmed by one
    /// configuration's quorum says nothing about another's.
    pub membership: Option<LogId<NodeId>>,
    pub until: Instant,
}

/// What the Raft core reported, at the moment it was asked, for a read
/// under a lease.
#[derive(Clone, Debug)]
pub(crate) struct CoreView {
    pub leader: bool,
    pub vote: Vote<NodeId>,
    pub membership: Option<LogId<NodeId>>,
    pub committed: Option<LogId<NodeId>>,
}

/// The read index a read may use under `lease`, given what the core said
/// and `now`, taken **after** the core answered (so the core's moment lies
/// inside the lease). `None`: the read needs a round.
pub(crate) fn lease_read_index(
    lease: &Lease,
    core: &CoreView,
    now: Instant,
) -> Option<LogId<NodeId>> {
    if !core.leader || now >= lease.until {
        return None;
    }
    // Votes only grow: the same vote now means it never changed since the
    // round, so the round confirmed this very leadership.
    if core.vote != lease.vote || !core.vote.is_committed() || core.membership != lease.membership {
        return None;
    }
    // Until an entry of this leader's term commits (its first, blank one),
    // its commit index may lag what an earlier leader committed.
    let committed = core.committed?;
    (committed.leader_id.term == core.vote.leader_id().get_term()).then_some(committed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;
    use std::time::Duration;

    fn vote(term: u64, node: NodeId) -> Vote<NodeId> {
        Vote::new_committed(term, node)
    }

    fn log(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn setup() -> (Lease, CoreView, Instant) {
        let now = Instant::now();
        let lease = Lease {
            vote: vote(3, 1),
            membership: Some(log(1, 2)),
            until: now + Duration::from_millis(400),
        };
        let core = CoreView {
            leader: true,
            vote: vote(3, 1),
            membership: Some(log(1, 2)),
            committed: Some(log(3, 17)),
        };
        (lease, core, now)
    }

    #[test]
    fn a_valid_lease_reads_at_the_commit_index() {
        let (lease, core, now) = setup();
        assert_eq!(lease_read_index(&lease, &core, now), Some(log(3, 17)));
    }

    #[test]
    fn an_expired_lease_needs_a_round() {
        let (lease, core, _) = setup();
        assert_eq!(lease_read_index(&lease, &core, lease.until), None);
        let later = lease.until + Duration::from_millis(1);
        assert_eq!(lease_read_index(&lease, &core, later), None);
    }

    #[test]
    fn a_node_that_stopped_leading_needs_a_round() {
        let (lease, mut core, now) = setup();
        core.leader = false;
        assert_eq!(lease_read_index(&lease, &core, now), None);
    }

    /// Stepping down and winning again (a later term) voids the lease: the
    /// round confirmed the old term's leadership, not the new one's.
    #[test]
    fn another_vote_needs_a_round() {
        let (lease, mut core, now) = setup();
        core.vote = vote(4, 1);
        core.committed = Some(log(4, 18));
        assert_eq!(lease_read_index(&lease, &core, now), None);
        // An uncommitted vote (a candidate's) is never a lease.
        let (lease, mut core, now) = setup();
        core.vote = Vote::new(3, 1);
        assert_eq!(lease_read_index(&lease, &core, now), None);
    }

    #[test]
    fn another_membership_needs_a_round() {
        let (lease, mut core, now) = setup();
        core.membership = Some(log(3, 20));
        assert_eq!(lease_read_index(&lease, &core, now), None);
    }

    /// A new leader whose blank entry has not committed yet may not know
    /// the last leader's commit index.
    #[test]
    fn nothing_committed_in_this_term_needs_a_round() {
        let (lease, mut core, now) = setup();
        core.committed = Some(log(2, 15));
        assert_eq!(lease_read_index(&lease, &core, now), None);
        core.committed = None;
        assert_eq!(lease_read_index(&lease, &core, now), None);
    }
}
