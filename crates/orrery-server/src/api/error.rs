//! The one place where errors become HTTP statuses and gRPC codes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// An error returned to a client. Serializable because forwarded requests
/// carry it back from the node that served them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    /// No leader, no quorum, or a timeout before anything was proposed:
    /// nothing happened and the client may retry.
    #[error("{0}")]
    Unavailable(String),
    /// A write was proposed (or forwarded) and its fate is unknown: it may
    /// still be applied. Retrying is safe only for idempotent writes.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    #[error("this node is not part of an initialised cluster yet")]
    NotInitialized,
    #[error("internal error: {0}")]
    Internal(String),
    /// A command that needs a newer cluster version than the active one:
    /// refused before it is proposed (see `node/version.rs`). Last: the
    /// variant index travels in forwarded replies.
    #[error("{}", crate::node::version::too_low_message(*required, *active))]
    ClusterVersionTooLow { required: u32, active: u32 },
    /// No credentials, or credentials that are not (or no longer) valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials whose role lacks the permission.
    #[error("{0}")]
    Forbidden(String),
    /// A body in a format the endpoint does not take (a JSON endpoint sent
    /// `text/plain`: also what keeps browsers' cross-site forms out).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A policy run passed its deadline. After `ClusterVersionTooLow`: the
    /// variant index travels in forwarded replies.
    #[error("{0}")]
    EvaluationTimeout(String),
    /// This node's storage failed (disk full, I/O error): it acknowledges
    /// no write, and stops (see `node/storage_health.rs`). Last: the
    /// variant index travels in forwarded replies.
    #[error("storage unavailable on this node: {0}")]
    StorageUnavailable(String),
    /// This node is handling as many requests as it may (`overload.rs`):
    /// nothing was done; retry shortly or on another node.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The command was committed but its apply failed (a bug in a domain
    /// module, caught): it changed nothing, on any replica, and the same
    /// command will fail again. Last: the variant index travels in
    /// forwarded replies.
    #[error("the command could not be applied and changed nothing: {0}")]
    ApplyFailed(String),
    /// The request was not answered within its deadline (`overload/guard.rs`:
    /// `--request-deadline-ms` or the caller's `grpc-timeout`): its work
    /// was dropped, but a write proposed before may still be applied.
    /// Last: the variant index travels in forwarded replies.
    #[error("timeout: {0}")]
    Timeout(String),
}

impl ApiError {
    pub fn bad(code: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code: code.to_string(),
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::Unavailable(message.into())
    }

    pub fn code(&self) -> &str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::OutcomeUnknown(_) => "outcome_unknown",
            ApiError::NotInitialized => "not_initialized",
            ApiError::Internal(_) => "internal",
            ApiError::ClusterVersionTooLow { .. } => "cluster_version_too_low",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::EvaluationTimeout(_) => "evaluation_timeout",
            ApiError::StorageUnavailable(_) => "storage_unavailable",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::ApplyFailed(_) => "apply_failed",
            ApiError::Timeout(_) => "timeout",
        }
    }

    pub fn http_status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_)
            | ApiError::OutcomeUnknown(_)
            | ApiError::NotInitialized
            | ApiError::StorageUnavailable(_)
            | ApiError::Overloaded(_)
            // 503 + Retry-After rather than 504: no gateway is involved, and
            // clients treat it like `outcome_unknown` (retry idempotent
            // requests, re-read before retrying others).
            | ApiError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            // 500: the server's fault, and retrying cannot help (no
            // Retry-After, unlike the 503s).
            ApiError::Internal(_) | ApiError::ApplyFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::ClusterVersionTooLow { .. } => StatusCode::CONFLICT,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            // 422, not 408: the request arrived in time; this policy cannot
            // be evaluated on this input within its deadline, and clients
            // and proxies must not retry it automatically as they may a 408.
            ApiError::EvaluationTimeout(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": self.detail()})
    }

    /// `{"code", "message"}`: what `body` wraps, and what the items of bulk
    /// answers carry under `error`.
    pub fn detail(&self) -> serde_json::Value {
        serde_json::json!({"code": self.code(), "message": self.to_string()})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.http_status();
        let mut resp = (status, axum::Json(self.body())).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"orrery\""),
            );
        }
        resp
    }
}

