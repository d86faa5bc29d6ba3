//! REST: the comparison of a policy's live and shadow outputs, and the
//! PATCH helper that tells an absent field from a null one.

use super::extract::{Path, Query};
use super::openapi_errors::ErrorBody;
use super::openapi_schemas as S;
use super::AppState;
use crate::api::ApiError;
use crate::service::policies::DEFAULT_RUN_LIST;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

/// For `Option<Option<T>>` fields with `#[serde(default)]`: absent is
/// `None` (keep), null is `Some(None)` (clear), a value is `Some(Some)`.
pub(super) fn some<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct CompareParams {
    /// Runs created at or after this time, ms since the Unix epoch.
    #[param(value_type = Option<u64>)]
    since: Option<String>,
    /// Runs created before this time, ms since the Unix epoch.
    #[param(value_type = Option<u64>)]
    until: Option<String>,
    /// Shadowed runs compared per page, newest first (default 100, at most
    /// 1000): the last N when no window is given.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn num(name: &str, code: &str, v: Option<&str>) -> Result<Option<u64>, ApiError> {
    v.map(|t| {
        t.parse()
            .map_err(|_| ApiError::bad(code, format!("{name} must be an integer, got {t:?}")))
    })
    .transpose()
}

#[utoipa::path(get, path = "/v1/policies/{id}/shadow", operation_id = "policy_shadow_compare",
    tag = "policies", params(("id" = String, Path, description = "The policy's id or name."), CompareParams),
    responses(
        (status = 200, description = "Agreement of live and shadow outputs over a page of shadowed runs.", body = S::ShadowComparison),
        (status = 400, description = "`invalid_limit`, `invalid_time`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such policy.", body = ErrorBody),
        (status = 409, description = "`cluster_version_too_low`: before cluster version 5.", body = ErrorBody),
    ))]
pub(super) async fn compare(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<CompareParams>,
) -> Result<Json<Value>, ApiError> {
    let limit =
        num("limit", "invalid_limit", p.limit.as_deref())?.map_or(DEFAULT_RUN_LIST, |l| l as usize);
    let since = num("since", "invalid_time", p.since.as_deref())?;
    let until = num("until", "invalid_time", p.until.as_deref())?;
    let (pol, st) = s.policies.get_full(&id).await?;
    let c = s
        .policies
        .compare(&pol.id, since, until, limit, p.cursor)
        .await?;
    let rate = (c.compared > 0).then(|| c.agreed as f64 / c.compared as f64);
    let differing: Vec<Value> = c
        .differing
        .iter()
        .map(|(id, v, sv)| json!({"id": id, "version": v, "shadow_version": sv}))
        .collect();
    Ok(Json(json!({
        "policy_id": pol.id,
        "shadow_version": st.shadow_version,
        "compared": c.compared,
        "agreed": c.agreed,
        "differed": c.compared - c.agreed,
        "shadow_failed": c.shadow_failed,
        "agreement_rate": rate,
        "differing": differing,
        "next_cursor": c.next_cursor,
    })))
}
