//! KV operations with input validation, shared by the REST and gRPC fronts.

use crate::error::ApiError;
use crate::node::Node;
use crate::ops::{Query, QueryResult};
use orrery_kv::{KvCommand, KvItem, KvResponse, Versioned};
use orrery_raft::{Command, Response};

pub const DEFAULT_LIST_LIMIT: usize = 100;
pub const MAX_LIST_LIMIT: usize = 10_000;

impl Node {
    pub fn check_key(&self, key: &[u8]) -> Result<(), ApiError> {
        if key.is_empty() {
            return Err(ApiError::bad("empty_key", "the key must not be empty"));
        }
        if key.len() > self.cfg.max_key_bytes {
            return Err(ApiError::TooLarge(format!(
                "key is {} bytes; the limit is {} bytes",
                key.len(),
                self.cfg.max_key_bytes
            )));
        }
        Ok(())
    }

    pub fn check_value(&self, len: usize) -> Result<(), ApiError> {
        if len > self.cfg.max_value_bytes {
            return Err(ApiError::TooLarge(format!(
                "value is {len} bytes; the limit is {} bytes",
                self.cfg.max_value_bytes
            )));
        }
        Ok(())
    }

    async fn kv_write(&self, key: &[u8], cmd: KvCommand) -> Result<KvResponse, ApiError> {
        let group = self.group_for_key(key)?;
        match self.write(group, Command::Kv(cmd)).await? {
            Response::Kv(r) => Ok(r),
            other => Err(ApiError::Internal(format!("unexpected response {other:?}"))),
        }
    }

    /// Returns the revision that wrote the value.
    pub async fn kv_put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<u64, ApiError> {
        self.check_key(&key)?;
        self.check_value(value.len())?;
        match self
            .kv_write(&key.clone(), KvCommand::Put { key, value })
            .await?
        {
            KvResponse::Put { revision } => Ok(revision),
            other => Err(ApiError::Internal(format!("unexpected response {other:?}"))),
        }
    }

    /// Returns whether the key existed, and the revision of the delete.
    pub async fn kv_delete(&self, key: Vec<u8>) -> Result<(bool, u64), ApiError> {
        self.check_key(&key)?;
        match self
            .kv_write(&key.clone(), KvCommand::Delete { key })
            .await?
        {
            KvResponse::Delete { deleted, revision } => Ok((deleted, revision)),
            other => Err(ApiError::Internal(format!("unexpected response {other:?}"))),
        }
    }

    /// Returns (succeeded, revision, current value on failure).
    pub async fn kv_cas(
        &self,
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<(bool, u64, Option<Vec<u8>>), ApiError> {
        self.check_key(&key)?;
        self.check_value(value.len())?;
        self.check_value(expected.as_ref().map(|e| e.len()).unwrap_or(0))?;
        match self
            .kv_write(
                &key.clone(),
                KvCommand::Cas {
                    key,
                    expected,
                    value,
                },
            )
            .await?
        {
            KvResponse::Cas {
                succeeded,
                revision,
                current,
            } => Ok((succeeded, revision, current)),
            other => Err(ApiError::Internal(format!("unexpected response {other:?}"))),
        }
    }

    pub async fn kv_get(
        &self,
        key: Vec<u8>,
        linearizable: bool,
    ) -> Result<Option<Versioned>, ApiError> {
        self.check_key(&key)?;
        let group = self.group_for_key(&key)?;
        match self.read(group, Query::KvGet { key }, linearizable).await? {
            QueryResult::KvGet(v) => Ok(v),
            other => Err(ApiError::Internal(format!("unexpected result {other:?}"))),
        }
    }

    /// Keys with `prefix` from every shard, merged in key order.
    pub async fn kv_list(
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
        if prefix.len() > self.cfg.max_key_bytes {
            return Err(ApiError::TooLarge(format!(
                "prefix is longer than the key limit ({} bytes)",
                self.cfg.max_key_bytes
            )));
        }
        let groups = self.shard_groups()?;
        let futs = groups.into_iter().map(|g| {
            let q = Query::KvList {
                prefix: prefix.clone(),
                limit,
            };
            async move { self.read(g, q, linearizable).await }
        });
        let mut items = Vec::new();
        for r in futures::future::join_all(futs).await {
            match r? {
                QueryResult::KvList(mut part) => items.append(&mut part),
                other => return Err(ApiError::Internal(format!("unexpected result {other:?}"))),
            }
        }
        items.sort_by(|a, b| a.key.cmp(&b.key));
        items.truncate(limit);
        Ok(items)
    }
}
