//! The policy domain module: a deterministic state machine.
//!
//! The catalog (policies, their names and versions, data sources) lives in
//! the placement group; runs live in shard groups, by a hash of the run id.
//! Every group holds a [`PolicyState`]; each uses only its half.
//!
//! JSON documents (graphs, inputs, outputs, traces) are stored as text:
//! the snapshot format (bincode) cannot carry self-describing JSON values.
//! No command can change a version's graph: versions are only created,
//! archived or deleted with their policy.

use crate::store_ext::{PolicyExt, PolicySettings, RunExt, RunFilterExt, RunRecord};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// (version, weight): which versions receive traffic.
    pub allocation: Vec<(u32, u64)>,
    /// The highest version number given out.
    pub latest_version: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub policy_id: String,
    pub version: u32,
    /// The graph as JSON text, exactly as validated.
    pub graph: String,
    pub created_by: String,
    pub created_ms: u64,
    pub archived: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataSourceKind {
    /// `key_template` with `{key}` replaced by the lookup key, read from the
    /// KV namespace; the value is JSON (or taken as a string).
    Kv { key_template: String },
    /// `url_template` with `{key}` replaced (URL-encoded).
    Http {
        url_template: String,
        method: String,
        timeout_ms: u64,
        retries: u32,
        cache_ttl_ms: u64,
    },
    /// Nearest neighbours in a vector collection. The lookup key is the
    /// query vector, or an object holding it under `field`.
    Vector {
        collection: String,
        k: u32,
        field: String,
        /// A vector search filter, as JSON text (see docs/api.md).
        filter: Option<String>,
        with_payload: bool,
    },
}

