//! Policies, versions, runs and data sources: validation, evaluation and
//! the Raft writes behind the REST front.
//!
//! Runs are evaluated here, on the node that received the request, never in
//! apply; the finished run is then written to the shard group its id hashes
//! to. Compiled versions are cached per process by (policy, version): a
//! version never changes, and policy ids are random, so an entry can never
//! go stale.

use crate::api::error::ApiError;
use crate::node::ops::{Query, QueryResult};
use crate::node::Node;
use crate::service::jobs::JobsService;
use futures::future::BoxFuture;
use orrery_policy::eval::{check_input, evaluate, pick, vector_query, Effects, Outcome};
use orrery_policy::graph::{compile, parse_graph, Catalog, Compiled};
use orrery_policy::store::*;
use orrery_policy::PolicyError;
use orrery_raft::{Command, Response};
use orrery_types::PLACEMENT_GROUP;
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const MAX_BATCH: usize = 10_000;
pub const MAX_RUN_LIST: usize = 1_000;
pub const DEFAULT_RUN_LIST: usize = 100;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type CompiledCache = Mutex<HashMap<(String, u32), Arc<Compiled>>>;

fn compiled_cache() -> &'static CompiledCache {
    static C: OnceLock<CompiledCache> = OnceLock::new();
    C.get_or_init(Default::default)
}

type HttpCache = Mutex<HashMap<(String, String), (Instant, Json)>>;

fn http_cache() -> &'static HttpCache {
    static C: OnceLock<HttpCache> = OnceLock::new();
    C.get_or_init(Default::default)
}

fn http_client() -> &'static reqwest::Client {
    static C: OnceLock<reqwest::Client> = OnceLock::new();
    C.get_or_init(reqwest::Client::new)
}

fn policy_error(e: PolicyError) -> ApiError {
    match e {
        PolicyError::Invalid { node, message } if node.is_empty() => {
            ApiError::bad("invalid_graph", message)
        }
        PolicyError::Invalid { node, message } => {
            ApiError::bad("invalid_graph", format!("node {node:?}: {message}"))
        }
        PolicyError::Input(m) => ApiError::bad("invalid_input", m),
        PolicyError::Internal(m) => ApiError::Internal(m),
    }
}

fn unexpected<T: std::fmt::Debug>(r: T) -> ApiError {
    ApiError::Internal(format!("unexpected response {r:?}"))
}

/// A run as the API shows it.
pub fn run_json(r: &Run) -> Json {
    let parse = |s: &str| serde_json::from_str::<Json>(s).unwrap_or(Json::String(s.into()));
    json!({
        "id": r.id,
        "policy_id": r.policy_id,
        "version": r.version,
        "status": r.status.as_str(),
        "run_key": r.run_key,
        "input": parse(&r.input),
        "output": r.output.as_deref().map(parse),
        "trace": parse(&r.trace),
        "error": r.error,
        "created": r.created_ms,
        "finished": r.finished_ms,
    })
}

pub fn policy_json(p: &Policy) -> Json {
    json!({
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "created": p.created_ms,
        "updated": p.updated_ms,
        "allocation": p.allocation.iter().map(|(v, w)| json!({"version": v, "weight": w})).collect::<Vec<_>>(),
        "latest_version": p.latest_version,
    })
}

pub fn version_json(v: &Version) -> Json {
    json!({
        "policy_id": v.policy_id,
        "version": v.version,
        "graph": serde_json::from_str::<Json>(&v.graph).unwrap_or(Json::Null),
        "created_by": v.created_by,
        "created": v.created_ms,
        "archived": v.archived,
    })
}

