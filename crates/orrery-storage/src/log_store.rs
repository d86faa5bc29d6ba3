//! `RaftLogStorage` of one group: entries in the node's write-ahead log
//! (`wal.rs`), vote, commit index and purge point in the group's sled
//! `meta` tree.

// openraft's `StorageError` is large, but it is the error type openraft's
// storage traits require; the private helpers return it as is.
#![allow(clippy::result_large_err)]

use crate::codec::{decode, encode};
use crate::wal::{EntryLeader, NewEntry, Wal};
use crate::{Manifest, NodeStorage, StorageError as Error};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, CommittedLeaderId, Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId,
    RaftLogReader, RaftTypeConfig, StorageError, StorageIOError, Vote,
};
use orrery_types::GroupId;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub(crate) const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
pub(crate) const KEY_PURGED: &[u8] = b"last_purged";

fn io_err<NID: openraft::NodeId>(
    subject: ErrorSubject<NID>,
    verb: ErrorVerb,
    e: impl ToString,
) -> StorageError<NID> {
    StorageIOError::new(subject, verb, AnyError::error(e.to_string())).into()
}

/// The log and vote of one Raft group.
pub struct LogStore<C: RaftTypeConfig> {
    group: GroupId,
    wal: Wal,
    meta: sled::Tree,
    sled_files: crate::SledFiles,
    manifest: Manifest,
    /// 1 + the highest log index known flushed (0: none), shared by clones.
    flushed: Arc<AtomicU64>,
    /// Encoded bytes of every entry appended since the node started, shared
    /// by clones: what the snapshot schedule weighs against the state's size.
    appended: Arc<AtomicU64>,
    /// The commit index last written to sled, 0 for none (see
    /// `save_committed`).
    committed_written: Arc<AtomicU64>,
    /// The latest commit index saved, written to sled or not.
    committed: Arc<std::sync::Mutex<Option<LogId<C::NodeId>>>>,
    _c: PhantomData<C>,
}

