//! Datasets (docs/api.md, "Datasets"): named catalogs of image items under
//! `--fs-root`. A dataset and its items live in the shard group of
//! `hash("dataset/" + name)`; the list scatters to every shard group.
//! Scans run as `dataset.scan` jobs in the dataset's queue; this node
//! follows each scan's jobs and writes what they found (`scan.rs`).
//! Text search over the items' embeddings (`search.rs`) and pipeline
//! workflows over the items (`pipeline.rs`) build on the jobs and vectors
//! services.

mod outputs;
mod pipeline;
mod scan;
mod search;

pub use pipeline::{Pipeline, PipelineStarted, MAX_PIPELINE_LIMIT};
pub use search::{SearchHit, SearchResult, TextSearch, MAX_SEARCH_K};

pub use outputs::EngineOutputs;

use crate::api::{now_ms, ApiError};
use crate::node::Node;
use crate::service::jobs::{JobsService, QueueArgs};
use crate::service::vectors::VectorsService;
use orrery_dataset::{
    check_name, check_rel_path, Attach, DatasetCommand, DatasetDef, DatasetError, DatasetQuery,
    DatasetQueryResult, DatasetResponse, Item, ItemFilter, ItemsPage, MAX_BATCH,
};
use orrery_types::GroupId;
use std::sync::Arc;

/// The cluster version datasets need (orrery-raft's version table).
pub const DATASETS_VERSION: u32 = 8;
/// The queue scans go to when a dataset names none; created on first use.
pub const DEFAULT_QUEUE: &str = "datasets";
/// The queue of pipeline workflows and query embeddings when a request
/// names none; created on first use. The embed worker claims from it too.
pub const DEFAULT_PIPELINE_QUEUE: &str = "pipeline";
/// The job kind the embed worker (clients/python, `orrery-embed-worker`) runs.
pub const EMBED_KIND: &str = "text.embed";
/// all-MiniLM-L6-v2's dimension: what the embed worker makes.
pub const EMBED_DIM: usize = 384;

/// The embeddings collection of a dataset that names none: its name with
/// `.` (allowed in dataset names, not in collection names) as `_`. Two
/// datasets may map to one collection; every point carries its dataset
/// and every search filters on it, so they share it harmlessly.
pub fn default_collection(dataset: &str) -> String {
    dataset.replace('.', "_")
}

/// A string just below `path` in byte order, as the exclusive lower bound
/// of a range whose first entry is `path`: `path` with its last character
/// decremented and the highest character appended many times. Only paths
/// with that tail (U+10FFFF, a non-character) sort between the two.
fn just_below(path: &str) -> Option<String> {
    let mut chars: Vec<char> = path.chars().collect();
    let last = chars.pop()? as u32;
    // (last - 1) skipping the surrogate gap; a last '\0' leaves the prefix,
    // which nothing sorts between.
    if let Some(c) = (0..last).rev().find_map(char::from_u32) {
        chars.push(c);
        chars.extend(std::iter::repeat_n(char::MAX, 8));
    }
    Some(chars.into_iter().collect())
}

pub struct DatasetsService {
    node: Arc<Node>,
    jobs: Arc<JobsService>,
    vectors: Arc<VectorsService>,
}

/// A dataset to create, as a client gave it.
pub struct NewDataset {
    pub name: String,
    pub path: String,
    pub glob: String,
    pub queue: Option<String>,
}

impl From<DatasetError> for ApiError {
    fn from(e: DatasetError) -> Self {
        match e {
            DatasetError::NotFound(_) => ApiError::NotFound(e.to_string()),
            DatasetError::AlreadyExists(_) | DatasetError::StaleScan { .. } => {
                ApiError::Conflict(e.to_string())
            }
            DatasetError::Invalid(m) => ApiError::bad("invalid_dataset", m),
        }
    }
}

fn unexpected(r: impl std::fmt::Debug) -> ApiError {
    ApiError::Internal(format!("unexpected dataset response {r:?}"))
}