pub fn source_json(s: &DataSource) -> Json {
    let mut j = match &s.kind {
        DataSourceKind::Kv { key_template } => json!({"key_template": key_template}),
        DataSourceKind::Http {
            url_template,
            method,
            timeout_ms,
            retries,
            cache_ttl_ms,
        } => {
            json!({"url_template": url_template, "method": method, "timeout_ms": timeout_ms, "retries": retries, "cache_ttl_ms": cache_ttl_ms})
        }
        DataSourceKind::Vector {
            collection,
            k,
            field,
            filter,
            with_payload,
        } => {
            let filter = filter
                .as_deref()
                .map(|f| serde_json::from_str::<Json>(f).unwrap_or(Json::String(f.into())));
            json!({"collection": collection, "k": k, "vector_field": field, "filter": filter, "with_payload": with_payload})
        }
    };
    j["name"] = json!(s.name);
    j["kind"] = json!(s.kind.name());
    j["created"] = json!(s.created_ms);
    j
}

fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(
            "invalid_name",
            format!("{what} must be 1-128 characters of [A-Za-z0-9._-], got {name:?}"),
        ))
    }
}

/// Reads a data source's definition from a request body.
pub fn parse_source(body: &Json) -> Result<DataSource, ApiError> {
    let s = |k: &str| body.get(k).and_then(Json::as_str);
    let name = s("name").ok_or_else(|| ApiError::bad("invalid_source", "name is required"))?;
    check_name("name", name)?;
    let u = |k: &str, d: u64| -> Result<u64, ApiError> {
        match body.get(k) {
            None => Ok(d),
            Some(v) => v.as_u64().ok_or_else(|| {
                ApiError::bad(
                    "invalid_source",
                    format!("{k} must be a non-negative integer"),
                )
            }),
        }
    };
    let kind = match s("kind") {
        Some("kv") => {
            let t = s("key_template").ok_or_else(|| {
                ApiError::bad(
                    "invalid_source",
                    "a kv source needs key_template (with {key})",
                )
            })?;
            if !t.contains("{key}") {
                return Err(ApiError::bad(
                    "invalid_source",
                    "key_template must contain {key}",
                ));
            }
            DataSourceKind::Kv {
                key_template: t.into(),
            }
        }
        Some("http") => {
            let t = s("url_template").ok_or_else(|| {
                ApiError::bad("invalid_source", "an http source needs url_template")
            })?;
            if !(t.starts_with("http://") || t.starts_with("https://")) {
                return Err(ApiError::bad(
                    "invalid_source",
                    "url_template must be an http:// or https:// URL",
                ));
            }
            let method = s("method").unwrap_or("GET").to_ascii_uppercase();
            if method != "GET" && method != "POST" {
                return Err(ApiError::bad(
                    "invalid_source",
                    "method must be GET or POST",
                ));
            }
            let timeout_ms = u("timeout_ms", 1000)?;
            if timeout_ms == 0 || timeout_ms > 60_000 {
                return Err(ApiError::bad(
                    "invalid_source",
                    "timeout_ms must be 1..=60000",
                ));
            }
            let retries = u("retries", 0)?;
            if retries > 10 {
                return Err(ApiError::bad("invalid_source", "retries must be 0..=10"));
            }
            DataSourceKind::Http {
                url_template: t.into(),
                method,
                timeout_ms,
                retries: retries as u32,
                cache_ttl_ms: u("cache_ttl_ms", 0)?,
            }
        }
        Some("vector") => {
            let collection = s("collection").ok_or_else(|| {
                ApiError::bad("invalid_source", "a vector source needs collection")
            })?;
            if collection.is_empty() {
                return Err(ApiError::bad(
                    "invalid_source",
                    "collection must not be empty",
                ));
            }
            let k = u("k", 10)?;
            if k == 0 || k > orrery_vector::MAX_K as u64 {
                return Err(ApiError::bad(
                    "invalid_source",
                    format!("k must be 1..={}, got {k}", orrery_vector::MAX_K),
                ));
            }
            let field = s("vector_field").ok_or_else(|| {
                ApiError::bad(
                    "invalid_source",
                    "a vector source needs vector_field (a string)",
                )
            })?;
            if field.is_empty() || field.len() > 128 {
                return Err(ApiError::bad(
                    "invalid_source",
                    "vector_field must be 1-128 characters",
                ));
            }
            let filter = match body.get("filter") {
                None | Some(Json::Null) => None,
                Some(f) => {
                    orrery_vector::filter::Filter::parse(f)
                        .map_err(|m| ApiError::bad("invalid_source", format!("filter: {m}")))?;
                    Some(f.to_string())
                }
            };
            let with_payload = match body.get("with_payload") {
                None => true,
                Some(v) => v.as_bool().ok_or_else(|| {
                    ApiError::bad("invalid_source", "with_payload must be a bool")
                })?,
            };
            DataSourceKind::Vector {
                collection: collection.into(),
                k: k as u32,
                field: field.into(),
                filter,
                with_payload,
            }
        }
        other => {
            return Err(ApiError::bad(
                "invalid_source",
                format!("kind must be \"kv\", \"http\" or \"vector\", got {other:?}"),
            ))
        }
    };
    Ok(DataSource {
        name: name.into(),
        kind,
        created_ms: now_ms(),
    })
}

