//! What the benchmark ran on: CPU, memory, kernel, the data directory's
//! filesystem and how long an fsync takes there.

use serde_json::{json, Value};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub fn kernel() -> String {
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        return s.trim().to_string();
    }
    std::process::Command::new("uname")
        .arg("-r")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn mem_total_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn distro() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
}

/// The 1, 5 and 15 minute load averages: the machine is shared, so this
/// says how busy it was besides the benchmark.
pub fn loadavg() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// The short form repeated on every result line.
pub fn brief() -> Value {
    json!({"cpus": cpus(), "os": std::env::consts::OS, "kernel": kernel(),
           "security": security()})
}

/// The full description for the conditions line.
pub fn full() -> Value {
    json!({
        "cpus": cpus(),
        "cpu_model": cpu_model(),
        "mem_total_mib": mem_total_mib(),
        "os": std::env::consts::OS,
        "distro": distro(),
        "kernel": kernel(),
        "arch": std::env::consts::ARCH,
        "loadavg": loadavg(),
        "security": security(),
    })
}

/// How the cluster ran: `tls+tokens` (as users run it) or `insecure`.
fn security() -> &'static str {
    if crate::access::insecure() {
        "insecure"
    } else {
        "tls+tokens"
    }
}

/// The mount holding `path`: device, mount point, filesystem type, and
/// whether the block device says it is rotational.
pub fn filesystem_of(path: &Path) -> Value {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut best: Option<(PathBuf, String, String, String)> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let mnt = PathBuf::from(f[1].replace("\\040", " "));
        if !path.starts_with(&mnt) {
            continue;
        }
        let deeper = best
            .as_ref()
            .is_none_or(|(b, ..)| mnt.components().count() >= b.components().count());
        if deeper {
            best = Some((mnt, f[0].to_string(), f[2].to_string(), f[3].to_string()));
        }
    }
    match best {
        None => json!({"path": path, "fstype": null}),
        Some((mnt, dev, fstype, opts)) => {
            json!({"path": path, "mount": mnt, "device": dev, "fstype": fstype, "options": opts,
                   "rotational": rotational(&dev)})
        }
    }
}

fn rotational(dev: &str) -> Option<bool> {
    let name = Path::new(dev).file_name()?.to_str()?;
    let base = Path::new("/sys/class/block").join(name);
    // A partition has no queue/ of its own: its parent device does.
    [
        base.join("queue/rotational"),
        base.join("../queue/rotational"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .map(|s| s.trim() == "1")
}

/// Times `n` rounds of "append 4 KiB, fsync" in `dir`: the floor under every
/// durable log append (group commit) on this disk.
pub fn fsync_probe(dir: &Path, n: usize) -> Value {
    let path = dir.join("fsync-probe");
    let run = || -> std::io::Result<Vec<f64>> {
        let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
        let block = vec![0x5au8; 4096];
        let mut ms = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            f.write_all(&block)?;
            f.sync_all()?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(ms)
    };
    let result = run();
    let _ = std::fs::remove_file(&path);
    match result {
        Err(e) => json!({"error": e.to_string()}),
        Ok(mut ms) => {
            ms.sort_by(f64::total_cmp);
            let pick =
                |q: f64| round3(ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1]);
            let mean = ms.iter().sum::<f64>() / ms.len() as f64;
            json!({"rounds": n, "bytes": 4096, "p50_ms": pick(0.5), "p99_ms": pick(0.99),
                   "mean_ms": round3(mean), "max_ms": round3(ms[ms.len() - 1])})
        }
    }
}

/// CPU time (user + system, seconds) a process has used so far, from
/// `/proc/<pid>/stat` ("self" for this process); `None` off Linux or once
/// the process is gone.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are
    // plain. utime and stime are fields 14 and 15, in USER_HZ (100/s).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
