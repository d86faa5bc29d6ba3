//! Overload protection on the client port: a cap on open connections, on
//! requests in flight (with a short, bounded wait for a place) and on how
//! long a request may take, so that a node offered more than it can serve
//! answers the excess quickly (503 `overloaded` + `Retry-After`) and keeps
//! serving the rest, with memory bounded by the caps instead of by the
//! offered load.
//!
//! Three separate budgets, because their holders live differently:
//! - **connections**: an idle keep-alive connection costs buffers and a
//!   task; over the cap a new connection is closed as soon as it is
//!   accepted (the client retries another node, as on a refused connect);
//! - **requests**: ordinary requests in flight, held from the request's
//!   arrival until its handler answered. A request that finds the budget
//!   full waits in a FIFO queue of at most `--max-queued` for at most
//!   `--queue-wait-ms` (absorbs bursts), then is shed: queueing longer
//!   would only make every served request slower;
//! - **streams**: long-lived answers (`/v1/events/stream`, followed logs,
//!   gRPC `Jobs/Logs`), held until the stream ends. Streams have a budget
//!   of their own so that followers cannot starve short requests; a full
//!   stream budget refuses at once (a place frees when a stream ends,
//!   which waiting a few hundred ms would rarely see).
//!
//! Every non-stream request must be answered within `--request-deadline-ms`
//! (or the caller's shorter gRPC `grpc-timeout`), see [`guard`].
//!
//! Probes (`/healthz`, `/readyz`, `/metrics`) bypass the limits: an
//! overloaded node must still say it is alive.

mod guard;
mod listener;

pub use guard::guard;
pub use listener::{Capped, Counted};

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The caps (`--max-connections`, `--max-requests`, `--max-streams`,
/// `--max-queued`, `--queue-wait-ms`, `--request-deadline-ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_requests: usize,
    pub max_streams: usize,
    /// Requests that may wait for a place in the request budget at once;
    /// more are shed at once. 0: no queue, a full budget sheds at once.
    pub max_queued: usize,
    /// How long a request may wait for a place before it is shed.
    pub queue_wait: Duration,
    /// How long a request (not a stream) may take until its answer starts.
    pub request_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            max_requests: 512,
            max_streams: 256,
            max_queued: 512,
            queue_wait: Duration::from_millis(250),
            request_deadline: Duration::from_secs(30),
        }
    }
}

/// The budgets of one node, and what they refused.
pub struct Budgets {
    pub limits: Limits,
    /// The deadline of admin requests (membership, cluster version,
    /// backup): the services bound those by `admin_timeout` themselves,
    /// which is longer than the ordinary request deadline.
    admin_deadline: Duration,
    connections: Arc<Semaphore>,
    requests: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    queued: AtomicUsize,
    pub connections_refused: AtomicU64,
    pub requests_shed: AtomicU64,
    pub queue_shed: AtomicU64,
    pub timeouts: AtomicU64,
}

impl Budgets {
    pub fn new(limits: Limits, admin_timeout: Duration) -> Arc<Self> {
        Arc::new(Budgets {
            limits,
            // A margin so that the service's own, clearer error wins.
            admin_deadline: limits
                .request_deadline
                .max(admin_timeout + Duration::from_secs(5)),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            requests: Arc::new(Semaphore::new(limits.max_requests)),
            streams: Arc::new(Semaphore::new(limits.max_streams)),
            queued: AtomicUsize::new(0),
            connections_refused: AtomicU64::new(0),
            requests_shed: AtomicU64::new(0),
            queue_shed: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
        })
    }

    pub fn connections_open(&self) -> usize {
        self.limits.max_connections - self.connections.available_permits()
    }

    pub fn requests_in_flight(&self) -> usize {
        self.limits.max_requests - self.requests.available_permits()
    }

    pub fn requests_queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Prometheus text for the budgets.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let rows: [(&str, &str, &str, u64); 7] = [
            ("orrery_connections_open", "gauge", "Open client connections.", self.connections_open() as u64),
            ("orrery_connections_refused_total", "counter", "Client connections closed at once because --max-connections were open.", self.connections_refused.load(Ordering::Relaxed)),
            ("orrery_requests_in_flight", "gauge", "Requests being handled (streams not included).", self.requests_in_flight() as u64),
            ("orrery_requests_queued", "gauge", "Requests waiting for a place under --max-requests.", self.requests_queued() as u64),
            ("orrery_requests_shed_total", "counter", "Requests answered 503 overloaded (budget full, queue full or waited --queue-wait-ms; --max-streams full).", self.requests_shed.load(Ordering::Relaxed)),
            ("orrery_requests_queue_shed_total", "counter", "Of the shed requests, those that waited --queue-wait-ms in the queue first.", self.queue_shed.load(Ordering::Relaxed)),
            ("orrery_requests_timed_out_total", "counter", "Requests answered 503 timeout because they passed --request-deadline-ms or their grpc-timeout.", self.timeouts.load(Ordering::Relaxed)),
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
    /// Membership, cluster version, backup: bounded by the services'
    /// `admin_timeout`, so their deadline is that (plus a margin).
    Admin,
    Request,
}

fn classify(path: &str, query: Option<&str>) -> Class {
    match path {
        "/healthz" | "/readyz" | "/metrics" => Class::Probe,
        "/v1/events/stream" | "/orrery.v1.Jobs/Logs" => Class::Stream,
        p if p.starts_with("/v1/cluster")
            || p.starts_with("/v1/backup")
            || p.starts_with("/orrery.v1.Cluster/") =>
        {
            Class::Admin
        }
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
        assert_eq!(classify("/v1/cluster/members", None), Class::Admin);
        assert_eq!(classify("/v1/backup", None), Class::Admin);
        assert_eq!(classify("/orrery.v1.Cluster/AddMember", None), Class::Admin);
    }
}
