//! `/v1/collections` (docs/api.md, "Vector collections"). Bodies are typed;
//! ids, vectors, payloads and filters stay JSON values until checked here
//! or by the service, so that their errors keep the documented codes
//! (`invalid_id`, `invalid_vector`, `invalid_payload`, `invalid_filter`)
//! and name the element (`points[3].vector`, `vector[1]`).

use super::extract::{json_body, ReadParams};
use super::extract::{Path, Query};
use super::openapi_errors::ErrorBody;
use super::openapi_schemas as S;
use super::AppState;
use crate::api::limits::MAX_VECTOR_BATCH_BYTES;
use crate::api::ApiError;
use crate::service::vectors::{hits_json, NewCollection, SearchSpec};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use orrery_vector::{CollectionConfig, Point, PointId, ShardInfo, Vector};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};
use std::time::Instant;

/// Search and catalog bodies are small; point batches may be 64 MiB.
const SMALL_BODY: usize = 4 * 1024 * 1024;
/// Searches in one batch request.
const MAX_BATCH_SEARCHES: usize = 100;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/collections", post(create).get(list))
        .route("/v1/collections/{c}", get(show).delete(drop_collection))
        .route(
            "/v1/collections/{c}/points",
            put(upsert).layer(DefaultBodyLimit::max(MAX_VECTOR_BATCH_BYTES + 1024)),
        )
        .route("/v1/collections/{c}/points/delete", post(delete_points))
        .route("/v1/collections/{c}/points/{id}", get(get_point))
        .route("/v1/collections/{c}/search", post(search))
        .route("/v1/collections/{c}/search/batch", post(search_batch))
}

/// A field that is present, even as `null` (which `Option` alone reads as
/// absent): `{"id": null}` is a bad id, not a missing one.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = CollectionCreateBody)]
struct CreateBody {
    #[schema(value_type = String, required = true, pattern = "^[A-Za-z0-9_-]{1,128}$")]
    name: Option<String>,
    #[schema(value_type = u32, required = true, minimum = 1, maximum = 4096)]
    dim: Option<usize>,
    metric: Option<String>,
    shards: Option<u64>,
    replication: Option<u64>,
    m: Option<usize>,
    ef_construction: Option<usize>,
    ef_search: Option<usize>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = PointsUpsertBody)]
struct UpsertBody {
    #[schema(value_type = Vec<PointBody>, required = true)]
    points: Option<Vec<PointBody>>,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct PointBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = S::PointIdSchema, required = true)]
    id: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Vec<f32>, required = true)]
    vector: Value,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    payload: Value,
}

/// Exactly one of `ids` and `filter`.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = PointsDeleteBody)]
struct DeleteBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<S::PointIdSchema>>)]
    ids: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    filter: Option<Value>,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct SearchBody {
    #[serde(default)]
    #[schema(value_type = Vec<f32>, required = true)]
    vector: Value,
    k: Option<usize>,
    ef: Option<usize>,
    exact: Option<bool>,
    filter: Option<Value>,
    with_payload: Option<bool>,
    with_vector: Option<bool>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = SearchBatchBody)]
struct BatchBody {
    #[schema(value_type = Vec<SearchBody>, required = true)]
    searches: Option<Vec<SearchBody>>,
}

/// Parses a JSON vector, naming `field` in errors.
fn parse_vector(v: &Value, field: &str) -> Result<Vec<f32>, ApiError> {
    let arr = v.as_array().ok_or_else(|| {
        ApiError::bad(
            "invalid_vector",
            format!("{field} must be a list of numbers"),
        )
    })?;
    arr.iter()
        .enumerate()
        .map(|(i, x)| {
            let f = x.as_f64().ok_or_else(|| {
                ApiError::bad(
                    "invalid_vector",
                    format!("{field}[{i}] must be a finite number, got {x}"),
                )
            })?;
            // JSON has no NaN, but a number past f32's range (1e39) is infinite.
            let f32v = f as f32;
            if !f32v.is_finite() {
                return Err(ApiError::bad(
                    "invalid_vector",
                    format!("{field}[{i}] is not a finite 32-bit float"),
                ));
            }
            Ok(f32v)
        })
        .collect()
}

