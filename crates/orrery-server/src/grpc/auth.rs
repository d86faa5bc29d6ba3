//! The gRPC front's guard: the method's permission (auth/perms.rs) and
//! the caller from the `authorization` metadata, refused with
//! UNAUTHENTICATED or PERMISSION_DENIED before any service runs.

use crate::api::ApiError;
use crate::auth::{perms, Authenticator};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

pub async fn guard(State(a): State<Arc<Authenticator>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let result = match perms::grpc(&path) {
        Some(perm) => a.authorize_request(perm, &req),
        None => Err(ApiError::Forbidden(format!(
            "{path} has no permission declared"
        ))),
    };
    match result {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => tonic::Status::from(e)
            .into_http::<axum::body::Body>()
            .map(axum::body::Body::new),
    }
}
