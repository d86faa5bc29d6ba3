//! A node's certificate directory, loaded, and the rustls configurations
//! built from it.

use crate::{provider, TlsError};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// `ca.crt`, `node.crt` and `node.key` of one node, as PEM (what tonic's
/// client TLS takes) and parsed (what rustls takes).
pub struct NodeCerts {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for NodeCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.write_str("NodeCerts { .. }")
    }
}

impl Clone for NodeCerts {
    fn clone(&self) -> Self {
        NodeCerts {
            ca_pem: self.ca_pem.clone(),
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
            roots: self.roots.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

fn roots_from(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem) {
        let c = c.map_err(|e| TlsError::file(path, e))?;
        roots.add(c).map_err(|e| TlsError::file(path, e))?;
    }
    if roots.is_empty() {
        return Err(TlsError::file(path, "holds no certificate"));
    }
    Ok(roots)
}

impl NodeCerts {
    /// Loads `dir/ca.crt`, `dir/node.crt` and `dir/node.key`.
    pub fn load(dir: &Path) -> Result<NodeCerts, TlsError> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|e| TlsError::file(&p, e))
        };
        let (ca_pem, cert_pem, key_pem) = (read("ca.crt")?, read("node.crt")?, read("node.key")?);
        let roots = roots_from(&dir.join("ca.crt"), &ca_pem)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::file(&dir.join("node.crt"), e))?;
        if chain.is_empty() {
            return Err(TlsError::file(
                &dir.join("node.crt"),
                "holds no certificate",
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| TlsError::file(&dir.join("node.key"), e))?;
        Ok(NodeCerts {
            ca_pem,
            cert_pem,
            key_pem,
            roots: Arc::new(roots),
            chain,
            key,
        })
    }

    /// The server side of a port. `client_certs_required`: the peer port
    /// (mutual TLS: only holders of a certificate from the cluster CA get
    /// past the handshake). Otherwise (the client port) a certificate from
    /// the cluster CA is optional and, when shown, names a node; any other
    /// certificate is refused.
    pub fn server_config(
        &self,
        client_certs_required: bool,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let b = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider());
        let b = if client_certs_required {
            b
        } else {
            b.allow_unauthenticated()
        };
        let verifier = b.build().map_err(|e| TlsError::Cert(e.to_string()))?;
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        // gRPC needs HTTP/2; REST clients may speak either.
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// A client configuration that trusts the cluster CA and shows this
    /// node's certificate (a node calling another node's client port).
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        Ok(ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?)
    }
}

/// A client configuration that trusts only the CA certificate(s) in
/// `ca_file` (clients of a cluster: orreryctl, tests, benchmarks).
pub fn client_config_with_ca(ca_file: &Path) -> Result<ClientConfig, TlsError> {
    let pem = std::fs::read(ca_file).map_err(|e| TlsError::file(ca_file, e))?;
    let roots = roots_from(ca_file, &pem)?;
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
