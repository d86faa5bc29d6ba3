//! Idempotent runs: a run requested with a `run_key` is recorded at most
//! once per policy and key (cluster version 6; before that the key only
//! picks the version, as it always did).
//!
//! Such a run's id is `<12 hex digits of ms>k<16 hex digits>`, the tail a
//! stable hash of the policy id and the key, and runs are routed by that
//! tail: every attempt with the key reaches the same shard, where the
//! shard's state machine checks the key and records in one apply
//! (`orrery_policy::store_keys`). Other ids (28 hex digits) are routed by
//! the whole id, as before, so existing runs stay where they are.
//!
//! A retry first reads the key's run and answers with it without
//! evaluating again (no second enqueue, no second lookup). Two attempts in
//! flight at once both evaluate; the log orders their writes, the second
//! answers with the first's run, and their enqueue nodes share dedupe keys
//! (built from the id's tail), so they submit each job once.

use super::store::unexpected;
use super::PoliciesService;
use crate::api::ApiError;
use crate::node::Node;
use orrery_policy::store::{PolicyCommand, PolicyQuery, PolicyQueryResult, PolicyResponse, Run};
use orrery_policy::store_ext::{RunExt, RunRecord};
use orrery_types::{stable_hash, GroupId};

/// The cluster version that records keyed runs once.
pub const RUN_KEYS_VERSION: u32 = 6;

/// The id of a run of `policy_id` requested with `run_key` at `created`.
pub fn keyed_run_id(created: u64, policy_id: &str, run_key: &str) -> String {
    let mut k = policy_id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(run_key.as_bytes());
    format!("{created:012x}k{:016x}", stable_hash(&k))
}

/// The part of a run id shared by every attempt of one keyed run (the
/// whole id for other runs): what routes it and what dedupes its jobs.
pub fn run_anchor(id: &str) -> &str {
    let b = id.as_bytes();
    // Byte 12 being ASCII makes 13 a character boundary.
    if b.len() == 29 && b[12] == b'k' {
        &id[13..]
    } else {
        id
    }
}

/// The shard group that holds run `id`.
pub fn run_group(node: &Node, id: &str) -> Result<GroupId, ApiError> {
    node.group_for_key(run_anchor(id).as_bytes())
}

impl PoliciesService {
    /// Whether keyed runs are recorded once (this node's copy of the
    /// cluster version: it may lag, which only delays the new behaviour).
    pub(super) fn run_keys_active(&self) -> bool {
        self.node
            .version_local()
            .active
            .min(crate::node::version::supported())
            >= RUN_KEYS_VERSION
    }

    /// The run recorded for `run_key` of `policy_id`, if any: with the
    /// same input it is the answer; with another, a conflict.
    pub(super) async fn keyed_existing(
        &self,
        run_id: &str,
        policy_id: &str,
        run_key: &str,
        input: &str,
    ) -> Result<Option<RunRecord>, ApiError> {
        let q = PolicyQuery::RunByKey {
            policy_id: policy_id.into(),
            run_key: run_key.into(),
        };
        match self.read(run_group(&self.node, run_id)?, q).await? {
            PolicyQueryResult::RunFull(None) => Ok(None),
            PolicyQueryResult::RunFull(Some(r)) if r.run.input == input => Ok(Some(*r)),
            PolicyQueryResult::RunFull(Some(r)) => Err(ApiError::Conflict(format!(
                "run_key {run_key:?} was used by run {} with another input",
                r.run.id
            ))),
            other => Err(unexpected(other)),
        }
    }

    /// Records a keyed run unless the key already has one; answers with
    /// the run that is recorded (this one or the earlier).
    pub(super) async fn record_once(
        &self,
        run: Run,
        ext: RunExt,
    ) -> Result<(Run, RunExt), ApiError> {
        let group = run_group(&self.node, &run.id)?;
        let cmd = PolicyCommand::PutRunOnce {
            run: run.clone(),
            ext: ext.clone(),
        };
        match self.write(group, cmd).await? {
            PolicyResponse::RunStored => Ok((run, ext)),
            PolicyResponse::RunExisting(r) => Ok((r.run, r.ext)),
            other => Err(ApiError::Internal(format!(
                "unexpected policy response {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_ids_share_their_anchor_and_others_keep_theirs() {
        let a = keyed_run_id(0x18c_0000_0001, "p1", "order-7");
        let b = keyed_run_id(0x18c_0000_0999, "p1", "order-7");
        assert_eq!(a.len(), 29);
        assert_ne!(a, b);
        assert_eq!(run_anchor(&a), run_anchor(&b));
        // Another key, or the same key of another policy: another anchor.
        assert_ne!(
            run_anchor(&a),
            run_anchor(&keyed_run_id(1, "p1", "order-8"))
        );
        assert_ne!(
            run_anchor(&a),
            run_anchor(&keyed_run_id(1, "p2", "order-7"))
        );
        // Ids of unkeyed runs (and of runs from before version 6) route
        // by the whole id, as they always did.
        let plain = format!("{:012x}{:016x}", 5u64, 7u64);
        assert_eq!(run_anchor(&plain), plain);
        assert_eq!(run_anchor("0000000000kk"), "0000000000kk");
        assert_eq!(run_anchor(""), "");
        // Ids sort by creation time either way.
        assert!(a < b);
    }
}
