//! `/v1/auth/tokens`: create, list and revoke bearer tokens (admins);
//! `/v1/auth/whoami`: the caller's own identity and role (anyone with a
//! token), so a client such as the web console offers only what it may do.

use super::extract::json_body;
use super::extract::Path;
use super::openapi_errors::ErrorBody;
use super::openapi_schemas as S;
use super::AppState;
use crate::api::{now_ms, ApiError};
use crate::auth::tokens::{self, NewToken};
use crate::auth::Caller;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::Extension;
use axum::{Json, Router};
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/tokens", get(list).post(create))
        .route("/v1/auth/tokens/{id}", delete(revoke))
        .route("/v1/auth/whoami", get(whoami))
}

/// `GET /v1/auth/whoami`.
#[derive(utoipa::ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct WhoAmI {
    /// The token's name, the JWT's `sub`, `node` or `anonymous`.
    identity: String,
    /// `admin`, `writer`, `reader` or `worker`; null for the anonymous
    /// caller of an `--insecure` node (which may do everything but run
    /// `command` jobs).
    role: Option<String>,
    /// A worker token's queues; null: all.
    queues: Option<Vec<String>>,
    /// The node runs with `--insecure`.
    insecure: bool,
}

/// Who the caller is: what its token (or JWT) says.
#[utoipa::path(get, path = "/v1/auth/whoami", operation_id = "auth_whoami", tag = "auth",
    responses((status = 200, description = "The caller's identity, role and queues.", body = WhoAmI)))]
async fn whoami(State(s): State<AppState>, Extension(caller): Extension<Caller>) -> Json<Value> {
    Json(json!({
        "identity": caller.name,
        "role": caller.role.map(|r| r.as_str()),
        "queues": caller.queues,
        "insecure": s.auth.insecure(),
    }))
}

/// A new token; its secret is in the answer only.
#[utoipa::path(post, path = "/v1/auth/tokens", operation_id = "token_create", tag = "auth",
    request_body = NewToken,
    responses((status = 201, description = "The token, with its secret.", body = S::NewTokenView)))]
async fn create(
    State(s): State<AppState>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: NewToken = json_body(body, 64 << 10).await?;
    let (rec, token) = tokens::create(&s.node, req, now_ms()).await?;
    let mut v = rec.view();
    v["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(get, path = "/v1/auth/tokens", operation_id = "token_list", tag = "auth",
    responses((status = 200, description = "Every token (no secrets).", body = S::TokenList)))]
async fn list(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let all = tokens::list(&s.node).await?;
    Ok(Json(
        json!({"tokens": all.iter().map(|t| t.view()).collect::<Vec<_>>()}),
    ))
}

#[utoipa::path(delete, path = "/v1/auth/tokens/{id}", operation_id = "token_revoke", tag = "auth",
    params(("id" = String, Path, description = "The token's id.")),
    responses(
        (status = 200, description = "The revoked token.", body = S::TokenView),
        (status = 404, description = "`not_found`: no such token.", body = ErrorBody),
    ))]
async fn revoke(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(tokens::revoke(&s.node, &id, now_ms()).await?.view()))
}