/// Lookups against the cluster's KV namespace and HTTP services.
struct NodeEffects<'n> {
    node: &'n Node,
    /// Where enqueue nodes submit (runs that submit nothing have none).
    jobs: Option<&'n JobsService>,
    sources: BTreeMap<String, DataSource>,
    /// Whether enqueue nodes submit jobs: recorded runs do; batches and
    /// backtests only evaluate, so that re-running inputs has no effects.
    submit: bool,
    /// The run being evaluated: its enqueue nodes submit with a dedupe key
    /// made of it, so a re-evaluation of the same run (a `policy.run` job
    /// retried after a crash between submit and record) finds the job the
    /// first attempt submitted instead of submitting a second one.
    run_id: Option<String>,
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

impl NodeEffects<'_> {
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
        let url = url_template.replace("{key}", &encode(key));
        let ck = (name.to_string(), url.clone());
        if *cache_ttl_ms > 0 {
            if let Some((at, v)) = lock(http_cache()).get(&ck) {
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
                http_client().post(&url).json(&json!({"key": key}))
            } else {
                http_client().get(&url)
            };
            match req.timeout(Duration::from_millis(*timeout_ms)).send().await {
                Ok(resp) if resp.status().is_success() => match resp.json::<Json>().await {
                    Ok(v) => {
                        if *cache_ttl_ms > 0 {
                            let mut c = lock(http_cache());
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

impl Effects for NodeEffects<'_> {
    fn lookup<'a>(&'a self, source: &'a str, key: &'a str) -> BoxFuture<'a, Result<Json, String>> {
        Box::pin(async move {
            let Some(src) = self.sources.get(source) else {
                return Err(format!("data source {source:?} does not exist"));
            };
            match &src.kind {
                DataSourceKind::Kv { key_template } => {
                    let k = key_template.replace("{key}", key);
                    let key = k.clone().into_bytes();
                    let got = async {
                        let g = self.node.group_for_key(&key)?;
                        self.node
                            .read(g, crate::node::typed::KvGet { key }, true)
                            .await
                    };
                    match got.await {
                        Ok(Some(v)) => Ok(serde_json::from_slice(&v.value).unwrap_or_else(|_| {
                            Json::String(String::from_utf8_lossy(&v.value).into_owned())
                        })),
                        Ok(None) => Err(format!("{source}: key {k:?} not found")),
                        Err(e) => Err(format!("{source}: {e}")),
                    }
                }
                kind @ DataSourceKind::Http { .. } => self.http(source, kind, key).await,
                DataSourceKind::Vector {
                    collection,
                    k,
                    field,
                    filter,
                    with_payload,
                } => {
                    let vector = vector_query(key, field).map_err(|e| format!("{source}: {e}"))?;
                    let filter = filter
                        .as_deref()
                        .map(serde_json::from_str::<Json>)
                        .transpose()
                        .map_err(|e| format!("{source}: stored filter: {e}"))?;
                    let spec = crate::vector_api::SearchSpec {
                        vector,
                        k: *k as usize,
                        ef: None,
                        exact: false,
                        filter,
                        with_payload: *with_payload,
                        with_vector: false,
                    };
                    // Same read as POST /v1/collections/{c}/search.
                    match self.node.search(collection, spec, true).await {
                        Ok(hits) => Ok(crate::vector_rest::hits_json(&hits)),
                        Err(e) => Err(format!("{source}: collection {collection:?}: {e}")),
                    }
                }
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
            let (true, Some(jobs)) = (self.submit, self.jobs) else {
                return Ok(None);
            };
            let args = crate::service::jobs::SubmitArgs {
                queue: queue.to_string(),
                kind: kind.to_string(),
                params,
                priority: 0,
                run_at_ms: None,
                delay_ms: None,
                resources: Default::default(),
                dedupe_key: self.run_id.as_deref().map(|r| enqueue_dedupe_key(r, node)),
                submitted_by: Some("policy".to_string()),
            };
            match jobs.submit(args).await {
                Ok((job, _)) => Ok(Some(job.id.to_string())),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// A run request, parsed.
pub struct RunRequest {
    pub input: Json,
    pub version: Option<u32>,
    pub run_key: Option<String>,
}

impl Node {
    async fn policy_write(
        &self,
        group: u64,
        cmd: PolicyCommand,
    ) -> Result<PolicyResponse, ApiError> {
        match self.write(group, Command::Policy(cmd)).await? {
            Response::Policy(PolicyResponse::NotFound(m)) => Err(ApiError::NotFound(m)),
            Response::Policy(PolicyResponse::Conflict(m)) => Err(ApiError::Conflict(m)),
            Response::Policy(PolicyResponse::Rejected(m)) => {
                Err(ApiError::bad("invalid_allocation", m))
            }
            Response::Policy(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn policy_read(&self, group: u64, q: PolicyQuery) -> Result<PolicyQueryResult, ApiError> {
        match self.read(group, Query::Policy(q), true).await? {
            QueryResult::Policy(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// A policy by id, or by name.
    pub async fn policy_get(&self, id: &str) -> Result<Policy, ApiError> {
        if let PolicyQueryResult::Policy(Some(p)) = self
            .policy_read(PLACEMENT_GROUP, PolicyQuery::Policy { id: id.into() })
            .await?
        {
            return Ok(p);
        }
        match self
            .policy_read(
                PLACEMENT_GROUP,
                PolicyQuery::PolicyByName { name: id.into() },
            )
            .await?
        {
            PolicyQueryResult::Policy(Some(p)) => Ok(p),
            _ => Err(ApiError::NotFound(format!("policy {id:?} not found"))),
        }
    }

    pub async fn policy_list(&self) -> Result<Vec<Policy>, ApiError> {
        match self
            .policy_read(PLACEMENT_GROUP, PolicyQuery::Policies)
            .await?
        {
            PolicyQueryResult::Policies(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    pub async fn policy_create(
        &self,
        name: String,
        description: String,
    ) -> Result<Policy, ApiError> {
        check_name("name", &name)?;
        let id = format!("pol-{:016x}", rand::random::<u64>());
        match self
            .policy_write(
                PLACEMENT_GROUP,
                PolicyCommand::CreatePolicy {
                    id,
                    name,
                    description,
                    now_ms: now_ms(),
                },
            )
            .await?
        {
            PolicyResponse::Policy(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    pub async fn policy_update(
        &self,
        id: &str,
        description: Option<String>,
        allocation: Option<Vec<(u32, u64)>>,
    ) -> Result<Policy, ApiError> {
        let p = self.policy_get(id).await?;
        match self
            .policy_write(
                PLACEMENT_GROUP,
                PolicyCommand::UpdatePolicy {
                    id: p.id,
                    description,
                    allocation,
                    now_ms: now_ms(),
                },
            )
            .await?
        {
            PolicyResponse::Policy(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    pub async fn policy_delete(&self, id: &str) -> Result<(), ApiError> {
        let p = self.policy_get(id).await?;
        self.policy_write(PLACEMENT_GROUP, PolicyCommand::DeletePolicy { id: p.id })
            .await
            .map(|_| ())
    }

    pub async fn data_sources(&self) -> Result<Vec<DataSource>, ApiError> {
        match self
            .policy_read(PLACEMENT_GROUP, PolicyQuery::DataSources)
            .await?
        {
            PolicyQueryResult::DataSources(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    pub async fn data_source_create(&self, source: DataSource) -> Result<DataSource, ApiError> {
        if let DataSourceKind::Vector { collection, .. } = &source.kind {
            if !self.vector_catalog().await?.contains_key(collection) {
                return Err(ApiError::bad(
                    "invalid_source",
                    format!("collection {collection:?} does not exist"),
                ));
            }
        }
        match self
            .policy_write(PLACEMENT_GROUP, PolicyCommand::CreateDataSource { source })
            .await?
        {
            PolicyResponse::DataSource(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    pub async fn data_source_delete(&self, name: String) -> Result<(), ApiError> {
        self.policy_write(PLACEMENT_GROUP, PolicyCommand::DeleteDataSource { name })
            .await
            .map(|_| ())
    }

    /// Validates the graph against the current catalog, then stores it as
    /// the policy's next version.
    pub async fn version_create(
        &self,
        jobs: &JobsService,
        id: &str,
        graph: &Json,
        activate: bool,
        created_by: String,
    ) -> Result<Version, ApiError> {
        let p = self.policy_get(id).await?;
        let g = parse_graph(graph).map_err(policy_error)?;
        let catalog = Catalog {
            data_sources: self
                .data_sources()
                .await?
                .into_iter()
                .map(|s| (s.name, s.kind.name().to_string()))
                .collect(),
            queues: Some(
                jobs.list_queues()
                    .await?
                    .into_iter()
                    .map(|q| q.name)
                    .collect(),
            ),
        };
        compile(&g, &catalog).map_err(policy_error)?;
        // Stored exactly as submitted: GET returns what was validated.
        let text = graph.to_string();
        match self
            .policy_write(
                PLACEMENT_GROUP,
                PolicyCommand::CreateVersion {
                    policy_id: p.id,
                    graph: text,
                    created_by,
                    activate,
                    now_ms: now_ms(),
                },
            )
            .await?
        {
            PolicyResponse::Version(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    pub async fn version_archive(&self, id: &str, version: u32) -> Result<Version, ApiError> {
        let p = self.policy_get(id).await?;
        match self
            .policy_write(
                PLACEMENT_GROUP,
                PolicyCommand::ArchiveVersion {
                    policy_id: p.id,
                    version,
                    now_ms: now_ms(),
                },
            )
            .await?
        {
            PolicyResponse::Version(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    pub async fn versions(&self, id: &str) -> Result<Vec<Version>, ApiError> {
        let p = self.policy_get(id).await?;
        match self
            .policy_read(PLACEMENT_GROUP, PolicyQuery::Versions { policy_id: p.id })
            .await?
        {
            PolicyQueryResult::Versions(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    pub async fn version_get(&self, policy_id: &str, version: u32) -> Result<Version, ApiError> {
        match self
            .policy_read(
                PLACEMENT_GROUP,
                PolicyQuery::Version {
                    policy_id: policy_id.into(),
                    version,
                },
            )
            .await?
        {
            PolicyQueryResult::Version(Some(v)) => Ok(v),
            PolicyQueryResult::Version(None) => Err(ApiError::NotFound(format!(
                "version {version} of policy {policy_id} not found"
            ))),
            other => Err(unexpected(other)),
        }
    }

    async fn compiled(&self, policy_id: &str, version: u32) -> Result<Arc<Compiled>, ApiError> {
        let key = (policy_id.to_string(), version);
        if let Some(c) = lock(compiled_cache()).get(&key) {
            return Ok(c.clone());
        }
        let v = self.version_get(policy_id, version).await?;
        let g: Json =
            serde_json::from_str(&v.graph).map_err(|e| ApiError::Internal(e.to_string()))?;
        let g = parse_graph(&g).map_err(policy_error)?;
        // Data sources were checked at creation; at run time a deleted one
        // is a lookup error (handled by the node's on_error), so compile
        // against a catalog that admits every source the graph names.
        // Likewise a deleted queue fails the enqueue node at run time.
        let mut catalog = Catalog {
            queues: Some(Default::default()),
            ..Catalog::default()
        };
        for n in &g.nodes {
            if let Some(s) = n.config.get("source").and_then(Json::as_str) {
                catalog.data_sources.insert(s.into(), "kv".into());
            }
            if let (Some(q), Some(queues)) = (
                n.config.get("queue").and_then(Json::as_str),
                catalog.queues.as_mut(),
            ) {
                queues.insert(q.into());
            }
        }
        let c = compile(&g, &catalog).map_err(policy_error)?;
        lock(compiled_cache()).insert(key, c.clone());
        Ok(c)
    }

    /// Which version a run uses: the requested one, or the allocation's
    /// choice by a stable hash of the run key (or the run id).
    async fn choose(&self, p: &Policy, version: Option<u32>, key: &str) -> Result<u32, ApiError> {
        match version {
            Some(v) => {
                let ver = self.version_get(&p.id, v).await?;
                if ver.archived {
                    return Err(ApiError::bad(
                        "archived_version",
                        format!("version {v} is archived"),
                    ));
                }
                Ok(v)
            }
            None => pick(&p.id, key, &p.allocation).copied().ok_or_else(|| {
                ApiError::bad(
                    "no_version",
                    format!(
                        "policy {:?} has no version receiving traffic; create one first",
                        p.name
                    ),
                )
            }),
        }
    }

    /// Effects for evaluating `c`: recorded runs (`run_id` given) submit
    /// their enqueue nodes' jobs; without a run id nothing is submitted.
    async fn effects<'a>(
        &'a self,
        jobs: Option<&'a JobsService>,
        c: &Compiled,
        run_id: Option<&str>,
    ) -> Result<NodeEffects<'a>, ApiError> {
        let sources = if c.has_lookups() {
            self.data_sources()
                .await?
                .into_iter()
                .map(|s| (s.name.clone(), s))
                .collect()
        } else {
            BTreeMap::new()
        };
        Ok(NodeEffects {
            node: self,
            jobs,
            sources,
            submit: run_id.is_some(),
            run_id: run_id.map(str::to_string),
        })
    }

    /// Evaluates a run here and records it through Raft.
    pub async fn policy_run(
        &self,
        jobs: &JobsService,
        id: &str,
        req: RunRequest,
    ) -> Result<Run, ApiError> {
        let p = self.policy_get(id).await?;
        let created = now_ms();
        let run_id = format!("{created:012x}{:016x}", rand::random::<u64>());
        let key = req.run_key.clone().unwrap_or_else(|| run_id.clone());
        let version = self.choose(&p, req.version, &key).await?;
        let c = self.compiled(&p.id, version).await?;
        let input = check_input(&c, &req.input).map_err(policy_error)?;
        let fx = self.effects(Some(jobs), &c, Some(&run_id)).await?;
        let outcome = evaluate(&c, input, &fx).await;
        let run = finished_run(
            run_id,
            &p.id,
            version,
            req.run_key,
            &req.input,
            outcome,
            created,
        )?;
        let group = self.group_for_key(run.id.as_bytes())?;
        self.policy_write(group, PolicyCommand::PutRun { run: run.clone() })
            .await?;
        Ok(run)
    }

    /// Records a run as `running` and submits a `policy.run` job that
    /// evaluates it (see [`Node::policy_run_finish`]). The input is checked
    /// here, so a bad input is a 400 and not a failed run.
    pub async fn policy_run_async(
        &self,
        jobs: &JobsService,
        id: &str,
        req: RunRequest,
    ) -> Result<Run, ApiError> {
        let p = self.policy_get(id).await?;
        let created = now_ms();
        let run_id = format!("{created:012x}{:016x}", rand::random::<u64>());
        let key = req.run_key.clone().unwrap_or_else(|| run_id.clone());
        let version = self.choose(&p, req.version, &key).await?;
        let c = self.compiled(&p.id, version).await?;
        check_input(&c, &req.input).map_err(policy_error)?;
        let run = Run {
            id: run_id,
            policy_id: p.id.clone(),
            version,
            status: RunStatus::Running,
            run_key: req.run_key,
            input: text(&req.input)?,
            output: None,
            trace: "[]".to_string(),
            error: None,
            created_ms: created,
            finished_ms: None,
        };
        let group = self.group_for_key(run.id.as_bytes())?;
        self.policy_write(group, PolicyCommand::PutRun { run: run.clone() })
            .await?;
        // Deduplicated by run id: a retried request cannot start it twice.
        self.submit_policy_job(
            jobs,
            crate::policy_jobs::RUN_KIND,
            json!({"run_id": run.id}),
            Some(run.id.clone()),
        )
        .await?;
        Ok(run)
    }

    /// Evaluates a `running` run and records its end; a run that already
    /// ended (a retried job) is returned as it is.
    pub async fn policy_run_finish(
        &self,
        jobs: &JobsService,
        run_id: &str,
    ) -> Result<Run, ApiError> {
        let run = self.run_get(run_id).await?;
        if run.status != RunStatus::Running {
            return Ok(run);
        }
        let input: Json =
            serde_json::from_str(&run.input).map_err(|e| ApiError::Internal(e.to_string()))?;
        let c = self.compiled(&run.policy_id, run.version).await?;
        let outcome = match check_input(&c, &input) {
            Ok(v) => {
                let fx = self.effects(Some(jobs), &c, Some(&run.id)).await?;
                evaluate(&c, v, &fx).await
            }
            Err(e) => Outcome {
                output: None,
                trace: Vec::new(),
                error: Some(e.to_string()),
            },
        };
        let done = finished_run(
            run.id,
            &run.policy_id,
            run.version,
            run.run_key,
            &input,
            outcome,
            run.created_ms,
        )?;
        let group = self.group_for_key(done.id.as_bytes())?;
        self.policy_write(group, PolicyCommand::PutRun { run: done.clone() })
            .await?;
        Ok(done)
    }

    /// Evaluates `inputs` on one version (archived ones too: a backtest may
    /// replay history) without submitting jobs; an input the input node
    /// refuses is a failed outcome.
    pub async fn policy_backtest(
        &self,
        policy: &str,
        version: u32,
        inputs: &[Json],
    ) -> Result<Vec<Outcome>, ApiError> {
        let p = self.policy_get(policy).await?;
        let c = self.compiled(&p.id, version).await?;
        let fx = self.effects(None, &c, None).await?;
        let mut out = Vec::with_capacity(inputs.len());
        for input in inputs {
            out.push(match check_input(&c, input) {
                Ok(v) => evaluate(&c, v, &fx).await,
                Err(e) => Outcome {
                    output: None,
                    trace: Vec::new(),
                    error: Some(e.to_string()),
                },
            });
        }
        Ok(out)
    }

    /// Evaluates many inputs on one version, in parallel; not recorded.
    pub async fn policy_batch(
        self: &Arc<Self>,
        id: &str,
        inputs: Vec<Json>,
        version: Option<u32>,
    ) -> Result<(u32, Vec<Outcome>), ApiError> {
        if inputs.is_empty() || inputs.len() > MAX_BATCH {
            return Err(ApiError::bad(
                "invalid_batch",
                format!(
                    "inputs must hold 1..={MAX_BATCH} items, got {}",
                    inputs.len()
                ),
            ));
        }
        let p = self.policy_get(id).await?;
        let version = self.choose(&p, version, &p.id).await?;
        let c = self.compiled(&p.id, version).await?;
        let mut checked = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            checked.push(check_input(&c, input).map_err(|e| match e {
                PolicyError::Input(m) => {
                    ApiError::bad("invalid_input", format!("inputs[{i}]: {m}"))
                }
                other => policy_error(other),
            })?);
        }
        let sources = self.effects(None, &c, None).await?.sources;
        let node = self.clone();
        let handle = tokio::runtime::Handle::current();
        let outcomes = tokio::task::spawn_blocking(move || {
            let fx = NodeEffects {
                node: &node,
                jobs: None,
                sources,
                submit: false,
                run_id: None,
            };
            use rayon::prelude::*;
            checked
                .into_par_iter()
                .map(|v| {
                    // Rayon threads are outside the runtime; lookups (if
                    // any) need its reactor, so block on it through the handle.
                    handle.block_on(evaluate(&c, v, &fx))
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("batch: {e}")))?;
        Ok((version, outcomes))
    }

    pub async fn run_get(&self, id: &str) -> Result<Run, ApiError> {
        if id.is_empty() {
            return Err(ApiError::bad("invalid_id", "empty run id"));
        }
        let group = self.group_for_key(id.as_bytes())?;
        match self
            .policy_read(group, PolicyQuery::Run { id: id.into() })
            .await?
        {
            PolicyQueryResult::Run(Some(r)) => Ok(r),
            PolicyQueryResult::Run(None) => {
                Err(ApiError::NotFound(format!("run {id:?} not found")))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Newest first across every shard; the cursor is the last id returned.
    pub async fn runs_list(
        &self,
        mut f: RunFilter,
    ) -> Result<(Vec<Run>, Option<String>), ApiError> {
        if f.limit == 0 || f.limit > MAX_RUN_LIST {
            return Err(ApiError::bad(
                "invalid_limit",
                format!("limit must be 1..={MAX_RUN_LIST}"),
            ));
        }
        if let Some(p) = &f.policy_id {
            f.policy_id = Some(self.policy_get(p).await?.id);
        }
        let groups = self.shard_groups()?;
        let futs = groups.into_iter().map(|g| {
            let q = PolicyQuery::Runs(f.clone());
            async move { self.policy_read(g, q).await }
        });
        let mut runs = Vec::new();
        for r in futures::future::join_all(futs).await {
            match r? {
                PolicyQueryResult::Runs(mut part) => runs.append(&mut part),
                other => return Err(unexpected(other)),
            }
        }
        runs.sort_by(|a, b| b.id.cmp(&a.id));
        runs.truncate(f.limit);
        let cursor = (runs.len() == f.limit)
            .then(|| runs.last().map(|r| r.id.clone()))
            .flatten();
        Ok((runs, cursor))
    }
}

fn text<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, ApiError> {
    serde_json::to_string(v).map_err(|e| ApiError::Internal(e.to_string()))
}

fn finished_run(
    id: String,
    policy_id: &str,
    version: u32,
    run_key: Option<String>,
    input: &Json,
    o: Outcome,
    created: u64,
) -> Result<Run, ApiError> {
    Ok(Run {
        id,
        policy_id: policy_id.into(),
        version,
        status: if o.succeeded() {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        },
        run_key,
        input: text(input)?,
        output: o.output.as_ref().map(text).transpose()?,
        trace: text(&o.trace)?,
        error: o.error,
        created_ms: created,
        finished_ms: Some(now_ms().max(created)),
    })
}
