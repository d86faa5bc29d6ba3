//! Rebalancing on the placement leader: when no drain and no leader
//! rotation is pending, replicas move from the fullest voters to the
//! emptiest (the pure planner is `orrery_placement::plan_rebalance`), a
//! bounded number at a time, and only while every shard group has a leader
//! and every member answers — a move is never started on a cluster that is
//! already missing a node or a quorum.
//!
//! Which moves are in flight is read from the groups themselves (their
//! leaders' reports: voters not yet equal to the shard map, or learners
//! catching up), not remembered here, so a new placement leader sees the
//! same moves and never exceeds the limits.

use super::ops::GroupReport;
use super::Node;
use crate::api::{lock, ApiError};
use orrery_kv::KvCommand;
use orrery_placement::{
    is_balanced, plan_rebalance, InFlight, MoveLimits, PlacementCommand, PlacementState,
};
use orrery_types::{shard_group, NodeId, PLACEMENT_GROUP};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The switch, in the placement group's key-value state (replicated, so a
/// pause survives placement-leader changes and restarts).
const SETTING_KEY: &[u8] = b"cluster/rebalance";

/// How often the placement leader looks for moves: each look polls every
/// member's status.
const EVERY: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Setting {
    paused: bool,
}

/// What `orreryctl cluster rebalance` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RebalanceStatus {
    pub paused: bool,
    /// Replica counts are within one of each other.
    pub balanced: bool,
    /// Shards whose group has not reached its replicas in the shard map.
    pub moving: Vec<u32>,
    /// The throttles in force: the replicated ones once set, else this
    /// node's `--rebalance-max-moves*` flags.
    pub limits: MoveLimits,
    /// Whether `limits` were set cluster-wide (else they are the flags).
    pub limits_set: bool,
}

/// A change of the rebalancing settings; `None` leaves one as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RebalanceChange {
    pub paused: Option<bool>,
    pub max_moves: Option<u32>,
    pub max_per_node: Option<u32>,
}

/// The cluster version that records capacities and throttles.
pub const CAPACITY_VERSION: u32 = 9;

impl Node {
    /// Whether rebalancing is paused (this node's copy of the setting).
    pub fn rebalance_paused(&self) -> bool {
        self.placement_group()
            .and_then(|g| {
                g.sm.read(|s| s.kv.get(SETTING_KEY).map(|v| v.value.clone()))
            })
            .and_then(|raw| serde_json::from_slice::<Setting>(&raw).ok())
            .is_some_and(|s| s.paused)
    }

    /// Pauses or resumes rebalancing, cluster-wide. Moves already under
    /// way finish; no new one starts while paused.
    pub async fn set_rebalance_paused(&self, paused: bool) -> Result<(), ApiError> {
        let value = serde_json::to_vec(&Setting { paused })
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let cmd = KvCommand::Put {
            key: SETTING_KEY.to_vec(),
            value,
        };
        self.write(PLACEMENT_GROUP, cmd).await?;
        self.wake_reconciler();
        Ok(())
    }

