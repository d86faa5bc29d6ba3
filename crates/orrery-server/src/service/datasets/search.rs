//! Text search over a dataset (`POST /v1/datasets/{name}/search`): the
//! query text is embedded by the same external worker that embeds the
//! items' captions (a `text.embed` job `{"texts": [text]}` in the embed
//! queue, waited for within a bound), then the dataset's embeddings
//! collection is searched and the hits are answered as items.
//!
//! The embedding goes through a worker rather than the server because the
//! model is the worker's (Python, docs/pipelines.md): the server never
//! loads one, and query and item vectors come from the same code.

use super::{DatasetsService, EMBED_DIM, EMBED_KIND};
use crate::api::ApiError;
use crate::auth::Caller;
use crate::service::jobs::SubmitArgs;
use crate::service::vectors::SearchSpec;
use orrery_dataset::{check_name, Item};
use orrery_queue::JobState;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Most results a search answers.
pub const MAX_SEARCH_K: usize = 100;
/// How long a search waits for the query's embedding by default, and at most.
pub const DEFAULT_EMBED_TIMEOUT_MS: u64 = 10_000;
pub const MAX_EMBED_TIMEOUT_MS: u64 = 60_000;
/// Longest query text (bytes): a caption's limit.
pub const MAX_TEXT: usize = orrery_dataset::MAX_CAPTION;
/// Query embeddings jump the embed queue's backlog of pipeline jobs: a
/// person is waiting for them.
const QUERY_PRIORITY: i32 = 1000;

/// A search as a client gave it.
pub struct TextSearch {
    pub text: String,
    pub k: Option<usize>,
    pub filter: Option<Value>,
    pub timeout_ms: Option<u64>,
    pub queue: Option<String>,
    pub collection: Option<String>,
}

/// One answer: the item (as the catalog has it now) and its score.
pub struct SearchHit {
    pub item: Item,
    pub score: f32,
}

pub struct SearchResult {
    pub hits: Vec<SearchHit>,
    pub collection: String,
    /// How long the query's embedding took.
    pub embed_ms: u64,
}

/// The caller's filter with the dataset's own condition added to its
/// `must`: a collection may hold the points of several datasets.
fn scoped_filter(dataset: &str, filter: Option<Value>) -> Result<Value, ApiError> {
    let own = json!({"key": "dataset", "match": dataset});
    match filter {
        None | Some(Value::Null) => Ok(json!({"must": [own]})),
        Some(Value::Object(mut f)) => {
            match f.get_mut("must") {
                None => {
                    f.insert("must".into(), json!([own]));
                }
                Some(Value::Array(m)) => m.push(own),
                Some(_) => {
                    return Err(ApiError::bad(
                        "invalid_filter",
                        "filter.must must be a list of conditions",
                    ))
                }
            }
            Ok(Value::Object(f))
        }
        Some(_) => Err(ApiError::bad(
            "invalid_filter",
            "filter must be an object ({\"must\", \"should\", \"must_not\"})",
        )),
    }
}

impl DatasetsService {
    pub async fn search(
        &self,
        name: &str,
        s: TextSearch,
        caller: &Caller,
    ) -> Result<SearchResult, ApiError> {
        check_name(name).map_err(|m| ApiError::bad("invalid_name", m))?;
        let text = s.text.trim();
        if text.is_empty() || s.text.len() > MAX_TEXT {
            return Err(ApiError::bad(
                "invalid_text",
                format!("text must be 1..={MAX_TEXT} bytes, not blank"),
            ));
        }
        let k = s.k.unwrap_or(10);
        if !(1..=MAX_SEARCH_K).contains(&k) {
            return Err(ApiError::bad(
                "invalid_k",
                format!("k must be 1..={MAX_SEARCH_K}, got {k}"),
            ));
        }
        let timeout_ms = s.timeout_ms.unwrap_or(DEFAULT_EMBED_TIMEOUT_MS);
        if !(1..=MAX_EMBED_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(ApiError::bad(
                "invalid_timeout",
                format!("timeout_ms must be 1..={MAX_EMBED_TIMEOUT_MS}, got {timeout_ms}"),
            ));
        }
        let filter = scoped_filter(name, s.filter)?;
        orrery_vector::filter::Filter::parse(&filter)
            .map_err(|m| ApiError::bad("invalid_filter", m))?;
        let queue = s
            .queue
            .unwrap_or_else(|| super::DEFAULT_PIPELINE_QUEUE.into());
        crate::service::jobs::check_name("queue", &queue)?;
        caller.check_queue(&queue)?;
        self.get(name).await?;
        let collection = s
            .collection
            .unwrap_or_else(|| super::default_collection(name));
        let c = self
            .vectors
            .collection(&collection)
            .await
            .map_err(|e| match e {
                ApiError::NotFound(_) => ApiError::NotFound(format!(
                "dataset {name:?} has no embeddings yet: collection {collection:?} does not exist \
                 (run the pipeline with an embed step, docs/pipelines.md)"
            )),
                e => e,
            })?;
        if c.dim != EMBED_DIM {
            return Err(ApiError::Conflict(format!(
                "collection {collection:?} has dim {}; text.embed vectors have {EMBED_DIM}",
                c.dim
            )));
        }
        let started = Instant::now();
        let vector = self
            .embed_query(text, &queue, Duration::from_millis(timeout_ms), caller)
            .await?;
        let embed_ms = started.elapsed().as_millis() as u64;
        let spec = SearchSpec {
            vector,
            k,
            ef: None,
            exact: false,
            filter: Some(filter),
            with_payload: true,
            with_vector: false,
        };
        let found = self.vectors.search(&collection, spec, true).await?;
        let mut hits = Vec::with_capacity(found.len());
        for h in found {
            let Some(path) = h
                .payload
                .as_ref()
                .and_then(|p| p.get("path"))
                .and_then(Value::as_str)
            else {
                continue;
            };
            // The catalog's item, not the payload: its caption and
            // thumbnail are current, and an item removed by a re-scan
            // since is no answer.
            if let Some(item) = self.item(name, path).await? {
                hits.push(SearchHit {
                    item,
                    score: h.score,
                });
            }
        }
        Ok(SearchResult {
            hits,
            collection,
            embed_ms,
        })
    }

