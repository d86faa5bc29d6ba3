//! The REST front (axum). Handlers parse and validate, then call the node;
//! every error leaves through `ApiError`'s JSON body.

use crate::error::ApiError;
use crate::kv_api::DEFAULT_LIST_LIMIT;
use crate::node::Node;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use orrery_types::group_name;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

type AppState = Arc<Node>;

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/v1/kv", get(kv_list))
        .route(
            "/v1/kv/{*key}",
            get(kv_get).put(kv_put).delete(kv_delete).post(kv_post),
        )
        .route("/v1/cluster", get(cluster))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::jobs_rest::routes())
        .merge(crate::vector_rest::routes())
        .merge(crate::policy_rest::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(node.clone(), observe))
        .with_state(node)
}

async fn observe(State(node): State<AppState>, req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", |p| p.as_str());
    let method = req.method().clone();
    let start = Instant::now();
    let request_id = node.metrics.next_request_id();
    let span = tracing::info_span!("http", node = node.id(), request = request_id, %method, %route);
    let mut resp = next.run(req).instrument(span).await;
    node.metrics.observe(
        method.as_str(),
        route,
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp.headers_mut()
        .insert("x-request-id", HeaderValue::from(request_id));
    resp
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; see docs/api.md".into())
}

async fn method_not_allowed() -> Response {
    let body = json!({"error": {"code": "method_not_allowed", "message": "method not allowed on this endpoint"}});
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

#[derive(Deserialize)]
struct ReadParams {
    consistency: Option<String>,
}

fn linearizable(c: Option<&str>) -> Result<bool, ApiError> {
    match c {
        None | Some("linearizable") => Ok(true),
        Some("stale") => Ok(false),
        Some(other) => Err(ApiError::bad(
            "invalid_consistency",
            format!("consistency must be \"linearizable\" or \"stale\", got {other:?}"),
        )),
    }
}

async fn read_body(node: &Node, body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| {
            ApiError::TooLarge(format!(
                "request body exceeds the limit of {} bytes",
                limit.max(node.cfg.max_value_bytes)
            ))
        })
}

async fn kv_put(
    State(node): State<AppState>,
    Path(key): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let key = key.into_bytes();
    node.check_key(&key)?;
    let value = read_body(&node, body, node.cfg.max_value_bytes).await?;
    let revision = node.kv_put(key, value).await?;
    Ok(Json(json!({ "revision": revision })))
}

async fn kv_get(
    State(node): State<AppState>,
    Path(key): Path<String>,
    Query(p): Query<ReadParams>,
) -> Result<Response, ApiError> {
    let lin = linearizable(p.consistency.as_deref())?;
    match node.kv_get(key.clone().into_bytes(), lin).await? {
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

async fn kv_delete(
    State(node): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (deleted, revision) = node.kv_delete(key.into_bytes()).await?;
    Ok(Json(json!({ "deleted": deleted, "revision": revision })))
}

/// `POST /v1/kv/{key}/cas`: the wildcard route also matches the suffix.
async fn kv_post(
    State(node): State<AppState>,
    Path(path): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(key) = path.strip_suffix("/cas") else {
        return Err(ApiError::NotFound(
            "POST is only defined for /v1/kv/{key}/cas".into(),
        ));
    };
    let key = key.as_bytes().to_vec();
    node.check_key(&key)?;
    // The JSON encoding of a value can be up to 6x its size (\u escapes).
    let raw = read_body(
        &node,
        body,
        node.cfg
            .max_value_bytes
            .saturating_mul(2)
            .saturating_add(4096),
    )
    .await?;
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
    let (succeeded, revision, current) = node.kv_cas(key, expected, value).await?;
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

async fn kv_list(
    State(node): State<AppState>,
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
    let items = node.kv_list(prefix, limit, lin).await?;
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

async fn cluster(State(node): State<AppState>) -> Result<Json<Value>, ApiError> {
    let p = node.placement();
    if !p.is_initialized() {
        return Err(ApiError::NotInitialized);
    }
    let leaders: HashMap<u64, Option<u64>> = node
        .registry
        .all()
        .iter()
        .map(|g| (g.id, g.raft.metrics().borrow().current_leader))
        .collect();
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
        .map(|(i, s)| {
            let gid = orrery_types::shard_group(i as u32);
            json!({"id": i, "group": gid, "name": group_name(gid), "replicas": s.replicas, "epoch": s.epoch,
                   "leader": leaders.get(&gid).copied().flatten()})
        })
        .collect();
    Ok(Json(json!({
        "cluster_id": p.cluster_id,
        "node_id": node.id(),
        "placement_leader": node.placement_leader(),
        "members": members,
        "shards": shards,
    })))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(node): State<AppState>) -> Response {
    match node.readiness() {
        Ok(l) => Json(json!({"status": "ready", "placement_leader": l})).into_response(),
        Err(why) => ApiError::unavailable(why).into_response(),
    }
}

async fn metrics(State(node): State<AppState>) -> Response {
    let mut out = String::new();
    node.metrics.render(&mut out);
    crate::render_raft_metrics(&node, &mut out);
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}
