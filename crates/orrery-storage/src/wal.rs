//! The Raft logs of every group on a node, in one append-only file set
//! (`wal/<segment>.wal`), written by one thread: a burst of appends from
//! any number of groups costs one `write` and one `fdatasync`.
//!
//! Why not sled's trees, as before: a log is written once, read back
//! mostly while it is still in memory, and dropped from the front. sled's
//! page cache did far more per entry than that needs (a quarter of a
//! node's CPU went to its I/O threads handing buffers to each other in the
//! job-queue benchmark), and the log is the hot path of every write. sled
//! still holds the small, rarely written records (vote, commit index,
//! purge point) and the snapshots.
//!
//! Format. A segment is a sequence of frames; a frame is the records one
//! flush wrote, followed by a trailer:
//!
//! ```text
//! record  = kind u8 | group u64 | index u64 | term u64 | leader u64 | len u32
//!           | crc32(the header so far) u32 | payload[len]
//! trailer = 0xC7 | frame_len u32 | crc32(records of the frame) u32
//! ```
//!
//! (integers little-endian). A frame is written with one `write` and made
//! durable with `fdatasync` before any of its appends is acknowledged, and
//! before the next frame is written. So a damaged frame that is followed by
//! anything is corruption (the node refuses to start), while a damaged or
//! incomplete *last* frame of the newest segment is a write that a crash
//! interrupted, was never acknowledged, and is cut off on open. The record
//! header's own checksum keeps a damaged length from passing for an
//! interrupted write (it would point past the end of the file). What an
//! acknowledged-but-damaged last frame would hide, the durability manifest
//! catches (`LogStore::check_durable`).
//!
//! Records are `Entry` (payload: the encoded openraft entry, which carries
//! its own checksum), `Truncate` (drop the group's entries from `index`
//! on) and `Drop` (forget the group: its replica left the node). Purges
//! are not records: the purge point lives in sled, and replay trims below
//! it when the group is opened. A segment is deleted once none of the
//! current log entries is stored in it any more, oldest segment first (so
//! a `Truncate` or `Drop` is never deleted while the entries it overrides
//! survive); entries of rarely written groups that would keep the oldest
//! segment forever are copied forward (`State::compact`).

use crate::StorageError;
use orrery_types::GroupId;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// By default a segment is closed (and a new one started) once it is
/// this long.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Recent entries of each group are kept in memory, up to this many bytes,
/// so that replication to followers rarely reads the files.
const CACHE_BYTES_PER_GROUP: usize = 8 << 20;
/// Beyond this many segments, the live entries that pin the oldest one
/// are copied forward (see `State::compact`).
const COMPACT_AFTER_SEGMENTS: usize = 4;

const KIND_ENTRY: u8 = 1;
const KIND_TRUNCATE: u8 = 2;
const KIND_DROP: u8 = 3;
const KIND_TRAILER: u8 = 0xC7;
const HEADER: usize = 1 + 8 + 8 + 8 + 8 + 4 + 4;
const TRAILER: usize = 1 + 4 + 4;

/// The leader id an entry was written under (openraft's `CommittedLeaderId`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryLeader {
    pub term: u64,
    pub node: u64,
}

/// An entry to append: its index, its leader, its encoded bytes.
pub struct NewEntry {
    pub index: u64,
    pub leader: EntryLeader,
    pub bytes: Vec<u8>,
}

type Callback = Box<dyn FnOnce(io::Result<()>) + Send>;

#[derive(Clone)]
struct Slot {
    leader: EntryLeader,
    seg: u64,
    /// Offset of the payload in the segment.
    off: u64,
    len: u32,
    /// The payload while it is unwritten or recent.
    data: Option<Arc<Vec<u8>>>,
}

#[derive(Default)]
struct GroupLog {
    entries: BTreeMap<u64, Slot>,
    cached_bytes: usize,
    /// No entry below this index holds its payload in memory.
    cache_from: u64,
}

impl GroupLog {
    /// Removes the entries from `index` on and returns them.
    fn drop_from(&mut self, index: u64) -> BTreeMap<u64, Slot> {
        if self
            .entries
            .last_key_value()
            .is_none_or(|(last, _)| *last < index)
        {
            return BTreeMap::new();
        }
        let gone = self.entries.split_off(&index);
        self.cached_bytes -= cached(&gone);
        self.cache_from = self.cache_from.min(index);
        gone
    }

