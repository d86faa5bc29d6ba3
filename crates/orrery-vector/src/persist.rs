//! Index dumps: each replica's HNSW index saved next to its snapshots, so
//! that a restarted node loads it instead of rebuilding (a 100 000-point
//! index takes tens of seconds to build here, and searches are exact —
//! slow — until it is ready).
//!
//! A cache, never a source of truth: the index is derived from the points,
//! so a dump is used only when it provably covers them, and is otherwise
//! ignored (the index is rebuilt, as before dumps existed).
//!
//! * **When**: whenever the group's state is snapshotted, each collection
//!   whose index is current asks its indexer thread to save it; the thread
//!   does so after the batches it already holds are inserted, so the graph
//!   and its id table agree. Writing happens on that thread, not under the
//!   state lock.
//! * **Where**: `DIR/<fingerprint>.hnsw`, the fingerprint a hash of the
//!   collection's name, uid, index settings and every point's (id,
//!   revision) at the snapshot. A restored state has exactly the snapshot's
//!   points, so it finds its dump by name. Files are written to a temporary
//!   name and renamed, and end with a CRC32.
//! * **Checked on load**: the CRC, the graph's internal consistency
//!   (`hnsw/dump.rs`), and that every point of the restored state is in the
//!   dump's id table at its revision (extra entries are harmless: searches
//!   re-check every candidate against the state, as for overwritten points).
//! * **Cleaned**: a collection's previous dump is deleted when it saves a
//!   new one; dumps no live collection loaded or saved, an hour old, are
//!   deleted at the next save.
//!
//! Off unless the server names a directory ([`set_dir`]); unit tests and
//! tools that never call it write nothing.

use crate::hnsw::Hnsw;
use crate::index::{AnnIndex, Shared};
use crate::{Metric, PointId, ShardCollection};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

static DIR: OnceLock<PathBuf> = OnceLock::new();

/// Dumps unclaimed for this long are deleted.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Where this process keeps index dumps (created if missing). Set once, at
/// startup; later calls are ignored.
pub fn set_dir(dir: PathBuf) -> std::io::Result<()> {
    std::fs::create_dir_all(&dir)?;
    let _ = DIR.set(dir);
    Ok(())
}

fn dir() -> Option<&'static Path> {
    DIR.get().map(PathBuf::as_path)
}

/// A save request for the indexer thread.
pub struct DumpTo {
    path: PathBuf,
    /// Which collection instance saves (its index handle), so that its
    /// previous dump can be deleted.
    owner: usize,
}

/// An index read back from a dump.
pub struct Loaded {
    pub index: Arc<dyn AnnIndex>,
    pub entries: Vec<(PointId, u64)>,
    /// Per entry: [`crate::index::ALIVE`], or 0 for an entry the restored
    /// state no longer holds at its revision (dead to every view of it).
    pub dead_at: Vec<u64>,
}

/// FNV-1a, 64 bits: stable across builds and platforms (std's hasher is
/// not promised to be), and names are only looked up, never trusted.
struct Fnv(u64);
impl Fnv {
    fn bytes(&mut self, b: &[u8]) {
        for x in b {
            self.0 ^= u64::from(*x);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
    fn u64(&mut self, x: u64) {
        self.bytes(&x.to_le_bytes());
    }
}

fn fingerprint(name: &str, c: &ShardCollection) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    h.bytes(name.as_bytes());
    h.u64(c.uid);
    h.u64(c.metric.map_or(99, |m| m as u64));
    h.u64(c.m as u64);
    h.u64(c.ef_construction as u64);
    for (id, p) in &c.points {
        match id {
            PointId::Num(n) => {
                h.bytes(&[0]);
                h.u64(*n);
            }
            PointId::Uuid(s) => {
                h.bytes(&[1]);
                h.bytes(s.as_bytes());
            }
        }
        h.u64(p.rev);
    }
    h.0
}

pub(crate) fn path_for(dir: &Path, name: &str, c: &ShardCollection) -> PathBuf {
    dir.join(format!("{:016x}.hnsw", fingerprint(name, c)))
}

/// Owner (index handle) -> the dump it last saved or loaded.
fn claims() -> &'static Mutex<HashMap<usize, PathBuf>> {
    static CLAIMS: OnceLock<Mutex<HashMap<usize, PathBuf>>> = OnceLock::new();
    CLAIMS.get_or_init(Default::default)
}

fn claim(owner: usize, path: PathBuf) -> Option<PathBuf> {
    let mut c = claims().lock().unwrap_or_else(|p| p.into_inner());
    let old = c.insert(owner, path)?;
    // Deletable only if no other collection instance uses it.
    (!c.values().any(|p| *p == old)).then_some(old)
}

/// Forgets what the collection instance with index handle `owner` saved
/// or loaded (it is gone); the file itself is left to the sweep, since a
/// restart may still load it.
pub(crate) fn release(owner: usize) {
    claims()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&owner);
}