impl DataSourceKind {
    pub fn name(&self) -> &'static str {
        match self {
            DataSourceKind::Kv { .. } => "kv",
            DataSourceKind::Http { .. } => "http",
            DataSourceKind::Vector { .. } => "vector",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSource {
    pub name: String,
    pub kind: DataSourceKind,
    pub created_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Sorts by creation time: 12 hex digits of ms, then 16 random ones.
    pub id: String,
    pub policy_id: String,
    pub version: u32,
    pub status: RunStatus,
    pub run_key: Option<String>,
    pub input: String,
    pub output: Option<String>,
    pub trace: String,
    pub error: Option<String>,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyCommand {
    CreatePolicy {
        id: String,
        name: String,
        description: String,
        now_ms: u64,
    },
    UpdatePolicy {
        id: String,
        description: Option<String>,
        allocation: Option<Vec<(u32, u64)>>,
        now_ms: u64,
    },
    DeletePolicy {
        id: String,
    },
    /// The next version number is assigned here, so concurrent creators
    /// never collide.
    CreateVersion {
        policy_id: String,
        graph: String,
        created_by: String,
        activate: bool,
        now_ms: u64,
    },
    ArchiveVersion {
        policy_id: String,
        version: u32,
        now_ms: u64,
    },
    CreateDataSource {
        source: DataSource,
    },
    DeleteDataSource {
        name: String,
    },
    /// Records a run (a new one, or the final state of a running one).
    PutRun {
        run: Run,
    },
    // Cluster version 5 (see `store_ext`): appended, bincode stores the
    // variant index.
    /// Sets (`Some(Some)`), clears (`Some(None)`) or keeps (`None`) a
    /// policy's shadow version and run retention.
    SetPolicySettings {
        id: String,
        shadow_version: Option<Option<u32>>,
        run_retention_ms: Option<Option<u64>>,
        now_ms: u64,
    },
    /// [`PolicyCommand::PutRun`] with the run's extras.
    PutRunV2 {
        run: Run,
        ext: RunExt,
    },
    /// Forgets up to `max` finished runs created at least their policy's
    /// retention (`retention`, else `default_retention_ms`) before
    /// `now_ms`. The leader stamps the time and the retentions, so every
    /// replica forgets the same runs.
    PruneRuns {
        now_ms: u64,
        default_retention_ms: u64,
        retention: Vec<(String, u64)>,
        max: u32,
    },
    // Cluster version 6 (see `store_keys`).
    /// Records a new run requested with a `run_key` unless its policy
    /// already has a run with that key here: then answers with that run
    /// ([`PolicyResponse::RunExisting`]) when the inputs are equal, else
    /// a conflict. Nothing is written in either case.
    PutRunOnce {
        run: Run,
        ext: RunExt,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyResponse {
    Policy(Policy),
    Version(Version),
    Deleted,
    DataSource(DataSource),
    RunStored,
    NotFound(String),
    Conflict(String),
    Rejected(String),
    // Cluster version 5.
    PolicySettings(Box<(Policy, PolicySettings)>),
    RunsPruned(u32),
    // Cluster version 6.
    RunExisting(Box<RunRecord>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFilter {
    pub policy_id: Option<String>,
    pub version: Option<u32>,
    pub status: Option<RunStatus>,
    /// Only runs with ids below this one (the previous page's last id).
    pub before: Option<String>,
    pub limit: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyQuery {
    Policy {
        id: String,
    },
    PolicyByName {
        name: String,
    },
    Policies,
    Versions {
        policy_id: String,
    },
    Version {
        policy_id: String,
        version: u32,
    },
    DataSources,
    Run {
        id: String,
    },
    Runs(RunFilter),
    // Cluster version 5: asked only once every node decodes them.
    /// A policy by id, else by name, with its settings.
    PolicyFull {
        id_or_name: String,
    },
    PoliciesFull,
    RunFull {
        id: String,
    },
    RunsFull(RunFilterExt),
    // Cluster version 6: the run of a policy with a run key.
    RunByKey {
        policy_id: String,
        run_key: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyQueryResult {
    Policy(Option<Policy>),
    Policies(Vec<Policy>),
    Versions(Vec<Version>),
    Version(Option<Version>),
    DataSources(Vec<DataSource>),
    Run(Option<Run>),
    Runs(Vec<Run>),
    // Cluster version 5.
    PolicyFull(Option<(Policy, PolicySettings)>),
    PoliciesFull(Vec<(Policy, PolicySettings)>),
    RunFull(Option<Box<RunRecord>>),
    RunsFull(Vec<RunRecord>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyState {
    pub(crate) policies: BTreeMap<String, Policy>,
    names: BTreeMap<String, String>,
    pub(crate) versions: BTreeMap<(String, u32), Version>,
    sources: BTreeMap<String, DataSource>,
    pub(crate) runs: BTreeMap<String, Run>,
    /// Cluster version 5's data: not part of the base encoding (see
    /// [`PolicyState::snapshot`]).
    #[serde(skip)]
    pub(crate) ext: PolicyExt,
    /// (created_ms, run id) per policy id: derived from `runs` (rebuilt on
    /// restore), so that a prune finds the oldest runs without a scan.
    #[serde(skip)]
    pub(crate) run_index: BTreeMap<String, BTreeSet<(u64, String)>>,
    /// (policy id, run key) -> ids of the runs with that key: derived
    /// from `runs` like `run_index` (see `store_keys`).
    #[serde(skip)]
    pub(crate) run_keys: BTreeMap<(String, String), BTreeSet<String>>,
}

fn check_allocation(
    versions: &BTreeMap<(String, u32), Version>,
    id: &str,
    alloc: &[(u32, u64)],
) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for (v, _) in alloc {
        match versions.get(&(id.to_string(), *v)) {
            None => {
                return Err(format!(
                    "allocation names version {v}, which does not exist"
                ))
            }
            Some(ver) if ver.archived => {
                return Err(format!("allocation names version {v}, which is archived"))
            }
            _ => {}
        }
        if !seen.insert(*v) {
            return Err(format!("allocation names version {v} twice"));
        }
    }
    if !alloc.is_empty() && alloc.iter().map(|(_, w)| *w).sum::<u64>() == 0 {
        return Err("allocation weights sum to 0".into());
    }
    Ok(())
}

impl PolicyState {
    pub fn apply(&mut self, cmd: PolicyCommand) -> PolicyResponse {
        match cmd {
            PolicyCommand::CreatePolicy {
                id,
                name,
                description,
                now_ms,
            } => {
                if let Some(other) = self.names.get(&name) {
                    return PolicyResponse::Conflict(format!(
                        "a policy named {name:?} already exists ({other})"
                    ));
                }
                if self.policies.contains_key(&id) {
                    return PolicyResponse::Conflict(format!("policy id {id} is taken"));
                }
                let p = Policy {
                    id: id.clone(),
                    name: name.clone(),
                    description,
                    created_ms: now_ms,
                    updated_ms: now_ms,
                    allocation: Vec::new(),
                    latest_version: 0,
                };
                self.names.insert(name, id.clone());
                self.policies.insert(id, p.clone());
                PolicyResponse::Policy(p)
            }
            PolicyCommand::UpdatePolicy {
                id,
                description,
                allocation,
                now_ms,
            } => {
                let Some(p) = self.policies.get(&id) else {
                    return PolicyResponse::NotFound(format!("policy {id} not found"));
                };
                if let Some(a) = &allocation {
                    if let Err(e) = check_allocation(&self.versions, &id, a) {
                        return PolicyResponse::Rejected(e);
                    }
                }
                let mut p = p.clone();
                if let Some(d) = description {
                    p.description = d;
                }
                if let Some(a) = allocation {
                    p.allocation = a;
                }
                p.updated_ms = p.updated_ms.max(now_ms);
                self.policies.insert(id, p.clone());
                PolicyResponse::Policy(p)
            }
            PolicyCommand::DeletePolicy { id } => match self.policies.remove(&id) {
                None => PolicyResponse::NotFound(format!("policy {id} not found")),
                Some(p) => {
                    self.names.remove(&p.name);
                    self.ext.settings.remove(&id);
                    self.versions.retain(|(pid, _), _| *pid != id);
                    PolicyResponse::Deleted
                }
            },
            PolicyCommand::CreateVersion {
                policy_id,
                graph,
                created_by,
                activate,
                now_ms,
            } => {
                let Some(p) = self.policies.get_mut(&policy_id) else {
                    return PolicyResponse::NotFound(format!("policy {policy_id} not found"));
                };
                p.latest_version += 1;
                p.updated_ms = p.updated_ms.max(now_ms);
                let v = Version {
                    policy_id: policy_id.clone(),
                    version: p.latest_version,
                    graph,
                    created_by,
                    created_ms: now_ms,
                    archived: false,
                };
                if activate || p.allocation.is_empty() {
                    p.allocation = vec![(v.version, 100)];
                }
                self.versions.insert((policy_id, v.version), v.clone());
                PolicyResponse::Version(v)
            }
            PolicyCommand::ArchiveVersion {
                policy_id,
                version,
                now_ms,
            } => {
                let in_use = self
                    .policies
                    .get(&policy_id)
                    .is_some_and(|p| p.allocation.iter().any(|(v, w)| *v == version && *w > 0));
                let is_shadow = self.is_shadow(&policy_id, version);
                let Some(v) = self.versions.get_mut(&(policy_id.clone(), version)) else {
                    return PolicyResponse::NotFound(format!(
                        "version {version} of policy {policy_id} not found"
                    ));
                };
                if in_use {
                    return PolicyResponse::Conflict(format!(
                        "version {version} receives traffic; change the allocation first"
                    ));
                }
                if is_shadow {
                    return PolicyResponse::Conflict(format!(
                        "version {version} is the policy's shadow version; clear or change it first"
                    ));
                }
                v.archived = true;
                let v = v.clone();
                if let Some(p) = self.policies.get_mut(&policy_id) {
                    p.updated_ms = p.updated_ms.max(now_ms);
                }
                PolicyResponse::Version(v)
            }
            PolicyCommand::CreateDataSource { source } => {
                if self.sources.contains_key(&source.name) {
                    return PolicyResponse::Conflict(format!(
                        "data source {:?} already exists",
                        source.name
                    ));
                }
                self.sources.insert(source.name.clone(), source.clone());
                PolicyResponse::DataSource(source)
            }
            PolicyCommand::DeleteDataSource { name } => match self.sources.remove(&name) {
                Some(_) => PolicyResponse::Deleted,
                None => PolicyResponse::NotFound(format!("data source {name:?} not found")),
            },
            PolicyCommand::PutRun { run } => self.put_run(run, RunExt::default()),
            PolicyCommand::PutRunV2 { run, ext } => self.put_run(run, ext),
            PolicyCommand::SetPolicySettings {
                id,
                shadow_version,
                run_retention_ms,
                now_ms,
            } => self.set_settings(id, shadow_version, run_retention_ms, now_ms),
            PolicyCommand::PruneRuns {
                now_ms,
                default_retention_ms,
                retention,
                max,
            } => self.prune_runs(now_ms, default_retention_ms, retention, max),
            PolicyCommand::PutRunOnce { run, ext } => self.put_run_once(run, ext),
        }
    }

    pub(crate) fn put_run(&mut self, run: Run, ext: RunExt) -> PolicyResponse {
        // A finished run is final: a late "running" write (e.g. a
        // retried async start) must not resurrect it.
        if let Some(old) = self.runs.get(&run.id) {
            if old.status != RunStatus::Running {
                return PolicyResponse::RunStored;
            }
            let key = (old.created_ms, old.id.clone());
            let old = old.clone();
            self.unkey_run(&old);
            if let Some(set) = self.run_index.get_mut(&old.policy_id) {
                set.remove(&key);
                // No empty sets: the index is derived, and a restored
                // state (which rebuilds it) must equal this one.
                if set.is_empty() {
                    self.run_index.remove(&old.policy_id);
                }
            }
        }
        self.index_run(&run);
        if ext.is_empty() {
            self.ext.runs.remove(&run.id);
        } else {
            self.ext.runs.insert(run.id.clone(), ext);
        }
        self.runs.insert(run.id.clone(), run);
        PolicyResponse::RunStored
    }

    pub(crate) fn index_run(&mut self, run: &Run) {
        self.key_run(run);
        self.run_index
            .entry(run.policy_id.clone())
            .or_default()
            .insert((run.created_ms, run.id.clone()));
    }

    pub fn query(&self, q: &PolicyQuery) -> PolicyQueryResult {
        match q {
            PolicyQuery::Policy { id } => PolicyQueryResult::Policy(self.policies.get(id).cloned()),
            PolicyQuery::PolicyByName { name } => PolicyQueryResult::Policy(
                self.names
                    .get(name)
                    .and_then(|id| self.policies.get(id))
                    .cloned(),
            ),
            PolicyQuery::Policies => PolicyQueryResult::Policies(
                self.names
                    .values()
                    .filter_map(|id| self.policies.get(id))
                    .cloned()
                    .collect(),
            ),
            PolicyQuery::Versions { policy_id } => PolicyQueryResult::Versions(
                self.versions
                    .range((policy_id.clone(), 0)..=(policy_id.clone(), u32::MAX))
                    .map(|(_, v)| v.clone())
                    .collect(),
            ),
            PolicyQuery::Version { policy_id, version } => PolicyQueryResult::Version(
                self.versions.get(&(policy_id.clone(), *version)).cloned(),
            ),
            PolicyQuery::DataSources => {
                PolicyQueryResult::DataSources(self.sources.values().cloned().collect())
            }
            PolicyQuery::Run { id } => PolicyQueryResult::Run(self.runs.get(id).cloned()),
            PolicyQuery::Runs(f) => PolicyQueryResult::Runs(self.list_runs(f)),
            PolicyQuery::PolicyFull { id_or_name } => {
                let p = self.policies.get(id_or_name).or_else(|| {
                    self.names
                        .get(id_or_name)
                        .and_then(|id| self.policies.get(id))
                });
                PolicyQueryResult::PolicyFull(p.map(|p| (p.clone(), self.settings(&p.id))))
            }
            PolicyQuery::PoliciesFull => PolicyQueryResult::PoliciesFull(
                self.names
                    .values()
                    .filter_map(|id| self.policies.get(id))
                    .map(|p| (p.clone(), self.settings(&p.id)))
                    .collect(),
            ),
            PolicyQuery::RunFull { id } => {
                PolicyQueryResult::RunFull(self.runs.get(id).map(|r| Box::new(self.record(r))))
            }
            PolicyQuery::RunsFull(f) => PolicyQueryResult::RunsFull(self.list_runs_full(f)),
            PolicyQuery::RunByKey { policy_id, run_key } => PolicyQueryResult::RunFull(
                self.run_by_key(policy_id, run_key)
                    .map(|r| Box::new(self.record(r))),
            ),
        }
    }

    /// Newest first: run ids sort by creation time.
    pub fn list_runs(&self, f: &RunFilter) -> Vec<Run> {
        let iter: Box<dyn Iterator<Item = &Run>> = match &f.before {
            Some(b) => Box::new(
                self.runs
                    .range::<String, _>(..b.clone())
                    .rev()
                    .map(|(_, r)| r),
            ),
            None => Box::new(self.runs.values().rev()),
        };
        iter.filter(|r| f.policy_id.as_ref().is_none_or(|p| *p == r.policy_id))
            .filter(|r| f.version.is_none_or(|v| v == r.version))
            .filter(|r| f.status.is_none_or(|s| s == r.status))
            .take(f.limit)
            .cloned()
            .collect()
    }

    /// The base record (bincode of the struct without its skipped fields:
    /// byte for byte the format of cluster versions 1-4), then, only when
    /// cluster version 5's data is present, its trailer (see `store_ext`).
    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        let mut out = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .map_err(|e| e.to_string())?;
        if !self.ext.is_empty() {
            out.extend(self.ext.encode_trailer()?);
        }
        Ok(out)
    }

    pub fn restore(data: &[u8]) -> Result<Self, String> {
        let (mut s, used): (Self, usize) =
            bincode::serde::decode_from_slice(data, bincode::config::standard())
                .map_err(|e| format!("policy snapshot: {e}"))?;
        s.ext = PolicyExt::decode_trailer(&data[used..])?;
        let runs: Vec<Run> = s.runs.values().cloned().collect();
        for r in &runs {
            s.index_run(r);
        }
        Ok(s)
    }
}