    /// Removes the entries up to `index` and returns them.
    fn drop_through(&mut self, index: u64) -> BTreeMap<u64, Slot> {
        let keep = self.entries.split_off(&index.saturating_add(1));
        let gone = std::mem::replace(&mut self.entries, keep);
        self.cached_bytes -= cached(&gone);
        gone
    }
}

/// What the log knows of one segment.
#[derive(Default)]
struct SegInfo {
    /// Entries of the current logs that are stored in it.
    live: u64,
    /// Where the log ended when `live` last reached zero: the segment may
    /// go once everything up to there is on disk (entries moved out of it
    /// by compaction are durable in their new place only then).
    cleared_at: Option<(u64, u64)>,
}

fn cached(slots: &BTreeMap<u64, Slot>) -> usize {
    slots
        .values()
        .filter_map(|s| s.data.as_ref().map(|d| d.len()))
        .sum()
}

struct State {
    groups: HashMap<GroupId, GroupLog>,
    /// Every segment not yet deleted.
    segs: BTreeMap<u64, SegInfo>,
    /// The newest segment that compaction has looked at.
    compact_checked: u64,
    /// Entries compaction has copied forward.
    moved: u64,
    /// The segment appended to, and its length counting pending records
    /// and the trailers reserved for frames already taken by the writer.
    seg: u64,
    seg_len: u64,
    segment_bytes: u64,
    /// Records not yet handed to the writer, per segment, oldest first.
    pending: Vec<(u64, Vec<u8>)>,
    callbacks: Vec<Callback>,
    /// Everything before (segment, offset) is on disk.
    written: (u64, u64),
    /// Set once a write or fsync failed: after that nothing more is
    /// acknowledged (the page cache may have dropped the failed pages).
    failed: Option<String>,
    closing: bool,
}

struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
    files: Mutex<HashMap<u64, Arc<File>>>,
    appends: AtomicU64,
    syncs: AtomicU64,
    bytes: AtomicU64,
}

/// Counters since the log was opened (exported in `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// `append` calls (one per openraft append, of any number of entries).
    pub appends: u64,
    /// `fdatasync` calls: appends per sync is the group commit at work.
    pub syncs: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Segment files in use.
    pub segments: u64,
    /// Entries copied forward by compaction.
    pub moved: u64,
}

