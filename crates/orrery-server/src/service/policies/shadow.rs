//! Cluster version 5 in the service: policy settings (shadow version, run
//! retention), the shadow's side-effect-free evaluation, and the
//! comparison of live and shadow outputs.
//!
//! Every read here asks a version-5 query only once the cluster's active
//! version is 5 (every node decodes it); below that the old queries answer
//! and settings are "none".

use super::effects::PolicyEffects;
use super::store::unexpected;
use super::{PoliciesService, MAX_RUN_LIST};
use crate::api::{now_ms, ApiError};
use futures::future::BoxFuture;
use orrery_policy::eval::{check_input, evaluate, Effects, Job};
use orrery_policy::graph::Compiled;
use orrery_policy::store::{
    Policy, PolicyCommand, PolicyQuery, PolicyQueryResult, PolicyResponse, RunFilter,
};
use orrery_policy::store_ext::{PolicySettings, RunFilterExt, RunRecord, ShadowResult};
use orrery_types::PLACEMENT_GROUP;
use serde_json::Value as Json;
use std::sync::Mutex;
use std::time::Instant;

/// The cluster version of shadow versions, run retention and stored
/// terminations (orrery-raft's `version.rs`).
pub const SHADOW_VERSION: u32 = 5;

/// Effects of a shadow evaluation: lookups read (a shadow must see the
/// data the live version sees to be compared with it), CPU work runs as
/// usual, and enqueue nodes submit nothing: each is recorded as "would
/// enqueue" instead.
pub(super) struct ShadowEffects<'s> {
    pub(super) inner: PolicyEffects<'s>,
    pub(super) would: Mutex<Vec<String>>,
}

impl Effects for ShadowEffects<'_> {
    fn lookup<'a>(&'a self, source: &'a str, key: &'a str) -> BoxFuture<'a, Result<Json, String>> {
        self.inner.lookup(source, key)
    }

    fn compute<'a>(&'a self, job: Job, deadline: Instant) -> BoxFuture<'a, Result<(), String>> {
        self.inner.compute(job, deadline)
    }

    fn enqueue<'a>(
        &'a self,
        node: &'a str,
        queue: &'a str,
        kind: &'a str,
        _params: Json,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            orrery_policy::graph::refuse_kind(kind)?;
            crate::api::lock(&self.would).push(format!("{node} -> {queue}"));
            Ok(None)
        })
    }

    // A shadow's sub-policies resolve as the live run's do (and their
    // enqueues come back through `enqueue` above: nothing is submitted).
    fn sub_policy<'a>(
        &'a self,
        policy: &'a str,
        version: Option<u32>,
    ) -> BoxFuture<'a, Result<(u32, std::sync::Arc<Compiled>), String>> {
        self.inner.sub_policy(policy, version)
    }
}

/// Agreement of a page of shadowed runs.
#[derive(Debug, Default)]
pub struct Comparison {
    pub compared: usize,
    pub agreed: usize,
    /// Runs whose shadow failed (they count as differing too when the live
    /// run succeeded).
    pub shadow_failed: usize,
    /// (run id, live version, shadow version) of the runs that differ.
    pub differing: Vec<(String, u32, u32)>,
    pub next_cursor: Option<String>,
}

/// Whether the live run and its shadow agree: both succeeded with equal
/// outputs (as JSON values, so key order and spacing do not matter), or
/// both failed.
pub fn agrees(r: &RunRecord) -> bool {
    let Some(sh) = &r.ext.shadow else {
        return false;
    };
    let live_ok = r.run.error.is_none();
    let shadow_ok = sh.error.is_none();
    if live_ok != shadow_ok {
        return false;
    }
    let parse = |s: &Option<String>| {
        s.as_deref()
            .map(|t| serde_json::from_str::<Json>(t).unwrap_or(Json::String(t.into())))
    };
    !live_ok || parse(&r.run.output) == parse(&sh.output)
}

impl PoliciesService {
    /// Whether the cluster runs version 5 (this node's copy of the record:
    /// it may lag, which only delays the new format).
    pub(super) fn shadow_active(&self) -> bool {
        self.node
            .version_local()
            .active
            .min(crate::node::version::supported())
            >= SHADOW_VERSION
    }

