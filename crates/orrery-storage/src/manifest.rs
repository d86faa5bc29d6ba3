//! The durability manifest: a small file, outside sled, recording for each
//! group the highest vote and commit index this node has made durable.
//!
//! Why: sled recovers from a damaged segment by discarding it and whatever
//! follows, silently. A node restarted on damaged files could then come back
//! having forgotten log entries it acknowledged, or a vote it cast, and Raft
//! is only safe if neither ever happens (a leader's debug assertions catch
//! the reverted log; in release it would go unnoticed). On start every group
//! is checked against the manifest and the node refuses to serve if sled
//! holds less than the manifest says was durable.
//!
//! Votes are recorded synchronously (after sled's flush, before openraft
//! acts on the vote): they change only at elections. Commit indexes are
//! recorded lazily (every few hundred ms): they can only lag what is in
//! sled, so a lagging manifest weakens the check slightly but never raises
//! a false alarm.

use orrery_types::GroupId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What was durable for one group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMark {
    /// Term of the last durable vote.
    pub vote_term: u64,
    /// Candidate or leader of that vote.
    pub vote_node: u64,
    /// Highest commit index known durable (entries up to it were flushed).
    pub committed: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    format: u32,
    groups: BTreeMap<GroupId, GroupMark>,
}

#[derive(Clone)]
pub struct Manifest {
    path: PathBuf,
    inner: Arc<Mutex<Inner>>,
    /// Held for a whole write, so writes land in the order they were taken.
    writing: Arc<Mutex<()>>,
}

struct Inner {
    groups: BTreeMap<GroupId, GroupMark>,
    dirty: bool,
}

impl Manifest {
    /// Loads `dir/manifest`; a missing file is an empty manifest (a new
    /// node, or data written before the manifest existed).
    pub fn load(dir: &Path) -> Result<Manifest, String> {
        let path = dir.join("manifest.json");
        let groups = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: File = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{} is unreadable: {e}", path.display()))?;
                f.groups
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        Ok(Manifest {
            path,
            inner: Arc::new(Mutex::new(Inner {
                groups,
                dirty: false,
            })),
            writing: Arc::new(Mutex::new(())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn mark(&self, group: GroupId) -> Option<GroupMark> {
        self.lock().groups.get(&group).copied()
    }

    pub fn groups(&self) -> Vec<GroupId> {
        self.lock().groups.keys().copied().collect()
    }

    /// Records a durable vote and writes the manifest before returning.
    pub fn record_vote(&self, group: GroupId, term: u64, node: u64) -> std::io::Result<()> {
        {
            let mut g = self.lock();
            let m = g.groups.entry(group).or_default();
            if (term, node) == (m.vote_term, m.vote_node) {
                return Ok(());
            }
            m.vote_term = term;
            m.vote_node = node;
            g.dirty = true;
        }
        self.sync()
    }

    /// Records a commit index whose entries are durable; written later.
    pub fn record_committed(&self, group: GroupId, index: u64) {
        let mut g = self.lock();
        let m = g.groups.entry(group).or_default();
        if m.committed.is_none_or(|c| c < index) {
            m.committed = Some(index);
            g.dirty = true;
        }
    }

    /// Forgets a group (its replica left this node) and writes the manifest.
    pub fn forget(&self, group: GroupId) -> std::io::Result<()> {
        {
            let mut g = self.lock();
            if g.groups.remove(&group).is_none() {
                return Ok(());
            }
            g.dirty = true;
        }
        self.sync()
    }

    /// Writes the manifest if anything changed: a temporary file, fsync,
    /// rename over the old one, fsync of the directory.
    pub fn sync(&self) -> std::io::Result<()> {
        let _w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = {
            let mut g = self.lock();
            if !g.dirty {
                return Ok(());
            }
            g.dirty = false;
            serde_json::to_vec_pretty(&File {
                format: 1,
                groups: g.groups.clone(),
            })
            .map_err(std::io::Error::other)?
        };
        let res = (|| {
            let tmp = self.path.with_extension("json.tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        if res.is_err() {
            self.lock().dirty = true;
        }
        res
    }
}
