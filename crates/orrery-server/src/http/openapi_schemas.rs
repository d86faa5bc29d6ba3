//! Schemas of the answers that handlers build as `serde_json::Value`
//! (cluster, KV, tokens, vectors, policies): the shapes only, for the
//! OpenAPI document. The typed views (jobs, queues, events) derive their
//! schemas where they are defined (`api/jobs_view.rs`). Kept honest by
//! schemathesis' response-schema check against a live cluster
//! (`scripts/schemathesis.sh`).
#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// `GET /healthz`.
#[derive(ToSchema, serde::Serialize)]
pub struct Health {
    #[schema(example = "ok")]
    status: String,
}

/// `GET /readyz`: this node has a placement leader.
#[derive(ToSchema, serde::Serialize)]
pub struct Ready {
    #[schema(example = "ready")]
    status: String,
    placement_leader: u64,
}

/// `GET /v1/cluster`: the cluster as this node knows it.
#[derive(ToSchema, serde::Serialize)]
pub struct ClusterView {
    cluster_id: String,
    node_id: u64,
    placement_leader: Option<u64>,
    members: Vec<MemberView>,
    shards: Vec<ShardView>,
    cluster_version: ClusterVersionBrief,
    /// The node runs with `--insecure` (no TLS, no authentication).
    insecure: bool,
}

