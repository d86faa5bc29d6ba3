//! A full disk under one node: that node stops acknowledging writes (503
//! `storage_unavailable`, never a 500), says why on `/readyz` and
//! `/healthz`, and stops with a clear message; the others serve on; once
//! space returns it restarts and catches up, and no acknowledged write is
//! lost. Its data directory is a small tmpfs, so the test needs root (CI
//! runs as root).

mod common;

use common::load::Load;
use common::{http_client, Cluster};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Writes zeros until the filesystem is full.
fn fill(file: &Path) -> u64 {
    let mut f = std::fs::File::create(file).expect("filler");
    let chunk = vec![0u8; 1 << 20];
    let mut n = 0u64;
    while f.write_all(&chunk).and_then(|_| f.sync_all()).is_ok() {
        n += chunk.len() as u64;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_stops_its_node_and_loses_nothing() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs the suite as root)");
        return;
    }
    let mut c = Cluster::start(2, &[]).await;
    let i = c.plan_node(&[], None, &[]);
    let dir = c.nodes[i].data_dir.clone();
    std::fs::create_dir_all(&dir).expect("data dir");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&dir)
        .status()
        .expect("mount");
    assert!(ok.success(), "mounting a tmpfs failed");
    let _mount = Mount(dir.clone());
    c.restart(i).await;
    c.form(4);

    let http = http_client(&c.ca_cert(), Some(c.token()));
    let bases: Vec<String> = c.nodes.iter().map(|n| n.url("")).collect();
    let load = Load::start(http.clone(), bases, 3);
    load.wait_for_more(50).await;

    let filled = fill(&dir.join("filler"));
    eprintln!("filled node 3's disk with {} MiB", filled >> 20);
    // Within its grace period node 3 says why and refuses writes.
    common::storage::assert_stops_on_storage_failure(&mut c, i, &http).await;
    let log = c.log(i);
    assert!(
        log.contains("storage failed") && log.contains("Free space"),
        "{log}"
    );

    // The other two serve on.
    load.wait_for_more(50).await;

    // Space returns; node 3 restarts and catches up.
    std::fs::remove_file(dir.join("filler")).expect("remove the filler");
    c.restart(i).await;
    load.wait_for_more(20).await;
    let (acked, failed, retries) = load.finish().await;
    assert!(failed.is_empty(), "writes failed: {failed:?}");
    c.wait_caught_up(i, Duration::from_secs(60)).await;
    eprintln!("{} writes acknowledged, {retries} retries", acked.len());
    for (k, v) in &acked {
        assert_eq!(
            c.get(i, k, "stale").await,
            (200, v.clone()),
            "node 3 lacks acknowledged write {k}"
        );
    }
}
