//! Runs: which version serves a request (the traffic allocation), the
//! evaluation, and the run's record on the shard its id hashes to; also
//! the unrecorded evaluations (batches, backtests) and run reads.

use super::effects::PolicyEffects;
use super::run_keys::{keyed_run_id, run_group};
use super::store::unexpected;
use super::{jobs, PoliciesService, MAX_BATCH, MAX_RUN_LIST};
use crate::api::{now_ms, ApiError};
use crate::node::Node;
use orrery_policy::eval::{check_input, evaluate, pick, Outcome};
use orrery_policy::graph::Compiled;
use orrery_policy::store::{
    Policy, PolicyCommand, PolicyQuery, PolicyQueryResult, Run, RunFilter, RunStatus,
};
use orrery_policy::store_ext::{RunExt, StoredTermination};
use orrery_policy::PolicyError;
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A run request, parsed.
pub struct RunRequest {
    pub input: Json,
    pub version: Option<u32>,
    pub run_key: Option<String>,
}

fn new_run_id(created: u64) -> String {
    format!("{created:012x}{:016x}", rand::random::<u64>())
}

/// Random ids tried for a run whose group this node leads.
const LOCAL_ID_TRIES: usize = 16;

/// A new run id, preferably one routed to a shard group this node leads:
/// the id is random anyway, and recording the run then needs no hop to
/// another node's leader (a sync run's write is half its latency). With
/// S groups and this node leading L of them, 16 tries miss with
/// probability (1 - L/S)^16: 1 % for one group in eight. Keyed runs keep
/// their key-derived ids (every attempt must reach the same group).
fn local_run_id(node: &Node, created: u64) -> String {
    let mut id = new_run_id(created);
    for _ in 0..LOCAL_ID_TRIES {
        if run_group(node, &id).is_ok_and(|g| node.leads(g)) {
            break;
        }
        id = new_run_id(created);
    }
    id
}

/// A run as it starts: its id and stamp, and the version that serves it.
struct Started {
    policy_id: String,
    created: u64,
    run_id: String,
    version: u32,
    compiled: Arc<Compiled>,
    /// The policy's shadow version, evaluated next to `version`.
    shadow: Option<u32>,
    /// Whether the run is recorded once for its key (see `run_keys`).
    once: bool,
}

impl PoliciesService {
    /// Stamps a new run of policy `id` and picks and compiles its version.
    async fn start(&self, id: &str, req: &RunRequest) -> Result<Started, ApiError> {
        let (p, settings) = self.get_full(id).await?;
        let created = now_ms();
        let once = req.run_key.is_some() && self.run_keys_active();
        let run_id = match &req.run_key {
            Some(k) if once => keyed_run_id(created, &p.id, k),
            _ => local_run_id(&self.node, created),
        };
        let key = req.run_key.clone().unwrap_or_else(|| run_id.clone());
        let version = self.choose(&p, req.version, &key).await?;
        let compiled = self.compiled(&p.id, version).await?;
        Ok(Started {
            policy_id: p.id,
            created,
            run_id,
            version,
            compiled,
            shadow: settings.shadow_version,
            once,
        })
    }

    /// Which version a run uses: the requested one, or the allocation's
    /// choice by a stable hash of the run key (or the run id).
    pub(super) async fn choose(
        &self,
        p: &Policy,
        version: Option<u32>,
        key: &str,
    ) -> Result<u32, ApiError> {
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
    /// `alloc_key` picks the versions of unpinned sub-policies.
    pub(super) async fn effects(
        &self,
        c: &Compiled,
        run_id: Option<&str>,
        alloc_key: &str,
    ) -> Result<PolicyEffects<'_>, ApiError> {
        // A sub-policy may look up what its parent does not.
        let sources = if c.waits() {
            self.data_sources()
                .await?
                .into_iter()
                .map(|s| (s.name.clone(), s))
                .collect()
        } else {
            BTreeMap::new()
        };
        Ok(PolicyEffects {
            svc: self,
            sources,
            submit: run_id.is_some(),
            run_id: run_id.map(str::to_string),
            inline: false,
            alloc_key: alloc_key.to_string(),
            resolved: Default::default(),
        })
    }

