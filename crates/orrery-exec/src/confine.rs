//! Confining user-supplied paths to the node's `fs_root`.
//!
//! Every path a job names is resolved against the canonical root and then
//! canonicalised itself, so `..` tricks and symlinks are resolved by the OS
//! before the containment check. `..` components are refused outright even
//! when they would stay inside the root: a clearer rule for users and one less
//! way to be clever.

use std::path::{Component, Path, PathBuf};

use crate::ExecError;

fn bad(field: &str, path: &str, why: impl std::fmt::Display) -> ExecError {
    ExecError::Path(format!("{field} '{path}': {why}"))
}

/// Joins `user` onto `root` after the lexical checks (no `..`; absolute paths
/// must lie under the root).
fn lexical(root: &Path, field: &str, user: &str) -> Result<PathBuf, ExecError> {
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
    if p.is_absolute() {
        if !p.starts_with(root) {
            return Err(bad(
                field,
                user,
                format!("absolute path outside the fs root {}", root.display()),
            ));
        }
        Ok(p.to_path_buf())
    } else {
        Ok(root.join(p))
    }
}

fn inside(root: &Path, field: &str, user: &str, resolved: &Path) -> Result<(), ExecError> {
    if resolved.starts_with(root) {
        Ok(())
    } else {
        Err(bad(
            field,
            user,
            format!(
                "resolves to {} outside the fs root {} (symlink leading out?)",
                resolved.display(),
                root.display()
            ),
        ))
    }
}

/// Resolves an existing path named by a job against the canonical `root`.
/// `field` names the parameter in error messages.
pub fn confine_existing(root: &Path, field: &str, user: &str) -> Result<PathBuf, ExecError> {
    let joined = lexical(root, field, user)?;
    let canon = joined.canonicalize().map_err(|e| bad(field, user, e))?;
    inside(root, field, user, &canon)?;
    Ok(canon)
}

/// Resolves (and creates) an output directory named by a job under `root`.
pub fn confine_output_dir(root: &Path, field: &str, user: &str) -> Result<PathBuf, ExecError> {
    let joined = lexical(root, field, user)?;
    // Check the deepest existing ancestor before creating anything, so a
    // symlink leading out is refused without touching the outside.
    let mut existing = joined.as_path();
    while !existing.exists() {
        match existing.parent() {
            Some(p) => existing = p,
            None => break,
        }
    }
    let canon_anc = existing.canonicalize().map_err(|e| bad(field, user, e))?;
    inside(root, field, user, &canon_anc)?;
    std::fs::create_dir_all(&joined).map_err(|e| bad(field, user, e))?;
    let canon = joined.canonicalize().map_err(|e| bad(field, user, e))?;
    inside(root, field, user, &canon)?;
    if !canon.is_dir() {
        return Err(bad(field, user, "is not a directory"));
    }
    Ok(canon)
}