/// The stored commit index is rewritten once it has moved this many entries
/// on. It is only a hint for replay after a restart (see `save_committed`);
/// writing it to sled on every commit cost about 2 % of a node's CPU in the
/// job-queue benchmark.
const COMMITTED_WRITE_EVERY: u64 = 512;

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            group: self.group,
            wal: self.wal.clone(),
            meta: self.meta.clone(),
            sled_files: self.sled_files.clone(),
            manifest: self.manifest.clone(),
            flushed: self.flushed.clone(),
            appended: self.appended.clone(),
            committed_written: self.committed_written.clone(),
            committed: self.committed.clone(),
            _c: PhantomData,
        }
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig<NodeId = u64, Entry = Entry<C>>,
{
    pub fn open(storage: &NodeStorage, group: GroupId) -> Result<Self, Error> {
        let meta = storage.tree(group, "meta")?;
        if !meta.contains_key(KEY_VOTE)? {
            // A group dropped here before comes back with the term it had.
            if let Some(vote) = storage.dropped_vote(group)? {
                meta.insert(KEY_VOTE, vote)?;
                storage.sled_files().flush_tree(&meta)?;
            }
        }
        let wal = storage.wal().clone();
        let purged = read_meta_raw::<LogId<u64>>(&meta, KEY_PURGED)
            .map_err(|detail| Error::Corrupt {
                what: format!("group {group} metadata last_purged"),
                detail,
            })?
            .map(|p| p.index);
        wal.open_group(group, purged);
        migrate_sled_log(storage, &wal, group, purged)?;
        // What replay found is on disk.
        let flushed = wal.last(group).map_or(0, |(i, _)| i + 1);
        Ok(Self {
            group,
            flushed: Arc::new(AtomicU64::new(flushed)),
            appended: Arc::new(AtomicU64::new(0)),
            committed_written: Arc::new(AtomicU64::new(0)),
            committed: Arc::new(std::sync::Mutex::new(None)),
            wal,
            meta,
            sled_files: storage.sled_files().clone(),
            manifest: storage.manifest().clone(),
            _c: PhantomData,
        })
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Encoded bytes of the entries appended to this group's log since the
    /// node started (those replayed on start not included).
    pub fn appended_bytes(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError<C::NodeId>> {
        read_meta_raw(&self.meta, key).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        v: &T,
    ) -> Result<(), StorageError<C::NodeId>> {
        let bytes = encode(v).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.meta
            .insert(key, bytes)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        Ok(())
    }

    fn last_purged(&self) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        self.read_meta(KEY_PURGED)
    }

    /// Whether this group has ever voted or logged anything here, i.e. whether
    /// it was initialised or joined before.
    pub fn is_pristine(&self) -> bool {
        self.wal.is_empty(self.group) && !matches!(self.meta.contains_key(KEY_VOTE), Ok(true))
    }

    /// Checks every stored entry's checksum. Used on start so that a node
    /// with a damaged log refuses to serve instead of replicating damage.
    /// Fails if sled holds less than the durability manifest recorded: an
    /// older vote, or a log that ends (even counting purged entries) before
    /// the recorded commit index.
    pub fn check_durable(&self) -> Result<(), Error> {
        let Some(mark) = self.manifest.mark(self.group) else {
            return Ok(());
        };
        let lost = |detail: String| Error::Lost {
            group: self.group,
            detail,
        };
        let vote: Option<Vote<u64>> = self
            .read_meta(KEY_VOTE)
            .map_err(|e| lost(format!("vote unreadable: {e}")))?;
        let (term, node) = vote
            .map(|v| (v.leader_id.term, v.leader_id.node_id))
            .unwrap_or((0, 0));
        if term < mark.vote_term || (term == mark.vote_term && node != mark.vote_node) {
            return Err(lost(format!(
                "stored vote is term {term} for n{node}, but a vote for term {} (n{}) was durable",
                mark.vote_term, mark.vote_node
            )));
        }
        if let Some(committed) = mark.committed {
            let last_log = self.wal.last(self.group).map(|(i, _)| i);
            let purged: Option<LogId<u64>> = self
                .read_meta(KEY_PURGED)
                .map_err(|e| lost(format!("purge marker unreadable: {e}")))?;
            let last = last_log.max(purged.map(|p| p.index));
            if last.is_none_or(|l| l < committed) {
                return Err(lost(format!(
                    "log ends at {last:?}, but entries up to {committed} were durable and committed"
                )));
            }
        }
        Ok(())
    }

    pub fn verify(&self) -> Result<u64, Error> {
        let mut n = 0;
        let all = self
            .wal
            .read(self.group, 0..u64::MAX)
            .map_err(|e| Error::Io(format!("group {} log: {e}", self.group)))?;
        for (i, v) in all {
            decode::<Entry<C>>(&v).map_err(|e| Error::Corrupt {
                what: format!("group {} log entry {i}", self.group),
                detail: e.to_string(),
            })?;
            n += 1;
        }
        for key in [KEY_VOTE, KEY_COMMITTED, KEY_PURGED] {
            if let Some(v) = self.meta.get(key)? {
                // Only the checksum is verified here; the type is checked on use.
                if v.len() < 4
                    || u32::from_le_bytes([v[0], v[1], v[2], v[3]]) != crc32fast::hash(&v[4..])
                {
                    return Err(Error::Corrupt {
                        what: format!(
                            "group {} metadata {}",
                            self.group,
                            String::from_utf8_lossy(key)
                        ),
                        detail: "checksum mismatch".into(),
                    });
                }
            }
        }
        Ok(n)
    }
}

fn read_meta_raw<T: serde::de::DeserializeOwned>(
    meta: &sled::Tree,
    key: &[u8],
) -> Result<Option<T>, String> {
    match meta.get(key).map_err(|e| e.to_string())? {
        None => Ok(None),
        Some(bytes) => decode(&bytes).map(Some).map_err(|e| e.to_string()),
    }
}

fn leader_of(id: &LogId<u64>) -> EntryLeader {
    EntryLeader {
        term: id.leader_id.term,
        node: id.leader_id.node_id,
    }
}

/// Moves a log written by an older Orrery (a sled tree `g{id}.log`, keyed
/// by big-endian index) into the write-ahead log, durably, then empties
/// the tree. A no-op for groups that never had one.
fn migrate_sled_log(
    storage: &NodeStorage,
    wal: &Wal,
    group: GroupId,
    purged: Option<u64>,
) -> Result<(), Error> {
    let name = format!("g{group}.log");
    if !storage
        .db()
        .tree_names()
        .iter()
        .any(|n| n == name.as_bytes())
    {
        return Ok(());
    }
    let tree = storage.tree(group, "log")?;
    if tree.is_empty() {
        return Ok(());
    }
    let mut entries = Vec::new();
    for kv in tree.iter() {
        let (k, v) = kv?;
        let mut b = [0u8; 8];
        let n = k.len().min(8);
        b[..n].copy_from_slice(&k[..n]);
        let index = u64::from_be_bytes(b);
        if purged.is_some_and(|p| index <= p) {
            continue;
        }
        // An encoded entry starts with its log id, and decoding ignores
        // what follows it.
        let id = decode::<LogId<u64>>(&v).map_err(|e| Error::Corrupt {
            what: format!("group {group} sled log entry {index}"),
            detail: e.to_string(),
        })?;
        entries.push(NewEntry {
            index,
            leader: leader_of(&id),
            bytes: v.to_vec(),
        });
    }
    if !entries.is_empty() && wal.is_empty(group) {
        tracing::info!(
            group,
            entries = entries.len(),
            "moving the log from sled to the write-ahead log"
        );
        wal.append(group, entries, Box::new(|_| {}));
    }
    wal.sync()
        .map_err(|e| Error::Io(format!("group {group} log migration: {e}")))?;
    storage.db().drop_tree(name)?;
    storage.sled_files().flush_db(storage.db())?;
    Ok(())
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig<NodeId = u64, Entry = Entry<C>>,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        let raw = self
            .wal
            .read(self.group, start..end)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let mut out = Vec::with_capacity(raw.len());
        for (i, v) in raw {
            let entry: Entry<C> = decode(&v).map_err(|e| {
                io_err(
                    ErrorSubject::Log(LogId::new(Default::default(), i)),
                    ErrorVerb::Read,
                    e,
                )
            })?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig<NodeId = u64, Entry = Entry<C>>,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let last_purged = self.last_purged()?;
        let last = self
            .wal
            .last(self.group)
            .map(|(i, l)| LogId::new(CommittedLeaderId::new(l.term, l.node), i));
        // A crash between the two steps of `purge` can leave entries at or
        // below the purge point; they must not make the log look shorter
        // than what was purged (openraft requires last_purged <= last).
        let last_log_id = match (last, last_purged) {
            (Some(l), Some(p)) if l.index <= p.index => Some(p),
            (l, p) => l.or(p),
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.write_meta(KEY_VOTE, vote)?;
        // A vote must survive a crash before it is acted on, or a node could
        // vote twice in one term.
        crate::flush_tree(&self.meta, &self.sled_files)
            .await
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        let (m, group) = (self.manifest.clone(), self.group);
        let (term, node) = (vote.leader_id.term, vote.leader_id.node_id);
        tokio::task::spawn_blocking(move || m.record_vote(group, term, node))
            .await
            .map_err(|e| {
                io_err(
                    ErrorSubject::Vote,
                    ErrorVerb::Write,
                    std::io::Error::other(e),
                )
            })?
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        self.read_meta(KEY_VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        // Not flushed: losing it only means re-learning the commit index from
        // the leader, which is always safe. Entries up to it are durable (a
        // node only counts flushed entries), so the manifest may record it.
        // Only the part of it this node has flushed: a follower may learn
        // a commit index before its own copy of those entries is on disk.
        //
        // openraft re-applies the log up to the stored index on start, and
        // learns the rest from the leader (or, leading, by committing a
        // blank entry), so a stored index that lags by a few hundred entries
        // costs nothing but a moment after a restart: it is rewritten only
        // every `COMMITTED_WRITE_EVERY` entries.
        *self.committed.lock().unwrap_or_else(|p| p.into_inner()) = committed;
        let Some(c) = committed else {
            self.committed_written.store(0, Ordering::Relaxed);
            return self.write_meta(KEY_COMMITTED, &committed);
        };
        let flushed = self.flushed.load(Ordering::Acquire);
        if flushed > 0 {
            self.manifest
                .record_committed(self.group, c.index.min(flushed - 1));
        }
        let written = self.committed_written.load(Ordering::Relaxed);
        if written != 0
            && c.index < written.saturating_add(COMMITTED_WRITE_EVERY)
            && c.index >= written
        {
            return Ok(());
        }
        self.write_meta(KEY_COMMITTED, &committed)?;
        // 0 means "never written": index 0 is rewritten on the next commit.
        self.committed_written.store(c.index, Ordering::Relaxed);
        Ok(())
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        if let Some(c) = *self.committed.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(Some(c));
        }
        Ok(self
            .read_meta::<Option<LogId<C::NodeId>>>(KEY_COMMITTED)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Vec::new();
        let mut last = None;
        let mut size = 0;
        for entry in entries {
            let id = *entry.get_log_id();
            last = Some(id.index);
            let bytes =
                encode(&entry).map_err(|e| io_err(ErrorSubject::Log(id), ErrorVerb::Write, e))?;
            size += bytes.len() as u64;
            batch.push(NewEntry {
                index: id.index,
                leader: leader_of(&id),
                bytes,
            });
        }
        self.appended.fetch_add(size, Ordering::Relaxed);
        let flushed = self.flushed.clone();
        self.wal.append(
            self.group,
            batch,
            Box::new(move |r| {
                if let (Ok(()), Some(l)) = (&r, last) {
                    flushed.fetch_max(l + 1, Ordering::AcqRel);
                }
                callback.log_io_completed(r)
            }),
        );
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.wal.truncate(self.group, log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        // Record the purge point durably first: a crash between the two steps
        // then leaves extra entries (harmless) rather than a hole.
        self.write_meta(KEY_PURGED, &log_id)?;
        crate::flush_tree(&self.meta, &self.sled_files)
            .await
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.wal.purge(self.group, log_id.index);
        Ok(())
    }
}