    /// Submits `{"texts": [text]}` to the embed queue and waits for its
    /// vector. No worker within `wait` (or a missing queue): 503, and the
    /// job is cancelled so that a worker starting later does not do it.
    async fn embed_query(
        &self,
        text: &str,
        queue: &str,
        wait: Duration,
        caller: &Caller,
    ) -> Result<Vec<f32>, ApiError> {
        let no_worker = |why: String| {
            ApiError::Unavailable(format!(
                "{why}; start an embed worker on it (orrery-embed-worker --queue {queue}, \
                 docs/pipelines.md) and retry"
            ))
        };
        let args = SubmitArgs {
            queue: queue.to_string(),
            kind: EMBED_KIND.into(),
            params: json!({"texts": [text]}),
            priority: QUERY_PRIORITY,
            run_at_ms: None,
            delay_ms: None,
            resources: Default::default(),
            dedupe_key: None,
            submitted_by: Some(caller.name.clone()),
            caller: None,
        };
        let job = match self.jobs.submit(args).await {
            Ok((job, _)) => job,
            Err(ApiError::NotFound(_)) => {
                return Err(no_worker(format!("there is no embed queue {queue:?}")))
            }
            Err(e) => return Err(e),
        };
        let id = job.id.to_string();
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(5);
        loop {
            let j = self.jobs.get_job(&id).await?;
            match j.state {
                JobState::Succeeded => return query_vector(j.result.as_deref()),
                JobState::Failed | JobState::Dead | JobState::Cancelled => {
                    return Err(ApiError::Unavailable(format!(
                        "the embed worker did not embed the query (job {id} {}: {})",
                        j.state.as_str(),
                        j.last_error.as_deref().unwrap_or("no error given")
                    )))
                }
                JobState::Queued | JobState::Running => {}
            }
            let now = Instant::now();
            if now >= deadline {
                // Best effort: a job that ends meanwhile cannot be cancelled.
                let _ = self.jobs.cancel(&id).await;
                let who = if j.state == JobState::Queued {
                    "no worker claimed"
                } else {
                    "the worker did not finish"
                };
                return Err(no_worker(format!(
                    "{who} the query's text.embed job in queue {queue:?} within {} ms",
                    wait.as_millis()
                )));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

/// The vector of a `text.embed` result `{"vectors": [[..]], "dim"}`.
fn query_vector(result: Option<&str>) -> Result<Vec<f32>, ApiError> {
    let bad = |m: &str| ApiError::Internal(format!("the embed worker's result {m}"));
    let v: Value = serde_json::from_str(result.ok_or_else(|| bad("is missing"))?)
        .map_err(|_| bad("is not JSON"))?;
    let first = v
        .get("vectors")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_array)
        .ok_or_else(|| bad("has no vectors[0]"))?;
    let out: Vec<f32> = first
        .iter()
        .map(|x| x.as_f64().map(|f| f as f32))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("has a non-number in vectors[0]"))?;
    if out.len() != EMBED_DIM {
        return Err(bad(&format!(
            "has {} dimensions, not {EMBED_DIM}",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dataset_condition_joins_the_callers_filter() {
        assert_eq!(
            scoped_filter("d", None).unwrap(),
            json!({"must": [{"key": "dataset", "match": "d"}]})
        );
        let f = json!({"must": [{"key": "x", "match": 1}], "should": []});
        assert_eq!(
            scoped_filter("d", Some(f)).unwrap()["must"],
            json!([{"key": "x", "match": 1}, {"key": "dataset", "match": "d"}])
        );
        assert!(scoped_filter("d", Some(json!([1]))).is_err());
        assert!(scoped_filter("d", Some(json!({"must": 3}))).is_err());
    }

    #[test]
    fn just_below_bounds_a_range_that_starts_at_the_path() {
        use super::super::just_below;
        for p in ["a/b.png", "x", "a/\u{e000}", "ü.png", "a\0"] {
            let b = just_below(p).unwrap();
            assert!(b.as_str() < p, "{p:?}");
            // Neighbours a catalog could hold sort outside (b, p).
            let mut prefix = p.to_string();
            prefix.pop();
            for n in [prefix.as_str(), "a/b.pn", "a/b.pnf", "a/b.pnfz", "w"] {
                assert!(!(b.as_str() < n && n < p), "{n:?} between {b:?} and {p:?}");
            }
        }
        assert_eq!(just_below(""), None);
    }

    #[test]
    fn a_result_must_hold_a_vector_of_the_models_dimension() {
        let ok = json!({"vectors": [vec![0.5; EMBED_DIM]]}).to_string();
        assert_eq!(query_vector(Some(&ok)).unwrap().len(), EMBED_DIM);
        let short = json!({"vectors": [[1.0, 2.0]]}).to_string();
        assert!(query_vector(Some(&short)).is_err());
        assert!(query_vector(Some("{}")).is_err());
        assert!(query_vector(None).is_err());
    }
}
