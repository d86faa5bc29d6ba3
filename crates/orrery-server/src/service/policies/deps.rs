//! Everything the policies service asks of the jobs and vectors domains, in
//! one place: the only file here that names their code.

use crate::api::ApiError;
use crate::service::jobs::{JobsService, QueueArgs, SubmitArgs};
use crate::service::vectors::{SearchSpec, VectorsService};
use orrery_vector::Hit;
use serde_json::Value as Json;
use std::sync::Arc;

/// The jobs and vectors operations policies use.
pub struct Deps {
    jobs: Arc<JobsService>,
    vectors: Arc<VectorsService>,
}

impl Deps {
    pub fn new(jobs: Arc<JobsService>, vectors: Arc<VectorsService>) -> Self {
        Self { jobs, vectors }
    }

    /// The names of every job queue (what an enqueue node may name).
    pub async fn queue_names(&self) -> Result<Vec<String>, ApiError> {
        Ok(self
            .jobs
            .list_queues()
            .await?
            .into_iter()
            .map(|q| q.name)
            .collect())
    }

    /// Whether queue `name` exists (any error reads as "no").
    pub async fn queue_exists(&self, name: &str) -> bool {
        self.jobs.queue_spec(name).await.is_ok()
    }

    /// Creates a queue with these settings (the others default).
    pub async fn create_queue(
        &self,
        name: &str,
        lease_s: u32,
        max_attempts: u32,
    ) -> Result<(), ApiError> {
        let args = QueueArgs {
            name: name.to_string(),
            lease_s: Some(lease_s),
            max_attempts: Some(max_attempts),
            ..Default::default()
        };
        self.jobs.create_queue(args).await.map(|_| ())
    }

    /// Submits a job on behalf of a policy (`submitted_by: "policy"`, run
    /// now, default priority and resources); returns its id.
    pub async fn submit_job(
        &self,
        queue: &str,
        kind: &str,
        params: Json,
        dedupe_key: Option<String>,
    ) -> Result<String, ApiError> {
        let args = SubmitArgs {
            queue: queue.to_string(),
            kind: kind.to_string(),
            params,
            priority: 0,
            run_at_ms: None,
            delay_ms: None,
            resources: Default::default(),
            dedupe_key,
            submitted_by: Some("policy".to_string()),
            caller: None,
        };
        let (job, _) = self.jobs.submit(args).await?;
        Ok(job.id.to_string())
    }

    /// Whether vector collection `name` exists.
    pub async fn collection_exists(&self, name: &str) -> Result<bool, ApiError> {
        Ok(self.vectors.catalog().await?.contains_key(name))
    }

    /// A linearizable top-`k` search of `collection` (the same read as
    /// `POST /v1/collections/{c}/search`), without the hits' vectors.
    pub async fn search(
        &self,
        collection: &str,
        vector: Vec<f32>,
        k: usize,
        filter: Option<Json>,
        with_payload: bool,
    ) -> Result<Vec<Hit>, ApiError> {
        let spec = SearchSpec {
            vector,
            k,
            ef: None,
            exact: false,
            filter,
            with_payload,
            with_vector: false,
        };
        self.vectors.search(collection, spec, true).await
    }
}
