//! What a graph's nodes do outside the evaluator: lookups in data sources
//! (the KV namespace, HTTP services, vector collections), job submissions
//! from enqueue nodes, and the threads CEL runs on.

use super::PoliciesService;
use crate::api::lock;
use crate::netguard::{check_url, error_chain, GuardedResolver, HttpAllowlist, HTTP_SOURCES};
use futures::future::BoxFuture;
use orrery_policy::eval::{vector_query, Effects, Job};
use orrery_policy::graph::Compiled;
use orrery_policy::store::{DataSource, DataSourceKind};
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The largest response body (and KV value) a lookup reads.
pub const LOOKUP_MAX_BYTES: usize = 1 << 20;
/// An http lookup's deadline across all its attempts when the source
/// names none (`timeout_ms`).
pub const HTTP_DEFAULT_DEADLINE_MS: u64 = 5_000;
/// The largest deadline an http source may ask for.
pub const HTTP_MAX_DEADLINE_MS: u64 = 30_000;
/// How long past a job's deadline its result is still awaited: the job
/// stops itself at the deadline; this covers the step it was in.
const COMPUTE_GRACE: Duration = Duration::from_millis(50);

/// The client of `http` sources: no redirects (a 3xx could point anywhere,
/// the check of the source's URL would not see it), no proxy (it would
/// resolve names itself, past [`GuardedResolver`]), and names resolved
/// only by [`GuardedResolver`].
pub(super) fn http_client(allow: &HttpAllowlist) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver {
            allow: Arc::new(allow.clone()),
            who: HTTP_SOURCES,
        }))
        .build()
        .map_err(|e| format!("the http client could not be built: {e}"))
}

/// The pool CEL evaluation runs on: as many threads as cores (at least
/// two), with stacks deep enough for the deepest expression allowed. A
/// runaway expression can occupy one of these threads until its deadline
/// check fires, never an async worker.
pub(super) fn cpu_pool(name: &'static str) -> Option<rayon::ThreadPool> {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2);
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .stack_size(orrery_policy::limits::EVAL_STACK_BYTES)
        .thread_name(move |i| format!("{name}-{i}"))
        .build()
        .map_err(|e| tracing::warn!("policy evaluation pool: {e}; using the blocking pool"))
        .ok()
}

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
    /// Whether CPU work runs on the calling thread: set where the caller
    /// already is a pool thread (a batch), which then needs no hop.
    pub(super) inline: bool,
    /// What an unpinned sub_policy node's allocation is keyed by: the
    /// parent run's key, or its id (a batch or backtest: the parent
    /// policy's id, as for the batch's own version).
    pub(super) alloc_key: String,
    /// The sub-policies resolved so far by (name, pinned version): one
    /// effects value serves one run (or one batch), whose allocation key
    /// is fixed, so the answer cannot change within it.
    pub(super) resolved: SubPolicies,
}

