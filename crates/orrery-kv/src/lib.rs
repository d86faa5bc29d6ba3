//! The key-value domain module.
//!
//! A pure state machine: `apply` sees only the command and its log index, so
//! every replica computes the same state and the same responses. The log
//! index doubles as the revision of the value it wrote; revisions are
//! therefore per shard and strictly increasing within one shard.

mod staged;

use serde::{Deserialize, Serialize};
pub use staged::{ChunkOutcome, Staging, CHUNK_BYTES, STAGED_TTL_MS};
use std::collections::BTreeMap;

/// A write to the KV namespace, replicated through the shard's Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Compare-and-set: writes `value` only if the current value equals
    /// `expected` (`None` = only if the key is absent).
    Cas {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        expected: Option<Vec<u8>>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    // New variants go last: the log and snapshots store the variant index,
    // and each needs a cluster version (orrery-raft's `version.rs`).
    /// Deletes every key that starts with `prefix` (cluster version 2).
    DeletePrefix {
        #[serde(with = "serde_bytes")]
        prefix: Vec<u8>,
    },
    /// Stages `data` at `offset` of upload `upload` (cluster version 3):
    /// part of a value too large for one entry (`staged.rs`). `ts_ms` is
    /// the writer's clock, for expiring abandoned uploads.
    PutChunk {
        upload: u64,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        ts_ms: u64,
    },
    /// Writes the staged upload (exactly `len` bytes) under `key`
    /// (cluster version 3).
    PutStaged {
        upload: u64,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        len: u64,
        ts_ms: u64,
    },
}

/// The outcome of a [`KvCommand`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResponse {
    Put {
        revision: u64,
    },
    Delete {
        deleted: bool,
        revision: u64,
    },
    Cas {
        succeeded: bool,
        /// The new revision on success; the current one on failure (0 when absent).
        revision: u64,
        /// The value found when the comparison failed.
        #[serde(with = "serde_bytes")]
        current: Option<Vec<u8>>,
    },
    DeletedPrefix {
        /// How many keys were deleted.
        deleted: u64,
        revision: u64,
    },
    /// A chunk was staged (or was already): the upload's length now.
    Staged {
        len: u64,
    },
    /// A chunk that does not continue its upload, or a `PutStaged` whose
    /// upload does not hold `len` bytes: nothing changed; what it holds.
    StagedMismatch {
        have: u64,
    },
}

/// A stored value and the revision that wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub revision: u64,
}

/// One entry of a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvItem {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub revision: u64,
}

/// The KV data of one shard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    map: BTreeMap<Vec<u8>, Versioned>,
    /// Large values being written in chunks. Not in `snapshot()`: the
    /// group snapshot stores it in a section of its own, only when
    /// non-empty, so that snapshots keep the base format until a cluster
    /// uses chunked writes (cluster version 3).
    #[serde(skip)]
    pub staged: Staging,
}

