//! The checks every replicated write passes before it is proposed, in
//! `Node::write_hops`: a write from this node's API and one a peer
//! forwards (`Peer.Forward`) meet the same rules. The services call the
//! same functions earlier for their own, friendlier errors; nothing here
//! is a second copy of them.

use super::NodeConfig;
use crate::api::limits::{MAX_PARAMS_BYTES, MAX_QUEUE_NAME};
use crate::api::ApiError;
use orrery_kv::KvCommand;
use orrery_placement::PlacementCommand;
use orrery_queue::{NewJob, QueueCommand};
use orrery_raft::Command;

/// The most shards a cluster may have.
pub const MAX_SHARDS: u32 = 1024;

pub fn shard_count(n: u32) -> Result<(), ApiError> {
    if (1..=MAX_SHARDS).contains(&n) {
        Ok(())
    } else {
        Err(ApiError::bad(
            "invalid_shards",
            format!("shards must be 1..={MAX_SHARDS}, got {n}"),
        ))
    }
}

pub fn kv_key(cfg: &NodeConfig, key: &[u8]) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::bad("empty_key", "the key must not be empty"));
    }
    let max = cfg.max_key_bytes;
    if key.len() > max {
        return Err(ApiError::TooLarge(format!(
            "key is {} bytes; the limit is {max} bytes",
            key.len()
        )));
    }
    Ok(())
}

fn kv_value_len(cfg: &NodeConfig, len: u64) -> Result<(), ApiError> {
    if len > cfg.max_value_bytes as u64 {
        return Err(ApiError::TooLarge(format!(
            "value is {len} bytes; the limit is {} bytes",
            cfg.max_value_bytes
        )));
    }
    Ok(())
}

pub fn kv_value(cfg: &NodeConfig, value: &[u8]) -> Result<(), ApiError> {
    let max = cfg.max_value_bytes;
    if value.len() > max {
        return Err(ApiError::TooLarge(format!(
            "value is {} bytes; the limit is {max} bytes",
            value.len()
        )));
    }
    Ok(())
}

/// Queue and partition names, and the names a query filters on.
pub fn name(field: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_QUEUE_NAME {
        return Err(ApiError::bad(
            "invalid_name",
            format!("{field} must be 1..={MAX_QUEUE_NAME} characters"),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(ApiError::bad(
            "invalid_name",
            format!("{field} may contain only letters, digits, '-', '_' and '.', got {name:?}"),
        ));
    }
    Ok(())
}

pub fn job_kind(kind: &str) -> Result<(), ApiError> {
    if kind.is_empty() || kind.len() > 128 {
        return Err(ApiError::bad(
            "invalid_kind",
            "kind must be 1..=128 characters",
        ));
    }
    Ok(())
}

pub fn job_params(params: &str) -> Result<(), ApiError> {
    if params.len() > MAX_PARAMS_BYTES {
        return Err(ApiError::TooLarge(format!(
            "params are {} bytes; the limit is {MAX_PARAMS_BYTES} bytes",
            params.len()
        )));
    }
    Ok(())
}

fn job(j: &NewJob) -> Result<(), ApiError> {
    name("queue", &j.queue)?;
    job_kind(&j.kind)?;
    job_params(&j.params)
}

/// Checks a command about to be proposed.
pub fn command(cfg: &NodeConfig, cmd: &Command) -> Result<(), ApiError> {
    match cmd {
        Command::Placement(PlacementCommand::Init { shard_count: n, .. }) => shard_count(*n),
        Command::Kv(KvCommand::Put { key, value } | KvCommand::Cas { key, value, .. }) => {
            kv_key(cfg, key)?;
            kv_value(cfg, value)
        }
        Command::Kv(KvCommand::Delete { key }) => kv_key(cfg, key),
        // An upload never grows past the value limit, nor a chunk past the
        // chunk size (else it would be the large entry chunking avoids).
        Command::Kv(KvCommand::PutChunk { offset, data, .. }) => {
            if data.len() > orrery_kv::CHUNK_BYTES {
                return Err(ApiError::TooLarge(format!(
                    "a chunk is {} bytes; the limit is {}",
                    data.len(),
                    orrery_kv::CHUNK_BYTES
                )));
            }
            let end = offset.saturating_add(data.len() as u64);
            kv_value_len(cfg, end)
        }
        Command::Kv(KvCommand::PutStaged { key, len, .. }) => {
            kv_key(cfg, key)?;
            kv_value_len(cfg, *len)
        }
        Command::Queue(QueueCommand::CreateQueue(spec)) => name("queue", &spec.name),
        Command::Queue(QueueCommand::Enqueue { job: j, .. }) => job(j),
        Command::Queue(QueueCommand::EnqueueMany { jobs, .. }) => jobs.iter().try_for_each(job),
        _ => Ok(()),
    }
}
