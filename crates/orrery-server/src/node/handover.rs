//! Leadership hand-over to a shard's preferred leader (openraft 0.9 has no
//! leader transfer; see `maybe_hand_over`).

use super::ops::{ForwardOk, ForwardOp};
use super::route::FwdErr;
use super::{behind, Node};
use crate::api::lock;
use openraft::ServerState;
use orrery_placement::PlacementState;
use orrery_raft::Group;
use orrery_types::{GroupId, NodeId, PLACEMENT_GROUP};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Node {
    /// Waits while `group`'s writes are paused for a leadership hand-over
    /// (at most until `deadline`).
    pub(super) async fn wait_unpaused(&self, group: GroupId, deadline: Instant) {
        loop {
            let until = lock(&self.paused).get(&group).copied();
            let now = Instant::now();
            match until {
                Some(u) if u > now && now < deadline => {
                    tokio::time::sleep((u - now).min(Duration::from_millis(5))).await;
                }
                _ => return,
            }
        }
    }

    /// Spreads leadership: a shard's leader hands it to the shard's
    /// preferred leader (first replica) when that replica is a voter and
    /// nearly caught up. Rate-limited: one try per group per 10 s, and none
    /// after 3 failures in a row.
    ///
    /// openraft 0.9 has no leader transfer, and its leader lease makes the
    /// followers of a healthy leader refuse any campaign. So the hand-over
    /// is built from what it does allow (see [`Node::campaign`]): the
    /// leader pauses the group's writes, waits until the target holds its
    /// whole log, and asks it to campaign. Writes wait for at most about a
    /// second, once, and then go to the new leader.
    pub(super) fn maybe_hand_over(
        self: &Arc<Self>,
        g: &Arc<Group>,
        replicas: &[NodeId],
        p: &PlacementState,
    ) {
        let Some(&target) = replicas.first() else {
            return;
        };
        if target == self.id() || g.id == PLACEMENT_GROUP {
            return;
        }
        let m = g.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader
            || m.membership_config.membership().get_joint_config().len() > 1
            || !m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == target)
        {
            return;
        }
        if behind(&m, target) > 64 {
            return;
        }
        let Some(peer) = p.members.get(&target).map(|m| m.addr.peer_addr.clone()) else {
            return;
        };
        {
            let mut tries = lock(&self.last_hand_over);
            let now = Instant::now();
            if let Some((at, failures)) = tries.get(&g.id) {
                if *failures >= 3 || now.duration_since(*at) < Duration::from_secs(10) {
                    return;
                }
            }
            let failures = tries.get(&g.id).map(|t| t.1).unwrap_or(0);
            tries.insert(g.id, (now, failures));
        }
        if !lock(&self.busy).insert(g.id) {
            return;
        }
        let node = self.clone();
        let g = g.clone();
        tokio::spawn(async move {
            let ok = node.hand_over(&g, target, &peer).await;
            lock(&node.paused).remove(&g.id);
            lock(&node.busy).remove(&g.id);
            if let Some(t) = lock(&node.last_hand_over).get_mut(&g.id) {
                t.1 = if ok { 0 } else { t.1 + 1 };
            }
        });
    }

    /// Pauses `g`'s writes, waits until `target` has the whole log, and
    /// asks it to campaign. Returns whether `target` now leads.
    pub(super) async fn hand_over(&self, g: &Arc<Group>, target: NodeId, peer: &str) -> bool {
        let start = Instant::now();
        lock(&self.paused).insert(g.id, start + Duration::from_millis(1500));
        // Writes proposed before the pause may still be appending: the
        // target must hold everything the leader has, or the leader's vote
        // for it would be refused by the log check.
        let caught_up = loop {
            let m = g.raft.metrics().borrow().clone();
            if m.state != ServerState::Leader {
                break false;
            }
            if behind(&m, target) == 0 {
                break true;
            }
            if start.elapsed() > Duration::from_millis(500) {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        if !caught_up {
            tracing::info!(
                group = g.id,
                target,
                "leadership hand-over skipped: target not caught up"
            );
            return false;
        }
        tracing::info!(
            group = g.id,
            target,
            "handing leadership to the preferred leader"
        );
        let op = ForwardOp::Campaign { group: g.id };
        let r = self
            .forward(peer, &op, 0, Instant::now() + Duration::from_millis(1200))
            .await;
        let won = matches!(r, Ok(ForwardOk::Campaigned(true)));
        match r {
            Ok(ForwardOk::Campaigned(true)) => {
                tracing::info!(group = g.id, target, "leadership handed over")
            }
            Ok(_) => tracing::info!(
                group = g.id,
                target,
                "leadership hand-over: target did not win"
            ),
            Err(FwdErr::Api(e)) => {
                tracing::info!(group = g.id, target, "leadership hand-over: {e}")
            }
            Err(FwdErr::Sent(e) | FwdErr::NotSent(e)) => {
                tracing::info!(group = g.id, target, "leadership hand-over: {e}")
            }
        }
        won
    }

    /// Campaigns for `group` on behalf of its leader (see
    /// [`Node::maybe_hand_over`]), which has paused writes and made sure
    /// this node holds its whole log. The first campaign is refused (the
    /// leader and the other follower are under the leader lease), but the
    /// leader sees the higher term at its next heartbeat and steps down,
    /// adopting this node's not-yet-committed vote, which no lease
    /// protects. The next campaign then wins the old leader's vote. Tries
    /// for about 600 ms. Returns whether this node leads.
    pub(super) async fn campaign(&self, group: GroupId) -> bool {
        let Some(g) = self.registry.get(group) else {
            return false;
        };
        let me = self.id();
        tracing::info!(group, "campaigning to take over leadership");
        for _ in 0..4 {
            if g.raft.trigger().elect().await.is_err() {
                return false;
            }
            for _ in 0..15 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if g.raft.metrics().borrow().current_leader == Some(me) {
                    return true;
                }
            }
        }
        g.raft.metrics().borrow().current_leader == Some(me)
    }
}
