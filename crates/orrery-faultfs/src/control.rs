//! The control socket: one command per connection, one line each way.
//!
//! | command        | effect |
//! |----------------|--------|
//! | `ping`         | `ok` once the mount is up |
//! | `stats`        | `ok dirty_files=N held_bytes=N pending_entries=N fail_fsync=B` |
//! | `fail-fsync on`/`off` | every `fsync`/`fdatasync`/directory fsync fails with EIO (or no longer does) |
//! | `crash`        | power cut: everything not synced is undone; the mount answers EIO to everything, is detached and the process exits |
//! | `crash-tear`   | the same, but half of the latest unsynced write stays (a torn write) |

use crate::state::State;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Serves the control socket at `path` until a power cut; calls `after_cut`
/// (which detaches the mount and exits) once the reply is sent.
pub fn serve(
    path: &Path,
    state: Arc<Mutex<State>>,
    after_cut: impl Fn() + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::thread::Builder::new()
        .name("faultfs-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_err() {
                    continue;
                }
                let (reply, cut) = handle(line.trim(), &state);
                let _ = conn.write_all(format!("{reply}\n").as_bytes());
                drop(conn);
                if cut {
                    after_cut();
                    return;
                }
            }
        })
}

/// Runs one command; the flag says the power was cut.
pub fn handle(cmd: &str, state: &Mutex<State>) -> (String, bool) {
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    match cmd {
        "ping" => ("ok".into(), false),
        "stats" => (format!("ok {}", st.stats()), false),
        "fail-fsync on" | "fail-fsync off" => {
            st.fail_fsync = cmd.ends_with("on");
            tracing::warn!(fail_fsync = st.fail_fsync, "fsync failure mode changed");
            ("ok".into(), false)
        }
        "crash" | "crash-tear" => {
            let r = st.power_cut(cmd == "crash-tear");
            tracing::warn!(?r, "power cut: unsynced writes and entries dropped");
            let torn = r.torn_kept.map_or("none".to_string(), |n| n.to_string());
            (
                format!(
                    "ok files_reverted={} bytes_dropped={} entries_undone={} torn_kept={torn}",
                    r.files_reverted, r.bytes_dropped, r.entries_undone
                ),
                true,
            )
        }
        other => (format!("error unknown command {other:?}"), false),
    }
}

/// Sends one command and returns the reply line (an `error ...` reply is
/// an `Err`).
pub fn send(path: &Path, cmd: &str) -> io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    let line = line.trim().to_string();
    if line.starts_with("ok") {
        Ok(line)
    } else {
        Err(io::Error::other(format!("faultfs {cmd:?}: {line:?}")))
    }
}