fn parse_point(p: PointBody, i: usize) -> Result<Point, ApiError> {
    let id =
        p.id.ok_or_else(|| ApiError::bad("invalid_id", format!("points[{i}].id is required")))
            .and_then(|id| {
                PointId::from_json(&id)
                    .map_err(|m| ApiError::bad("invalid_id", format!("points[{i}].id {m}")))
            })?;
    let vector = parse_vector(&p.vector, &format!("points[{i}].vector"))?;
    let payload = match p.payload {
        Value::Null => Map::new(),
        Value::Object(o) => o,
        _ => {
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

/// `prefix` names the search in a batch (`searches[2].`).
fn parse_search(b: SearchBody, prefix: &str) -> Result<SearchSpec, ApiError> {
    Ok(SearchSpec {
        vector: parse_vector(&b.vector, &format!("{prefix}vector"))?,
        k: b.k.unwrap_or(10),
        ef: b.ef,
        exact: b.exact.unwrap_or(false),
        filter: b.filter,
        with_payload: b.with_payload.unwrap_or(true),
        with_vector: b.with_vector.unwrap_or(false),
    })
}

fn config_json(c: &CollectionConfig) -> Value {
    json!({
        "name": c.name, "dim": c.dim, "metric": c.metric.name(), "shards": c.shards,
        "replication": c.replication, "m": c.m, "ef_construction": c.ef_construction,
        "ef_search": c.ef_search,
    })
}

/// The definition with its points, in total and per shard.
fn details_json(c: &CollectionConfig, shards: &[ShardInfo]) -> Value {
    let mut v = config_json(c);
    v["points"] = json!(shards.iter().map(|s| s.points).sum::<usize>());
    v["shard_states"] = json!(shards
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"shard": i, "points": s.points, "index": s.index, "indexed_entries": s.indexed_entries}))
        .collect::<Vec<_>>());
    v
}

fn took_ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

#[utoipa::path(post, path = "/v1/collections", operation_id = "collection_create", tag = "vectors",
    request_body = CreateBody,
    responses(
        (status = 201, description = "The collection's definition.", body = S::CollectionView),
        (status = 400, description = "`invalid_name`, `invalid_dim`, `invalid_metric`, `invalid_config`.", body = ErrorBody),
        (status = 409, description = "`conflict`: the collection exists.", body = ErrorBody),
    ))]
async fn create(
    State(s): State<AppState>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b: CreateBody = json_body(body, SMALL_BODY).await?;
    let name = b
        .name
        .ok_or_else(|| ApiError::bad("invalid_name", "name must be a string"))?;
    let dim = b
        .dim
        .ok_or_else(|| ApiError::bad("invalid_dim", "dim is required"))?;
    // Out of range is refused by the definition's checks, naming the field.
    let u32_sat = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    let made = s
        .vectors
        .create_collection(NewCollection {
            name,
            dim,
            metric: b.metric,
            shards: b.shards.map(u32_sat),
            replication: b.replication.map(u32_sat),
            m: b.m,
            ef_construction: b.ef_construction,
            ef_search: b.ef_search,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(config_json(&made))))
}

#[utoipa::path(get, path = "/v1/collections", operation_id = "collection_list", tag = "vectors",
    responses((status = 200, description = "Every collection's definition.", body = S::Collections)))]
async fn list(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let cat = s.vectors.catalog().await?;
    Ok(Json(
        json!({"collections": cat.values().map(config_json).collect::<Vec<_>>()}),
    ))
}

#[utoipa::path(get, path = "/v1/collections/{c}", operation_id = "collection_get", tag = "vectors",
    params(("c" = String, Path, description = "The collection's name.")),
    responses((status = 200, description = "The definition with its points per shard.", body = S::CollectionDetails), (status = 404, description = "`not_found`: no such collection.", body = ErrorBody)))]
