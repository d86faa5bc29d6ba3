//! Orrery's certificates and TLS set-up, in the layout CockroachDB's
//! `cockroach cert` made familiar: a cluster CA (`ca.crt`, `ca.key`) that
//! signs one certificate per node (`node.crt`, `node.key`), and a node's
//! certificate directory holding `ca.crt`, `node.crt` and `node.key`.
//!
//! Nothing here is cryptography of our own: rcgen makes the certificates,
//! rustls (with the *ring* provider) speaks TLS.

mod create;
mod incoming;
mod load;

pub use create::{create_ca, create_node, CreatedFiles};
pub use incoming::{accept_tls, TlsIncoming};
pub use load::{client_config_with_ca, NodeCerts};
pub use tokio_rustls::server::TlsStream;

use std::sync::Arc;

/// The crypto provider every configuration here uses. Named explicitly:
/// when two providers end up compiled in, rustls has no process default.
// `ring` rather than rustls' default aws-lc-rs: it builds without cmake
// and a C toolchain's extras. Newer rustls marks it deprecated only for
// lacking post-quantum key exchange (docs/security.md, "Libraries").
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("certificate: {0}")]
    Cert(String),
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
}

impl TlsError {
    fn file(path: &std::path::Path, e: impl std::fmt::Display) -> TlsError {
        TlsError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}