/// Marks the end of the last handle: the writer then drains and exits,
/// and the drop waits for it, so that the directory can be opened again
/// at once without a writer of the old handle still appending to it.
struct Alive {
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Alive {
    fn drop(&mut self) {
        lock(&self.shared.state).closing = true;
        self.shared.wake.notify_all();
        if let Some(w) = lock(&self.writer).take() {
            if w.thread().id() != std::thread::current().id() {
                let _ = w.join();
            }
        }
    }
}

/// The node's write-ahead log; cheap to clone.
#[derive(Clone)]
pub struct Wal {
    shared: Arc<Shared>,
    _alive: Arc<Alive>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn seg_path(dir: &Path, seg: u64) -> PathBuf {
    dir.join(format!("{seg:020}.wal"))
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// A record as replay reads it.
struct Rec {
    kind: u8,
    group: GroupId,
    index: u64,
    leader: EntryLeader,
    off: u64,
    len: u32,
}

impl State {
    /// Appends a record to the pending bytes of the current segment and
    /// returns the offset of its payload.
    fn push_record(
        &mut self,
        kind: u8,
        group: GroupId,
        index: u64,
        leader: EntryLeader,
        payload: &[u8],
    ) -> u64 {
        if self.seg_len >= self.segment_bytes {
            self.seg += 1;
            self.seg_len = 0;
        }
        let seg = self.seg;
        if self.pending.last().is_none_or(|(s, _)| *s != seg) {
            self.pending.push((seg, Vec::new()));
            // Known even if it only ever holds truncations, so that it is
            // deleted in its turn.
            self.segs.entry(seg).or_default();
        }
        let buf = match self.pending.last_mut() {
            Some((_, b)) => b,
            None => unreachable!("a pending chunk was just pushed"),
        };
        let start = buf.len();
        buf.push(kind);
        put_u64(buf, group);
        put_u64(buf, index);
        put_u64(buf, leader.term);
        put_u64(buf, leader.node);
        put_u32(buf, payload.len() as u32);
        let hcrc = crc32fast::hash(&buf[start..]);
        put_u32(buf, hcrc);
        buf.extend_from_slice(payload);
        let off = self.seg_len + HEADER as u64;
        self.seg_len += (HEADER + payload.len()) as u64;
        off
    }

    fn apply(&mut self, seg: u64, r: &Rec, data: Option<Arc<Vec<u8>>>) {
        let gone = match r.kind {
            KIND_ENTRY => {
                let g = self.groups.entry(r.group).or_default();
                let gone = g.drop_from(r.index);
                if let Some(d) = &data {
                    g.cached_bytes += d.len();
                }
                g.entries.insert(
                    r.index,
                    Slot {
                        leader: r.leader,
                        seg,
                        off: r.off,
                        len: r.len,
                        data,
                    },
                );
                self.segs.entry(seg).or_default().live += 1;
                gone
            }
            KIND_TRUNCATE => match self.groups.get_mut(&r.group) {
                Some(g) => g.drop_from(r.index),
                None => BTreeMap::new(),
            },
            _ => self
                .groups
                .remove(&r.group)
                .map(|g| g.entries)
                .unwrap_or_default(),
        };
        self.release(gone.values().map(|s| s.seg));
    }

    /// Where the log ends, counting what is pending.
    fn end(&self) -> (u64, u64) {
        (self.seg, self.seg_len)
    }

    /// Accounts for entries that left the segments `segs`.
    fn release(&mut self, segs: impl Iterator<Item = u64>) {
        let end = self.end();
        for seg in segs {
            if let Some(info) = self.segs.get_mut(&seg) {
                info.live = info.live.saturating_sub(1);
                if info.live == 0 {
                    info.cleared_at = Some(end);
                }
            }
        }
    }

    /// Removes `group`'s entries up to `index`.
    fn purge(&mut self, group: GroupId, index: u64) {
        let gone = self.groups.entry(group).or_default().drop_through(index);
        self.release(gone.values().map(|s| s.seg));
    }

    /// Copies forward the live entries that keep the oldest segment from
    /// being deleted, once there are more than [`COMPACT_AFTER_SEGMENTS`].
    ///
    /// Segments go oldest first (a truncate or drop record must never go
    /// while entries it overrides survive), so one group that rarely
    /// writes and so never reaches its snapshot would otherwise keep every
    /// later segment on disk. For each group with entries in the oldest
    /// segment, its entries from the first of those to its last are
    /// appended again (replay then sees the copies replace the originals),
    /// if all of them together are small next to a segment (a quarter of
    /// one, at least 64 KiB); groups with more than that are busy, and
    /// their snapshots will purge them.
    fn compact(&mut self, read: impl Fn(u64, u64, u32) -> io::Result<Vec<u8>>) -> io::Result<()> {
        if self.segs.len() <= COMPACT_AFTER_SEGMENTS || self.compact_checked >= self.seg {
            return Ok(());
        }
        self.compact_checked = self.seg;
        let Some((&oldest, info)) = self.segs.first_key_value() else {
            return Ok(());
        };
        if info.live == 0 || oldest >= self.written.0 {
            return Ok(());
        }
        // At most a quarter of a segment is copied per segment started,
        // so compaction adds at most a quarter to what is written.
        let budget = (self.segment_bytes / 4).max(64 << 10);
        let mut total = 0u64;
        let mut moves: Vec<(GroupId, u64)> = Vec::new();
        for (gid, g) in &self.groups {
            let Some((&from, _)) = g.entries.iter().find(|(_, s)| s.seg == oldest) else {
                continue;
            };
            total += g
                .entries
                .range(from..)
                .map(|(_, s)| u64::from(s.len))
                .sum::<u64>();
            if total > budget {
                return Ok(());
            }
            moves.push((*gid, from));
        }
        let mut left = Vec::new();
        for (gid, from) in moves {
            let slots: Vec<(u64, Slot)> = match self.groups.get(&gid) {
                Some(g) => g
                    .entries
                    .range(from..)
                    .map(|(i, s)| (*i, s.clone()))
                    .collect(),
                None => continue,
            };
            for (i, old) in slots {
                let payload = match old.data {
                    Some(d) => d,
                    None => Arc::new(read(old.seg, old.off, old.len)?),
                };
                let new_off = self.push_record(KIND_ENTRY, gid, i, old.leader, &payload);
                let new_seg = self.seg;
                self.segs.entry(new_seg).or_default().live += 1;
                self.moved += 1;
                left.push(old.seg);
                if let Some(g) = self.groups.get_mut(&gid) {
                    if let Some(s) = g.entries.get_mut(&i) {
                        if s.data.is_none() {
                            g.cached_bytes += payload.len();
                        }
                        s.seg = new_seg;
                        s.off = new_off;
                        s.data = Some(payload);
                    }
                    g.cache_from = g.cache_from.min(from);
                }
            }
        }
        // Only now: the segments left may go once every copy is on disk.
        self.release(left.into_iter());
        Ok(())
    }

    /// Drops cached payloads that are on disk, beyond each group's budget.
    fn evict(&mut self) {
        let written = self.written;
        for g in self.groups.values_mut() {
            if g.cached_bytes <= CACHE_BYTES_PER_GROUP {
                continue;
            }
            for (i, s) in g.entries.range_mut(g.cache_from..) {
                if g.cached_bytes <= CACHE_BYTES_PER_GROUP || (s.seg, s.off) >= written {
                    break;
                }
                if let Some(d) = s.data.take() {
                    g.cached_bytes -= d.len();
                }
                g.cache_from = i + 1;
            }
        }
    }

    /// Segments that may go: the oldest ones, closed and written, that no
    /// entry of any current log is stored in any more.
    fn deletable(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some((&seg, info)) = self.segs.first_key_value() {
            let done = seg < self.seg
                && seg < self.written.0
                && info.live == 0
                && info.cleared_at.is_none_or(|c| self.written >= c);
            if !done {
                break;
            }
            self.segs.remove(&seg);
            out.push(seg);
        }
        out
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir`, replaying every segment; new
    /// segments are started once one reaches `segment_bytes`.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Wal, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        // The directory's own entry must survive a crash as well.
        if let Some(parent) = dir.parent() {
            File::open(parent)
                .and_then(|f| f.sync_all())
                .map_err(|e| io_error(parent, e))?;
        }
        let mut segs: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| io_error(dir, e))?
            .filter_map(|e| {
                let name = e.ok()?.file_name();
                name.to_str()?.strip_suffix(".wal")?.parse().ok()
            })
            .collect();
        segs.sort_unstable();
        let mut st = State {
            groups: HashMap::new(),
            segs: BTreeMap::new(),
            compact_checked: 0,
            moved: 0,
            seg: segs.last().map_or(0, |s| s + 1),
            seg_len: 0,
            segment_bytes: segment_bytes.max(1),
            pending: Vec::new(),
            callbacks: Vec::new(),
            written: (0, 0),
            failed: None,
            closing: false,
        };
        st.written = (st.seg, 0);
        for (k, &seg) in segs.iter().enumerate() {
            replay_segment(dir, seg, k + 1 == segs.len(), &mut st)?;
        }
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            state: Mutex::new(st),
            wake: Condvar::new(),
            files: Mutex::new(HashMap::new()),
            appends: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        let for_writer = shared.clone();
        let writer = std::thread::Builder::new()
            .name("orrery-wal".into())
            .spawn(move || write_loop(for_writer))
            .map_err(|e| io_error(dir, e))?;
        // Old segments that are already fully purged go once the groups
        // have told their purge points (`open_group`).
        Ok(Wal {
            _alive: Arc::new(Alive {
                shared: shared.clone(),
                writer: Mutex::new(Some(writer)),
            }),
            shared,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// Tells the log a group's purge point on open: replay kept every
    /// entry it found, and the ones at or below it are gone.
    pub fn open_group(&self, group: GroupId, purged: Option<u64>) {
        let gone = {
            let mut st = self.state();
            if let Some(p) = purged {
                st.purge(group, p);
            }
            st.deletable()
        };
        self.delete_segments(gone);
    }

    /// Queues `entries` of `group` (replacing any at or after the first
    /// one's index); `done` runs once they are on disk, after every
    /// earlier append's. They are readable at once.
    pub fn append(&self, group: GroupId, entries: Vec<NewEntry>, done: Callback) {
        let mut st = self.state();
        if let Some(f) = &st.failed {
            let e = io::Error::other(format!("write-ahead log failed earlier: {f}"));
            drop(st);
            done(Err(e));
            return;
        }
        for e in entries {
            let off = st.push_record(KIND_ENTRY, group, e.index, e.leader, &e.bytes);
            let rec = Rec {
                kind: KIND_ENTRY,
                group,
                index: e.index,
                leader: e.leader,
                off,
                len: e.bytes.len() as u32,
            };
            let seg = st.seg;
            st.apply(seg, &rec, Some(Arc::new(e.bytes)));
        }
        st.callbacks.push(done);
        drop(st);
        self.shared.appends.fetch_add(1, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }

    /// Drops `group`'s entries from `index` on. Durable with the next
    /// append (until then a crash brings them back, which is the state
    /// before the truncation and harmless).
    pub fn truncate(&self, group: GroupId, index: u64) {
        let mut st = self.state();
        st.push_record(
            KIND_TRUNCATE,
            group,
            index,
            EntryLeader { term: 0, node: 0 },
            &[],
        );
        let gone = match st.groups.get_mut(&group) {
            Some(g) => g.drop_from(index),
            None => BTreeMap::new(),
        };
        st.release(gone.values().map(|s| s.seg));
    }

    /// Drops `group`'s entries up to `index`; the caller has made the
    /// purge point durable first.
    pub fn purge(&self, group: GroupId, index: u64) {
        let gone = {
            let mut st = self.state();
            st.purge(group, index);
            st.deletable()
        };
        self.delete_segments(gone);
    }

    /// Forgets `group` durably: the record is on disk when this returns.
    pub fn drop_group(&self, group: GroupId) -> io::Result<()> {
        {
            let mut st = self.state();
            let none = EntryLeader { term: 0, node: 0 };
            st.push_record(KIND_DROP, group, 0, none, &[]);
            let seg = st.seg;
            let rec = Rec {
                kind: KIND_DROP,
                group,
                index: 0,
                leader: none,
                off: 0,
                len: 0,
            };
            st.apply(seg, &rec, None);
        }
        self.sync()
    }

    /// Waits until everything queued so far is on disk.
    pub fn sync(&self) -> io::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let mut st = self.state();
            if let Some(f) = &st.failed {
                return Err(io::Error::other(format!(
                    "write-ahead log failed earlier: {f}"
                )));
            }
            st.callbacks.push(Box::new(move |r| {
                let _ = tx.send(r);
            }));
        }
        self.shared.wake.notify_one();
        rx.recv()
            .unwrap_or_else(|_| Err(io::Error::other("write-ahead log writer stopped")))
    }

    /// The group's last entry: index and leader.
    pub fn last(&self, group: GroupId) -> Option<(u64, EntryLeader)> {
        let st = self.state();
        let (i, s) = st.groups.get(&group)?.entries.last_key_value()?;
        Some((*i, s.leader))
    }

    /// Whether the group has any entry.
    pub fn is_empty(&self, group: GroupId) -> bool {
        self.state()
            .groups
            .get(&group)
            .is_none_or(|g| g.entries.is_empty())
    }

    /// The group's entries with indexes in `range`, in order, as
    /// (index, encoded entry). Entries no longer cached are read from the
    /// segments.
    pub fn read(&self, group: GroupId, range: Range<u64>) -> io::Result<Vec<(u64, Arc<Vec<u8>>)>> {
        enum Got {
            Mem(Arc<Vec<u8>>),
            Disk(u64, u64, u32),
        }
        let got: Vec<(u64, Got)> = {
            let st = self.state();
            let Some(g) = st.groups.get(&group) else {
                return Ok(Vec::new());
            };
            if range.start >= range.end {
                return Ok(Vec::new());
            }
            g.entries
                .range(range)
                .map(|(i, s)| {
                    let got = match &s.data {
                        Some(d) => Got::Mem(d.clone()),
                        None => Got::Disk(s.seg, s.off, s.len),
                    };
                    (*i, got)
                })
                .collect()
        };
        let mut out = Vec::with_capacity(got.len());
        for (i, g) in got {
            let bytes = match g {
                Got::Mem(d) => d,
                Got::Disk(seg, off, len) => Arc::new(read_at(&self.shared, seg, off, len)?),
            };
            out.push((i, bytes));
        }
        Ok(out)
    }

    fn delete_segments(&self, segs: Vec<u64>) {
        delete_segments(&self.shared, segs);
    }

    /// Why the log refuses every write, once a write or fsync failed.
    pub fn failure(&self) -> Option<String> {
        self.state().failed.clone()
    }

    pub fn stats(&self) -> WalStats {
        let st = self.state();
        WalStats {
            appends: self.shared.appends.load(Ordering::Relaxed),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
            segments: st.segs.len() as u64,
            moved: st.moved,
        }
    }
}

fn segment_file(shared: &Shared, seg: u64) -> io::Result<Arc<File>> {
    let mut files = lock(&shared.files);
    if let Some(f) = files.get(&seg) {
        return Ok(f.clone());
    }
    let f = Arc::new(File::open(seg_path(&shared.dir, seg))?);
    files.insert(seg, f.clone());
    Ok(f)
}

/// Reads `len` bytes at `off` of segment `seg`.
fn read_at(shared: &Shared, seg: u64, off: u64, len: u32) -> io::Result<Vec<u8>> {
    let file = segment_file(shared, seg)?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, off)?;
    Ok(buf)
}

fn delete_segments(shared: &Shared, segs: Vec<u64>) {
    for seg in segs {
        lock(&shared.files).remove(&seg);
        let path = seg_path(&shared.dir, seg);
        if let Err(e) = std::fs::remove_file(&path) {
            // Harmless: replay finds nothing live in it again.
            tracing::warn!(path = %path.display(), error = %e, "removing an unused log segment failed");
        }
    }
}

fn io_error(path: &Path, e: io::Error) -> StorageError {
    StorageError::Io(format!("{}: {e}", path.display()))
}

/// Replays one segment into `st`. A damaged frame followed by more data is
/// corruption; a damaged or incomplete last frame of the newest segment is
/// an interrupted write and is cut off.
fn replay_segment(dir: &Path, seg: u64, newest: bool, st: &mut State) -> Result<(), StorageError> {
    let path = seg_path(dir, seg);
    let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
    let len = bytes.len();
    let mut pos = 0usize;
    let mut frame_start = 0usize;
    let mut recs: Vec<Rec> = Vec::new();
    // Why replay stopped early: (problem, whether it could be a torn write).
    let mut stop: Option<(String, bool)> = None;
    while pos < len {
        let kind = bytes[pos];
        match kind {
            KIND_TRAILER => {
                if pos + TRAILER > len {
                    stop = Some(("incomplete frame trailer".into(), true));
                    break;
                }
                let flen = get_u32(&bytes, pos + 1) as usize;
                let crc = get_u32(&bytes, pos + 5);
                let ok =
                    flen == pos - frame_start && crc32fast::hash(&bytes[frame_start..pos]) == crc;
                if !ok {
                    let at_end = pos + TRAILER == len;
                    stop = Some(("frame checksum mismatch".into(), at_end));
                    break;
                }
                for r in recs.drain(..) {
                    st.apply(seg, &r, None);
                }
                pos += TRAILER;
                frame_start = pos;
            }
            KIND_ENTRY | KIND_TRUNCATE | KIND_DROP => {
                if pos + HEADER > len {
                    stop = Some(("incomplete record header".into(), true));
                    break;
                }
                if crc32fast::hash(&bytes[pos..pos + HEADER - 4])
                    != get_u32(&bytes, pos + HEADER - 4)
                {
                    stop = Some(("record header checksum mismatch".into(), false));
                    break;
                }
                let plen = get_u32(&bytes, pos + 33);
                if pos + HEADER + plen as usize > len {
                    stop = Some(("incomplete record".into(), true));
                    break;
                }
                recs.push(Rec {
                    kind,
                    group: get_u64(&bytes, pos + 1),
                    index: get_u64(&bytes, pos + 9),
                    leader: EntryLeader {
                        term: get_u64(&bytes, pos + 17),
                        node: get_u64(&bytes, pos + 25),
                    },
                    off: (pos + HEADER) as u64,
                    len: plen,
                });
                pos += HEADER + plen as usize;
            }
            // A file extended past its data (the size reached the disk
            // before the pages did) reads as zeros.
            0 if bytes[pos..].iter().all(|b| *b == 0) => {
                stop = Some(("zero-filled tail".into(), true));
                break;
            }
            other => {
                stop = Some((format!("unknown record kind {other:#04x}"), false));
                break;
            }
        }
    }
    if stop.is_none() && frame_start < len {
        stop = Some(("records without a frame trailer".into(), true));
    }
    st.segs.entry(seg).or_default();
    let Some((problem, torn)) = stop else {
        return Ok(());
    };
    if !(newest && torn) {
        return Err(StorageError::Corrupt {
            what: format!("log segment {} at byte {frame_start}", path.display()),
            detail: problem,
        });
    }
    tracing::warn!(
        path = %path.display(),
        at = frame_start,
        dropped_bytes = len - frame_start,
        %problem,
        "cutting off an interrupted write at the end of the log (it was never acknowledged)"
    );
    let f = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    f.set_len(frame_start as u64)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_error(&path, e))?;
    Ok(())
}

/// The writer thread: takes what is pending, writes it as one frame per
/// segment, fsyncs, then runs the callbacks in order.
fn write_loop(shared: Arc<Shared>) {
    let mut current: Option<(u64, Arc<File>, u64)> = None;
    loop {
        let (chunks, callbacks) = {
            let mut st = lock(&shared.state);
            while st.pending.is_empty() && st.callbacks.is_empty() && !st.closing {
                st = shared.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.pending.is_empty() && st.callbacks.is_empty() {
                return;
            }
            let chunks = std::mem::take(&mut st.pending);
            if chunks.last().is_some_and(|(s, _)| *s == st.seg) {
                // Appends after this point land after this frame's trailer.
                st.seg_len += TRAILER as u64;
            }
            (chunks, std::mem::take(&mut st.callbacks))
        };
        let result = write_frames(&shared, &mut current, chunks);
        let outcome = {
            let mut st = lock(&shared.state);
            match &result {
                Ok(Some(end)) => {
                    st.written = *end;
                    st.evict();
                    if let Err(e) = st.compact(|seg, off, len| read_at(&shared, seg, off, len)) {
                        tracing::warn!(error = %e, "compacting the write-ahead log failed; will retry after the next segment");
                    }
                    let gone = st.deletable();
                    if !gone.is_empty() {
                        drop(st);
                        delete_segments(&shared, gone);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "write-ahead log write failed; no further write is acknowledged");
                    st.failed = Some(e.to_string());
                }
            }
            result.map(|_| ()).map_err(|e| e.to_string())
        };
        for cb in callbacks {
            cb(outcome.clone().map_err(io::Error::other));
        }
    }
}

/// Writes each chunk as a frame to its segment and makes it durable.
/// Returns the end of what was written.
fn write_frames(
    shared: &Shared,
    current: &mut Option<(u64, Arc<File>, u64)>,
    chunks: Vec<(u64, Vec<u8>)>,
) -> io::Result<Option<(u64, u64)>> {
    let mut end = None;
    for (seg, mut buf) in chunks {
        if current.as_ref().is_none_or(|(s, _, _)| *s != seg) {
            let path = seg_path(&shared.dir, seg);
            let file = Arc::new(
                OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .read(true)
                    .open(&path)?,
            );
            // The new file's name must survive a crash too.
            File::open(&shared.dir)?.sync_all()?;
            lock(&shared.files).insert(seg, file.clone());
            *current = Some((seg, file, 0));
        }
        let Some((_, file, len)) = current.as_mut() else {
            unreachable!("the current segment was just set");
        };
        let crc = crc32fast::hash(&buf);
        let flen = buf.len() as u32;
        buf.push(KIND_TRAILER);
        put_u32(&mut buf, flen);
        put_u32(&mut buf, crc);
        (&**file).write_all(&buf)?;
        shared.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        // A frame is durable before the next one is written (that is what
        // lets replay tell corruption from an interrupted write) and before
        // any callback runs. Chunks are per segment, so this is one fsync
        // unless the batch crossed into a new segment.
        // TEST ONLY: the knob that proves the power-loss tests catch a log
        // that does not sync (crate::test_skip_fsync).
        if !crate::test_skip_fsync() {
            file.sync_data()?;
            shared.syncs.fetch_add(1, Ordering::Relaxed);
        }
        *len += buf.len() as u64;
        end = Some((seg, *len));
    }
    Ok(end)
}
