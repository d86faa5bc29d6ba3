//! orrery.v1.Cluster over the cluster service.

use crate::node::ops::AdminOp;
use crate::service::cluster::{ShardView, StatusView, VersionAction, VersionView};
use crate::service::Services;
use futures::StreamExt;
use orrery_placement::{Member, PlacementState};
use orrery_proto::v1 as pb;
use orrery_proto::v1::cluster_server::Cluster;
use orrery_types::group_name;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ClusterApi(pub Arc<Services>);

fn member_pb(p: &PlacementState, m: &Member) -> pb::Member {
    pb::Member {
        capacity: p.capacity(m.id),
        ..member_with_shards(m, p.shards_of(m.id))
    }
}

fn member_with_shards(m: &Member, shards: Vec<u32>) -> pb::Member {
    pb::Member {
        id: m.id,
        addr: m.addr.addr.clone(),
        peer_addr: m.addr.peer_addr.clone(),
        state: m.state.as_str().to_string(),
        shards,
        capacity: 1,
    }
}

impl ClusterApi {
    /// Runs a membership change and returns the member as it now stands.
    async fn admin(&self, op: AdminOp) -> Result<(Vec<String>, Option<pb::Member>), Status> {
        let out = self.0.cluster.admin(op).await?;
        let member = out.member.map(|(m, shards)| member_with_shards(&m, shards));
        Ok((out.progress, member))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterApi {
    async fn init(
        &self,
        req: Request<pb::InitRequest>,
    ) -> Result<Response<pb::InitResponse>, Status> {
        let i = self.0.cluster.init(req.into_inner().shards).await?;
        Ok(Response::new(pb::InitResponse {
            cluster_id: i.cluster_id,
            node_id: i.node_id,
            shards: i.shards,
            root_token: i.root_token.unwrap_or_default(),
        }))
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        let r = req.into_inner();
        let (progress, member) = self
            .admin(AdminOp::AddMember {
                id: r.id,
                addr: r.addr,
                peer_addr: r.peer_addr,
                learner_only: r.learner_only,
            })
            .await?;
        Ok(Response::new(pb::AddMemberResponse { progress, member }))
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let id = req.into_inner().id;
        self.0.cluster.admin(AdminOp::RemoveMember { id }).await?;
        Ok(Response::new(pb::RemoveMemberResponse {}))
    }

    async fn promote_member(
        &self,
        req: Request<pb::PromoteMemberRequest>,
    ) -> Result<Response<pb::PromoteMemberResponse>, Status> {
        let id = req.into_inner().id;
        let (_, member) = self.admin(AdminOp::PromoteMember { id }).await?;
        Ok(Response::new(pb::PromoteMemberResponse { member }))
    }

    async fn list_members(
        &self,
        _req: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let p = self.0.cluster.placement_current().await?;
        Ok(Response::new(pb::ListMembersResponse {
            cluster_id: p.cluster_id.clone().unwrap_or_default(),
            members: p.members.values().map(|m| member_pb(&p, m)).collect(),
            placement_leader: self.0.cluster.placement_leader().unwrap_or(0),
        }))
    }

    async fn list_shards(
        &self,
        _req: Request<pb::ListShardsRequest>,
    ) -> Result<Response<pb::ListShardsResponse>, Status> {
        let shards = self.0.cluster.shards().await?;
        Ok(Response::new(pb::ListShardsResponse {
            shards: shards.into_iter().map(shard_pb).collect(),
        }))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.0.cluster.status().await?;
        Ok(Response::new(status_pb(s)))
    }

    async fn get_version(
        &self,
        _req: Request<pb::GetVersionRequest>,
    ) -> Result<Response<pb::ClusterVersion>, Status> {
        let v = self.0.cluster.version().await?;
        Ok(Response::new(version_pb(v)))
    }

    async fn set_version(
        &self,
        req: Request<pb::SetVersionRequest>,
    ) -> Result<Response<pb::ClusterVersion>, Status> {
        use pb::set_version_request::Action;
        let action = match req.into_inner().action {
            Some(Action::Hold(h)) => VersionAction::Hold(h),
            Some(Action::Finalize(true)) => VersionAction::Finalize,
            _ => {
                return Err(Status::invalid_argument(
                    "set exactly one of hold (true or false) or finalize (true)",
                ))
            }
        };
        let v = self.0.cluster.set_version(action).await?;
        Ok(Response::new(version_pb(v)))
    }

    async fn get_rebalance(
        &self,
        _req: Request<pb::GetRebalanceRequest>,
    ) -> Result<Response<pb::RebalanceState>, Status> {
        Ok(Response::new(rebalance_pb(
            self.0.cluster.rebalance().await?,
        )))
    }

    async fn set_rebalance(
        &self,
        req: Request<pb::SetRebalanceRequest>,
    ) -> Result<Response<pb::RebalanceState>, Status> {
        let r = req.into_inner();
        let change = crate::node::RebalanceChange {
            paused: (!r.keep_paused).then_some(r.paused),
            max_moves: r.max_moves,
            max_per_node: r.max_per_node,
        };
        Ok(Response::new(rebalance_pb(
            self.0.cluster.set_rebalance(change).await?,
        )))
    }

    type CreateBackupStream = BackupChunks;

    /// The backup file's bytes in order; an error ends the stream (what
    /// came before it does not verify as a whole file).
    async fn create_backup(
        &self,
        _req: Request<pb::CreateBackupRequest>,
    ) -> Result<Response<Self::CreateBackupStream>, Status> {
        let stream = self.0.backup.create().await?;
        Ok(Response::new(Box::pin(stream.map(|r| {
            r.map(|data| pb::BackupChunk { data }).map_err(Status::from)
        }))))
    }
}

type BackupChunks =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

fn rebalance_pb(r: crate::node::RebalanceStatus) -> pb::RebalanceState {
    pb::RebalanceState {
        paused: r.paused,
        balanced: r.balanced,
        moving: r.moving,
        max_moves: r.limits.max_in_flight as u32,
        max_per_node: r.limits.max_per_node as u32,
        limits_set: r.limits_set,
    }
}

fn version_pb(v: VersionView) -> pb::ClusterVersion {
    pb::ClusterVersion {
        active: v.record.active,
        active_name: orrery_raft::version::version(v.record.active)
            .map(|x| x.name.to_string())
            .unwrap_or_default(),
        held: v.record.held,
        supported: v.supported,
        nodes: v
            .nodes
            .into_iter()
            .map(|(id, m)| match m {
                Some(m) => pb::NodeVersion {
                    node_id: id,
                    supported: m.supported,
                    build: m.build,
                },
                None => pb::NodeVersion {
                    node_id: id,
                    supported: 0,
                    build: String::new(),
                },
            })
            .collect(),
    }
}

fn shard_pb(s: ShardView) -> pb::Shard {
    pb::Shard {
        id: s.id,
        group_id: s.group,
        replicas: s.replicas,
        epoch: s.epoch,
        leader: s.leader.unwrap_or(0),
    }
}

fn status_pb(s: StatusView) -> pb::StatusResponse {
    let groups = s
        .groups
        .into_iter()
        .map(|g| pb::GroupStatus {
            group_id: g.group,
            name: group_name(g.group),
            leader: g.leader.unwrap_or(0),
            term: g.term,
            commit_index: g.commit_index,
            applied_index: g.applied_index,
            last_log_index: g.last_log_index,
            replicas: g
                .replicas
                .into_iter()
                .map(|r| pb::ReplicaStatus {
                    node_id: r.node_id,
                    matched: r.matched,
                    lag: r.lag,
                    voter: r.voter,
                })
                .collect(),
            reported_by: g.reported_by,
        })
        .collect();
    pb::StatusResponse {
        cluster_id: s.cluster_id,
        node_id: s.node_id,
        groups,
        unreachable: s.unreachable,
        cluster_version: Some(version_pb(s.version)),
        insecure: s.insecure,
    }
}
