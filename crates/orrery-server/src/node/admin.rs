//! Cluster administration, executed on the placement leader: init, and
//! members added, promoted and removed (draining their shard replicas).

use super::ops::{AdminOp, AdminResult, ForwardOk, ForwardOp};
use super::route::FwdErr;
use super::Node;
use crate::api::ApiError;
use openraft::ChangeMembers;
use openraft::ServerState;
use orrery_placement::{MemberState, PlacementCommand, PlacementResponse, PlacementState};
use orrery_raft::Group;
use orrery_types::{NodeAddr, NodeId, PLACEMENT_GROUP};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::timeout_at;

impl Node {
    /// Bootstraps a new cluster with this node as its only member.
    pub async fn init_cluster(self: &Arc<Self>, shards: u32) -> Result<(String, u32), ApiError> {
        let shards = if shards == 0 { 8 } else { shards };
        super::validate::shard_count(shards)?;
        let g = self
            .placement_group()
            .ok_or_else(|| ApiError::Internal("placement group not running".into()))?;
        if !g.is_pristine() || self.placement().is_initialized() {
            return Err(ApiError::Conflict(
                "this node is already initialised (it belongs to a cluster); cluster init is only for a fresh node".into(),
            ));
        }
        let members: BTreeMap<NodeId, NodeAddr> =
            [(self.id(), self.cfg.node_addr())].into_iter().collect();
        g.raft
            .initialize(members)
            .await
            .map_err(|e| ApiError::Conflict(format!("cannot initialise: {e}")))?;
        let cluster_id = format!("{:016x}", rand::random::<u64>());
        let cmd = PlacementCommand::Init {
            cluster_id: cluster_id.clone(),
            shard_count: shards,
            node_id: self.id(),
            addr: self.cfg.node_addr(),
        };
        self.placement_write(cmd).await?;
        // Bootstrap the shard groups now, so the cluster serves as soon as
        // init returns.
        self.reconcile_once().await?;
        let deadline = Instant::now() + self.cfg.admin_timeout;
        for gid in self.shard_groups()? {
            while self
                .registry
                .get(gid)
                .and_then(|g| g.raft.metrics().borrow().current_leader)
                .is_none()
            {
                if Instant::now() > deadline {
                    return Err(ApiError::unavailable(format!(
                        "{} elected no leader",
                        orrery_types::group_name(gid)
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tracing::info!(cluster_id, shards, "cluster initialised");
        Ok((cluster_id, shards))
    }

    pub(super) async fn placement_write(&self, cmd: PlacementCommand) -> Result<(), ApiError> {
        match self.write(PLACEMENT_GROUP, cmd).await? {
            PlacementResponse::Ok => Ok(()),
            PlacementResponse::Rejected(e) => Err(placement_error(e)),
        }
    }

    pub async fn admin(&self, op: AdminOp) -> Result<AdminResult, ApiError> {
        self.admin_hops(op, 0).await
    }

    pub(super) async fn admin_hops(&self, op: AdminOp, hops: u32) -> Result<AdminResult, ApiError> {
        let g = self.placement_group().ok_or(ApiError::NotInitialized)?;
        if !self.placement().is_initialized() {
            return Err(ApiError::NotInitialized);
        }
        let deadline = Instant::now() + self.cfg.admin_timeout;
        loop {
            let m = g.raft.metrics().borrow().clone();
            match m.current_leader {
                Some(l) if l == self.id() && m.state == ServerState::Leader => {
                    return self.execute_admin(&g, op).await
                }
                Some(l) => {
                    let addr = m
                        .membership_config
                        .membership()
                        .get_node(&l)
                        .map(|n| n.peer_addr.clone());
                    if let Some(addr) = addr {
                        match self
                            .forward(&addr, &ForwardOp::Admin(op.clone()), hops, deadline)
                            .await
                        {
                            Ok(ForwardOk::Admin(r)) => return Ok(r),
                            Ok(_) => {
                                return Err(ApiError::Internal("mismatched forward reply".into()))
                            }
                            Err(FwdErr::Api(e)) => return Err(e),
                            Err(FwdErr::Sent(m)) => {
                                return Err(ApiError::OutcomeUnknown(format!(
                                    "forwarded admin request: {m}"
                                )))
                            }
                            Err(FwdErr::NotSent(_)) => {}
                        }
                    }
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(ApiError::unavailable("no placement leader"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(super) async fn execute_admin(
        &self,
        g: &Arc<Group>,
        op: AdminOp,
    ) -> Result<AdminResult, ApiError> {
        let mut progress = Vec::new();
        let placement = self.placement();
        match op {
            AdminOp::AddMember {
                id,
                addr,
                peer_addr,
                learner_only,
            } => {
                if id == 0 {
                    return Err(ApiError::bad("invalid_node_id", "node id 0 is reserved"));
                }
                validate_addr("addr", &addr)?;
                validate_addr("peer_addr", &peer_addr)?;
                if placement.retired.contains(&id) {
                    return Err(placement_error(
                        orrery_placement::PlacementError::IdRetired(id),
                    ));
                }
                let node = NodeAddr { addr, peer_addr };
                if let Some(existing) = placement.members.get(&id) {
                    if existing.addr != node {
                        return Err(ApiError::Conflict(format!(
                            "node {id} is already a member with addresses {}; remove it first",
                            existing.addr
                        )));
                    }
                }
                let clash = placement.members.values().find(|m| {
                    m.id != id && (m.addr.addr == node.addr || m.addr.peer_addr == node.peer_addr)
                });
                if let Some(c) = clash {
                    return Err(ApiError::Conflict(format!(
                        "node {} already uses address {}",
                        c.id, c.addr
                    )));
                }
                // A build older than the cluster's version must not join.
                self.check_joining_version(id, &node.peer_addr).await?;
                // Re-adding a leaving member cancels its drain (promote below).
                let was_voter = placement
                    .members
                    .get(&id)
                    .map(|m| matches!(m.state, MemberState::Voter | MemberState::Leaving))
                    .unwrap_or(false);
                if !was_voter {
                    self.placement_write(PlacementCommand::UpsertMember {
                        id,
                        addr: node.clone(),
                        state: MemberState::Learner,
                    })
                    .await?;
                }
                progress.push(format!("node {id} registered at {node}"));
                timeout_at(
                    (Instant::now() + self.cfg.admin_timeout).into(),
                    g.raft.add_learner(id, node.clone(), true),
                )
                .await
                .map_err(|_| {
                    ApiError::unavailable(format!(
                        "node {id} did not catch up within {:?}; is it running at {}?",
                        self.cfg.admin_timeout, node.peer_addr
                    ))
                })?
                .map_err(|e| ApiError::unavailable(format!("adding learner {id}: {e}")))?;
                progress.push(format!(
                    "node {id} caught up as a learner of the placement group"
                ));
                if !learner_only {
                    self.promote(g, id, &node).await?;
                    progress.push(format!("node {id} is a voter of the placement group"));
                    progress
                        .push("shard replicas will be placed on it by the placement leader".into());
                }
                self.wake_reconciler();
            }
            AdminOp::PromoteMember { id } => {
                let m = placement
                    .members
                    .get(&id)
                    .ok_or_else(|| ApiError::NotFound(format!("node {id} is not a member")))?;
                self.promote(g, id, &m.addr.clone()).await?;
                progress.push(format!("node {id} is a voter of the placement group"));
                self.wake_reconciler();
            }
            AdminOp::RemoveMember { id } => {
                if !placement.members.contains_key(&id) {
                    return Err(ApiError::NotFound(format!("node {id} is not a member")));
                }
                let shards = placement.shards_of(id);
                if !shards.is_empty() {
                    self.drain(id, &placement, &mut progress).await?;
                }
                let mem = g
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .clone();
                let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
                if voters.contains(&id) {
                    if voters.len() == 1 {
                        return Err(ApiError::Conflict("cannot remove the last voter".into()));
                    }
                    self.bounded(g.raft.change_membership(
                        ChangeMembers::RemoveVoters([id].into_iter().collect()),
                        false,
                    ))
                    .await
                    .map_err(|e| ApiError::unavailable(format!("removing voter {id}: {e}")))?;
                } else if mem.get_node(&id).is_some() {
                    self.bounded(g.raft.change_membership(
                        ChangeMembers::RemoveNodes([id].into_iter().collect()),
                        false,
                    ))
                    .await
                    .map_err(|e| ApiError::unavailable(format!("removing learner {id}: {e}")))?;
                }
                progress.push(format!("node {id} left the placement group"));
                self.retire(id).await?;
                progress.push(format!("node {id} removed; its id is retired"));
            }
        }
        Ok(AdminResult::Progress(progress))
    }

    /// Commits `RemoveMember`. When the placement leader has just removed
    /// itself from group 0 it steps down, and a proposal racing that may be
    /// lost: retry until the admin timeout. A retry that finds the member
    /// gone means an earlier attempt committed.
    pub(super) async fn retire(&self, id: NodeId) -> Result<(), ApiError> {
        let deadline = Instant::now() + self.cfg.admin_timeout;
        let mut retried = false;
        loop {
            match self
                .placement_write(PlacementCommand::RemoveMember { id })
                .await
            {
                Ok(()) => return Ok(()),
                Err(ApiError::NotFound(_)) if retried => return Ok(()),
                Err(e @ (ApiError::OutcomeUnknown(_) | ApiError::Unavailable(_)))
                    if Instant::now() < deadline =>
                {
                    tracing::info!(node = id, "retrying the removal record: {e}");
                    retried = true;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves every shard replica off `id` before it is removed: marks it
    /// `Leaving` (the planner then replaces it in each shard's replica list
    /// and the shard leaders change their groups' voters), and waits until
    /// no shard map entry and no shard group's membership names it. Works
    /// whether `id` is alive or dead, and when it leads shards: a leader
    /// that commits its own removal steps down.
    pub(super) async fn drain(
        &self,
        id: NodeId,
        placement: &PlacementState,
        progress: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        if placement.voters().all(|m| m.id == id) {
            return Err(ApiError::Conflict(format!(
                "node {id} holds shard replicas and no other voter can take them; add a node first"
            )));
        }
        let member = placement
            .members
            .get(&id)
            .ok_or_else(|| ApiError::NotFound(format!("node {id} is not a member")))?;
        if member.state != MemberState::Leaving {
            self.placement_write(PlacementCommand::UpsertMember {
                id,
                addr: member.addr.clone(),
                state: MemberState::Leaving,
            })
            .await?;
        }
        progress.push(format!(
            "node {id} is leaving: moving its replicas of shards {:?}",
            placement.shards_of(id)
        ));
        self.wake_reconciler();
        let deadline = Instant::now() + self.cfg.admin_timeout;
        loop {
            if self.placement().shards_of(id).is_empty() && self.no_group_lists(id).await {
                progress.push(format!("node {id} holds no shard replicas"));
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ApiError::unavailable(format!(
                    "node {id} still holds shard replicas after {:?} (moves continue in the background); run the removal again to finish it",
                    self.cfg.admin_timeout
                )));
            }
            self.wake_reconciler();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether every shard group's leader reports a membership without `id`.
    pub(super) async fn no_group_lists(&self, id: NodeId) -> bool {
        let Ok(groups) = self.shard_groups() else {
            return false;
        };
        let (reports, _) = self.cluster_reports().await;
        groups.iter().all(|g| {
            reports.iter().any(|r| {
                r.group == *g
                    && r.is_leader
                    && r.node != id
                    && !r.voters.contains(&id)
                    && !r.learners.contains(&id)
            })
        })
    }

    /// Bounds a membership change by the admin timeout: a leader cut off
    /// from its quorum would otherwise wait for the commit forever.
    pub(super) async fn bounded<T, E: std::fmt::Display>(
        &self,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.cfg.admin_timeout, fut).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "not committed within {:?} (no quorum?); outcome unknown, check `orreryctl members list`",
                self.cfg.admin_timeout
            )),
        }
    }

    pub(super) async fn promote(
        &self,
        g: &Arc<Group>,
        id: NodeId,
        node: &NodeAddr,
    ) -> Result<(), ApiError> {
        let voters: BTreeSet<NodeId> = g
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if !voters.contains(&id) {
            self.bounded(g.raft.change_membership(
                ChangeMembers::AddVoterIds([id].into_iter().collect()),
                false,
            ))
            .await
            .map_err(|e| ApiError::unavailable(format!("promoting {id}: {e}")))?;
        }
        self.placement_write(PlacementCommand::UpsertMember {
            id,
            addr: node.clone(),
            state: MemberState::Voter,
        })
        .await
    }
}

pub(super) fn validate_addr(field: &str, addr: &str) -> Result<(), ApiError> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(ApiError::bad(
            "invalid_address",
            format!("{field} must be host:port, got {addr:?}"),
        )),
    }
}

pub fn placement_error(e: orrery_placement::PlacementError) -> ApiError {
    use orrery_placement::PlacementError as P;
    match &e {
        P::AlreadyInitialized
        | P::HoldsReplicas { .. }
        | P::StaleEpoch { .. }
        | P::IdRetired(_) => ApiError::Conflict(e.to_string()),
        P::NotInitialized => ApiError::NotInitialized,
        P::UnknownMember(_) | P::UnknownShard(_) => ApiError::NotFound(e.to_string()),
        P::InvalidReplicas(_) => ApiError::bad("invalid_replicas", e.to_string()),
        P::InvalidSetting(_) => ApiError::bad("invalid_setting", e.to_string()),
    }
}
