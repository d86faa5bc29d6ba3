//! Scans: each runs as a chain of `dataset.scan` jobs, one per page of
//! files in path order. The node that started the scan follows its jobs
//! and, per page, writes into the catalog what the page found
//! (`PutItems`) and removes the items of the page's path range that it no
//! longer found (`RemoveItems`), in batches of [`WRITE_BATCH`]. Every
//! write carries the scan's generation: once a newer scan began (or the
//! dataset was deleted) they are refused and this follower stops.
//!
//! If this node stops mid-scan, the scan stays `running` until someone
//! starts another (`POST /v1/datasets/{name}/scan`), which supersedes it.

use super::{unexpected, DatasetsService};
use crate::api::{now_ms, ApiError};
use crate::service::jobs::SubmitArgs;
use orrery_dataset::{DatasetCommand, DatasetDef, DatasetResponse, ItemFilter, ItemMeta};
use orrery_queue::JobState;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Items (or paths) per replicated write.
pub const WRITE_BATCH: usize = 500;
/// Files per scan job (one page).
pub const PAGE_FILES: u64 = 1000;
/// TEST ONLY: files per scan job instead of [`PAGE_FILES`], so that tests
/// cover scans of many pages with few files.
pub const TEST_PAGE_FILES_ENV: &str = "ORRERY_TEST_DATASET_PAGE_FILES";

fn page_files() -> u64 {
    std::env::var(TEST_PAGE_FILES_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(PAGE_FILES, |n| n.clamp(1, PAGE_FILES))
}
/// How often a scan's job is looked at while it runs.
const POLL: Duration = Duration::from_millis(250);
/// Transient failures (no leader, outcome unknown) tolerated in a row.
const RETRIES: u32 = 40;

/// Why a scan stopped early.
enum Stop {
    /// A newer scan took over, or the dataset is gone: nothing to record.
    Superseded,
    Failed(String),
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound(_) | ApiError::Conflict(_) => Stop::Superseded,
            e => Stop::Failed(e.to_string()),
        }
    }
}

fn transient(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::Unavailable(_)
            | ApiError::OutcomeUnknown(_)
            | ApiError::Overloaded(_)
            | ApiError::Timeout(_)
    )
}

/// One page's files from a `dataset.scan` result.
fn parse_result(text: &str) -> Result<(Vec<ItemMeta>, Option<String>), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("scan result: {e}"))?;
    let files = v["files"].as_array().ok_or("scan result has no files")?;
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let bad = || format!("scan result: malformed file entry {f}");
        let path = f[0].as_str().ok_or_else(bad)?.to_string();
        let size = f[1].as_u64().ok_or_else(bad)?;
        let sha256 = f[2].as_str().ok_or_else(bad)?.to_string();
        let width = f[3]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(bad)?;
        let height = f[4]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(bad)?;
        out.push(ItemMeta {
            path,
            size,
            sha256,
            width,
            height,
        });
    }
    Ok((out, v["next"].as_str().map(String::from)))
}

impl DatasetsService {
    /// Starts a scan of `name` (superseding one still running): its first
    /// job is submitted and this node follows the scan to its end.
    pub async fn start_scan(self: &Arc<Self>, name: &str) -> Result<DatasetDef, ApiError> {
        let def = self.get(name).await?;
        let job = self.submit_page(&def, None).await?;
        let cmd = DatasetCommand::BeginScan {
            name: name.into(),
            job: job.clone(),
            now_ms: now_ms(),
        };
        let generation = match self.write(name, cmd).await? {
            DatasetResponse::ScanBegun { generation } => generation,
            other => return Err(unexpected(other)),
        };
        tracing::info!(dataset = name, generation, job, "dataset scan started");
        let me = self.clone();
        let def2 = def.clone();
        tokio::spawn(async move { me.follow(def2, generation, job).await });
        self.get(name).await
    }

    async fn submit_page(&self, def: &DatasetDef, after: Option<&str>) -> Result<String, ApiError> {
        let args = SubmitArgs {
            queue: def.queue.clone(),
            kind: "dataset.scan".into(),
            params: json!({"path": def.path, "glob": def.glob, "after": after, "limit": page_files()}),
            submitted_by: Some(format!("dataset:{}", def.name)),
            ..SubmitArgs::default()
        };
        let (job, _) = self.jobs.submit(args).await?;
        Ok(job.id.to_string())
    }

