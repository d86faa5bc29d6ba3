//! orrery.v1.Vectors over the vectors service: the same operations as
//! REST; zero numeric fields take the defaults, payloads and filters are
//! JSON text.

use crate::api::ApiError;
use crate::service::vectors::{NewCollection, SearchSpec};
use crate::service::Services;
use orrery_proto::v1 as pb;
use orrery_proto::v1::vectors_server::Vectors;
use orrery_vector::{CollectionConfig, Hit, Point, PointId, Vector};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};

pub struct VectorsApi(pub Arc<Services>);

fn id_from(p: Option<pb::VectorPointId>, field: &str) -> Result<PointId, ApiError> {
    match p.and_then(|p| p.id) {
        Some(pb::vector_point_id::Id::Num(n)) => Ok(PointId::Num(n)),
        Some(pb::vector_point_id::Id::Uuid(u)) => {
            PointId::parse_str(&u).map_err(|m| ApiError::bad("invalid_id", format!("{field} {m}")))
        }
        None => Err(ApiError::bad("invalid_id", format!("{field} is required"))),
    }
}

fn id_to(p: &PointId) -> pb::VectorPointId {
    pb::VectorPointId {
        id: Some(match p {
            PointId::Num(n) => pb::vector_point_id::Id::Num(*n),
            PointId::Uuid(u) => pb::vector_point_id::Id::Uuid(u.clone()),
        }),
    }
}

fn json_object(text: &str, field: &str) -> Result<Map<String, Value>, ApiError> {
    if text.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ApiError::bad(
            "invalid_payload",
            format!("{field} must be a JSON object"),
        )),
    }
}

fn json_value(text: &str, field: &str) -> Result<Option<Value>, ApiError> {
    if text.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| ApiError::bad("invalid_filter", format!("{field} is not JSON: {e}")))
}

fn finite(v: Vec<f32>, field: &str) -> Result<Vec<f32>, ApiError> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(ApiError::bad(
            "invalid_vector",
            format!("{field}[{i}] is not a finite number"),
        )),
        None => Ok(v),
    }
}

fn collection_pb(c: &CollectionConfig) -> pb::VectorCollection {
    pb::VectorCollection {
        name: c.name.clone(),
        dim: c.dim as u32,
        metric: c.metric.name().into(),
        shards: c.shards,
        replication: c.replication,
        m: c.m as u32,
        ef_construction: c.ef_construction as u32,
        ef_search: c.ef_search as u32,
        points: 0,
        shard_states: vec![],
    }
}

fn hits_pb(hits: Vec<Hit>) -> Vec<pb::VectorHit> {
    hits.into_iter()
        .map(|h| pb::VectorHit {
            id: Some(id_to(&h.id)),
            score: h.score,
            payload_json: h
                .payload
                .map(|p| Value::Object(p).to_string())
                .unwrap_or_default(),
            vector: h.vector.unwrap_or_default(),
        })
        .collect()
}

fn spec(r: pb::VectorSearchRequest) -> Result<(SearchSpec, bool), ApiError> {
    let lin = r.consistency != pb::Consistency::Stale as i32;
    Ok((
        SearchSpec {
            vector: finite(r.vector, "vector")?,
            k: if r.k == 0 { 10 } else { r.k as usize },
            ef: (r.ef != 0).then_some(r.ef as usize),
            exact: r.exact,
            filter: json_value(&r.filter_json, "filter_json")?,
            with_payload: r.with_payload,
            with_vector: r.with_vector,
        },
        lin,
    ))
}

#[tonic::async_trait]
impl Vectors for VectorsApi {
    async fn create_collection(
        &self,
        req: Request<pb::VectorCreateCollectionRequest>,
    ) -> Result<Response<pb::VectorCollection>, Status> {
        let r = req.into_inner();
        let set = |v: u32| (v != 0).then_some(v);
        let made = self
            .0
            .vectors
            .create_collection(NewCollection {
                name: r.name,
                dim: r.dim as usize,
                metric: (!r.metric.is_empty()).then_some(r.metric),
                shards: set(r.shards),
                replication: set(r.replication),
                m: set(r.m).map(|v| v as usize),
                ef_construction: set(r.ef_construction).map(|v| v as usize),
                ef_search: set(r.ef_search).map(|v| v as usize),
            })
            .await?;
        Ok(Response::new(collection_pb(&made)))
    }

    async fn list_collections(
        &self,
        _req: Request<pb::VectorListCollectionsRequest>,
    ) -> Result<Response<pb::VectorListCollectionsResponse>, Status> {
        let cat = self.0.vectors.catalog().await?;
        Ok(Response::new(pb::VectorListCollectionsResponse {
            collections: cat.values().map(collection_pb).collect(),
        }))
    }

