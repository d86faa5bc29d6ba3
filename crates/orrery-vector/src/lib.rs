//! The vector domain module.
//!
//! * The placement group holds the **catalog**: collection name → config.
//! * Shard groups hold **points**: a point lives in the shard
//!   `stable_hash(collection, id) % collection.shards`.
//!
//! `apply` is a pure function of the command, the log index and the prior
//! state. The approximate index is derived data: it lives next to the state
//! (skipped by serde and equality), is fed by `apply` over a channel and
//! built by a background thread (see [`index`]).
//!
//! Scores: `cosine` is the cosine similarity (higher is better, in [-1, 1]);
//! `dot` the inner product (higher is better); `l2` the Euclidean distance
//! (lower is better).

mod apply;
pub mod filter;
pub mod hnsw;
#[cfg(feature = "hnsw_rs")]
pub mod hnsw_rs_index;
pub mod index;
pub mod payload_index;
pub mod persist;
mod shard;
mod view;
pub use view::SearchView;

use filter::Filter;
use index::IndexHandle;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const MAX_DIM: usize = 4096;
/// Beyond this, neighbour lists cost more than they help (and hnsw_rs,
/// still in the benchmark, calls `process::exit` above 256).
pub const MAX_M: usize = 256;
pub const MAX_EF: usize = 10_000;
pub const MAX_K: usize = 1000;
/// Shards with fewer live points than this are searched exactly.
pub const EXACT_BELOW: usize = 512;
/// Filtered searches matching fewer points than this (per shard) are exact.
pub const FILTER_EXACT_BELOW: usize = 2000;
/// Rebuild once stale index entries exceed this many, and a quarter of the live points.
pub const REBUILD_STALE_MIN: u64 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Cosine,
    L2,
    Dot,
}

impl Metric {
    pub fn parse(s: &str) -> Option<Metric> {
        match s {
            "cosine" => Some(Metric::Cosine),
            "l2" => Some(Metric::L2),
            "dot" => Some(Metric::Dot),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
            Metric::Dot => "dot",
        }
    }

    /// The score reported to clients.
    pub fn score(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::Dot => dot(a, b),
            Metric::L2 => a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>()
                .sqrt(),
            Metric::Cosine => {
                let n = norm(a) * norm(b);
                if n == 0.0 {
                    0.0
                } else {
                    dot(a, b) / n
                }
            }
        }
    }

    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::L2)
    }

    /// Orders hits best first; ties by id so results are deterministic.
    pub fn cmp_hits(self, a: &Hit, b: &Hit) -> std::cmp::Ordering {
        let o = a.score.total_cmp(&b.score);
        let o = if self.higher_is_better() {
            o.reverse()
        } else {
            o
        };
        o.then_with(|| a.id.cmp(&b.id))
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

pub fn normalized(v: &[f32]) -> Vec<f32> {
    let n = norm(v);
    if n == 0.0 {
        v.to_vec()
    } else {
        v.iter().map(|x| x / n).collect()
    }
}

/// A point id: an unsigned integer or a UUID (stored lower-case).
/// Serialized externally tagged (bincode cannot read untagged enums); the
/// JSON fronts use [`PointId::to_json`] / [`PointId::from_json`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PointId {
    Num(u64),
    Uuid(String),
}

impl PointId {
    pub fn from_json(v: &Value) -> Result<PointId, String> {
        match v {
            Value::Number(n) => n
                .as_u64()
                .map(PointId::Num)
                .ok_or_else(|| format!("must be an unsigned integer or a UUID string, got {n}")),
            Value::String(s) => PointId::parse_str(s),
            other => Err(format!(
                "must be an unsigned integer or a UUID string, got {other}"
            )),
        }
    }

    /// Parses a path segment: digits are a number, otherwise a UUID.
    pub fn parse_str(s: &str) -> Result<PointId, String> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(PointId::Num)
                .map_err(|_| format!("{s:?} does not fit in 64 bits"));
        }
        let b = s.as_bytes();
        let ok = b.len() == 36
            && b.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_hexdigit(),
            });
        if ok {
            Ok(PointId::Uuid(s.to_ascii_lowercase()))
        } else {
            Err(format!(
                "{s:?} is neither an unsigned integer nor a UUID (8-4-4-4-12 hex)"
            ))
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            PointId::Num(n) => Value::from(*n),
            PointId::Uuid(s) => Value::from(s.clone()),
        }
    }

    fn hash_bytes(&self) -> Vec<u8> {
        match self {
            PointId::Num(n) => format!("n:{n}").into_bytes(),
            PointId::Uuid(u) => format!("u:{u}").into_bytes(),
        }
    }
}

