//! How the benchmark reaches its cluster: TLS with the cluster's own CA
//! and the root token `cluster init` printed (the default, as a user
//! runs it), or plain HTTP with `--insecure` (to measure what TLS and
//! authentication cost, in a paired run).
//!
//! One process benchmarks one cluster, so this is process-wide: set once
//! before the cluster starts ([`configure`]), the CA path when it is made,
//! the token after `cluster init`.

use anyhow::Result;
use std::path::PathBuf;
use std::sync::OnceLock;

static INSECURE: OnceLock<bool> = OnceLock::new();
static CA_CERT: OnceLock<PathBuf> = OnceLock::new();
static TOKEN: OnceLock<String> = OnceLock::new();

pub fn configure(insecure: bool) {
    let _ = INSECURE.set(insecure);
}

pub fn insecure() -> bool {
    INSECURE.get().copied().unwrap_or(false)
}

pub fn set_ca_cert(p: PathBuf) {
    let _ = CA_CERT.set(p);
}

pub fn set_token(t: &str) {
    let _ = TOKEN.set(t.to_string());
}

/// `https://ADDR`, or `http://ADDR` with `--insecure`.
pub fn base(addr: &str) -> String {
    let scheme = if insecure() { "http" } else { "https" };
    format!("{scheme}://{addr}")
}

/// A reqwest builder trusting the cluster CA and sending the root token
/// (once known).
pub fn http() -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder();
    if let Some(ca) = CA_CERT.get() {
        if let Ok(c) = std::fs::read(ca)
            .map_err(anyhow::Error::from)
            .and_then(|pem| reqwest::Certificate::from_pem(&pem).map_err(anyhow::Error::from))
        {
            b = b.tls_built_in_root_certs(false).add_root_certificate(c);
        }
    }
    if let Some(t) = TOKEN.get() {
        let mut h = reqwest::header::HeaderMap::new();
        if let Ok(v) = format!("Bearer {t}").parse() {
            h.insert(reqwest::header::AUTHORIZATION, v);
        }
        b = b.default_headers(h);
    }
    b
}

/// A plain client ([`http`] with reqwest's defaults).
pub fn http_client() -> Result<reqwest::Client> {
    Ok(http().build()?)
}

/// What `orrery_client::Client::connect_with` needs.
pub fn grpc() -> orrery_client::Options {
    orrery_client::Options {
        ca_cert: CA_CERT.get().cloned(),
        token: TOKEN.get().cloned(),
    }
}
