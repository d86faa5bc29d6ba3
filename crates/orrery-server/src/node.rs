//! The node runtime: routes every request to the group leader that can
//! serve it (locally or over the peer channel), executes membership
//! changes on the placement leader, and reconciles the shard groups hosted
//! here with the shard map.

use crate::error::ApiError;
use crate::group_commit::{Failure, GroupCommit, WriteError};
use crate::metrics::Metrics;
use crate::ops::{AdminOp, AdminResult, ForwardOk, ForwardOp, GroupReport, Query, QueryResult};
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{ChangeMembers, ServerState};
use orrery_placement::{
    plan_leaders, plan_replicas, MemberState, PlacementCommand, PlacementResponse, PlacementState,
};
use orrery_proto::peer::ForwardRequest;
use orrery_raft::{Command, Group, RaftSettings, Registry, Response};
use orrery_types::{group_shard, shard_group, GroupId, NodeAddr, NodeId, PLACEMENT_GROUP};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::time::timeout_at;

/// A forwarded request may be forwarded again (its target lost leadership
/// meanwhile), but never in a loop.
const MAX_HOPS: u32 = 3;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Address clients use (REST + gRPC), as advertised to peers.
    pub addr: String,
    /// Address peers use (Raft + forwarding), as advertised.
    pub peer_addr: String,
    pub data_dir: PathBuf,
    pub raft: RaftSettings,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub request_timeout: Duration,
    pub admin_timeout: Duration,
    /// Ask this endpoint to add us, if we are not a member yet.
    pub join: Option<String>,
    /// Source address of outgoing peer connections (`None`: the kernel picks).
    pub peer_source: Option<std::net::IpAddr>,
    /// Execution engine worker slots (0 = no engine on this node).
    pub workers: usize,
    /// Root directory for the built-in fs.* / image.* job kinds.
    pub fs_root: Option<PathBuf>,
    /// Run `command` jobs on this node.
    pub allow_command_jobs: bool,
    /// Which of the host's GPUs this node's engine manages.
    pub gpus: orrery_exec::GpuSelection,
    /// How long finished jobs are kept before shard leaders prune them.
    pub job_retention: Duration,
}

impl NodeConfig {
    pub fn node_addr(&self) -> NodeAddr {
        NodeAddr {
            addr: self.addr.clone(),
            peer_addr: self.peer_addr.clone(),
        }
    }
}

pub struct Node {
    pub cfg: NodeConfig,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    reconcile: Notify,
    /// Groups with a membership change in flight (started by this node).
    busy: Mutex<HashSet<GroupId>>,
    /// Per group: when this node last tried to hand leadership to the
    /// preferred leader, and how many tries in a row failed.
    last_hand_over: Mutex<HashMap<GroupId, (Instant, u32)>>,
    /// Groups whose writes wait (until the instant) while their leadership
    /// is handed over.
    paused: Mutex<HashMap<GroupId, Instant>>,
    /// Job queues: the execution engine and claim wake-ups.
    pub jobs: crate::jobs_api::JobsRuntime,
    /// Lanes that merge concurrent queue writes into one entry per group.
    group_commit: GroupCommit,
}

