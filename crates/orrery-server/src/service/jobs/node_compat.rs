//! TEMPORARY (deleted when the policies domain has its service): the check
//! of policy job kinds at submit, still a method of the node
//! (`Node::check_policy_job` in policy_jobs.rs), as a [`KindCheck`].

use super::KindCheck;
use crate::api::ApiError;
use crate::node::Node;
use serde_json::Value;
use std::sync::Arc;

/// TEMPORARY: forwards to `Node::check_policy_job`.
pub struct PolicyKindCheck(pub Arc<Node>);

#[async_trait::async_trait]
impl KindCheck for PolicyKindCheck {
    async fn check(&self, kind: &str, params: &Value) -> Result<(), ApiError> {
        self.0.check_policy_job(kind, params).await
    }
}
