//! `/v1/kv`: values are raw request bodies, keys the rest of the path.

use super::extract::{linearizable, read_body, Consistency, ReadParams};
use super::extract::{Path, Query};
use super::openapi_errors::ErrorBody;
use super::openapi_schemas as S;
use super::AppState;
use crate::api::ApiError;
use crate::service::kv::{CasOutcome, DEFAULT_LIST_LIMIT};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/kv", get(kv_list).delete(kv_delete_prefix))
        .route(
            "/v1/kv/{*key}",
            get(kv_get).put(kv_put).delete(kv_delete).post(kv_post),
        )
}

/// Stores the raw body as the key's value.
#[utoipa::path(put, path = "/v1/kv/{key}", operation_id = "kv_put", tag = "kv",
    params(("key" = String, Path, description = "The key (may contain `/`).")),
    request_body(content = Option<Vec<u8>>, content_type = "application/octet-stream",
        description = "The value, as raw bytes (none: the empty value)."),
    responses(
        (status = 200, description = "Stored.", body = S::KvRevision),
        (status = 400, description = "`empty_key`.", body = ErrorBody),
        (status = 413, description = "`too_large`: the value is over the limit.", body = ErrorBody),
    ))]
async fn kv_put(
    State(s): State<AppState>,
    Path(key): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let key = key.into_bytes();
    s.kv.check_key(&key)?;
    let max = s.kv.max_value_bytes();
    let value = read_body(body, max, max).await?;
    let revision = s.kv.put(key, value).await?;
    Ok(Json(json!({ "revision": revision })))
}

/// The key's value, as the raw bytes stored.
#[utoipa::path(get, path = "/v1/kv/{key}", operation_id = "kv_get", tag = "kv",
    params(("key" = String, Path, description = "The key (may contain `/`)."), ReadParams),
    responses(
        (status = 200, description = "The value.", content_type = "application/octet-stream",
            body = Vec<u8>, headers(("x-orrery-revision" = u64, description = "The value's revision."))),
        (status = 400, description = "`invalid_consistency`, `empty_key`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such key.", body = ErrorBody),
        (status = 413, description = "`too_large`: the key is over the limit.", body = ErrorBody),
    ))]
async fn kv_get(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Query(p): Query<ReadParams>,
) -> Result<Response, ApiError> {
    let lin = p.linearizable()?;
    match s.kv.get(key.clone().into_bytes(), lin).await? {
        None => Err(ApiError::NotFound(format!("key {key:?} not found"))),
        Some(v) => {
            let mut resp = (StatusCode::OK, v.value).into_response();
            resp.headers_mut()
                .insert("x-orrery-revision", HeaderValue::from(v.revision));
            resp.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("application/octet-stream"),
            );
            Ok(resp)
        }
    }
}

#[utoipa::path(delete, path = "/v1/kv/{key}", operation_id = "kv_delete", tag = "kv",
    params(("key" = String, Path, description = "The key (may contain `/`).")),
    responses(
        (status = 200, description = "Deleted (or was absent).", body = S::KvDeleted),
        (status = 400, description = "`empty_key`.", body = ErrorBody),
        (status = 413, description = "`too_large`: the key is over the limit.", body = ErrorBody),
    ))]
async fn kv_delete(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (deleted, revision) = s.kv.delete(key.into_bytes()).await?;
    Ok(Json(json!({ "deleted": deleted, "revision": revision })))
}

/// `POST /v1/kv/{key}/cas`: the wildcard route also matches the suffix.
/// Compare-and-swap: writes `value` if the current value is `expected`.
#[utoipa::path(post, path = "/v1/kv/{key}/cas", operation_id = "kv_cas", tag = "kv",
    params(("key" = String, Path, description = "The key (may contain `/`).")),
    request_body = S::CasBody,
    responses(
        (status = 200, description = "Swapped.", body = S::CasDone),
        (status = 404, description = "`not_found`: a POST to a key path without `/cas`.", body = ErrorBody),
        (status = 409, description = "The current value differs.", body = S::CasFailed),
    ))]
