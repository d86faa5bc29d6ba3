//! The web console's static files, compiled into the binary
//! (`crates/orrery-server/ui/`, no build step) and served at `/ui/` on the
//! API port, behind the same TLS. The files are public, like any login
//! page: they hold no data. The pages read everything from the REST API
//! with the token the user signs in with (docs/console.md), so the
//! headers here lock the pages down: scripts and styles only from this
//! origin (no inline script, so an injected string cannot run), no
//! framing, no sniffing, no referrer (a page's URL never leaves the tab).

use super::extract::Path;
use super::AppState;
use crate::api::ApiError;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use std::sync::OnceLock;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(redirect))
        .route("/ui/", get(index))
        .route("/ui/{*file}", get(file))
}

/// (name under `/ui/`, content type, bytes).
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../ui/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../../ui/icon.svg"),
    ),
    ("app.js", JS, include_str!("../../ui/app.js")),
    ("api.js", JS, include_str!("../../ui/api.js")),
    ("dom.js", JS, include_str!("../../ui/dom.js")),
    ("cluster.js", JS, include_str!("../../ui/cluster.js")),
    ("jobs.js", JS, include_str!("../../ui/jobs.js")),
    ("job.js", JS, include_str!("../../ui/job.js")),
    ("gpus.js", JS, include_str!("../../ui/gpus.js")),
    ("policies.js", JS, include_str!("../../ui/policies.js")),
    ("graph.js", JS, include_str!("../../ui/graph.js")),
    ("vectors.js", JS, include_str!("../../ui/vectors.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

/// The pages fetch the API of the node that served them; nothing else.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

async fn redirect() -> Redirect {
    Redirect::permanent("/ui/")
}

async fn index(h: HeaderMap) -> Response {
    serve("index.html", &h)
}

async fn file(Path(name): Path<String>, h: HeaderMap) -> Response {
    serve(&name, &h)
}

/// A strong validator per file: the files change only with the binary,
/// and `no-cache` makes the browser ask (cheaply, with a 304) so a node
/// upgraded in place never serves a stale mix of old and new modules.
fn etags() -> &'static Vec<String> {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        FILES
            .iter()
            .map(|(_, _, body)| format!("\"{:016x}\"", fnv1a(body.as_bytes())))
            .collect()
    })
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn serve(name: &str, req: &HeaderMap) -> Response {
    let Some(i) = FILES.iter().position(|(n, _, _)| *n == name) else {
        return ApiError::NotFound(format!("no console file {name:?}; the console is at /ui/"))
            .into_response();
    };
    let (_, ctype, body) = FILES[i];
    let tag = &etags()[i];
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, ctype)], body).into_response()
    };
    let h = resp.headers_mut();
    let pairs = [
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (k, v) in pairs {
        h.insert(k, HeaderValue::from_static(v));
    }
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_the_ui_dir_is_served_and_every_served_file_exists() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("ui dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut served: Vec<String> = FILES.iter().map(|(n, _, _)| n.to_string()).collect();
        served.sort();
        assert_eq!(on_disk, served, "add new ui/ files to FILES in http/ui.rs");
    }

    #[test]
    fn no_inline_script_or_style_in_the_pages() {
        // The CSP forbids them; a page that relied on one would break.
        for (name, _, body) in FILES {
            if name.ends_with(".html") {
                assert!(!body.contains("<script>"), "{name}: inline script");
                assert!(!body.contains(" style="), "{name}: inline style");
                for handler in ["onclick=", "onload=", "onsubmit=", "onerror=", "oninput="] {
                    assert!(!body.contains(handler), "{name}: inline {handler}");
                }
            }
            if name.ends_with(".js") {
                assert!(
                    !body.contains("innerHTML"),
                    "{name}: build DOM nodes, not HTML strings"
                );
                assert!(
                    !body.contains("localStorage"),
                    "{name}: the token lives in sessionStorage"
                );
                assert!(!body.contains("document.cookie"), "{name}: no cookies");
            }
        }
    }

    #[test]
    fn headers_lock_the_pages_down_and_unknown_files_are_404() {
        let r = serve("app.js", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h[header::CONTENT_TYPE], JS);
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert!(h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("csp")
            .contains("default-src 'self'"));
        let tag = h[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(serve("app.js", &again).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            serve("../Cargo.toml", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