impl KvState {
    pub fn apply(&mut self, index: u64, cmd: KvCommand) -> KvResponse {
        match cmd {
            KvCommand::Put { key, value } => {
                self.map.insert(
                    key,
                    Versioned {
                        value,
                        revision: index,
                    },
                );
                KvResponse::Put { revision: index }
            }
            KvCommand::Delete { key } => {
                let deleted = self.map.remove(&key).is_some();
                KvResponse::Delete {
                    deleted,
                    revision: index,
                }
            }
            KvCommand::Cas {
                key,
                expected,
                value,
            } => {
                let current = self.map.get(&key);
                let matches = match (&expected, current) {
                    (None, None) => true,
                    (Some(e), Some(c)) => *e == c.value,
                    _ => false,
                };
                if matches {
                    self.map.insert(
                        key,
                        Versioned {
                            value,
                            revision: index,
                        },
                    );
                    KvResponse::Cas {
                        succeeded: true,
                        revision: index,
                        current: None,
                    }
                } else {
                    KvResponse::Cas {
                        succeeded: false,
                        revision: current.map(|c| c.revision).unwrap_or(0),
                        current: current.map(|c| c.value.clone()),
                    }
                }
            }
            KvCommand::PutChunk {
                upload,
                offset,
                data,
                ts_ms,
            } => {
                self.staged.expire(ts_ms);
                match self.staged.chunk(upload, offset, &data, ts_ms) {
                    ChunkOutcome::Staged(len) => KvResponse::Staged { len },
                    ChunkOutcome::Mismatch(have) => KvResponse::StagedMismatch { have },
                }
            }
            KvCommand::PutStaged {
                upload,
                key,
                len,
                ts_ms,
            } => {
                self.staged.expire(ts_ms);
                match self.staged.take(upload, len) {
                    Ok(value) => {
                        self.map.insert(
                            key,
                            Versioned {
                                value,
                                revision: index,
                            },
                        );
                        KvResponse::Put { revision: index }
                    }
                    Err(have) => KvResponse::StagedMismatch { have },
                }
            }
            KvCommand::DeletePrefix { prefix } => {
                let doomed: Vec<Vec<u8>> = self
                    .map
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in &doomed {
                    self.map.remove(k);
                }
                KvResponse::DeletedPrefix {
                    deleted: doomed.len() as u64,
                    revision: index,
                }
            }
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<&Versioned> {
        self.map.get(key)
    }

    /// Keys starting with `prefix`, in key order, at most `limit`.
    pub fn list(&self, prefix: &[u8], limit: usize) -> Vec<KvItem> {
        self.map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| KvItem {
                key: k.clone(),
                value: v.value.clone(),
                revision: v.revision,
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).map_err(|e| e.to_string())
    }

    pub fn restore(data: &[u8]) -> Result<Self, String> {
        bincode::serde::decode_from_slice(data, bincode::config::standard())
            .map(|(v, _)| v)
            .map_err(|e| format!("kv snapshot: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn put(k: &str, v: &str) -> KvCommand {
        KvCommand::Put {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn put_get_delete() {
        let mut s = KvState::default();
        assert_eq!(s.apply(5, put("a", "1")), KvResponse::Put { revision: 5 });
        assert_eq!(
            s.get(b"a"),
            Some(&Versioned {
                value: b"1".to_vec(),
                revision: 5
            })
        );
        assert_eq!(
            s.apply(6, KvCommand::Delete { key: b"a".to_vec() }),
            KvResponse::Delete {
                deleted: true,
                revision: 6
            }
        );
        assert_eq!(
            s.apply(7, KvCommand::Delete { key: b"a".to_vec() }),
            KvResponse::Delete {
                deleted: false,
                revision: 7
            }
        );
        assert!(s.get(b"a").is_none());
    }

    #[test]
    fn cas_semantics() {
        let mut s = KvState::default();
        let cas = |e: Option<&str>, v: &str| KvCommand::Cas {
            key: b"k".to_vec(),
            expected: e.map(|e| e.as_bytes().to_vec()),
            value: v.into(),
        };
        // create-only succeeds when absent
        assert_eq!(
            s.apply(1, cas(None, "a")),
            KvResponse::Cas {
                succeeded: true,
                revision: 1,
                current: None
            }
        );
        // create-only fails when present, reporting the current value
        assert_eq!(
            s.apply(2, cas(None, "b")),
            KvResponse::Cas {
                succeeded: false,
                revision: 1,
                current: Some(b"a".to_vec())
            }
        );
        assert_eq!(
            s.apply(3, cas(Some("x"), "b")),
            KvResponse::Cas {
                succeeded: false,
                revision: 1,
                current: Some(b"a".to_vec())
            }
        );
        assert_eq!(
            s.apply(4, cas(Some("a"), "b")),
            KvResponse::Cas {
                succeeded: true,
                revision: 4,
                current: None
            }
        );
        assert_eq!(s.get(b"k").map(|v| v.value.clone()), Some(b"b".to_vec()));
        s.apply(5, KvCommand::Delete { key: b"k".to_vec() });
        assert_eq!(
            s.apply(6, cas(Some("b"), "c")),
            KvResponse::Cas {
                succeeded: false,
                revision: 0,
                current: None
            }
        );
    }

    #[test]
    fn list_by_prefix_in_order() {
        let mut s = KvState::default();
        for (i, k) in ["b/2", "a/1", "b/1", "c", "b/3"].iter().enumerate() {
            s.apply(i as u64 + 1, put(k, "v"));
        }
        let keys: Vec<_> = s
            .list(b"b/", 10)
            .into_iter()
            .map(|i| String::from_utf8(i.key).unwrap())
            .collect();
        assert_eq!(keys, ["b/1", "b/2", "b/3"]);
        assert_eq!(s.list(b"b/", 2).len(), 2);
        assert_eq!(s.list(b"", 100).len(), 5);
        assert!(s.list(b"zz", 10).is_empty());
    }

    #[test]
    fn delete_prefix_removes_exactly_the_prefixed_keys() {
        let mut s = KvState::default();
        for (i, k) in ["a", "a/1", "a/2", "a0", "b/1", "`"].iter().enumerate() {
            s.apply(i as u64 + 1, put(k, "v"));
        }
        let del = |p: &str| KvCommand::DeletePrefix {
            prefix: p.as_bytes().to_vec(),
        };
        assert_eq!(
            s.apply(10, del("a/")),
            KvResponse::DeletedPrefix {
                deleted: 2,
                revision: 10
            }
        );
        let keys: Vec<_> = s.list(b"", 100).into_iter().map(|i| i.key).collect();
        assert_eq!(keys, [&b"`"[..], b"a", b"a0", b"b/1"]);
        assert_eq!(
            s.apply(11, del("zz")),
            KvResponse::DeletedPrefix {
                deleted: 0,
                revision: 11
            }
        );
        // The state machine takes any prefix; the service refuses "".
        assert_eq!(
            s.apply(12, del("")),
            KvResponse::DeletedPrefix {
                deleted: 4,
                revision: 12
            }
        );
        assert!(s.is_empty());
    }

    /// Commands encoded before `DeletePrefix` existed decode unchanged: the
    /// new variant went last.
    #[test]
    fn older_variants_keep_their_encoding() {
        let cfg = bincode::config::standard();
        let cas = KvCommand::Cas {
            key: b"k".to_vec(),
            expected: None,
            value: b"v".to_vec(),
        };
        let bytes = bincode::serde::encode_to_vec(&cas, cfg).unwrap();
        assert_eq!(bytes[0], 2, "Cas is variant 2");
        let dp = KvCommand::DeletePrefix {
            prefix: b"p".to_vec(),
        };
        let bytes = bincode::serde::encode_to_vec(&dp, cfg).unwrap();
        assert_eq!(bytes[0], 3, "DeletePrefix is variant 3");
    }

    fn arb_cmd() -> impl Strategy<Value = KvCommand> {
        let key =
            prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(|k| k.as_bytes().to_vec());
        let val = prop::collection::vec(any::<u8>(), 0..8);
        prop_oneof![
            (key.clone(), val.clone()).prop_map(|(key, value)| KvCommand::Put { key, value }),
            key.clone().prop_map(|key| KvCommand::Delete { key }),
            (key, prop::option::of(val.clone()), val).prop_map(|(key, expected, value)| {
                KvCommand::Cas {
                    key,
                    expected,
                    value,
                }
            }),
            prop::sample::select(vec!["", "a", "b", "ab", "z"]).prop_map(|p| {
                KvCommand::DeletePrefix {
                    prefix: p.as_bytes().to_vec(),
                }
            }),
            (0u64..2, 0u64..4, prop::sample::select(vec!["x", "y"])).prop_map(|(u, o, d)| {
                KvCommand::PutChunk {
                    upload: u,
                    offset: o,
                    data: d.as_bytes().to_vec(),
                    ts_ms: 0,
                }
            }),
            (0u64..2, prop::sample::select(vec!["a", "b"]), 0u64..4).prop_map(|(u, k, len)| {
                KvCommand::PutStaged {
                    upload: u,
                    key: k.as_bytes().to_vec(),
                    len,
                    ts_ms: 0,
                }
            }),
        ]
    }

    proptest! {
        /// Applying the same commands gives the same state and responses
        /// (determinism), matches a plain map model, and survives a
        /// snapshot/restore at any point.
        #[test]
        fn deterministic_and_snapshot_safe(cmds in prop::collection::vec(arb_cmd(), 0..60), cut in 0usize..60) {
            let mut a = KvState::default();
            let mut b = KvState::default();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut uploads: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            for (i, c) in cmds.iter().enumerate() {
                let idx = i as u64 + 1;
                if i == cut {
                    // As the group snapshot does: the map, and the staging
                    // section beside it.
                    let staged = Staging::restore(&b.staged.snapshot().unwrap()).unwrap();
                    b = KvState::restore(&b.snapshot().unwrap()).unwrap();
                    b.staged = staged;
                }
                let ra = a.apply(idx, c.clone());
                let rb = b.apply(idx, c.clone());
                prop_assert_eq!(&ra, &rb);
                match c {
                    KvCommand::Put { key, value } => { model.insert(key.clone(), value.clone()); }
                    KvCommand::Delete { key } => { model.remove(key); }
                    KvCommand::Cas { key, expected, value } => {
                        if model.get(key) == expected.as_ref() { model.insert(key.clone(), value.clone()); }
                    }
                    KvCommand::DeletePrefix { prefix } => model.retain(|k, _| !k.starts_with(prefix)),
                    KvCommand::PutChunk { upload, offset, data, .. } => {
                        let u = uploads.entry(*upload).or_default();
                        let at = *offset as usize;
                        if at == u.len() {
                            u.extend_from_slice(data);
                        } else if at + data.len() <= u.len() && u[at..at + data.len()] == data[..] {
                        } else {
                            prop_assert_eq!(&ra, &KvResponse::StagedMismatch { have: u.len() as u64 });
                        }
                    }
                    KvCommand::PutStaged { upload, key, len, .. } => {
                        if uploads.get(upload).is_some_and(|u| u.len() as u64 == *len) {
                            let v = uploads.remove(upload).unwrap_or_default();
                            model.insert(key.clone(), v);
                        } else {
                            let mismatch = matches!(ra, KvResponse::StagedMismatch { .. });
                            prop_assert!(mismatch, "PutStaged answered {:?}", ra);
                        }
                    }
                }
            }
            prop_assert_eq!(&a, &b);
            let listed: BTreeMap<Vec<u8>, Vec<u8>> = a.list(b"", usize::MAX).into_iter().map(|i| (i.key, i.value)).collect();
            prop_assert_eq!(listed, model);
        }
    }
}