    /// How long one evaluation of `c` may take: its graph's `deadline_ms`
    /// or the default, never above this node's maximum.
    pub(super) fn budget(&self, c: &Compiled) -> Duration {
        let ms = c
            .deadline_ms
            .unwrap_or(orrery_policy::limits::DEFAULT_DEADLINE_MS)
            .min(self.node.cfg.policies.max_deadline_ms);
        Duration::from_millis(ms)
    }

    /// Writes the run; its extras only once the cluster runs version 5
    /// (before that they are dropped: old nodes could not decode them).
    async fn record(&self, run: Run, ext: RunExt) -> Result<(Run, RunExt), ApiError> {
        let group = run_group(&self.node, &run.id)?;
        let cmd = if ext.is_empty() || !self.shadow_active() {
            PolicyCommand::PutRun { run: run.clone() }
        } else {
            PolicyCommand::PutRunV2 {
                run: run.clone(),
                ext: ext.clone(),
            }
        };
        self.write(group, cmd).await?;
        Ok((run, ext))
    }

    /// Evaluates a recorded run's version, and its shadow version (when
    /// the policy has one) on the same input, side by side. The shadow
    /// never fails the run: its error is recorded in the extras.
    async fn evaluate_recorded(
        &self,
        c: &Arc<Compiled>,
        policy_id: &str,
        run_id: &str,
        input: &Json,
        shadow: Option<u32>,
        alloc_key: &str,
    ) -> Result<(Outcome, RunExt), ApiError> {
        let checked = check_input(c, input)?;
        // `alloc_key` picks the versions of unpinned sub-policies.
        let fx = self.effects(c, Some(run_id), alloc_key).await?;
        let live = evaluate(c, checked, &fx, self.budget(c));
        let (outcome, shadow) = match shadow {
            Some(v) => {
                let sh = self.shadow_eval(policy_id, v, input, alloc_key);
                let (o, s) = futures::future::join(live, sh).await;
                (o, Some(s))
            }
            None => (live.await, None),
        };
        let ext = RunExt {
            shadow,
            termination: outcome.termination.clone().map(StoredTermination::from),
        };
        Ok((outcome, ext))
    }

    /// Evaluates a run here and records it through Raft.
    pub async fn run(&self, id: &str, req: RunRequest) -> Result<(Run, RunExt), ApiError> {
        let st = self.start(id, &req).await?;
        let c = &st.compiled;
        let key = req.run_key.clone().unwrap_or_else(|| st.run_id.clone());
        // A retry answers with the key's run, evaluating nothing again.
        if st.once {
            let input = text(&req.input)?;
            if let Some(r) = self
                .keyed_existing(&st.run_id, &st.policy_id, &key, &input)
                .await?
            {
                return Ok((r.run, r.ext));
            }
        }
        let (outcome, ext) = self
            .evaluate_recorded(c, &st.policy_id, &st.run_id, &req.input, st.shadow, &key)
            .await?;
        let timed_out = outcome.timed_out.then(|| outcome.error.clone());
        let run = finished_run(
            st.run_id,
            &st.policy_id,
            st.version,
            req.run_key,
            &req.input,
            outcome,
            st.created,
        )?;
        let (run, ext) = if st.once {
            self.record_once(run, ext).await?
        } else {
            self.record(run, ext).await?
        };
        // Recorded (failed) like any other run, so that it can be looked
        // up; the caller is told with its own error code.
        match timed_out {
            Some(e) => Err(ApiError::EvaluationTimeout(format!(
                "run {}: {}",
                run.id,
                e.unwrap_or_default()
            ))),
            None => Ok((run, ext)),
        }
    }

