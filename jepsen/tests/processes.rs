//! The harness against real `orrery` processes: a node the clock nemesis
//! restarted (with libfaketime) really stops when killed, and no node
//! process outlives an `orrery-jepsen test` run.
//!
//! They need root (private network namespace), `unshare`, `iptables`,
//! libfaketime (`apt-get install faketime`) and the `orrery` and
//! `orreryctl` binaries next to `orrery-jepsen` (`cargo build -p orrery`).
//! Without them each test says why and passes, unless
//! `ORRERY_JEPSEN_PROCESS_TESTS=1` asks for them to fail instead.

use orrery_jepsen::db::{client_addr, Db};
use orrery_jepsen::procs::{self, CleanupOnDrop};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Set on the copy of this test binary re-executed inside `unshare -n`.
const IN_NETNS: &str = "ORRERY_JEPSEN_TEST_IN_NETNS";

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_orrery-jepsen"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Why the test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root".into());
    }
    for b in ["orrery", "orreryctl"] {
        if !bin_dir().join(b).exists() {
            return Some(format!(
                "{} missing (cargo build -p orrery)",
                bin_dir().join(b).display()
            ));
        }
    }
    if let Err(e) = procs::find_libfaketime() {
        return Some(e.to_string());
    }
    None
}

/// True when the test should go on; false (after saying why) to skip.
fn prerequisites_met(test: &str) -> bool {
    match missing_prerequisite() {
        None => true,
        Some(why) if std::env::var_os("ORRERY_JEPSEN_PROCESS_TESTS").is_some() => {
            panic!("{test}: {why}")
        }
        Some(why) => {
            eprintln!("{test}: SKIPPED: {why}");
            false
        }
    }
}

/// Runs `test` (this binary's test of that name) in a private network
/// namespace: re-executes this binary under `unshare -n` for it alone.
/// Returns true when already inside (the caller runs the test body).
fn in_private_netns(test: &str) -> bool {
    if std::env::var_os(IN_NETNS).is_some() {
        match orrery_jepsen::net::ensure_private_netns() {
            Ok(orrery_jepsen::net::Netns::Ready) => return true,
            Ok(_) => panic!("re-executed outside a private network namespace"),
            Err(e) => panic!("{e:#}"),
        }
    }
    let exe = std::env::current_exe().expect("test binary path");
    let status = Command::new("unshare")
        .args(["-n", "--"])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(IN_NETNS, "1")
        .status()
        .expect("running unshare");
    assert!(status.success(), "{test} failed in its network namespace");
    false
}

fn port_refuses(addr: &str) -> bool {
    match std::net::TcpStream::connect_timeout(
        &addr.parse().expect("address"),
        Duration::from_secs(2),
    ) {
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

#[test]
fn kill_stops_a_node_the_clock_nemesis_restarted() {
    const NAME: &str = "kill_stops_a_node_the_clock_nemesis_restarted";
    if !prerequisites_met(NAME) || !in_private_netns(NAME) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut db = Db::new(bin_dir(), tmp.path().to_path_buf(), 1, 1, false).expect("db");
    std::fs::create_dir_all(db.dir.join("data")).expect("data dir");
    let procs = db.procs();
    // Kills whatever is left if an assertion fails (the old faketime
    // wrapper left the node running).
    let _cleanup = CleanupOnDrop(&procs);
    let addr = client_addr(1);
    rt.block_on(async {
        db.start(1, None).await.expect("start n1");
        db.restart_with_clock(1, 30)
            .await
            .expect("clock-nemesis restart of n1");
    });
    let pid = db.node(1).expect("n1").pid().expect("n1 running");
    // The pid the harness holds should be the node itself, skewed
    // (asserted last: what the kill does is the point of this test).
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let skewed = environ.split(|&b| b == 0).any(|v| v == b"FAKETIME=+30s");
    assert!(!port_refuses(&addr), "n1 is not serving before the kill");

    db.kill(1).expect("kill n1");

    assert!(
        port_refuses(&addr),
        "{addr} still accepts connections after kill -9 of n1 (pid {pid})"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} of n1 still exists after kill -9"
    );
    let left = procs::scan_nodes(procs.orrery(), procs.root());
    assert!(
        left.is_empty(),
        "orrery processes of this test left: {left:?}"
    );
    let c = procs.cleanup();
    assert!(c.leftovers.is_empty() && c.processes_cleaned(), "{c:?}");
    assert!(skewed, "n1 (pid {pid}) ran without FAKETIME=+30s");
}

#[test]
fn no_node_process_outlives_a_test_run() {
    const NAME: &str = "no_node_process_outlives_a_test_run";
    if !prerequisites_met(NAME) {
        return;
    }
    let store = tempfile::tempdir().expect("tempdir");
    // A short run of clock restarts and kills, healed at the end (the
    // harness enters its own network namespace).
    let out = Command::new(env!("CARGO_BIN_EXE_orrery-jepsen"))
        .args(["test", "--workload", "register", "--nemesis", "clock,kill"])
        .args([
            "--nodes",
            "3",
            "--time-limit",
            "10",
            "--nemesis-interval",
            "2",
        ])
        .args([
            "--recovery",
            "2",
            "--concurrency",
            "4",
            "--rate",
            "20",
            "--seed",
            "3",
        ])
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--store")
        .arg(store.path())
        .output()
        .expect("running orrery-jepsen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    assert!(
        matches!(code, Some(0) | Some(1)),
        "orrery-jepsen test exited {code:?}:\n{stderr}"
    );
    let orrery = bin_dir().join("orrery").canonicalize().expect("orrery");
    let root = store.path().canonicalize().expect("store");
    let left = procs::scan_nodes(&orrery, &root);
    assert!(
        left.is_empty(),
        "orrery processes outlived the run: {left:?}\n{stderr}"
    );
    let results: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store.path().join("latest").join("results.json")).expect("results.json"),
    )
    .expect("results.json parses");
    assert_eq!(results["processes_cleaned"], serde_json::json!(true));
    assert_eq!(results["leftover_processes"], serde_json::json!([]));
    // The schedule really restarted nodes under libfaketime and killed some.
    let history = std::fs::read_to_string(store.path().join("latest").join("history.jsonl"))
        .expect("history");
    assert!(history.contains("\"start-clock\""), "no clock fault ran");
    assert!(history.contains("\"start-kill\""), "no kill fault ran");
    assert!(
        !history.contains("nemesis-error"),
        "nemesis errors:\n{history}"
    );
}
