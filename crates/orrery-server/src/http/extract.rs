//! Request parts every REST handler reads the same way: the consistency of
//! a read, limits, and bodies with a size cap.

use crate::api::ApiError;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// `axum::extract::Query`, refused as an [`ApiError`] (`invalid_query`,
/// in the JSON error body) rather than axum's plain-text rejection.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::bad("invalid_query", e.body_text()))
    }
}

/// `axum::extract::Path`, refused as an [`ApiError`] (`invalid_path`: a
/// segment that is not UTF-8 once percent-decoded).
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::bad("invalid_path", e.body_text()))
    }
}

/// `?consistency=linearizable|stale` on reads.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadParams {
    /// `linearizable` (default: through the leader) or `stale` (this
    /// node's replica).
    #[param(value_type = Option<Consistency>)]
    pub consistency: Option<String>,
}

/// How a read is served.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Consistency {
    Linearizable,
    Stale,
}

impl ReadParams {
    pub fn linearizable(&self) -> Result<bool, ApiError> {
        linearizable(self.consistency.as_deref())
    }
}

/// Whether a read must go through the leader (the default) or may be
/// served from this node's replica.
pub fn linearizable(c: Option<&str>) -> Result<bool, ApiError> {
    match c {
        None | Some("linearizable") => Ok(true),
        Some("stale") => Ok(false),
        Some(other) => Err(ApiError::bad(
            "invalid_consistency",
            format!("consistency must be \"linearizable\" or \"stale\", got {other:?}"),
        )),
    }
}

/// The whole body, refused with 413 past `limit` bytes (`shown` is the
/// limit the message names: the user-facing one, when `limit` adds slack).
pub async fn read_body(body: Body, limit: usize, shown: usize) -> Result<Vec<u8>, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| {
            ApiError::TooLarge(format!(
                "request body exceeds the limit of {} bytes",
                limit.max(shown)
            ))
        })
}

/// A JSON object body parsed into `T` (a serde struct: unknown fields are
/// refused where `T` says `deny_unknown_fields`). An empty body is `{}`.
/// Errors name the field: 413 past `limit`; 400 with `invalid_json` (not
/// JSON), `invalid_body` (not an object), `missing_field`, `unknown_field`
/// or `invalid_field`.
pub async fn json_body<T: DeserializeOwned>(body: Body, limit: usize) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::TooLarge(format!("request body exceeds {limit} bytes")))?;
    parse_json(&bytes)
}

/// [`json_body`] for bytes already read.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { bytes };
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad("invalid_json", format!("body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad("invalid_body", "body must be a JSON object"));
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if let Some(rest) = inner.strip_prefix("missing field ") {
            let field = rest.trim_matches('`');
            let field = if path == "." {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
            ApiError::bad("missing_field", format!("field {field:?} is required"))
        } else if let Some(rest) = inner.strip_prefix("unknown field ") {
            ApiError::bad("unknown_field", format!("unknown field {rest} at {path:?}"))
        } else {
            ApiError::bad("invalid_field", format!("field {path:?}: {inner}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body1 {
        name: String,
        #[serde(default)]
        inner: Option<Inner>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Inner {
        limit: u32,
    }

    fn code(r: Result<Body1, ApiError>) -> (String, String) {
        let e = r.expect_err("must fail");
        (e.code().to_string(), e.to_string())
    }

    #[test]
    fn body_errors_name_the_field() {
        assert!(parse_json::<Body1>(br#"{"name":"a"}"#).is_ok());
        assert_eq!(code(parse_json(b"{")).0, "invalid_json");
        assert_eq!(code(parse_json(b"[1]")).0, "invalid_body");
        let (c, m) = code(parse_json(b"{}"));
        assert_eq!(c, "missing_field");
        assert!(m.contains("\"name\""), "{m}");
        let (c, m) = code(parse_json(br#"{"name":"a","x":1}"#));
        assert_eq!(c, "unknown_field");
        assert!(m.contains("`x`"), "{m}");
        let (c, m) = code(parse_json(br#"{"name":"a","inner":{"limit":"no"}}"#));
        assert_eq!(c, "invalid_field");
        assert!(m.contains("inner.limit"), "{m}");
        let (c, m) = code(parse_json(br#"{"name":"a","inner":{}}"#));
        assert_eq!(c, "missing_field");
        assert!(m.contains("inner.limit"), "{m}");
    }
}
