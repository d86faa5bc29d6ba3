//! Vector collections: the catalog lives in the placement group, each
//! collection's points in the shard groups (`points`), and a search
//! scatters to every shard and merges the top k (`search`).

mod points;
mod search;

pub use search::{hits_json, SearchSpec};

use crate::api::ApiError;
use crate::node::typed::{VectorCatalog, VectorInfo};
use crate::node::Node;
use orrery_types::{shard_group, GroupId, MAX_REPLICAS, PLACEMENT_GROUP};
use orrery_vector::{CollectionConfig, Metric, ShardInfo, VectorCommand, VectorResponse};
use std::collections::BTreeMap;
use std::sync::Arc;

/// HNSW defaults of a new collection (docs/api.md, "Vector collections").
const DEFAULT_M: usize = 16;
const DEFAULT_EF_CONSTRUCTION: usize = 200;
const DEFAULT_EF_SEARCH: usize = 64;

pub struct VectorsService {
    node: Arc<Node>,
}

/// A collection to create, as a client gave it: `None` takes the default.
pub struct NewCollection {
    pub name: String,
    pub dim: usize,
    /// `cosine` (the default), `l2` or `dot`.
    pub metric: Option<String>,
    /// Default: [`DEFAULT_SHARDS`].
    pub shards: Option<u32>,
    /// Default: [`MAX_REPLICAS`].
    pub replication: Option<u32>,
    pub m: Option<usize>,
    pub ef_construction: Option<usize>,
    pub ef_search: Option<usize>,
}

/// The shard count of a collection created without one: a single shard.
/// Every search scatters to all of a collection's shards, and each shard
/// costs a walk, a read confirmation and a merge whatever its size, so
/// shards pay only when one is too large for its nodes or its writes: a
/// shard's point count should be large. Measured on 100 000 real
/// embeddings (docs/benchmarks.md), one shard answered 1.5–2.3× the queries
/// per second of one shard per node, at one client and at sixteen. Like
/// Elasticsearch (one primary shard by default since 7.0), a collection
/// expected to outgrow one shard group's nodes sets `shards` itself; the
/// count is fixed at creation.
pub const DEFAULT_SHARDS: u32 = 1;

fn unexpected(r: VectorResponse) -> ApiError {
    ApiError::Internal(format!("unexpected vector response {r:?}"))
}

/// The collection `name` from the catalog (linearizable: a collection just
/// created through another node is found). A free function over a borrowed
/// node because the policy engine's lookups use it too (see
/// `vectors_compat`).
async fn collection(node: &Node, name: &str) -> Result<CollectionConfig, ApiError> {
    node.read(PLACEMENT_GROUP, VectorCatalog, true)
        .await?
        .remove(name)
        .ok_or_else(|| ApiError::NotFound(format!("collection {name:?} does not exist")))
}

/// The collection `name` for a search at this consistency. Linearizable:
/// [`collection`]. Stale: this node's own placement replica, like the
/// shard reads that follow (no network hop, no read-index round), and
/// through the placement leader only when that replica does not know the
/// name (so a collection just created through another node is found).
async fn collection_at(
    node: &Node,
    name: &str,
    linearizable: bool,
) -> Result<CollectionConfig, ApiError> {
    if !linearizable {
        let local = node
            .placement_group()
            .and_then(|g| g.sm.read(|s| s.vector.catalog.get(name).cloned()));
        if let Some(c) = local {
            return Ok(c);
        }
    }
    collection(node, name).await
}

impl VectorsService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// Replicates `cmd` through `group`; a state machine's refusal is an error.
    async fn write(&self, group: GroupId, cmd: VectorCommand) -> Result<VectorResponse, ApiError> {
        match self.node.write(group, cmd).await? {
            VectorResponse::Rejected(e) => Err(e.into()),
            r => Ok(r),
        }
    }

    /// Every collection, by name.
    pub async fn catalog(&self) -> Result<BTreeMap<String, CollectionConfig>, ApiError> {
        self.node.read(PLACEMENT_GROUP, VectorCatalog, true).await
    }

    pub async fn collection(&self, name: &str) -> Result<CollectionConfig, ApiError> {
        collection(&self.node, name).await
    }

    /// Fills in the defaults, validates, and adds the collection to the
    /// catalog. Creating an existing one with the same definition returns it.
    pub async fn create_collection(&self, n: NewCollection) -> Result<CollectionConfig, ApiError> {
        let metric = match n.metric.as_deref() {
            None => Metric::Cosine,
            Some(s) => Metric::parse(s).ok_or_else(|| {
                ApiError::bad(
                    "invalid_metric",
                    format!("metric must be cosine, l2 or dot, got {s:?}"),
                )
            })?,
        };
        let cluster_shards = self.node.shard_groups()?.len() as u32;
        let shards = n.shards.unwrap_or(DEFAULT_SHARDS);
        let c = CollectionConfig {
            name: n.name,
            dim: n.dim,
            metric,
            shards,
            replication: n.replication.unwrap_or(MAX_REPLICAS as u32),
            m: n.m.unwrap_or(DEFAULT_M),
            ef_construction: n.ef_construction.unwrap_or(DEFAULT_EF_CONSTRUCTION),
            ef_search: n.ef_search.unwrap_or(DEFAULT_EF_SEARCH),
            uid: 0,
        };
        c.validate(cluster_shards, MAX_REPLICAS as u32)
            .map_err(|(field, msg)| ApiError::bad(&format!("invalid_{field}"), msg))?;
        match self
            .write(PLACEMENT_GROUP, VectorCommand::CreateCollection(c))
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
        self.write(
            PLACEMENT_GROUP,
            VectorCommand::DropCollection { name: name.into() },
        )
        .await?;
        let futs = (0..c.shards).map(|s| {
            self.write(
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

    /// Each shard's points and index state, in shard order, from this
    /// node's replicas (or the leader's where it hosts none).
    pub async fn collection_shards(
        &self,
        c: &CollectionConfig,
    ) -> Result<Vec<ShardInfo>, ApiError> {
        let futs = (0..c.shards).map(|s| {
            let q = VectorInfo {
                collection: c.name.clone(),
                uid: c.uid,
            };
            self.node.read(shard_group(s), q, false)
        });
        futures::future::join_all(futs).await.into_iter().collect()
    }
}
