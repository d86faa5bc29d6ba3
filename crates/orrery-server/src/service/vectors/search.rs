//! Search: validated once here, scattered to every shard of the collection
//! (each read served like a KV read: linearizable through the shard leader
//! unless stale), and the shards' top k merged.

use super::{collection_at, VectorsService};
use crate::api::ApiError;
use crate::node::typed::VectorSearch;
use crate::node::Node;
use orrery_types::shard_group;
use orrery_vector::filter::Filter;
use orrery_vector::{CollectionConfig, Hit, SearchRequest, MAX_EF, MAX_K};
use serde_json::{json, Value};

/// One search as a client gave it (the fronts only check types).
pub struct SearchSpec {
    pub vector: Vec<f32>,
    pub k: usize,
    /// Overrides the collection's `ef_search`.
    pub ef: Option<usize>,
    pub exact: bool,
    /// A filter in its JSON form; `null` is none.
    pub filter: Option<Value>,
    pub with_payload: bool,
    pub with_vector: bool,
}

/// Hits in their JSON form, best first: what REST answers and what a
/// policy's vector lookup sees.
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

/// Checks `spec` against `c` and builds the request every shard runs.
fn request(c: &CollectionConfig, spec: SearchSpec) -> Result<SearchRequest, ApiError> {
    if spec.k == 0 || spec.k > MAX_K {
        return Err(ApiError::bad(
            "invalid_k",
            format!("k must be 1..={MAX_K}, got {}", spec.k),
        ));
    }
    if let Some(ef) = spec.ef {
        if ef == 0 || ef > MAX_EF {
            return Err(ApiError::bad(
                "invalid_ef",
                format!("ef must be 1..={MAX_EF}, got {ef}"),
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
    Ok(SearchRequest {
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
    })
}

/// Searches collection `c`: every shard, top k merged. A free function over
/// a borrowed node because the policy engine's lookups use it too (see
/// `vectors_compat`).
async fn search_in(
    node: &Node,
    c: &CollectionConfig,
    spec: SearchSpec,
    linearizable: bool,
) -> Result<Vec<Hit>, ApiError> {
    let req = request(c, spec)?;
    let futs = (0..c.shards).map(|s| {
        let q = VectorSearch(Box::new(req.clone()));
        node.read(shard_group(s), q, linearizable)
    });
    let mut hits = Vec::new();
    for r in futures::future::join_all(futs).await {
        hits.append(&mut r??);
    }
    hits.sort_by(|a, b| c.metric.cmp_hits(a, b));
    hits.truncate(req.k);
    Ok(hits)
}

impl VectorsService {
    /// Searches collection `name` (see [`search_in`]).
    pub async fn search(
        &self,
        name: &str,
        spec: SearchSpec,
        linearizable: bool,
    ) -> Result<Vec<Hit>, ApiError> {
        let c = collection_at(&self.node, name, linearizable).await?;
        search_in(&self.node, &c, spec, linearizable).await
    }

    /// Several searches of one collection, run concurrently; the first
    /// failing one (in input order) fails them all.
    pub async fn search_batch(
        &self,
        name: &str,
        specs: Vec<SearchSpec>,
        linearizable: bool,
    ) -> Result<Vec<Vec<Hit>>, ApiError> {
        let c = collection_at(&self.node, name, linearizable).await?;
        let futs = specs
            .into_iter()
            .map(|s| search_in(&self.node, &c, s, linearizable));
        futures::future::join_all(futs).await.into_iter().collect()
    }
}