/// On a leader: how many entries of its log `target` does not have yet.
fn behind(m: &orrery_raft::RaftMetrics, target: NodeId) -> u64 {
    let matched = m
        .replication
        .as_ref()
        .and_then(|r| r.get(&target).cloned().flatten())
        .map(|l| l.index + 1)
        .unwrap_or(0);
    (m.last_log_index.map(|l| l + 1).unwrap_or(0)).saturating_sub(matched)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Node {
    pub fn new(cfg: NodeConfig, registry: Arc<Registry>) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            registry,
            metrics: Arc::new(Metrics::default()),
            reconcile: Notify::new(),
            busy: Mutex::new(HashSet::new()),
            last_hand_over: Mutex::new(HashMap::new()),
            paused: Mutex::new(HashMap::new()),
            jobs: Default::default(),
            group_commit: GroupCommit::default(),
        })
    }

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    pub fn placement_group(&self) -> Option<Arc<Group>> {
        self.registry.get(PLACEMENT_GROUP)
    }

    /// The placement state as of now: read through the placement leader
    /// (linearizable), so that a membership change that has returned is
    /// visible from every node. Without a quorum, this node's own view,
    /// which may be stale.
    pub async fn placement_current(&self) -> PlacementState {
        if self.placement().is_initialized() {
            if let Ok(QueryResult::Placement(p)) =
                self.read(PLACEMENT_GROUP, Query::Placement, true).await
            {
                return *p;
            }
        }
        self.placement()
    }

    /// This node's copy of the placement state (may lag the leader's).
    pub fn placement(&self) -> PlacementState {
        self.placement_group()
            .map(|g| g.sm.read(|s| s.placement.clone()))
            .unwrap_or_default()
    }

    /// Whether this node can serve cluster operations now: it knows a
    /// placement leader and, when it is that leader, a quorum of the
    /// placement group acknowledged it within two election timeouts (a
    /// leader cut off from its quorum keeps believing it leads; it must
    /// not report ready). Returns the leader, or why not.
    pub fn readiness(&self) -> Result<NodeId, String> {
        let Some(g) = self.placement_group() else {
            return Err("not part of an initialised cluster yet".into());
        };
        let m = g.raft.metrics().borrow().clone();
        let Some(leader) = m.current_leader else {
            return Err("no placement leader known (election in progress, or no quorum)".into());
        };
        if leader == self.id() {
            let limit = 2 * self.cfg.raft.election_max_ms;
            match m.millis_since_quorum_ack {
                Some(ms) if ms <= limit => {}
                Some(ms) => {
                    return Err(format!(
                    "this node leads the placement group but no quorum acknowledged it for {ms} ms"
                ))
                }
                None => {
                    return Err(
                        "this node leads the placement group but no quorum acknowledged it yet"
                            .into(),
                    )
                }
            }
        }
        Ok(leader)
    }

    pub fn placement_leader(&self) -> Option<NodeId> {
        self.placement_group()
            .and_then(|g| g.raft.metrics().borrow().current_leader)
    }

    /// The shard map as this node knows it, or an error before init.
    fn shard_count(&self) -> Result<u32, ApiError> {
        let n = self
            .placement_group()
            .map(|g| g.sm.read(|s| s.placement.shard_count()))
            .unwrap_or(0);
        if n == 0 {
            Err(ApiError::NotInitialized)
        } else {
            Ok(n)
        }
    }

    pub fn group_for_key(&self, key: &[u8]) -> Result<GroupId, ApiError> {
        Ok(shard_group(orrery_types::shard_for_key(
            key,
            self.shard_count()?,
        )))
    }

    pub fn shard_groups(&self) -> Result<Vec<GroupId>, ApiError> {
        Ok((0..self.shard_count()?).map(shard_group).collect())
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.cfg.request_timeout
    }

    pub fn wake_reconciler(&self) {
        self.reconcile.notify_one();
    }

    // ---------------------------------------------------------------
    // Routing
    // ---------------------------------------------------------------

    /// Peer addresses of a group's replicas, preferred leader first.
    fn replica_addrs(&self, group: GroupId) -> Result<Vec<(NodeId, String)>, ApiError> {
        let p = self.placement();
        if !p.is_initialized() {
            return Err(ApiError::NotInitialized);
        }
        let ids: Vec<NodeId> = match group_shard(group) {
            None => p.members.keys().copied().collect(),
            Some(s) => p
                .shards
                .get(s as usize)
                .map(|i| i.replicas.clone())
                .ok_or_else(|| ApiError::NotFound(format!("shard {s} does not exist")))?,
        };
        Ok(ids
            .into_iter()
            .filter_map(|id| p.members.get(&id).map(|m| (id, m.addr.peer_addr.clone())))
            .collect())
    }

    async fn forward(
        &self,
        peer_addr: &str,
        op: &ForwardOp,
        hops: u32,
        deadline: Instant,
    ) -> Result<ForwardOk, FwdErr> {
        if hops >= MAX_HOPS {
            return Err(FwdErr::Api(ApiError::unavailable(
                "request forwarded too many times; leadership is changing",
            )));
        }
        let payload = orrery_storage::encode(op)
            .map_err(|e| FwdErr::Api(ApiError::Internal(e.to_string())))?;
        let mut client = self
            .registry
            .clients()
            .client(peer_addr)
            .map_err(|e| FwdErr::Api(ApiError::Internal(e.to_string())))?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut req = tonic::Request::new(ForwardRequest {
            payload,
            hops: hops + 1,
        });
        req.set_timeout(remaining);
        self.metrics.inc_forwarded();
        match timeout_at(deadline.into(), client.forward(req)).await {
            Err(_) => Err(FwdErr::Sent(format!("timed out waiting for {peer_addr}"))),
            Ok(Err(status)) => {
                let msg = format!("{peer_addr}: {}", status.message());
                // A failed connect means the request never left this node.
                if status.code() == tonic::Code::Unavailable && is_connect_error(&status) {
                    Err(FwdErr::NotSent(msg))
                } else {
                    Err(FwdErr::Sent(msg))
                }
            }
            Ok(Ok(reply)) => {
                let r: Result<ForwardOk, ApiError> =
                    orrery_storage::decode(&reply.into_inner().payload).map_err(|e| {
                        FwdErr::Api(ApiError::Internal(format!("bad forward reply: {e}")))
                    })?;
                r.map_err(FwdErr::Api)
            }
        }
    }

    /// Serves a forwarded operation (the Peer.Forward RPC).
    pub async fn handle_forward(&self, op: ForwardOp, hops: u32) -> Result<ForwardOk, ApiError> {
        match op {
            ForwardOp::Write { group, cmd } => self
                .write_hops(group, cmd, hops)
                .await
                .map(ForwardOk::Write),
            ForwardOp::Read {
                group,
                query,
                linearizable,
            } => self
                .read_hops(group, query, linearizable, hops)
                .await
                .map(ForwardOk::Read),
            ForwardOp::Admin(a) => self.admin_hops(a, hops).await.map(ForwardOk::Admin),
            ForwardOp::Campaign { group } => Ok(ForwardOk::Campaigned(self.campaign(group).await)),
        }
    }

    /// Replicates `cmd` through `group` and returns its applied response.
    pub async fn write(&self, group: GroupId, cmd: Command) -> Result<Response, ApiError> {
        self.write_hops(group, cmd, 0).await
    }

    async fn write_hops(
        &self,
        group: GroupId,
        cmd: Command,
        hops: u32,
    ) -> Result<Response, ApiError> {
        let deadline = self.deadline();
        let op = ForwardOp::Write {
            group,
            cmd: cmd.clone(),
        };
        loop {
            let target = match self.registry.get(group) {
                Some(g) => {
                    self.wait_unpaused(group, deadline).await;
                    let unknown = || {
                        ApiError::OutcomeUnknown(format!(
                            "{} did not commit the write within {:?} (no quorum, or the leader changed)",
                            g.name(),
                            self.cfg.request_timeout
                        ))
                    };
                    match timeout_at(deadline.into(), self.propose(&g, cmd.clone())).await {
                        // Proposed, not committed in time: it may still be.
                        Err(_) | Ok(Err(Failure::TimedOut)) => return Err(unknown()),
                        Ok(Ok(resp)) => return Ok(resp),
                        Ok(Err(Failure::Raft(e))) => match *e {
                            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => self
                                .leader_target(&f)
                                .or_else(|| self.moved_away_target(group)),
                            e => {
                                return Err(ApiError::OutcomeUnknown(format!("{}: {e}", g.name())))
                            }
                        },
                    }
                }
                None => self.remote_target(group)?,
            };
            if let Some(addr) = target {
                match self.forward(&addr, &op, hops, deadline).await {
                    Ok(ForwardOk::Write(r)) => return Ok(r),
                    Ok(_) => return Err(ApiError::Internal("mismatched forward reply".into())),
                    Err(FwdErr::Api(e)) => return Err(e),
                    // The write may have been applied: only the client can decide to retry.
                    Err(FwdErr::Sent(m)) => {
                        return Err(ApiError::OutcomeUnknown(format!("forwarded write: {m}")))
                    }
                    Err(FwdErr::NotSent(m)) => tracing::debug!(group, "forward not sent: {m}"),
                }
            }
            if Instant::now() + Duration::from_millis(50) >= deadline {
                return Err(ApiError::unavailable(format!(
                    "no leader for {} within {:?}",
                    orrery_types::group_name(group),
                    self.cfg.request_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Proposes `cmd` to the local replica of `g`: queue writes that can be
    /// merged go through the group's group-commit lane, the rest straight
    /// to Raft.
    async fn propose(&self, g: &Arc<Group>, cmd: Command) -> Result<Response, Failure> {
        match cmd {
            // The lane bounds each proposal by the request timeout, not by
            // this caller's deadline: later requests merged into the same
            // lane run must not inherit a caller's nearly spent time. The
            // caller's own wait is bounded by `write_hops`.
            Command::Queue(q) if GroupCommit::takes_queue(&q) => {
                self.group_commit
                    .propose(g, q, self.cfg.request_timeout, &self.metrics)
                    .await
            }
            cmd => g
                .raft
                .client_write(cmd)
                .await
                .map(|r| r.data)
                .map_err(|e: WriteError| Failure::Raft(Box::new(e))),
        }
    }

    fn leader_target(&self, f: &ForwardToLeader<NodeId, NodeAddr>) -> Option<String> {
        match (f.leader_id, &f.leader_node) {
            (Some(id), Some(node)) if id != self.id() => Some(node.peer_addr.clone()),
            _ => None,
        }
    }

    /// A group still open here whose replicas moved to other nodes knows no
    /// leader once it was removed from the group: route like a non-host.
    /// Removed means either the shard map no longer lists this node, or the
    /// group's own membership no longer has it. The second comes first for
    /// a placement leader that removed itself: until its `RemoveMember`
    /// record commits (through the new leader, which it must find), the
    /// placement state still lists it as a member.
    fn moved_away_target(&self, group: GroupId) -> Option<String> {
        let in_group = self.registry.get(group).is_some_and(|g| {
            g.raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&self.id())
                .is_some()
        });
        let hosts_it = in_group
            && self
                .replica_addrs(group)
                .map(|r| r.iter().any(|(id, _)| *id == self.id()))
                .unwrap_or(true);
        if hosts_it {
            None
        } else {
            self.remote_target(group).ok().flatten()
        }
    }

    /// For a group not hosted here: a replica to forward to, rotating so a
    /// dead preferred replica does not stall every request.
    fn remote_target(&self, group: GroupId) -> Result<Option<String>, ApiError> {
        // This node may be listed before it has opened the group (just after
        // init, or while being added); never forward to ourselves.
        let replicas: Vec<_> = self
            .replica_addrs(group)?
            .into_iter()
            .filter(|(id, _)| *id != self.id())
            .collect();
        if replicas.is_empty() {
            return Ok(None);
        }
        let i = self.metrics.next_rotation() % replicas.len();
        Ok(Some(replicas[i].1.clone()))
    }

    pub async fn read(
        &self,
        group: GroupId,
        query: Query,
        linearizable: bool,
    ) -> Result<QueryResult, ApiError> {
        self.read_hops(group, query, linearizable, 0).await
    }

    async fn read_hops(
        &self,
        group: GroupId,
        query: Query,
        linearizable: bool,
        hops: u32,
    ) -> Result<QueryResult, ApiError> {
        let deadline = self.deadline();
        let op = ForwardOp::Read {
            group,
            query: query.clone(),
            linearizable,
        };
        loop {
            let target = match self.registry.get(group) {
                Some(g) if !linearizable => return Ok(run_query(&g, &query)),
                Some(g) => match timeout_at(deadline.into(), g.raft.ensure_linearizable()).await {
                    Err(_) => {
                        return Err(ApiError::unavailable(format!(
                            "{} could not confirm leadership within {:?}: no quorum",
                            g.name(),
                            self.cfg.request_timeout
                        )))
                    }
                    Ok(Ok(_)) => {
                        if timeout_at(deadline.into(), g.read_barrier()).await.is_err() {
                            return Err(ApiError::unavailable(format!(
                                "{} restarted as leader and has not yet applied its log within {:?}",
                                g.name(),
                                self.cfg.request_timeout
                            )));
                        }
                        return Ok(run_query(&g, &query));
                    }
                    Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => self
                        .leader_target(&f)
                        .or_else(|| self.moved_away_target(group)),
                    Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
                        self.moved_away_target(group)
                    }
                    Ok(Err(e)) => return Err(ApiError::unavailable(format!("{}: {e}", g.name()))),
                },
                None => self.remote_target(group)?,
            };
            if let Some(addr) = target {
                match self.forward(&addr, &op, hops, deadline).await {
                    Ok(ForwardOk::Read(r)) => return Ok(r),
                    Ok(_) => return Err(ApiError::Internal("mismatched forward reply".into())),
                    Err(FwdErr::Api(e)) => return Err(e),
                    // Reads have no effect, so any transport failure may be retried.
                    Err(FwdErr::Sent(m)) | Err(FwdErr::NotSent(m)) => {
                        tracing::debug!(group, "read forward failed: {m}")
                    }
                }
            }
            if Instant::now() + Duration::from_millis(50) >= deadline {
                return Err(ApiError::unavailable(format!(
                    "no reachable leader for {} within {:?}",
                    orrery_types::group_name(group),
                    self.cfg.request_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // ---------------------------------------------------------------
    // Cluster administration
    // ---------------------------------------------------------------

    /// Bootstraps a new cluster with this node as its only member.
    pub async fn init_cluster(self: &Arc<Self>, shards: u32) -> Result<(String, u32), ApiError> {
        let shards = if shards == 0 { 8 } else { shards };
        if shards > 1024 {
            return Err(ApiError::bad(
                "invalid_shards",
                format!("shards must be 1..=1024, got {shards}"),
            ));
        }
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

    async fn placement_write(&self, cmd: PlacementCommand) -> Result<(), ApiError> {
        match self.write(PLACEMENT_GROUP, Command::Placement(cmd)).await? {
            Response::Placement(PlacementResponse::Ok) => Ok(()),
            Response::Placement(PlacementResponse::Rejected(e)) => Err(placement_error(e)),
            other => Err(ApiError::Internal(format!(
                "unexpected placement response {other:?}"
            ))),
        }
    }

    pub async fn admin(&self, op: AdminOp) -> Result<AdminResult, ApiError> {
        self.admin_hops(op, 0).await
    }

    async fn admin_hops(&self, op: AdminOp, hops: u32) -> Result<AdminResult, ApiError> {
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

    async fn execute_admin(&self, g: &Arc<Group>, op: AdminOp) -> Result<AdminResult, ApiError> {
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
    async fn retire(&self, id: NodeId) -> Result<(), ApiError> {
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
    async fn drain(
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
    async fn no_group_lists(&self, id: NodeId) -> bool {
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
    async fn bounded<T, E: std::fmt::Display>(
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

    async fn promote(&self, g: &Arc<Group>, id: NodeId, node: &NodeAddr) -> Result<(), ApiError> {
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

    // ---------------------------------------------------------------
    // Status
    // ---------------------------------------------------------------

    /// This node's view of each group it hosts.
    pub fn local_reports(&self) -> Vec<GroupReport> {
        self.registry
            .all()
            .into_iter()
            .map(|g| {
                let m = g.raft.metrics().borrow().clone();
                let mem = m.membership_config.membership();
                GroupReport {
                    group: g.id,
                    node: self.id(),
                    is_leader: m.state == ServerState::Leader,
                    leader: m.current_leader,
                    term: m.current_term,
                    last_log_index: m.last_log_index.unwrap_or(0),
                    applied: m.last_applied.map(|l| l.index).unwrap_or(0),
                    snapshot: m.snapshot.map(|l| l.index).unwrap_or(0),
                    voters: mem.voter_ids().collect(),
                    learners: mem.learner_ids().collect(),
                    matched: m.replication.as_ref().map(|r| {
                        r.iter()
                            .map(|(n, l)| (*n, l.map(|l| l.index).unwrap_or(0)))
                            .collect()
                    }),
                }
            })
            .collect()
    }

    /// Reports from every member, each gathered over the peer channel.
    pub async fn cluster_reports(&self) -> (Vec<GroupReport>, Vec<NodeId>) {
        let p = self.placement();
        let mut reports = self.local_reports();
        let mut unreachable = Vec::new();
        let futs = p.members.values().filter(|m| m.id != self.id()).map(|m| {
            let clients = self.registry.clients().clone();
            let (id, addr) = (m.id, m.addr.peer_addr.clone());
            async move {
                let r = async {
                    let mut c = clients.client(&addr).ok()?;
                    let mut req = tonic::Request::new(orrery_proto::peer::LocalStatusRequest {});
                    req.set_timeout(Duration::from_secs(1));
                    let reply = tokio::time::timeout(Duration::from_secs(1), c.local_status(req))
                        .await
                        .ok()?
                        .ok()?;
                    orrery_storage::decode::<Vec<GroupReport>>(&reply.into_inner().payload).ok()
                }
                .await;
                (id, r)
            }
        });
        for (id, r) in futures::future::join_all(futs).await {
            match r {
                Some(mut rs) => reports.append(&mut rs),
                None => unreachable.push(id),
            }
        }
        (reports, unreachable)
    }

    // ---------------------------------------------------------------
    // Reconciliation
    // ---------------------------------------------------------------

    /// Brings the groups hosted here in line with the shard map, and on the
    /// placement leader, the shard map in line with the members.
    pub async fn run_reconciler(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.reconcile_once().await {
                tracing::debug!("reconcile: {e}");
            }
            tokio::select! {
                _ = self.reconcile.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn reconcile_once(self: &Arc<Self>) -> Result<(), ApiError> {
        let p = self.placement();
        if !p.is_initialized() {
            return Ok(());
        }
        let me = self.id();
        for (s, info) in p.shards.iter().enumerate() {
            let gid = shard_group(s as u32);
            if !info.replicas.contains(&me) {
                // Replicas moved off this node: while it still leads the
                // group, it carries out the move (then steps down).
                if let Some(g) = self.registry.get(gid) {
                    self.reconcile_shard_membership(&g, &info.replicas, &p);
                }
                continue;
            }
            let g = self
                .registry
                .ensure(gid)
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            // Only a shard's very first replica may bootstrap it; every later
            // replica joins through the existing group's leader.
            // Epoch 1 is the map `Init` wrote; a later single-replica list is
            // a move, whose new replica must join the existing group (a fresh
            // bootstrap there would fork the shard).
            if info.replicas == [me] && info.epoch == 1 && g.is_pristine() {
                let members: BTreeMap<NodeId, NodeAddr> =
                    [(me, self.cfg.node_addr())].into_iter().collect();
                if let Err(e) = g.raft.initialize(members).await {
                    tracing::warn!(group = gid, "initialise shard group: {e}");
                } else {
                    tracing::info!(group = gid, "shard group bootstrapped");
                }
            }
            self.reconcile_shard_membership(&g, &info.replicas, &p);
            self.maybe_hand_over(&g, &info.replicas, &p);
        }
        // The placement leader keeps the shard map complete.
        if let Some(pg) = self.placement_group() {
            if pg.raft.metrics().borrow().state == ServerState::Leader {
                let mut plan = plan_replicas(&p);
                if plan.is_empty() {
                    plan = plan_leaders(&p);
                }
                for cmd in plan {
                    tracing::info!(?cmd, "placement plan");
                    if let Err(e) = self.placement_write(cmd).await {
                        tracing::debug!("placement plan not applied: {e}");
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// On a shard leader: make the group's voters equal the shard map's
    /// replicas (learners first, so a new replica catches up before voting).
    fn reconcile_shard_membership(
        self: &Arc<Self>,
        g: &Arc<Group>,
        desired: &[NodeId],
        p: &PlacementState,
    ) {
        let m = g.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return;
        }
        let mem = m.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
        let want: BTreeSet<NodeId> = desired.iter().copied().collect();
        if voters == want || m.membership_config.membership().get_joint_config().len() > 1 {
            return;
        }
        let mut nodes = BTreeMap::new();
        for id in &want {
            match p.members.get(id) {
                Some(member) => {
                    nodes.insert(*id, member.addr.clone());
                }
                None => return,
            }
        }
        if !lock(&self.busy).insert(g.id) {
            return;
        }
        let node = self.clone();
        let g = g.clone();
        tokio::spawn(async move {
            let r = async {
                for (id, addr) in &nodes {
                    if mem.get_node(id).is_none() {
                        tracing::info!(group = g.id, node = id, "adding shard replica as learner");
                        tokio::time::timeout(node.cfg.admin_timeout, g.raft.add_learner(*id, addr.clone(), true))
                            .await
                            .map_err(|_| format!("learner {id} did not catch up"))?
                            .map_err(|e| e.to_string())?;
                    }
                }
                node.bounded(g.raft.change_membership(ChangeMembers::ReplaceAllVoters(want), false))
                    .await?;
                tracing::info!(group = g.id, voters = ?nodes.keys().collect::<Vec<_>>(), "shard membership updated");
                Ok::<_, String>(())
            }
            .await;
            if let Err(e) = r {
                tracing::warn!(group = g.id, "shard membership change: {e}");
            }
            lock(&node.busy).remove(&g.id);
            node.wake_reconciler();
        });
    }

    /// Waits while `group`'s writes are paused for a leadership hand-over
    /// (at most until `deadline`).
    async fn wait_unpaused(&self, group: GroupId, deadline: Instant) {
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
    fn maybe_hand_over(self: &Arc<Self>, g: &Arc<Group>, replicas: &[NodeId], p: &PlacementState) {
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
    async fn hand_over(&self, g: &Arc<Group>, target: NodeId, peer: &str) -> bool {
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
    async fn campaign(&self, group: GroupId) -> bool {
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

    /// Asks `endpoint` to add this node, until it is a member.
    pub async fn run_join(
        self: Arc<Self>,
        endpoint: String,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        use orrery_proto::v1::cluster_client::ClusterClient;
        loop {
            let is_member = self
                .placement_group()
                .map(|g| !g.is_pristine())
                .unwrap_or(false);
            if is_member {
                tracing::info!("joined the cluster");
                return;
            }
            let url = if endpoint.starts_with("http") {
                endpoint.clone()
            } else {
                format!("http://{endpoint}")
            };
            match ClusterClient::connect(url).await {
                Ok(mut c) => {
                    let req = orrery_proto::v1::AddMemberRequest {
                        id: self.id(),
                        addr: self.cfg.addr.clone(),
                        peer_addr: self.cfg.peer_addr.clone(),
                        learner_only: false,
                    };
                    match c.add_member(req).await {
                        Ok(_) => {
                            tracing::info!(%endpoint, "added to the cluster");
                            return;
                        }
                        Err(s) => tracing::warn!(%endpoint, "join: {}", s.message()),
                    }
                }
                Err(e) => tracing::warn!(%endpoint, "join: cannot connect: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

fn run_query(g: &Group, q: &Query) -> QueryResult {
    g.sm.read(|s| match q {
        Query::KvGet { key } => QueryResult::KvGet(s.kv.get(key).cloned()),
        Query::KvList { prefix, limit } => QueryResult::KvList(s.kv.list(prefix, *limit)),
        Query::Placement => QueryResult::Placement(Box::new(s.placement.clone())),
        Query::Jobs(q) => QueryResult::Jobs(crate::jobs_api::run_jobs_query(&s.queue, q)),
        Query::VectorCatalog => QueryResult::VectorCatalog(s.vector.catalog.clone()),
        Query::VectorSearch(r) => QueryResult::VectorSearch(s.vector.search(r).map(|(h, _)| h)),
        Query::VectorGet {
            collection,
            uid,
            id,
        } => QueryResult::VectorGet(s.vector.get_point(collection, *uid, id).cloned()),
        Query::VectorInfo { collection, uid } => {
            QueryResult::VectorInfo(s.vector.shard_info(collection, *uid))
        }
        Query::Policy(q) => QueryResult::Policy(s.policy.query(q)),
    })
}

enum FwdErr {
    /// The serving node answered with an error.
    Api(ApiError),
    /// The request may have reached the peer; its outcome is unknown.
    Sent(String),
    /// The request certainly did not leave this node.
    NotSent(String),
}

fn is_connect_error(status: &tonic::Status) -> bool {
    let text = format!("{status:?}").to_lowercase();
    text.contains("connect") || text.contains("connection refused")
}

fn validate_addr(field: &str, addr: &str) -> Result<(), ApiError> {
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
    }
}
