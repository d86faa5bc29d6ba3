//! Typed reads and writes of the policy state machines, as functions of the
//! node: the service uses them, and so does the check the jobs domain runs
//! on `policy.*` submissions (which has a node, not this service).

use crate::api::ApiError;
use crate::node::Node;
use orrery_policy::store::{
    Policy, PolicyCommand, PolicyQuery, PolicyQueryResult, PolicyResponse, Version,
};
use orrery_types::PLACEMENT_GROUP;

pub(super) fn unexpected<T: std::fmt::Debug>(r: T) -> ApiError {
    ApiError::Internal(format!("unexpected response {r:?}"))
}

/// A write to `group`; the state machine's refusals become errors.
pub(super) async fn write(
    node: &Node,
    group: u64,
    cmd: PolicyCommand,
) -> Result<PolicyResponse, ApiError> {
    match node.write(group, cmd).await? {
        PolicyResponse::NotFound(m) => Err(ApiError::NotFound(m)),
        PolicyResponse::Conflict(m) => Err(ApiError::Conflict(m)),
        PolicyResponse::Rejected(m) => Err(ApiError::bad("invalid_allocation", m)),
        r => Ok(r),
    }
}

/// A linearizable read of `group`.
pub(super) async fn read(
    node: &Node,
    group: u64,
    q: PolicyQuery,
) -> Result<PolicyQueryResult, ApiError> {
    node.read(group, q, true).await
}

/// A policy by id, or by name.
pub async fn policy_get(node: &Node, id: &str) -> Result<Policy, ApiError> {
    if let PolicyQueryResult::Policy(Some(p)) =
        read(node, PLACEMENT_GROUP, PolicyQuery::Policy { id: id.into() }).await?
    {
        return Ok(p);
    }
    let by_name = PolicyQuery::PolicyByName { name: id.into() };
    match read(node, PLACEMENT_GROUP, by_name).await? {
        PolicyQueryResult::Policy(Some(p)) => Ok(p),
        _ => Err(ApiError::NotFound(format!("policy {id:?} not found"))),
    }
}

/// Version `version` of the policy with id `policy_id` (not a name).
pub async fn version_get(node: &Node, policy_id: &str, version: u32) -> Result<Version, ApiError> {
    let q = PolicyQuery::Version {
        policy_id: policy_id.into(),
        version,
    };
    match read(node, PLACEMENT_GROUP, q).await? {
        PolicyQueryResult::Version(Some(v)) => Ok(v),
        PolicyQueryResult::Version(None) => Err(ApiError::NotFound(format!(
            "version {version} of policy {policy_id} not found"
        ))),
        other => Err(unexpected(other)),
    }
}
