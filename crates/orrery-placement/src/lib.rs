//! The placement group (group 0): cluster identity, members, and the shard
//! map. Pure and deterministic like every state machine in Orrery; the
//! planner functions compute *proposals* (they never mutate state), which
//! the placement leader then commits through Raft.

mod rebalance;
mod settings;
pub use rebalance::{is_balanced, plan_rebalance, replica_counts, InFlight, MoveLimits};
pub use settings::{MAX_CAPACITY, MAX_MOVES};

use orrery_types::{NodeAddr, NodeId, ShardId, MAX_REPLICAS};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// Receiving the placement log, not yet voting.
    Learner,
    /// Voting member of the placement group; eligible for shard replicas.
    Voter,
    /// Being removed: still a voter of the placement group, but the planner
    /// moves its shard replicas to other voters and never places new ones on
    /// it. Appended last so that older encodings still decode.
    Leaving,
}

impl MemberState {
    pub fn as_str(&self) -> &'static str {
        match self {
            MemberState::Learner => "learner",
            MemberState::Voter => "voter",
            MemberState::Leaving => "leaving",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub addr: NodeAddr,
    pub state: MemberState,
}

/// Where a shard lives. `replicas[0]` is the preferred leader.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub replicas: Vec<NodeId>,
    /// Bumped on every change, so that concurrent planners cannot overwrite
    /// each other (the change carries the epoch it was planned against).
    pub epoch: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementCommand {
    /// First command of a cluster: identity, shard count, first member.
    Init {
        cluster_id: String,
        shard_count: u32,
        node_id: NodeId,
        addr: NodeAddr,
    },
    /// Adds a member or updates its addresses/state.
    UpsertMember {
        id: NodeId,
        addr: NodeAddr,
        state: MemberState,
    },
    /// Removes a member; refused while it holds shard replicas.
    RemoveMember { id: NodeId },
    /// Sets a shard's replicas, if its epoch is still `expected_epoch`.
    SetReplicas {
        shard: ShardId,
        replicas: Vec<NodeId>,
        expected_epoch: u64,
    },
    /// A member's declared capacity (1..=[`MAX_CAPACITY`], default 1): the
    /// planners give it replicas and leaders in proportion. Cluster
    /// version 9; appended last.
    SetCapacity { id: NodeId, capacity: u32 },
    /// The rebalancer's throttles, cluster-wide (each 1..=[`MAX_MOVES`]);
    /// until set, the placement leader's `--rebalance-max-moves*` flags.
    /// Cluster version 9; appended last.
    SetMoveLimits {
        max_in_flight: u32,
        max_per_node: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementResponse {
    Ok,
    /// The command was valid Raft input but refused by the state machine.
    Rejected(PlacementError),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementError {
    AlreadyInitialized,
    NotInitialized,
    UnknownMember(NodeId),
    /// Node ids are never reused, so that a removed node can never rejoin
    /// with stale state under its old identity.
    IdRetired(NodeId),
    HoldsReplicas {
        id: NodeId,
        shards: Vec<ShardId>,
    },
    StaleEpoch {
        shard: ShardId,
        expected: u64,
        actual: u64,
    },
    UnknownShard(ShardId),
    InvalidReplicas(String),
    /// A capacity or a move limit out of range. Appended last.
    InvalidSetting(String),
}

impl std::fmt::Display for PlacementError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlacementError::AlreadyInitialized => write!(f, "the cluster is already initialised"),
            PlacementError::NotInitialized => write!(f, "the cluster is not initialised"),
            PlacementError::UnknownMember(id) => write!(f, "node {id} is not a member"),
            PlacementError::IdRetired(id) => {
                write!(f, "node id {id} belonged to a removed node and cannot be reused; start the node with a new id and an empty data directory")
            }
            PlacementError::HoldsReplicas { id, shards } => write!(
                f,
                "node {id} still holds replicas of shards {shards:?}; they must be moved to other voters before it can be removed"
            ),
            PlacementError::StaleEpoch { shard, expected, actual } => {
                write!(f, "shard {shard} changed concurrently (epoch {actual}, expected {expected})")
            }
            PlacementError::UnknownShard(s) => write!(f, "shard {s} does not exist"),
            PlacementError::InvalidReplicas(m) => write!(f, "invalid replica set: {m}"),
            PlacementError::InvalidSetting(m) => write!(f, "{m}"),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementState {
    pub cluster_id: Option<String>,
    pub members: BTreeMap<NodeId, Member>,
    pub shards: Vec<ShardInfo>,
    pub retired: BTreeSet<NodeId>,
    /// Declared capacities other than 1 (cluster version 9). Not in the
    /// base encoding: snapshots carry them in a trailing section
    /// ([`settings`]), so that a state without any keeps the old format.
    #[serde(skip)]
    pub capacities: BTreeMap<NodeId, u32>,
    /// The rebalancer's throttles once set (cluster version 9); trailing
    /// section like `capacities`.
    #[serde(skip)]
    pub move_limits: Option<MoveLimits>,
}

impl PlacementState {
    pub fn is_initialized(&self) -> bool {
        self.cluster_id.is_some()
    }

    pub fn shard_count(&self) -> u32 {
        self.shards.len() as u32
    }

    /// Voters that may hold shard replicas (not those being removed).
    pub fn voters(&self) -> impl Iterator<Item = &Member> {
        self.members
            .values()
            .filter(|m| m.state == MemberState::Voter)
    }

    /// Shards that have `node` among their replicas.
    pub fn shards_of(&self, node: NodeId) -> Vec<ShardId> {
        self.shards
            .iter()
            .enumerate()
            .filter(|(_, s)| s.replicas.contains(&node))
            .map(|(i, _)| i as ShardId)
            .collect()
    }

    pub fn apply(&mut self, cmd: PlacementCommand) -> PlacementResponse {
        match self.try_apply(cmd) {
            Ok(()) => PlacementResponse::Ok,
            Err(e) => PlacementResponse::Rejected(e),
        }
    }

    fn try_apply(&mut self, cmd: PlacementCommand) -> Result<(), PlacementError> {
        match cmd {
            PlacementCommand::Init {
                cluster_id,
                shard_count,
                node_id,
                addr,
            } => {
                if self.is_initialized() {
                    return Err(PlacementError::AlreadyInitialized);
                }
                self.cluster_id = Some(cluster_id);
                self.members.insert(
                    node_id,
                    Member {
                        id: node_id,
                        addr,
                        state: MemberState::Voter,
                    },
                );
                self.shards = (0..shard_count)
                    .map(|_| ShardInfo {
                        replicas: vec![node_id],
                        epoch: 1,
                    })
                    .collect();
                Ok(())
            }
            PlacementCommand::UpsertMember { id, addr, state } => {
                self.require_init()?;
                if self.retired.contains(&id) {
                    return Err(PlacementError::IdRetired(id));
                }
                self.members.insert(id, Member { id, addr, state });
                Ok(())
            }
            PlacementCommand::RemoveMember { id } => {
                self.require_init()?;
                if !self.members.contains_key(&id) {
                    return Err(PlacementError::UnknownMember(id));
                }
                let shards = self.shards_of(id);
                if !shards.is_empty() {
                    return Err(PlacementError::HoldsReplicas { id, shards });
                }
                self.members.remove(&id);
                self.capacities.remove(&id);
                self.retired.insert(id);
                Ok(())
            }
            PlacementCommand::SetCapacity { id, capacity } => {
                self.require_init()?;
                self.set_capacity(id, capacity)
            }
            PlacementCommand::SetMoveLimits {
                max_in_flight,
                max_per_node,
            } => {
                self.require_init()?;
                self.set_move_limits(max_in_flight, max_per_node)
            }
            PlacementCommand::SetReplicas {
                shard,
                replicas,
                expected_epoch,
            } => {
                self.require_init()?;
                let info = self
                    .shards
                    .get(shard as usize)
                    .ok_or(PlacementError::UnknownShard(shard))?;
                if info.epoch != expected_epoch {
                    return Err(PlacementError::StaleEpoch {
                        shard,
                        expected: expected_epoch,
                        actual: info.epoch,
                    });
                }
                let unique: BTreeSet<_> = replicas.iter().collect();
                if replicas.is_empty()
                    || replicas.len() > MAX_REPLICAS
                    || unique.len() != replicas.len()
                {
                    return Err(PlacementError::InvalidReplicas(format!("{replicas:?}")));
                }
                if let Some(bad) = replicas.iter().find(|r| !self.members.contains_key(r)) {
                    return Err(PlacementError::UnknownMember(*bad));
                }
                let info = &mut self.shards[shard as usize];
                info.replicas = replicas;
                info.epoch += 1;
                Ok(())
            }
        }
    }

    fn require_init(&self) -> Result<(), PlacementError> {
        if self.is_initialized() {
            Ok(())
        } else {
            Err(PlacementError::NotInitialized)
        }
    }

    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        let mut out = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .map_err(|e| e.to_string())?;
        self.encode_settings(&mut out)?;
        Ok(out)
    }

    pub fn restore(data: &[u8]) -> Result<Self, String> {
        let (mut s, used): (Self, usize) =
            bincode::serde::decode_from_slice(data, bincode::config::standard())
                .map_err(|e| format!("placement snapshot: {e}"))?;
        s.decode_settings(data.get(used..).unwrap_or_default())?;
        Ok(s)
    }
}

/// Plans replica moves and additions: replicas on `Leaving` members are
/// dropped, then every shard gets `min(3, voters)` replicas, choosing the
/// voters that hold the fewest shards (ties by lowest id) so that load
/// spreads evenly. Returns `SetReplicas` commands to propose.
///
/// A shard whose only replicas are leaving keeps them until some other
/// voter exists: a shard is never left without a replica.
pub fn plan_replicas(state: &PlacementState) -> Vec<PlacementCommand> {
    let voters: Vec<NodeId> = state.voters().map(|m| m.id).collect();
    let want = voters.len().min(MAX_REPLICAS);
    let mut load: BTreeMap<NodeId, usize> = voters.iter().map(|v| (*v, 0)).collect();
    for s in &state.shards {
        for r in &s.replicas {
            if let Some(l) = load.get_mut(r) {
                *l += 1;
            }
        }
    }
    let mut out = Vec::new();
    let leaving: BTreeSet<NodeId> = state
        .members
        .values()
        .filter(|m| m.state == MemberState::Leaving)
        .map(|m| m.id)
        .collect();
    for (i, s) in state.shards.iter().enumerate() {
        let has_leaving = s.replicas.iter().any(|r| leaving.contains(r));
        if s.replicas.len() >= want && !has_leaving {
            continue;
        }
        let mut replicas: Vec<NodeId> = s
            .replicas
            .iter()
            .copied()
            .filter(|r| !leaving.contains(r))
            .collect();
        while replicas.len() < want {
            // The voter that would be least full for its capacity.
            let fill = |n: NodeId, l: usize| (l as u64 + 1, u64::from(state.capacity(n)));
            let pick = load
                .iter()
                .filter(|(n, _)| !replicas.contains(n))
                .min_by(|(a, la), (b, lb)| {
                    let ((xa, ca), (xb, cb)) = (fill(**a, **la), fill(**b, **lb));
                    (xa * cb).cmp(&(xb * ca)).then(a.cmp(b))
                })
                .map(|(n, _)| *n);
            match pick {
                Some(n) => {
                    replicas.push(n);
                    if let Some(l) = load.get_mut(&n) {
                        *l += 1;
                    }
                }
                None => break,
            }
        }
        if replicas.is_empty() {
            continue;
        }
        if replicas != s.replicas {
            out.push(PlacementCommand::SetReplicas {
                shard: i as ShardId,
                replicas,
                expected_epoch: s.epoch,
            });
        }
    }
    out
}

/// Plans preferred-leader rotation: reorders fully replicated shards so that
/// each voter is the preferred leader (`replicas[0]`) of about its weighted
/// share of shards (`shards × capacity / total capacity`; with equal
/// capacities, the same number). Only the order changes, never the set.
pub fn plan_leaders(state: &PlacementState) -> Vec<PlacementCommand> {
    let voters: BTreeSet<NodeId> = state.voters().map(|m| m.id).collect();
    if voters.len() < 2 {
        return Vec::new();
    }
    let mut led: BTreeMap<NodeId, usize> = voters.iter().map(|v| (*v, 0)).collect();
    for s in &state.shards {
        if let Some(first) = s.replicas.first() {
            if let Some(c) = led.get_mut(first) {
                *c += 1;
            }
        }
    }
    // Deviations from the weighted share, scaled by the total capacity:
    // one shard led is `cap`.
    let (mut dev, cap) = rebalance::deviations(state, &led);
    let mut out = Vec::new();
    for (i, s) in state.shards.iter().enumerate() {
        let Some(&first) = s.replicas.first() else {
            continue;
        };
        let Some(&d_first) = dev.get(&first) else {
            continue;
        };
        // Hand this shard to the replica furthest below its share, if
        // their gap is more than one shard (so every hand-over narrows it
        // and planning ends).
        let best = s
            .replicas
            .iter()
            .skip(1)
            .filter_map(|r| dev.get(r).map(|d| (*d, *r)))
            .min();
        if let Some((d_b, b)) = best {
            if d_first - d_b > cap {
                let mut replicas = s.replicas.clone();
                replicas.retain(|r| *r != b);
                replicas.insert(0, b);
                *dev.entry(first).or_default() -= cap;
                *dev.entry(b).or_default() += cap;
                out.push(PlacementCommand::SetReplicas {
                    shard: i as ShardId,
                    replicas,
                    expected_epoch: s.epoch,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Node `i`'s addresses (also used by the rebalancer's tests).
    pub(crate) fn addr(i: u64) -> NodeAddr {
        NodeAddr {
            addr: format!("127.0.0.1:{}", 17000 + i),
            peer_addr: format!("127.0.0.1:{}", 17100 + i),
        }
    }

    fn init(shards: u32) -> PlacementState {
        let mut s = PlacementState::default();
        let r = s.apply(PlacementCommand::Init {
            cluster_id: "c".into(),
            shard_count: shards,
            node_id: 1,
            addr: addr(1),
        });
        assert_eq!(r, PlacementResponse::Ok);
        s
    }

    fn add_voter(s: &mut PlacementState, id: u64) {
        assert_eq!(
            s.apply(PlacementCommand::UpsertMember {
                id,
                addr: addr(id),
                state: MemberState::Voter
            }),
            PlacementResponse::Ok
        );
    }

    fn apply_all(s: &mut PlacementState, cmds: Vec<PlacementCommand>) {
        for c in cmds {
            assert_eq!(s.apply(c), PlacementResponse::Ok);
        }
    }

    #[test]
    fn init_is_once() {
        let mut s = init(8);
        assert_eq!(s.shard_count(), 8);
        assert!(s.shards.iter().all(|sh| sh.replicas == vec![1]));
        assert_eq!(
            s.apply(PlacementCommand::Init {
                cluster_id: "x".into(),
                shard_count: 2,
                node_id: 2,
                addr: addr(2)
            }),
            PlacementResponse::Rejected(PlacementError::AlreadyInitialized)
        );
    }

    #[test]
    fn planner_fills_to_three_and_spreads() {
        let mut s = init(8);
        add_voter(&mut s, 2);
        let p = plan_replicas(&s);
        apply_all(&mut s, p);
        assert!(s.shards.iter().all(|sh| sh.replicas.len() == 2));
        add_voter(&mut s, 3);
        add_voter(&mut s, 4);
        let p = plan_replicas(&s);
        apply_all(&mut s, p);
        assert!(s.shards.iter().all(|sh| sh.replicas.len() == 3));
        assert!(
            plan_replicas(&s).is_empty(),
            "planner must reach a fixed point"
        );
        // Node 4 joined last but still gets replicas, and nobody is overloaded.
        let loads: Vec<usize> = (1..=4).map(|n| s.shards_of(n).len()).collect();
        assert!(loads.iter().all(|l| *l >= 4), "loads {loads:?}");
    }

    #[test]
    fn leaders_spread() {
        let mut s = init(8);
        add_voter(&mut s, 2);
        add_voter(&mut s, 3);
        let p = plan_replicas(&s);
        apply_all(&mut s, p);
        let p = plan_leaders(&s);
        apply_all(&mut s, p);
        let mut led = BTreeMap::new();
        for sh in &s.shards {
            *led.entry(sh.replicas[0]).or_insert(0) += 1;
        }
        assert!(led.values().all(|c| *c <= 3), "leaders {led:?}");
        assert!(plan_leaders(&s).is_empty());
    }

    #[test]
    fn remove_refused_while_holding_replicas_and_ids_retire() {
        let mut s = init(2);
        add_voter(&mut s, 2);
        let p = plan_replicas(&s);
        apply_all(&mut s, p);
        assert!(matches!(
            s.apply(PlacementCommand::RemoveMember { id: 2 }),
            PlacementResponse::Rejected(PlacementError::HoldsReplicas { id: 2, .. })
        ));
        add_voter(&mut s, 5);
        // Shards already have min(3, voters) = 3? No: 3 voters, so node 5 gets replicas.
        let p = plan_replicas(&s);
        apply_all(&mut s, p);
        add_voter(&mut s, 6);
        assert!(plan_replicas(&s).is_empty());
        assert_eq!(
            s.apply(PlacementCommand::RemoveMember { id: 6 }),
            PlacementResponse::Ok
        );
        assert_eq!(
            s.apply(PlacementCommand::UpsertMember {
                id: 6,
                addr: addr(6),
                state: MemberState::Learner
            }),
            PlacementResponse::Rejected(PlacementError::IdRetired(6))
        );
        assert_eq!(
            s.apply(PlacementCommand::RemoveMember { id: 6 }),
            PlacementResponse::Rejected(PlacementError::UnknownMember(6))
        );
    }

    #[test]
    fn stale_epoch_rejected() {
        let mut s = init(1);
        add_voter(&mut s, 2);
        let plan = plan_replicas(&s);
        apply_all(&mut s, plan.clone());
        assert!(matches!(
            s.apply(plan[0].clone()),
            PlacementResponse::Rejected(PlacementError::StaleEpoch { .. })
        ));
    }

    fn set_state(s: &mut PlacementState, id: u64, state: MemberState) {
        assert_eq!(
            s.apply(PlacementCommand::UpsertMember {
                id,
                addr: addr(id),
                state
            }),
            PlacementResponse::Ok
        );
    }

    #[test]
    fn leaving_members_are_drained_then_removable() {
        let mut s = init(6);
        for id in 2..=4 {
            add_voter(&mut s, id);
        }
        let p = plan_replicas(&s);
        apply_all(&mut s, p);
        assert!(s.shards.iter().all(|sh| sh.replicas.len() == 3));
        let held = s.shards_of(1);
        assert!(!held.is_empty());
        set_state(&mut s, 1, MemberState::Leaving);
        let p = plan_replicas(&s);
        assert_eq!(p.len(), held.len(), "one move per shard node 1 held");
        apply_all(&mut s, p);
        assert!(s.shards_of(1).is_empty());
        // Still three replicas each, on the remaining voters.
        assert!(s.shards.iter().all(|sh| sh.replicas.len() == 3));
        assert!(plan_replicas(&s).is_empty());
        assert!(plan_leaders(&s).iter().all(|c| match c {
            PlacementCommand::SetReplicas { replicas, .. } => !replicas.contains(&1),
            _ => false,
        }));
        assert_eq!(
            s.apply(PlacementCommand::RemoveMember { id: 1 }),
            PlacementResponse::Ok
        );
    }

    #[test]
    fn draining_shrinks_when_no_spare_voter_and_never_empties_a_shard() {
        let mut s = init(4);
        add_voter(&mut s, 2);
        let p = plan_replicas(&s);
        apply_all(&mut s, p);
        set_state(&mut s, 2, MemberState::Leaving);
        let p = plan_replicas(&s);
        apply_all(&mut s, p);
        assert!(s.shards.iter().all(|sh| sh.replicas == vec![1]));
        // The last voter leaving: nowhere to go, so nothing moves.
        set_state(&mut s, 1, MemberState::Leaving);
        assert!(plan_replicas(&s).is_empty());
        assert!(s.shards.iter().all(|sh| sh.replicas == vec![1]));
    }

    proptest! {
        /// Marking any members as leaving converges to shards that hold no
        /// leaving member (while another voter exists), each with
        /// min(3, remaining voters) distinct replicas.
        #[test]
        fn draining_converges(n in 2u64..7, leave in prop::collection::btree_set(1u64..7, 0..4), shards in 1u32..12) {
            let mut s = init(shards);
            for id in 2..=n { add_voter(&mut s, id); }
            let p = plan_replicas(&s); apply_all(&mut s, p);
            let leave: BTreeSet<u64> = leave.into_iter().filter(|l| *l <= n).collect();
            for l in &leave { set_state(&mut s, *l, MemberState::Leaving); }
            for _ in 0..3 { let p = plan_replicas(&s); apply_all(&mut s, p); }
            prop_assert!(plan_replicas(&s).is_empty(), "planner must reach a fixed point");
            let active = s.voters().count();
            for sh in &s.shards {
                prop_assert!(!sh.replicas.is_empty());
                if active > 0 {
                    prop_assert!(sh.replicas.iter().all(|r| !leave.contains(r)));
                    prop_assert_eq!(sh.replicas.len(), active.min(3));
                }
            }
        }
    }

    proptest! {
        /// Whatever order members join in, planning converges to every shard
        /// having min(3, voters) distinct voter replicas, the state survives
        /// snapshot/restore, and two replicas applying the same commands agree.
        #[test]
        fn planning_converges(joins in prop::collection::vec(2u64..10, 0..8), shards in 1u32..16) {
            let mut s = init(shards);
            for j in joins {
                add_voter(&mut s, j);
                let plan = plan_replicas(&s);
                let mut copy = PlacementState::restore(&s.snapshot().unwrap()).unwrap();
                for c in plan {
                    let a = s.apply(c.clone());
                    let b = copy.apply(c);
                    prop_assert_eq!(a, b);
                }
                prop_assert_eq!(&s, &copy);
                for c in plan_leaders(&s) { s.apply(c); }
            }
            let voters = s.voters().count();
            for sh in &s.shards {
                prop_assert_eq!(sh.replicas.len(), voters.min(3));
                let set: BTreeSet<_> = sh.replicas.iter().collect();
                prop_assert_eq!(set.len(), sh.replicas.len());
            }
        }
    }
}
