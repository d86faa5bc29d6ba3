//! The JSON the REST front shows for policies, versions and runs (data
//! sources: [`crate::service::policies::source_json`], shared with gRPC).

use orrery_policy::eval::Outcome;
use orrery_policy::store::{Policy, Run, Version};
use serde_json::{json, Value as Json};

/// A run as the API shows it.
pub fn run_json(r: &Run) -> Json {
    let parse = |s: &str| serde_json::from_str::<Json>(s).unwrap_or(Json::String(s.into()));
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

pub fn policy_json(p: &Policy) -> Json {
    json!({
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
