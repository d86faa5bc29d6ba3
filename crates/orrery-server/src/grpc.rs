//! The public gRPC API (orrery.v1.Kv and orrery.v1.Cluster).

use crate::error::ApiError;
use crate::kv_api::DEFAULT_LIST_LIMIT;
use crate::node::Node;
use crate::ops::{AdminOp, AdminResult, GroupReport};
use orrery_proto::v1 as pb;
use orrery_proto::v1::cluster_server::Cluster;
use orrery_proto::v1::kv_server::Kv;
use orrery_types::{group_name, shard_group};
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct KvService(pub Arc<Node>);
pub struct ClusterService(pub Arc<Node>);

fn lin(c: i32) -> bool {
    c != pb::Consistency::Stale as i32
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let r = req.into_inner();
        let revision = self.0.kv_put(r.key, r.value).await?;
        Ok(Response::new(pb::PutResponse { revision }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let r = req.into_inner();
        let v = self.0.kv_get(r.key, lin(r.consistency)).await?;
        Ok(Response::new(match v {
            Some(v) => pb::GetResponse {
                found: true,
                value: v.value,
                revision: v.revision,
            },
            None => pb::GetResponse {
                found: false,
                value: vec![],
                revision: 0,
            },
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let (deleted, revision) = self.0.kv_delete(req.into_inner().key).await?;
        Ok(Response::new(pb::DeleteResponse { deleted, revision }))
    }

    async fn cas(&self, req: Request<pb::CasRequest>) -> Result<Response<pb::CasResponse>, Status> {
        let r = req.into_inner();
        let (succeeded, revision, current) = self.0.kv_cas(r.key, r.expected, r.value).await?;
        Ok(Response::new(pb::CasResponse {
            succeeded,
            revision,
            current,
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let r = req.into_inner();
        let limit = if r.limit == 0 {
            DEFAULT_LIST_LIMIT
        } else {
            r.limit as usize
        };
        let items = self.0.kv_list(r.prefix, limit, lin(r.consistency)).await?;
        Ok(Response::new(pb::ListResponse {
            items: items
                .into_iter()
                .map(|i| pb::KeyValue {
                    key: i.key,
                    value: i.value,
                    revision: i.revision,
                })
                .collect(),
        }))
    }
}

fn member_pb(
    node: &Node,
    p: &orrery_placement::PlacementState,
    m: &orrery_placement::Member,
) -> pb::Member {
    let _ = node;
    pb::Member {
        id: m.id,
        addr: m.addr.addr.clone(),
        peer_addr: m.addr.peer_addr.clone(),
        state: m.state.as_str().to_string(),
        shards: p.shards_of(m.id),
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn init(
        &self,
        req: Request<pb::InitRequest>,
    ) -> Result<Response<pb::InitResponse>, Status> {
        let (cluster_id, shards) = self.0.init_cluster(req.into_inner().shards).await?;
        Ok(Response::new(pb::InitResponse {
            cluster_id,
            node_id: self.0.id(),
            shards,
        }))
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        let r = req.into_inner();
        let id = r.id;
        let AdminResult::Progress(progress) = self
            .0
            .admin(AdminOp::AddMember {
                id,
                addr: r.addr,
                peer_addr: r.peer_addr,
                learner_only: r.learner_only,
            })
            .await?;
        let p = self.0.placement();
        let member = p.members.get(&id).map(|m| member_pb(&self.0, &p, m));
        Ok(Response::new(pb::AddMemberResponse { progress, member }))
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        self.0
            .admin(AdminOp::RemoveMember {
                id: req.into_inner().id,
            })
            .await?;
        Ok(Response::new(pb::RemoveMemberResponse {}))
    }

    async fn promote_member(
        &self,
        req: Request<pb::PromoteMemberRequest>,
    ) -> Result<Response<pb::PromoteMemberResponse>, Status> {
        let id = req.into_inner().id;
        self.0.admin(AdminOp::PromoteMember { id }).await?;
        let p = self.0.placement();
        let member = p.members.get(&id).map(|m| member_pb(&self.0, &p, m));
        Ok(Response::new(pb::PromoteMemberResponse { member }))
    }

    async fn list_members(
        &self,
        _req: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let p = self.0.placement_current().await;
        if !p.is_initialized() {
            return Err(ApiError::NotInitialized.into());
        }
        Ok(Response::new(pb::ListMembersResponse {
            cluster_id: p.cluster_id.clone().unwrap_or_default(),
            members: p
                .members
                .values()
                .map(|m| member_pb(&self.0, &p, m))
                .collect(),
            placement_leader: self.0.placement_leader().unwrap_or(0),
        }))
    }

    async fn list_shards(
        &self,
        _req: Request<pb::ListShardsRequest>,
    ) -> Result<Response<pb::ListShardsResponse>, Status> {
        let p = self.0.placement_current().await;
        if !p.is_initialized() {
            return Err(ApiError::NotInitialized.into());
        }
        let (reports, _) = self.0.cluster_reports().await;
        let leaders = leaders_by_group(&reports);
        Ok(Response::new(pb::ListShardsResponse {
            shards: p
                .shards
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let gid = shard_group(i as u32);
                    pb::Shard {
                        id: i as u32,
                        group_id: gid,
                        replicas: s.replicas.clone(),
                        epoch: s.epoch,
                        leader: leaders.get(&gid).map(|r| r.node).unwrap_or(0),
                    }
                })
                .collect(),
        }))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let p = self.0.placement();
        if !p.is_initialized() {
            return Err(ApiError::NotInitialized.into());
        }
        let (reports, unreachable) = self.0.cluster_reports().await;
        let leaders = leaders_by_group(&reports);
        let mut by_group: BTreeMap<u64, &GroupReport> = BTreeMap::new();
        for r in &reports {
            by_group.entry(r.group).or_insert(r);
        }
        let groups = by_group
            .into_iter()
            .map(|(gid, any)| {
                let r = leaders.get(&gid).copied().unwrap_or(any);
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
                        pb::ReplicaStatus {
                            node_id: id,
                            matched,
                            lag: r.last_log_index.saturating_sub(matched),
                            voter: r.voters.contains(&id),
                        }
                    })
                    .collect();
                pb::GroupStatus {
                    group_id: gid,
                    name: group_name(gid),
                    leader: r.leader.unwrap_or(0),
                    term: r.term,
                    commit_index: r.commit_index(),
                    applied_index: r.applied,
                    last_log_index: r.last_log_index,
                    replicas,
                    reported_by: r.node,
                }
            })
            .collect();
        Ok(Response::new(pb::StatusResponse {
            cluster_id: p.cluster_id.clone().unwrap_or_default(),
            node_id: self.0.id(),
            groups,
            unreachable,
        }))
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
