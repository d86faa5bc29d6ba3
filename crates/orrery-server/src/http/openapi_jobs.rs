//! Schemas of the job answers whose structs are local to their handlers
//! (`http/jobs.rs`, `http/jobs_queues.rs`): lists, bulk answers and
//! claims, built from the typed views of `api/jobs_view.rs`.
#![allow(dead_code)]

use super::openapi_errors::ErrorDetail;
use crate::api::jobs_view::{JobView, QueueView, RunView as JobRunView};
use utoipa::ToSchema;

#[derive(ToSchema, serde::Serialize)]
pub struct QueueList {
    queues: Vec<QueueView<'static>>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct JobList {
    jobs: Vec<JobView<'static>>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
}

#[derive(ToSchema, serde::Serialize)]
pub struct JobRuns {
    job_id: String,
    runs: Vec<JobRunView<'static>>,
}

/// One item of a bulk answer that failed.
#[derive(ToSchema, serde::Serialize)]
pub struct ItemError {
    /// The job (completions only).
    id: Option<String>,
    error: ErrorDetail,
}

/// The job (with `created`), or why it was not submitted.
#[derive(ToSchema, serde::Serialize)]
#[serde(untagged)]
pub enum SubmitItem {
    Job(JobView<'static>),
    Error(ItemError),
}

#[derive(ToSchema, serde::Serialize)]
pub struct Submitted {
    jobs: Vec<SubmitItem>,
    created: u64,
    existing: u64,
    failed: u64,
}

#[derive(ToSchema, serde::Serialize)]
pub struct Completed {
    id: String,
    /// The job's state after the completion.
    state: String,
}

#[derive(ToSchema, serde::Serialize)]
#[serde(untagged)]
pub enum CompletionItem {
    Done(Completed),
    Error(ItemError),
}

#[derive(ToSchema, serde::Serialize)]
pub struct Completions {
    results: Vec<CompletionItem>,
    completed: u64,
    failed: u64,
}

/// A claim with `max` or `complete`: the jobs (with their lease `token`),
/// and the outcomes of the completions it carried.
#[derive(ToSchema, serde::Serialize)]
pub struct ClaimedJobs {
    jobs: Vec<JobView<'static>>,
    completions: Option<Completions>,
}

/// A claim's answer: one job, or the jobs (with `max` or `complete`).
#[derive(ToSchema, serde::Serialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // a shape for the document, never built
pub enum ClaimAnswer {
    One(JobView<'static>),
    Many(ClaimedJobs),
}
