//! Prometheus text metrics: request counts and latency histograms per
//! route, plus Raft gauges per group rendered from openraft's metrics.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS_MS: [f64; 12] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS_MS.len()],
    count: u64,
    sum_ms: f64,
}

#[derive(Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    latency: Histogram,
}

#[derive(Default)]
pub struct Metrics {
    /// By method, then route: looked up with borrowed strings, so that
    /// counting a request allocates nothing once its route was seen.
    routes: Mutex<BTreeMap<String, BTreeMap<String, RouteStats>>>,
    forwarded: AtomicU64,
    /// Queue writes that went through a group-commit lane, and the log
    /// entries they became.
    group_commit_requests: AtomicU64,
    group_commit_entries: AtomicU64,
    /// Raft RPCs this node received from leaders, and the log entries the
    /// AppendEntries among them carried: RPCs per entry is what the peer
    /// transport pays for each replicated entry.
    peer_append_rpcs: AtomicU64,
    peer_append_entries: AtomicU64,
    peer_vote_rpcs: AtomicU64,
    peer_snapshot_rpcs: AtomicU64,
    peer_snapshot_bytes: AtomicU64,
    /// Replica moves this node started as placement leader, and the moves
    /// under way when it last looked.
    rebalance_moves: AtomicU64,
    rebalance_moving: AtomicU64,
    /// Shard groups this node dropped after a move took it out of them.
    groups_dropped: AtomicU64,
    reads_by_lease: AtomicU64,
    reads_by_round: AtomicU64,
    rotation: AtomicUsize,
    request_ids: AtomicU64,
}

impl Metrics {
    /// Counts a request to `route` (shown as `"{method} {route}"`).
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let by_route = match routes.get_mut(method) {
            Some(r) => r,
            None => routes.entry(method.to_owned()).or_default(),
        };
        let stats = match by_route.get_mut(route) {
            Some(s) => s,
            None => by_route.entry(route.to_owned()).or_default(),
        };
        *stats.by_status.entry(status).or_default() += 1;
        let h = &mut stats.latency;
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            if ms <= *b {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum_ms += ms;
    }

    pub fn inc_forwarded(&self) {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
    }

    pub fn group_committed(&self, requests: usize, entries: usize) {
        self.group_commit_requests
            .fetch_add(requests as u64, Ordering::Relaxed);
        self.group_commit_entries
            .fetch_add(entries as u64, Ordering::Relaxed);
    }

    /// An AppendEntries RPC received, carrying `entries` log entries.
    pub fn peer_append(&self, entries: usize) {
        self.peer_append_rpcs.fetch_add(1, Ordering::Relaxed);
        self.peer_append_entries
            .fetch_add(entries as u64, Ordering::Relaxed);
    }

