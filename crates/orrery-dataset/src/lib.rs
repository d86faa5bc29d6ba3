//! The dataset domain module: a named, replicated catalog of image items.
//!
//! A dataset is a definition (`path` and `glob` under the nodes'
//! `--fs-root`, the queue its scan jobs run in, the state of its last scan)
//! and its items, keyed by root-relative path: each with size, sha256,
//! dimensions, and the outputs pipelines attach later (thumbnail path,
//! caption, embedding id). A dataset lives in the shard group chosen by the
//! hash of its name.
//!
//! Scans run as jobs (`dataset.scan`, orrery-exec); the server writes what
//! they found in bounded batches. Each scan gets a generation number
//! ([`DatasetCommand::BeginScan`]); item writes of a scan carry it and are
//! refused once a newer scan began or the dataset was deleted and created
//! again, so a late writer of an old scan changes nothing.
//!
//! Deterministic: `apply` reads only the command and the state; time comes
//! stamped in the command by the leader.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod query;
#[cfg(test)]
mod tests;

pub use query::{DatasetQuery, DatasetQueryResult, ItemFilter, ItemsPage};

/// Most items (or paths) one command carries.
pub const MAX_BATCH: usize = 1000;
/// Most items one page of a read returns.
pub const MAX_PAGE: usize = 1000;
/// Longest dataset name.
pub const MAX_NAME: usize = 128;
/// Longest item path, glob or dataset path.
pub const MAX_PATH: usize = 4096;
/// Longest caption (bytes).
pub const MAX_CAPTION: usize = 16 * 1024;

/// A dataset's definition and bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetDef {
    pub name: String,
    /// Root-relative directory the scan starts from.
    pub path: String,
    /// Glob relative to `path` (e.g. `**/*.png`).
    pub glob: String,
    /// The queue its scan jobs go to.
    pub queue: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Number of items and their total size.
    pub items: u64,
    pub bytes: u64,
    pub scan: ScanStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScanState {
    /// No scan began yet.
    Idle,
    Running,
    Succeeded,
    Failed,
}

impl ScanState {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanState::Idle => "idle",
            ScanState::Running => "running",
            ScanState::Succeeded => "succeeded",
            ScanState::Failed => "failed",
        }
    }
}

/// The last scan of a dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanStatus {
    /// Increases with every scan that begins; 0 before the first.
    pub generation: u64,
    pub state: ScanState,
    /// The scan's job(s), last first.
    pub job: Option<String>,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    pub error: Option<String>,
    /// Items this scan added, updated (content changed) and removed.
    pub added: u64,
    pub updated: u64,
    pub removed: u64,
}

impl ScanStatus {
    fn idle() -> Self {
        ScanStatus {
            generation: 0,
            state: ScanState::Idle,
            job: None,
            started_ms: 0,
            finished_ms: None,
            error: None,
            added: 0,
            updated: 0,
            removed: 0,
        }
    }
}

/// What a scan finds about one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemMeta {
    /// Root-relative path.
    pub path: String,
    pub size: u64,
    /// Lower-case hex sha256 of the content.
    pub sha256: String,
    pub width: u32,
    pub height: u32,
}

/// Outputs pipelines attach to an item.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outputs {
    pub thumbnail: Option<String>,
    pub caption: Option<String>,
    pub embedding_id: Option<String>,
}

/// One item of a dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub meta: ItemMeta,
    pub outputs: Outputs,
    pub added_ms: u64,
    pub updated_ms: u64,
}

/// A change to the outputs of the item at `path`: each `Some` field
/// replaces that output (an empty string clears it), `None` keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attach {
    pub path: String,
    pub outputs: Outputs,
}

