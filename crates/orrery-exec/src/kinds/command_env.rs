//! What a `command` child gets from the node: a cleared environment with a
//! documented allowlist, a per-run scratch directory, and (when the node runs
//! as root) another user's identity.
//!
//! The child's environment is exactly (later entries win):
//! `PATH` (the node's, or [`DEFAULT_PATH`]), `LANG` (the node's, or
//! `C.UTF-8`), `HOME` and `TMPDIR` (the scratch dir), then the job's own
//! `env`, then `CUDA_VISIBLE_DEVICES` (the assigned GPUs), `ORRERY_JOB_ID`
//! and `ORRERY_ATTEMPT`, which the job's `env` may not set (refused at
//! validation, [`reserved_env`]).

use std::ffi::{CString, OsString};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `PATH` for the child when the node has none.
pub(crate) const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Why a job's `env` may not set `key` (None: it may).
pub(crate) fn reserved_env(key: &str) -> Option<&'static str> {
    if key == "CUDA_VISIBLE_DEVICES" {
        Some("is set by the node to the job's assigned GPUs")
    } else if key.starts_with("ORRERY_") {
        Some("ORRERY_* variables are set by the node")
    } else {
        None
    }
}

/// The child's whole environment (see the module doc).
pub(crate) fn child_env(
    job_env: &[(String, String)],
    scratch: &Path,
    gpus: &[String],
    job_id: &str,
    attempt: u64,
) -> Vec<(OsString, OsString)> {
    let node = |k: &str, default: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.into())
    };
    let mut env: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), node("PATH", DEFAULT_PATH)),
        ("LANG".into(), node("LANG", "C.UTF-8")),
        ("HOME".into(), scratch.into()),
        ("TMPDIR".into(), scratch.into()),
    ];
    env.extend(job_env.iter().map(|(k, v)| (k.into(), v.into())));
    env.push(("CUDA_VISIBLE_DEVICES".into(), gpus.join(",").into()));
    env.push(("ORRERY_JOB_ID".into(), job_id.into()));
    env.push(("ORRERY_ATTEMPT".into(), attempt.to_string().into()));
    env
}

/// Who `command` children run as on this node, decided once at engine start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RunAs {
    /// The node is not root: children run as the node's user.
    Myself,
    /// The node is root: children run as this (non-root) user.
    User { name: String, uid: u32, gid: u32 },
    /// The node is root and has no usable command user: every command job
    /// fails with this message, without retries.
    Refused(String),
}

impl RunAs {
    /// Decides from the node's effective uid and `--command-user`.
    pub(crate) fn resolve(command_user: Option<&str>) -> RunAs {
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            if let Some(u) = command_user {
                tracing::warn!(
                    command_user = u,
                    euid,
                    "--command-user is ignored: the node does not run as root, so command jobs run as its own user"
                );
            }
            return RunAs::Myself;
        }
        let Some(name) = command_user else {
            return RunAs::Refused(
                "this node runs as root and was started without --command-user: command jobs are never run as root (start the node with --command-user USER)".into(),
            );
        };
        match lookup_user(name) {
            Ok((0, _)) => RunAs::Refused(format!(
                "--command-user '{name}' has uid 0: command jobs are never run as root"
            )),
            Ok((uid, gid)) => RunAs::User {
                name: name.to_string(),
                uid,
                gid,
            },
            Err(e) => RunAs::Refused(e),
        }
    }

    /// The (uid, gid) to switch to, if any.
    pub(crate) fn ids(&self) -> Option<(u32, u32)> {
        match self {
            RunAs::User { uid, gid, .. } => Some((*uid, *gid)),
            _ => None,
        }
    }
}

/// `name`'s uid and primary gid from the user database.
pub(crate) fn lookup_user(name: &str) -> Result<(u32, u32), String> {
    let cname = CString::new(name).map_err(|_| format!("--command-user '{name}' contains NUL"))?;
    let mut buf: Vec<libc::c_char> = vec![0; 4096];
    loop {
        // SAFETY: all-zero is a valid `passwd` (integers and null pointers).
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; `buf` outlives the
        // string fields of `pwd`, of which only the integers are read.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            let bigger = buf.len() * 2;
            buf.resize(bigger, 0);
            continue;
        }
        if rc != 0 {
            return Err(format!(
                "looking up --command-user '{name}': {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        if found.is_null() {
            return Err(format!(
                "--command-user '{name}': no such user on this node"
            ));
        }
        return Ok((pwd.pw_uid, pwd.pw_gid));
    }
}

/// A job id as a safe file name: only `[A-Za-z0-9._-]`, others become `_`,
/// at most 100 characters.
pub(crate) fn safe_name(job_id: &str) -> String {
    let s: String = job_id
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "job".into()
    } else {
        s
    }
}

/// A run's scratch directory, `<scratch_root>/<job id>-<attempt>`, mode
/// 0700, owned by the user the child runs as. Removed (with its contents) on
/// drop, whatever the run's outcome.
#[derive(Debug)]
pub(crate) struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub(crate) fn create(
        root: &Path,
        job_id: &str,
        attempt: u64,
        owner: Option<(u32, u32)>,
    ) -> Result<Scratch, String> {
        let what = |e: std::io::Error, p: &Path| format!("scratch dir {}: {e}", p.display());
        std::fs::create_dir_all(root).map_err(|e| what(e, root))?;
        // Searchable but not listable: each child reaches its own directory
        // by name and cannot see the others'.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| what(e, root))?;
        if let Some((uid, gid)) = owner {
            searchable_by(root, uid, gid)?;
        }
        let path = root.join(format!("{}-{attempt}", safe_name(job_id)));
        // Left over by a node that died mid-run: not this run's to inherit.
        // (remove_dir_all does not follow symlinks.)
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(_) => Ok(()),
        }
        .map_err(|e| what(e, &path))?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| what(e, &path))?;
        let scratch = Scratch { path };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(&scratch.path, Some(uid), Some(gid))
                .map_err(|e| what(e, &scratch.path))?;
        }
        Ok(scratch)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.path.display(), error = %e, "could not remove a command's scratch dir");
            }
        }
    }
}

/// Checks that `uid` (with only its primary group `gid`) can search every
/// directory down to `dir`, for a clear error instead of the child's bare
/// "Permission denied" from chdir.
fn searchable_by(dir: &Path, uid: u32, gid: u32) -> Result<(), String> {
    for d in dir.ancestors().filter(|d| !d.as_os_str().is_empty()) {
        let md = std::fs::metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
        let mode = md.mode();
        let bit = if md.uid() == uid {
            0o100
        } else if md.gid() == gid {
            0o010
        } else {
            0o001
        };
        if mode & bit == 0 {
            return Err(format!(
                "the command user (uid {uid}) cannot reach the scratch dir {}: {} (mode {:o}) is not searchable by it; make it searchable (e.g. chmod o+x) or move the data dir",
                dir.display(),
                d.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(())
}
