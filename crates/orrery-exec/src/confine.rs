//! Confining user-supplied paths to the node's `fs_root`.
//!
//! The root is opened once as a [`cap_std::fs::Dir`] (the only place with
//! ambient authority, [`FsRoot::open`]); every open, create, rename,
//! `read_dir` and `metadata` of the file kinds then goes through that handle
//! (or a directory handle opened from it) with a relative path. cap-std
//! resolves each component beneath the handle (`openat2(RESOLVE_BENEATH)` on
//! Linux, or its own component-by-component walk), so neither `..` nor a
//! symlink can leave the root, and there is no window between a check and an
//! open for a swapped-in symlink to use (the old check-then-open-by-path
//! design had one). Relative symlinks that stay inside the root are
//! followed; absolute symlinks are refused even when they point inside (an
//! absolute target means nothing beneath a directory handle).
//!
//! On top of that, the lexical rules give clear errors before any I/O: `..`
//! components are refused outright even when they would stay inside the root
//! (a clearer rule for users and one less way to be clever), and absolute
//! paths must lie under the root.

use std::path::{Component, Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use crate::ExecError;

pub(crate) fn bad(field: &str, path: &str, why: impl std::fmt::Display) -> ExecError {
    ExecError::Path(format!("{field} '{path}': {why}"))
}

/// The node's fs root: its canonical path (for messages and results) and the
/// directory handle every file kind works through.
#[derive(Debug)]
pub struct FsRoot {
    path: PathBuf,
    dir: Dir,
}

impl FsRoot {
    /// Canonicalises `path` and opens it as the confining handle. This is the
    /// one use of ambient authority in the file kinds.
    pub fn open(path: &Path) -> std::io::Result<FsRoot> {
        let canon = path.canonicalize()?;
        let dir = Dir::open_ambient_dir(&canon, ambient_authority())?;
        Ok(FsRoot { path: canon, dir })
    }

    /// The canonical root path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root's directory handle.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// Turns a job's path into one relative to the root, after the lexical
    /// checks (not empty, no NUL, no `..`, absolute only under the root).
    /// The root itself is the empty path. No I/O.
    pub fn relative(&self, field: &str, user: &str) -> Result<PathBuf, ExecError> {
        if user.is_empty() {
            return Err(bad(field, user, "must not be empty"));
        }
        if user.contains('\0') {
            return Err(bad(field, user, "must not contain NUL"));
        }
        let p = Path::new(user);
        if p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(bad(field, user, "must not contain '..'"));
        }
        let inner = if p.is_absolute() {
            p.strip_prefix(&self.path).map_err(|_| {
                bad(
                    field,
                    user,
                    format!("absolute path outside the fs root {}", self.path.display()),
                )
            })?
        } else {
            p
        };
        // Only plain names remain (`.` dropped): what cap-std is handed.
        Ok(inner
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect())
    }

    /// An I/O error on `user`, saying so plainly when cap-std refused to
    /// leave the root (a symlink or `..` leading out).
    pub(crate) fn io_err(&self, field: &str, user: &str, e: std::io::Error) -> ExecError {
        if is_escape(&e) {
            bad(
                field,
                user,
                format!(
                    "leads outside the fs root {} (through a symlink leading out, or an absolute symlink: only relative symlinks are followed)",
                    self.path.display()
                ),
            )
        } else {
            bad(field, user, e)
        }
    }

    /// Opens an existing file named by a job for reading, through the root
    /// handle. Use this rather than opening a checked path: the check and the
    /// open are one step.
    pub fn open_file(&self, field: &str, user: &str) -> Result<std::fs::File, ExecError> {
        let rel = self.relative(field, user)?;
        let f = self
            .dir
            .open(dot(&rel))
            .map_err(|e| self.io_err(field, user, e))?;
        Ok(f.into_std())
    }

    /// Reads a whole text file named by a job, through the root handle.
    pub fn read_to_string(&self, field: &str, user: &str) -> Result<String, ExecError> {
        use std::io::Read;
        let mut s = String::new();
        self.open_file(field, user)?
            .read_to_string(&mut s)
            .map_err(|e| bad(field, user, e))?;
        Ok(s)
    }

    /// Opens an existing directory named by a job (root-relative `rel`).
    pub(crate) fn open_dir(&self, field: &str, user: &str, rel: &Path) -> Result<Dir, ExecError> {
        self.dir
            .open_dir(dot(rel))
            .map_err(|e| self.io_err(field, user, e))
    }

    /// Creates (if missing) and opens the output directory named by a job.
    /// Returns its root-relative path and its handle; outputs are written
    /// through the handle, so the directory cannot be swapped under the job.
    pub fn output_dir(&self, field: &str, user: &str) -> Result<(PathBuf, Dir), ExecError> {
        let rel = self.relative(field, user)?;
        if !rel.as_os_str().is_empty() {
            // cap-std creates each missing component beneath the handle: a
            // planted symlink on the way is refused, nothing is made outside.
            if let Err(e) = self.dir.create_dir_all(&rel) {
                // An existing entry in the way (e.g. a symlink leading out)
                // is reported as what it is, not as "File exists".
                return Err(match self.dir.metadata(&rel) {
                    Err(m) if is_escape(&m) => self.io_err(field, user, m),
                    Ok(md) if !md.is_dir() => bad(field, user, "is not a directory"),
                    _ => self.io_err(field, user, e),
                });
            }
        }
        let dir = self.open_dir(field, user, &rel)?;
        Ok((rel, dir))
    }
}

/// cap-std's refusal to resolve a path outside its directory handle.
pub(crate) fn is_escape(e: &std::io::Error) -> bool {
    // cap-primitives maps EXDEV from openat2(RESOLVE_BENEATH) and its own
    // walk's escapes to this one error; it has no distinct kind.
    e.kind() == std::io::ErrorKind::PermissionDenied
        && e.to_string().contains("outside of the filesystem")
}

/// cap-std wants `.` rather than an empty path for the handle itself.
pub(crate) fn dot(rel: &Path) -> &Path {
    if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    }
}

/// `rel` (root-relative) as it appears in results, `.` for the root.
pub(crate) fn shown(rel: &Path) -> String {
    dot(rel).to_string_lossy().into_owned()
}

/// Checks a path named by a job and returns its canonical form, WITHOUT
/// opening it: whoever opens the returned path later does so by path, and a
/// symlink swapped in meanwhile is followed. Kept for callers that need a
/// path; prefer [`FsRoot::open_file`] / [`FsRoot::read_to_string`], which
/// check and open in one step.
pub fn confine_existing(root: &Path, field: &str, user: &str) -> Result<PathBuf, ExecError> {
    let fs = FsRoot::open(root).map_err(|e| bad(field, user, e))?;
    let rel = fs.relative(field, user)?;
    // Resolved through the handle, so a symlink leading out is refused.
    fs.dir
        .metadata(dot(&rel))
        .map_err(|e| fs.io_err(field, user, e))?;
    let canon = fs
        .path
        .join(&rel)
        .canonicalize()
        .map_err(|e| bad(field, user, e))?;
    if !canon.starts_with(&fs.path) {
        return Err(bad(field, user, "leads outside the fs root"));
    }
    Ok(canon)
}
