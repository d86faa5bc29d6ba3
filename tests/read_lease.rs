//! Leader leases for linearizable reads (orrery_raft::lease), on real
//! 3-node clusters: reads ride the lease instead of a heartbeat round each,
//! `--read-lease-ms 0` turns that off, a lease at least as long as the
//! election timeout is refused, and a leader paused (SIGSTOP) past its
//! lease, deposed meanwhile, serves no stale read when it resumes.
//!
//! The negative control of the lease's safety is in the fault suite
//! (scripts/jepsen.sh, `register-lease-partition`): with a lease far longer
//! than the followers' (`ORRERY_TEST_UNSAFE_READ_LEASE=1
//! ORRERY_READ_LEASE_MS=60000`) a leader cut off in a minority keeps
//! answering reads, and the register checker reports them stale. The pause
//! scenario here did not show the stale read even with that lease (tried
//! 3 times): on resuming, the old leader handles the new leader's queued
//! messages and steps down before the read reaches its Raft core; it stays
//! as a regression test of the paused-process case.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

fn leader_of(status: &Value, name: &str) -> Option<u64> {
    status["groups"]
        .as_array()?
        .iter()
        .find(|g| g["name"] == name)?["leader"]
        .as_u64()
}

/// Node `i`'s linearizable reads confirmed under its lease and by rounds.
async fn read_paths(c: &Cluster, i: usize) -> (u64, u64) {
    let text = c
        .http_json()
        .get(c.nodes[i].url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let count = |path: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "orrery_linearizable_reads_total{{path=\"{path}\"}} "
                ))
            })
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("node {} has no {path} read counter", i + 1))
    };
    (count("lease"), count("round"))
}

/// The index of the node leading shard-0, once every group has caught up.
async fn shard_leader(c: &Cluster) -> usize {
    let status = c.wait_caught_up(0, Duration::from_secs(30)).await;
    leader_of(&status, "shard-0").expect("shard-0 has a leader") as usize - 1
}

/// 50 sequential linearizable reads through the leader of their group.
async fn read_50(c: &Cluster, leader: usize) -> (u64, u64) {
    let before = read_paths(c, leader).await;
    for _ in 0..50 {
        let (s, b) = c.get(leader, "lease-k", "linearizable").await;
        assert_eq!((s, b.as_str()), (200, "v1"));
    }
    let after = read_paths(c, leader).await;
    (after.0 - before.0, after.1 - before.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_reads_ride_the_lease_and_can_be_made_to_do_rounds() {
    let c = Cluster::formed(3, 1, &[]).await;
    c.put_ok(0, "lease-k", "v1").await;
    let leader = shard_leader(&c).await;
    let (lease, rounds) = read_50(&c, leader).await;
    // Each lease lasts 400 ms; 50 reads take far less than 10 of them.
    assert!(
        lease >= 40 && rounds <= 10,
        "50 reads: {lease} under the lease, {rounds} by rounds"
    );
    drop(c);

    let c = Cluster::formed(3, 1, &["--read-lease-ms", "0"]).await;
    c.put_ok(0, "lease-k", "v1").await;
    let leader = shard_leader(&c).await;
    let (lease, rounds) = read_50(&c, leader).await;
    assert_eq!(lease, 0, "leases are off");
    assert!(rounds >= 50, "every read does a round: {rounds}");
}

#[test]
fn a_lease_as_long_as_the_election_timeout_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(orrery_bin())
        .args(["serve", "--id", "1", "--insecure", "--data-dir"])
        .arg(dir.path())
        .args(["--election-timeout-ms", "800", "--read-lease-ms", "800"])
        .env_remove("ORRERY_TEST_UNSAFE_READ_LEASE")
        .output()
        .expect("run orrery");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--read-lease-ms (800) must be below --election-timeout-ms (800)"),
        "{err}"
    );
}

fn signal(c: &Cluster, i: usize, sig: &str) {
    let pid = c.nodes[i].pid().expect("node running");
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success(), "kill {sig} {pid}");
}

/// Pauses shard-0's leader, writes through the others once they elected a
/// new one, resumes the old leader with a linearizable read already waiting
/// on its socket, and returns what that read answered.
async fn read_on_a_resumed_deposed_leader(extra: &[&str], env: &[(&str, &str)]) -> (u16, String) {
    let mut c = Cluster::start_with_env(3, extra, env).await;
    c.form(1);
    c.put_ok(0, "lease-k", "before").await;
    let old = shard_leader(&c).await;
    // A read on the leader takes a lease.
    let (s, b) = c.get(old, "lease-k", "linearizable").await;
    assert_eq!((s, b.as_str()), (200, "before"));
    signal(&c, old, "-STOP");
    let other = (old + 1) % 3;
    let start = Instant::now();
    loop {
        let r = c.put(other, "lease-k", "after").await;
        if r.status() == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no write without the paused leader: {}",
            r.text().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = c.nodes[old].url("/v1/kv/lease-k?consistency=linearizable");
    let http = c.http_json();
    let read = tokio::spawn(async move {
        let r = http.get(url).send().await.expect("GET");
        let s = r.status().as_u16();
        (s, r.text().await.unwrap_or_default())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&c, old, "-CONT");
    let got = read.await.expect("read task");
    c.kill9(old);
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_reads_nothing_stale_when_it_resumes() {
    let (s, b) = read_on_a_resumed_deposed_leader(&[], &[]).await;
    // Unavailable (503) would be allowed; the old value never.
    assert!(
        (s, b.as_str()) == (200, "after") || s == 503,
        "the resumed leader answered {s} {b:?}"
    );
}
