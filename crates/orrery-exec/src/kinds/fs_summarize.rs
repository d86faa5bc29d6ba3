//! `fs.summarize {path, max_depth?}`: a rayon-parallel directory walk.
//!
//! Counting rules (docs/api.md): entries are read with `symlink_metadata`
//! and symlinks are neither followed nor counted; the starting directory
//! itself is not counted; an entry at depth d (1 = directly inside `path`) is
//! counted when d <= max_depth, and a directory is descended only when
//! d < max_depth. If `path` is a file, the summary is that one file.

use std::collections::BTreeMap;
use std::path::Path;

use cap_std::fs::Dir;
use rayon::prelude::*;
use serde_json::{json, Value};

use crate::confine::{dot, shown};
use crate::RunContext;

/// Number of largest files reported.
pub(crate) const LARGEST: usize = 10;
/// At most this many traversal errors are listed (the count is complete).
pub(crate) const MAX_ERRORS: usize = 100;

#[derive(Default)]
struct Summary {
    files: u64,
    dirs: u64,
    bytes: u64,
    by_ext: BTreeMap<String, (u64, u64)>,
    largest: Vec<(u64, String)>,
    errors: Vec<(String, String)>,
    error_count: u64,
}

impl Summary {
    fn add_file(&mut self, path: &Path, len: u64) {
        self.files += 1;
        self.bytes += len;
        let e = self.by_ext.entry(extension(path)).or_default();
        e.0 += 1;
        e.1 += len;
        self.largest.push((len, shown(path)));
        trim_largest(&mut self.largest);
    }

    fn error(&mut self, path: &Path, err: impl std::fmt::Display) {
        self.error_count += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push((shown(path), err.to_string()));
        }
    }

    fn merge(mut self, o: Summary) -> Summary {
        self.files += o.files;
        self.dirs += o.dirs;
        self.bytes += o.bytes;
        for (k, (f, b)) in o.by_ext {
            let e = self.by_ext.entry(k).or_default();
            e.0 += f;
            e.1 += b;
        }
        self.largest.extend(o.largest);
        trim_largest(&mut self.largest);
        self.error_count += o.error_count;
        self.errors.extend(o.errors);
        self.errors.sort();
        self.errors.truncate(MAX_ERRORS);
        self
    }
}

/// Lower-cased extension, `""` for none.
pub(crate) fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

/// Largest first, ties by path, so the answer does not depend on scheduling.
fn trim_largest(v: &mut Vec<(u64, String)>) {
    v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    v.truncate(LARGEST);
}

/// Walks `dir` (root-relative `at`) through its handle: each directory is
/// opened from its parent's handle, never by path, so the walk cannot leave
/// the root even if the tree changes under it.
fn walk(dir: &Dir, at: &Path, depth: u64, max_depth: Option<u64>, ctx: &RunContext) -> Summary {
    let mut s = Summary::default();
    if ctx.is_cancelled() {
        return s;
    }
    let entries: Vec<_> = match dir.entries() {
        Ok(rd) => rd.collect(),
        Err(e) => {
            s.error(at, e);
            return s;
        }
    };
    let here = depth + 1;
    if max_depth.is_some_and(|m| here > m) {
        return s;
    }
    entries
        .into_par_iter()
        .map(|entry| {
            let mut s = Summary::default();
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    s.error(at, e);
                    return s;
                }
            };
            let path = at.join(entry.file_name());
            // DirEntry::metadata does not follow symlinks.
            match entry.metadata() {
                Err(e) => s.error(&path, e),
                Ok(md) if md.is_dir() => {
                    s.dirs += 1;
                    if max_depth.is_none_or(|m| here < m) {
                        match entry.open_dir() {
                            Ok(sub) => s = s.merge(walk(&sub, &path, here, max_depth, ctx)),
                            Err(e) => s.error(&path, e),
                        }
                    }
                }
                Ok(md) if md.is_file() => s.add_file(&path, md.len()),
                Ok(_) => {}
            }
            s
        })
        .reduce(Summary::default, Summary::merge)
        .merge(s)
}

pub(crate) fn run(params: &Value, ctx: &RunContext) -> Result<Value, String> {
    let fs = ctx.fs().ok_or("fs.summarize needs a node with --fs-root")?;
    let path = params
        .get("path")
        .and_then(Value::as_str)
        .ok_or("params.path is required")?;
    let max_depth = params.get("max_depth").and_then(Value::as_u64);
    let start = fs
        .relative("params.path", path)
        .map_err(|e| e.to_string())?;
    // Resolved beneath the root handle: a symlink inside is followed, one
    // leading out is refused.
    let md = fs
        .dir()
        .metadata(dot(&start))
        .map_err(|e| fs.io_err("params.path", path, e).to_string())?;
    ctx.log(&format!("summarizing {}", shown(&start)));
    let s = if md.is_dir() {
        let dir = fs
            .open_dir("params.path", path, &start)
            .map_err(|e| e.to_string())?;
        walk(&dir, &start, 0, max_depth, ctx)
    } else {
        let mut s = Summary::default();
        s.add_file(&start, md.len());
        s
    };
    if ctx.is_cancelled() {
        return Err("cancelled".into());
    }
    ctx.log(&format!(
        "{} files, {} dirs, {} bytes",
        s.files, s.dirs, s.bytes
    ));
    Ok(json!({
        "files": s.files,
        "dirs": s.dirs,
        "bytes": s.bytes,
        "by_extension": s.by_ext.iter().map(|(k, (f, b))| (k.clone(), json!({"files": f, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
        "largest": s.largest.iter().map(|(b, p)| json!({"path": p, "bytes": b})).collect::<Vec<_>>(),
        "errors": s.errors.iter().map(|(p, e)| json!({"path": p, "error": e})).collect::<Vec<_>>(),
        "error_count": s.error_count,
    }))
}