/// Asks `c`'s indexer to save its index, if it is current and a directory
/// is set. Called while the state is snapshotted; returns at once.
pub(crate) fn request(name: &str, c: &ShardCollection) {
    let (Some(dir), Some(h)) = (dir(), c.index.as_ref()) else {
        return;
    };
    if c.points.is_empty() || !h.current(c.last_rev) {
        return;
    }
    let path = path_for(dir, name, c);
    let owner = Arc::as_ptr(h) as usize;
    if path.exists() {
        // Saved already (an unchanged collection is snapshotted again).
        if let Some(old) = claim(owner, path) {
            let _ = std::fs::remove_file(old);
        }
        return;
    }
    h.dump(DumpTo { path, owner });
}

/// Runs on the indexer thread (see `index.rs`): writes the dump.
pub(crate) fn save(s: &Shared, to: DumpTo) {
    let Some(idx) = s.index.read().unwrap_or_else(|p| p.into_inner()).clone() else {
        return;
    };
    let Some(graph) = idx.dump() else { return };
    let entries = s.entries.read().unwrap_or_else(|p| p.into_inner()).clone();
    let body = match bincode::serde::encode_to_vec((&entries, &graph), bincode::config::standard())
    {
        Ok(b) => b,
        Err(e) => return tracing::warn!("index dump not encoded: {e}"),
    };
    let mut bytes = crc32fast::hash(&body).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let tmp = to.path.with_extension("tmp");
    if let Err(e) = std::fs::write(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, &to.path)) {
        let _ = std::fs::remove_file(&tmp);
        return tracing::warn!("index dump {} not written: {e}", to.path.display());
    }
    tracing::debug!(
        "saved vector index dump {} ({} entries, {} bytes)",
        to.path.display(),
        entries.len(),
        bytes.len()
    );
    if let Some(old) = claim(to.owner, to.path) {
        let _ = std::fs::remove_file(old);
    }
    sweep();
}

/// Deletes dumps nobody claimed for [`STALE_AFTER`].
fn sweep() {
    let Some(dir) = dir() else { return };
    let claimed: HashSet<PathBuf> = claims()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    let Ok(list) = std::fs::read_dir(dir) else {
        return;
    };
    for e in list.flatten() {
        let p = e.path();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > STALE_AFTER);
        if old && !claimed.contains(&p) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The dump for `c` (a state just restored from a snapshot), if one exists
/// and covers every point of `c`; else `None` (rebuild).
pub(crate) fn load(name: &str, c: &ShardCollection) -> Option<Loaded> {
    let dir = dir()?;
    let metric = c.metric?;
    let path = path_for(dir, name, c);
    let bytes = std::fs::read(&path).ok()?;
    match decode(&bytes, metric, c) {
        Ok(l) => {
            tracing::info!(
                "loaded vector index of {name:?} from {} ({} entries)",
                path.display(),
                l.entries.len()
            );
            Some(l)
        }
        Err(e) => {
            tracing::warn!("ignoring index dump {}: {e}; rebuilding", path.display());
            None
        }
    }
}

pub(crate) fn decode(bytes: &[u8], metric: Metric, c: &ShardCollection) -> Result<Loaded, String> {
    if bytes.len() < 4 || crc32fast::hash(&bytes[4..]).to_le_bytes() != bytes[..4] {
        return Err("checksum mismatch".into());
    }
    type Body = (Vec<(PointId, u64)>, Vec<u8>);
    let ((entries, graph), _): (Body, _) =
        bincode::serde::decode_from_slice(&bytes[4..], bincode::config::standard())
            .map_err(|e| e.to_string())?;
    let index = Hnsw::load(&graph, metric)?;
    if index.len() != entries.len() {
        return Err(format!(
            "{} graph nodes for {} ids",
            index.len(),
            entries.len()
        ));
    }
    let have: HashSet<(&PointId, u64)> = entries.iter().map(|(id, rev)| (id, *rev)).collect();
    if let Some((id, _)) = c
        .points
        .iter()
        .find(|(id, p)| !have.contains(&(*id, p.rev)))
    {
        return Err(format!("point {id} is not in it"));
    }
    // Only each held point's newest entry is alive (one upsert naming an
    // id twice indexed it twice at the same revision).
    let mut dead_at = vec![0; entries.len()];
    let mut seen = HashSet::new();
    for (i, (id, rev)) in entries.iter().enumerate().rev() {
        if c.points.get(id).is_some_and(|p| p.rev == *rev) && seen.insert(id) {
            dead_at[i] = crate::index::ALIVE;
        }
    }
    Ok(Loaded {
        index: Arc::new(index),
        entries,
        dead_at,
    })
}

/// Records that the collection instance with index handle `owner` uses
/// the dump it was loaded from.
pub(crate) fn claim_loaded(owner: usize, name: &str, c: &ShardCollection) {
    if let Some(dir) = dir() {
        claim(owner, path_for(dir, name, c));
    }
}
