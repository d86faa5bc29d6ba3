//! Vector collections and points: validation, routing to the placement
//! group (catalog) and shard groups (points), scatter-gather search.

use crate::api::error::ApiError;
use crate::node::ops::{Query, QueryResult};
use crate::node::Node;
use orrery_raft::{Command, Response};
use orrery_types::{shard_group, MAX_REPLICAS, PLACEMENT_GROUP};
use orrery_vector::filter::Filter;
use orrery_vector::{
    shard_of, CollectionConfig, Hit, Point, PointId, SearchRequest, ShardInfo, StoredPoint,
    VectorCommand, VectorError, VectorResponse, MAX_K,
};
use serde_json::Value;
use std::collections::BTreeMap;

pub const MAX_BATCH_POINTS: usize = 10_000;
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;
/// Target size of one replicated upsert command.
pub const UPSERT_ENTRY_BYTES: usize = 128 * 1024;

/// One search, validated.
pub struct SearchSpec {
    pub vector: Vec<f32>,
    pub k: usize,
    pub ef: Option<usize>,
    pub exact: bool,
    pub filter: Option<Value>,
    pub with_payload: bool,
    pub with_vector: bool,
}

fn vector_error(e: VectorError) -> ApiError {
    match e {
        VectorError::AlreadyExists(_) => ApiError::Conflict(e.to_string()),
        VectorError::Stale(_) => ApiError::Conflict(e.to_string()),
        VectorError::Invalid(m) => ApiError::bad("invalid_filter", m),
    }
}

fn unexpected<T: std::fmt::Debug>(x: T) -> ApiError {
    ApiError::Internal(format!("unexpected reply {x:?}"))
}

