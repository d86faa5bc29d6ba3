//! REST routes for policies, versions, runs and data sources.

use super::extract::parse_json;
use super::extract::{Path, Query};
use super::openapi_errors::ErrorBody;
use super::openapi_schemas as S;
use super::policies_views::{outcome_json, policy_json, run_json, version_json};
use super::AppState;
use crate::api::ApiError;
use crate::service::policies::{parse_source, source_json, RunRequest, DEFAULT_RUN_LIST};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use orrery_policy::store::{RunFilter, RunStatus};
use orrery_policy::store_ext::{PolicySettings, RunExt, RunFilterExt};
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
        .route(
            "/v1/policies/{id}/shadow",
            get(super::policies_shadow::compare),
        )
        .route("/v1/data-sources", post(source_create).get(sources))
        .route(
            "/v1/data-sources/{name}",
            axum::routing::delete(source_delete),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PolicyCreateBody)]
struct CreateBody {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    name: String,
    #[serde(default)]
    description: String,
}

#[utoipa::path(post, path = "/v1/policies", operation_id = "policy_create", tag = "policies",
    request_body = CreateBody,
    responses(
        (status = 201, description = "The policy (no versions yet).", body = S::PolicyView),
        (status = 409, description = "`conflict`: the name is taken.", body = ErrorBody),
    ))]
async fn create(
    State(s): State<AppState>,
    b: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let c: CreateBody = parse_json(&b)?;
    let p = s.policies.create(c.name, c.description).await?;
    let settings = PolicySettings::default();
    Ok((StatusCode::CREATED, Json(policy_json(&p, &settings))))
}

#[utoipa::path(get, path = "/v1/policies", operation_id = "policy_list", tag = "policies",
    responses((status = 200, description = "Every policy.", body = S::Policies)))]
async fn list(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let ps = s.policies.list_full().await?;
    Ok(Json(
        json!({"policies": ps.iter().map(|(p, st)| policy_json(p, st)).collect::<Vec<_>>()}),
    ))
}

#[utoipa::path(get, path = "/v1/policies/{id}", operation_id = "policy_get", tag = "policies",
    params(("id" = String, Path, description = "The policy's id.")),
    responses((status = 200, description = "The policy.", body = S::PolicyView), (status = 404, description = "`not_found`: no such policy.", body = ErrorBody)))]
async fn show(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (p, st) = s.policies.get_full(&id).await?;
    Ok(Json(policy_json(&p, &st)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = PolicyWeight)]
struct Weight {
    version: u32,
    weight: u64,
}

/// Only these fields exist: a version's graph can never be patched.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PolicyPatchBody)]
struct PatchBody {
    description: Option<String>,
    allocation: Option<Vec<Weight>>,
    /// A version evaluated next to the live one on every recorded run,
    /// without side effects; null clears it (cluster version 5).
    #[serde(default, deserialize_with = "super::policies_shadow::some")]
    #[schema(value_type = Option<u32>)]
    shadow_version: Option<Option<u32>>,
    /// How long this policy's runs are kept, in ms; null: the node's
    /// default (cluster version 5).
    #[serde(default, deserialize_with = "super::policies_shadow::some")]
    #[schema(value_type = Option<u64>, minimum = 1)]
    run_retention_ms: Option<Option<u64>>,
}

#[utoipa::path(patch, path = "/v1/policies/{id}", operation_id = "policy_patch", tag = "policies",
    params(("id" = String, Path, description = "The policy's id.")), request_body = Option<PatchBody>,
    responses(
        (status = 200, description = "The policy.", body = S::PolicyView),
        (status = 400, description = "`invalid_patch`, `invalid_allocation`, `invalid_shadow_version` (no such version), `invalid_settings` (`run_retention_ms` out of range).", body = ErrorBody),
        (status = 404, description = "`not_found`: no such policy.", body = ErrorBody),
        (status = 409, description = "`conflict`: the shadow version is archived; `cluster_version_too_low`: `shadow_version`/`run_retention_ms` before cluster version 5.", body = ErrorBody),
    ))]
async fn patch(
    State(s): State<AppState>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<Json<Value>, ApiError> {
    let p: PatchBody = parse_json(&b).map_err(|e| match e {
        ApiError::BadRequest { message, .. } => ApiError::bad(
            "invalid_patch",
            format!(
                "{message} (PATCH accepts description, allocation, shadow_version and run_retention_ms only; versions are immutable)"
            ),
        ),
        other => other,
    })?;
    let alloc: Option<Vec<(u32, u64)>> = p
        .allocation
        .map(|a| a.into_iter().map(|w| (w.version, w.weight)).collect());
    let settings = p.shadow_version.is_some() || p.run_retention_ms.is_some();
    // Two writes when both kinds of field are given: the allocation first,
    // so that a shadow version may be set in the same request that moves
    // traffic off it.
    if !settings || p.description.is_some() || alloc.is_some() {
        s.policies.update(&id, p.description, alloc).await?;
    }
    let (pol, st) = if settings {
        let set = s
            .policies
            .settings_set(&id, p.shadow_version, p.run_retention_ms);
        set.await?
    } else {
        s.policies.get_full(&id).await?
    };
    Ok(Json(policy_json(&pol, &st)))
}

#[utoipa::path(delete, path = "/v1/policies/{id}", operation_id = "policy_delete", tag = "policies",
    params(("id" = String, Path, description = "The policy's id.")),
    responses((status = 200, description = "Deleted, with its versions.", body = S::Deleted), (status = 404, description = "`not_found`: no such policy.", body = ErrorBody)))]