    pub fn rebalance_moved(&self) {
        self.rebalance_moves.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rebalance_moving(&self, n: usize) {
        self.rebalance_moving.store(n as u64, Ordering::Relaxed);
    }

    pub fn group_dropped(&self) {
        self.groups_dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn linearizable_read(&self, path: orrery_raft::ReadPath) {
        match path {
            orrery_raft::ReadPath::Lease => &self.reads_by_lease,
            orrery_raft::ReadPath::Round => &self.reads_by_round,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub fn peer_vote(&self) {
        self.peer_vote_rpcs.fetch_add(1, Ordering::Relaxed);
    }

    /// An InstallSnapshot RPC (one chunk of `bytes` snapshot bytes)
    /// received: what moving a replica here sent, when it went by
    /// snapshot.
    pub fn peer_snapshot(&self, bytes: usize) {
        self.peer_snapshot_rpcs.fetch_add(1, Ordering::Relaxed);
        self.peer_snapshot_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A process-unique id for a client request, for logs and `x-request-id`.
    pub fn next_request_id(&self) -> u64 {
        self.request_ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A counter used to rotate between replicas when forwarding.
    pub fn next_rotation(&self) -> usize {
        self.rotation.fetch_add(1, Ordering::Relaxed)
    }

    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP orrery_requests_total Requests served, by route and HTTP status."
        );
        let _ = writeln!(out, "# TYPE orrery_requests_total counter");
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let all = || {
            routes.iter().flat_map(|(method, by_route)| {
                by_route
                    .iter()
                    .map(move |(route, s)| (format!("{method} {route}"), s))
            })
        };
        for (route, s) in all() {
            for (status, n) in &s.by_status {
                let _ = writeln!(
                    out,
                    "orrery_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP orrery_request_duration_ms Request latency in milliseconds."
        );
        let _ = writeln!(out, "# TYPE orrery_request_duration_ms histogram");
        for (route, s) in all() {
            let h = &s.latency;
            for (i, b) in BUCKETS_MS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "orrery_request_duration_ms_bucket{{route=\"{route}\",le=\"{b}\"}} {}",
                    h.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "orrery_request_duration_ms_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "orrery_request_duration_ms_sum{{route=\"{route}\"}} {}",
                h.sum_ms
            );
            let _ = writeln!(
                out,
                "orrery_request_duration_ms_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        counter(
            out,
            "orrery_forwarded_total",
            "Requests forwarded to another node.",
            &self.forwarded,
        );
        counter(
            out,
            "orrery_group_commit_requests_total",
            "Queue writes proposed through a group-commit lane.",
            &self.group_commit_requests,
        );
        counter(
            out,
            "orrery_group_commit_entries_total",
            "Log entries those writes were merged into.",
            &self.group_commit_entries,
        );
        counter(
            out,
            "orrery_peer_append_entries_rpcs_total",
            "AppendEntries RPCs received from leaders (heartbeats included).",
            &self.peer_append_rpcs,
        );
        counter(
            out,
            "orrery_peer_appended_entries_total",
            "Log entries those AppendEntries RPCs carried.",
            &self.peer_append_entries,
        );
        counter(
            out,
            "orrery_peer_vote_rpcs_total",
            "Vote RPCs received.",
            &self.peer_vote_rpcs,
        );
        counter(
            out,
            "orrery_peer_install_snapshot_rpcs_total",
            "InstallSnapshot RPCs (snapshot chunks) received.",
            &self.peer_snapshot_rpcs,
        );
        counter(
            out,
            "orrery_peer_install_snapshot_bytes_total",
            "Snapshot bytes received in InstallSnapshot RPCs (replicas moved or caught up here by snapshot).",
            &self.peer_snapshot_bytes,
        );
        counter(
            out,
            "orrery_rebalance_moves_total",
            "Replica moves this node started as placement leader.",
            &self.rebalance_moves,
        );
        counter(
            out,
            "orrery_groups_dropped_total",
            "Shard groups this node dropped (Raft stopped, log and snapshot deleted) after leaving them.",
            &self.groups_dropped,
        );
        let _ = writeln!(
            out,
            "# HELP orrery_linearizable_reads_total Linearizable reads this node confirmed as a group's leader, by how: under its leader lease or by a read-index round.\n# TYPE orrery_linearizable_reads_total counter\norrery_linearizable_reads_total{{path=\"lease\"}} {}\norrery_linearizable_reads_total{{path=\"round\"}} {}",
            self.reads_by_lease.load(Ordering::Relaxed),
            self.reads_by_round.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP orrery_rebalance_moves_in_flight Replica moves under way when the placement leader last looked (0 on other nodes).\n# TYPE orrery_rebalance_moves_in_flight gauge\norrery_rebalance_moves_in_flight {}",
            self.rebalance_moving.load(Ordering::Relaxed)
        );
    }
}

/// One unlabelled Prometheus counter, with its HELP and TYPE lines.
fn counter(out: &mut String, name: &str, help: &str, v: &AtomicU64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.observe("PUT", "/v1/kv/{key}", 200, Duration::from_millis(3));
        m.observe("PUT", "/v1/kv/{key}", 200, Duration::from_millis(30));
        m.observe("PUT", "/v1/kv/{key}", 413, Duration::from_millis(1));
        m.observe("GET", "/v1/kv/{key}", 200, Duration::from_millis(1));
        let mut s = String::new();
        m.render(&mut s);
        let r = "route=\"PUT /v1/kv/{key}\"";
        assert!(s.contains(&format!("orrery_requests_total{{{r},status=\"200\"}} 2\n")));
        assert!(s.contains(&format!("orrery_requests_total{{{r},status=\"413\"}} 1\n")));
        assert!(s.contains("orrery_requests_total{route=\"GET /v1/kv/{key}\",status=\"200\"} 1\n"));
        assert!(s.contains(&format!(
            "orrery_request_duration_ms_bucket{{{r},le=\"0.5\"}} 0\n"
        )));
        assert!(s.contains(&format!(
            "orrery_request_duration_ms_bucket{{{r},le=\"1\"}} 1\n"
        )));
        assert!(s.contains(&format!(
            "orrery_request_duration_ms_bucket{{{r},le=\"5\"}} 2\n"
        )));
        assert!(s.contains(&format!(
            "orrery_request_duration_ms_bucket{{{r},le=\"50\"}} 3\n"
        )));
        assert!(s.contains(&format!("orrery_request_duration_ms_count{{{r}}} 3\n")));
        m.group_committed(5, 2);
        let mut s = String::new();
        m.render(&mut s);
        assert!(s.contains("\norrery_group_commit_requests_total 5\n"));
        assert!(s.contains("# TYPE orrery_group_commit_entries_total counter\norrery_group_commit_entries_total 2\n"));
    }
}