/// A replicated dataset command. Append new variants LAST (bincode stores
/// the variant index) and give them a cluster version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DatasetCommand {
    Create {
        name: String,
        path: String,
        glob: String,
        queue: String,
        now_ms: u64,
    },
    /// Removes the dataset and all its items.
    Delete { name: String },
    /// Starts a scan: a new generation, state running, counters reset.
    BeginScan {
        name: String,
        job: String,
        now_ms: u64,
    },
    /// Adds or updates items found by scan `generation`. An item whose
    /// content changed (size, hash or dimensions) loses its outputs.
    PutItems {
        name: String,
        generation: u64,
        items: Vec<ItemMeta>,
        now_ms: u64,
    },
    /// Removes items scan `generation` no longer found.
    RemoveItems {
        name: String,
        generation: u64,
        paths: Vec<String>,
        now_ms: u64,
    },
    /// Ends scan `generation`; `error` set: it failed.
    FinishScan {
        name: String,
        generation: u64,
        error: Option<String>,
        now_ms: u64,
    },
    /// Sets outputs of existing items (paths not in the dataset are
    /// reported back, nothing else changes for them).
    AttachOutputs {
        name: String,
        items: Vec<Attach>,
        now_ms: u64,
    },
    /// Records the job a running scan waits on now (a scan runs one job per
    /// page of files).
    ScanJob {
        name: String,
        generation: u64,
        job: String,
        now_ms: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DatasetError {
    #[error("dataset '{0}' not found")]
    NotFound(String),
    #[error("dataset '{0}' already exists")]
    AlreadyExists(String),
    /// A write of a scan that is no longer the dataset's current one.
    #[error("scan {generation} of dataset '{name}' is not its current scan (current: {current})")]
    StaleScan {
        name: String,
        generation: u64,
        current: u64,
    },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DatasetResponse {
    Created(Box<DatasetDef>),
    Deleted {
        items: u64,
    },
    ScanBegun {
        generation: u64,
    },
    Put {
        added: u64,
        updated: u64,
        unchanged: u64,
    },
    Removed {
        removed: u64,
    },
    ScanFinished(Box<DatasetDef>),
    Attached {
        updated: u64,
        missing: Vec<String>,
    },
    ScanJobSet,
    Rejected(DatasetError),
}

/// The datasets of one shard group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetState {
    defs: BTreeMap<String, DatasetDef>,
    items: BTreeMap<String, BTreeMap<String, Item>>,
}

/// Checks a dataset name: 1..=128 of `[A-Za-z0-9._-]`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("name must be 1..={MAX_NAME} characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "name '{name}' may hold only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Checks a root-relative path: not absolute, no `..`, no NUL, bounded.
pub fn check_rel_path(field: &str, p: &str) -> Result<(), String> {
    if p.len() > MAX_PATH || p.contains('\0') {
        return Err(format!(
            "{field} must be at most {MAX_PATH} bytes, without NUL"
        ));
    }
    if p.starts_with('/') {
        return Err(format!("{field} must be relative to the node's --fs-root"));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!("{field} must not contain '..'"));
    }
    Ok(())
}

fn check_meta(m: &ItemMeta) -> Result<(), String> {
    check_rel_path("items[].path", &m.path)?;
    if m.path.is_empty() {
        return Err("items[].path must not be empty".into());
    }
    if m.sha256.len() != 64
        || !m
            .sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "items[].sha256 of '{}' must be 64 lower-case hex digits",
            m.path
        ));
    }
    Ok(())
}

impl DatasetState {
    pub fn apply(&mut self, cmd: DatasetCommand) -> DatasetResponse {
        match self.apply_inner(cmd) {
            Ok(r) => r,
            Err(e) => DatasetResponse::Rejected(e),
        }
    }