async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.policies.delete(&id).await?;
    Ok(Json(json!({"deleted": true})))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PolicyVersionBody)]
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

#[utoipa::path(post, path = "/v1/policies/{id}/versions", operation_id = "policy_version_create",
    tag = "policies", params(("id" = String, Path, description = "The policy's id.")), request_body = VersionBody,
    responses(
        (status = 201, description = "The new version.", body = S::PolicyVersionView),
        (status = 400, description = "`invalid_graph` (the message names the node).", body = ErrorBody),
        (status = 404, description = "`not_found`: no such policy.", body = ErrorBody),
    ))]
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

#[utoipa::path(get, path = "/v1/policies/{id}/versions", operation_id = "policy_versions", tag = "policies",
    params(("id" = String, Path, description = "The policy's id.")),
    responses((status = 200, description = "The policy's versions.", body = S::PolicyVersions), (status = 404, description = "`not_found`: no such policy.", body = ErrorBody)))]
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

#[utoipa::path(get, path = "/v1/policies/{id}/versions/{v}", operation_id = "policy_version_get",
    tag = "policies", params(("id" = String, Path, description = "The policy's id."), ("v" = u32, Path, description = "The version number.")),
    responses(
        (status = 200, description = "The version with its graph.", body = S::PolicyVersionView),
        (status = 400, description = "`invalid_version`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such policy or version.", body = ErrorBody),
    ))]
async fn version_get(
    State(s): State<AppState>,
    Path((id, v)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let p = s.policies.get(&id).await?;
    let ver = s.policies.version_get(&p.id, version_num(&v)?).await?;
    Ok(Json(version_json(&ver)))
}

#[utoipa::path(post, path = "/v1/policies/{id}/versions/{v}/archive",
    operation_id = "policy_version_archive", tag = "policies", params(("id" = String, Path, description = "The policy's id."), ("v" = u32, Path, description = "The version number.")),
    responses(
        (status = 200, description = "The version, archived.", body = S::PolicyVersionView),
        (status = 400, description = "`invalid_version`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such policy or version.", body = ErrorBody),
        (status = 409, description = "`conflict`: the version has allocation weight.", body = ErrorBody),
    ))]
async fn version_archive(
    State(s): State<AppState>,
    Path((id, v)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let ver = s.policies.version_archive(&id, version_num(&v)?).await?;
    Ok(Json(version_json(&ver)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PolicyRunBody)]
struct RunBody {
    /// The policy's input document.
    input: Value,
    /// A version (default: one picked by the allocation).
    version: Option<u32>,
    /// Idempotency key (cluster version 6): the first request with a key
    /// records the run; later ones for the policy with the same key and
    /// input answer with it, another input is a 409. It also keys the
    /// allocation (the same key gets the same version).
    run_key: Option<String>,
    /// `sync` (default: wait for the outcome) or `async`.
    #[schema(pattern = "^(sync|async)$")]
    mode: Option<String>,
}

#[utoipa::path(post, path = "/v1/policies/{id}/runs", operation_id = "policy_run", tag = "policies",
    params(("id" = String, Path, description = "The policy's id.")), request_body = RunBody,
    responses(
        (status = 200, description = "The run, finished (`mode: sync`).", body = S::PolicyRunView),
        (status = 202, description = "The run, started (`mode: async`).", body = S::PolicyRunView),
        (status = 400, description = "`invalid_mode`, `invalid_input`, `invalid_graph`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such policy or version.", body = ErrorBody),
        (status = 409, description = "`conflict`: no active version, or `run_key` reused with another input.", body = ErrorBody),
        (status = 422, description = "`evaluation_timeout`: the run passed its deadline.", body = ErrorBody),
    ))]
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
    let (status, (run, ext)) = match r.mode.as_deref() {
        None | Some("sync") => (StatusCode::OK, s.policies.run(&id, req).await?),
        Some("async") => (
            StatusCode::ACCEPTED,
            (s.policies.run_async(&id, req).await?, RunExt::default()),
        ),
        Some(other) => {
            return Err(ApiError::bad(
                "invalid_mode",
                format!("mode must be \"sync\" or \"async\", got {other:?}"),
            ))
        }
    };
    Ok((status, Json(run_json(&run, &ext))))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PolicyBatchBody)]
struct BatchBody {
    inputs: Vec<Value>,
    version: Option<u32>,
}

