//! How the suite reaches its nodes: TLS with the test's own cluster CA and
//! the root token `cluster init` printed (the default), or plain HTTP for
//! the one `--insecure` smoke run.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

#[derive(Clone)]
pub struct Access {
    /// The cluster CA's certificate; `None`: `--insecure` nodes.
    ca_cert: Option<PathBuf>,
    token: Arc<OnceLock<String>>,
}

impl Access {
    pub fn secure(ca_cert: PathBuf) -> Access {
        Access {
            ca_cert: Some(ca_cert),
            token: Arc::default(),
        }
    }

    pub fn insecure() -> Access {
        Access {
            ca_cert: None,
            token: Arc::default(),
        }
    }

    pub fn is_secure(&self) -> bool {
        self.ca_cert.is_some()
    }

    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// `https://HOST:PORT` or `http://HOST:PORT` of a client address.
    pub fn base(&self, addr: &str) -> String {
        let scheme = if self.is_secure() { "https" } else { "http" };
        format!("{scheme}://{addr}")
    }

    pub fn set_token(&self, token: &str) {
        let _ = self.token.set(token.to_string());
    }

    pub fn token(&self) -> Option<&str> {
        self.token.get().map(String::as_str)
    }

    /// `b` trusting the cluster CA (only it).
    pub fn client(&self, b: reqwest::ClientBuilder) -> Result<reqwest::Client> {
        let b = match &self.ca_cert {
            Some(ca) => {
                let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
                b.tls_built_in_root_certs(false)
                    .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            }
            None => b,
        };
        Ok(b.build()?)
    }

    /// `rb` with the root token, once there is one.
    pub fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.token() {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }
}
