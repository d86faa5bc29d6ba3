//! Sub-policies: the checks a version's `sub_policy` nodes pass when the
//! version is created, and their resolution when a run reaches them.
//!
//! At creation every referenced policy must exist, a pinned version must
//! exist and not be archived, and no reference may lead back to the policy
//! being versioned. "Lead back" follows, from each referenced policy, the
//! versions a run could reach: the pinned one, or (unpinned) every version
//! in that policy's current allocation, and from those versions' own
//! `sub_policy` nodes on, transitively; reaching this policy through any of
//! them (whichever of its versions) is a cycle. An allocation changed
//! later can still close a cycle: at run time the depth limit
//! ([`orrery_policy::limits::MAX_SUB_POLICY_DEPTH`]) ends it with an error.

use super::store::{policy_get, version_get};
use super::PoliciesService;
use crate::api::ApiError;
use orrery_policy::graph::Compiled;
use orrery_policy::store::Policy;
use orrery_policy::PolicyError;
use serde_json::Value as Json;
use std::collections::HashSet;
use std::sync::Arc;

/// Policies and versions one creation-time cycle check may visit: the
/// check reads each through Raft, so a catalog larger than this is refused
/// rather than walked for ever.
const MAX_VISITED: usize = 10_000;

fn invalid(node: &str, message: String) -> ApiError {
    PolicyError::Invalid {
        node: node.to_string(),
        message,
    }
    .into()
}

/// The `sub_policy` references of a stored graph: (policy name, pinned
/// version). A graph that does not parse references nothing (it was
/// validated when it was created).
fn references(graph: &str) -> Vec<(String, Option<u32>)> {
    let Ok(g) = serde_json::from_str::<Json>(graph) else {
        return Vec::new();
    };
    let Some(nodes) = g.get("nodes").and_then(Json::as_array) else {
        return Vec::new();
    };
    nodes
        .iter()
        .filter(|n| n.get("type").and_then(Json::as_str) == Some("sub_policy"))
        .filter_map(|n| {
            let cfg = n.get("config")?;
            let name = cfg.get("policy")?.as_str()?.to_string();
            let version = cfg
                .get("version")
                .and_then(Json::as_u64)
                .and_then(|v| u32::try_from(v).ok());
            Some((name, version))
        })
        .collect()
}

/// A referenced policy, or `None` when it does not exist.
async fn find(svc: &PoliciesService, name: &str) -> Result<Option<Policy>, ApiError> {
    match policy_get(&svc.node, name).await {
        Ok(p) => Ok(Some(p)),
        Err(ApiError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl PoliciesService {
    /// The creation-time checks of `c`'s sub_policy nodes, for a new
    /// version of `this` (see the module's doc); a 400 naming the node.
    pub(super) async fn check_sub_policies(
        &self,
        this: &Policy,
        c: &Compiled,
    ) -> Result<(), ApiError> {
        for (node, name, pinned) in c.sub_policies() {
            let Some(q) = find(self, &name).await? else {
                return Err(invalid(&node, format!("policy {name:?} does not exist")));
            };
            if let Some(v) = pinned {
                match version_get(&self.node, &q.id, v).await {
                    Ok(ver) if ver.archived => {
                        return Err(invalid(
                            &node,
                            format!("version {v} of policy {name:?} is archived"),
                        ))
                    }
                    Ok(_) => {}
                    Err(ApiError::NotFound(_)) => {
                        return Err(invalid(
                            &node,
                            format!("policy {name:?} has no version {v}"),
                        ))
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(path) = self.leads_to(&q, pinned, &this.id).await? {
                return Err(invalid(
                    &node,
                    format!(
                        "policy {name:?} leads back to policy {:?} ({} -> {path}): policies may not run each other in a cycle",
                        this.name, this.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The path of policy names from `from` (version `pinned`, or its
    /// allocation's versions) to the policy with id `target`, if any.
    async fn leads_to(
        &self,
        from: &Policy,
        pinned: Option<u32>,
        target: &str,
    ) -> Result<Option<String>, ApiError> {
        if from.id == target {
            return Ok(Some(from.name.clone()));
        }
        let mut visited: HashSet<(String, u32)> = HashSet::new();
        let mut stack = vec![(from.clone(), pinned, from.name.clone())];
        while let Some((p, pinned, path)) = stack.pop() {
            let versions: Vec<u32> = match pinned {
                Some(v) => vec![v],
                None => p.allocation.iter().map(|(v, _)| *v).collect(),
            };
            for v in versions {
                if !visited.insert((p.id.clone(), v)) {
                    continue;
                }
                if visited.len() > MAX_VISITED {
                    return Err(ApiError::bad(
                        "invalid_graph",
                        format!("the sub_policy references reach more than {MAX_VISITED} policy versions; the cycle check stops there"),
                    ));
                }
                let ver = match version_get(&self.node, &p.id, v).await {
                    Ok(ver) => ver,
                    Err(ApiError::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                };
                for (name, pinned) in references(&ver.graph) {
                    let Some(r) = find(self, &name).await? else {
                        continue;
                    };
                    let path = format!("{path} -> {}", r.name);
                    if r.id == target {
                        return Ok(Some(path));
                    }
                    stack.push((r, pinned, path));
                }
            }
        }
        Ok(None)
    }

    /// The version a sub_policy node runs and its compiled graph: the
    /// pinned one (refused when archived), or the one the policy's
    /// allocation picks for `key`, the parent run's allocation key.
    pub(super) async fn resolve_sub_policy(
        &self,
        name: &str,
        version: Option<u32>,
        key: &str,
    ) -> Result<(u32, Arc<Compiled>), ApiError> {
        let p = self.get(name).await?;
        let v = self.choose(&p, version, key).await?;
        Ok((v, self.compiled(&p.id, v).await?))
    }
}