    /// Records a run as `running` and submits a `policy.run` job that
    /// evaluates it (see [`PoliciesService::run_finish`]). The input is
    /// checked here, so a bad input is a 400 and not a failed run.
    pub async fn run_async(&self, id: &str, req: RunRequest) -> Result<Run, ApiError> {
        let Started {
            policy_id,
            created,
            run_id,
            version,
            compiled: c,
            shadow: _,
            once,
        } = self.start(id, &req).await?;
        check_input(&c, &req.input)?;
        let input = text(&req.input)?;
        let existing = match &req.run_key {
            Some(k) if once => self.keyed_existing(&run_id, &policy_id, k, &input).await?,
            _ => None,
        };
        if let Some(r) = existing {
            // Its job may not have been submitted (the first attempt can
            // stop between the record and the submit): submitting again
            // is deduplicated by the run id.
            if r.run.status == RunStatus::Running {
                self.submit_run_job(&r.run.id).await?;
            }
            return Ok(r.run);
        }
        let run = Run {
            id: run_id,
            policy_id,
            version,
            status: RunStatus::Running,
            run_key: req.run_key,
            input,
            output: None,
            trace: "[]".to_string(),
            error: None,
            created_ms: created,
            finished_ms: None,
        };
        let (run, _) = if once {
            self.record_once(run, RunExt::default()).await?
        } else {
            self.record(run, RunExt::default()).await?
        };
        // `run` may be an earlier attempt's, finished already.
        if run.status == RunStatus::Running {
            self.submit_run_job(&run.id).await?;
        }
        Ok(run)
    }

    /// Submits the `policy.run` job that evaluates running run `run_id`;
    /// deduplicated by the run id, so a retried request cannot start it
    /// twice.
    async fn submit_run_job(&self, run_id: &str) -> Result<(), ApiError> {
        self.submit_policy_job(
            jobs::RUN_KIND,
            json!({"run_id": run_id}),
            Some(run_id.to_string()),
        )
        .await?;
        Ok(())
    }