/// The gRPC status, with metadata `orrery-error-code` (the code REST's body
/// carries: gRPC codes alone conflate e.g. `conflict` and
/// `cluster_version_too_low`) and, on every status REST answers 503 for,
/// `retry-after` in seconds
/// (as REST's header), so that gRPC clients can map and retry as REST ones.
impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let mut status = grpc_status(&e);
        // Every 503 (UNAVAILABLE, and DEADLINE_EXCEEDED for `timeout`).
        let unavailable = e.http_status() == StatusCode::SERVICE_UNAVAILABLE;
        let md = status.metadata_mut();
        // Codes are ASCII identifiers; a code that were not would just go
        // without the metadata rather than fail the reply.
        if let Ok(v) = e.code().parse() {
            md.insert("orrery-error-code", v);
        }
        if unavailable {
            md.insert(
                "retry-after",
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
        status
    }
}

fn grpc_status(e: &ApiError) -> tonic::Status {
    let msg = e.to_string();
    match e {
        ApiError::BadRequest { .. } => tonic::Status::invalid_argument(msg),
        ApiError::NotFound(_) => tonic::Status::not_found(msg),
        ApiError::Conflict(_) => tonic::Status::failed_precondition(msg),
        ApiError::TooLarge(_) => tonic::Status::resource_exhausted(msg),
        ApiError::Unavailable(_)
        | ApiError::OutcomeUnknown(_)
        | ApiError::NotInitialized
        | ApiError::StorageUnavailable(_)
        | ApiError::Overloaded(_) => tonic::Status::unavailable(msg),
        ApiError::Internal(_) | ApiError::ApplyFailed(_) => tonic::Status::internal(msg),
        ApiError::ClusterVersionTooLow { .. } => tonic::Status::failed_precondition(msg),
        ApiError::Unauthenticated(_) => tonic::Status::unauthenticated(msg),
        ApiError::Forbidden(_) => tonic::Status::permission_denied(msg),
        ApiError::UnsupportedMediaType(_) => tonic::Status::invalid_argument(msg),
        ApiError::EvaluationTimeout(_) | ApiError::Timeout(_) => {
            tonic::Status::deadline_exceeded(msg)
        }
    }
}

// ---- vectors ----

/// A vector state machine's refusal. `Invalid` is a filter the shard could
/// not apply (the only input a shard re-checks).
impl From<orrery_vector::VectorError> for ApiError {
    fn from(e: orrery_vector::VectorError) -> Self {
        use orrery_vector::VectorError;
        match e {
            VectorError::AlreadyExists(_) | VectorError::Stale(_) => {
                ApiError::Conflict(e.to_string())
            }
            VectorError::Invalid(m) => ApiError::bad("invalid_filter", m),
        }
    }
}

// ---- policies ----

impl From<orrery_policy::PolicyError> for ApiError {
    fn from(e: orrery_policy::PolicyError) -> Self {
        use orrery_policy::PolicyError;
        match e {
            PolicyError::Invalid { node, message } if node.is_empty() => {
                ApiError::bad("invalid_graph", message)
            }
            PolicyError::Invalid { node, message } => {
                ApiError::bad("invalid_graph", format!("node {node:?}: {message}"))
            }
            PolicyError::Input(m) => ApiError::bad("invalid_input", m),
            PolicyError::TooLarge(m) => ApiError::TooLarge(m),
            PolicyError::Internal(m) => ApiError::Internal(m),
        }
    }
}

// ---------------------------------------------------------------------
// Job queues
// ---------------------------------------------------------------------

