//! REST routes for policies, versions, runs and data sources.

use super::extract::parse_json;
use super::policies_views::{outcome_json, policy_json, run_json, version_json};
use super::AppState;
use crate::api::ApiError;
use crate::service::policies::{parse_source, source_json, RunRequest, DEFAULT_RUN_LIST};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use orrery_policy::store::{RunFilter, RunStatus};
use serde::Deserialize;
use serde_json::{json, Value};

/// A batch of 10 000 inputs is larger than axum's 2 MB default.
const BODY_LIMIT: usize = 64 << 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/policies", post(create).get(list))
        .route("/v1/policies/{id}", get(show).patch(patch).delete(delete))
        .route(
            "/v1/policies/{id}/versions",
            post(version_create).get(versions),
        )
        .route("/v1/policies/{id}/versions/{v}", get(version_get))
        .route(
            "/v1/policies/{id}/versions/{v}/archive",
            post(version_archive),
        )
        .route("/v1/policies/{id}/runs", post(run))
        .route("/v1/policies/{id}/runs/batch", post(batch))
        .route("/v1/runs", get(runs_list))
        .route("/v1/runs/{id}", get(run_get))
        .route("/v1/data-sources", post(source_create).get(sources))
        .route(
            "/v1/data-sources/{name}",
            axum::routing::delete(source_delete),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    description: String,
}

async fn create(
    State(s): State<AppState>,
    b: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let c: CreateBody = parse_json(&b)?;
    let p = s.policies.create(c.name, c.description).await?;
    Ok((StatusCode::CREATED, Json(policy_json(&p))))
}

async fn list(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let ps = s.policies.list().await?;
    Ok(Json(
        json!({"policies": ps.iter().map(policy_json).collect::<Vec<_>>()}),
    ))
}

async fn show(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(policy_json(&s.policies.get(&id).await?)))
}

#[derive(Deserialize)]
struct Weight {
    version: u32,
    weight: u64,
}

/// Only these two fields exist: a version's graph can never be patched.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    description: Option<String>,
    allocation: Option<Vec<Weight>>,
}

async fn patch(
    State(s): State<AppState>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, ApiError> {
    let p: PatchBody = parse_json(&b).map_err(|e| match e {
        ApiError::BadRequest { message, .. } => ApiError::bad(
            "invalid_patch",
            format!(
                "{message} (PATCH accepts description and allocation only; versions are immutable)"
            ),
        ),
        other => other,
    })?;
    let alloc = p
        .allocation
        .map(|a| a.into_iter().map(|w| (w.version, w.weight)).collect());
    let p = s.policies.update(&id, p.description, alloc).await?;
    Ok(Json(policy_json(&p)))
}

async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.policies.delete(&id).await?;
    Ok(Json(json!({"deleted": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionBody {
    graph: Value,
    #[serde(default = "yes")]
    activate: bool,
    #[serde(default)]
    created_by: Option<String>,
}

fn yes() -> bool {
    true
}

async fn version_create(
    State(s): State<AppState>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let v: VersionBody = parse_json(&b)?;
    let who = v.created_by.unwrap_or_else(|| "anonymous".into());
    let ver = s.policies.version_create(&id, &v.graph, v.activate, who);
    Ok((StatusCode::CREATED, Json(version_json(&ver.await?))))
}

async fn versions(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let vs = s.policies.versions(&id).await?;
    Ok(Json(
        json!({"versions": vs.iter().map(version_json).collect::<Vec<_>>()}),
    ))
}

fn version_num(v: &str) -> Result<u32, ApiError> {
    v.parse().map_err(|_| {
        ApiError::bad(
            "invalid_version",
            format!("version must be a positive integer, got {v:?}"),
        )
    })
}

async fn version_get(
    State(s): State<AppState>,
    Path((id, v)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let p = s.policies.get(&id).await?;
    let ver = s.policies.version_get(&p.id, version_num(&v)?).await?;
    Ok(Json(version_json(&ver)))
}

async fn version_archive(
    State(s): State<AppState>,
    Path((id, v)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let ver = s.policies.version_archive(&id, version_num(&v)?).await?;
    Ok(Json(version_json(&ver)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    input: Value,
    version: Option<u32>,
    run_key: Option<String>,
    mode: Option<String>,
}

async fn run(
    State(s): State<AppState>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let r: RunBody = parse_json(&b)?;
    let req = RunRequest {
        input: r.input,
        version: r.version,
        run_key: r.run_key,
    };
    let (status, run) = match r.mode.as_deref() {
        None | Some("sync") => (StatusCode::OK, s.policies.run(&id, req).await?),
        Some("async") => (StatusCode::ACCEPTED, s.policies.run_async(&id, req).await?),
        Some(other) => {
            return Err(ApiError::bad(
                "invalid_mode",
                format!("mode must be \"sync\" or \"async\", got {other:?}"),
            ))
        }
    };
    Ok((status, Json(run_json(&run))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    inputs: Vec<Value>,
    version: Option<u32>,
}

async fn batch(
    State(s): State<AppState>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, ApiError> {
    let r: BatchBody = parse_json(&b)?;
    let (version, outcomes) = s.policies.batch(&id, r.inputs, r.version).await?;
    let results: Vec<Value> = outcomes.into_iter().map(outcome_json).collect();
    Ok(Json(json!({"version": version, "results": results})))
}

async fn run_get(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(run_json(&s.policies.run_get(&id).await?)))
}

#[derive(Deserialize)]
struct RunsParams {
    policy: Option<String>,
    version: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

async fn runs_list(
    State(s): State<AppState>,
    Query(p): Query<RunsParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = match p.limit.as_deref() {
        None => DEFAULT_RUN_LIST,
        Some(l) => l.parse().map_err(|_| {
            ApiError::bad(
                "invalid_limit",
                format!("limit must be an integer, got {l:?}"),
            )
        })?,
    };
    let version = p.version.as_deref().map(version_num).transpose()?;
    let status = match p.status.as_deref() {
        None => None,
        Some(st) => Some(RunStatus::parse(st).ok_or_else(|| {
            ApiError::bad(
                "invalid_status",
                format!("status must be running, succeeded or failed, got {st:?}"),
            )
        })?),
    };
    let (runs, cursor) = s
        .policies
        .runs_list(RunFilter {
            policy_id: p.policy,
            version,
            status,
            before: p.cursor,
            limit,
        })
        .await?;
    Ok(Json(
        json!({"runs": runs.iter().map(run_json).collect::<Vec<_>>(), "next_cursor": cursor}),
    ))
}

async fn source_create(
    State(s): State<AppState>,
    b: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let v: Value = parse_json(&b)?;
    let src = s.policies.data_source_create(parse_source(&v)?).await?;
    Ok((StatusCode::CREATED, Json(source_json(&src))))
}

async fn sources(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let list = s.policies.data_sources().await?;
    Ok(Json(
        json!({"data_sources": list.iter().map(source_json).collect::<Vec<_>>()}),
    ))
}

async fn source_delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.policies.data_source_delete(name).await?;
    Ok(Json(json!({"deleted": true})))
}