#[utoipa::path(post, path = "/v1/policies/{id}/runs/batch", operation_id = "policy_run_batch",
    tag = "policies", params(("id" = String, Path, description = "The policy's id.")), request_body = BatchBody,
    responses(
        (status = 200, description = "One outcome per input, in order.", body = S::BatchRunAnswer),
        (status = 400, description = "`invalid_input`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such policy or version.", body = ErrorBody),
        (status = 409, description = "`conflict`: no active version.", body = ErrorBody),
        (status = 422, description = "`evaluation_timeout`.", body = ErrorBody),
    ))]
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

#[utoipa::path(get, path = "/v1/runs/{id}", operation_id = "run_get", tag = "policies",
    params(("id" = String, Path, description = "The run's id.")),
    responses(
        (status = 200, description = "The run.", body = S::PolicyRunView),
        (status = 404, description = "`not_found`: no such run.", body = ErrorBody),
    ))]
async fn run_get(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let r = s.policies.run_get_full(&id).await?;
    Ok(Json(run_json(&r.run, &r.ext)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct RunsParams {
    /// Only this policy's runs (its id).
    policy: Option<String>,
    /// Only this version's runs.
    #[param(value_type = Option<u32>)]
    version: Option<String>,
    /// running, succeeded or failed.
    #[param(pattern = "^(running|succeeded|failed)$")]
    status: Option<String>,
    /// Runs per page (default 100, at most 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Runs created at or after this time, ms since the Unix epoch
    /// (cluster version 5).
    #[param(value_type = Option<u64>)]
    since: Option<String>,
    /// Runs created before this time, ms since the Unix epoch (cluster
    /// version 5).
    #[param(value_type = Option<u64>)]
    until: Option<String>,
    /// Runs a `terminate` node ended with this status, e.g. `approved`
    /// (cluster version 5).
    outcome: Option<String>,
}

fn time_param(name: &str, v: Option<&str>) -> Result<Option<u64>, ApiError> {
    v.map(|t| {
        t.parse().map_err(|_| {
            ApiError::bad(
                "invalid_time",
                format!("{name} must be ms since the Unix epoch, got {t:?}"),
            )
        })
    })
    .transpose()
}

#[utoipa::path(get, path = "/v1/runs", operation_id = "run_list", tag = "policies",
    params(RunsParams),
    responses(
        (status = 200, description = "Runs, newest first.", body = S::Runs),
        (status = 400, description = "`invalid_limit`, `invalid_version`, `invalid_status`, `invalid_time`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such policy.", body = ErrorBody),
        (status = 409, description = "`cluster_version_too_low`: `since`, `until` or `outcome` before cluster version 5.", body = ErrorBody),
    ))]
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
    let f = RunFilterExt {
        base: RunFilter {
            policy_id: p.policy,
            version,
            status,
            before: p.cursor,
            limit,
        },
        since_ms: time_param("since", p.since.as_deref())?,
        until_ms: time_param("until", p.until.as_deref())?,
        outcome: p.outcome,
        shadowed: false,
    };
    let (runs, cursor) = s.policies.runs_list_full(f).await?;
    let runs: Vec<Value> = runs.iter().map(|r| run_json(&r.run, &r.ext)).collect();
    Ok(Json(json!({"runs": runs, "next_cursor": cursor})))
}

#[utoipa::path(post, path = "/v1/data-sources", operation_id = "data_source_create", tag = "policies",
    request_body = S::DataSourceBody,
    responses(
        (status = 201, description = "The data source.", body = S::DataSourceView),
        (status = 400, description = "`invalid_source`, `invalid_name`.", body = ErrorBody),
        (status = 409, description = "`conflict`: the name is taken.", body = ErrorBody),
    ))]
async fn source_create(
    State(s): State<AppState>,
    b: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let v: Value = parse_json(&b)?;
    let src = s.policies.data_source_create(parse_source(&v)?).await?;
    Ok((StatusCode::CREATED, Json(source_json(&src))))
}

#[utoipa::path(get, path = "/v1/data-sources", operation_id = "data_source_list", tag = "policies",
    responses((status = 200, description = "Every data source.", body = S::DataSources)))]
async fn sources(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let list = s.policies.data_sources().await?;
    Ok(Json(
        json!({"data_sources": list.iter().map(source_json).collect::<Vec<_>>()}),
    ))
}

#[utoipa::path(delete, path = "/v1/data-sources/{name}", operation_id = "data_source_delete",
    tag = "policies", params(("name" = String, Path, description = "The data source's name.")),
    responses(
        (status = 200, description = "Deleted.", body = S::Deleted),
        (status = 404, description = "`not_found`: no such data source.", body = ErrorBody),
        (status = 409, description = "`conflict`: a policy version uses it.", body = ErrorBody),
    ))]
async fn source_delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.policies.data_source_delete(name).await?;
    Ok(Json(json!({"deleted": true})))
}
