//! The private network namespace the suite runs in, and the iptables rules
//! that cut, bridge and degrade links inside it.
//!
//! Every node binds its own loopback address (127.0.0.1 … 127.0.0.N) and
//! originates its peer connections from it (`--peer-source`), so a rule
//! naming two addresses cuts exactly the link between two nodes. Clients
//! originate from [`CLIENT_IP`], which no rule names: like Jepsen's control
//! node, the test's clients always reach every node.

use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// Environment variable set on the re-executed child inside `unshare -n`.
pub const NETNS_ENV: &str = "ORRERY_JEPSEN_NETNS";

/// Source address of the test's clients.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 100);

/// Address of node `id` (1-based).
pub fn node_ip(id: u64) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, id as u8)
}

/// Set by the parent to its own namespace id, so the re-executed child can
/// verify that `unshare` really gave it a different one.
const PARENT_NETNS_ENV: &str = "ORRERY_JEPSEN_PARENT_NETNS";

fn ns_id(pid: &str) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

/// Interfaces of this process's network namespace.
fn interfaces() -> Vec<String> {
    std::fs::read_to_string("/proc/self/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|s| s.trim().to_string())
        .collect()
}

/// True when this process runs in a network namespace of its own: a
/// different one than init's or than the parent that re-executed us, or
/// (when neither can be read) one whose only interface is loopback, which is
/// what `unshare -n` creates.
pub fn in_private_netns() -> bool {
    let me = ns_id("self");
    if let (Some(me), Some(parent)) = (&me, std::env::var_os(PARENT_NETNS_ENV)) {
        return me.as_os_str() != parent;
    }
    if let (Some(me), Some(init)) = (&me, ns_id("1")) {
        return *me != init;
    }
    let ifs = interfaces();
    ifs == ["lo"]
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub const HOW_TO_RUN: &str = "run it as root (it re-executes itself under `unshare -n`), \
or inside a namespace of your own: `sudo unshare -n -- orrery-jepsen test …`";

/// What the caller should do about the namespace.
pub enum Netns {
    /// Already inside a private namespace: go on.
    Ready,
    /// The child ran the test inside a fresh namespace; exit with this code.
    ChildExited(i32),
}

/// Makes sure the test runs in a private network namespace: either we are
/// in one (loopback is brought up), or we re-execute ourselves under
/// `unshare -n`. Refuses otherwise: partitions are iptables rules, and the
/// suite must never touch the host's firewall.
pub fn ensure_private_netns() -> Result<Netns> {
    if in_private_netns() {
        if !is_root() {
            bail!("iptables needs root inside the namespace; {HOW_TO_RUN}");
        }
        run("ip", &["link", "set", "lo", "up"])?;
        check_iptables()?;
        return Ok(Netns::Ready);
    }
    if std::env::var_os(NETNS_ENV).is_some() {
        bail!("{NETNS_ENV} is set but this is the host's network namespace; refusing to touch its firewall. {HOW_TO_RUN}");
    }
    if !is_root() {
        bail!("the suite must run inside a private network namespace; {HOW_TO_RUN}");
    }
    let exe = std::env::current_exe().context("locating our own executable")?;
    eprintln!("orrery-jepsen: entering a private network namespace (unshare -n)");
    let mut cmd = Command::new("unshare");
    cmd.arg("-n")
        .arg("--")
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(NETNS_ENV, "1")
        .env(PARENT_NETNS_ENV, ns_id("self").unwrap_or_default());
    // SAFETY: prctl(2) is async-signal-safe and touches only the child. If
    // this process dies without forwarding a signal (SIGKILL), the child
    // (unshare execs the harness, which keeps the setting) still gets
    // SIGTERM and stops its nodes.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("running unshare (util-linux)")?;
    // The child runs the test and owns the nodes: this process forwards
    // SIGINT/SIGTERM/SIGHUP to it (it cleans up and exits) instead of dying
    // before it, and exits with its code.
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores into an atomic (async-signal-safe).
        unsafe {
            libc::signal(sig, remember_signal as *const () as libc::sighandler_t);
        }
    }
    let status = loop {
        let sig = PENDING_SIGNAL.swap(0, Ordering::SeqCst);
        if sig != 0 {
            // SAFETY: kill(2) of our own child; a pid already exited is harmless.
            unsafe {
                libc::kill(child.id() as i32, sig);
            }
        }
        match child.try_wait().context("waiting for the test")? {
            Some(st) => break st,
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    Ok(Netns::ChildExited(status.code().unwrap_or(2)))
}

/// A signal received while the test runs in the child, to forward to it.
static PENDING_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn remember_signal(sig: libc::c_int) {
    PENDING_SIGNAL.store(sig, Ordering::SeqCst);
}

fn check_iptables() -> Result<()> {
    match Command::new("iptables").arg("-L").arg("-n").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => bail!(
            "iptables -L failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => bail!("iptables not found ({e}); install it: apt-get install iptables"),
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn drop_rule(from: Ipv4Addr, to: Ipv4Addr, loss: Option<f64>) -> Result<()> {
    let (f, t) = (from.to_string(), to.to_string());
    let mut args = vec!["-A", "INPUT", "-s", &f, "-d", &t];
    let p;
    if let Some(prob) = loss {
        p = format!("{prob:.3}");
        args.extend(["-m", "statistic", "--mode", "random", "--probability", &p]);
    }
    args.extend(["-j", "DROP"]);
    run("iptables", &args)
}

/// Cuts every link between a node of `a` and a node of `b`, both ways.
pub fn cut(a: &[u64], b: &[u64]) -> Result<()> {
    for &x in a {
        for &y in b {
            drop_rule(node_ip(x), node_ip(y), None)?;
            drop_rule(node_ip(y), node_ip(x), None)?;
        }
    }
    Ok(())
}

/// Drops packets between every pair of `nodes` with probability `p`.
pub fn lossy(nodes: &[u64], p: f64) -> Result<()> {
    for &x in nodes {
        for &y in nodes {
            if x != y {
                drop_rule(node_ip(x), node_ip(y), Some(p))?;
            }
        }
    }
    Ok(())
}

/// Removes every rule: all links whole again.
pub fn heal() -> Result<()> {
    run("iptables", &["-F", "INPUT"])
}
