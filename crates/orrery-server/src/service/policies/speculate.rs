//! A sync run's start and evaluation, with the evaluation overlapping the
//! linearizable read of the policy.
//!
//! A run must use the policy (its allocation) as it stands when the request
//! is served: the read goes through the placement leader (a read-index
//! round, [`PoliciesService::get`]). That round was on the critical path
//! before any CPU work. Here the evaluation starts at once on this node's
//! replica's copy of the policy, and the read runs meanwhile; the
//! speculative outcome is used only if the linearizable read returns the
//! same policy (every field equal, so the same version is chosen for the
//! same key), i.e. only when it is exactly the outcome the sequential path
//! would have computed after the read. Otherwise it is dropped and the run
//! is evaluated again on the policy just read. Only graphs without effects
//! are evaluated ahead (input, transform, branch, allocation and output
//! nodes: no lookups, no job submissions, no node kind added later), so a
//! dropped evaluation did nothing. Requests that name a version read it
//! (its `archived` flag) linearizably first and are not evaluated ahead.

use super::runs::{new_run_id, RunRequest, Started};
use super::PoliciesService;
use crate::api::{lock, now_ms, ApiError};
use orrery_policy::eval::{check_input, evaluate, pick, Outcome};
use orrery_policy::graph::{Compiled, CompiledKind};
use orrery_policy::store::{Policy, PolicyQuery, PolicyQueryResult};
use std::sync::Arc;

/// Whether evaluating `c` can have no effect outside the evaluation: every
/// node is of a kind listed here (a kind added later is not, until listed).
pub(super) fn pure(c: &Compiled) -> bool {
    c.nodes.iter().all(|n| {
        matches!(
            n.kind,
            CompiledKind::Input { .. }
                | CompiledKind::Transform { .. }
                | CompiledKind::Branch { .. }
                | CompiledKind::Allocation { .. }
                | CompiledKind::Output { .. }
        )
    })
}

/// An evaluation made on this node's copy of the policy.
struct Guess {
    policy: Policy,
    version: u32,
    compiled: Arc<Compiled>,
    outcome: Outcome,
}

impl PoliciesService {
    /// This node's replica's copy of policy `id` (by id or name), without
    /// a read-index round: it may lag the leader's, so it is only a guess.
    fn local_policy(&self, id: &str) -> Option<Policy> {
        let g = self.node.placement_group()?;
        let by = |q: PolicyQuery| match g.sm.read(|s| s.policy.query(&q)) {
            PolicyQueryResult::Policy(p) => p,
            _ => None,
        };
        by(PolicyQuery::Policy { id: id.into() })
            .or_else(|| by(PolicyQuery::PolicyByName { name: id.into() }))
    }

    /// The run evaluated on the local copy of the policy, when that copy
    /// has the version compiled already and the graph is [`pure`]; `None`
    /// otherwise (then the run is evaluated after the read, as usual).
    async fn guess(&self, id: &str, req: &RunRequest, key: &str, run_id: &str) -> Option<Guess> {
        if req.version.is_some() {
            return None;
        }
        let policy = self.local_policy(id)?;
        let version = *pick(&policy.id, key, &policy.allocation)?;
        let compiled = lock(&self.compiled)
            .get(&(policy.id.clone(), version))
            .cloned()?;
        if !pure(&compiled) {
            return None;
        }
        // A refused input is answered by the sequential path (its 400).
        let input = check_input(&compiled, &req.input).ok()?;
        let fx = self.effects(&compiled, Some(run_id)).await.ok()?;
        let outcome = evaluate(&compiled, input, &fx, self.budget(&compiled)).await;
        Some(Guess {
            policy,
            version,
            compiled,
            outcome,
        })
    }

    /// Stamps a new run of policy `id`, picks and compiles its version and
    /// evaluates it: the same run as reading the policy linearizably and
    /// then evaluating, with the evaluation overlapping the read when it
    /// can (see the module's comment).
    pub(super) async fn start_evaluated(
        &self,
        id: &str,
        req: &RunRequest,
    ) -> Result<(Started, Outcome), ApiError> {
        let created = now_ms();
        let run_id = new_run_id(created);
        let key = req.run_key.clone().unwrap_or_else(|| run_id.clone());
        let (fresh, guess) = futures::join!(self.get(id), self.guess(id, req, &key, &run_id));
        let p = fresh?;
        let version = self.choose(&p, req.version, &key).await?;
        if let Some(g) = guess.filter(|g| g.policy == p && g.version == version) {
            let st = Started {
                policy_id: p.id,
                created,
                run_id,
                version,
                compiled: g.compiled,
            };
            return Ok((st, g.outcome));
        }
        let compiled = self.compiled(&p.id, version).await?;
        let input = check_input(&compiled, &req.input)?;
        let fx = self.effects(&compiled, Some(&run_id)).await?;
        let outcome = evaluate(&compiled, input, &fx, self.budget(&compiled)).await;
        let st = Started {
            policy_id: p.id,
            created,
            run_id,
            version,
            compiled,
        };
        Ok((st, outcome))
    }
}