    fn apply_inner(&mut self, cmd: DatasetCommand) -> Result<DatasetResponse, DatasetError> {
        use DatasetCommand as C;
        match cmd {
            C::Create {
                name,
                path,
                glob,
                queue,
                now_ms,
            } => {
                check_name(&name).map_err(DatasetError::Invalid)?;
                check_rel_path("path", &path).map_err(DatasetError::Invalid)?;
                check_rel_path("glob", &glob).map_err(DatasetError::Invalid)?;
                if glob.is_empty() {
                    return Err(DatasetError::Invalid("glob must not be empty".into()));
                }
                if self.defs.contains_key(&name) {
                    return Err(DatasetError::AlreadyExists(name));
                }
                let def = DatasetDef {
                    name: name.clone(),
                    path,
                    glob,
                    queue,
                    created_ms: now_ms,
                    updated_ms: now_ms,
                    items: 0,
                    bytes: 0,
                    scan: ScanStatus::idle(),
                };
                self.defs.insert(name, def.clone());
                Ok(DatasetResponse::Created(Box::new(def)))
            }
            C::Delete { name } => {
                self.defs
                    .remove(&name)
                    .ok_or_else(|| DatasetError::NotFound(name.clone()))?;
                let items = self.items.remove(&name).map_or(0, |m| m.len() as u64);
                Ok(DatasetResponse::Deleted { items })
            }
            C::BeginScan { name, job, now_ms } => {
                let d = self.def_mut(&name)?;
                let generation = d.scan.generation + 1;
                d.scan = ScanStatus {
                    generation,
                    state: ScanState::Running,
                    job: Some(job),
                    started_ms: now_ms,
                    ..ScanStatus::idle()
                };
                d.updated_ms = now_ms;
                Ok(DatasetResponse::ScanBegun { generation })
            }
            C::ScanJob {
                name,
                generation,
                job,
                now_ms,
            } => {
                let d = self.current_scan(&name, generation)?;
                d.scan.job = Some(job);
                d.updated_ms = now_ms;
                Ok(DatasetResponse::ScanJobSet)
            }
            C::PutItems {
                name,
                generation,
                items,
                now_ms,
            } => {
                if items.len() > MAX_BATCH {
                    return Err(DatasetError::Invalid(format!(
                        "at most {MAX_BATCH} items per batch"
                    )));
                }
                for m in &items {
                    check_meta(m).map_err(DatasetError::Invalid)?;
                }
                self.current_scan(&name, generation)?;
                let map = self.items.entry(name.clone()).or_default();
                let (mut added, mut updated, mut unchanged) = (0, 0, 0);
                let mut bytes_delta: i128 = 0;
                for m in items {
                    match map.get_mut(&m.path) {
                        Some(it) if it.meta == m => unchanged += 1,
                        Some(it) => {
                            bytes_delta += i128::from(m.size) - i128::from(it.meta.size);
                            it.meta = m;
                            it.outputs = Outputs::default();
                            it.updated_ms = now_ms;
                            updated += 1;
                        }
                        None => {
                            bytes_delta += i128::from(m.size);
                            map.insert(
                                m.path.clone(),
                                Item {
                                    meta: m,
                                    outputs: Outputs::default(),
                                    added_ms: now_ms,
                                    updated_ms: now_ms,
                                },
                            );
                            added += 1;
                        }
                    }
                }
                let count = map.len() as u64;
                let d = self.def_mut(&name)?;
                d.items = count;
                d.bytes = (i128::from(d.bytes) + bytes_delta).max(0) as u64;
                d.scan.added += added;
                d.scan.updated += updated;
                d.updated_ms = now_ms;
                Ok(DatasetResponse::Put {
                    added,
                    updated,
                    unchanged,
                })
            }
            C::RemoveItems {
                name,
                generation,
                paths,
                now_ms,
            } => {
                if paths.len() > MAX_BATCH {
                    return Err(DatasetError::Invalid(format!(
                        "at most {MAX_BATCH} paths per batch"
                    )));
                }
                self.current_scan(&name, generation)?;
                let map = self.items.entry(name.clone()).or_default();
                let mut removed = 0;
                let mut bytes = 0u64;
                for p in &paths {
                    if let Some(it) = map.remove(p) {
                        removed += 1;
                        bytes += it.meta.size;
                    }
                }
                let count = map.len() as u64;
                if count == 0 {
                    self.items.remove(&name);
                }
                let d = self.def_mut(&name)?;
                d.items = count;
                d.bytes = d.bytes.saturating_sub(bytes);
                d.scan.removed += removed;
                d.updated_ms = now_ms;
                Ok(DatasetResponse::Removed { removed })
            }
            C::FinishScan {
                name,
                generation,
                error,
                now_ms,
            } => {
                let d = self.current_scan(&name, generation)?;
                d.scan.state = if error.is_some() {
                    ScanState::Failed
                } else {
                    ScanState::Succeeded
                };
                d.scan.error = error;
                d.scan.finished_ms = Some(now_ms);
                d.updated_ms = now_ms;
                Ok(DatasetResponse::ScanFinished(Box::new(d.clone())))
            }
            C::AttachOutputs {
                name,
                items,
                now_ms,
            } => {
                if items.len() > MAX_BATCH {
                    return Err(DatasetError::Invalid(format!(
                        "at most {MAX_BATCH} items per batch"
                    )));
                }
                for a in &items {
                    check_outputs(&a.outputs).map_err(DatasetError::Invalid)?;
                }
                self.def_mut(&name)?;
                let mut missing = Vec::new();
                let mut updated = 0;
                let map = self.items.get_mut(&name);
                let mut map = map;
                for a in items {
                    let Some(it) = map.as_mut().and_then(|m| m.get_mut(&a.path)) else {
                        missing.push(a.path);
                        continue;
                    };
                    let set = |slot: &mut Option<String>, v: Option<String>| {
                        if let Some(v) = v {
                            *slot = (!v.is_empty()).then_some(v);
                        }
                    };
                    set(&mut it.outputs.thumbnail, a.outputs.thumbnail);
                    set(&mut it.outputs.caption, a.outputs.caption);
                    set(&mut it.outputs.embedding_id, a.outputs.embedding_id);
                    it.updated_ms = now_ms;
                    updated += 1;
                }
                Ok(DatasetResponse::Attached { updated, missing })
            }
        }
    }