impl std::fmt::Display for PointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PointId::Num(n) => write!(f, "{n}"),
            PointId::Uuid(u) => write!(f, "{u}"),
        }
    }
}

/// The shard of a point: stable across processes and versions.
pub fn shard_of(collection: &str, id: &PointId, shards: u32) -> u32 {
    let mut key = collection.as_bytes().to_vec();
    key.push(0);
    key.extend(id.hash_bytes());
    (orrery_types::stable_hash(&key) % u64::from(shards.max(1))) as u32
}

/// A collection's definition, kept in the placement group's catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionConfig {
    pub name: String,
    pub dim: usize,
    pub metric: Metric,
    pub shards: u32,
    pub replication: u32,
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    /// The placement log index that created it. Shard data written for an
    /// older incarnation of the same name is discarded (drop + re-create).
    pub uid: u64,
}

impl CollectionConfig {
    /// Checks everything before it can reach the index. `cluster_shards` bounds
    /// `shards`; `max_replicas` bounds `replication`.
    pub fn validate(&self, cluster_shards: u32, max_replicas: u32) -> Result<(), (String, String)> {
        let bad = |f: &str, m: String| Err((f.to_string(), m));
        let n = &self.name;
        if n.is_empty()
            || n.len() > 128
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return bad(
                "name",
                format!("name must be 1-128 characters of [A-Za-z0-9_-], got {n:?}"),
            );
        }
        if self.dim == 0 || self.dim > MAX_DIM {
            return bad(
                "dim",
                format!("dim must be 1..={MAX_DIM}, got {}", self.dim),
            );
        }
        if self.shards == 0 || self.shards > cluster_shards {
            return bad(
                "shards",
                format!(
                    "shards must be 1..={cluster_shards} (the cluster's shard count), got {}",
                    self.shards
                ),
            );
        }
        if self.replication == 0 || self.replication > max_replicas {
            return bad(
                "replication",
                format!(
                    "replication must be 1..={max_replicas}, got {}",
                    self.replication
                ),
            );
        }
        if self.m < 2 || self.m > MAX_M {
            return bad("m", format!("m must be 2..={MAX_M}, got {}", self.m));
        }
        if self.ef_construction < 1 || self.ef_construction > MAX_EF {
            return bad(
                "ef_construction",
                format!(
                    "ef_construction must be 1..={MAX_EF}, got {}",
                    self.ef_construction
                ),
            );
        }
        if self.ef_search < 1 || self.ef_search > MAX_EF {
            return bad(
                "ef_search",
                format!("ef_search must be 1..={MAX_EF}, got {}", self.ef_search),
            );
        }
        Ok(())
    }

    /// Checks one vector against the collection: dimension, finiteness and
    /// (for cosine) a non-zero norm.
    pub fn check_vector(&self, v: &[f32]) -> Result<(), String> {
        if v.len() != self.dim {
            return Err(format!(
                "has {} components; collection {:?} has dim {}",
                v.len(),
                self.name,
                self.dim
            ));
        }
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(format!("component {i} is not a finite number"));
        }
        if self.metric == Metric::Cosine && v.iter().all(|x| *x == 0.0) {
            return Err("is the zero vector, which has no cosine similarity".into());
        }
        Ok(())
    }
}

/// A vector; equality compares bits, so that state equality is total.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Vector(pub Vec<f32>);

impl PartialEq for Vector {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}
impl Eq for Vector {}

