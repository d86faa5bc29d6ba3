//! Policies, versions, runs and data sources: validation, evaluation and
//! the Raft writes behind both fronts.
//!
//! Runs are evaluated here, on the node that received the request, never in
//! apply; the finished run is then written to the shard group its id hashes
//! to. Compiled versions are cached by (policy, version): a version never
//! changes, and policy ids are random, so an entry can never go stale.

mod backtest;
mod deps;
mod effects;
pub mod jobs;

pub use jobs::PolicyKindCheck;
mod retention;
mod run_keys;
mod runs;
mod shadow;
mod sources;
mod store;
mod subpolicy;

pub use shadow::{agrees, Comparison, SHADOW_VERSION};

pub use crate::netguard::HttpAllowlist;
pub use effects::enqueue_dedupe_key;
pub use runs::RunRequest;
pub use sources::{parse_source, source_json};

use crate::api::{lock, now_ms, ApiError};
use crate::node::Node;
use crate::service::jobs::JobsService;
use crate::service::kv::KvService;
use crate::service::vectors::VectorsService;
use effects::HttpCache;
use orrery_policy::graph::{compile, parse_graph, Catalog, Compiled, NODE_TYPES_VERSION};
use orrery_policy::store::{
    Policy, PolicyCommand, PolicyQuery, PolicyQueryResult, PolicyResponse, Version,
};
use orrery_types::PLACEMENT_GROUP;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use store::unexpected;

pub const MAX_BATCH: usize = 10_000;
/// Bytes of one version's graph, as JSON.
pub const MAX_GRAPH_BYTES: usize = 1 << 20;

/// The node's policy settings (`orrery serve` flags).
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// Addresses and hosts `http` data sources may reach although they are
    /// loopback, private, link-local... (`--http-sources-allow`).
    pub http_allow: HttpAllowlist,
    /// The largest deadline a version may ask for, in ms
    /// (`--policy-max-deadline-ms`).
    pub max_deadline_ms: u64,
    /// How long runs are kept when their policy names no retention
    /// (`--policy-run-retention-s`); 7 days by default.
    pub run_retention_ms: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            http_allow: HttpAllowlist::default(),
            max_deadline_ms: orrery_policy::limits::DEFAULT_MAX_DEADLINE_MS,
            run_retention_ms: orrery_policy::store_ext::DEFAULT_RUN_RETENTION_MS,
        }
    }
}
pub const MAX_RUN_LIST: usize = 1_000;
pub const DEFAULT_RUN_LIST: usize = 100;

pub struct PoliciesService {
    node: Arc<Node>,
    /// Lookups of `kv` data sources.
    kv: Arc<KvService>,
    /// Job submissions and vector searches.
    deps: deps::Deps,
    compiled: Mutex<HashMap<(String, u32), Arc<Compiled>>>,
    /// Responses of `http` data sources with a `cache_ttl_ms`.
    http_cache: HttpCache,
    /// For `http` sources: no redirects, no proxies, every address checked
    /// (see [`crate::netguard`]). An error when it could not be built: then every
    /// http lookup fails with it.
    http_client: Result<reqwest::Client, String>,
    /// The threads CEL runs on (see [`effects`]); `None` when they could
    /// not be started, and then tokio's blocking pool runs it.
    cpu_pool: Option<rayon::ThreadPool>,
    /// The threads batches run on, over every core: a pool of their own
    /// so that a batch never queues the sync runs' jobs behind its inputs.
    batch_pool: Option<rayon::ThreadPool>,
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

impl PoliciesService {
    pub fn new(
        node: Arc<Node>,
        kv: Arc<KvService>,
        vectors: Arc<VectorsService>,
        jobs: Arc<JobsService>,
    ) -> Self {
        Self {
            kv,
            deps: deps::Deps::new(jobs, vectors),
            compiled: Default::default(),
            http_cache: Default::default(),
            http_client: effects::http_client(&node.cfg.policies.http_allow),
            cpu_pool: effects::cpu_pool("policy-cel"),
            batch_pool: effects::cpu_pool("policy-batch"),
            node,
        }
    }

    async fn write(&self, group: u64, cmd: PolicyCommand) -> Result<PolicyResponse, ApiError> {
        store::write(&self.node, group, cmd).await
    }

    async fn read(&self, group: u64, q: PolicyQuery) -> Result<PolicyQueryResult, ApiError> {
        store::read(&self.node, group, q).await
    }

    /// A policy by id, or by name.
    pub async fn get(&self, id: &str) -> Result<Policy, ApiError> {
        store::policy_get(&self.node, id).await
    }

