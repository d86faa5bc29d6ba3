//! The node processes the harness starts, and proof that it controls them.
//!
//! Every `orrery serve` of a test is spawned through [`Procs`], in a process
//! group of its own, and its [`Child`] is kept until it is reaped: a kill or
//! a pause acts on exactly that process (and its group), never on a wrapper
//! around it. After each start the harness checks, from `/proc`, that the
//! process it holds is the one listening on the node's client address
//! ([`verify_node`], in [`crate::procfs`]); at the end of a test it kills and reaps whatever it
//! still holds and scans `/proc` for any `orrery` whose data directory lies
//! under the test's directory ([`Procs::cleanup`]), so no node outlives it.

use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use crate::procfs::{listeners_on, scan_nodes, verify_node, ProcInfo};

/// The harness lost control of (or never had) a node process, or lacks
/// something it needs: the test's faults are not what its history says, so
/// the run ends as *could not run* (exit 2), never as a verdict.
#[derive(Debug, thiserror::Error)]
#[error("could not run: {0}")]
pub struct CouldNotRun(pub String);

/// True when `e` (or any error it wraps) is a [`CouldNotRun`].
pub fn is_could_not_run(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<CouldNotRun>())
}

/// Overrides where libfaketime is looked for (a path to the `.so`).
pub const LIBFAKETIME_ENV: &str = "ORRERY_JEPSEN_LIBFAKETIME";

/// Debian's multiarch triple for this build's architecture.
fn multiarch_triple() -> Option<&'static str> {
    Some(match std::env::consts::ARCH {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "x86" => "i386-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "riscv64" => "riscv64-linux-gnu",
        "powerpc64" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        _ => return None,
    })
}

/// Finds libfaketime (`libfaketime.so.1`, what the `faketime` wrapper
/// preloads) in the standard library directories, or [`LIBFAKETIME_ENV`].
pub fn find_libfaketime() -> Result<PathBuf, CouldNotRun> {
    if let Some(p) = std::env::var_os(LIBFAKETIME_ENV) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(CouldNotRun(format!(
            "{LIBFAKETIME_ENV}={} is not a file",
            p.display()
        )));
    }
    let mut dirs = Vec::new();
    if let Some(t) = multiarch_triple() {
        dirs.push(format!("/usr/lib/{t}/faketime"));
        dirs.push(format!("/usr/local/lib/{t}/faketime"));
    }
    for d in [
        "/usr/lib/faketime",
        "/usr/lib64/faketime",
        "/usr/local/lib/faketime",
    ] {
        dirs.push(d.to_string());
    }
    // Other multiarch directories of this architecture (e.g. a triple this
    // table does not know).
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(std::env::consts::ARCH) && name.contains("-linux-") {
                dirs.push(format!("/usr/lib/{name}/faketime"));
            }
        }
    }
    for d in &dirs {
        let p = Path::new(d).join("libfaketime.so.1");
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(CouldNotRun(format!(
        "libfaketime.so.1 not found (looked in {}); the clock nemesis needs it: \
         apt-get install faketime, or set {LIBFAKETIME_ENV}",
        dirs.join(", ")
    )))
}

/// `LD_PRELOAD` with `lib` appended, as the `faketime` wrapper builds it.
pub fn preload_value(lib: &Path, existing: Option<&std::ffi::OsStr>) -> std::ffi::OsString {
    let mut v = std::ffi::OsString::new();
    if let Some(e) = existing.filter(|e| !e.is_empty()) {
        v.push(e);
        v.push(":");
    }
    v.push(lib);
    v
}

/// `FAKETIME` for a clock offset: what the harness used to pass as
/// `faketime -f ±Ns`, which the wrapper hands to libfaketime verbatim.
/// libfaketime reads a leading `+`/`-` as an offset from the real clock,
/// in seconds (no `m`/`h`/`d`/`y` multiplier), counted from process start.
pub fn faketime_spec(offset_s: i64) -> String {
    format!("{offset_s:+}s")
}

