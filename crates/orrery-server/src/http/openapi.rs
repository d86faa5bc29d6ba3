//! The OpenAPI 3.1 document of the REST front, generated from the code
//! with utoipa: `#[utoipa::path]` on the handlers, `ToSchema` on their
//! bodies and views, and the statuses every route shares added from
//! `auth/perms.rs` (`openapi_errors`). Served at `GET /v1/openapi.json`
//! and committed as `docs/openapi.json`; the tests below fail when a
//! route and the document disagree, or when that file is stale
//! (regenerate it with `ORRERY_UPDATE_OPENAPI=1 cargo test -p
//! orrery-server --lib openapi`).

use super::{
    auth_tokens, backup, cluster, cluster_members, cluster_rebalance, datasets, datasets_search,
    jobs, jobs_queues, jobs_sse, kv, policies, policies_shadow, vectors, workflows,
};
use super::{openapi_errors, AppState};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::OnceLock;
use utoipa::OpenApi;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/openapi.json", get(serve))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Orrery",
        description = "The REST API of an Orrery node (docs/api.md). Every request but the \
            open ones carries `Authorization: Bearer orr_...`; errors are \
            `{\"error\":{\"code\",\"message\"}}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        cluster::healthz, cluster::readyz, cluster::metrics, serve,
        cluster::cluster, cluster::version, cluster::set_version, backup::create,
        cluster_members::status, cluster_members::add_member, cluster_members::remove_member,
        cluster_members::promote_member, cluster_rebalance::get_rebalance,
        cluster_rebalance::set_rebalance,
        auth_tokens::list, auth_tokens::create, auth_tokens::revoke, auth_tokens::whoami,
        kv::kv_list, kv::kv_delete_prefix, kv::kv_get, kv::kv_put, kv::kv_delete, kv::kv_post,
        jobs_queues::list_queues, jobs_queues::create_queue, jobs_queues::get_queue,
        jobs_queues::delete_queue, jobs_queues::gpus,
        jobs::claim, jobs::list_jobs, jobs::submit, jobs::submit_batch, jobs::complete_batch,
        jobs::get_job, jobs::cancel, jobs::runs, jobs::heartbeat, jobs::complete, jobs::fail,
        jobs_sse::logs, jobs_sse::events, jobs_sse::events_stream,
        workflows::start, workflows::show, workflows::cancel,
        policies::list, policies::create, policies::show, policies::patch, policies::delete,
        policies::versions, policies::version_create, policies::version_get,
        policies::version_archive, policies::run, policies::batch, policies::runs_list,
        policies::run_get, policies_shadow::compare, policies::sources, policies::source_create, policies::source_delete,
        vectors::list, vectors::create, vectors::show, vectors::drop_collection,
        vectors::upsert, vectors::delete_points, vectors::get_point, vectors::search,
        vectors::search_batch,
        datasets::create, datasets::list, datasets::show, datasets::items, datasets::scan,
        datasets::attach, datasets::delete, datasets_search::search, datasets_search::pipeline,
    ),
    components(schemas(openapi_errors::ErrorBody, super::extract::Consistency)),
    modifiers(&Shared),
)]
struct ApiDoc;

struct Shared;

impl utoipa::Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        openapi_errors::add_shared(doc);
    }
}

/// The document, built once.
pub fn spec() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").into();
        // Pretty and with a final newline: the same text as docs/openapi.json.
        let mut s = doc.to_pretty_json().unwrap_or_else(|e| {
            // Serialising plain structs of strings cannot fail; should it,
            // the node still serves a valid (empty) document.
            tracing::error!("openapi: {e}");
            "{}".into()
        });
        s.push('\n');
        s
    })
}

/// This document (OpenAPI 3.1).
#[utoipa::path(
    get, path = "/v1/openapi.json", operation_id = "openapi", tag = "cluster",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.",
        content_type = "application/json", body = Object)),
)]
async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], spec())
}

/// Spec paths whose axum route is spelled differently: the KV key is a
/// wildcard (`{*key}`: it may hold slashes), and compare-and-swap is the
/// wildcard route's POST with a `/cas` suffix (kv.rs).
const ROUTE_OF: &[(&str, &str, &str)] = &[
    ("GET", "/v1/kv/{key}", "/v1/kv/{*key}"),
    ("PUT", "/v1/kv/{key}", "/v1/kv/{*key}"),
    ("DELETE", "/v1/kv/{key}", "/v1/kv/{*key}"),
    ("POST", "/v1/kv/{key}/cas", "/v1/kv/{*key}"),
];

/// The axum route (as `auth/perms.rs` names it) of a spec path.
pub fn route_of(path: &str, method: &str) -> String {
    ROUTE_OF
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map_or(path, |(_, _, r)| r)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::perms;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn spec_routes() -> BTreeSet<(String, String)> {
        let mut doc = ApiDoc::openapi();
        let mut out = BTreeSet::new();
        for (path, item) in doc.paths.paths.iter_mut() {
            for (m, _) in openapi_errors::operations(item) {
                out.insert((m.to_string(), route_of(path, m)));
            }
        }
        out
    }

    #[test]
    fn openapi_covers_every_route_and_only_routes() {
        let spec = spec_routes();
        // The console's static files are routes but no API: deliberately
        // left out of the document (and only they).
        let table: BTreeSet<(String, String)> = perms::REST
            .iter()
            .filter(|(_, r, _)| !perms::is_console_route(r))
            .map(|(m, r, _)| (m.to_string(), r.to_string()))
            .collect();
        assert!(
            perms::REST
                .iter()
                .filter(|(_, r, _)| perms::is_console_route(r))
                .all(|(m, _, p)| *m == "GET" && *p == perms::Perm::Open),
            "console routes are public GETs of static files; anything else belongs in the API"
        );
        let missing: Vec<_> = table.difference(&spec).collect();
        assert!(
            missing.is_empty(),
            "routes (auth/perms.rs) missing from the OpenAPI document: add #[utoipa::path] \
             to the handler and list it in http/openapi.rs: {missing:?}"
        );
        let extra: Vec<_> = spec.difference(&table).collect();
        assert!(
            extra.is_empty(),
            "OpenAPI operations that are no route: {extra:?}"
        );
    }

    #[test]
    fn openapi_operations_are_unique_and_secured_as_perms_says() {
        let v: serde_json::Value = serde_json::from_str(spec()).expect("spec is JSON");
        assert_eq!(v["openapi"], "3.1.0");
        let mut ids = BTreeSet::new();
        for (path, item) in v["paths"].as_object().expect("paths") {
            for (m, op) in item.as_object().expect("item") {
                let method = m.to_uppercase();
                let id = op["operationId"].as_str().expect("operationId");
                assert!(ids.insert(id.to_string()), "operationId {id} twice");
                let perm = perms::rest(&method.parse().expect("method"), &route_of(path, &method))
                    .expect("perm");
                let secured = !op["security"].as_array().expect("security").is_empty();
                assert_eq!(secured, perm != perms::Perm::Open, "{method} {path}");
                if secured {
                    assert!(op["responses"]["401"].is_object(), "{method} {path}");
                }
            }
        }
    }

    #[test]
    fn openapi_committed_document_is_current() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        if std::env::var_os("ORRERY_UPDATE_OPENAPI").is_some() {
            std::fs::write(&file, spec()).expect("write docs/openapi.json");
        }
        let committed = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            committed == spec(),
            "docs/openapi.json is stale: regenerate it with \
             `ORRERY_UPDATE_OPENAPI=1 cargo test -p orrery-server --lib openapi` and commit it"
        );
    }
}