    pub async fn list(&self) -> Result<Vec<Policy>, ApiError> {
        match self.read(PLACEMENT_GROUP, PolicyQuery::Policies).await? {
            PolicyQueryResult::Policies(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    pub async fn create(&self, name: String, description: String) -> Result<Policy, ApiError> {
        check_name("name", &name)?;
        let id = format!("pol-{:016x}", rand::random::<u64>());
        let cmd = PolicyCommand::CreatePolicy {
            id,
            name,
            description,
            now_ms: now_ms(),
        };
        self.write_policy(cmd).await
    }

    /// Writes a command whose answer is the policy it created or changed.
    async fn write_policy(&self, cmd: PolicyCommand) -> Result<Policy, ApiError> {
        match self.write(PLACEMENT_GROUP, cmd).await? {
            PolicyResponse::Policy(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// Sets the description and/or the traffic allocation (version, weight).
    pub async fn update(
        &self,
        id: &str,
        description: Option<String>,
        allocation: Option<Vec<(u32, u64)>>,
    ) -> Result<Policy, ApiError> {
        let p = self.get(id).await?;
        let cmd = PolicyCommand::UpdatePolicy {
            id: p.id,
            description,
            allocation,
            now_ms: now_ms(),
        };
        self.write_policy(cmd).await
    }

    pub async fn delete(&self, id: &str) -> Result<(), ApiError> {
        let p = self.get(id).await?;
        self.write(PLACEMENT_GROUP, PolicyCommand::DeletePolicy { id: p.id })
            .await
            .map(|_| ())
    }

    /// Validates the graph against the current catalog, then stores it as
    /// the policy's next version.
    pub async fn version_create(
        &self,
        id: &str,
        graph: &Json,
        activate: bool,
        created_by: String,
    ) -> Result<Version, ApiError> {
        let p = self.get(id).await?;
        let size = graph.to_string().len();
        if size > MAX_GRAPH_BYTES {
            return Err(ApiError::TooLarge(format!(
                "the graph is {size} bytes of JSON; at most {MAX_GRAPH_BYTES} are allowed"
            )));
        }
        let g = parse_graph(graph)?;
        let max = self.node.cfg.policies.max_deadline_ms;
        if let Some(d) = g.deadline_ms.filter(|d| *d > max) {
            return Err(ApiError::bad(
                "invalid_graph",
                format!("deadline_ms {d} is above this node's maximum of {max} ms (--policy-max-deadline-ms)"),
            ));
        }
        let catalog = Catalog {
            data_sources: self
                .data_sources()
                .await?
                .into_iter()
                .map(|s| (s.name, s.kind.name().to_string()))
                .collect(),
            queues: Some(self.deps.queue_names().await?.into_iter().collect()),
        };
        let c = compile(&g, &catalog)?;
        // The node types of cluster version 4: refused, as the gate
        // refuses a command, until every node can evaluate them.
        if c.uses_v4_nodes() {
            self.node.require_version(NODE_TYPES_VERSION).await?;
        }
        self.check_sub_policies(&p, &c).await?;
        // Stored exactly as submitted: GET returns what was validated.
        let cmd = PolicyCommand::CreateVersion {
            policy_id: p.id,
            graph: graph.to_string(),
            created_by,
            activate,
            now_ms: now_ms(),
        };
        match self.write(PLACEMENT_GROUP, cmd).await? {
            PolicyResponse::Version(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    pub async fn version_archive(&self, id: &str, version: u32) -> Result<Version, ApiError> {
        let p = self.get(id).await?;
        let cmd = PolicyCommand::ArchiveVersion {
            policy_id: p.id,
            version,
            now_ms: now_ms(),
        };
        match self.write(PLACEMENT_GROUP, cmd).await? {
            PolicyResponse::Version(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    pub async fn versions(&self, id: &str) -> Result<Vec<Version>, ApiError> {
        let p = self.get(id).await?;
        let q = PolicyQuery::Versions { policy_id: p.id };
        match self.read(PLACEMENT_GROUP, q).await? {
            PolicyQueryResult::Versions(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Version `version` of the policy with id `policy_id` (not a name).
    pub async fn version_get(&self, policy_id: &str, version: u32) -> Result<Version, ApiError> {
        store::version_get(&self.node, policy_id, version).await
    }

    /// A version's graph, compiled once per (policy, version).
    async fn compiled(&self, policy_id: &str, version: u32) -> Result<Arc<Compiled>, ApiError> {
        let key = (policy_id.to_string(), version);
        if let Some(c) = lock(&self.compiled).get(&key) {
            return Ok(c.clone());
        }
        let v = self.version_get(policy_id, version).await?;
        let g: Json =
            serde_json::from_str(&v.graph).map_err(|e| ApiError::Internal(e.to_string()))?;
        let g = parse_graph(&g)?;
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
        let c = compile(&g, &catalog)?;
        lock(&self.compiled).insert(key, c.clone());
        Ok(c)
    }
}