fn signal(pid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions; a pid that is
    // already gone yields ESRCH, which the callers treat as done.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Signals the node's process group (it leads one of its own) and the node.
fn signal_node(pid: i32, sig: i32) {
    if pid > 0 {
        signal(-pid, sig);
        signal(pid, sig);
    }
}

/// libfaketime, preloaded without the wrapper, makes a semaphore and a
/// shared-memory object named after the pid and removes them at exit; a
/// node killed with SIGKILL never exits cleanly, so the harness removes
/// them once the process is reaped.
fn remove_faketime_shm(pid: i32) {
    let _ = std::fs::remove_file(format!("/dev/shm/faketime_shm_{pid}"));
    let _ = std::fs::remove_file(format!("/dev/shm/sem.faketime_sem_{pid}"));
}

struct Tracked {
    child: Child,
    faketime: bool,
}

#[derive(Default)]
struct Inner {
    /// Set by [`Procs::cleanup`]: nothing is started afterwards, so a
    /// nemesis task still running cannot start a node behind the cleanup.
    closed: bool,
    children: BTreeMap<i32, Tracked>,
}

/// Every node process a test started and has not reaped yet.
pub struct Procs {
    orrery: PathBuf,
    root: PathBuf,
    inner: Mutex<Inner>,
}

/// What [`Procs::cleanup`] found.
#[derive(Debug, Default)]
pub struct Cleanup {
    /// Tracked processes it killed (none after a normal end, whose stops
    /// already reaped every node).
    pub killed: Vec<i32>,
    /// Nodes of this test still running after every tracked one was
    /// reaped: processes the harness had lost track of (killed now).
    pub leftovers: Vec<ProcInfo>,
    /// Leftovers still there after being killed.
    pub remaining: Vec<ProcInfo>,
}

impl Cleanup {
    pub fn processes_cleaned(&self) -> bool {
        self.remaining.is_empty()
    }
}

impl Procs {
    /// `orrery`: the binary nodes run; `root`: the test's directory (node
    /// data directories lie under it). Both should be absolute.
    pub fn new(orrery: PathBuf, root: PathBuf) -> Procs {
        Procs {
            orrery,
            root,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn orrery(&self) -> &Path {
        &self.orrery
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spawns `cmd` in a process group of its own (so a group signal
    /// reaches it and nothing else), and tracks it; returns its pid.
    pub fn spawn(&self, cmd: &mut Command, faketime: bool) -> Result<i32> {
        let mut inner = self.lock();
        if inner.closed {
            bail!(CouldNotRun(
                "the test is being cleaned up; no node may start".into()
            ));
        }
        let child = cmd.process_group(0).spawn()?;
        let pid = child.id() as i32;
        inner.children.insert(pid, Tracked { child, faketime });
        Ok(pid)
    }

    /// The exit status of `pid` if it has exited (it is then reaped and
    /// forgotten).
    pub fn try_wait(&self, pid: i32) -> Option<ExitStatus> {
        let mut inner = self.lock();
        let st = inner.children.get_mut(&pid)?.child.try_wait().ok()??;
        if let Some(t) = inner.children.remove(&pid) {
            if t.faketime {
                remove_faketime_shm(pid);
            }
        }
        Some(st)
    }

    /// Sends `sig` to the node `pid` and its process group.
    pub fn signal(&self, pid: i32, sig: i32) {
        if self.lock().children.contains_key(&pid) {
            signal_node(pid, sig);
        }
    }

    fn kill_locked(inner: &mut Inner, pid: i32) -> bool {
        let Some(mut t) = inner.children.remove(&pid) else {
            return false;
        };
        // The group first, while the unreaped leader still reserves its id.
        signal_node(pid, libc::SIGKILL);
        let _ = t.child.wait();
        if t.faketime {
            remove_faketime_shm(pid);
        }
        true
    }

    /// `kill -9` of the node `pid` and its group, and reaps it.
    pub fn kill(&self, pid: i32) {
        Self::kill_locked(&mut self.lock(), pid);
    }

    /// Kills and reaps every tracked node; returns their pids.
    pub fn kill_all(&self) -> Vec<i32> {
        let mut inner = self.lock();
        let pids: Vec<i32> = inner.children.keys().copied().collect();
        pids.into_iter()
            .filter(|&p| Self::kill_locked(&mut inner, p))
            .collect()
    }

    /// SIGTERM to every node (paused ones resumed first), then SIGKILL to
    /// those still running after `grace`; all reaped.
    pub async fn terminate_all(&self, grace: Duration) {
        for &pid in self.lock().children.keys() {
            signal_node(pid, libc::SIGCONT);
            signal_node(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            let pids: Vec<i32> = self.lock().children.keys().copied().collect();
            let running: Vec<i32> = pids
                .into_iter()
                .filter(|&p| self.try_wait(p).is_none())
                .collect();
            if running.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                for p in running {
                    self.kill(p);
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Makes sure no node of this test is left: refuses further starts,
    /// kills and reaps every tracked node, then kills any other `orrery`
    /// whose data directory is under the test's directory (and reports it:
    /// after the harness's own stops there should be none). Idempotent.
    pub fn cleanup(&self) -> Cleanup {
        self.lock().closed = true;
        let killed = self.kill_all();
        let leftovers = scan_nodes(&self.orrery, &self.root);
        for p in &leftovers {
            signal_node(p.pid, libc::SIGKILL);
        }
        // Not our children: their parents (or init) reap them; wait until
        // they are gone or zombies.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut remaining = leftovers.clone();
        while !remaining.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            remaining = scan_nodes(&self.orrery, &self.root);
        }
        for p in &leftovers {
            remove_faketime_shm(p.pid);
        }
        Cleanup {
            killed,
            leftovers,
            remaining,
        }
    }
}

/// Runs [`Procs::cleanup`] when dropped: a panic unwinding through the
/// harness still kills every node.
pub struct CleanupOnDrop<'a>(pub &'a Procs);

impl Drop for CleanupOnDrop<'_> {
    fn drop(&mut self) {
        self.0.cleanup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faketime_environment() {
        assert_eq!(faketime_spec(30), "+30s");
        assert_eq!(faketime_spec(-12), "-12s");
        let lib = Path::new("/usr/lib/x/faketime/libfaketime.so.1");
        assert_eq!(
            preload_value(lib, None),
            "/usr/lib/x/faketime/libfaketime.so.1"
        );
        assert_eq!(
            preload_value(lib, Some(std::ffi::OsStr::new("/a.so"))),
            "/a.so:/usr/lib/x/faketime/libfaketime.so.1"
        );
    }
}
