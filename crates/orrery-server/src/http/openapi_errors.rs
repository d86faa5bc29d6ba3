//! The error answers of the OpenAPI document. Every error leaves through
//! [`ApiError`](crate::api::ApiError) as `{"error":{"code","message"}}`;
//! the statuses every route shares (401/403 from the auth guard, 415 from
//! the media-type check, 400/413 of a JSON body, 503 with `Retry-After`)
//! are added to each operation here from `auth/perms.rs`, so that a route
//! gets them by being in that table, not by remembering to say so.

use crate::auth::perms::{self, Perm};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, HeaderBuilder, OpenApi, Ref, RefOr};
use utoipa::ToSchema;

/// Every error answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong: a stable machine-readable `code` (see each status'
/// description) and a human-readable `message`.
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct ErrorDetail {
    #[schema(example = "missing_field")]
    code: String,
    message: String,
}

/// The name of the bearer security scheme.
pub const BEARER: &str = "bearer";

/// An error response with `description`, of [`ErrorBody`].
pub fn error(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .build()
}

fn unavailable() -> Response {
    let mut r = error(
        "Not served now, nothing happened: `unavailable` (no leader or quorum, a timeout), \
         `not_initialized` (the node is not part of a cluster yet), `overloaded` (the node is \
         handling as many requests as it may), or `outcome_unknown` / `timeout` (a write whose \
         fate is unknown, or a request past the node's deadline; retry only idempotent \
         writes). Retry after `Retry-After` seconds.",
    );
    let secs = Object::builder()
        .schema_type(Type::Integer)
        .minimum(Some(0));
    r.headers.insert(
        "Retry-After".into(),
        HeaderBuilder::new()
            .schema(secs)
            .description(Some("Seconds to wait before retrying."))
            .build(),
    );
    r
}

fn unauthorized() -> Response {
    let mut r =
        error("`unauthenticated`: no bearer token, or one that is unknown, expired or revoked.");
    let text = Object::builder().schema_type(Type::String);
    r.headers.insert(
        "WWW-Authenticate".into(),
        HeaderBuilder::new().schema(text).build(),
    );
    r
}

const BODY_400: &str = "A body that cannot be read: `invalid_json` (not JSON), `invalid_body` \
    (not an object), `missing_field`, `unknown_field`, `invalid_field` (the message names the \
    field), or a code of the endpoint's own checks.";

/// Adds the shared answers and the security of every operation.
pub fn add_shared(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        BEARER.into(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("orr_...")
                .description(Some(
                    "An API token (`orreryctl token create`); roles in docs/security.md.",
                ))
                .build(),
        ),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in operations(item) {
            let route = super::openapi::route_of(path, method);
            let perm = perms::REST
                .iter()
                .find(|(m, r, _)| *m == method && *r == route)
                .map(|(_, _, p)| *p);
            shared_for(op, method, &route, perm);
        }
    }
}

fn shared_for(op: &mut Operation, method: &str, route: &str, perm: Option<Perm>) {
    let add = |op: &mut Operation, status: &str, r: Response| {
        op.responses
            .responses
            .entry(status.into())
            .or_insert(RefOr::T(r));
    };
    match perm {
        // `/healthz` and `/v1/openapi.json` answer from the node itself.
        Some(Perm::Open) => op.security = Some(Vec::new()),
        _ => {
            op.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
            add(op, "401", unauthorized());
            add(
                op,
                "403",
                error("`forbidden`: the token's role lacks this endpoint's permission (docs/security.md), or its queues do not include this one."),
            );
        }
    }
    if route != "/healthz" && route != "/v1/openapi.json" {
        add(op, "503", unavailable());
    }
    let json_body = op
        .request_body
        .as_ref()
        .is_some_and(|b| b.content.contains_key("application/json"));
    if json_body {
        add(op, "400", error(BODY_400));
        add(
            op,
            "413",
            error("`too_large`: the body is over this endpoint's limit."),
        );
    }
    if method != "GET" && !perms::RAW_BODY.contains(&(method, route)) {
        add(
            op,
            "415",
            error(
                "`unsupported_media_type`: a body sent without `Content-Type: application/json`.",
            ),
        );
    }
}

/// The operations of a path item with their methods, as `perms::REST`
/// spells them.
pub fn operations(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("GET", item.get.as_mut()),
        ("POST", item.post.as_mut()),
        ("PUT", item.put.as_mut()),
        ("PATCH", item.patch.as_mut()),
        ("DELETE", item.delete.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
    .collect()
}
