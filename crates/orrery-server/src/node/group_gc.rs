//! Dropping the shard groups a node no longer belongs to.
//!
//! A move (rebalancing, or a drain) takes a replica off a node, but the
//! group's Raft, log, snapshot and state stay there until something removes
//! them; openraft does not even tell a removed voter that it was removed
//! (the leader stops replicating to it). This node drops such a group only
//! when all of these hold:
//!
//! * the shard map read through the placement leader (linearizable, asked
//!   of the other members; never this node's own copy, which can be far
//!   behind, see `reconcile.rs`)
//!   does not list this node, in two reads at least the grace apart
//!   (`--drop-grace-s`, default 10 s: moves finish their hand-over first,
//!   and a map that flaps does not make a node drop and fetch a group
//!   again) and in every read between (a map that lists it again starts the clock
//!   over);
//! * this node does not lead the group and starts no change of it;
//! * the group's committed membership, read linearizably through its
//!   leader, holds this node neither as voter nor as learner; and still
//!   does not once this node has **stopped** the group (it then answers
//!   the group's Raft RPCs "not hosted", as a crashed node would).
//!   Stopping before that second read means no configuration can come to
//!   count this node's copy between the check and the deletion; if the
//!   check fails, the group is opened again from its untouched storage.
//!   The first read, with the group running, keeps a move that cannot
//!   finish from costing the group its quorum while the node asks.
//!
//! A node cut off from the placement leader or from the group's leader
//! reads nothing, so it drops nothing. What is kept of a dropped group is
//! its last vote (see `NodeStorage::drop_group_keeping_vote`), and a group
//! without a log grants no vote (`peer.rs`): a replica that comes back is
//! a learner with an empty log and a term no older than before.

use super::ops::{CommittedMembership, ForwardOk, ForwardOp, Query, QueryResult};
use super::route::FwdErr;
use super::typed::PlacementRead;
use super::Node;
use crate::api::lock;
use openraft::ServerState;
use orrery_placement::PlacementState;
use orrery_raft::Group;
use orrery_types::{group_shard, GroupId, NodeId, PLACEMENT_GROUP};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The committed membership of `g` as this replica applied it.
pub(super) fn committed_membership(g: &Group) -> CommittedMembership {
    let stored = g.sm.applied_membership();
    let m = stored.membership();
    CommittedMembership {
        index: stored.log_id().map_or(0, |l| l.index),
        voters: m.voter_ids().collect(),
        learners: m.learner_ids().collect(),
    }
}

/// Shard groups in `hosted` that `p` does not list `me` as a replica of.
/// Groups of shards the map does not know are kept (never guessed at).
fn departed(p: &PlacementState, me: NodeId, hosted: &[GroupId]) -> Vec<GroupId> {
    hosted
        .iter()
        .copied()
        .filter(|&g| {
            g != PLACEMENT_GROUP
                && group_shard(g)
                    .and_then(|s| p.shards.get(s as usize))
                    .is_some_and(|info| !info.replicas.contains(&me))
        })
        .collect()
}

/// Which departed groups are due: seen departed for at least `grace`.
/// `since` is updated: groups no longer departed are forgotten, new ones
/// start their clock at `now`.
fn due(
    since: &mut HashMap<GroupId, Instant>,
    departed: &[GroupId],
    now: Instant,
    grace: Duration,
) -> Vec<GroupId> {
    since.retain(|g, _| departed.contains(g));
    departed
        .iter()
        .filter(|g| now.duration_since(*since.entry(**g).or_insert(now)) >= grace)
        .copied()
        .collect()
}

/// How often a node looks for groups to drop.
const EVERY: Duration = Duration::from_secs(1);

