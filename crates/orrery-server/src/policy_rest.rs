//! REST routes for policies, versions, runs and data sources.

use crate::api::error::ApiError;
use crate::policy_api::{
    parse_source, policy_json, run_json, source_json, version_json, RunRequest,
};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use orrery_policy::store::{RunFilter, RunStatus};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

type AppState = crate::http::AppState;

/// A batch of 10 000 inputs is larger than axum's 2 MB default.
const BODY_LIMIT: usize = 64 << 20;

pub fn routes() -> Router<crate::http::AppState> {
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

fn body<T: DeserializeOwned>(b: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(b)
        .map_err(|e| ApiError::bad("invalid_json", format!("request body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    description: String,
}

async fn create(
    State(node): State<AppState>,
    b: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let c: CreateBody = body(&b)?;
    let p = node.policy_create(c.name, c.description).await?;
    Ok((StatusCode::CREATED, Json(policy_json(&p))))
}

async fn list(State(node): State<AppState>) -> Result<Json<Value>, ApiError> {
    let ps = node.policy_list().await?;
    Ok(Json(
        json!({"policies": ps.iter().map(policy_json).collect::<Vec<_>>()}),
    ))
}

async fn show(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(policy_json(&node.policy_get(&id).await?)))
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
    State(node): State<AppState>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, ApiError> {
    let p: PatchBody = body(&b).map_err(|e| match e {
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
    Ok(Json(policy_json(
        &node.policy_update(&id, p.description, alloc).await?,
    )))
}

async fn delete(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    node.policy_delete(&id).await?;
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
    State(node): State<AppState>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let v: VersionBody = body(&b)?;
    let who = v.created_by.unwrap_or_else(|| "anonymous".into());
    let ver = node
        .version_create(&node.jobs, &id, &v.graph, v.activate, who)
        .await?;
    Ok((StatusCode::CREATED, Json(version_json(&ver))))
}

async fn versions(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let vs = node.versions(&id).await?;
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
    State(node): State<AppState>,
    Path((id, v)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let p = node.policy_get(&id).await?;
    Ok(Json(version_json(
        &node.version_get(&p.id, version_num(&v)?).await?,
    )))
}

async fn version_archive(
    State(node): State<AppState>,
    Path((id, v)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(version_json(
        &node.version_archive(&id, version_num(&v)?).await?,
    )))
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
    State(node): State<AppState>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let r: RunBody = body(&b)?;
    match r.mode.as_deref() {
        None | Some("sync") => {}
        Some("async") => {
            let run = node
                .policy_run_async(
                    &node.jobs,
                    &id,
                    RunRequest {
                        input: r.input,
                        version: r.version,
                        run_key: r.run_key,
                    },
                )
                .await?;
            return Ok((StatusCode::ACCEPTED, Json(run_json(&run))));
        }
        Some(other) => {
            return Err(ApiError::bad(
                "invalid_mode",
                format!("mode must be \"sync\" or \"async\", got {other:?}"),
            ))
        }
    }
    let run = node
        .policy_run(
            &node.jobs,
            &id,
            RunRequest {
                input: r.input,
                version: r.version,
                run_key: r.run_key,
            },
        )
        .await?;
    Ok((StatusCode::OK, Json(run_json(&run))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    inputs: Vec<Value>,
    version: Option<u32>,
}

async fn batch(
    State(node): State<AppState>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, ApiError> {
    let r: BatchBody = body(&b)?;
    let (version, outcomes) = node.node.policy_batch(&id, r.inputs, r.version).await?;
    let results: Vec<Value> = outcomes
        .into_iter()
        .map(|o| json!({"status": if o.succeeded() {"succeeded"} else {"failed"}, "output": o.output, "error": o.error}))
        .collect();
    Ok(Json(json!({"version": version, "results": results})))
}

async fn run_get(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(run_json(&node.run_get(&id).await?)))
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
    State(node): State<AppState>,
    Query(p): Query<RunsParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = match p.limit.as_deref() {
        None => crate::policy_api::DEFAULT_RUN_LIST,
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
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            ApiError::bad(
                "invalid_status",
                format!("status must be running, succeeded or failed, got {s:?}"),
            )
        })?),
    };
    let (runs, cursor) = node
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
    State(node): State<AppState>,
    b: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let v: Value = body(&b)?;
    let s = node.data_source_create(parse_source(&v)?).await?;
    Ok((StatusCode::CREATED, Json(source_json(&s))))
}

async fn sources(State(node): State<AppState>) -> Result<Json<Value>, ApiError> {
    let s = node.data_sources().await?;
    Ok(Json(
        json!({"data_sources": s.iter().map(source_json).collect::<Vec<_>>()}),
    ))
}

async fn source_delete(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    node.data_source_delete(name).await?;
    Ok(Json(json!({"deleted": true})))
}
