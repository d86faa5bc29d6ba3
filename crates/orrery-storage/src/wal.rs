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
//! it when the group is opened. A segment is deleted once every entry in
//! it is below its group's purge point, oldest segment first (so a
//! `Truncate` or `Drop` is never deleted while the entries it overrides
//! survive).

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
    /// Highest index purged (entries at or below it are gone for good).
    purged: Option<u64>,
    cached_bytes: usize,
    /// No entry below this index holds its payload in memory.
    cache_from: u64,
}

impl GroupLog {
    fn drop_from(&mut self, index: u64) {
        if self
            .entries
            .last_key_value()
            .is_none_or(|(last, _)| *last < index)
        {
            return;
        }
        let gone = self.entries.split_off(&index);
        self.cached_bytes -= cached(&gone);
        self.cache_from = self.cache_from.min(index);
    }

    fn drop_through(&mut self, index: u64) {
        let keep = self.entries.split_off(&index.saturating_add(1));
        let gone = std::mem::replace(&mut self.entries, keep);
        self.cached_bytes -= cached(&gone);
        self.purged = self.purged.max(Some(index));
    }
}

fn cached(slots: &BTreeMap<u64, Slot>) -> usize {
    slots
        .values()
        .filter_map(|s| s.data.as_ref().map(|d| d.len()))
        .sum()
}

struct State {
    groups: HashMap<GroupId, GroupLog>,
    /// Per segment, the highest entry index each group has in it.
    segs: BTreeMap<u64, HashMap<GroupId, u64>>,
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
}

/// Marks the end of the last handle: the writer then drains and exits.
struct Alive(Arc<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        lock(&self.0.state).closing = true;
        self.0.wake.notify_all();
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
        match r.kind {
            KIND_ENTRY => {
                let g = self.groups.entry(r.group).or_default();
                g.drop_from(r.index);
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
                let max = self
                    .segs
                    .entry(seg)
                    .or_default()
                    .entry(r.group)
                    .or_default();
                *max = (*max).max(r.index);
            }
            KIND_TRUNCATE => {
                if let Some(g) = self.groups.get_mut(&r.group) {
                    g.drop_from(r.index);
                }
            }
            _ => {
                self.groups.remove(&r.group);
                for m in self.segs.values_mut() {
                    m.remove(&r.group);
                }
            }
        }
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

    /// Segments that may go: a prefix of the closed, written ones whose
    /// entries are all purged (or belong to dropped groups).
    fn deletable(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some((&seg, maxes)) = self.segs.first_key_value() {
            let done = seg < self.seg
                && seg < self.written.0
                && maxes.iter().all(|(g, max)| {
                    self.groups
                        .get(g)
                        .is_none_or(|gl| gl.purged.is_some_and(|p| p >= *max))
                });
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
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("orrery-wal".into())
            .spawn(move || write_loop(writer))
            .map_err(|e| io_error(dir, e))?;
        // Old segments that are already fully purged go once the groups
        // have told their purge points (`open_group`).
        Ok(Wal {
            _alive: Arc::new(Alive(shared.clone())),
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
                st.groups.entry(group).or_default().drop_through(p);
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
        if let Some(g) = st.groups.get_mut(&group) {
            g.drop_from(index);
        }
    }

    /// Drops `group`'s entries up to `index`; the caller has made the
    /// purge point durable first.
    pub fn purge(&self, group: GroupId, index: u64) {
        let gone = {
            let mut st = self.state();
            st.groups.entry(group).or_default().drop_through(index);
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
                Got::Disk(seg, off, len) => {
                    let file = self.segment_file(seg)?;
                    let mut buf = vec![0u8; len as usize];
                    file.read_exact_at(&mut buf, off)?;
                    Arc::new(buf)
                }
            };
            out.push((i, bytes));
        }
        Ok(out)
    }

    fn segment_file(&self, seg: u64) -> io::Result<Arc<File>> {
        let mut files = lock(&self.shared.files);
        if let Some(f) = files.get(&seg) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(seg_path(&self.shared.dir, seg))?);
        files.insert(seg, f.clone());
        Ok(f)
    }

    fn delete_segments(&self, segs: Vec<u64>) {
        for seg in segs {
            lock(&self.shared.files).remove(&seg);
            let path = seg_path(&self.shared.dir, seg);
            if let Err(e) = std::fs::remove_file(&path) {
                // Harmless: replay finds its entries purged again.
                tracing::warn!(path = %path.display(), error = %e, "removing a purged log segment failed");
            }
        }
    }

    pub fn stats(&self) -> WalStats {
        WalStats {
            appends: self.shared.appends.load(Ordering::Relaxed),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
            segments: self.state().segs.len() as u64,
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
        file.sync_data()?;
        shared.syncs.fetch_add(1, Ordering::Relaxed);
        *len += buf.len() as u64;
        end = Some((seg, *len));
    }
    Ok(end)
}
