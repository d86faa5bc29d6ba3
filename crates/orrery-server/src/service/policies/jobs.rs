//! Policy work that runs as jobs: async runs (`policy.run`) and backtests
//! (`policy.backtest`) go through the job queue module so that they survive
//! the node that accepted them. This file holds the `_policies` queue, the
//! check of these kinds' params at submission, and the handlers the
//! execution engine runs them with.

use super::backtest::{backtest_params, check_input_file, BacktestHandler, BACKTEST_KIND};
use super::{store, PoliciesService};
use crate::api::ApiError;
use crate::node::Node;
use orrery_exec::{KindHandler, RunContext};
use serde_json::{json, Value as Json};
use std::sync::{Arc, Weak};

/// The internal queue policy jobs go to, created on first use.
pub const POLICY_QUEUE: &str = "_policies";
pub const RUN_KIND: &str = "policy.run";

impl PoliciesService {
    /// Creates [`POLICY_QUEUE`] unless it exists (a concurrent create is fine).
    async fn ensure_policy_queue(&self) -> Result<(), ApiError> {
        if self.deps.queue_exists(POLICY_QUEUE).await {
            return Ok(());
        }
        match self.deps.create_queue(POLICY_QUEUE, 60, 3).await {
            Ok(()) | Err(ApiError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Submits a job to [`POLICY_QUEUE`], deduplicated by `dedupe_key`.
    pub(super) async fn submit_policy_job(
        &self,
        kind: &str,
        params: Json,
        dedupe_key: Option<String>,
    ) -> Result<String, ApiError> {
        self.ensure_policy_queue().await?;
        self.deps
            .submit_job(POLICY_QUEUE, kind, params, dedupe_key)
            .await
    }

    /// The kinds the policy module adds to a node's execution engine.
    pub fn kind_handlers(self: &Arc<Self>) -> Vec<(String, Arc<dyn KindHandler>)> {
        let rt = tokio::runtime::Handle::current();
        vec![
            (
                RUN_KIND.to_string(),
                Arc::new(RunHandler {
                    svc: Arc::downgrade(self),
                    rt: rt.clone(),
                }) as Arc<dyn KindHandler>,
            ),
            (
                BACKTEST_KIND.to_string(),
                Arc::new(BacktestHandler {
                    svc: Arc::downgrade(self),
                    rt,
                }) as Arc<dyn KindHandler>,
            ),
        ]
    }
}

/// The check [`check_job`] as the jobs service calls it on every submit.
pub struct PolicyKindCheck(pub Arc<Node>);

#[async_trait::async_trait]
impl crate::service::jobs::KindCheck for PolicyKindCheck {
    async fn check(&self, kind: &str, params: &Json) -> Result<(), ApiError> {
        check_job(&self.0, kind, params).await
    }
}

/// Checks the params of the kinds this module adds when a job is
/// submitted, so that a mistake is a 400 naming the field rather than a
/// job that fails later. Other kinds pass untouched. A function of the
/// node (not of the service): the jobs domain calls it on every submit.
pub async fn check_job(node: &Node, kind: &str, params: &Json) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::bad("invalid_params", m);
    match kind {
        RUN_KIND => return run_id(params).map(|_| ()).map_err(bad),
        BACKTEST_KIND => {}
        _ => return Ok(()),
    }
    let p = backtest_params(params).map_err(bad)?;
    check_input_file(p.input_file).map_err(bad)?;
    // The file is read on the node that runs the job; nodes of one
    // cluster are configured alike, so the receiving node's flag stands
    // for theirs.
    if node.cfg.fs_root.is_none() {
        return Err(bad(
            "params.input_file: this node has no --fs-root; backtests read files under it".into(),
        ));
    }
    let policy = match store::policy_get(node, p.policy).await {
        Ok(pol) => pol,
        Err(ApiError::NotFound(m)) => return Err(bad(format!("params.policy: {m}"))),
        Err(e) => return Err(e),
    };
    for (field, v) in [
        ("version", Some(p.version)),
        ("compare_with_version", p.compare),
    ] {
        let Some(v) = v else { continue };
        match store::version_get(node, &policy.id, v).await {
            Ok(_) => {}
            Err(ApiError::NotFound(_)) => {
                return Err(bad(format!(
                    "params.{field}: policy {:?} has no version {v}",
                    policy.name
                )))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The service behind a handler, unless the node is shutting down. Weak:
/// the engine holding the handlers is owned by the node the service holds.
pub(super) fn upgrade(svc: &Weak<PoliciesService>) -> Result<Arc<PoliciesService>, String> {
    svc.upgrade()
        .ok_or_else(|| "the node is shutting down".to_string())
}

/// Evaluates an async run recorded as `running` and records its end.
struct RunHandler {
    svc: Weak<PoliciesService>,
    rt: tokio::runtime::Handle,
}

fn run_id(params: &Json) -> Result<&str, String> {
    params
        .get("run_id")
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| "params.run_id must be a non-empty string".to_string())
}

impl KindHandler for RunHandler {
    fn validate(&self, params: &Json) -> Result<(), String> {
        run_id(params).map(|_| ())
    }

    fn run(&self, params: &Json, ctx: &RunContext) -> Result<Json, String> {
        let id = run_id(params)?;
        let svc = upgrade(&self.svc)?;
        let run = self
            .rt
            .block_on(svc.run_finish(id))
            .map_err(|e| format!("run {id}: {e}"))?;
        ctx.log(&format!("run {id}: {}", run.status.as_str()));
        Ok(json!({"run_id": id, "status": run.status.as_str()}))
    }
}