    async fn follow(self: Arc<Self>, def: DatasetDef, generation: u64, first: String) {
        let name = def.name.clone();
        let error = match self.pages(&def, generation, first).await {
            Ok(()) => None,
            Err(Stop::Superseded) => {
                tracing::info!(dataset = %name, generation, "dataset scan superseded");
                return;
            }
            Err(Stop::Failed(e)) => Some(e),
        };
        let cmd = DatasetCommand::FinishScan {
            name: name.clone(),
            generation,
            error: error.clone(),
            now_ms: now_ms(),
        };
        match self.retry(|| self.write(&name, cmd.clone())).await {
            Ok(_) => tracing::info!(dataset = %name, generation, ?error, "dataset scan finished"),
            Err(e) => {
                tracing::warn!(dataset = %name, generation, %e, "dataset scan could not record its end")
            }
        }
    }

    /// Runs `f` again while it fails transiently.
    async fn retry<T, F, Fut>(&self, mut f: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut tries = 0;
        loop {
            match f().await {
                Err(e) if transient(&e) && tries < RETRIES => {
                    tries += 1;
                    tokio::time::sleep(POLL * tries.min(8)).await;
                }
                r => return r,
            }
        }
    }

    async fn pages(&self, def: &DatasetDef, generation: u64, first: String) -> Result<(), Stop> {
        let name = &def.name;
        let mut job_id = first;
        let mut after: Option<String> = None;
        loop {
            let text = self.wait_job(&job_id).await?;
            let (found, next) = parse_result(&text).map_err(Stop::Failed)?;
            self.sync_range(name, generation, after.as_deref(), next.as_deref(), found)
                .await?;
            let Some(n) = next else {
                return Ok(());
            };
            job_id = self.retry(|| self.submit_page(def, Some(&n))).await?;
            let cmd = DatasetCommand::ScanJob {
                name: name.clone(),
                generation,
                job: job_id.clone(),
                now_ms: now_ms(),
            };
            self.retry(|| self.write(name, cmd.clone())).await?;
            after = Some(n);
        }
    }

    /// The job's result once it succeeded; its end otherwise.
    async fn wait_job(&self, id: &str) -> Result<String, Stop> {
        loop {
            let job = self
                .retry(|| self.jobs.get_job(id))
                .await
                .map_err(|e| Stop::Failed(format!("scan job {id}: {e}")))?;
            match job.state {
                JobState::Succeeded => {
                    return Ok(job.result.map(String::from).unwrap_or_default());
                }
                s if s.is_terminal() => {
                    return Err(Stop::Failed(format!(
                        "scan job {id} {}: {}",
                        s.as_str(),
                        job.last_error.as_deref().unwrap_or("no error recorded")
                    )))
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Makes the catalog's items with paths in `(after, until]` (`until`
    /// `None`: to the end) exactly `found`.
    async fn sync_range(
        &self,
        name: &str,
        generation: u64,
        after: Option<&str>,
        until: Option<&str>,
        found: Vec<ItemMeta>,
    ) -> Result<(), Stop> {
        let found: BTreeMap<String, ItemMeta> =
            found.into_iter().map(|m| (m.path.clone(), m)).collect();
        let mut gone = Vec::new();
        let mut cursor = after.map(String::from);
        loop {
            let page = self
                .retry(|| {
                    self.items_range(
                        name,
                        cursor.clone(),
                        until.map(String::from),
                        orrery_dataset::MAX_PAGE,
                        ItemFilter::default(),
                    )
                })
                .await?;
            gone.extend(
                page.items
                    .iter()
                    .map(|i| &i.meta.path)
                    .filter(|p| !found.contains_key(*p))
                    .cloned(),
            );
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        let gone: BTreeSet<String> = gone.into_iter().collect();
        let gone: Vec<String> = gone.into_iter().collect();
        for chunk in gone.chunks(WRITE_BATCH) {
            let cmd = DatasetCommand::RemoveItems {
                name: name.into(),
                generation,
                paths: chunk.to_vec(),
                now_ms: now_ms(),
            };
            self.checked_write(name, cmd).await?;
        }
        let items: Vec<ItemMeta> = found.into_values().collect();
        for chunk in items.chunks(WRITE_BATCH) {
            let cmd = DatasetCommand::PutItems {
                name: name.into(),
                generation,
                items: chunk.to_vec(),
                now_ms: now_ms(),
            };
            self.checked_write(name, cmd).await?;
        }
        Ok(())
    }

    /// A scan's write: superseded when the dataset refuses it as stale.
    async fn checked_write(&self, name: &str, cmd: DatasetCommand) -> Result<(), Stop> {
        match self.retry(|| self.write(name, cmd.clone())).await {
            Ok(_) => Ok(()),
            Err(ApiError::BadRequest { message, .. }) => Err(Stop::Failed(message)),
            Err(e) => Err(e.into()),
        }
    }
}