impl DatasetsService {
    pub fn new(node: Arc<Node>, jobs: Arc<JobsService>, vectors: Arc<VectorsService>) -> Self {
        Self {
            node,
            jobs,
            vectors,
        }
    }

    fn group(&self, name: &str) -> Result<GroupId, ApiError> {
        self.node
            .group_for_key(format!("dataset/{name}").as_bytes())
    }

    async fn write(&self, name: &str, cmd: DatasetCommand) -> Result<DatasetResponse, ApiError> {
        let g = self.group(name)?;
        match self.node.write(g, cmd).await? {
            DatasetResponse::Rejected(e) => Err(e.into()),
            r => Ok(r),
        }
    }

    async fn query(&self, g: GroupId, q: DatasetQuery) -> Result<DatasetQueryResult, ApiError> {
        self.node.require_version(DATASETS_VERSION).await?;
        self.node.read(g, q, true).await
    }

    /// The dataset path, root-relative, checked: relative (or absolute
    /// inside `--fs-root`), no `..`, and when this node has an fs root, an
    /// existing directory beneath it (a symlink leading out is refused).
    fn checked_path(&self, path: &str) -> Result<String, ApiError> {
        let bad = |m: String| ApiError::bad("invalid_path", m);
        if path.is_empty() {
            return Err(bad("path must not be empty ('.' is the fs root)".into()));
        }
        let Some(root) = &self.node.cfg.fs_root else {
            check_rel_path("path", path).map_err(bad)?;
            return Ok(path.trim_end_matches('/').to_string());
        };
        let canon =
            orrery_exec::confine_existing(root, "path", path).map_err(|e| bad(e.to_string()))?;
        if !canon.is_dir() {
            return Err(bad(format!("path {path:?} is not a directory")));
        }
        let root = root
            .canonicalize()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let rel = canon
            .strip_prefix(&root)
            .map_err(|_| bad(format!("path {path:?} leads outside the fs root")))?;
        let rel = rel.to_string_lossy().into_owned();
        Ok(if rel.is_empty() { ".".into() } else { rel })
    }

