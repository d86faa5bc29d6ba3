//! Overload protection on the client port: a cap on open connections and
//! on requests in flight, so that a node offered more than it can serve
//! answers the excess at once (503 `overloaded` + `Retry-After`) and keeps
//! serving the rest, with memory bounded by the caps instead of by the
//! offered load.
//!
//! Three separate budgets, because their holders live differently:
//! - **connections**: an idle keep-alive connection costs buffers and a
//!   task; over the cap a new connection is closed as soon as it is
//!   accepted (the client retries another node, as on a refused connect);
//! - **requests**: ordinary requests in flight, held from the request's
//!   arrival until its handler answered;
//! - **streams**: long-lived answers (`/v1/events/stream`, followed logs,
//!   gRPC `Jobs/Logs`), held until the stream ends. Streams have a budget
//!   of their own so that followers cannot starve short requests.
//!
//! Probes (`/healthz`, `/readyz`, `/metrics`) bypass the limits: an
//! overloaded node must still say it is alive.

use crate::api::ApiError;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The caps (`--max-connections`, `--max-requests`, `--max-streams`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_requests: usize,
    pub max_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            max_requests: 512,
            max_streams: 256,
        }
    }
}

/// The budgets of one node, and what they refused.
pub struct Budgets {
    pub limits: Limits,
    connections: Arc<Semaphore>,
    requests: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    pub connections_refused: AtomicU64,
    pub requests_shed: AtomicU64,
}

impl Budgets {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Budgets {
            limits,
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            requests: Arc::new(Semaphore::new(limits.max_requests)),
            streams: Arc::new(Semaphore::new(limits.max_streams)),
            connections_refused: AtomicU64::new(0),
            requests_shed: AtomicU64::new(0),
        })
    }

    pub fn connections_open(&self) -> usize {
        self.limits.max_connections - self.connections.available_permits()
    }

    pub fn requests_in_flight(&self) -> usize {
        self.limits.max_requests - self.requests.available_permits()
    }

    /// Prometheus text for the budgets.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let rows: [(&str, &str, &str, u64); 4] = [
            ("orrery_connections_open", "gauge", "Open client connections.", self.connections_open() as u64),
            ("orrery_connections_refused_total", "counter", "Client connections closed at once because --max-connections were open.", self.connections_refused.load(Ordering::Relaxed)),
            ("orrery_requests_in_flight", "gauge", "Requests being handled (streams not included).", self.requests_in_flight() as u64),
            ("orrery_requests_shed_total", "counter", "Requests answered 503 overloaded because --max-requests or --max-streams were in flight.", self.requests_shed.load(Ordering::Relaxed)),
        ];
        for (name, kind, help, v) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }
}

/// What budget a request draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Probe,
    Stream,
    Request,
}

fn classify(path: &str, query: Option<&str>) -> Class {
    match path {
        "/healthz" | "/readyz" | "/metrics" => Class::Probe,
        "/v1/events/stream" | "/orrery.v1.Jobs/Logs" => Class::Stream,
        p if p.starts_with("/v1/jobs/") && p.ends_with("/logs") => {
            let follows = query.is_some_and(|q| q.split('&').any(|kv| kv == "follow=true"));
            if follows {
                Class::Stream
            } else {
                Class::Request
            }
        }
        _ => Class::Request,
    }
}

/// The middleware: draws from the request's budget, or answers 503 at
/// once (in the caller's protocol: gRPC clients get UNAVAILABLE).
pub async fn guard(State(b): State<Arc<Budgets>>, req: Request, next: Next) -> Response {
    let class = classify(req.uri().path(), req.uri().query());
    let budget = match class {
        Class::Probe => return next.run(req).await,
        Class::Stream => &b.streams,
        Class::Request => &b.requests,
    };
    let Ok(permit) = budget.clone().try_acquire_owned() else {
        b.requests_shed.fetch_add(1, Ordering::Relaxed);
        let what = if class == Class::Stream {
            format!("{} streams", b.limits.max_streams)
        } else {
            format!("{} requests", b.limits.max_requests)
        };
        let e = ApiError::Overloaded(format!(
            "this node is handling {what} already; retry shortly or on another node"
        ));
        let grpc = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        return if grpc {
            tonic::Status::from(e).into_http::<Body>()
        } else {
            e.into_response()
        };
    };
    let resp = next.run(req).await;
    match class {
        // A stream holds its permit for as long as its body lives.
        Class::Stream => resp.map(|body| {
            Body::new(Held {
                body,
                _permit: permit,
            })
        }),
        _ => resp,
    }
}

/// A response body that keeps a permit until it is dropped.
struct Held {
    body: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for Held {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A listener that keeps at most `max_connections` open: over the cap a
/// connection is closed as soon as it is accepted.
pub struct Capped<L> {
    pub inner: L,
    pub budgets: Arc<Budgets>,
}

impl<L> Listener for Capped<L>
where
    L: Listener,
    L::Io: Unpin,
{
    type Io = Counted<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, addr) = self.inner.accept().await;
            match self.budgets.connections.clone().try_acquire_owned() {
                Ok(permit) => {
                    return (
                        Counted {
                            io,
                            _permit: permit,
                        },
                        addr,
                    )
                }
                Err(_) => {
                    self.budgets
                        .connections_refused
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("connection refused: --max-connections reached");
                    drop(io);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that holds its place under the cap until it closes.
pub struct Counted<T> {
    pub io: T,
    _permit: OwnedSemaphorePermit,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified() {
        assert_eq!(classify("/healthz", None), Class::Probe);
        assert_eq!(classify("/metrics", None), Class::Probe);
        assert_eq!(classify("/v1/events/stream", None), Class::Stream);
        assert_eq!(classify("/orrery.v1.Jobs/Logs", None), Class::Stream);
        assert_eq!(
            classify("/v1/jobs/j1/logs", Some("follow=true")),
            Class::Stream
        );
        assert_eq!(
            classify("/v1/jobs/j1/logs", Some("attempt=1")),
            Class::Request
        );
        assert_eq!(classify("/v1/jobs/j1/logs", None), Class::Request);
        assert_eq!(classify("/v1/kv/a", Some("follow=true")), Class::Request);
        assert_eq!(classify("/orrery.v1.Kv/Put", None), Class::Request);
    }
}
