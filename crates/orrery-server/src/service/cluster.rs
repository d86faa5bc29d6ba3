//! Cluster administration and status as both fronts present them: init,
//! membership changes (executed by the placement leader), the member list,
//! the shard map with leaders, and per-group replication status.

use crate::api::ApiError;
use crate::node::ops::{AdminOp, AdminResult, GroupReport};
use crate::node::version::{MemberVersions, VersionRecord};
use crate::node::Node;
use orrery_placement::{Member, PlacementState};
use orrery_types::{shard_group, GroupId, NodeId};
use std::collections::BTreeMap;
use std::sync::Arc;

pub struct ClusterService {
    node: Arc<Node>,
}

/// A new cluster: its id, the node that formed it, and its shard count.
pub struct Initialized {
    pub cluster_id: String,
    pub node_id: NodeId,
    pub shards: u32,
    pub root_token: Option<String>,
}

/// One shard as the placement group maps it, with its current leader.
pub struct ShardView {
    pub id: u32,
    pub group: GroupId,
    pub replicas: Vec<NodeId>,
    pub epoch: u64,
    pub leader: Option<NodeId>,
}

/// One replica of a group: how much of the leader's log it holds.
pub struct ReplicaView {
    pub node_id: NodeId,
    pub matched: u64,
    pub lag: u64,
    pub voter: bool,
}

/// One group's replication status, as its leader (or, without one, any
/// replica) reports it.
pub struct GroupView {
    pub group: GroupId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub replicas: Vec<ReplicaView>,
    pub reported_by: NodeId,
}

pub struct StatusView {
    pub cluster_id: String,
    pub node_id: NodeId,
    pub groups: Vec<GroupView>,
    pub unreachable: Vec<NodeId>,
    pub version: VersionView,
    /// This node runs with `--insecure`.
    pub insecure: bool,
}

/// What a membership change did: its progress lines, and the member as
/// the placement leader now has it, with the shards it holds (`None` once
/// removed).
pub struct AdminOutcome {
    pub progress: Vec<String>,
    pub member: Option<(Member, Vec<u32>)>,
}

/// The cluster version: the active one (and whether it is held), the
/// newest this node supports, and what each member supports (`None`: it
/// did not answer).
pub struct VersionView {
    pub record: VersionRecord,
    pub supported: u32,
    pub nodes: MemberVersions,
}

/// What `SetVersion` / `POST /v1/cluster/version` asks for.
#[derive(Clone, Copy, Debug)]
pub enum VersionAction {
    /// Hold (true) or release the hold (false).
    Hold(bool),
    /// Release the hold and advance now.
    Finalize,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    pub fn node_id(&self) -> NodeId {
        self.node.id()
    }

    /// Initialises a fresh node as a cluster's first voter. A secure
    /// cluster's root token is created now and shown this once.
    pub async fn init(&self, shards: u32) -> Result<Initialized, ApiError> {
        let (cluster_id, shards) = self.node.init_cluster(shards).await?;
        let root_token = if self.node.cfg.auth.insecure {
            None
        } else {
            Some(crate::auth::tokens::create_root(&self.node, crate::api::now_ms()).await?)
        };
        Ok(Initialized {
            cluster_id,
            node_id: self.node.id(),
            shards,
            root_token,
        })
    }

    /// Runs a membership change; returns its progress lines and the member
    /// as it now stands with the shards it holds (none once removed).
    pub async fn admin(&self, op: AdminOp) -> Result<AdminOutcome, ApiError> {
        let id = match &op {
            AdminOp::AddMember { id, .. }
            | AdminOp::RemoveMember { id }
            | AdminOp::PromoteMember { id } => *id,
        };
        let AdminResult::Progress(progress) = self.node.admin(op).await?;
        // Read through the placement leader: the change was made there, and
        // this node's own copy may not have applied it yet (a promote would
        // still show the member as a learner).
        let p = self.node.placement_current().await;
        Ok(AdminOutcome {
            progress,
            member: p.members.get(&id).map(|m| (m.clone(), p.shards_of(id))),
        })
    }

    /// This node's copy of the placement state, once initialised.
    pub fn placement_local(&self) -> Result<PlacementState, ApiError> {
        let p = self.node.placement();
        if p.is_initialized() {
            Ok(p)
        } else {
            Err(ApiError::NotInitialized)
        }
    }

    /// The placement state read through the placement leader.
    pub async fn placement_current(&self) -> Result<PlacementState, ApiError> {
        let p = self.node.placement_current().await;
        if p.is_initialized() {
            Ok(p)
        } else {
            Err(ApiError::NotInitialized)
        }
    }

    pub fn placement_leader(&self) -> Option<NodeId> {
        self.node.placement_leader()
    }

    /// The leader of each group hosted here, as this node knows it.
    pub fn local_leaders(&self) -> BTreeMap<GroupId, Option<NodeId>> {
        self.node
            .registry
            .all()
            .iter()
            .map(|g| (g.id, g.raft.metrics().borrow().current_leader))
            .collect()
    }

