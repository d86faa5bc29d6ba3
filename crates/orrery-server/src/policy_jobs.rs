//! Policy work that runs as jobs: async runs (`policy.run`) go through the
//! job queue module so that a run survives the node that accepted it.

use crate::error::ApiError;
use crate::jobs_api::{QueueArgs, SubmitArgs};
use crate::node::Node;
use orrery_exec::{KindHandler, RunContext};
use serde_json::{json, Value as Json};
use std::sync::{Arc, Weak};

/// The internal queue policy jobs go to, created on first use.
pub const POLICY_QUEUE: &str = "_policies";
pub const RUN_KIND: &str = "policy.run";

impl Node {
    /// Creates [`POLICY_QUEUE`] unless it exists (a concurrent create is fine).
    pub async fn ensure_policy_queue(&self) -> Result<(), ApiError> {
        if self.queue_spec(POLICY_QUEUE).await.is_ok() {
            return Ok(());
        }
        let args = QueueArgs {
            name: POLICY_QUEUE.to_string(),
            partitions: None,
            lease_s: Some(60),
            max_attempts: Some(3),
            backoff_initial_ms: None,
            backoff_multiplier: None,
            backoff_max_ms: None,
            concurrency_limit: None,
        };
        match self.create_queue(args).await {
            Ok(_) | Err(ApiError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Submits a job to [`POLICY_QUEUE`], deduplicated by `dedupe_key`.
    pub async fn submit_policy_job(
        &self,
        kind: &str,
        params: Json,
        dedupe_key: Option<String>,
    ) -> Result<String, ApiError> {
        self.ensure_policy_queue().await?;
        let (job, _) = self
            .submit_job(SubmitArgs {
                queue: POLICY_QUEUE.to_string(),
                kind: kind.to_string(),
                params,
                priority: 0,
                run_at_ms: None,
                delay_ms: None,
                resources: Default::default(),
                dedupe_key,
                submitted_by: Some("policy".to_string()),
            })
            .await?;
        Ok(job.id)
    }
}

/// Evaluates an async run recorded as `running` and records its end.
struct RunHandler {
    // Weak: the engine holding this handler is owned by the node.
    node: Weak<Node>,
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
        let node = self
            .node
            .upgrade()
            .ok_or_else(|| "the node is shutting down".to_string())?;
        let run = self
            .rt
            .block_on(node.policy_run_finish(id))
            .map_err(|e| format!("run {id}: {e}"))?;
        ctx.log(&format!("run {id}: {}", run.status.as_str()));
        Ok(json!({"run_id": id, "status": run.status.as_str()}))
    }
}

/// The kinds the policy module adds to a node's execution engine.
pub fn handlers(node: &Arc<Node>) -> Vec<(String, Arc<dyn KindHandler>)> {
    let rt = tokio::runtime::Handle::current();
    vec![(
        RUN_KIND.to_string(),
        Arc::new(RunHandler {
            node: Arc::downgrade(node),
            rt,
        }) as Arc<dyn KindHandler>,
    )]
}
