//! `/v1/cluster/rebalance`: whether rebalancing is paused, and pausing or
//! resuming it cluster-wide (as gRPC `Cluster.GetRebalance` /
//! `SetRebalance` and `orreryctl cluster rebalance`): the same service
//! calls (`service/cluster.rs`), shaped as JSON.

use super::extract::json_body;
use super::openapi_errors::ErrorBody;
use super::AppState;
use crate::api::ApiError;
use crate::node::RebalanceStatus;
use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/v1/cluster/rebalance",
        get(get_rebalance).put(set_rebalance),
    )
}

/// `GET`/`PUT /v1/cluster/rebalance`.
#[derive(utoipa::ToSchema, serde::Serialize)]
pub struct RebalanceView {
    /// No new replica move starts while paused (moves under way finish).
    paused: bool,
    /// Every node's replica count is within one of the others'.
    balanced: bool,
    /// Shards whose group has not reached the replicas the shard map gives
    /// it yet.
    moving: Vec<u32>,
}

impl From<RebalanceStatus> for RebalanceView {
    fn from(r: RebalanceStatus) -> Self {
        Self {
            paused: r.paused,
            balanced: r.balanced,
            moving: r.moving,
        }
    }
}

/// `PUT /v1/cluster/rebalance` body.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RebalanceBody {
    /// `true` pauses rebalancing cluster-wide, `false` resumes it.
    paused: bool,
}

/// `GET /v1/cluster/rebalance`: the setting (through the placement leader)
/// and the moves under way, from every member's reports.
#[utoipa::path(get, path = "/v1/cluster/rebalance", operation_id = "cluster_rebalance",
    tag = "cluster",
    responses((status = 200, description = "Rebalancing: paused or not, balanced or not, shards moving.", body = RebalanceView)))]
async fn get_rebalance(State(s): State<AppState>) -> Result<Json<RebalanceView>, ApiError> {
    Ok(Json(s.cluster.rebalance().await?.into()))
}

/// `PUT /v1/cluster/rebalance` with `{"paused": true|false}`; replicated,
/// so the setting survives placement-leader changes and restarts.
#[utoipa::path(put, path = "/v1/cluster/rebalance", operation_id = "cluster_set_rebalance",
    tag = "cluster", request_body = RebalanceBody,
    responses(
        (status = 200, description = "Rebalancing after the change.", body = RebalanceView),
        (status = 400, description = "`invalid_body`: not `{\"paused\": true|false}`.", body = ErrorBody),
    ))]
async fn set_rebalance(
    State(s): State<AppState>,
    body: Body,
) -> Result<Json<RebalanceView>, ApiError> {
    let b: RebalanceBody = json_body(body, 4096).await?;
    Ok(Json(s.cluster.set_rebalance(b.paused).await?.into()))
}