/// Parses a JSON vector, naming `field` in errors.
pub fn parse_vector(v: &Value, field: &str) -> Result<Vec<f32>, ApiError> {
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

impl Node {
    async fn vector_write(
        &self,
        group: u64,
        cmd: VectorCommand,
    ) -> Result<VectorResponse, ApiError> {
        match self.write(group, Command::Vector(cmd)).await? {
            Response::Vector(VectorResponse::Rejected(e)) => Err(vector_error(e)),
            Response::Vector(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    pub async fn vector_catalog(&self) -> Result<BTreeMap<String, CollectionConfig>, ApiError> {
        match self
            .read(PLACEMENT_GROUP, Query::VectorCatalog, true)
            .await?
        {
            QueryResult::VectorCatalog(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    pub async fn collection(&self, name: &str) -> Result<CollectionConfig, ApiError> {
        self.vector_catalog()
            .await?
            .remove(name)
            .ok_or_else(|| ApiError::NotFound(format!("collection {name:?} does not exist")))
    }

    pub async fn create_collection(
        &self,
        c: CollectionConfig,
    ) -> Result<CollectionConfig, ApiError> {
        let shards = self.shard_groups()?.len() as u32;
        c.validate(shards, MAX_REPLICAS as u32)
            .map_err(|(field, msg)| ApiError::bad(&format!("invalid_{field}"), msg))?;
        match self
            .vector_write(PLACEMENT_GROUP, VectorCommand::CreateCollection(c))
            .await?
        {
            VectorResponse::Created(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    /// Removes the catalog entry, then frees the points in every shard.
    /// Points a failed shard keeps are unreachable (a re-created collection
    /// gets a new uid) and are freed by the next drop or write.
    pub async fn drop_collection(&self, name: &str) -> Result<(), ApiError> {
        let c = self.collection(name).await?;
        self.vector_write(
            PLACEMENT_GROUP,
            VectorCommand::DropCollection { name: name.into() },
        )
        .await?;
        let futs = (0..c.shards).map(|s| {
            self.vector_write(
                shard_group(s),
                VectorCommand::DropData {
                    collection: name.into(),
                },
            )
        });
        for r in futures::future::join_all(futs).await {
            if let Err(e) = r {
                tracing::warn!(
                    collection = name,
                    "freeing dropped collection's points: {e}"
                );
            }
        }
        Ok(())
    }

    pub async fn collection_shards(
        &self,
        c: &CollectionConfig,
    ) -> Result<Vec<ShardInfo>, ApiError> {
        let futs = (0..c.shards).map(|s| {
            let q = Query::VectorInfo {
                collection: c.name.clone(),
                uid: c.uid,
            };
            async move { self.read(shard_group(s), q, false).await }
        });
        let mut out = Vec::new();
        for r in futures::future::join_all(futs).await {
            match r? {
                QueryResult::VectorInfo(i) => out.push(i),
                other => return Err(unexpected(other)),
            }
        }
        Ok(out)
    }

    /// Upserts a batch: split per shard, each part written to its group.
    pub async fn upsert_points(&self, name: &str, points: Vec<Point>) -> Result<usize, ApiError> {
        let c = self.collection(name).await?;
        if points.len() > MAX_BATCH_POINTS {
            return Err(ApiError::TooLarge(format!(
                "points has {} entries; the limit is {MAX_BATCH_POINTS} per request",
                points.len()
            )));
        }
        let mut parts: BTreeMap<u32, Vec<Point>> = BTreeMap::new();
        for (i, p) in points.into_iter().enumerate() {
            c.check_vector(&p.vector.0)
                .map_err(|m| ApiError::bad("invalid_vector", format!("points[{i}].vector {m}")))?;
            parts
                .entry(shard_of(name, &p.id, c.shards))
                .or_default()
                .push(p);
        }
        // Raft entries stay small (one AppendEntries must finish within a
        // heartbeat interval): each shard's part goes as a sequence of
        // commands of about UPSERT_ENTRY_BYTES, shards in parallel.
        let per_point = c.dim * 4 + 64;
        let futs = parts.into_iter().map(|(s, mut points)| async move {
            let mut n = 0;
            while !points.is_empty() {
                let mut bytes = 0;
                let take = points
                    .iter()
                    .take_while(|p| {
                        bytes += per_point + p.payload.len() * 32;
                        bytes <= UPSERT_ENTRY_BYTES
                    })
                    .count()
                    .max(1);
                let rest = points.split_off(take.min(points.len()));
                let chunk = std::mem::replace(&mut points, rest);
                let r = self
                    .vector_write(
                        shard_group(s),
                        VectorCommand::Upsert {
                            collection: name.into(),
                            uid: c.uid,
                            metric: c.metric,
                            m: c.m,
                            ef_construction: c.ef_construction,
                            points: chunk,
                        },
                    )
                    .await?;
                if let VectorResponse::Upserted { count } = r {
                    n += count;
                }
            }
            Ok::<usize, ApiError>(n)
        });
        let mut n = 0;
        for r in futures::future::join_all(futs).await {
            n += r?;
        }
        Ok(n)
    }

    pub async fn get_point(&self, name: &str, id: PointId) -> Result<StoredPoint, ApiError> {
        let c = self.collection(name).await?;
        let q = Query::VectorGet {
            collection: name.into(),
            uid: c.uid,
            id: id.clone(),
        };
        match self
            .read(shard_group(shard_of(name, &id, c.shards)), q, true)
            .await?
        {
            QueryResult::VectorGet(Some(p)) => Ok(p),
            QueryResult::VectorGet(None) => Err(ApiError::NotFound(format!(
                "point {id} does not exist in collection {name:?}"
            ))),
            other => Err(unexpected(other)),
        }
    }

    pub async fn delete_ids(&self, name: &str, ids: Vec<PointId>) -> Result<usize, ApiError> {
        let c = self.collection(name).await?;
        let mut parts: BTreeMap<u32, Vec<PointId>> = BTreeMap::new();
        for id in ids {
            parts
                .entry(shard_of(name, &id, c.shards))
                .or_default()
                .push(id);
        }
        let futs = parts.into_iter().map(|(s, ids)| {
            self.vector_write(
                shard_group(s),
                VectorCommand::DeleteIds {
                    collection: name.into(),
                    uid: c.uid,
                    ids,
                },
            )
        });
        let mut n = 0;
        for r in futures::future::join_all(futs).await {
            if let VectorResponse::Deleted { count } = r? {
                n += count;
            }
        }
        Ok(n)
    }

    /// Deletes the points matching `filter` in every shard; each shard
    /// evaluates it in apply, on its state.
    pub async fn delete_filter(&self, name: &str, filter: Value) -> Result<usize, ApiError> {
        Filter::parse(&filter).map_err(|m| ApiError::bad("invalid_filter", m))?;
        let c = self.collection(name).await?;
        let text = filter.to_string();
        let futs = (0..c.shards).map(|s| {
            self.vector_write(
                shard_group(s),
                VectorCommand::DeleteFilter {
                    collection: name.into(),
                    uid: c.uid,
                    filter: text.clone(),
                },
            )
        });
        let mut n = 0;
        for r in futures::future::join_all(futs).await {
            if let VectorResponse::Deleted { count } = r? {
                n += count;
            }
        }
        Ok(n)
    }

    /// Scatters to every shard of the collection (each read served like a
    /// KV read: linearizable through the shard leader unless `stale`), and
    /// merges the top k.
    pub async fn search(
        &self,
        name: &str,
        spec: SearchSpec,
        linearizable: bool,
    ) -> Result<Vec<Hit>, ApiError> {
        let c = self.collection(name).await?;
        self.search_in(&c, spec, linearizable).await
    }

    pub async fn search_in(
        &self,
        c: &CollectionConfig,
        spec: SearchSpec,
        linearizable: bool,
    ) -> Result<Vec<Hit>, ApiError> {
        if spec.k == 0 || spec.k > MAX_K {
            return Err(ApiError::bad(
                "invalid_k",
                format!("k must be 1..={MAX_K}, got {}", spec.k),
            ));
        }
        if let Some(ef) = spec.ef {
            if ef == 0 || ef > orrery_vector::MAX_EF {
                return Err(ApiError::bad(
                    "invalid_ef",
                    format!("ef must be 1..={}, got {ef}", orrery_vector::MAX_EF),
                ));
            }
        }
        c.check_vector(&spec.vector)
            .map_err(|m| ApiError::bad("invalid_vector", format!("vector {m}")))?;
        let filter = match &spec.filter {
            None | Some(Value::Null) => None,
            Some(f) => {
                Filter::parse(f).map_err(|m| ApiError::bad("invalid_filter", m))?;
                Some(f.to_string())
            }
        };
        let req = SearchRequest {
            collection: c.name.clone(),
            uid: c.uid,
            metric: c.metric,
            vector: spec.vector,
            k: spec.k,
            ef: spec.ef.unwrap_or(c.ef_search),
            exact: spec.exact,
            filter,
            with_payload: spec.with_payload,
            with_vector: spec.with_vector,
        };
        let futs = (0..c.shards).map(|s| {
            let q = Query::VectorSearch(Box::new(req.clone()));
            async move { self.read(shard_group(s), q, linearizable).await }
        });
        let mut hits = Vec::new();
        for r in futures::future::join_all(futs).await {
            match r? {
                QueryResult::VectorSearch(Ok(mut h)) => hits.append(&mut h),
                QueryResult::VectorSearch(Err(e)) => return Err(vector_error(e)),
                other => return Err(unexpected(other)),
            }
        }
        hits.sort_by(|a, b| c.metric.cmp_hits(a, b));
        hits.truncate(req.k);
        Ok(hits)
    }
}