/// A queue module rejection: 409 for stale tokens and finished jobs (and
/// workflows), 404 for unknown queues, jobs and workflows, 400 for invalid
/// workflows, 413 for oversized results and batches.
impl From<orrery_queue::QueueError> for ApiError {
    fn from(e: orrery_queue::QueueError) -> Self {
        use orrery_queue::QueueError as Q;
        match &e {
            Q::QueueExists(_)
            | Q::StaleToken { .. }
            | Q::AlreadyFinished { .. }
            | Q::WorkflowEnded { .. } => ApiError::Conflict(e.to_string()),
            Q::UnknownQueue(_) | Q::UnknownJob(_) | Q::UnknownWorkflow(_) => {
                ApiError::NotFound(e.to_string())
            }
            Q::InvalidWorkflow(m) => ApiError::bad("invalid_workflow", m.clone()),
            Q::ResultTooLarge(_) | Q::BatchTooLarge(_) => ApiError::TooLarge(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_unknown_is_a_503_with_its_own_code() {
        let e = ApiError::OutcomeUnknown("shard-1 did not commit".into());
        assert_eq!(e.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.body()["error"]["code"], "outcome_unknown");
        let r = e.clone().into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::Unavailable);
    }

    #[test]
    fn a_passed_deadline_is_a_503_timeout_and_deadline_exceeded() {
        let e = ApiError::Timeout("not answered within 30000 ms".into());
        assert_eq!(e.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.body()["error"]["code"], "timeout");
        let r = e.clone().into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let s = tonic::Status::from(e);
        assert_eq!(s.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(s.metadata().get("orrery-error-code").unwrap(), "timeout");
        assert_eq!(s.metadata().get("retry-after").unwrap(), "1");
    }

    #[test]
    fn policy_limits_have_their_own_codes() {
        let e = ApiError::EvaluationTimeout("run r: evaluation_timeout".into());
        assert_eq!(e.http_status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.body()["error"]["code"], "evaluation_timeout");
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::DeadlineExceeded);
        let e = ApiError::from(orrery_policy::PolicyError::TooLarge("big".into()));
        assert_eq!(e.http_status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.body()["error"]["code"], "too_large");
    }

    #[test]
    fn grpc_statuses_carry_the_code_and_retry_after() {
        let s = tonic::Status::from(ApiError::Conflict("stale token".into()));
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert_eq!(s.metadata().get("orrery-error-code").unwrap(), "conflict");
        assert!(s.metadata().get("retry-after").is_none());
        let s = tonic::Status::from(ApiError::ClusterVersionTooLow {
            required: 2,
            active: 1,
        });
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            s.metadata().get("orrery-error-code").unwrap(),
            "cluster_version_too_low"
        );
        let s = tonic::Status::from(ApiError::bad("key_too_large", "big"));
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            s.metadata().get("orrery-error-code").unwrap(),
            "key_too_large"
        );
        for e in [
            ApiError::unavailable("no quorum"),
            ApiError::OutcomeUnknown("?".into()),
            ApiError::NotInitialized,
            ApiError::StorageUnavailable("disk full".into()),
            ApiError::Overloaded("busy".into()),
        ] {
            let code = e.code().to_string();
            let s = tonic::Status::from(e);
            assert_eq!(s.code(), tonic::Code::Unavailable);
            assert_eq!(s.metadata().get("retry-after").unwrap(), "1");
            assert_eq!(
                s.metadata().get("orrery-error-code").unwrap(),
                code.as_str()
            );
        }
        // The metadata survives the trip into an HTTP response (trailers-only).
        let r =
            tonic::Status::from(ApiError::unavailable("no quorum")).into_http::<axum::body::Body>();
        assert_eq!(r.headers()["orrery-error-code"], "unavailable");
        assert_eq!(r.headers()["retry-after"], "1");
    }

    #[test]
    fn apply_failed_is_a_500_without_retry_after() {
        let e = ApiError::ApplyFailed("applying the command at log index 7 failed: bug".into());
        assert_eq!(e.http_status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.body()["error"]["code"], "apply_failed");
        // Retrying the same command fails the same way: no Retry-After.
        let r = e.clone().into_response();
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
        let s = tonic::Status::from(e);
        assert_eq!(s.code(), tonic::Code::Internal);
        assert_eq!(
            s.metadata().get("orrery-error-code").unwrap(),
            "apply_failed"
        );
        assert!(s.metadata().get("retry-after").is_none());
    }

    #[test]
    fn statuses_and_bodies() {
        let e = ApiError::bad("key_too_large", "key is 5000 bytes");
        assert_eq!(e.http_status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.body()["error"]["code"], "key_too_large");
        let r = ApiError::unavailable("no quorum").into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            tonic::Status::from(ApiError::Conflict("x".into())).code(),
            tonic::Code::FailedPrecondition
        );
    }
}
