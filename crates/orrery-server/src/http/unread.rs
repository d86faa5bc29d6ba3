//! `Connection: close` on HTTP/1 answers given before the request's body
//! was read (a 401/403/415 from the guard, a handler's early refusal).
//! hyper cannot reuse such a connection and closes it after the answer,
//! but without saying so: a client that sends its next request on it (as
//! connection pools do) loses that request to a reset. Found by
//! schemathesis (`EOF occurred in violation of protocol`).

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Version};
use axum::response::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// A request body that records when it has been read to its end.
struct Watched {
    inner: Body,
    done: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done.store(true, Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps an HTTP/1 request's body; the flag says whether it was read to
/// its end (`None`: nothing to watch, no body or HTTP/2).
pub fn watch(req: Request) -> (Request, Option<Arc<AtomicBool>>) {
    if req.version() >= Version::HTTP_2 || req.body().is_end_stream() {
        return (req, None);
    }
    let done = Arc::new(AtomicBool::new(false));
    let (parts, inner) = req.into_parts();
    let body = Body::new(Watched {
        inner,
        done: done.clone(),
    });
    (Request::from_parts(parts, body), Some(done))
}

/// Marks `resp` as the connection's last when the body was left unread.
pub fn close_if_unread(resp: &mut Response, done: Option<Arc<AtomicBool>>) {
    if done.is_some_and(|d| !d.load(Ordering::Relaxed)) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}