/// Payloads travel as JSON text: bincode cannot carry `serde_json::Value`.
mod json_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::{Map, Value};

    pub fn serialize<S: Serializer>(m: &Map<String, Value>, s: S) -> Result<S::Ok, S::Error> {
        serde_json::to_string(m)
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
        let s = String::deserialize(d)?;
        serde_json::from_str(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    pub id: PointId,
    pub vector: Vector,
    #[serde(with = "json_text")]
    pub payload: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPoint {
    pub vector: Vector,
    #[serde(with = "json_text")]
    pub payload: Map<String, Value>,
    /// The log index that wrote it.
    pub rev: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VectorCommand {
    /// Placement group: add a collection (its `uid` is set by apply).
    CreateCollection(CollectionConfig),
    /// Placement group: remove a collection from the catalog.
    DropCollection { name: String },
    /// Shard group: insert or replace points.
    Upsert {
        collection: String,
        uid: u64,
        metric: Metric,
        m: usize,
        ef_construction: usize,
        points: Vec<Point>,
    },
    DeleteIds {
        collection: String,
        uid: u64,
        ids: Vec<PointId>,
    },
    /// The filter as JSON text, evaluated against the state in apply.
    DeleteFilter {
        collection: String,
        uid: u64,
        filter: String,
    },
    /// Shard group: forget a collection's points.
    DropData { collection: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VectorResponse {
    Created(CollectionConfig),
    Dropped { existed: bool },
    Upserted { count: usize },
    Deleted { count: usize },
    Rejected(VectorError),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum VectorError {
    #[error("collection {0:?} already exists with a different definition")]
    AlreadyExists(String),
    #[error("collection {0:?} was dropped or re-created meanwhile; retry")]
    Stale(String),
    #[error("invalid: {0}")]
    Invalid(String),
}

/// A shard's points: a persistent ordered map, so that a clone (a search's
/// view, see [`SearchView`]) costs O(1) and apply, changing the map while
/// a view lives, copies only the paths it touches. Each value is behind an
/// `Arc` so that such a path copy clones pointers, not vectors. Serialized
/// exactly as the `BTreeMap<PointId, StoredPoint>` it replaced (a map of
/// its length and then its entries in key order; `Arc<T>` serializes as
/// `T`), so snapshots keep their format (`tests_view.rs` checks the bytes).
pub type Points = imbl::OrdMap<PointId, Arc<StoredPoint>>;

/// One collection's points on one shard replica.
///
/// Cloning one is cheap (persistent maps and `Arc`s): that clone is the
/// consistent view a search takes under the state lock.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct ShardCollection {
    pub uid: u64,
    pub metric: Option<Metric>,
    pub m: usize,
    pub ef_construction: usize,
    pub points: Points,
    /// The last log index that changed this collection here.
    pub last_rev: u64,
    #[serde(skip)]
    pub index: Option<Arc<IndexHandle>>,
    /// Which points hold which payload values (derived, like `index`).
    #[serde(skip, default = "payload_index::PayloadIndex::unbuilt")]
    pub payload_index: payload_index::PayloadIndex,
}

impl PartialEq for ShardCollection {
    fn eq(&self, o: &Self) -> bool {
        // The index is derived: never part of equality.
        self.uid == o.uid
            && self.metric == o.metric
            && self.m == o.m
            && self.ef_construction == o.ef_construction
            && self.points == o.points
            && self.last_rev == o.last_rev
    }
}
impl Eq for ShardCollection {}

impl std::fmt::Debug for ShardCollection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardCollection")
            .field("uid", &self.uid)
            .field("points", &self.points.len())
            .field("last_rev", &self.last_rev)
            .finish()
    }
}

/// The vector state of one group: the catalog (placement group) and the
/// points (shard groups).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VectorState {
    pub catalog: BTreeMap<String, CollectionConfig>,
    pub data: BTreeMap<String, ShardCollection>,
    /// Whether derived indexes are built (off in property tests).
    #[serde(skip)]
    pub no_index: bool,
}

/// One search against one shard.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchRequest {
    pub collection: String,
    pub uid: u64,
    pub metric: Metric,
    pub vector: Vec<f32>,
    pub k: usize,
    pub ef: usize,
    pub exact: bool,
    /// Filter JSON text (validated by the caller).
    pub filter: Option<String>,
    pub with_payload: bool,
    pub with_vector: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub id: PointId,
    pub score: f32,
    #[serde(with = "opt_json_text")]
    pub payload: Option<Map<String, Value>>,
    pub vector: Option<Vec<f32>>,
}

mod opt_json_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::{Map, Value};

    pub fn serialize<S: Serializer>(
        m: &Option<Map<String, Value>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        m.as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Map<String, Value>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(serde::de::Error::custom)
    }
}

/// How a shard answered, for tests and diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SearchMode {
    Exact,
    Index,
    /// The index under-filled and exact search completed the answer.
    IndexThenExact,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardInfo {
    pub points: usize,
    pub index: String,
    pub indexed_entries: usize,
}

