//! `command {argv, env?, cwd?, timeout_s?}`: a child process in its own
//! process group, stdout+stderr into the run's log, the whole group killed
//! on cancel or timeout.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::logs::LogBook;

/// How a command ended.
#[derive(Debug, PartialEq)]
pub(crate) enum CommandEnd {
    /// Exited with this code.
    Exited(i32),
    /// Killed by a signal not sent by us.
    Signalled(i32),
    /// We killed it: the timeout passed.
    TimedOut(f64),
    /// We killed it: cancelled or lease lost.
    Cancelled,
}

pub(crate) struct CommandSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub timeout_s: Option<f64>,
}

impl CommandSpec {
    pub(crate) fn parse(params: &Value) -> Result<CommandSpec, String> {
        super::validate("command", params)?;
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Ok(CommandSpec {
            argv: params["argv"]
                .as_array()
                .map(|a| a.iter().map(s).collect())
                .unwrap_or_default(),
            env: params
                .get("env")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), s(v))).collect())
                .unwrap_or_default(),
            cwd: params
                .get("cwd")
                .and_then(Value::as_str)
                .map(str::to_string),
            timeout_s: params.get("timeout_s").and_then(Value::as_f64),
        })
    }
}

fn kill_group(pgid: u32) {
    // SAFETY: kill(2) with a negative pid signals the process group we
    // created for this child; no memory is involved.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
    }
}

async fn pump<R: tokio::io::AsyncRead + Unpin>(mut r: R, logs: LogBook, job: String, attempt: u64) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => logs.append(&job, attempt, &buf[..n]),
        }
    }
}

/// How the node starts a command (see `command_env`).
pub(crate) struct Launch<'a> {
    /// The child's whole environment (nothing else is inherited).
    pub env: Vec<(OsString, OsString)>,
    /// The working directory unless the job names `cwd`: its scratch dir.
    pub scratch: &'a Path,
    /// Switch to this uid/gid (the node runs as root).
    pub ids: Option<(u32, u32)>,
}

/// Runs the command to its end, with `launch`'s environment, directory and
/// identity.
pub(crate) async fn run(
    spec: CommandSpec,
    launch: Launch<'_>,
    logs: &LogBook,
    job_id: &str,
    attempt: u64,
    mut cancel: watch::Receiver<bool>,
) -> Result<CommandEnd, String> {
    let mut cmd = tokio::process::Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(launch.env)
        .current_dir(launch.scratch)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        // Checked here: spawn would report a missing cwd as a missing program.
        if !std::path::Path::new(cwd).is_dir() {
            return Err(format!(
                "params.cwd '{cwd}' is not a directory on this node"
            ));
        }
        cmd.current_dir(cwd);
    }
    if let Some((uid, gid)) = launch.ids {
        // std drops the supplementary groups (setgroups(0)) before setuid
        // when a uid is given and none are named, so the child keeps none
        // of root's groups; the gid is set first, then the uid.
        cmd.uid(uid).gid(gid);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start '{}': {e}", spec.argv[0]))?;
    let pgid = child.id().ok_or("child exited before its pid was read")?;
    logs.append(
        job_id,
        attempt,
        format!("[orrery] started pid {pgid}\n").as_bytes(),
    );
    let out = child
        .stdout
        .take()
        .map(|r| tokio::spawn(pump(r, logs.clone(), job_id.to_string(), attempt)));
    let err = child
        .stderr
        .take()
        .map(|r| tokio::spawn(pump(r, logs.clone(), job_id.to_string(), attempt)));
    let timeout = async {
        match spec.timeout_s {
            Some(t) => tokio::time::sleep(Duration::from_secs_f64(t)).await,
            None => std::future::pending().await,
        }
    };
    let cancelled = async {
        loop {
            if *cancel.borrow_and_update() {
                return;
            }
            if cancel.changed().await.is_err() {
                // Sender gone: nobody can cancel any more.
                std::future::pending::<()>().await;
            }
        }
    };
    let end = tokio::select! {
        status = child.wait() => {
            let status = status.map_err(|e| format!("waiting for the command: {e}"))?;
            // The leader exited; stragglers in its group would keep our
            // pipes open and outlive the job. (The group id cannot be reused
            // while any member lives; if none does, this finds nothing.)
            kill_group(pgid);
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(c), _) => CommandEnd::Exited(c),
                (None, Some(s)) => CommandEnd::Signalled(s),
                (None, None) => CommandEnd::Signalled(0),
            }
        }
        _ = timeout => {
            kill_group(pgid);
            let _ = child.wait().await;
            CommandEnd::TimedOut(spec.timeout_s.unwrap_or(0.0))
        }
        _ = cancelled => {
            kill_group(pgid);
            let _ = child.wait().await;
            CommandEnd::Cancelled
        }
    };
    for mut h in [out, err].into_iter().flatten() {
        // A process that left our group (setsid) may still hold the pipes;
        // its output is not worth hanging the slot for.
        if tokio::time::timeout(Duration::from_secs(2), &mut h)
            .await
            .is_err()
        {
            h.abort();
        }
    }
    let note = match &end {
        CommandEnd::Exited(c) => format!("[orrery] exited with code {c}\n"),
        CommandEnd::Signalled(s) => format!("[orrery] killed by signal {s}\n"),
        CommandEnd::TimedOut(t) => {
            format!("[orrery] timed out after {t} s; process group killed\n")
        }
        CommandEnd::Cancelled => "[orrery] cancelled; process group killed\n".to_string(),
    };
    logs.append(job_id, attempt, note.as_bytes());
    Ok(end)
}
