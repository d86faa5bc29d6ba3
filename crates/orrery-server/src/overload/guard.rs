//! The client port's outermost middleware: draws a request from its
//! budget (waiting briefly in a bounded queue when it is full) and bounds
//! how long the request may take.
//!
//! Deadlines, and which wins: a request's answer must start within
//! `--request-deadline-ms` of its arrival (30 s; admin requests: the
//! services' admin timeout plus 5 s), or within the caller's gRPC
//! `grpc-timeout` when that is shorter. Inside, the services bound each
//! wait for a leader, quorum or commit by `--request-timeout-ms` (5 s) and
//! answer their own 503 `unavailable` / `outcome_unknown`; the node refuses
//! to start with a request deadline shorter than that, so the services'
//! more precise error comes first and this layer catches the rest (a slow
//! upload, a slow apply, a chain of waits). The shorter bound always wins.
//! Passing the deadline drops the handler's future (its work stops at its
//! next await; a write already proposed may still commit) and answers 503
//! `timeout` + `Retry-After` (gRPC `DEADLINE_EXCEEDED`). Streams are exempt.

use super::{classify, Budgets, Class};
use crate::api::ApiError;
use crate::http::unread;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

pub async fn guard(State(b): State<Arc<Budgets>>, req: Request, next: Next) -> Response {
    let arrived = Instant::now();
    let class = classify(req.uri().path(), req.uri().query());
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let ctx = Refusal {
        grpc,
        unread_body: req.version() < Version::HTTP_2 && !http_body::Body::is_end_stream(req.body()),
    };
    match class {
        Class::Probe => next.run(req).await,
        Class::Stream => {
            let Ok(permit) = b.streams.clone().try_acquire_owned() else {
                b.requests_shed.fetch_add(1, Ordering::Relaxed);
                let what = format!("{} streams", b.limits.max_streams);
                return ctx.answer(overloaded(&what));
            };
            // A stream holds its permit for as long as its body lives.
            next.run(req).await.map(|body| {
                Body::new(Held {
                    body,
                    _permit: permit,
                })
            })
        }
        Class::Admin | Class::Request => {
            let server = if class == Class::Admin {
                b.admin_deadline
            } else {
                b.limits.request_deadline
            };
            let client = if grpc {
                grpc_timeout(req.headers())
            } else {
                None
            };
            let limit = client.map_or(server, |c| c.min(server));
            let deadline = arrived + limit;
            let Some(_permit) = admit(&b, deadline).await else {
                let what = format!("{} requests", b.limits.max_requests);
                return ctx.answer(overloaded(&what));
            };
            let (req, body_read) = unread::watch(req);
            match tokio::time::timeout_at(deadline.into(), next.run(req)).await {
                Ok(resp) => resp,
                Err(_) => {
                    b.timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(?limit, "request passed its deadline");
                    let by = if client.is_some_and(|c| c < server) {
                        "the request's grpc-timeout"
                    } else {
                        "this node's request deadline"
                    };
                    let e = ApiError::Timeout(format!(
                        "not answered within {} ms ({by}); a write may still be applied: \
                         re-read before retrying one that is not idempotent",
                        limit.as_millis()
                    ));
                    let mut resp = Refusal {
                        grpc,
                        unread_body: false,
                    }
                    .answer(e);
                    unread::close_if_unread(&mut resp, body_read);
                    resp
                }
            }
        }
    }
}

fn overloaded(what: &str) -> ApiError {
    ApiError::Overloaded(format!(
        "this node is handling {what} already; retry shortly or on another node"
    ))
}

/// How to answer a request refused by this layer.
struct Refusal {
    grpc: bool,
    /// An HTTP/1 request whose body is left unread: hyper cannot reuse its
    /// connection, so the answer says it closes (see `http/unread.rs`).
    unread_body: bool,
}