    async fn get_collection(
        &self,
        req: Request<pb::VectorGetCollectionRequest>,
    ) -> Result<Response<pb::VectorCollection>, Status> {
        let c = self.0.vectors.collection(&req.into_inner().name).await?;
        let shards = self.0.vectors.collection_shards(&c).await?;
        let mut out = collection_pb(&c);
        out.points = shards.iter().map(|s| s.points as u64).sum();
        out.shard_states = shards
            .iter()
            .enumerate()
            .map(|(i, s)| pb::VectorShardState {
                shard: i as u32,
                points: s.points as u64,
                index: s.index.clone(),
                indexed_entries: s.indexed_entries as u64,
            })
            .collect();
        Ok(Response::new(out))
    }

    async fn drop_collection(
        &self,
        req: Request<pb::VectorGetCollectionRequest>,
    ) -> Result<Response<pb::VectorDropCollectionResponse>, Status> {
        self.0
            .vectors
            .drop_collection(&req.into_inner().name)
            .await?;
        Ok(Response::new(pb::VectorDropCollectionResponse {}))
    }

    async fn upsert_points(
        &self,
        req: Request<pb::VectorUpsertRequest>,
    ) -> Result<Response<pb::VectorUpsertResponse>, Status> {
        let r = req.into_inner();
        let points = r
            .points
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                Ok(Point {
                    id: id_from(p.id, &format!("points[{i}].id"))?,
                    vector: Vector(finite(p.vector, &format!("points[{i}].vector"))?),
                    payload: json_object(&p.payload_json, &format!("points[{i}].payload_json"))?,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let n = self.0.vectors.upsert_points(&r.collection, points).await?;
        Ok(Response::new(pb::VectorUpsertResponse {
            upserted: n as u64,
        }))
    }

    async fn get_point(
        &self,
        req: Request<pb::VectorGetPointRequest>,
    ) -> Result<Response<pb::VectorPoint>, Status> {
        let r = req.into_inner();
        let id = id_from(r.id, "id")?;
        let p = self.0.vectors.get_point(&r.collection, id.clone()).await?;
        Ok(Response::new(pb::VectorPoint {
            id: Some(id_to(&id)),
            vector: p.vector.0,
            payload_json: Value::Object(p.payload).to_string(),
        }))
    }

    async fn delete_points(
        &self,
        req: Request<pb::VectorDeleteRequest>,
    ) -> Result<Response<pb::VectorDeleteResponse>, Status> {
        let r = req.into_inner();
        let n = match (r.ids.is_empty(), r.filter_json.is_empty()) {
            (false, true) => {
                let ids = r
                    .ids
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| id_from(Some(p), &format!("ids[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                self.0.vectors.delete_ids(&r.collection, ids).await?
            }
            (true, false) => {
                let f = json_value(&r.filter_json, "filter_json")?.unwrap_or(Value::Null);
                self.0.vectors.delete_filter(&r.collection, f).await?
            }
            _ => {
                return Err(ApiError::bad(
                    "invalid_delete",
                    "give exactly one of ids or filter_json",
                )
                .into())
            }
        };
        Ok(Response::new(pb::VectorDeleteResponse {
            deleted: n as u64,
        }))
    }

    async fn search(
        &self,
        req: Request<pb::VectorSearchRequest>,
    ) -> Result<Response<pb::VectorSearchResponse>, Status> {
        let start = Instant::now();
        let r = req.into_inner();
        let name = r.collection.clone();
        let (s, lin) = spec(r)?;
        let hits = self.0.vectors.search(&name, s, lin).await?;
        Ok(Response::new(pb::VectorSearchResponse {
            result: hits_pb(hits),
            took_ms: start.elapsed().as_secs_f64() * 1000.0,
        }))
    }

    async fn search_batch(
        &self,
        req: Request<pb::VectorSearchBatchRequest>,
    ) -> Result<Response<pb::VectorSearchBatchResponse>, Status> {
        let start = Instant::now();
        let searches = req.into_inner().searches;
        let futs = searches.into_iter().map(|r| async move {
            let t = Instant::now();
            let name = r.collection.clone();
            let (s, lin) = spec(r)?;
            let hits = self.0.vectors.search(&name, s, lin).await?;
            Ok::<_, ApiError>(pb::VectorSearchResponse {
                result: hits_pb(hits),
                took_ms: t.elapsed().as_secs_f64() * 1000.0,
            })
        });
        let mut results = Vec::new();
        for r in futures::future::join_all(futs).await {
            results.push(r?);
        }
        Ok(Response::new(pb::VectorSearchBatchResponse {
            results,
            took_ms: start.elapsed().as_secs_f64() * 1000.0,
        }))
    }
}
