//! A bare HTTP/2 client over TLS (the `h2` crate), for what the usual
//! clients cannot do: reqwest speaks HTTP/1 only here, and tonic enforces
//! a call's `grpc-timeout` itself (so the server's handling of it cannot
//! be seen). This one sends the headers a test chooses and can hold a
//! stream's body open.

use bytes::Bytes;
use h2::client::SendRequest;
use std::path::Path;
use std::sync::Arc;

/// One HTTP/2 connection to `addr` (TLS, trusting `ca`). Its driver runs
/// in a task of its own until the connection closes.
pub async fn connect(addr: &str, ca: &Path) -> Result<SendRequest<Bytes>, String> {
    let mut cfg = orrery_tls::client_config_with_ca(ca).map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (send, conn) = h2::client::handshake(tls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send.ready().await.map_err(|e| e.to_string())
}

/// The head of a gRPC call to `path` (`/orrery.v1.Kv/Put`), with the
/// bearer `token` and, when given, a `grpc-timeout`.
pub fn grpc_head(
    addr: &str,
    path: &str,
    token: &str,
    grpc_timeout: Option<&str>,
) -> http::Request<()> {
    let mut b = http::Request::post(format!("https://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"));
    if let Some(t) = grpc_timeout {
        b = b.header("grpc-timeout", t);
    }
    b.body(()).expect("a request head")
}

/// A gRPC length-prefixed message.
pub fn grpc_frame(msg: &impl prost::Message) -> Bytes {
    let body = msg.encode_to_vec();
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.into()
}

/// The gRPC status of an answer and its `orrery-error-code`: from the
/// headers (a trailers-only answer, as every error from the server's
/// guards is) or else the trailers.
pub async fn grpc_status(resp: http::Response<h2::RecvStream>) -> (Option<String>, Option<String>) {
    let get = |h: &http::HeaderMap, k: &str| {
        h.get(k)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.to_string())
    };
    let (status, code) = (
        get(resp.headers(), "grpc-status"),
        get(resp.headers(), "orrery-error-code"),
    );
    if status.is_some() {
        return (status, code);
    }
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { break };
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    match body.trailers().await {
        Ok(Some(t)) => (get(&t, "grpc-status"), get(&t, "orrery-error-code")),
        _ => (None, None),
    }
}