/// Expands a glob under `root`; every match is canonicalised and must stay
/// under the root (a match through a symlink leading out is an error).
/// Only regular files are returned, sorted.
pub fn confine_glob(root: &Path, field: &str, pattern: &str) -> Result<Vec<PathBuf>, ExecError> {
    if pattern.is_empty() {
        return Err(bad(field, pattern, "must not be empty"));
    }
    if Path::new(pattern)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(bad(field, pattern, "must not contain '..'"));
    }
    let rel = if Path::new(pattern).is_absolute() {
        match Path::new(pattern).strip_prefix(root) {
            Ok(r) => r.to_string_lossy().into_owned(),
            Err(_) => {
                return Err(bad(
                    field,
                    pattern,
                    format!("absolute path outside the fs root {}", root.display()),
                ))
            }
        }
    } else {
        pattern.to_string()
    };
    let root_str = root.to_string_lossy();
    let full = format!(
        "{}/{}",
        glob::Pattern::escape(root_str.trim_end_matches('/')),
        rel
    );
    let paths = glob::glob(&full).map_err(|e| bad(field, pattern, e))?;
    let mut out = Vec::new();
    for entry in paths {
        let p = entry.map_err(|e| bad(field, pattern, e))?;
        let canon = p.canonicalize().map_err(|e| bad(field, pattern, e))?;
        inside(root, field, &p.to_string_lossy(), &canon)?;
        if canon.is_file() {
            out.push(canon);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// `path` relative to `root`, with `/` separators, for results.
pub(crate) fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = root.path().canonicalize().unwrap();
        std::fs::create_dir_all(r.join("data/sub")).unwrap();
        std::fs::write(r.join("data/a.txt"), "a").unwrap();
        std::fs::write(outside.path().join("secret.txt"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("data/out")).unwrap();
        std::os::unix::fs::symlink(r.join("data/a.txt"), r.join("data/in.txt")).unwrap();
        (root, outside, r)
    }

    #[test]
    fn accepts_relative_and_absolute_inside() {
        let (_g, _o, r) = setup();
        assert_eq!(
            confine_existing(&r, "path", "data/a.txt").unwrap(),
            r.join("data/a.txt")
        );
        let abs = r.join("data").to_string_lossy().into_owned();
        assert_eq!(confine_existing(&r, "path", &abs).unwrap(), r.join("data"));
        // A symlink staying inside is fine.
        assert_eq!(
            confine_existing(&r, "path", "data/in.txt").unwrap(),
            r.join("data/a.txt")
        );
        assert_eq!(confine_existing(&r, "path", ".").unwrap(), r);
    }

    #[test]
    fn rejects_dotdot() {
        let (_g, _o, r) = setup();
        let e = confine_existing(&r, "path", "../etc")
            .unwrap_err()
            .to_string();
        assert!(e.contains("path '../etc'") && e.contains(".."), "{e}");
        let e = confine_existing(&r, "path", "data/../../x")
            .unwrap_err()
            .to_string();
        assert!(e.contains(".."), "{e}");
        // Even when it would stay inside.
        assert!(confine_existing(&r, "path", "data/../data").is_err());
        assert!(confine_output_dir(&r, "output_dir", "out/../../x").is_err());
        assert!(confine_glob(&r, "input_glob", "../*.csv").is_err());
    }

    #[test]
    fn rejects_absolute_outside() {
        let (_g, o, r) = setup();
        let e = confine_existing(&r, "path", "/etc")
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside the fs root"), "{e}");
        let p = o.path().join("secret.txt").to_string_lossy().into_owned();
        assert!(confine_existing(&r, "path", &p).is_err());
        let e = confine_output_dir(&r, "output_dir", "/tmp/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("output_dir") && e.contains("outside"), "{e}");
        assert!(confine_glob(&r, "input_glob", "/etc/*").is_err());
    }

    #[test]
    fn rejects_symlinks_leading_out() {
        let (_g, o, r) = setup();
        let e = confine_existing(&r, "path", "data/out/secret.txt")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("outside the fs root") && e.contains("symlink"),
            "{e}"
        );
        assert!(confine_existing(&r, "path", "data/out").is_err());
        let e = confine_output_dir(&r, "output_dir", "data/out/new")
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside"), "{e}");
        // Nothing was created outside.
        assert!(!o.path().join("new").exists());
        let e = confine_glob(&r, "input_glob", "data/out/*.txt")
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside"), "{e}");
        let e = confine_glob(&r, "input_glob", "data/*/*.txt")
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside"), "{e}");
    }

    #[test]
    fn missing_and_empty_paths() {
        let (_g, _o, r) = setup();
        let e = confine_existing(&r, "path", "nope")
            .unwrap_err()
            .to_string();
        assert!(e.contains("path 'nope'"), "{e}");
        assert!(confine_existing(&r, "path", "").is_err());
        let d = confine_output_dir(&r, "output_dir", "new/deeper").unwrap();
        assert_eq!(d, r.join("new/deeper"));
        assert!(d.is_dir());
        assert_eq!(
            confine_glob(&r, "input_glob", "data/*.txt").unwrap(),
            vec![r.join("data/a.txt")]
        );
    }
}