    /// Evaluates a `running` run and records its end; a run that already
    /// ended (a retried job) is returned as it is.
    pub async fn run_finish(&self, run_id: &str) -> Result<Run, ApiError> {
        let run = self.run_get(run_id).await?;
        if run.status != RunStatus::Running {
            return Ok(run);
        }
        let input: Json =
            serde_json::from_str(&run.input).map_err(|e| ApiError::Internal(e.to_string()))?;
        let c = self.compiled(&run.policy_id, run.version).await?;
        // The shadow version as of now: the run is evaluated now.
        let shadow = match self.get_full(&run.policy_id).await {
            Ok((_, s)) => s.shadow_version,
            Err(ApiError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let (outcome, ext) = match check_input(&c, &input) {
            Ok(_) => {
                let key = run.run_key.clone().unwrap_or_else(|| run.id.clone());
                self.evaluate_recorded(&c, &run.policy_id, &run.id, &input, shadow, &key)
                    .await?
            }
            Err(e) => (failed(e), RunExt::default()),
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
        self.record(done, ext).await.map(|(r, _)| r)
    }

    /// Evaluates `inputs` on one version (archived ones too: a backtest may
    /// replay history) without submitting jobs; an input the input node
    /// refuses is a failed outcome.
    pub async fn backtest(
        &self,
        policy: &str,
        version: u32,
        inputs: &[Json],
    ) -> Result<Vec<Outcome>, ApiError> {
        let p = self.get(policy).await?;
        let c = self.compiled(&p.id, version).await?;
        let fx = self.effects(&c, None, &p.id).await?;
        let budget = self.budget(&c);
        let mut out = Vec::with_capacity(inputs.len());
        for input in inputs {
            out.push(match check_input(&c, input) {
                Ok(v) => evaluate(&c, v, &fx, budget).await,
                Err(e) => failed(e),
            });
        }
        Ok(out)
    }

    /// Evaluates many inputs on one version, in parallel; not recorded.
    pub async fn batch(
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
        let p = self.get(id).await?;
        let version = self.choose(&p, version, &p.id).await?;
        let c = self.compiled(&p.id, version).await?;
        let mut checked = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            checked.push(check_input(&c, input).map_err(|e| match e {
                PolicyError::Input(m) => {
                    ApiError::bad("invalid_input", format!("inputs[{i}]: {m}"))
                }
                other => ApiError::from(other),
            })?);
        }
        let sources = self.effects(&c, None, &p.id).await?.sources;
        let alloc_key = p.id.clone();
        let budget = self.budget(&c);
        let svc = self.clone();
        let handle = tokio::runtime::Handle::current();
        // Lookups and sub-policies wait on the runtime.
        let lookups = c.waits();
        let outcomes = tokio::task::spawn_blocking(move || {
            let fx = PolicyEffects {
                svc: &svc,
                sources,
                submit: false,
                run_id: None,
                // On a pool thread (with its deep stack): no hop per run.
                // Without the pool, CEL runs where `compute` puts it.
                inline: svc.batch_pool.is_some(),
                alloc_key,
                resolved: Default::default(),
            };
            let one = |v| {
                let run = evaluate(&c, v, &fx, budget);
                if lookups {
                    // Pool threads are outside the runtime; lookups need
                    // its reactor, so block on it through the handle.
                    handle.block_on(run)
                } else {
                    // Nothing to wait on: the future completes as it is polled.
                    futures::executor::block_on(run)
                }
            };
            use rayon::prelude::*;
            let all = || checked.into_par_iter().map(one).collect::<Vec<_>>();
            match &svc.batch_pool {
                Some(pool) => pool.install(all),
                None => all(),
            }
        })
        .await
        .map_err(|e| ApiError::Internal(format!("batch: {e}")))?;
        Ok((version, outcomes))
    }

    pub async fn run_get(&self, id: &str) -> Result<Run, ApiError> {
        if id.is_empty() {
            return Err(ApiError::bad("invalid_id", "empty run id"));
        }
        let group = run_group(&self.node, id)?;
        match self.read(group, PolicyQuery::Run { id: id.into() }).await? {
            PolicyQueryResult::Run(Some(r)) => Ok(r),
            PolicyQueryResult::Run(None) => {
                Err(ApiError::NotFound(format!("run {id:?} not found")))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Newest first across every shard; the cursor is the last id returned.
    /// `f.limit` 0 is refused (the fronts default it: [`super::DEFAULT_RUN_LIST`]).
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
            f.policy_id = Some(self.get(p).await?.id);
        }
        let futs = self.node.shard_groups()?.into_iter().map(|g| {
            let q = PolicyQuery::Runs(f.clone());
            async move { self.read(g, q).await }
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

/// The outcome of an input the input node refused.
fn failed(e: PolicyError) -> Outcome {
    Outcome {
        output: None,
        trace: Vec::new(),
        error: Some(e.to_string()),
        timed_out: false,
        termination: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Preferring ids of the groups this node leads must not bias the
    /// allocation, which picks a run's version by a hash of its id: among
    /// the ids of one group of eight, a 10/90 split stays 10/90.
    #[test]
    fn ids_chosen_by_group_keep_the_allocation_split() {
        let weights = [(1u32, 10u64), (2, 90)];
        for group in 0..8 {
            let (mut seen, mut first) = (0u32, 0u32);
            while seen < 20_000 {
                let id = new_run_id(1_796_670_287_144);
                if orrery_types::shard_for_key(
                    super::super::run_keys::run_anchor(&id).as_bytes(),
                    8,
                ) != group
                {
                    continue;
                }
                seen += 1;
                if pick("pol-0123456789abcdef", &id, &weights) == Some(&1) {
                    first += 1;
                }
            }
            let share = f64::from(first) / f64::from(seen);
            // 20 000 draws: the standard deviation of the share is 0.002.
            assert!((share - 0.10).abs() < 0.01, "group {group}: {share}");
        }
    }
}