    fn def_mut(&mut self, name: &str) -> Result<&mut DatasetDef, DatasetError> {
        self.defs
            .get_mut(name)
            .ok_or_else(|| DatasetError::NotFound(name.to_string()))
    }

    /// The dataset, if `generation` is its running scan.
    fn current_scan(
        &mut self,
        name: &str,
        generation: u64,
    ) -> Result<&mut DatasetDef, DatasetError> {
        let d = self.def_mut(name)?;
        if d.scan.generation != generation || d.scan.state != ScanState::Running {
            return Err(DatasetError::StaleScan {
                name: name.to_string(),
                generation,
                current: d.scan.generation,
            });
        }
        Ok(d)
    }

    pub fn def(&self, name: &str) -> Option<&DatasetDef> {
        self.defs.get(name)
    }

    pub fn defs(&self) -> impl Iterator<Item = &DatasetDef> {
        self.defs.values()
    }

    pub fn items(&self, name: &str) -> Option<&BTreeMap<String, Item>> {
        self.items.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).map_err(|e| e.to_string())
    }

    pub fn restore(data: &[u8]) -> Result<Self, String> {
        bincode::serde::decode_from_slice(data, bincode::config::standard())
            .map(|(v, _)| v)
            .map_err(|e| format!("dataset snapshot: {e}"))
    }
}

fn check_outputs(o: &Outputs) -> Result<(), String> {
    for (f, v, max) in [
        ("thumbnail", &o.thumbnail, MAX_PATH),
        ("caption", &o.caption, MAX_CAPTION),
        ("embedding_id", &o.embedding_id, MAX_PATH),
    ] {
        if let Some(v) = v {
            if v.len() > max {
                return Err(format!("outputs.{f} must be at most {max} bytes"));
            }
        }
    }
    if let Some(t) = &o.thumbnail {
        check_rel_path("outputs.thumbnail", t)?;
    }
    Ok(())
}
