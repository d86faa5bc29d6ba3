//! The client port's listeners: TLS (the default) or plain TCP
//! (`--insecure`), and what each tells the guards about a connection.

use crate::auth::ConnInfo;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// TLS connections whose handshake has finished (orrery_tls::accept_tls).
pub struct TlsListener(pub orrery_tls::TlsIncoming);

impl Listener for TlsListener {
    type Io = orrery_tls::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.0.next().await {
            Some(c) => c,
            // The accept loop ended (it only does when this listener is
            // dropped): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.0.local_addr())
    }
}

/// Plain TCP (`--insecure`).
pub struct PlainListener(pub tokio::net::TcpListener);

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = Listener::accept(&mut self.0).await;
        // Small request/response exchanges (reads, heartbeats) must not
        // wait out Nagle's algorithm against delayed ACKs (~40 ms a round
        // trip). (The TLS accept loop sets it too.)
        let _ = tcp.set_nodelay(true);
        (tcp, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

type Capped<L> = crate::overload::Capped<L>;

impl Connected<IncomingStream<'_, Capped<PlainListener>>> for ConnInfo {
    fn connect_info(_: IncomingStream<'_, Capped<PlainListener>>) -> Self {
        ConnInfo { node_cert: false }
    }
}

impl Connected<IncomingStream<'_, Capped<TlsListener>>> for ConnInfo {
    /// The handshake verified any certificate shown against the cluster CA.
    fn connect_info(stream: IncomingStream<'_, Capped<TlsListener>>) -> Self {
        ConnInfo {
            node_cert: stream
                .io()
                .io
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty()),
        }
    }
}
