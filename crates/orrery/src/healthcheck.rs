//! `orrery healthcheck`: exit 0 when the local node answers `GET /readyz`
//! with 200, else 1.
//!
//! Container images have no curl (debian:bookworm-slim), and a health check
//! must speak TLS with the cluster CA, so the node binary carries its own:
//! the image's `HEALTHCHECK` runs it with the same `ORRERY_*` variables as
//! `orrery serve`, and it finds the port and the CA from them.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;

#[derive(clap::Args)]
pub struct HealthcheckArgs {
    /// The node's client address; only its port is used unless --host is given
    /// [default: 127.0.0.1:17001].
    #[arg(long, env = "ORRERY_LISTEN")]
    listen: Option<String>,
    /// Host to connect to [default: 127.0.0.1].
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Name the node's certificate must carry (its SANs) [default: localhost].
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// The node's certificates directory; its ca.crt verifies the node.
    #[arg(long, env = "ORRERY_CERTS_DIR")]
    certs_dir: Option<PathBuf>,
    /// Plain HTTP, for an `--insecure` node.
    #[arg(long, env = "ORRERY_INSECURE", num_args = 0..=1, default_missing_value = "true")]
    insecure: Option<bool>,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    /// The path to ask for: /readyz (a placement leader is known) or /healthz
    /// (the process answers).
    #[arg(long, default_value = "/readyz")]
    path: String,
}

/// Runs the check; `Ok` only on a 200 answer.
pub async fn run(args: HealthcheckArgs) -> Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms);
    match tokio::time::timeout(timeout, check(&args)).await {
        Ok(r) => r,
        Err(_) => bail!("no answer within {} ms", args.timeout_ms),
    }
}

async fn check(args: &HealthcheckArgs) -> Result<()> {
    let listen = args.listen.as_deref().unwrap_or("127.0.0.1:17001");
    let port = listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .with_context(|| format!("no port in listen address {listen:?}"))?;
    let addr = format!("{}:{port}", args.host);
    let tcp = TcpStream::connect(&addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        args.path, args.server_name
    );
    let answer = if args.insecure.unwrap_or(false) {
        exchange(tcp, &request).await?
    } else {
        let Some(dir) = &args.certs_dir else {
            bail!("give --certs-dir (its ca.crt verifies the node) or --insecure")
        };
        let mut cfg = orrery_tls::client_config_with_ca(&dir.join("ca.crt"))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(args.server_name.clone())
            .with_context(|| format!("server name {:?}", args.server_name))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {addr}"))?;
        exchange(tls, &request).await?
    };
    let status = answer
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    if status != "200" {
        bail!("{} answered {status:?}: {}", args.path, body.trim());
    }
    println!("{}", body.trim());
    Ok(())
}

async fn exchange<S>(mut s: S, request: &str) -> Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    // The server closes after the answer (Connection: close); a TLS peer
    // that closes without close_notify still gave us the whole answer.
    if let Err(e) = s.read_to_end(&mut buf).await {
        if buf.is_empty() {
            return Err(e.into());
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