    /// Creates the dataset and starts its first scan.
    pub async fn create(self: &Arc<Self>, d: NewDataset) -> Result<DatasetDef, ApiError> {
        self.node.require_version(DATASETS_VERSION).await?;
        check_name(&d.name).map_err(|m| ApiError::bad("invalid_name", m))?;
        check_rel_path("glob", &d.glob).map_err(|m| ApiError::bad("invalid_glob", m))?;
        if d.glob.is_empty() {
            return Err(ApiError::bad("invalid_glob", "glob must not be empty"));
        }
        if let Err(e) = glob::Pattern::new(&d.glob) {
            return Err(ApiError::bad("invalid_glob", format!("glob: {e}")));
        }
        let path = self.checked_path(&d.path)?;
        let queue = d.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_string());
        crate::service::jobs::check_name("queue", &queue)?;
        self.ensure_queue(&queue, DEFAULT_QUEUE).await?;
        let cmd = DatasetCommand::Create {
            name: d.name.clone(),
            path,
            glob: d.glob,
            queue,
            now_ms: now_ms(),
        };
        match self.write(&d.name, cmd).await? {
            DatasetResponse::Created(_) => {}
            other => return Err(unexpected(other)),
        }
        self.start_scan(&d.name).await
    }

    /// The default queue (`default`) is created on first use; a named one
    /// must exist.
    async fn ensure_queue(&self, queue: &str, default: &str) -> Result<(), ApiError> {
        match self.jobs.queue_spec_fresh(queue).await {
            Ok(_) => Ok(()),
            Err(ApiError::NotFound(_)) if queue == default => {
                let a = QueueArgs {
                    name: queue.to_string(),
                    ..QueueArgs::default()
                };
                match self.jobs.create_queue(a).await {
                    Ok(_) | Err(ApiError::Conflict(_)) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(ApiError::NotFound(_)) => Err(ApiError::NotFound(format!(
                "queue {queue:?} does not exist (create it, or leave queue out to use {default:?})"
            ))),
            Err(e) => Err(e),
        }
    }

    pub async fn get(&self, name: &str) -> Result<DatasetDef, ApiError> {
        check_name(name).map_err(|m| ApiError::bad("invalid_name", m))?;
        match self
            .query(self.group(name)?, DatasetQuery::Get(name.into()))
            .await?
        {
            DatasetQueryResult::Get(Some(d)) => Ok(*d),
            DatasetQueryResult::Get(None) => Err(DatasetError::NotFound(name.to_string()).into()),
            other => Err(unexpected(other)),
        }
    }

    /// Every dataset, by name (scattered over the shard groups).
    pub async fn list(&self) -> Result<Vec<DatasetDef>, ApiError> {
        let groups = self.node.shard_groups()?;
        let reads = groups
            .into_iter()
            .map(|g| self.query(g, DatasetQuery::List));
        let mut out = Vec::new();
        for r in futures::future::join_all(reads).await {
            match r? {
                DatasetQueryResult::List(l) => out.extend(l),
                other => return Err(unexpected(other)),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A page of items in path order, after `after`.
    pub async fn items(
        &self,
        name: &str,
        after: Option<String>,
        limit: usize,
        filter: ItemFilter,
    ) -> Result<ItemsPage, ApiError> {
        check_name(name).map_err(|m| ApiError::bad("invalid_name", m))?;
        self.items_range(name, after, None, limit, filter).await
    }

    /// The item at `path`, if the dataset has it.
    pub async fn item(&self, name: &str, path: &str) -> Result<Option<Item>, ApiError> {
        let Some(after) = just_below(path) else {
            return Ok(None);
        };
        let page = self
            .items_range(
                name,
                Some(after),
                Some(path.into()),
                16,
                ItemFilter::default(),
            )
            .await?;
        Ok(page.items.into_iter().find(|i| i.meta.path == path))
    }

    async fn items_range(
        &self,
        name: &str,
        after: Option<String>,
        until: Option<String>,
        limit: usize,
        filter: ItemFilter,
    ) -> Result<ItemsPage, ApiError> {
        let q = DatasetQuery::Items {
            name: name.into(),
            after,
            until,
            limit,
            filter,
        };
        match self.query(self.group(name)?, q).await? {
            DatasetQueryResult::Items(Some(p)) => Ok(p),
            DatasetQueryResult::Items(None) => Err(DatasetError::NotFound(name.to_string()).into()),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes the dataset and its items (the files stay); returns how many
    /// items it had. A scan still running stops at its next write.
    pub async fn delete(&self, name: &str) -> Result<u64, ApiError> {
        check_name(name).map_err(|m| ApiError::bad("invalid_name", m))?;
        match self
            .write(name, DatasetCommand::Delete { name: name.into() })
            .await?
        {
            DatasetResponse::Deleted { items } => Ok(items),
            other => Err(unexpected(other)),
        }
    }

    /// Sets outputs of items; returns how many were updated and the paths
    /// that are not in the dataset.
    pub async fn attach(
        &self,
        name: &str,
        items: Vec<Attach>,
    ) -> Result<(u64, Vec<String>), ApiError> {
        check_name(name).map_err(|m| ApiError::bad("invalid_name", m))?;
        if items.is_empty() || items.len() > MAX_BATCH {
            return Err(ApiError::bad(
                "invalid_items",
                format!("items must hold 1..={MAX_BATCH} entries"),
            ));
        }
        let cmd = DatasetCommand::AttachOutputs {
            name: name.into(),
            items,
            now_ms: now_ms(),
        };
        match self.write(name, cmd).await? {
            DatasetResponse::Attached { updated, missing } => Ok((updated, missing)),
            other => Err(unexpected(other)),
        }
    }
}