async fn show(State(s): State<AppState>, Path(c): Path<String>) -> Result<Json<Value>, ApiError> {
    let cfg = s.vectors.collection(&c).await?;
    let shards = s.vectors.collection_shards(&cfg).await?;
    Ok(Json(details_json(&cfg, &shards)))
}

#[utoipa::path(delete, path = "/v1/collections/{c}", operation_id = "collection_drop", tag = "vectors",
    params(("c" = String, Path, description = "The collection's name.")),
    responses((status = 200, description = "Dropped.", body = S::Dropped), (status = 404, description = "`not_found`: no such collection.", body = ErrorBody)))]
async fn drop_collection(
    State(s): State<AppState>,
    Path(c): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.vectors.drop_collection(&c).await?;
    Ok(Json(json!({"dropped": c})))
}

#[utoipa::path(put, path = "/v1/collections/{c}/points", operation_id = "points_upsert", tag = "vectors",
    params(("c" = String, Path, description = "The collection's name.")), request_body = UpsertBody,
    responses(
        (status = 200, description = "How many points were written.", body = S::Upserted),
        (status = 400, description = "`invalid_points`, `invalid_id`, `invalid_vector`, `invalid_payload`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such collection.", body = ErrorBody),
    ))]
async fn upsert(
    State(s): State<AppState>,
    Path(c): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let b: UpsertBody = json_body(body, MAX_VECTOR_BATCH_BYTES).await?;
    let list = b
        .points
        .ok_or_else(|| ApiError::bad("invalid_points", "points must be a list"))?;
    let points = list
        .into_iter()
        .enumerate()
        .map(|(i, p)| parse_point(p, i))
        .collect::<Result<Vec<_>, _>>()?;
    let n = s.vectors.upsert_points(&c, points).await?;
    Ok(Json(json!({"upserted": n})))
}

#[utoipa::path(get, path = "/v1/collections/{c}/points/{id}", operation_id = "point_get", tag = "vectors",
    params(("c" = String, Path, description = "The collection's name."), ("id" = String, Path, description = "The point's id: an unsigned integer or a UUID.")),
    responses(
        (status = 200, description = "The point.", body = S::PointView),
        (status = 400, description = "`invalid_id`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such collection or point.", body = ErrorBody),
    ))]
async fn get_point(
    State(s): State<AppState>,
    Path((c, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let pid =
        PointId::parse_str(&id).map_err(|m| ApiError::bad("invalid_id", format!("id {m}")))?;
    let p = s.vectors.get_point(&c, pid.clone()).await?;
    Ok(Json(
        json!({"id": pid.to_json(), "vector": p.vector.0, "payload": p.payload}),
    ))
}

#[utoipa::path(post, path = "/v1/collections/{c}/points/delete", operation_id = "points_delete", tag = "vectors",
    params(("c" = String, Path, description = "The collection's name.")), request_body = DeleteBody,
    responses(
        (status = 200, description = "How many points were deleted.", body = S::PointsDeleted),
        (status = 400, description = "`invalid_delete`, `invalid_ids`, `invalid_filter`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such collection.", body = ErrorBody),
    ))]
async fn delete_points(
    State(s): State<AppState>,
    Path(c): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let b: DeleteBody = json_body(body, SMALL_BODY).await?;
    let n = match (b.ids, b.filter) {
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
            s.vectors.delete_ids(&c, ids).await?
        }
        (None, Some(f)) => s.vectors.delete_filter(&c, f).await?,
        _ => {
            return Err(ApiError::bad(
                "invalid_delete",
                "the body must have exactly one of ids or filter",
            ))
        }
    };
    Ok(Json(json!({"deleted": n})))
}

#[utoipa::path(post, path = "/v1/collections/{c}/search", operation_id = "search", tag = "vectors",
    params(("c" = String, Path, description = "The collection's name."), ReadParams), request_body = SearchBody,
    responses(
        (status = 200, description = "The nearest points, best first.", body = S::SearchAnswer),
        (status = 400, description = "`invalid_vector`, `invalid_k`, `invalid_ef`, `invalid_filter`, `invalid_consistency`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such collection.", body = ErrorBody),
    ))]
