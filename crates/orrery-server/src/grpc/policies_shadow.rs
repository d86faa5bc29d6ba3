//! gRPC: the messages of cluster version 5's policy data (shadow results,
//! terminations) and the shadow comparison.

use crate::api::ApiError;
use crate::service::policies::{PoliciesService, DEFAULT_RUN_LIST};
use orrery_policy::store_ext::{ShadowResult, StoredTermination};
use orrery_proto::v1 as pb;

pub(super) fn shadow_pb(s: ShadowResult) -> pb::PolicyShadowResult {
    pb::PolicyShadowResult {
        version: s.version,
        output_json: s.output,
        error: s.error,
        would_enqueue: s.would_enqueue,
    }
}

pub(super) fn termination_pb(t: StoredTermination) -> pb::PolicyTermination {
    pb::PolicyTermination {
        status: t.status,
        reason: t.reason,
    }
}

pub(super) async fn compare(
    svc: &PoliciesService,
    r: pb::CompareShadowRequest,
) -> Result<pb::ShadowComparison, ApiError> {
    let (p, st) = svc.get_full(&r.policy_id).await?;
    let limit = if r.limit == 0 {
        DEFAULT_RUN_LIST
    } else {
        r.limit as usize
    };
    let cursor = r.cursor.filter(|c| !c.is_empty());
    let c = svc.compare(&p.id, r.since, r.until, limit, cursor).await?;
    Ok(pb::ShadowComparison {
        policy_id: p.id,
        shadow_version: st.shadow_version,
        compared: c.compared as u64,
        agreed: c.agreed as u64,
        shadow_failed: c.shadow_failed as u64,
        differing: c
            .differing
            .into_iter()
            .map(|(run_id, version, shadow_version)| pb::ShadowDifference {
                run_id,
                version,
                shadow_version,
            })
            .collect(),
        next_cursor: c.next_cursor,
    })
}
