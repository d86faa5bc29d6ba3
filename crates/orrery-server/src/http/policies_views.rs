//! The JSON the REST front shows for policies, versions and runs (data
//! sources: [`crate::service::policies::source_json`], shared with gRPC).

use orrery_policy::eval::Outcome;
use orrery_policy::store::{Policy, Run, Version};
use orrery_policy::store_ext::{PolicySettings, RunExt};
use serde_json::{json, Value as Json};

fn parse(s: &str) -> Json {
    serde_json::from_str::<Json>(s).unwrap_or(Json::String(s.into()))
}

/// A run as the API shows it: `shadow` and `termination` are null when
/// the run has none (always, before cluster version 5).
pub fn run_json(r: &Run, ext: &RunExt) -> Json {
    let mut v = run_base_json(r);
    v["shadow"] = match &ext.shadow {
        Some(sh) => json!({
            "version": sh.version,
            "output": sh.output.as_deref().map(parse),
            "error": sh.error,
            "would_enqueue": sh.would_enqueue,
        }),
        None => Json::Null,
    };
    v["termination"] = match &ext.termination {
        Some(t) => json!({"status": t.status, "reason": t.reason}),
        None => Json::Null,
    };
    v
}

fn run_base_json(r: &Run) -> Json {
    json!({
        "id": r.id,
        "policy_id": r.policy_id,
        "version": r.version,
        "status": r.status.as_str(),
        "run_key": r.run_key,
        "input": parse(&r.input),
        "output": r.output.as_deref().map(parse),
        "trace": parse(&r.trace),
        "error": r.error,
        "created": r.created_ms,
        "finished": r.finished_ms,
    })
}

/// A policy with its settings (`shadow_version`, `run_retention_ms`: null
/// when unset).
pub fn policy_json(p: &Policy, st: &PolicySettings) -> Json {
    json!({
        "shadow_version": st.shadow_version,
        "run_retention_ms": st.run_retention_ms,
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "created": p.created_ms,
        "updated": p.updated_ms,
        "allocation": p.allocation.iter().map(|(v, w)| json!({"version": v, "weight": w})).collect::<Vec<_>>(),
        "latest_version": p.latest_version,
    })
}

pub fn version_json(v: &Version) -> Json {
    json!({
        "policy_id": v.policy_id,
        "version": v.version,
        "graph": serde_json::from_str::<Json>(&v.graph).unwrap_or(Json::Null),
        "created_by": v.created_by,
        "created": v.created_ms,
        "archived": v.archived,
    })
}

/// One result of a batch.
pub fn outcome_json(o: Outcome) -> Json {
    let status = if o.succeeded() { "succeeded" } else { "failed" };
    let mut v = json!({"status": status, "output": o.output, "error": o.error});
    if let (Some(t), Some(m)) = (o.termination, v.as_object_mut()) {
        m.insert("termination".into(), json!(t));
    }
    v
}
