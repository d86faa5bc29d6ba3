//! REST routes for vector collections (see docs/api.md, "Vector collections").

use crate::api::error::ApiError;
use crate::vector_api::{parse_vector, SearchSpec, MAX_BATCH_BYTES};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use orrery_vector::{CollectionConfig, Hit, Metric, Point, PointId, Vector};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::time::Instant;

type AppState = crate::http::AppState;

/// Search and catalog bodies are small; point batches may be 64 MiB.
const SMALL_BODY: usize = 4 * 1024 * 1024;

pub fn routes() -> Router<crate::http::AppState> {
    Router::new()
        .route("/v1/collections", post(create).get(list))
        .route("/v1/collections/{c}", get(show).delete(drop_collection))
        .route(
            "/v1/collections/{c}/points",
            axum::routing::put(upsert).layer(DefaultBodyLimit::max(MAX_BATCH_BYTES + 1024)),
        )
        .route("/v1/collections/{c}/points/delete", post(delete_points))
        .route("/v1/collections/{c}/points/{id}", get(get_point))
        .route("/v1/collections/{c}/search", post(search))
        .route("/v1/collections/{c}/search/batch", post(search_batch))
}

#[derive(Deserialize)]
struct ReadParams {
    consistency: Option<String>,
}

fn linearizable(p: &ReadParams) -> Result<bool, ApiError> {
    match p.consistency.as_deref() {
        None | Some("linearizable") => Ok(true),
        Some("stale") => Ok(false),
        Some(o) => Err(ApiError::bad(
            "invalid_consistency",
            format!("consistency must be linearizable or stale, got {o:?}"),
        )),
    }
}

async fn body_json(body: Body, limit: usize) -> Result<Map<String, Value>, ApiError> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::TooLarge(format!("request body is larger than {limit} bytes")))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad("invalid_json", format!("request body is not JSON: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad(
            "invalid_json",
            "request body must be a JSON object",
        )),
    }
}

fn opt_usize(m: &Map<String, Value>, field: &str) -> Result<Option<usize>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
            ApiError::bad(
                &format!("invalid_{field}"),
                format!("{field} must be a non-negative integer, got {v}"),
            )
        }),
    }
}

fn opt_bool(m: &Map<String, Value>, field: &str, default: bool) -> Result<bool, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(ApiError::bad(
            &format!("invalid_{field}"),
            format!("{field} must be true or false, got {v}"),
        )),
    }
}

pub fn config_json(c: &CollectionConfig) -> Value {
    json!({
        "name": c.name, "dim": c.dim, "metric": c.metric.name(), "shards": c.shards,
        "replication": c.replication, "m": c.m, "ef_construction": c.ef_construction,
        "ef_search": c.ef_search,
    })
}

async fn create(
    State(node): State<AppState>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let m = body_json(body, SMALL_BODY).await?;
    let name = m
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad("invalid_name", "name must be a string"))?;
    let dim =
        opt_usize(&m, "dim")?.ok_or_else(|| ApiError::bad("invalid_dim", "dim is required"))?;
    let metric = match m.get("metric") {
        None => Metric::Cosine,
        Some(v) => v.as_str().and_then(Metric::parse).ok_or_else(|| {
            ApiError::bad(
                "invalid_metric",
                format!("metric must be cosine, l2 or dot, got {v}"),
            )
        })?,
    };
    let cluster_shards = node.shard_groups()?.len();
    let num = |f: &str, d: usize| opt_usize(&m, f).map(|v| v.unwrap_or(d));
    let c = CollectionConfig {
        name: name.to_string(),
        dim,
        metric,
        shards: u32::try_from(num("shards", cluster_shards)?).unwrap_or(u32::MAX),
        replication: u32::try_from(num("replication", orrery_types::MAX_REPLICAS)?)
            .unwrap_or(u32::MAX),
        m: num("m", 16)?,
        ef_construction: num("ef_construction", 200)?,
        ef_search: num("ef_search", 64)?,
        uid: 0,
    };
    let made = node.create_collection(c).await?;
    Ok((StatusCode::CREATED, Json(config_json(&made))))
}

async fn list(State(node): State<AppState>) -> Result<Json<Value>, ApiError> {
    let cat = node.vector_catalog().await?;
    Ok(Json(
        json!({"collections": cat.values().map(config_json).collect::<Vec<_>>()}),
    ))
}

async fn show(
    State(node): State<AppState>,
    Path(c): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let cfg = node.collection(&c).await?;
    let shards = node.collection_shards(&cfg).await?;
    let mut v = config_json(&cfg);
    v["points"] = json!(shards.iter().map(|s| s.points).sum::<usize>());
    v["shard_states"] = json!(shards
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"shard": i, "points": s.points, "index": s.index, "indexed_entries": s.indexed_entries}))
        .collect::<Vec<_>>());
    Ok(Json(v))
}

async fn drop_collection(
    State(node): State<AppState>,
    Path(c): Path<String>,
) -> Result<Json<Value>, ApiError> {
    node.drop_collection(&c).await?;
    Ok(Json(json!({"dropped": c})))
}