/// Resolved sub-policies of one evaluation (see [`PolicyEffects::resolved`]).
pub(super) type SubPolicies = Mutex<HashMap<(String, Option<u32>), (u32, Arc<Compiled>)>>;

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
            Ok(Some(v)) if v.value.len() > LOOKUP_MAX_BYTES => Err(format!(
                "{source}: key {k:?} holds {} bytes; a lookup reads at most {LOOKUP_MAX_BYTES}",
                v.value.len()
            )),
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
        let client = self
            .svc
            .http_client
            .as_ref()
            .map_err(|e| format!("{name}: {e}"))?;
        let url = url_template.replace("{key}", &encode(key));
        // Again here: the key may have made the host an address literal,
        // which reqwest connects to without asking the resolver.
        let allow = &self.svc.node.cfg.policies.http_allow;
        check_url(&url, allow).map_err(|e| format!("{name}: {e}"))?;
        let ck = (name.to_string(), url.clone());
        if *cache_ttl_ms > 0 {
            if let Some((at, v)) = lock(cache).get(&ck) {
                if at.elapsed() < Duration::from_millis(*cache_ttl_ms) {
                    return Ok(v.clone());
                }
            }
        }
        // One deadline for every attempt together (sources made before it
        // existed may hold a larger timeout_ms: clamped).
        let total = Duration::from_millis((*timeout_ms).clamp(1, HTTP_MAX_DEADLINE_MS));
        let attempts = async {
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
                match req.send().await {
                    Ok(resp) if resp.status().is_redirection() => {
                        // Not retried: the answer would be the same.
                        return Err(format!(
                            "{name}: HTTP {}: redirects are not followed",
                            resp.status()
                        ));
                    }
                    Ok(resp) if resp.status().is_success() => match body(resp).await {
                        Ok(bytes) => match serde_json::from_slice::<Json>(&bytes) {
                            Ok(v) => return Ok(v),
                            Err(e) => last = format!("{name}: response is not JSON: {e}"),
                        },
                        Err(e) => return Err(format!("{name}: {e}")),
                    },
                    Ok(resp) => last = format!("{name}: HTTP {}", resp.status()),
                    Err(e) => last = format!("{name}: {}", error_chain(&e)),
                }
            }
            Err(last)
        };
        let v = tokio::time::timeout(total, attempts)
            .await
            .map_err(|_| format!("{name}: timed out after {} ms", total.as_millis()))??;
        if *cache_ttl_ms > 0 {
            let mut c = lock(cache);
            // Bounded: an unbounded key space must not grow the cache forever.
            if c.len() > 100_000 {
                c.clear();
            }
            c.insert(ck, (Instant::now(), v.clone()));
        }
        Ok(v)
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

    /// On [`PoliciesService::cpu_pool`] (or here, when `inline`); a job
    /// that starts past its deadline (the pool was busy) does not run.
    fn compute<'a>(&'a self, job: Job, deadline: Instant) -> BoxFuture<'a, Result<(), String>> {
        if self.inline {
            // A job that would start past its deadline does not run; the
            // walk then reports the timeout, as when the pool was busy.
            if Instant::now() < deadline {
                job();
            }
            return Box::pin(async { Ok(()) });
        }
        Box::pin(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let run = move || {
                if Instant::now() < deadline {
                    job();
                }
                let _ = tx.send(());
            };
            match &self.svc.cpu_pool {
                Some(pool) => pool.spawn(run),
                None => drop(tokio::task::spawn_blocking(run)),
            }
            match tokio::time::timeout_at((deadline + COMPUTE_GRACE).into(), rx).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err("the evaluation thread stopped".into()),
                Err(_) => Err("the evaluation did not finish by its deadline".into()),
            }
        })
    }

    /// Through the service's compiled cache and the policy's allocation
    /// (see [`super::subpolicy`]), once per evaluation.
    fn sub_policy<'a>(
        &'a self,
        policy: &'a str,
        version: Option<u32>,
    ) -> BoxFuture<'a, Result<(u32, Arc<Compiled>), String>> {
        Box::pin(async move {
            let k = (policy.to_string(), version);
            if let Some(r) = lock(&self.resolved).get(&k) {
                return Ok(r.clone());
            }
            let r = self
                .svc
                .resolve_sub_policy(policy, version, &self.alloc_key)
                .await
                .map_err(|e| e.to_string())?;
            lock(&self.resolved).insert(k, r.clone());
            Ok(r)
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
            // Refused when the version was created; checked again in case
            // a version older than that rule names it.
            orrery_policy::graph::refuse_kind(kind)?;
            if !self.submit {
                return Ok(None);
            }
            // Attempts of one keyed run share the id's anchor: their
            // jobs are submitted once.
            let dedupe = self
                .run_id
                .as_deref()
                .map(|r| enqueue_dedupe_key(super::run_keys::run_anchor(r), node));
            match self.svc.deps.submit_job(queue, kind, params, dedupe).await {
                Ok(id) => Ok(Some(id)),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// A response's body, refused as soon as it passes [`LOOKUP_MAX_BYTES`]
/// (read in chunks: a declared length may be absent or wrong).
async fn body(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let too_big = || format!("the response is larger than {LOOKUP_MAX_BYTES} bytes");
    if resp
        .content_length()
        .is_some_and(|n| n > LOOKUP_MAX_BYTES as u64)
    {
        return Err(too_big());
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
        if out.len() + chunk.len() > LOOKUP_MAX_BYTES {
            return Err(too_big());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
