//! `dataset.scan {path, glob, after?, limit?}`: one page of a dataset's
//! files. Expands `path/glob` beneath the fs root (regular files, sorted by
//! path), keeps those after `after`, and for up to `limit` of them reads
//! the size, the sha256 of the content and the image dimensions from the
//! header (PNG, JPEG). The server writes what it finds into the dataset's
//! catalog and asks for the next page with `after = next`.
//!
//! Result: `{"files": [[path, size, sha256, width, height], ...],
//! "errors": [{"path", "error"}], "error_count", "matched", "next"}` where
//! `matched` counts every file the pattern matched, `next` is the last path
//! of this page when more files follow (else `null`), and a file that is no
//! readable image is an error, not an item.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::confine::shown;
use crate::RunContext;

/// Files per page when `limit` is not given, and the most a page may ask.
pub(crate) const DEFAULT_LIMIT: u64 = 1000;
pub(crate) const MAX_LIMIT: u64 = 2000;
/// At most this many errors are listed (the count is complete).
const MAX_ERRORS: usize = 100;

/// The glob the scan expands: `glob` under `path`.
pub(crate) fn pattern(path: &str, glob: &str) -> String {
    let path = path.trim_end_matches('/');
    if path.is_empty() || path == "." {
        glob.to_string()
    } else {
        format!("{path}/{glob}")
    }
}

/// Size, sha256 (hex), width and height of one file.
type Facts = (u64, String, u32, u32);

/// Size, sha256 (hex) and dimensions of one file.
fn one(mut file: std::fs::File) -> Result<Facts, String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    let digest = h.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let reader = image::ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    if !matches!(
        reader.format(),
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg)
    ) {
        return Err("not a PNG or JPEG image".into());
    }
    let (w, h) = reader.into_dimensions().map_err(|e| e.to_string())?;
    Ok((size, hex, w, h))
}

pub(crate) fn run(params: &Value, ctx: &RunContext) -> Result<Value, String> {
    let fs = ctx.fs().ok_or("dataset.scan needs a node with --fs-root")?;
    let path = params.get("path").and_then(Value::as_str).unwrap_or("");
    let glob = params
        .get("glob")
        .and_then(Value::as_str)
        .ok_or("params.glob is required")?;
    let after = params.get("after").and_then(Value::as_str);
    let limit = params
        .get("limit")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_LIMIT)
        .clamp(1, MAX_LIMIT) as usize;
    let matched = fs
        .glob("params.glob", &pattern(path, glob))
        .map_err(|e| e.to_string())?;
    let total = matched.len();
    // Pages follow the paths' string order (the catalog's), not the
    // component order paths sort in ("a.b/c" < "a/b" here).
    let mut shown_paths: Vec<(String, PathBuf)> = matched
        .into_iter()
        .map(|p| (shown(&p), p))
        .filter(|(s, _)| after.is_none_or(|a| s.as_str() > a))
        .collect();
    shown_paths.sort_by(|a, b| a.0.cmp(&b.0));
    let more = shown_paths.len() > limit;
    let page: Vec<(String, PathBuf)> = shown_paths.into_iter().take(limit).collect();
    ctx.log(&format!(
        "{total} file(s) match; hashing {} after {:?}",
        page.len(),
        after.unwrap_or("")
    ));
    let results: Vec<(String, Result<Facts, String>)> = page
        .par_iter()
        .map(|(s, p)| {
            if ctx.is_cancelled() {
                return (s.clone(), Err("cancelled".to_string()));
            }
            let r = fs
                .dir()
                .open(Path::new(p))
                .map_err(|e| e.to_string())
                .and_then(|f| one(f.into_std()));
            (s.clone(), r)
        })
        .collect();
    if ctx.is_cancelled() {
        return Err("cancelled".into());
    }
    let mut files = Vec::with_capacity(results.len());
    let mut errors = Vec::new();
    let mut error_count = 0u64;
    for (p, r) in &results {
        match r {
            Ok((size, sha, w, h)) => files.push(json!([p, size, sha, w, h])),
            Err(e) => {
                error_count += 1;
                ctx.log(&format!("{p}: {e}"));
                if errors.len() < MAX_ERRORS {
                    errors.push(json!({"path": p, "error": e}));
                }
            }
        }
    }
    let next = if more {
        page.last().map(|(s, _)| s.clone())
    } else {
        None
    };
    ctx.log(&format!("{} item(s), {error_count} error(s)", files.len()));
    Ok(json!({
        "files": files,
        "errors": errors,
        "error_count": error_count,
        "matched": total,
        "next": next,
    }))
}
