//! `/v1/cluster/status` (every group's replication status, as gRPC
//! `Cluster.Status`) and `/v1/cluster/members` (membership changes for
//! admins, as gRPC `AddMember`/`RemoveMember`/`PromoteMember`): the same
//! service calls (`service/cluster.rs`), shaped as JSON.

use super::extract::{json_body, Path};
use super::openapi_errors::ErrorBody;
use super::AppState;
use crate::api::ApiError;
use crate::node::ops::AdminOp;
use crate::service::cluster::{AdminOutcome, StatusView};
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use orrery_types::{group_name, NodeId};
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/cluster/status", get(status))
        .route("/v1/cluster/members", post(add_member))
        .route("/v1/cluster/members/{id}", delete(remove_member))
        .route("/v1/cluster/members/{id}/promote", post(promote_member))
}

/// `GET /v1/cluster/status`.
#[derive(utoipa::ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct ClusterStatus {
    cluster_id: String,
    /// The node that answered.
    node_id: u64,
    groups: Vec<GroupStatus>,
    /// Members that did not answer the poll.
    unreachable: Vec<u64>,
    insecure: bool,
}

/// One Raft group as its leader (or, without one, any replica) reports it.
#[derive(utoipa::ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct GroupStatus {
    group: u64,
    /// `placement` or `shard-N`.
    name: String,
    leader: Option<u64>,
    term: u64,
    commit_index: u64,
    applied_index: u64,
    last_log_index: u64,
    replicas: Vec<ReplicaStatus>,
    reported_by: u64,
}

#[derive(utoipa::ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct ReplicaStatus {
    node_id: u64,
    /// The highest log index the leader knows this replica holds.
    matched: u64,
    /// Entries behind the leader's last log index.
    lag: u64,
    voter: bool,
}

/// Every group's replication status, gathered from every member by the
/// node that answers (no quorum needed: a degraded cluster still shows).
#[utoipa::path(get, path = "/v1/cluster/status", operation_id = "cluster_status_groups",
    tag = "cluster",
    responses((status = 200, description = "Every group's leader, term, indexes and replica lag.",
        body = ClusterStatus)))]
async fn status(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(status_json(s.cluster.status().await?)))
}

fn status_json(s: StatusView) -> Value {
    let groups: Vec<Value> = s
        .groups
        .iter()
        .map(|g| {
            let replicas: Vec<Value> = g
                .replicas
                .iter()
                .map(|r| json!({"node_id": r.node_id, "matched": r.matched, "lag": r.lag, "voter": r.voter}))
                .collect();
            json!({"group": g.group, "name": group_name(g.group), "leader": g.leader, "term": g.term,
                   "commit_index": g.commit_index, "applied_index": g.applied_index,
                   "last_log_index": g.last_log_index, "replicas": replicas,
                   "reported_by": g.reported_by})
        })
        .collect();
    json!({"cluster_id": s.cluster_id, "node_id": s.node_id, "groups": groups,
           "unreachable": s.unreachable, "insecure": s.insecure})
}

/// `POST /v1/cluster/members`: a node to add (started with `orrery serve`
/// and not yet in a cluster).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberBody {
    id: NodeId,
    /// Its client (API) address, host:port.
    addr: String,
    /// Its peer (Raft) address, host:port.
    peer_addr: String,
    /// Keep it a learner (no vote) instead of promoting it once caught up.
    #[serde(default)]
    learner_only: bool,
}

/// A membership change's answer: its progress lines and the member as it
/// now stands (null once removed).
#[derive(utoipa::ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct MemberChange {
    progress: Vec<String>,
    member: Option<super::openapi_schemas::MemberView>,
}

fn change_json(out: AdminOutcome) -> Value {
    let member = out.member.map(|(m, shards)| {
        json!({"id": m.id, "addr": m.addr.addr, "peer_addr": m.addr.peer_addr,
               "state": m.state.as_str(), "shards": shards})
    });
    json!({"progress": out.progress, "member": member})
}

#[utoipa::path(post, path = "/v1/cluster/members", operation_id = "cluster_add_member",
    tag = "cluster", request_body = AddMemberBody,
    responses(
        (status = 201, description = "The member, added (and promoted unless `learner_only`).", body = MemberChange),
        (status = 409, description = "`conflict`: the id or address is taken.", body = ErrorBody),
    ))]
async fn add_member(
    State(s): State<AppState>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b: AddMemberBody = json_body(body, 4096).await?;
    if b.id == 0 {
        return Err(ApiError::bad("invalid_id", "id must be a positive integer"));
    }
    for (code, name, v) in [
        ("invalid_addr", "addr", &b.addr),
        ("invalid_peer_addr", "peer_addr", &b.peer_addr),
    ] {
        if v.rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(ApiError::bad(
                code,
                format!("{name} must be host:port, got {v:?}"),
            ));
        }
    }
    let out = s
        .cluster
        .admin(AdminOp::AddMember {
            id: b.id,
            addr: b.addr,
            peer_addr: b.peer_addr,
            learner_only: b.learner_only,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(change_json(out))))
}

fn member_id(id: &str) -> Result<NodeId, ApiError> {
    id.parse::<NodeId>().ok().filter(|i| *i > 0).ok_or_else(|| {
        ApiError::bad(
            "invalid_id",
            format!("a member id is a positive integer, got {id:?}"),
        )
    })
}

#[utoipa::path(delete, path = "/v1/cluster/members/{id}", operation_id = "cluster_remove_member",
    tag = "cluster", params(("id" = u64, Path, description = "The member's node id.")),
    responses(
        (status = 200, description = "Removed: its replicas moved away first.", body = MemberChange),
        (status = 404, description = "`not_found`: no such member.", body = ErrorBody),
    ))]
async fn remove_member(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let out = s
        .cluster
        .admin(AdminOp::RemoveMember {
            id: member_id(&id)?,
        })
        .await?;
    Ok(Json(change_json(out)))
}

#[utoipa::path(post, path = "/v1/cluster/members/{id}/promote",
    operation_id = "cluster_promote_member", tag = "cluster",
    params(("id" = u64, Path, description = "The member's node id.")),
    responses(
        (status = 200, description = "The member, now a voter.", body = MemberChange),
        (status = 404, description = "`not_found`: no such member.", body = ErrorBody),
    ))]
async fn promote_member(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let out = s
        .cluster
        .admin(AdminOp::PromoteMember {
            id: member_id(&id)?,
        })
        .await?;
    Ok(Json(change_json(out)))
}
