//! The REST front's guard: the body's media type, then the caller and
//! the endpoint's permission (auth/perms.rs). The caller goes into the
//! request's extensions for handlers that act on their identity.

use super::AppState;
use crate::api::ApiError;
use crate::auth::perms;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub async fn guard(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(route) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
    else {
        return next.run(req).await;
    };
    let method = req.method().clone();
    // Fail closed: an endpoint without a declared permission serves no one
    // (and auth/perms.rs's tests fail first).
    let Some(perm) = perms::rest(&method, &route) else {
        return ApiError::Forbidden(format!("{method} {route} has no permission declared"))
            .into_response();
    };
    if !perms::raw_body(&method, &route) {
        if let Err(e) = json_media_type(&method, req.headers()) {
            return e.into_response();
        }
    }
    match s.auth.authorize_request(perm, &req) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// A request that carries a body (or says what it carries) to a JSON
/// endpoint must say `application/json`. Browsers send cross-site
/// `text/plain` and form posts without asking first; JSON needs a CORS
/// preflight, which this server answers only for `--cors-origin`.
pub fn json_media_type(method: &Method, h: &HeaderMap) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let has_body = match h.get(header::CONTENT_LENGTH) {
        Some(v) => v.to_str().ok().and_then(|s| s.parse::<u64>().ok()) != Some(0),
        None => h.contains_key(header::TRANSFER_ENCODING),
    };
    match h.get(header::CONTENT_TYPE) {
        None if !has_body => Ok(()),
        None => Err(ApiError::UnsupportedMediaType(
            "send the body with Content-Type: application/json".into(),
        )),
        Some(v) => {
            let essence = v
                .to_str()
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if essence == "application/json" {
                Ok(())
            } else {
                Err(ApiError::UnsupportedMediaType(format!(
                    "this endpoint takes application/json, not {essence:?}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn h(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(k.clone(), HeaderValue::from_str(v).expect("header"));
        }
        m
    }

    #[test]
    fn json_endpoints_take_json_only() {
        let ct = header::CONTENT_TYPE;
        let cl = header::CONTENT_LENGTH;
        assert!(json_media_type(&Method::POST, &h(&[(ct.clone(), "application/json")])).is_ok());
        assert!(json_media_type(
            &Method::POST,
            &h(&[(ct.clone(), "Application/JSON; charset=utf-8")])
        )
        .is_ok());
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let e = json_media_type(&Method::POST, &h(&[(ct.clone(), bad)]));
            assert!(matches!(e, Err(ApiError::UnsupportedMediaType(_))), "{bad}");
        }
        // A body without a type, or a type-less empty POST (`cancel`).
        assert!(json_media_type(&Method::POST, &h(&[(cl.clone(), "5")])).is_err());
        assert!(json_media_type(&Method::POST, &h(&[(cl.clone(), "0")])).is_ok());
        assert!(json_media_type(&Method::POST, &h(&[])).is_ok());
        assert!(json_media_type(&Method::GET, &h(&[(ct, "text/plain")])).is_ok());
    }
}
