//! `/v1/cluster`, health, readiness and metrics.

use super::extract::json_body;
use super::openapi_errors::ErrorBody;
use super::openapi_schemas as S;
use super::AppState;
use crate::api::ApiError;
use crate::service::cluster::{VersionAction, VersionView};
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use orrery_types::group_name;
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/version", get(version).post(set_version))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The cluster as this node knows it (its own copy of the placement state,
/// and the leaders of the groups it hosts): answers without a quorum.
#[utoipa::path(get, path = "/v1/cluster", operation_id = "cluster_status", tag = "cluster",
    responses((status = 200, description = "Members, shards and their leaders.", body = S::ClusterView)))]
async fn cluster(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let p = s.cluster.placement_local()?;
    let leaders = s.cluster.local_leaders();
    let v = s.cluster.version_local().await;
    let members: Vec<Value> = p
        .members
        .values()
        .map(|m| {
            let mut o = json!({"id": m.id, "addr": m.addr.addr, "peer_addr": m.addr.peer_addr, "state": m.state.as_str(),
                   "capacity": p.capacity(m.id), "shards": p.shards_of(m.id)});
            // The cluster version it supports; absent when it did not answer.
            if let Some(Some(mv)) = v.nodes.iter().find(|(id, _)| *id == m.id).map(|(_, mv)| mv) {
                o["version"] = json!(mv.supported);
            }
            o
        })
        .collect();
    let shards: Vec<Value> = p
        .shards
        .iter()
        .enumerate()
        .map(|(i, sh)| {
            let gid = orrery_types::shard_group(i as u32);
            json!({"id": i, "group": gid, "name": group_name(gid), "replicas": sh.replicas, "epoch": sh.epoch,
                   "leader": leaders.get(&gid).copied().flatten()})
        })
        .collect();
    Ok(Json(json!({
        "cluster_id": p.cluster_id,
        "node_id": s.cluster.node_id(),
        "placement_leader": s.cluster.placement_leader(),
        "members": members,
        "shards": shards,
        "cluster_version": {"active": v.record.active, "supported": v.supported, "held": v.record.held},
        // --insecure: no TLS and no authentication on this node.
        "insecure": s.node.cfg.auth.insecure,
    })))
}

fn version_json(v: &VersionView) -> Value {
    let nodes: Vec<Value> = v
        .nodes
        .iter()
        .map(|(id, m)| match m {
            Some(m) => json!({"id": id, "supported": m.supported, "build": m.build}),
            None => json!({"id": id, "supported": null}),
        })
        .collect();
    json!({
        "active": v.record.active,
        "active_name": orrery_raft::version::version(v.record.active).map(|x| x.name),
        "held": v.record.held,
        "supported": v.supported,
        "nodes": nodes,
    })
}

/// `GET /v1/cluster/version`: the active cluster version (through the
/// placement leader), whether it is held, and what each member supports.
#[utoipa::path(get, path = "/v1/cluster/version", operation_id = "cluster_version", tag = "cluster",
    responses((status = 200, description = "The cluster version.", body = S::VersionView)))]
async fn version(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(version_json(&s.cluster.version().await?)))
}

/// Exactly one of `hold` and `finalize` (true).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ClusterVersionBody)]
struct VersionBody {
    hold: Option<bool>,
    finalize: Option<bool>,
}

/// `POST /v1/cluster/version` with `{"hold": true|false}` or
/// `{"finalize": true}`.
#[utoipa::path(post, path = "/v1/cluster/version", operation_id = "cluster_set_version",
    tag = "cluster", request_body = VersionBody,
    responses(
        (status = 200, description = "The cluster version after the change.", body = S::VersionView),
        (status = 409, description = "`conflict`: a member does not support the version yet.", body = ErrorBody),
    ))]
async fn set_version(State(s): State<AppState>, body: Body) -> Result<Json<Value>, ApiError> {
    let b: VersionBody = json_body(body, 4096).await?;
    let action = match (b.hold, b.finalize) {
        (Some(h), None) => VersionAction::Hold(h),
        (None, Some(true)) => VersionAction::Finalize,
        _ => {
            return Err(ApiError::bad(
                "invalid_body",
                "give exactly one of {\"hold\": true|false} or {\"finalize\": true}",
            ))
        }
    };
    Ok(Json(version_json(&s.cluster.set_version(action).await?)))
}

#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "cluster",
    responses((status = 200, description = "The process is up.", body = S::Health),
        (status = 503, description = "`storage_unavailable`: this node's storage failed; it stops within seconds.", body = crate::http::openapi_errors::ErrorBody)))]
async fn healthz(State(s): State<AppState>) -> Response {
    match s.node.storage_failure() {
        None => Json(json!({"status": "ok"})).into_response(),
        // Alive, but storing nothing: a supervisor should restart it.
        Some(why) => ApiError::StorageUnavailable(why).into_response(),
    }
}

#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "cluster",
    responses((status = 200, description = "This node knows a placement leader.", body = S::Ready)))]
async fn readyz(State(s): State<AppState>) -> Response {
    match s.cluster.readiness() {
        Ok(l) => Json(json!({"status": "ready", "placement_leader": l})).into_response(),
        Err(why) => ApiError::unavailable(why).into_response(),
    }
}

#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "cluster",
    responses((status = 200, description = "Prometheus text exposition.",
        content_type = "text/plain; version=0.0.4", body = String)))]
async fn metrics(State(s): State<AppState>) -> Response {
    let mut out = String::new();
    s.node.metrics.render(&mut out);
    s.node.budgets.render(&mut out);
    let (gpus, held) = s.jobs.local_gpus();
    crate::render_raft_metrics(&s.node, &gpus, &held, &mut out);
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}