impl Node {
    /// Drops, every second, the shard groups this node has left. A task of
    /// its own: its reads may each wait for a request timeout, which must
    /// not hold up the reconciler. Should the reconciler open a group again
    /// meanwhile (the map gave it back), the registry refuses to delete a
    /// group that runs (`Registry::delete_stopped`).
    pub(super) async fn run_group_gc(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = shutdown.changed() => return,
            }
            let local = self.placement();
            if local.is_initialized() {
                self.drop_departed_groups(&local).await;
            }
        }
    }

    /// One pass: drops the shard groups hosted here that this node has left
    /// (see the module comment).
    async fn drop_departed_groups(self: &Arc<Self>, local: &PlacementState) {
        let me = self.id();
        let hosted: Vec<GroupId> = self.registry.all().iter().map(|g| g.id).collect();
        // Nothing to look at by this node's own copy: no read needed. (A
        // group its copy still lists is never dropped; its copy catches
        // up with the map that moved it.)
        if departed(local, me, &hosted).is_empty() {
            lock(&self.departed).clear();
            return;
        }
        let Some(p) = self.confirmed_map(local).await else {
            return;
        };
        let gone = departed(&p, me, &hosted);
        let due = due(
            &mut lock(&self.departed),
            &gone,
            Instant::now(),
            self.cfg.drop_grace,
        );
        for gid in due {
            match self.drop_group_if_left(gid, &p).await {
                Ok(true) => {
                    lock(&self.departed).remove(&gid);
                    self.metrics.group_dropped();
                    tracing::info!(
                        group = gid,
                        "dropped a shard group this node no longer belongs to"
                    );
                }
                // Looked again only after another grace period: each look
                // stops and reopens the group.
                Ok(false) => {
                    lock(&self.departed).insert(gid, Instant::now());
                }
                Err(e) => {
                    lock(&self.departed).insert(gid, Instant::now());
                    tracing::warn!(group = gid, "dropping the group: {e}");
                }
            }
        }
    }

    /// Confirms through its leader that the committed membership of `gid`
    /// leaves this node out, stops the group, confirms it again, and
    /// deletes its data; or opens it again. Returns whether it was dropped.
    async fn drop_group_if_left(
        self: &Arc<Self>,
        gid: GroupId,
        p: &PlacementState,
    ) -> Result<bool, String> {
        let Some(g) = self.registry.get(gid) else {
            return Ok(false);
        };
        if g.raft.metrics().borrow().state == ServerState::Leader {
            // A leader that moves itself off steps down once the change
            // commits; until then it is needed.
            return Ok(false);
        }
        if lock(&self.busy).contains(&gid) {
            return Ok(false);
        }
        drop(g);
        // First asked with the group running: while the membership still
        // holds this node (a move that cannot finish), stopping its copy
        // could cost the group its quorum for as long as the read waits.
        if !self.left(gid, p).await {
            return Ok(false);
        }
        self.registry.stop(gid).await.map_err(|e| e.to_string())?;
        // Stopped: this node's copy is out of every quorum from now on.
        if self.left(gid, p).await {
            self.registry
                .delete_stopped(gid)
                .await
                .map_err(|e| e.to_string())?;
            Ok(true)
        } else {
            self.registry.ensure(gid).await.map_err(|e| e.to_string())?;
            Ok(false)
        }
    }

    /// The shard map read through the placement leader. On the leader
    /// itself, locally; elsewhere asked of the other members in this node's
    /// copy (each forwards to the leader): a node removed from the cluster
    /// (drained) still lists itself in its copy and cannot route the read
    /// through its own placement group, yet must drop what it hosted.
    async fn confirmed_map(&self, local: &PlacementState) -> Option<PlacementState> {
        let me = self.id();
        let leads = self
            .placement_group()
            .is_some_and(|g| g.raft.metrics().borrow().state == ServerState::Leader);
        if leads {
            return match self.read(PLACEMENT_GROUP, PlacementRead, true).await {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::debug!("group drop waits: shard map not confirmed: {e}");
                    None
                }
            };
        }
        let op = ForwardOp::Read {
            group: PLACEMENT_GROUP,
            query: Query::Placement,
            linearizable: true,
        };
        for m in local.members.values().filter(|m| m.id != me) {
            match self
                .forward(&m.addr.peer_addr, &op, 0, self.deadline())
                .await
            {
                Ok(ForwardOk::Read(QueryResult::Placement(p))) => return Some(*p),
                Ok(_) => tracing::debug!(node = m.id, "shard map read: unexpected reply"),
                Err(FwdErr::Api(e)) => tracing::debug!(node = m.id, "shard map read: {e}"),
                Err(FwdErr::Sent(e)) | Err(FwdErr::NotSent(e)) => {
                    tracing::debug!(node = m.id, "shard map read: {e}")
                }
            }
        }
        tracing::debug!("group drop waits: shard map not confirmed by any member");
        None
    }

    /// Whether `gid`'s committed membership, read linearizably through its
    /// leader, leaves this node out. Asked of the group's replicas in the
    /// confirmed map `p` (each forwards to the leader), never of this
    /// node's own copy: a removed voter's copy may be campaigning in a
    /// configuration long gone, and cannot route the read.
    async fn left(&self, gid: GroupId, p: &PlacementState) -> bool {
        let me = self.id();
        let replicas: Vec<String> = group_shard(gid)
            .and_then(|s| p.shards.get(s as usize))
            .map(|info| {
                info.replicas
                    .iter()
                    .filter(|id| **id != me)
                    .filter_map(|id| p.members.get(id).map(|m| m.addr.peer_addr.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let op = ForwardOp::Read {
            group: gid,
            query: Query::Membership,
            linearizable: true,
        };
        for addr in replicas {
            match self.forward(&addr, &op, 0, self.deadline()).await {
                Ok(ForwardOk::Read(QueryResult::Membership(m))) => {
                    let out = m.index > 0 && !m.includes(me);
                    if !out {
                        tracing::debug!(group = gid, ?m, "group kept: still a member");
                    }
                    return out;
                }
                Ok(_) => tracing::debug!(group = gid, %addr, "membership read: unexpected reply"),
                Err(FwdErr::Api(e)) => tracing::debug!(group = gid, %addr, "membership read: {e}"),
                Err(FwdErr::Sent(e)) | Err(FwdErr::NotSent(e)) => {
                    tracing::debug!(group = gid, %addr, "membership read: {e}")
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::node::test_shard_map as map;

    #[test]
    fn only_shard_groups_the_map_moved_off_are_departed() {
        let p = map(&[&[1, 2, 3], &[2, 3, 4]]);
        // Group 0 is the placement group: never. Group 1 is shard 0 (node 1
        // listed), group 2 shard 1 (node 1 not listed), group 9 a shard the
        // map does not know.
        assert_eq!(departed(&p, 1, &[0, 1, 2, 9]), vec![2]);
        assert_eq!(departed(&p, 4, &[0, 1, 2]), vec![1]);
        assert!(departed(&p, 2, &[0, 1, 2]).is_empty());
    }

    #[test]
    fn a_group_is_due_only_after_the_grace_without_interruption() {
        let mut since = HashMap::new();
        let t0 = Instant::now();
        let grace = Duration::from_secs(10);
        assert!(due(&mut since, &[2, 3], t0, grace).is_empty());
        assert!(due(&mut since, &[2, 3], t0 + Duration::from_secs(9), grace).is_empty());
        // Group 3 is listed again for a tick: its clock starts over.
        assert!(due(&mut since, &[2], t0 + Duration::from_secs(9), grace).is_empty());
        assert_eq!(
            due(&mut since, &[2, 3], t0 + Duration::from_secs(10), grace),
            vec![2]
        );
        assert_eq!(
            due(&mut since, &[2, 3], t0 + Duration::from_secs(19), grace),
            vec![2]
        );
        assert_eq!(
            due(&mut since, &[2, 3], t0 + Duration::from_secs(20), grace),
            vec![2, 3]
        );
    }

    #[test]
    fn membership_includes_voters_and_learners() {
        let m = CommittedMembership {
            index: 7,
            voters: vec![1, 2],
            learners: vec![4],
        };
        assert!(m.includes(1) && m.includes(4));
        assert!(!m.includes(3));
    }
}
