//! Points: each lives in shard `shard_of(collection, id)`, so batches are
//! split per shard and each part written to (or read from) its group.

use super::VectorsService;
use crate::api::limits::MAX_VECTOR_BATCH_POINTS;
use crate::api::ApiError;
use crate::node::typed::VectorGet;
use orrery_types::shard_group;
use orrery_vector::filter::Filter;
use orrery_vector::{shard_of, Point, PointId, StoredPoint, VectorCommand, VectorResponse};
use serde_json::Value;
use std::collections::BTreeMap;

/// Target size of one replicated upsert command: one AppendEntries must
/// finish within a heartbeat interval.
const UPSERT_ENTRY_BYTES: usize = 128 * 1024;

impl VectorsService {
    /// Upserts a batch: split per shard, each part written to its group.
    /// Returns how many points were written.
    pub async fn upsert_points(&self, name: &str, points: Vec<Point>) -> Result<usize, ApiError> {
        let c = self.collection(name).await?;
        if points.len() > MAX_VECTOR_BATCH_POINTS {
            return Err(ApiError::TooLarge(format!(
                "points has {} entries; the limit is {MAX_VECTOR_BATCH_POINTS} per request",
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
        // Each shard's part goes as a sequence of commands of about
        // UPSERT_ENTRY_BYTES, shards in parallel.
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
                    .write(
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

    /// One point, read through its shard's leader; 404 when absent.
    pub async fn get_point(&self, name: &str, id: PointId) -> Result<StoredPoint, ApiError> {
        let c = self.collection(name).await?;
        let q = VectorGet {
            collection: name.into(),
            uid: c.uid,
            id: id.clone(),
        };
        self.node
            .read(shard_group(shard_of(name, &id, c.shards)), q, true)
            .await?
            .ok_or_else(|| {
                ApiError::NotFound(format!("point {id} does not exist in collection {name:?}"))
            })
    }

    /// Deletes points by id; returns how many existed.
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
            self.write(
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
    /// evaluates it in apply, on its state. Returns how many it deleted.
    pub async fn delete_filter(&self, name: &str, filter: Value) -> Result<usize, ApiError> {
        Filter::parse(&filter).map_err(|m| ApiError::bad("invalid_filter", m))?;
        let c = self.collection(name).await?;
        let text = filter.to_string();
        let futs = (0..c.shards).map(|s| {
            self.write(
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
}