    /// The shard map with each shard's leader, as the members report them.
    pub async fn shards(&self) -> Result<Vec<ShardView>, ApiError> {
        let p = self.placement_current().await?;
        let (reports, _) = self.node.cluster_reports().await;
        let leaders = leaders_by_group(&reports);
        Ok(p.shards
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let group = shard_group(i as u32);
                ShardView {
                    id: i as u32,
                    group,
                    replicas: s.replicas.clone(),
                    epoch: s.epoch,
                    leader: leaders.get(&group).map(|r| r.node),
                }
            })
            .collect())
    }

    /// Every group's replication status, gathered from every member, with
    /// each member's version (this node's copy of the version record: the
    /// status answers without a quorum).
    pub async fn status(&self) -> Result<StatusView, ApiError> {
        let p = self.placement_local()?;
        let mut reports = Vec::new();
        let mut unreachable = Vec::new();
        let mut nodes = Vec::new();
        for (id, m) in self.node.poll_members().await {
            match m {
                Some(mut m) => {
                    reports.append(&mut m.reports);
                    nodes.push((id, Some(m.version)));
                }
                None => {
                    unreachable.push(id);
                    nodes.push((id, None));
                }
            }
        }
        let leaders = leaders_by_group(&reports);
        let mut by_group: BTreeMap<u64, &GroupReport> = BTreeMap::new();
        for r in &reports {
            by_group.entry(r.group).or_insert(r);
        }
        let groups = by_group
            .into_iter()
            .map(|(gid, any)| group_view(gid, leaders.get(&gid).copied().unwrap_or(any)))
            .collect();
        Ok(StatusView {
            cluster_id: p.cluster_id.clone().unwrap_or_default(),
            node_id: self.node.id(),
            groups,
            unreachable,
            insecure: self.node.cfg.auth.insecure,
            version: VersionView {
                record: self.node.version_local(),
                supported: crate::node::version::supported(),
                nodes,
            },
        })
    }

    /// Rebalancing: paused or not, balanced or not, shards moving.
    pub async fn rebalance(&self) -> Result<crate::node::RebalanceStatus, ApiError> {
        self.placement_local()?;
        self.node.rebalance_status().await
    }

    /// Pauses or resumes rebalancing cluster-wide, and sets its throttles
    /// (cluster version 9); `None` leaves a setting as it is.
    pub async fn set_rebalance(
        &self,
        change: crate::node::RebalanceChange,
    ) -> Result<crate::node::RebalanceStatus, ApiError> {
        self.placement_local()?;
        self.node.change_rebalance(change).await?;
        self.node.rebalance_status().await
    }

    /// The cluster version as of now (read through the placement leader)
    /// and every member's.
    pub async fn version(&self) -> Result<VersionView, ApiError> {
        self.placement_local()?;
        let record = self.node.version_current().await;
        Ok(self.version_view(record).await)
    }

    /// The cluster version, after this node's copy and each member's
    /// version: answers without a quorum (for `/v1/cluster`).
    pub async fn version_local(&self) -> VersionView {
        self.version_view(self.node.version_local()).await
    }

    async fn version_view(&self, record: VersionRecord) -> VersionView {
        VersionView {
            record,
            supported: crate::node::version::supported(),
            nodes: self.node.member_versions().await,
        }
    }

    /// Holds, releases or finalizes the cluster version.
    pub async fn set_version(&self, action: VersionAction) -> Result<VersionView, ApiError> {
        self.placement_local()?;
        let record = match action {
            VersionAction::Hold(held) => self.node.set_version_hold(held).await?,
            VersionAction::Finalize => self.node.finalize_version().await?,
        };
        Ok(self.version_view(record).await)
    }

    /// Whether this node can serve cluster operations now (see
    /// [`Node::readiness`]): the placement leader, or why not.
    pub fn readiness(&self) -> Result<NodeId, String> {
        self.node.readiness()
    }
}

fn group_view(group: GroupId, r: &GroupReport) -> GroupView {
    let mut ids: Vec<u64> = r.voters.iter().chain(r.learners.iter()).copied().collect();
    ids.sort_unstable();
    let replicas = ids
        .into_iter()
        .map(|id| {
            let matched = if id == r.node {
                r.last_log_index
            } else {
                r.matched
                    .as_ref()
                    .and_then(|m| m.get(&id).copied())
                    .unwrap_or(0)
            };
            ReplicaView {
                node_id: id,
                matched,
                lag: r.last_log_index.saturating_sub(matched),
                voter: r.voters.contains(&id),
            }
        })
        .collect();
    GroupView {
        group,
        leader: r.leader,
        term: r.term,
        commit_index: r.commit_index(),
        applied_index: r.applied,
        last_log_index: r.last_log_index,
        replicas,
        reported_by: r.node,
    }
}

/// For each group, the report of the node that leads it in the highest term.
fn leaders_by_group(reports: &[GroupReport]) -> BTreeMap<u64, &GroupReport> {
    let mut out: BTreeMap<u64, &GroupReport> = BTreeMap::new();
    for r in reports.iter().filter(|r| r.is_leader) {
        match out.get(&r.group) {
            Some(cur) if cur.term >= r.term => {}
            _ => {
                out.insert(r.group, r);
            }
        }
    }
    out
}