#[derive(ToSchema, serde::Serialize)]
pub struct MemberView {
    id: u64,
    addr: String,
    peer_addr: String,
    /// `voter` or `learner`.
    state: String,
    /// Its declared capacity (`--capacity`; 1 unless set): replicas and
    /// leaders are given in proportion. Absent in a membership change's
    /// answer.
    capacity: Option<u32>,
    shards: Vec<u32>,
    /// The cluster version the member supports; absent when it did not answer.
    version: Option<u32>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct ShardView {
    id: u32,
    group: u64,
    name: String,
    replicas: Vec<u64>,
    epoch: u64,
    leader: Option<u64>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct ClusterVersionBrief {
    active: u32,
    supported: u32,
    held: bool,
}

/// `GET`/`POST /v1/cluster/version`.
#[derive(ToSchema, serde::Serialize)]
pub struct VersionView {
    active: u32,
    active_name: Option<String>,
    held: bool,
    supported: u32,
    nodes: Vec<NodeVersion>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct NodeVersion {
    id: u64,
    /// Null when the node did not answer.
    supported: Option<u32>,
    build: Option<String>,
}

// ---- KV ----

#[derive(ToSchema, serde::Serialize)]
pub struct KvRevision {
    revision: u64,
}

#[derive(ToSchema, serde::Serialize)]
pub struct KvDeleted {
    deleted: bool,
    revision: u64,
}

#[derive(ToSchema, serde::Serialize)]
pub struct KvPrefixDeleted {
    deleted: u64,
}

#[derive(ToSchema, serde::Serialize)]
pub struct KvList {
    count: u64,
    items: Vec<KvItem>,
}

/// `value` for UTF-8 values, `value_base64` for others.
#[derive(ToSchema, serde::Serialize)]
pub struct KvItem {
    key: String,
    value: Option<String>,
    value_base64: Option<String>,
    revision: u64,
}

/// `POST /v1/kv/{key}/cas`.
#[derive(ToSchema, serde::Serialize)]
pub struct CasBody {
    /// The current value, or null for create-if-absent.
    #[schema(required = true)]
    expected: Option<String>,
    value: String,
}

#[derive(ToSchema, serde::Serialize)]
pub struct CasDone {
    succeeded: bool,
    revision: u64,
}

/// A compare-and-swap that found another value (409).
#[derive(ToSchema, serde::Serialize)]
pub struct CasFailed {
    succeeded: bool,
    revision: u64,
    current: Option<String>,
}

// ---- tokens ----

#[derive(ToSchema, serde::Serialize)]
pub struct TokenView {
    id: String,
    name: String,
    /// admin, writer, reader or worker.
    role: String,
    queues: Option<Vec<String>>,
    created_ms: u64,
    expires_ms: Option<u64>,
    revoked_ms: Option<u64>,
}

/// A new token: the secret is shown this once.
#[derive(ToSchema, serde::Serialize)]
pub struct NewTokenView {
    #[schema(inline)]
    #[serde(flatten)]
    view: TokenView,
    #[schema(example = "orr_...")]
    token: String,
}

#[derive(ToSchema, serde::Serialize)]
pub struct TokenList {
    tokens: Vec<TokenView>,
}

// ---- queues ----

#[derive(ToSchema, serde::Serialize)]
pub struct QueueDeleted {
    deleted: bool,
    name: String,
}

#[derive(ToSchema, serde::Serialize)]
pub struct Heartbeat {
    cancelled: bool,
    lease_expires_ms: u64,
}

// ---- vectors ----

#[derive(ToSchema, serde::Serialize)]
pub struct CollectionView {
    name: String,
    dim: u64,
    metric: String,
    shards: u32,
    replication: u32,
    m: u64,
    ef_construction: u64,
    ef_search: u64,
}

#[derive(ToSchema, serde::Serialize)]
pub struct CollectionDetails {
    #[schema(inline)]
    #[serde(flatten)]
    config: CollectionView,
    points: u64,
    shard_states: Vec<ShardState>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct ShardState {
    shard: u32,
    points: u64,
    index: String,
    indexed_entries: u64,
}

#[derive(ToSchema, serde::Serialize)]
pub struct Collections {
    collections: Vec<CollectionView>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct Dropped {
    dropped: String,
}

#[derive(ToSchema, serde::Serialize)]
pub struct Upserted {
    upserted: u64,
}

#[derive(ToSchema, serde::Serialize)]
pub struct PointsDeleted {
    deleted: u64,
}

/// A point id: an unsigned integer or a UUID string.
#[derive(ToSchema, serde::Serialize)]
#[serde(untagged)]
#[schema(as = PointId)]
pub enum PointIdSchema {
    Num(u64),
    Uuid(String),
}

#[derive(ToSchema, serde::Serialize)]
pub struct PointView {
    id: PointIdSchema,
    vector: Vec<f32>,
    payload: BTreeMap<String, Value>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct Hit {
    id: PointIdSchema,
    score: f64,
    payload: Option<BTreeMap<String, Value>>,
    vector: Option<Vec<f32>>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct SearchAnswer {
    result: Vec<Hit>,
    took_ms: f64,
}

#[derive(ToSchema, serde::Serialize)]
pub struct BatchResult {
    result: Vec<Hit>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct BatchSearchAnswer {
    results: Vec<BatchResult>,
    took_ms: f64,
}

// ---- policies ----

#[derive(ToSchema, serde::Serialize)]
pub struct PolicyView {
    id: String,
    name: String,
    description: String,
    created: u64,
    updated: u64,
    allocation: Vec<WeightView>,
    latest_version: u32,
    /// The shadow (challenger) version evaluated next to the live one on
    /// every recorded run; null when none.
    shadow_version: Option<u32>,
    /// How long this policy's runs are kept; null: the node's default
    /// (`--policy-run-retention-s`, 7 days).
    run_retention_ms: Option<u64>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct WeightView {
    version: u32,
    weight: u64,
}

#[derive(ToSchema, serde::Serialize)]
pub struct Policies {
    policies: Vec<PolicyView>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct Deleted {
    deleted: bool,
}

#[derive(ToSchema, serde::Serialize)]
pub struct PolicyVersionView {
    policy_id: String,
    version: u32,
    /// The graph as created (docs/policies.md).
    graph: Value,
    created_by: String,
    created: u64,
    archived: bool,
}

#[derive(ToSchema, serde::Serialize)]
pub struct PolicyVersions {
    versions: Vec<PolicyVersionView>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct PolicyRunView {
    id: String,
    policy_id: String,
    version: u32,
    /// running, succeeded or failed.
    status: String,
    run_key: Option<String>,
    input: Value,
    output: Value,
    trace: Value,
    error: Option<String>,
    created: u64,
    finished: Option<u64>,
    /// What the policy's shadow version made of the same input; null when
    /// the policy had no shadow version.
    shadow: Option<ShadowView>,
    /// How a `terminate` node ended the run; null when none did.
    termination: Option<TerminationView>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct ShadowView {
    version: u32,
    output: Value,
    error: Option<String>,
    /// The enqueue nodes that would have submitted a job (`node -> queue`):
    /// a shadow submits nothing.
    would_enqueue: Vec<String>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct TerminationView {
    /// The status the terminate node named, e.g. `approved`.
    status: String,
    reason: Option<String>,
}

/// Live and shadow outputs compared over a page of shadowed runs.
#[derive(ToSchema, serde::Serialize)]
pub struct ShadowComparison {
    policy_id: String,
    /// The policy's shadow version now (null: none set).
    shadow_version: Option<u32>,
    /// Shadowed runs in this page.
    compared: u64,
    /// Runs whose live and shadow outputs are equal as JSON (or both failed).
    agreed: u64,
    differed: u64,
    /// Runs whose shadow evaluation failed.
    shadow_failed: u64,
    /// agreed / compared; null when nothing was compared.
    agreement_rate: Option<f64>,
    differing: Vec<DifferingRun>,
    /// Pass as `cursor` for the next (older) page.
    next_cursor: Option<String>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct DifferingRun {
    id: String,
    version: u32,
    shadow_version: u32,
}

#[derive(ToSchema, serde::Serialize)]
pub struct Runs {
    runs: Vec<PolicyRunView>,
    next_cursor: Option<String>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct BatchOutcome {
    /// succeeded or failed.
    status: String,
    output: Value,
    error: Option<String>,
    /// Set when a terminate node ended the evaluation.
    #[schema(nullable = false)]
    termination: Option<TerminationView>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct BatchRunAnswer {
    version: u32,
    results: Vec<BatchOutcome>,
}

/// A data source: `kv` (key_template), `http` (url_template, method,
/// timeout_ms, retries, cache_ttl_ms) or `vector` (collection, k,
/// vector_field, filter, with_payload).
#[derive(ToSchema, serde::Serialize)]
pub struct DataSourceView {
    name: String,
    kind: String,
    created: u64,
    key_template: Option<String>,
    url_template: Option<String>,
    method: Option<String>,
    timeout_ms: Option<u64>,
    retries: Option<u64>,
    cache_ttl_ms: Option<u64>,
    collection: Option<String>,
    k: Option<u64>,
    vector_field: Option<String>,
    filter: Option<Value>,
    with_payload: Option<bool>,
}

/// `POST /v1/data-sources`: the fields of [`DataSourceView`] but `created`.
#[derive(ToSchema, serde::Serialize)]
pub struct DataSourceBody {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    name: String,
    /// kv, http or vector.
    kind: String,
    key_template: Option<String>,
    url_template: Option<String>,
    method: Option<String>,
    timeout_ms: Option<u64>,
    retries: Option<u64>,
    cache_ttl_ms: Option<u64>,
    collection: Option<String>,
    k: Option<u64>,
    vector_field: Option<String>,
    filter: Option<Value>,
    with_payload: Option<bool>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct DataSources {
    data_sources: Vec<DataSourceView>,
}

// The job answers whose structs are local to their handlers.
pub use super::openapi_jobs::*;