async fn kv_post(
    State(s): State<AppState>,
    Path(path): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(key) = path.strip_suffix("/cas") else {
        return Err(ApiError::NotFound(
            "POST is only defined for /v1/kv/{key}/cas".into(),
        ));
    };
    let key = key.as_bytes().to_vec();
    s.kv.check_key(&key)?;
    // The JSON encoding of a value can be up to 6x its size (\u escapes).
    let max = s.kv.max_value_bytes();
    let raw = read_body(body, max.saturating_mul(2).saturating_add(4096), max).await?;
    let v: Value = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::bad("invalid_json", format!("body is not valid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad("invalid_body", "body must be a JSON object"))?;
    let expected = match obj.get("expected") {
        None => {
            return Err(ApiError::bad(
                "missing_field",
                "field \"expected\" is required (use null for create-if-absent)",
            ))
        }
        Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone().into_bytes()),
        Some(_) => {
            return Err(ApiError::bad(
                "invalid_field",
                "field \"expected\" must be a string or null",
            ))
        }
    };
    let value = match obj.get("value") {
        Some(Value::String(s)) => s.clone().into_bytes(),
        None => {
            return Err(ApiError::bad(
                "missing_field",
                "field \"value\" is required",
            ))
        }
        Some(_) => {
            return Err(ApiError::bad(
                "invalid_field",
                "field \"value\" must be a string",
            ))
        }
    };
    let CasOutcome {
        succeeded,
        revision,
        current,
    } = s.kv.cas(key, expected, value).await?;
    if succeeded {
        Ok(Json(json!({"succeeded": true, "revision": revision})).into_response())
    } else {
        let current = current.map(|c| String::from_utf8_lossy(&c).into_owned());
        Ok((
            StatusCode::CONFLICT,
            Json(json!({"succeeded": false, "revision": revision, "current": current})),
        )
            .into_response())
    }
}

fn value_json(v: &[u8]) -> (&'static str, Value) {
    match std::str::from_utf8(v) {
        Ok(s) => ("value", Value::String(s.to_string())),
        Err(_) => (
            "value_base64",
            Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
        ),
    }
}

#[utoipa::path(get, path = "/v1/kv", operation_id = "kv_list", tag = "kv",
    params(KvListParams),
    responses(
        (status = 200, description = "Keys in order, with their values.", body = S::KvList),
        (status = 400, description = "`invalid_limit`, `invalid_consistency`.", body = ErrorBody),
        (status = 413, description = "`too_large`: the prefix is over the key limit.", body = ErrorBody),
    ))]
async fn kv_list(
    State(s): State<AppState>,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let prefix = p.get("prefix").cloned().unwrap_or_default().into_bytes();
    let limit = match p.get("limit") {
        None => DEFAULT_LIST_LIMIT,
        Some(l) => l.parse().map_err(|_| {
            ApiError::bad(
                "invalid_limit",
                format!("limit must be a positive integer, got {l:?}"),
            )
        })?,
    };
    let lin = linearizable(p.get("consistency").map(String::as_str))?;
    let items = s.kv.list(prefix, limit, lin).await?;
    let items: Vec<Value> = items
        .iter()
        .map(|i| {
            let (field, value) = value_json(&i.value);
            let mut o = serde_json::Map::new();
            o.insert(
                "key".into(),
                Value::String(String::from_utf8_lossy(&i.key).into_owned()),
            );
            o.insert(field.into(), value);
            o.insert("revision".into(), json!(i.revision));
            Value::Object(o)
        })
        .collect();
    Ok(Json(json!({ "count": items.len(), "items": items })))
}

/// `GET /v1/kv`'s query (read as strings by the handler, so that a bad
/// limit is a 400 naming it).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct KvListParams {
    /// Only keys with this prefix.
    prefix: Option<String>,
    /// At most this many keys (default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
    /// `linearizable` (default: through the leader) or `stale` (this replica).
    consistency: Option<Consistency>,
}

#[utoipa::path(delete, path = "/v1/kv", operation_id = "kv_delete_prefix", tag = "kv",
    params(("prefix" = String, Query, description = "Delete every key with this (non-empty) prefix.")),
    responses(
        (status = 200, description = "How many keys were deleted.", body = S::KvPrefixDeleted),
        (status = 400, description = "`empty_prefix`.", body = ErrorBody),
    ))]
/// `DELETE /v1/kv?prefix=p`: every key with the (non-empty) prefix.
async fn kv_delete_prefix(
    State(s): State<AppState>,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let prefix = p.get("prefix").cloned().unwrap_or_default().into_bytes();
    let deleted = s.kv.delete_prefix(prefix).await?;
    Ok(Json(json!({ "deleted": deleted })))
}
