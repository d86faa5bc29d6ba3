//! The per-file durability model, pure logic (no I/O): what a file held at
//! its last `fsync`, kept as an undo log beside the live backing file.
//!
//! Writes go straight to the backing file (so reads need no merging); before
//! a write or truncation changes bytes that were durable, the old bytes are
//! saved here once. A sync forgets the saved bytes; a power cut writes them
//! back and cuts the file to its durable length. Appends past the durable
//! length (a write-ahead log's normal case) save nothing at all.

use std::collections::BTreeMap;

/// What must be done to a file to bring it back to its durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    /// Durable bytes to write back, by offset (non-overlapping).
    pub writes: Vec<(u64, Vec<u8>)>,
    /// The length the file must be cut (or extended) to afterwards.
    pub len: u64,
    /// A torn write's kept prefix (offset, bytes), written last: bytes
    /// between the durable length and it read as zeros (a hole).
    pub torn: Option<(u64, Vec<u8>)>,
}

/// The undo log of one file since its last sync.
#[derive(Debug, Clone)]
pub struct Shadow {
    /// The file's length at its last sync.
    durable_len: u64,
    /// Durable bytes overwritten since then, by offset; ranges never overlap
    /// and all lie below `durable_len`.
    saved: BTreeMap<u64, Vec<u8>>,
    /// The latest write since the sync (offset, data), for torn writes.
    last_write: Option<(u64, Vec<u8>)>,
}

impl Shadow {
    /// A file whose current content (of `len` bytes) is durable.
    pub fn new(len: u64) -> Shadow {
        Shadow {
            durable_len: len,
            saved: BTreeMap::new(),
            last_write: None,
        }
    }

    /// Whether anything changed since the last sync.
    pub fn is_clean(&self, current_len: u64) -> bool {
        self.saved.is_empty() && self.last_write.is_none() && current_len == self.durable_len
    }

    pub fn durable_len(&self) -> u64 {
        self.durable_len
    }

    /// Bytes held by the undo log (saved durable bytes and the last write).
    pub fn held_bytes(&self) -> usize {
        self.saved.values().map(Vec::len).sum::<usize>()
            + self.last_write.as_ref().map_or(0, |(_, d)| d.len())
    }

    /// Durable byte ranges inside `[start, end)` not saved yet: the caller
    /// reads them from the backing file and hands them to [`Shadow::save`]
    /// before it changes them.
    pub fn unsaved(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let end = end.min(self.durable_len);
        let mut out = Vec::new();
        let mut at = start;
        if at >= end {
            return out;
        }
        // A saved range that starts before `start` may cover its beginning.
        if let Some((&s, d)) = self.saved.range(..=at).next_back() {
            at = at.max(s + d.len() as u64);
        }
        for (&s, d) in self.saved.range(start..end) {
            if s > at {
                out.push((at, s));
            }
            at = at.max(s + d.len() as u64);
        }
        if at < end {
            out.push((at, end));
        }
        out
    }

    /// Records the durable bytes `data` found at `offset` (a range that
    /// [`Shadow::unsaved`] returned).
    pub fn save(&mut self, offset: u64, data: Vec<u8>) {
        if !data.is_empty() {
            self.saved.insert(offset, data);
        }
    }

    /// Notes a write (after its old bytes were saved), for torn writes.
    pub fn wrote(&mut self, offset: u64, data: &[u8]) {
        self.last_write = Some((offset, data.to_vec()));
    }

    /// Notes a truncation or extension to `len` (after the bytes it drops
    /// were saved). It is not a write that can be torn.
    pub fn resized(&mut self) {
        self.last_write = None;
    }

    /// `fsync`/`fdatasync`: everything the file holds now is durable.
    pub fn sync(&mut self, current_len: u64) {
        self.durable_len = current_len;
        self.saved.clear();
        self.last_write = None;
    }

    /// What a power cut leaves: the durable content, and with `tear`, a
    /// prefix of `keep` bytes (at most the write's length) of the latest
    /// unsynced write on top of it, as a disk that was part way through
    /// that write would.
    pub fn restore(&self, tear: Option<usize>) -> Restore {
        let writes: Vec<(u64, Vec<u8>)> = self.saved.iter().map(|(o, d)| (*o, d.clone())).collect();
        let mut torn = None;
        if let (Some(keep), Some((off, data))) = (tear, &self.last_write) {
            let keep = keep.min(data.len());
            if keep > 0 {
                torn = Some((*off, data[..keep].to_vec()));
            }
        }
        Restore {
            writes,
            len: self.durable_len,
            torn,
        }
    }