fn parse_point(v: &Value, i: usize) -> Result<Point, ApiError> {
    let o = v
        .as_object()
        .ok_or_else(|| ApiError::bad("invalid_point", format!("points[{i}] must be an object")))?;
    let id = o
        .get("id")
        .ok_or_else(|| ApiError::bad("invalid_id", format!("points[{i}].id is required")))
        .and_then(|id| {
            PointId::from_json(id)
                .map_err(|m| ApiError::bad("invalid_id", format!("points[{i}].id {m}")))
        })?;
    let vector = parse_vector(
        o.get("vector").unwrap_or(&Value::Null),
        &format!("points[{i}].vector"),
    )?;
    let payload = match o.get("payload") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => {
            return Err(ApiError::bad(
                "invalid_payload",
                format!("points[{i}].payload must be a JSON object"),
            ))
        }
    };
    Ok(Point {
        id,
        vector: Vector(vector),
        payload,
    })
}

async fn upsert(
    State(node): State<AppState>,
    Path(c): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let m = body_json(body, MAX_BATCH_BYTES).await?;
    let list = m
        .get("points")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad("invalid_points", "points must be a list"))?;
    let points = list
        .iter()
        .enumerate()
        .map(|(i, p)| parse_point(p, i))
        .collect::<Result<Vec<_>, _>>()?;
    let n = node.upsert_points(&c, points).await?;
    Ok(Json(json!({"upserted": n})))
}

async fn get_point(
    State(node): State<AppState>,
    Path((c, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let pid =
        PointId::parse_str(&id).map_err(|m| ApiError::bad("invalid_id", format!("id {m}")))?;
    let p = node.get_point(&c, pid.clone()).await?;
    Ok(Json(
        json!({"id": pid.to_json(), "vector": p.vector.0, "payload": p.payload}),
    ))
}

async fn delete_points(
    State(node): State<AppState>,
    Path(c): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let m = body_json(body, SMALL_BODY).await?;
    let n = match (m.get("ids"), m.get("filter")) {
        (Some(ids), None) => {
            let ids = ids
                .as_array()
                .ok_or_else(|| ApiError::bad("invalid_ids", "ids must be a list"))?
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    PointId::from_json(v)
                        .map_err(|e| ApiError::bad("invalid_ids", format!("ids[{i}] {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            node.delete_ids(&c, ids).await?
        }
        (None, Some(f)) => node.delete_filter(&c, f.clone()).await?,
        _ => {
            return Err(ApiError::bad(
                "invalid_delete",
                "the body must have exactly one of ids or filter",
            ))
        }
    };
    Ok(Json(json!({"deleted": n})))
}

fn parse_search(m: &Map<String, Value>, prefix: &str) -> Result<SearchSpec, ApiError> {
    let vector = parse_vector(
        m.get("vector").unwrap_or(&Value::Null),
        &format!("{prefix}vector"),
    )?;
    let k = opt_usize(m, "k")?.unwrap_or(10);
    Ok(SearchSpec {
        vector,
        k,
        ef: opt_usize(m, "ef")?,
        exact: opt_bool(m, "exact", false)?,
        filter: m.get("filter").cloned(),
        with_payload: opt_bool(m, "with_payload", true)?,
        with_vector: opt_bool(m, "with_vector", false)?,
    })
}

pub fn hits_json(hits: &[Hit]) -> Value {
    json!(hits
        .iter()
        .map(|h| {
            let mut v = json!({"id": h.id.to_json(), "score": h.score});
            if let Some(p) = &h.payload {
                v["payload"] = Value::Object(p.clone());
            }
            if let Some(x) = &h.vector {
                v["vector"] = json!(x);
            }
            v
        })
        .collect::<Vec<_>>())
}

async fn search(
    State(node): State<AppState>,
    Path(c): Path<String>,
    Query(p): Query<ReadParams>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let start = Instant::now();
    let lin = linearizable(&p)?;
    let m = body_json(body, SMALL_BODY).await?;
    let spec = parse_search(&m, "")?;
    let hits = node.search(&c, spec, lin).await?;
    Ok(Json(
        json!({"result": hits_json(&hits), "took_ms": start.elapsed().as_secs_f64() * 1000.0}),
    ))
}

async fn search_batch(
    State(node): State<AppState>,
    Path(c): Path<String>,
    Query(p): Query<ReadParams>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let start = Instant::now();
    let lin = linearizable(&p)?;
    let m = body_json(body, SMALL_BODY).await?;
    let list = m
        .get("searches")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad("invalid_searches", "searches must be a list"))?;
    if list.len() > 100 {
        return Err(ApiError::bad(
            "invalid_searches",
            format!("searches has {} entries; the limit is 100", list.len()),
        ));
    }
    let specs = list
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.as_object()
                .ok_or_else(|| {
                    ApiError::bad(
                        "invalid_searches",
                        format!("searches[{i}] must be an object"),
                    )
                })
                .and_then(|o| parse_search(o, &format!("searches[{i}].")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cfg = node.collection(&c).await?;
    let futs = specs.into_iter().map(|s| node.search_in(&cfg, s, lin));
    let mut results = Vec::new();
    for r in futures::future::join_all(futs).await {
        results.push(json!({"result": hits_json(&r?)}));
    }
    Ok(Json(
        json!({"results": results, "took_ms": start.elapsed().as_secs_f64() * 1000.0}),
    ))
}
