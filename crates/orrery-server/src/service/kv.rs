//! The key-value namespace: input checks, then one write to the key's shard,
//! or reads of one shard (get) or all (list, merged in key order).

use crate::api::ApiError;
use crate::node::typed::{KvGet, KvList};
use crate::node::Node;
use orrery_kv::{KvCommand, KvItem, KvResponse, Versioned};
use std::sync::Arc;

pub const DEFAULT_LIST_LIMIT: usize = 100;
pub const MAX_LIST_LIMIT: usize = 10_000;

/// What a compare-and-swap did: whether it swapped, the revision it wrote
/// (or the key's current one), and on failure the current value.
pub struct CasOutcome {
    pub succeeded: bool,
    pub revision: u64,
    pub current: Option<Vec<u8>>,
}

pub struct KvService {
    node: Arc<Node>,
}

fn mismatched(r: KvResponse) -> ApiError {
    ApiError::Internal(format!("unexpected kv response {r:?}"))
}

impl KvService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    pub fn check_key(&self, key: &[u8]) -> Result<(), ApiError> {
        crate::node::validate::kv_key(&self.node.cfg, key)
    }

    pub fn check_value(&self, len: usize) -> Result<(), ApiError> {
        let max = self.node.cfg.max_value_bytes;
        if len > max {
            return Err(ApiError::TooLarge(format!(
                "value is {len} bytes; the limit is {max} bytes"
            )));
        }
        Ok(())
    }

    /// The largest value this node accepts.
    pub fn max_value_bytes(&self) -> usize {
        self.node.cfg.max_value_bytes
    }

    async fn write(&self, key: &[u8], cmd: KvCommand) -> Result<KvResponse, ApiError> {
        let group = self.node.group_for_key(key)?;
        self.node.write(group, cmd).await
    }

    /// Returns the revision that wrote the value.
    pub async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<u64, ApiError> {
        self.check_key(&key)?;
        self.check_value(value.len())?;
        if value.len() > orrery_kv::CHUNK_BYTES {
            match self.put_chunked(&key, &value).await {
                // A cluster not yet at version 3 takes it in one entry.
                Err(ApiError::ClusterVersionTooLow { .. }) => {}
                other => return other,
            }
        }
        match self
            .write(&key.clone(), KvCommand::Put { key, value })
            .await?
        {
            KvResponse::Put { revision } => Ok(revision),
            other => Err(mismatched(other)),
        }
    }

    /// A large value as 1 MiB `PutChunk` entries and a final `PutStaged`
    /// (`orrery-kv`'s staged.rs): no log entry is larger than a chunk, so
    /// none misses openraft's one-heartbeat AppendEntries window. A chunk
    /// whose outcome is unknown is proposed again (chunks are idempotent by
    /// offset); any other failure fails the PUT, and the partial upload
    /// expires.
    async fn put_chunked(&self, key: &[u8], value: &[u8]) -> Result<u64, ApiError> {
        let upload: u64 = rand::random();
        let mut offset = 0usize;
        for data in value.chunks(orrery_kv::CHUNK_BYTES) {
            let mut tries = 0;
            loop {
                let cmd = KvCommand::PutChunk {
                    upload,
                    offset: offset as u64,
                    data: data.to_vec(),
                    ts_ms: crate::api::now_ms(),
                };
                match self.write(key, cmd).await {
                    Ok(KvResponse::Staged { .. }) => break,
                    Ok(KvResponse::StagedMismatch { have }) => {
                        return Err(ApiError::Conflict(format!(
                            "chunked upload out of step (it holds {have} bytes, this chunk starts at {offset}); retry the PUT"
                        )))
                    }
                    Ok(other) => return Err(mismatched(other)),
                    Err(ApiError::OutcomeUnknown(_)) if tries < 3 => tries += 1,
                    Err(e) => return Err(e),
                }
            }
            offset += data.len();
        }
        let cmd = KvCommand::PutStaged {
            upload,
            key: key.to_vec(),
            len: value.len() as u64,
            ts_ms: crate::api::now_ms(),
        };
        match self.write(key, cmd).await? {
            KvResponse::Put { revision } => Ok(revision),
            KvResponse::StagedMismatch { have } => Err(ApiError::Conflict(format!(
                "chunked upload incomplete ({have} of {} bytes staged); retry the PUT",
                value.len()
            ))),
            other => Err(mismatched(other)),
        }
    }

    /// Returns whether the key existed, and the revision of the delete.
    pub async fn delete(&self, key: Vec<u8>) -> Result<(bool, u64), ApiError> {
        self.check_key(&key)?;
        match self.write(&key.clone(), KvCommand::Delete { key }).await? {
            KvResponse::Delete { deleted, revision } => Ok((deleted, revision)),
            other => Err(mismatched(other)),
        }
    }

    pub async fn cas(
        &self,
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<CasOutcome, ApiError> {
        self.check_key(&key)?;
        self.check_value(value.len())?;
        self.check_value(expected.as_ref().map(|e| e.len()).unwrap_or(0))?;
        let cmd = KvCommand::Cas {
            key: key.clone(),
            expected,
            value,
        };
        match self.write(&key, cmd).await? {
            KvResponse::Cas {
                succeeded,
                revision,
                current,
            } => Ok(CasOutcome {
                succeeded,
                revision,
                current,
            }),
            other => Err(mismatched(other)),
        }
    }

    pub async fn get(
        &self,
        key: Vec<u8>,
        linearizable: bool,
    ) -> Result<Option<Versioned>, ApiError> {
        self.check_key(&key)?;
        let group = self.node.group_for_key(&key)?;
        self.node.read(group, KvGet { key }, linearizable).await
    }

    /// Keys with `prefix` from every shard, merged in key order.
    pub async fn list(
        &self,
        prefix: Vec<u8>,
        limit: usize,
        linearizable: bool,
    ) -> Result<Vec<KvItem>, ApiError> {
        if limit == 0 || limit > MAX_LIST_LIMIT {
            return Err(ApiError::bad(
                "invalid_limit",
                format!("limit must be 1..={MAX_LIST_LIMIT}, got {limit}"),
            ));
        }
        if prefix.len() > self.node.cfg.max_key_bytes {
            return Err(ApiError::TooLarge(format!(
                "prefix is longer than the key limit ({} bytes)",
                self.node.cfg.max_key_bytes
            )));
        }
        let futs = self.node.shard_groups()?.into_iter().map(|g| {
            let q = KvList {
                prefix: prefix.clone(),
                limit,
            };
            async move { self.node.read(g, q, linearizable).await }
        });
        let mut items = Vec::new();
        for part in futures::future::join_all(futs).await {
            items.append(&mut part?);
        }
        items.sort_by(|a, b| a.key.cmp(&b.key));
        items.truncate(limit);
        Ok(items)
    }

    /// Deletes every key that starts with `prefix`, on every shard (each
    /// shard in one entry); returns how many keys were deleted. Needs
    /// cluster version 2 (refused with `cluster_version_too_low` before).
    /// Shards are written independently: after an error some may have
    /// been cleared, and repeating the call is safe.
    pub async fn delete_prefix(&self, prefix: Vec<u8>) -> Result<u64, ApiError> {
        if prefix.is_empty() {
            return Err(ApiError::bad(
                "empty_prefix",
                "the prefix must not be empty (deleting every key is not offered)",
            ));
        }
        if prefix.len() > self.node.cfg.max_key_bytes {
            return Err(ApiError::TooLarge(format!(
                "prefix is longer than the key limit ({} bytes)",
                self.node.cfg.max_key_bytes
            )));
        }
        let futs = self.node.shard_groups()?.into_iter().map(|g| {
            let cmd = KvCommand::DeletePrefix {
                prefix: prefix.clone(),
            };
            async move { self.node.write(g, cmd).await }
        });
        let mut deleted = 0;
        for r in futures::future::join_all(futs).await {
            match r? {
                KvResponse::DeletedPrefix { deleted: n, .. } => deleted += n,
                other => return Err(mismatched(other)),
            }
        }
        Ok(deleted)
    }
}
