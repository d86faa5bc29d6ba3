//! What cluster version 5 (`policy-shadow-retention`) adds to the policy
//! state: per-policy settings (a shadow version, a run retention) and
//! per-run extras (the shadow's result, a `terminate` node's outcome).
//!
//! `Policy`, `Run` and `PolicyState` are bincode-encoded in commands and
//! snapshots that nodes of earlier versions decode, so none of them gains
//! a field. The extras live beside them, in [`PolicyExt`], which a snapshot
//! carries only when it is non-empty, as a trailer after the base bytes:
//!
//! ```text
//! base (bincode of PolicyState, exactly as before) [ MAGIC crc32 bincode(PolicyExt) ]
//! ```
//!
//! The base record is self-delimiting (bincode knows where it ends), so
//! unlike a leading marker (see `split_extensions` in orrery-raft's
//! state.rs, where a base snapshot could start with the marker byte) the
//! trailer can never be confused with base bytes: whatever follows the base
//! is the trailer, and it must carry the magic and a valid checksum. A group
//! that never used the feature snapshots byte-identically to the old
//! format; old code reading a snapshot with a trailer (only possible after
//! the cluster moved to version 5, i.e. never) would ignore it, since
//! bincode's `decode_from_slice` stops at the end of the base record.

use crate::store::{Run, RunFilter, RunStatus};
use crate::termination::Termination;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Marks the trailer; followed by the CRC-32 of the body, little-endian.
pub(crate) const MAGIC: &[u8; 8] = b"ORRPOLX\x01";

/// The run retention when neither the policy nor the node names one: 7 days.
pub const DEFAULT_RUN_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;
/// The largest retention a policy may ask for: 10 years.
pub const MAX_RUN_RETENTION_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// A policy's settings of cluster version 5; the default is "none set".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySettings {
    /// A version evaluated next to the live one on every recorded run, its
    /// result recorded but never acted on.
    pub shadow_version: Option<u32>,
    /// How long this policy's runs are kept (the node default when `None`).
    pub run_retention_ms: Option<u64>,
}

impl PolicySettings {
    pub fn is_default(&self) -> bool {
        *self == PolicySettings::default()
    }
}

/// What the shadow version made of a run's input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowResult {
    pub version: u32,
    /// JSON text, as a run's output.
    pub output: Option<String>,
    pub error: Option<String>,
    /// The enqueue nodes that would have submitted a job (`node -> queue`):
    /// a shadow submits nothing.
    pub would_enqueue: Vec<String>,
}

/// How a `terminate` node ended a run, as stored. Not [`Termination`]
/// itself: its `skip_serializing_if` (right for JSON) makes bincode write
/// nothing for an absent reason, which bincode then cannot read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTermination {
    pub status: String,
    pub reason: Option<String>,
}

impl From<Termination> for StoredTermination {
    fn from(t: Termination) -> Self {
        StoredTermination {
            status: t.status,
            reason: t.reason,
        }
    }
}

/// A run's extras; the default is "none".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunExt {
    pub shadow: Option<ShadowResult>,
    /// How a `terminate` node ended the run, if one did.
    pub termination: Option<StoredTermination>,
}

impl RunExt {
    pub fn is_empty(&self) -> bool {
        self.shadow.is_none() && self.termination.is_none()
    }
}

/// A run with its extras, as the version-5 queries answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run: Run,
    pub ext: RunExt,
}

/// The filters of `GET /v1/runs` from cluster version 5 on. A new type:
/// [`RunFilter`] travels between nodes of every version, so it keeps its
/// shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFilterExt {
    pub base: RunFilter,
    /// Runs created at or after this time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Runs created before this time.
    pub until_ms: Option<u64>,
    /// The termination status (`approved`, ...) a run ended with.
    pub outcome: Option<String>,
    /// Only runs with a shadow result.
    pub shadowed: bool,
}

impl RunFilterExt {
    pub fn matches(&self, r: &Run, ext: Option<&RunExt>) -> bool {
        let f = &self.base;
        f.policy_id.as_ref().is_none_or(|p| *p == r.policy_id)
            && f.version.is_none_or(|v| v == r.version)
            && f.status.is_none_or(|s| s == r.status)
            && self.since_ms.is_none_or(|t| r.created_ms >= t)
            && self.until_ms.is_none_or(|t| r.created_ms < t)
            && self.outcome.as_ref().is_none_or(|o| {
                ext.and_then(|e| e.termination.as_ref())
                    .is_some_and(|t| t.status == *o)
            })
            && (!self.shadowed || ext.is_some_and(|e| e.shadow.is_some()))
    }
}

/// Everything of cluster version 5 a group holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyExt {
    /// Non-default settings only, by policy id (placement group).
    pub settings: BTreeMap<String, PolicySettings>,
    /// Non-empty extras only, by run id (shard groups).
    pub runs: BTreeMap<String, RunExt>,
}

impl PolicyExt {
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty() && self.runs.is_empty()
    }

    /// The trailer that follows the base snapshot.
    pub(crate) fn encode_trailer(&self) -> Result<Vec<u8>, String> {
        let body = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(MAGIC.len() + 4 + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Reads the bytes after the base snapshot: nothing, or a valid trailer.
    pub(crate) fn decode_trailer(rest: &[u8]) -> Result<Self, String> {
        if rest.is_empty() {
            return Ok(PolicyExt::default());
        }
        let Some(after) = rest.strip_prefix(MAGIC.as_slice()) else {
            return Err(format!(
                "policy snapshot: {} bytes after the base record, without the extension marker",
                rest.len()
            ));
        };
        if after.len() < 4 {
            return Err("policy snapshot: truncated extension".into());
        }
        let (crc, body) = after.split_at(4);
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if stored != crc32fast::hash(body) {
            return Err("policy snapshot: extension checksum mismatch".into());
        }
        let (ext, used) = bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map_err(|e| format!("policy snapshot extension: {e}"))?;
        if used != body.len() {
            return Err("policy snapshot: trailing bytes after the extension".into());
        }
        Ok(ext)
    }
}

/// Which finished runs a prune forgets: those created at least their
/// policy's retention before `now_ms`, oldest first per policy, `max` in
/// all. `index` is (created_ms, run id) per policy id. Running runs stay
/// (their job may still finish them).
pub(crate) fn prunable(
    index: &BTreeMap<String, std::collections::BTreeSet<(u64, String)>>,
    runs: &BTreeMap<String, Run>,
    now_ms: u64,
    default_retention_ms: u64,
    retention: &BTreeMap<String, u64>,
    max: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    for (policy, set) in index {
        let keep = retention
            .get(policy)
            .copied()
            .unwrap_or(default_retention_ms);
        let cutoff = now_ms.saturating_sub(keep);
        for (created, id) in set {
            if out.len() >= max {
                return out;
            }
            if *created > cutoff || now_ms < keep {
                break;
            }
            if runs.get(id).is_some_and(|r| r.status != RunStatus::Running) {
                out.push(id.clone());
            }
        }
    }
    out
}