async fn search(
    State(s): State<AppState>,
    Path(c): Path<String>,
    Query(p): Query<ReadParams>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let start = Instant::now();
    let lin = p.linearizable()?;
    let spec = parse_search(json_body(body, SMALL_BODY).await?, "")?;
    let hits = s.vectors.search(&c, spec, lin).await?;
    Ok(Json(
        json!({"result": hits_json(&hits), "took_ms": took_ms(start)}),
    ))
}

#[utoipa::path(post, path = "/v1/collections/{c}/search/batch", operation_id = "search_batch", tag = "vectors",
    params(("c" = String, Path, description = "The collection's name."), ReadParams), request_body = BatchBody,
    responses(
        (status = 200, description = "One result per search, in order.", body = S::BatchSearchAnswer),
        (status = 400, description = "`invalid_searches` and the codes of a search.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such collection.", body = ErrorBody),
    ))]
async fn search_batch(
    State(s): State<AppState>,
    Path(c): Path<String>,
    Query(p): Query<ReadParams>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let start = Instant::now();
    let lin = p.linearizable()?;
    let b: BatchBody = json_body(body, SMALL_BODY).await?;
    let list = b
        .searches
        .ok_or_else(|| ApiError::bad("invalid_searches", "searches must be a list"))?;
    if list.len() > MAX_BATCH_SEARCHES {
        return Err(ApiError::bad(
            "invalid_searches",
            format!(
                "searches has {} entries; the limit is {MAX_BATCH_SEARCHES}",
                list.len()
            ),
        ));
    }
    let specs = list
        .into_iter()
        .enumerate()
        .map(|(i, b)| parse_search(b, &format!("searches[{i}].")))
        .collect::<Result<Vec<_>, _>>()?;
    let results: Vec<Value> = s
        .vectors
        .search_batch(&c, specs, lin)
        .await?
        .iter()
        .map(|hits| json!({"result": hits_json(hits)}))
        .collect();
    Ok(Json(json!({"results": results, "took_ms": took_ms(start)})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::extract::parse_json;

    fn err<T>(r: Result<T, ApiError>) -> (String, String) {
        match r {
            Ok(_) => panic!("must fail"),
            Err(e) => (e.code().to_string(), e.to_string()),
        }
    }

    #[test]
    fn vectors_name_the_bad_element() {
        let b: SearchBody = parse_json(br#"{"vector": [1, "x"]}"#).expect("body");
        let (code, msg) = err(parse_search(b, ""));
        assert_eq!(code, "invalid_vector");
        assert!(msg.contains("vector[1]"), "{msg}");
        let b: BatchBody =
            parse_json(br#"{"searches": [{"vector": [1, 2, 3, 1e39]}]}"#).expect("body");
        let b = b.searches.and_then(|s| s.into_iter().next()).expect("one");
        let (code, msg) = err(parse_search(b, "searches[0]."));
        assert_eq!(code, "invalid_vector");
        assert!(msg.contains("searches[0].vector[3]"), "{msg}");
    }

    #[test]
    fn point_ids_null_and_missing_differ() {
        let b: UpsertBody =
            parse_json(br#"{"points": [{"id": null, "vector": [1]}, {"vector": [1]}, {"id": 1, "vector": [1], "payload": 3}]}"#)
                .expect("body");
        let mut ps = b.points.expect("points").into_iter();
        let (code, msg) = err(parse_point(ps.next().expect("p0"), 0));
        assert_eq!(code, "invalid_id");
        assert!(msg.contains("points[0].id must be"), "{msg}");
        let (_, msg) = err(parse_point(ps.next().expect("p1"), 1));
        assert!(msg.contains("points[1].id is required"), "{msg}");
        let (code, _) = err(parse_point(ps.next().expect("p2"), 2));
        assert_eq!(code, "invalid_payload");
    }

    #[test]
    fn delete_sees_a_null_filter_as_given() {
        let b: DeleteBody = parse_json(br#"{"filter": null}"#).expect("body");
        assert_eq!((b.ids, b.filter), (None, Some(Value::Null)));
    }
}
