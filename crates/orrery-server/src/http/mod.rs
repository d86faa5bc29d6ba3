//! The REST front (axum): routes, request parsing and JSON views. Handlers
//! parse and validate, call a service, and shape the answer; every error
//! leaves through [`ApiError`]'s JSON body.

mod auth;
mod auth_tokens;
mod backup;
mod cluster;
mod cluster_members;
mod cluster_rebalance;
mod datasets;
mod datasets_search;
pub mod extract;
mod jobs;
mod jobs_body;
mod jobs_queues;
mod jobs_sse;
mod kv;
mod openapi;
pub(crate) mod openapi_errors;
mod openapi_jobs;
mod openapi_schemas;
mod policies;
mod policies_shadow;
mod policies_views;
mod ui;
pub(crate) mod unread;
mod vectors;
mod workflows;

use crate::api::ApiError;
use crate::service::Services;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// The state every handler extracts from (or a part of it, via `FromRef`).
pub type AppState = Arc<Services>;

pub fn router(services: AppState) -> Router {
    Router::new()
        .merge(kv::routes())
        .merge(cluster::routes())
        .merge(cluster_members::routes())
        .merge(cluster_rebalance::routes())
        .merge(backup::routes())
        .merge(jobs::routes())
        .merge(workflows::routes())
        .merge(vectors::routes())
        .merge(datasets::routes())
        .merge(datasets_search::routes())
        .merge(policies::routes())
        .merge(auth_tokens::routes())
        .merge(openapi::routes())
        .merge(ui::routes())
        .route_layer(middleware::from_fn_with_state(
            services.clone(),
            auth::guard,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(services.clone(), observe))
        .with_state(services)
}

/// Counts and times every request by route, and tags it with a request id
/// (in its tracing span and the `x-request-id` response header).
async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", |p| p.as_str());
    let method = req.method().clone();
    let start = Instant::now();
    let metrics = &s.node.metrics;
    let request_id = metrics.next_request_id();
    let span =
        tracing::info_span!("http", node = s.node.id(), request = request_id, %method, %route);
    let (req, body_read) = unread::watch(req);
    let mut resp = next.run(req).instrument(span).await;
    unread::close_if_unread(&mut resp, body_read);
    metrics.observe(
        method.as_str(),
        route,
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp.headers_mut()
        .insert("x-request-id", HeaderValue::from(request_id));
    resp
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; see docs/api.md".into())
}

async fn method_not_allowed() -> Response {
    let body = json!({"error": {"code": "method_not_allowed", "message": "method not allowed on this endpoint"}});
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// `--cors-origin`: the one web origin whose pages may call this node
/// (with a token). Without it no CORS header is ever sent, so browsers
/// keep other sites' scripts from reading answers or sending JSON.
pub fn cors(origin: &str) -> Result<tower_http::cors::CorsLayer, String> {
    use axum::http::{header, Method};
    let o = HeaderValue::from_str(origin)
        .map_err(|_| format!("--cors-origin {origin:?} is not a valid origin"))?;
    if !(origin.starts_with("https://") || origin.starts_with("http://")) {
        return Err(format!(
            "--cors-origin must be an origin such as https://console.example.com, got {origin:?}"
        ));
    }
    Ok(tower_http::cors::CorsLayer::new()
        .allow_origin(o)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        // What browser clients read besides the body: a write's revision,
        // when to retry a 503, and the request id to quote in a report.
        .expose_headers([
            header::HeaderName::from_static("x-orrery-revision"),
            header::RETRY_AFTER,
            header::HeaderName::from_static("x-request-id"),
        ])
        .max_age(std::time::Duration::from_secs(600)))
}