    /// The length of the latest unsynced write, if any.
    pub fn last_write_len(&self) -> Option<usize> {
        self.last_write.as_ref().map(|(_, d)| d.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A backing file with the shadow kept the way the filesystem keeps it.
    struct Tracked {
        live: Vec<u8>,
        shadow: Shadow,
    }

    impl Tracked {
        fn save_range(&mut self, start: u64, end: u64) {
            for (s, e) in self.shadow.unsaved(start, end) {
                let e = e.min(self.live.len() as u64);
                if s < e {
                    let d = self.live[s as usize..e as usize].to_vec();
                    self.shadow.save(s, d);
                }
            }
        }
        fn write(&mut self, off: u64, data: &[u8]) {
            self.save_range(off, off + data.len() as u64);
            let end = off as usize + data.len();
            if self.live.len() < end {
                self.live.resize(end, 0);
            }
            self.live[off as usize..end].copy_from_slice(data);
            self.shadow.wrote(off, data);
        }
        fn truncate(&mut self, len: u64) {
            self.save_range(len, self.live.len() as u64);
            self.live.resize(len as usize, 0);
            self.shadow.resized();
        }
        fn crash(&mut self, tear: Option<usize>) {
            let r = self.shadow.restore(tear);
            for (off, d) in r.writes {
                let end = off as usize + d.len();
                if self.live.len() < end {
                    self.live.resize(end, 0);
                }
                self.live[off as usize..end].copy_from_slice(&d);
            }
            self.live.resize(r.len as usize, 0);
            if let Some((off, d)) = r.torn {
                let end = off as usize + d.len();
                if self.live.len() < end {
                    self.live.resize(end, 0);
                }
                self.live[off as usize..end].copy_from_slice(&d);
            }
            self.shadow = Shadow::new(self.live.len() as u64);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, Vec<u8>),
        Truncate(u64),
        Sync,
        Crash(Option<usize>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u64..64, proptest::collection::vec(any::<u8>(), 1..24))
                .prop_map(|(o, d)| Op::Write(o, d)),
            1 => (0u64..80).prop_map(Op::Truncate),
            2 => Just(Op::Sync),
            1 => proptest::option::of(0usize..30).prop_map(Op::Crash),
        ]
    }

    proptest! {
        /// Against the simplest model there is: the file's bytes now and
        /// its bytes at the last sync. A crash must leave exactly the
        /// latter (plus, torn, a prefix of the latest write).
        #[test]
        fn matches_a_copy_taken_at_each_sync(ops in proptest::collection::vec(op(), 1..60)) {
            let mut t = Tracked { live: Vec::new(), shadow: Shadow::new(0) };
            let mut durable: Vec<u8> = Vec::new();
            let mut last: Option<(u64, Vec<u8>)> = None;
            for op in ops {
                match op {
                    Op::Write(o, d) => { t.write(o, &d); last = Some((o, d)); }
                    Op::Truncate(n) => { t.truncate(n); last = None; }
                    Op::Sync => {
                        t.shadow.sync(t.live.len() as u64);
                        durable = t.live.clone();
                        last = None;
                    }
                    Op::Crash(tear) => {
                        let mut want = durable.clone();
                        if let (Some(k), Some((o, d))) = (tear, &last) {
                            let k = k.min(d.len());
                            if k > 0 {
                                let end = *o as usize + k;
                                if want.len() < end { want.resize(end, 0); }
                                want[*o as usize..end].copy_from_slice(&d[..k]);
                            }
                        }
                        t.crash(tear);
                        prop_assert_eq!(&t.live, &want);
                        durable = want;
                        last = None;
                    }
                }
                prop_assert!(t.shadow.saved.keys().zip(t.shadow.saved.keys().skip(1)).all(|(a, b)| {
                    a + t.shadow.saved[a].len() as u64 <= *b
                }), "saved ranges overlap");
            }
        }
    }

    #[test]
    fn appends_past_the_durable_length_save_nothing() {
        let mut s = Shadow::new(100);
        assert!(s.unsaved(100, 200).is_empty());
        assert_eq!(s.unsaved(90, 200), vec![(90, 100)]);
        s.save(90, vec![0; 10]);
        assert!(s.unsaved(95, 200).is_empty());
        assert_eq!(s.unsaved(0, 200), vec![(0, 90)]);
    }
}
