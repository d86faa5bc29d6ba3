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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_signs_node_certificates_that_load_and_serve() {
        let d = tempfile::tempdir().expect("tempdir");
        let (ca, node) = (d.path().join("ca"), d.path().join("n1"));
        create_ca(&ca, false).expect("create-ca");
        // The key is for its owner only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(ca.join("ca.key"))
                .expect("ca.key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let hosts = ["127.0.0.1".to_string(), "node1.example".to_string()];
        create_node(&ca, &node, &hosts, false).expect("create-node");
        let certs = NodeCerts::load(&node).expect("load");
        certs.server_config(true).expect("peer port config");
        certs.server_config(false).expect("client port config");
        certs.client_config().expect("client config");
        client_config_with_ca(&ca.join("ca.crt")).expect("client trusting the CA");
        // Existing files are kept unless asked.
        let again = create_node(&ca, &node, &hosts, false).expect_err("overwrote");
        assert!(again.to_string().contains("--overwrite"), "{again}");
        create_node(&ca, &node, &hosts, true).expect("--overwrite");
        assert!(create_node(&ca, &node, &[], true).is_err(), "no hosts");
        assert!(
            format!("{certs:?}").contains(".."),
            "Debug must not print the key"
        );
    }
}