    fn too_low(&self) -> ApiError {
        ApiError::ClusterVersionTooLow {
            required: SHADOW_VERSION,
            active: self.node.version_local().active,
        }
    }

    /// A policy by id or name, with its settings.
    pub async fn get_full(&self, id: &str) -> Result<(Policy, PolicySettings), ApiError> {
        if !self.shadow_active() {
            return Ok((self.get(id).await?, PolicySettings::default()));
        }
        let q = PolicyQuery::PolicyFull {
            id_or_name: id.into(),
        };
        match self.read(PLACEMENT_GROUP, q).await? {
            PolicyQueryResult::PolicyFull(Some(p)) => Ok(p),
            PolicyQueryResult::PolicyFull(None) => {
                Err(ApiError::NotFound(format!("policy {id:?} not found")))
            }
            other => Err(unexpected(other)),
        }
    }

    pub async fn list_full(&self) -> Result<Vec<(Policy, PolicySettings)>, ApiError> {
        if !self.shadow_active() {
            let ps = self.list().await?;
            return Ok(ps.into_iter().map(|p| (p, Default::default())).collect());
        }
        match self
            .read(PLACEMENT_GROUP, PolicyQuery::PoliciesFull)
            .await?
        {
            PolicyQueryResult::PoliciesFull(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// Sets (`Some(Some)`), clears (`Some(None)`) or keeps (`None`) the
    /// shadow version and the run retention. The shadow version must exist
    /// (400 `invalid_shadow_version`) and not be archived (409).
    pub async fn settings_set(
        &self,
        id: &str,
        shadow_version: Option<Option<u32>>,
        run_retention_ms: Option<Option<u64>>,
    ) -> Result<(Policy, PolicySettings), ApiError> {
        let p = self.get(id).await?;
        if let Some(Some(v)) = shadow_version {
            match self.version_get(&p.id, v).await {
                Ok(ver) if ver.archived => {
                    return Err(ApiError::Conflict(format!(
                        "shadow version {v} is archived"
                    )))
                }
                Ok(_) => {}
                Err(ApiError::NotFound(m)) => {
                    return Err(ApiError::bad("invalid_shadow_version", m))
                }
                Err(e) => return Err(e),
            }
        }
        let cmd = PolicyCommand::SetPolicySettings {
            id: p.id,
            shadow_version,
            run_retention_ms,
            now_ms: now_ms(),
        };
        // Refused by the gate (409 cluster_version_too_low) before version 5.
        match self.write(PLACEMENT_GROUP, cmd).await {
            Ok(PolicyResponse::PolicySettings(ps)) => Ok(*ps),
            Ok(other) => Err(unexpected(other)),
            // The state machine's own check (a race with a version change).
            Err(ApiError::BadRequest { message, .. }) => {
                Err(ApiError::bad("invalid_settings", message))
            }
            Err(e) => Err(e),
        }
    }

    /// Evaluates version `version` of the run's policy on `input` as a
    /// shadow: no job is submitted, and whatever goes wrong is recorded in
    /// the result rather than returned.
    pub(super) async fn shadow_eval(
        &self,
        policy_id: &str,
        version: u32,
        input: &Json,
        alloc_key: &str,
    ) -> ShadowResult {
        let mut res = ShadowResult {
            version,
            output: None,
            error: None,
            would_enqueue: Vec::new(),
        };
        let c: std::sync::Arc<Compiled> = match self.compiled(policy_id, version).await {
            Ok(c) => c,
            Err(e) => {
                res.error = Some(format!("shadow version {version}: {e}"));
                return res;
            }
        };
        let input = match check_input(&c, input) {
            Ok(v) => v,
            Err(e) => {
                res.error = Some(e.to_string());
                return res;
            }
        };
        let fx = match self.effects(&c, None, alloc_key).await {
            Ok(inner) => ShadowEffects {
                inner,
                would: Mutex::new(Vec::new()),
            },
            Err(e) => {
                res.error = Some(e.to_string());
                return res;
            }
        };
        let o = evaluate(&c, input, &fx, self.budget(&c)).await;
        res.output = o
            .output
            .as_ref()
            .map(|v| serde_json::to_string(v).unwrap_or_default());
        res.error = o.error;
        res.would_enqueue = std::mem::take(&mut *crate::api::lock(&fx.would));
        res
    }

    /// The runs of policy `id` that have a shadow result (a page of at
    /// most `limit`, newest first, in [since, until)), and how many agree.
    pub async fn compare(
        &self,
        id: &str,
        since_ms: Option<u64>,
        until_ms: Option<u64>,
        limit: usize,
        before: Option<String>,
    ) -> Result<Comparison, ApiError> {
        if !self.shadow_active() {
            return Err(self.too_low());
        }
        let p = self.get(id).await?;
        let f = RunFilterExt {
            base: RunFilter {
                policy_id: Some(p.id),
                version: None,
                status: None,
                before,
                limit,
            },
            since_ms,
            until_ms,
            outcome: None,
            shadowed: true,
        };
        let (runs, next_cursor) = self.runs_list_full(f).await?;
        let mut c = Comparison {
            next_cursor,
            ..Default::default()
        };
        for r in &runs {
            c.compared += 1;
            let sh = r.ext.shadow.as_ref();
            if sh.is_some_and(|s| s.error.is_some()) {
                c.shadow_failed += 1;
            }
            if agrees(r) {
                c.agreed += 1;
            } else {
                let sv = sh.map_or(0, |s| s.version);
                c.differing.push((r.run.id.clone(), r.run.version, sv));
            }
        }
        Ok(c)
    }

    /// Newest first across every shard, with the extras and the filters of
    /// version 5 (refused with 409 `cluster_version_too_low` before it,
    /// when one of them is asked for).
    pub async fn runs_list_full(
        &self,
        mut f: RunFilterExt,
    ) -> Result<(Vec<RunRecord>, Option<String>), ApiError> {
        if !self.shadow_active() {
            let wants_new =
                f.since_ms.is_some() || f.until_ms.is_some() || f.outcome.is_some() || f.shadowed;
            if wants_new {
                return Err(self.too_low());
            }
            let (runs, cursor) = self.runs_list(f.base).await?;
            let runs = runs
                .into_iter()
                .map(|run| RunRecord {
                    run,
                    ext: Default::default(),
                })
                .collect();
            return Ok((runs, cursor));
        }
        if f.base.limit == 0 || f.base.limit > MAX_RUN_LIST {
            return Err(ApiError::bad(
                "invalid_limit",
                format!("limit must be 1..={MAX_RUN_LIST}"),
            ));
        }
        if let Some(p) = &f.base.policy_id {
            f.base.policy_id = Some(self.get(p).await?.id);
        }
        let futs = self.node.shard_groups()?.into_iter().map(|g| {
            let q = PolicyQuery::RunsFull(f.clone());
            async move { self.read(g, q).await }
        });
        let mut runs = Vec::new();
        for r in futures::future::join_all(futs).await {
            match r? {
                PolicyQueryResult::RunsFull(mut part) => runs.append(&mut part),
                other => return Err(unexpected(other)),
            }
        }
        runs.sort_by(|a, b| b.run.id.cmp(&a.run.id));
        runs.truncate(f.base.limit);
        let cursor = (runs.len() == f.base.limit)
            .then(|| runs.last().map(|r| r.run.id.clone()))
            .flatten();
        Ok((runs, cursor))
    }

    /// A run with its extras (none before version 5).
    pub async fn run_get_full(&self, id: &str) -> Result<RunRecord, ApiError> {
        if !self.shadow_active() || id.is_empty() {
            let run = self.run_get(id).await?;
            return Ok(RunRecord {
                run,
                ext: Default::default(),
            });
        }
        let group = super::run_keys::run_group(&self.node, id)?;
        match self
            .read(group, PolicyQuery::RunFull { id: id.into() })
            .await?
        {
            PolicyQueryResult::RunFull(Some(r)) => Ok(*r),
            PolicyQueryResult::RunFull(None) => {
                Err(ApiError::NotFound(format!("run {id:?} not found")))
            }
            other => Err(unexpected(other)),
        }
    }
}
