//! `/v1/cluster`, health, readiness and metrics.

use super::AppState;
use crate::api::ApiError;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use orrery_types::group_name;
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/cluster", get(cluster))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The cluster as this node knows it (its own copy of the placement state,
/// and the leaders of the groups it hosts): answers without a quorum.
async fn cluster(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let p = s.cluster.placement_local()?;
    let leaders = s.cluster.local_leaders();
    let members: Vec<Value> = p
        .members
        .values()
        .map(|m| {
            json!({"id": m.id, "addr": m.addr.addr, "peer_addr": m.addr.peer_addr, "state": m.state.as_str(),
                   "shards": p.shards_of(m.id)})
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
    })))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.cluster.readiness() {
        Ok(l) => Json(json!({"status": "ready", "placement_leader": l})).into_response(),
        Err(why) => ApiError::unavailable(why).into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut out = String::new();
    s.node.metrics.render(&mut out);
    let (gpus, held) = s.jobs.local_gpus();
    crate::render_raft_metrics(&s.node, &gpus, &held, &mut out);
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}