impl Refusal {
    fn answer(&self, e: ApiError) -> Response {
        if self.grpc {
            return tonic::Status::from(e).into_http::<Body>();
        }
        let mut resp = e.into_response();
        if self.unread_body {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// A place in the request budget: at once, or after waiting in the FIFO
/// queue for at most `--queue-wait-ms` (and not past the request's
/// deadline). `None`: shed (counted).
async fn admit(b: &Arc<Budgets>, deadline: Instant) -> Option<OwnedSemaphorePermit> {
    if let Ok(p) = b.requests.clone().try_acquire_owned() {
        return Some(p);
    }
    let l = &b.limits;
    let queued = Queued::enter(b, l.max_queued);
    let Some(_queued) = queued else {
        b.requests_shed.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    let until = deadline.min(Instant::now() + l.queue_wait);
    // Tokio's semaphore is fair: waiters get places in arrival order.
    match tokio::time::timeout_at(until.into(), b.requests.clone().acquire_owned()).await {
        Ok(Ok(p)) => Some(p),
        // Waited too long (or the semaphore closed, which it never is).
        _ => {
            b.requests_shed.fetch_add(1, Ordering::Relaxed);
            b.queue_shed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// A place in the wait queue, given back when dropped — also when the
/// client goes away while its request waits (hyper drops the future).
struct Queued<'a>(&'a Budgets);

impl<'a> Queued<'a> {
    fn enter(b: &'a Budgets, max: usize) -> Option<Self> {
        let before = b.queued.fetch_add(1, Ordering::AcqRel);
        let q = Queued(b);
        (before < max).then_some(q)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The caller's gRPC deadline (`grpc-timeout: <1-8 digits><H|M|S|m|u|n>`).
/// A malformed value is ignored (the node's own deadline still applies).
fn grpc_timeout(h: &HeaderMap) -> Option<Duration> {
    let v = h.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overload::Limits;

    #[test]
    fn grpc_timeouts_are_parsed() {
        let t = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(t("500m"), Some(Duration::from_millis(500)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("10u"), Some(Duration::from_micros(10)));
        assert_eq!(t("m"), None);
        assert_eq!(t("123456789S"), None);
        assert_eq!(t("5x"), None);
        assert_eq!(t(""), None);
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    fn budgets(max_requests: usize, max_queued: usize, wait_ms: u64) -> Arc<Budgets> {
        Budgets::new(
            Limits {
                max_requests,
                max_queued,
                queue_wait: Duration::from_millis(wait_ms),
                ..Limits::default()
            },
            Duration::from_secs(60),
        )
    }

    #[tokio::test]
    async fn a_waiter_gets_a_place_freed_within_the_wait() {
        let b = budgets(1, 4, 2_000);
        let far = Instant::now() + Duration::from_secs(30);
        let first = admit(&b, far).await.expect("a free place");
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { admit(&b2, far).await.is_some() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(b.requests_queued(), 1);
        drop(first);
        assert!(waiter.await.unwrap(), "the waiter was shed");
        assert_eq!(b.requests_queued(), 0);
        assert_eq!(b.requests_shed.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn waiters_are_shed_after_the_wait_and_beyond_the_queue() {
        let b = budgets(1, 2, 200);
        let far = Instant::now() + Duration::from_secs(30);
        let _held = admit(&b, far).await.expect("a free place");
        let started = Instant::now();
        let waits: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { admit(&b, far).await.is_some() })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The queue is full: the next is shed at once.
        assert!(admit(&b, far).await.is_none());
        assert!(started.elapsed() < Duration::from_millis(150));
        for w in waits {
            assert!(!w.await.unwrap(), "a waiter got a place none freed");
        }
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(b.requests_shed.load(Ordering::Relaxed), 3);
        assert_eq!(b.queue_shed.load(Ordering::Relaxed), 2);
        assert_eq!(b.requests_queued(), 0);
    }

    #[tokio::test]
    async fn no_queue_sheds_at_once_and_a_near_deadline_cuts_the_wait() {
        let b = budgets(1, 0, 5_000);
        let far = Instant::now() + Duration::from_secs(30);
        let _held = admit(&b, far).await.expect("a free place");
        assert!(admit(&b, far).await.is_none());
        let b = budgets(1, 4, 5_000);
        let _held = admit(&b, far).await.expect("a free place");
        let started = Instant::now();
        assert!(admit(&b, started + Duration::from_millis(100))
            .await
            .is_none());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
