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
    /// Replica moves in flight at most, cluster-wide.
    max_moves: u32,
    /// Replica moves in flight at most that involve one node.
    max_per_node: u32,
    /// Whether the limits were set cluster-wide (`PUT`); else they are the
    /// answering node's `--rebalance-max-moves*` flags.
    limits_set: bool,
}

impl From<RebalanceStatus> for RebalanceView {
    fn from(r: RebalanceStatus) -> Self {
        Self {
            paused: r.paused,
            balanced: r.balanced,
            moving: r.moving,
            max_moves: r.limits.max_in_flight as u32,
            max_per_node: r.limits.max_per_node as u32,
            limits_set: r.limits_set,
        }
    }
}

/// `PUT /v1/cluster/rebalance` body.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RebalanceBody {
    /// `true` pauses rebalancing cluster-wide, `false` resumes it; absent
    /// leaves it as it is.
    #[serde(default)]
    paused: Option<bool>,
    /// Replica moves in flight at most, cluster-wide (1..=64; cluster
    /// version 9).
    #[serde(default)]
    max_moves: Option<u32>,
    /// Replica moves in flight at most that involve one node, as source or
    /// target (1..=64; cluster version 9).
    #[serde(default)]
    max_per_node: Option<u32>,
}

/// `GET /v1/cluster/rebalance`: the setting (through the placement leader)
/// and the moves under way, from every member's reports.
#[utoipa::path(get, path = "/v1/cluster/rebalance", operation_id = "cluster_rebalance",
    tag = "cluster",
    responses((status = 200, description = "Rebalancing: paused or not, balanced or not, shards moving.", body = RebalanceView)))]
async fn get_rebalance(State(s): State<AppState>) -> Result<Json<RebalanceView>, ApiError> {
    Ok(Json(s.cluster.rebalance().await?.into()))
}

/// `PUT /v1/cluster/rebalance` with any of `{"paused": true|false,
/// "max_moves": N, "max_per_node": M}`; replicated, so the settings
/// survive placement-leader changes and restarts.
#[utoipa::path(put, path = "/v1/cluster/rebalance", operation_id = "cluster_set_rebalance",
    tag = "cluster", request_body = RebalanceBody,
    responses(
        (status = 200, description = "Rebalancing after the change.", body = RebalanceView),
        (status = 400, description = "`invalid_body`: not an object of `paused` (bool), `max_moves`, `max_per_node` (integers), or none of them; `invalid_setting`: a limit outside 1..=64.", body = ErrorBody),
        (status = 409, description = "`cluster_version_too_low`: limits need cluster version 9.", body = ErrorBody),
    ))]
async fn set_rebalance(
    State(s): State<AppState>,
    body: Body,
) -> Result<Json<RebalanceView>, ApiError> {
    let b: RebalanceBody = json_body(body, 4096).await?;
    if b.paused.is_none() && b.max_moves.is_none() && b.max_per_node.is_none() {
        return Err(ApiError::bad(
            "invalid_body",
            "give at least one of paused, max_moves, max_per_node",
        ));
    }
    for (name, v) in [("max_moves", b.max_moves), ("max_per_node", b.max_per_node)] {
        if let Some(v) = v.filter(|v| !(1..=orrery_placement::MAX_MOVES).contains(v)) {
            return Err(ApiError::bad(
                "invalid_setting",
                format!(
                    "{name} must be 1..={}, not {v} (pause rebalancing to stop moves)",
                    orrery_placement::MAX_MOVES
                ),
            ));
        }
    }
    let change = crate::node::RebalanceChange {
        paused: b.paused,
        max_moves: b.max_moves,
        max_per_node: b.max_per_node,
    };
    Ok(Json(s.cluster.set_rebalance(change).await?.into()))
}
