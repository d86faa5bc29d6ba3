//! What a graph's nodes do outside the evaluator: lookups in data sources
//! (the KV namespace, HTTP services, vector collections) and job
//! submissions from enqueue nodes.

use super::PoliciesService;
use crate::api::lock;
use futures::future::BoxFuture;
use orrery_policy::eval::{vector_query, Effects};
use orrery_policy::store::{DataSource, DataSourceKind};
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// HTTP lookups' answers by (source, URL), with when they were fetched.
pub(super) type HttpCache = Mutex<HashMap<(String, String), (Instant, Json)>>;

/// The effects of one evaluation (or one batch of them).
pub(super) struct PolicyEffects<'s> {
    pub(super) svc: &'s PoliciesService,
    pub(super) sources: BTreeMap<String, DataSource>,
    /// Whether enqueue nodes submit jobs: recorded runs do; batches and
    /// backtests only evaluate, so that re-running inputs has no effects.
    pub(super) submit: bool,
    /// The run being evaluated: its enqueue nodes submit with a dedupe key
    /// made of it, so a re-evaluation of the same run (a `policy.run` job
    /// retried after a crash between submit and record) finds the job the
    /// first attempt submitted instead of submitting a second one.
    pub(super) run_id: Option<String>,
}

/// The dedupe key of the job that enqueue node `node` of run `run_id`
/// submits: fixed length (well under the 256-character limit) whatever
/// the node id.
pub fn enqueue_dedupe_key(run_id: &str, node: &str) -> String {
    format!(
        "policy-run:{run_id}:{:016x}",
        orrery_types::stable_hash(node.as_bytes())
    )
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl PolicyEffects<'_> {
    async fn kv(&self, source: &str, key_template: &str, key: &str) -> Result<Json, String> {
        let k = key_template.replace("{key}", key);
        match self.svc.kv.get(k.clone().into_bytes(), true).await {
            Ok(Some(v)) => Ok(serde_json::from_slice(&v.value)
                .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&v.value).into_owned()))),
            Ok(None) => Err(format!("{source}: key {k:?} not found")),
            Err(e) => Err(format!("{source}: {e}")),
        }
    }

    async fn http(&self, name: &str, kind: &DataSourceKind, key: &str) -> Result<Json, String> {
        let DataSourceKind::Http {
            url_template,
            method,
            timeout_ms,
            retries,
            cache_ttl_ms,
        } = kind
        else {
            return Err("not an http source".into());
        };
        let cache = &self.svc.http_cache;
        let client = &self.svc.http_client;
        let url = url_template.replace("{key}", &encode(key));
        let ck = (name.to_string(), url.clone());
        if *cache_ttl_ms > 0 {
            if let Some((at, v)) = lock(cache).get(&ck) {
                if at.elapsed() < Duration::from_millis(*cache_ttl_ms) {
                    return Ok(v.clone());
                }
            }
        }
        let mut last = String::new();
        for attempt in 0..=*retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            let req = if method == "POST" {
                client.post(&url).json(&json!({"key": key}))
            } else {
                client.get(&url)
            };
            match req.timeout(Duration::from_millis(*timeout_ms)).send().await {
                Ok(resp) if resp.status().is_success() => match resp.json::<Json>().await {
                    Ok(v) => {
                        if *cache_ttl_ms > 0 {
                            let mut c = lock(cache);
                            // Bounded: an unbounded key space must not grow the cache forever.
                            if c.len() > 100_000 {
                                c.clear();
                            }
                            c.insert(ck, (Instant::now(), v.clone()));
                        }
                        return Ok(v);
                    }
                    Err(e) => last = format!("{name}: response is not JSON: {e}"),
                },
                Ok(resp) => last = format!("{name}: HTTP {}", resp.status()),
                Err(e) if e.is_timeout() => {
                    last = format!("{name}: timed out after {timeout_ms} ms")
                }
                Err(e) => last = format!("{name}: {e}"),
            }
        }
        Err(last)
    }

    async fn vector(&self, source: &str, kind: &DataSourceKind, key: &str) -> Result<Json, String> {
        let DataSourceKind::Vector {
            collection,
            k,
            field,
            filter,
            with_payload,
        } = kind
        else {
            return Err("not a vector source".into());
        };
        let vector = vector_query(key, field).map_err(|e| format!("{source}: {e}"))?;
        let filter = filter
            .as_deref()
            .map(serde_json::from_str::<Json>)
            .transpose()
            .map_err(|e| format!("{source}: stored filter: {e}"))?;
        let hits = self
            .svc
            .deps
            .search(collection, vector, *k as usize, filter, *with_payload);
        match hits.await {
            Ok(hits) => Ok(crate::service::vectors::hits_json(&hits)),
            Err(e) => Err(format!("{source}: collection {collection:?}: {e}")),
        }
    }
}

impl Effects for PolicyEffects<'_> {
    fn lookup<'a>(&'a self, source: &'a str, key: &'a str) -> BoxFuture<'a, Result<Json, String>> {
        Box::pin(async move {
            let Some(src) = self.sources.get(source) else {
                return Err(format!("data source {source:?} does not exist"));
            };
            match &src.kind {
                DataSourceKind::Kv { key_template } => self.kv(source, key_template, key).await,
                kind @ DataSourceKind::Http { .. } => self.http(source, kind, key).await,
                kind @ DataSourceKind::Vector { .. } => self.vector(source, kind, key).await,
            }
        })
    }

    fn enqueue<'a>(
        &'a self,
        node: &'a str,
        queue: &'a str,
        kind: &'a str,
        params: Json,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            if !self.submit {
                return Ok(None);
            }
            let dedupe = self.run_id.as_deref().map(|r| enqueue_dedupe_key(r, node));
            match self.svc.deps.submit_job(queue, kind, params, dedupe).await {
                Ok(id) => Ok(Some(id)),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}
