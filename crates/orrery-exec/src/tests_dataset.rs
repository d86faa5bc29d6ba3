//! `dataset.scan`: exact sizes, hashes and dimensions, paging, confinement.

use crate::kinds::run_blocking;
use crate::RunContext;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;

fn sha(p: &Path) -> String {
    let d = Sha256::digest(std::fs::read(p).unwrap());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    std::fs::create_dir_all(r.join("set/sub")).unwrap();
    for i in 0..5u32 {
        image::RgbImage::from_pixel(10 + i, 20 + 2 * i, image::Rgb([i as u8, 7, 9]))
            .save(r.join(format!("set/p{i}.png")))
            .unwrap();
    }
    image::RgbImage::from_pixel(33, 17, image::Rgb([1, 2, 3]))
        .save(r.join("set/sub/j.jpg"))
        .unwrap();
    std::fs::write(r.join("set/sub/fake.png"), b"not an image").unwrap();
    std::fs::write(r.join("secret.png"), b"outside the dataset").unwrap();
    t
}

fn scan(root: &Path, params: Value) -> Result<Value, String> {
    let (ctx, _) = RunContext::detached(Some(root.to_path_buf()), vec![]);
    run_blocking("dataset.scan", &params, &ctx)
}

#[test]
fn scan_reports_exact_sizes_hashes_and_dimensions() {
    let t = tree();
    let r = t.path();
    let out = scan(r, json!({"path": "set", "glob": "**/*.*"})).unwrap();
    assert_eq!(out["matched"], 7);
    assert_eq!(out["next"], Value::Null);
    assert_eq!(out["error_count"], 1);
    assert_eq!(out["errors"][0]["path"], "set/sub/fake.png");
    let files = out["files"].as_array().unwrap();
    assert_eq!(files.len(), 6);
    for f in files {
        let p = f[0].as_str().unwrap();
        let full = r.join(p);
        assert_eq!(f[1], std::fs::metadata(&full).unwrap().len());
        assert_eq!(f[2], sha(&full));
        let (w, h) = image::image_dimensions(&full).unwrap();
        assert_eq!(
            (f[3].as_u64().unwrap(), f[4].as_u64().unwrap()),
            (w as u64, h as u64)
        );
    }
    assert_eq!(files[5][0], "set/sub/j.jpg");
    assert_eq!(
        (files[5][3].clone(), files[5][4].clone()),
        (json!(33), json!(17))
    );
}

#[test]
fn scan_pages_by_path() {
    let t = tree();
    let mut after: Option<String> = None;
    let mut seen = Vec::new();
    loop {
        let out = scan(
            t.path(),
            json!({"path": "set", "glob": "*.png", "limit": 2, "after": after}),
        )
        .unwrap();
        for f in out["files"].as_array().unwrap() {
            seen.push(f[0].as_str().unwrap().to_string());
        }
        match out["next"].as_str() {
            Some(n) => after = Some(n.into()),
            None => break,
        }
    }
    let want: Vec<_> = (0..5).map(|i| format!("set/p{i}.png")).collect();
    assert_eq!(seen, want);
}

#[test]
fn scan_stays_under_the_root() {
    let t = tree();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("x.png"), b"x").unwrap();
    std::os::unix::fs::symlink(outside.path(), t.path().join("set/link")).unwrap();
    for (path, glob) in [("..", "*.png"), ("set", "../*.png"), ("/etc", "*")] {
        let e = scan(t.path(), json!({"path": path, "glob": glob})).unwrap_err();
        assert!(e.contains("params.glob"), "{path} {glob}: {e}");
    }
    // A symlink leading out is an error for the whole pattern.
    assert!(scan(t.path(), json!({"path": "set/link", "glob": "*.png"})).is_err());
    assert!(crate::validate_params("dataset.scan", &json!({"path": "a"})).is_err());
    assert!(crate::validate_params("dataset.scan", &json!({"glob": "*", "limit": 0})).is_err());
    assert!(crate::validate_params("dataset.scan", &json!({"glob": "*", "x": 1})).is_err());
    // No fs root: refused.
    let (ctx, _) = RunContext::detached(None, vec![]);
    assert!(run_blocking("dataset.scan", &json!({"glob": "*"}), &ctx).is_err());
}