    /// Applies a change: the throttles first (validated by the placement
    /// state machine, cluster version 9), then the pause switch.
    pub async fn change_rebalance(&self, c: RebalanceChange) -> Result<(), ApiError> {
        if c.max_moves.is_some() || c.max_per_node.is_some() {
            self.require_version(CAPACITY_VERSION).await?;
            let now = self.move_limits(&self.placement_current().await);
            let cmd = PlacementCommand::SetMoveLimits {
                max_in_flight: c.max_moves.unwrap_or(now.max_in_flight as u32),
                max_per_node: c.max_per_node.unwrap_or(now.max_per_node as u32),
            };
            let want = match cmd {
                PlacementCommand::SetMoveLimits {
                    max_in_flight,
                    max_per_node,
                } => MoveLimits {
                    max_in_flight: max_in_flight as usize,
                    max_per_node: max_per_node as usize,
                },
                _ => now,
            };
            self.placement_write(cmd).await?;
            // Views read the limits from this node's copy: let the change
            // reach it (bounded; it applies within a heartbeat or so).
            let deadline = Instant::now() + Duration::from_secs(3);
            while self.placement().move_limits != Some(want) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if let Some(paused) = c.paused {
            self.set_rebalance_paused(paused).await?;
        }
        self.wake_reconciler();
        Ok(())
    }

    /// The throttles in force by `p`: the replicated ones, else the flags.
    fn move_limits(&self, p: &PlacementState) -> MoveLimits {
        p.move_limits.unwrap_or(self.cfg.rebalance)
    }

    /// The setting (linearizable) and the moves under way, from every
    /// member's reports.
    pub async fn rebalance_status(&self) -> Result<RebalanceStatus, ApiError> {
        let p = self.placement_current().await;
        let (reports, _) = self.cluster_reports().await;
        let moving = in_flight(&p, &reports)
            .map(|f| f.shards.into_iter().collect())
            .unwrap_or_default();
        Ok(RebalanceStatus {
            paused: self.rebalance_paused(),
            balanced: is_balanced(&p),
            moving,
            limits: self.move_limits(&p),
            limits_set: p.move_limits.is_some(),
        })
    }

    /// Records this node's `--capacity` in the placement state when it
    /// differs from what is recorded (a node joining, or restarted with
    /// another capacity), once the cluster runs version 9. Any node, every
    /// reconcile tick; `p` is the map the tick acts on.
    pub(super) async fn declare_capacity(&self, p: &PlacementState) {
        let me = self.id();
        let want = self.cfg.capacity;
        // This node's copy decides whether to declare (`p` may come from
        // a read answered elsewhere, without capacities: see
        // `placement_read`).
        let recorded = self.placement().capacity(me);
        if !p.members.contains_key(&me) || recorded == want {
            return;
        }
        if self.version_local().active < CAPACITY_VERSION {
            tracing::debug!(want, "capacity waits for cluster version 9");
            return;
        }
        let cmd = PlacementCommand::SetCapacity {
            id: me,
            capacity: want,
        };
        match self.placement_write(cmd).await {
            Ok(()) => tracing::info!(capacity = want, "capacity recorded"),
            Err(e) => tracing::debug!("capacity not recorded: {e}"),
        }
    }

    /// On the placement leader, with nothing else planned: start moves.
    pub(super) async fn maybe_rebalance(self: &Arc<Self>, p: &PlacementState) {
        {
            let mut last = lock(&self.last_rebalance);
            if last.is_some_and(|t| t.elapsed() < EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        if self.rebalance_paused() || is_balanced(p) {
            self.metrics.rebalance_moving(0);
            return;
        }
        let (reports, unreachable) = self.cluster_reports().await;
        if !unreachable.is_empty() {
            tracing::debug!(?unreachable, "rebalance waits: members do not answer");
            return;
        }
        let Some(moving) = in_flight(p, &reports) else {
            tracing::debug!("rebalance waits: a shard group has no leader");
            return;
        };
        self.metrics.rebalance_moving(moving.shards.len());
        for cmd in plan_rebalance(p, &moving, self.move_limits(p)) {
            tracing::info!(?cmd, "rebalance: moving a replica");
            if let Err(e) = self.placement_write(cmd).await {
                tracing::debug!("rebalance move not applied: {e}");
                return;
            }
            self.metrics.rebalance_moved();
        }
    }
}

/// Shards whose group's leader reports voters other than the shard map's
/// replicas, or learners; with the nodes each such move involves. `None`
/// when some shard group reports no leader (no quorum, or an election).
fn in_flight(p: &PlacementState, reports: &[GroupReport]) -> Option<InFlight> {
    let mut out = InFlight::default();
    for (i, shard) in p.shards.iter().enumerate() {
        let gid = shard_group(i as u32);
        let leader = reports
            .iter()
            .filter(|r| r.group == gid && r.is_leader)
            .max_by_key(|r| r.term)?;
        let want: BTreeSet<NodeId> = shard.replicas.iter().copied().collect();
        let have: BTreeSet<NodeId> = leader.voters.iter().copied().collect();
        if want == have && leader.learners.is_empty() {
            continue;
        }
        out.shards.insert(i as u32);
        let involved: BTreeSet<NodeId> = want
            .symmetric_difference(&have)
            .copied()
            .chain(leader.learners.iter().copied())
            .collect();
        for n in involved {
            *out.per_node.entry(n).or_default() += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(
        group: orrery_types::GroupId,
        node: NodeId,
        leader: bool,
        term: u64,
        voters: &[NodeId],
    ) -> GroupReport {
        GroupReport {
            group,
            node,
            is_leader: leader,
            leader: leader.then_some(node),
            term,
            last_log_index: 0,
            applied: 0,
            snapshot: 0,
            voters: voters.to_vec(),
            learners: Vec::new(),
            matched: None,
        }
    }

    use crate::node::test_shard_map as map;

    #[test]
    fn moves_in_flight_come_from_the_leaders_reports() {
        let p = map(&[&[1, 2, 3], &[1, 2, 4]]);
        let g0 = shard_group(0);
        let g1 = shard_group(1);
        // Shard 0 settled; shard 1 still has voters {1,2,3}: 3 -> 4 under way.
        let mut reports = vec![
            report(g0, 1, true, 5, &[1, 2, 3]),
            report(g0, 2, false, 5, &[1, 2, 3]),
            report(g1, 2, true, 7, &[1, 2, 3]),
        ];
        let f = in_flight(&p, &reports).expect("leaders known");
        assert_eq!(f.shards.into_iter().collect::<Vec<_>>(), vec![1]);
        assert_eq!(f.per_node.get(&3), Some(&1));
        assert_eq!(f.per_node.get(&4), Some(&1));
        assert_eq!(f.per_node.get(&1), None);
        // A stale leader of an older term does not hide the current one.
        reports.push(report(g1, 1, true, 6, &[1, 2, 4]));
        assert_eq!(in_flight(&p, &reports).map(|f| f.shards.len()), Some(1));
        // A learner catching up counts as a move of its node.
        let mut r = report(g0, 1, true, 5, &[1, 2, 3]);
        r.learners = vec![5];
        let f = in_flight(&p, &[r, report(g1, 2, true, 7, &[1, 2, 4])]).expect("leaders");
        assert_eq!(f.shards.into_iter().collect::<Vec<_>>(), vec![0]);
        assert_eq!(f.per_node.get(&5), Some(&1));
    }

    #[test]
    fn a_shard_without_a_leader_stops_the_plan() {
        let p = map(&[&[1, 2, 3], &[1, 2, 3]]);
        let reports = vec![report(shard_group(0), 1, true, 1, &[1, 2, 3])];
        assert!(in_flight(&p, &reports).is_none());
    }
}