impl VectorState {
    pub fn get_point(&self, collection: &str, uid: u64, id: &PointId) -> Option<&StoredPoint> {
        self.data
            .get(collection)
            .filter(|c| c.uid == uid)
            .and_then(|c| c.points.get(id))
            .map(|p| &**p)
    }

    pub fn shard_info(&self, collection: &str, uid: u64) -> ShardInfo {
        match self.data.get(collection).filter(|c| c.uid == uid) {
            None => ShardInfo {
                points: 0,
                index: "ready".into(),
                indexed_entries: 0,
            },
            Some(c) => {
                let (state, entries) = match &c.index {
                    None if c.points.is_empty() => ("ready".to_string(), 0),
                    None => ("none".to_string(), 0),
                    Some(h) => {
                        let s = h.shared.state.load(std::sync::atomic::Ordering::Acquire);
                        let n = h.shared.entries.read().map(|e| e.len()).unwrap_or(0);
                        let name = if s == index::READY && !h.current(c.last_rev) {
                            "catching_up"
                        } else {
                            index::state_name(s)
                        };
                        (name.to_string(), n)
                    }
                };
                ShardInfo {
                    points: c.points.len(),
                    index: state,
                    indexed_entries: entries,
                }
            }
        }
    }

    /// Searches this shard (a view taken and searched at once; see
    /// [`VectorState::view`]).
    pub fn search(&self, req: &SearchRequest) -> Result<(Vec<Hit>, SearchMode), VectorError> {
        Ok(self.view(req)?.run())
    }

    /// A consistent view of what `req` searches, for searching after the
    /// caller has released the state's lock: O(1) (a clone of persistent
    /// maps and `Arc`s), never a copy of the points. A bad filter fails
    /// here, as the search would.
    pub fn view(&self, req: &SearchRequest) -> Result<SearchView, VectorError> {
        let filter = match &req.filter {
            None => None,
            Some(text) => Some(
                serde_json::from_str::<Value>(text)
                    .map_err(|e| e.to_string())
                    .and_then(|v| Filter::parse(&v))
                    .map_err(VectorError::Invalid)?,
            ),
        };
        Ok(SearchView {
            req: req.clone(),
            filter,
            collection: self
                .data
                .get(&req.collection)
                .filter(|c| c.uid == req.uid)
                .cloned(),
        })
    }

    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        let bytes = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .map_err(|e| e.to_string())?;
        // Save current indexes next to the snapshot (a cache: see
        // `persist`; written by the indexer threads, not here).
        for (name, c) in &self.data {
            persist::request(name, c);
        }
        Ok(bytes)
    }

    /// Restores the state and starts rebuilding every collection's index;
    /// searches are exact until each is ready.
    pub fn restore(data: &[u8]) -> Result<Self, String> {
        let mut s: VectorState =
            bincode::serde::decode_from_slice(data, bincode::config::standard())
                .map(|(v, _)| v)
                .map_err(|e| format!("vector snapshot: {e}"))?;
        for (name, c) in s.data.iter_mut() {
            c.build_payload_index();
            if c.points.is_empty() {
                continue;
            }
            match (persist::load(name, c), c.metric) {
                (Some(loaded), Some(metric)) => {
                    let h = IndexHandle::spawn_loaded(
                        metric,
                        c.m.max(2),
                        c.ef_construction.max(1),
                        loaded,
                        c.last_rev,
                    );
                    persist::claim_loaded(Arc::as_ptr(&h) as usize, name, c);
                    c.index = Some(h);
                }
                _ => c.rebuild(c.last_rev),
            }
        }
        Ok(s)
    }

    /// The same state without derived indexes (for tests).
    pub fn restore_without_index(data: &[u8]) -> Result<Self, String> {
        bincode::serde::decode_from_slice::<VectorState, _>(data, bincode::config::standard())
            .map(|(mut v, _)| {
                v.no_index = true;
                for c in v.data.values_mut() {
                    c.build_payload_index();
                }
                v
            })
            .map_err(|e| format!("vector snapshot: {e}"))
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_index;
#[cfg(test)]
mod tests_liveness;
#[cfg(test)]
mod tests_payload_index;
#[cfg(test)]
mod tests_persist;
#[cfg(test)]
mod tests_view;
