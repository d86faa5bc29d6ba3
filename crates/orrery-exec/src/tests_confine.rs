//! Confinement of the file kinds to the fs root, on real files: symlinks
//! planted at each step of a job's path must be refused (or replaced, never
//! written through), and nothing may appear or change outside the root.
//!
//! The job-level tests go through the engine, so they hold for whatever
//! implementation sits behind the kinds.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::tests::{config, engine, root, WAIT};
use crate::FsRoot;

/// A root with `in/a.csv` and an outside dir holding `secret.csv`; returns
/// (guards, canonical root, canonical outside).
fn setup() -> ((tempfile::TempDir, tempfile::TempDir), PathBuf, PathBuf) {
    let (g, r) = root();
    let o = tempfile::tempdir().unwrap();
    let out = o.path().canonicalize().unwrap();
    std::fs::create_dir_all(r.join("in")).unwrap();
    std::fs::write(r.join("in/a.csv"), "x,y\n1,2\n").unwrap();
    std::fs::write(out.join("secret.csv"), "s,t\nsecret,1\n").unwrap();
    ((g, o), r, out)
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// Every file under `dir` with its content: the outside must not change.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                todo.push(p.clone());
                v.push((p, Vec::new()));
            } else {
                v.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    v.sort();
    v
}

fn csv_job(glob: &str, out: &str) -> Value {
    json!({"input_glob": glob, "output_dir": out})
}

/// Runs one job; Ok(result) or Err(error).
async fn run(kind: &str, params: Value, r: &Path) -> Result<Value, String> {
    let (src, e) = engine(config(Some(r)));
    let id = src.submit(kind, params);
    let o = src.outcome(&id, WAIT).await;
    e.shutdown().await;
    match o {
        crate::tests::Outcome::Completed(v, _) => Ok(v),
        crate::tests::Outcome::Failed(e, _) => Err(e),
    }
}

/// The per-file errors of a csv/thumbnail result, as one string.
fn file_errors(v: &Value) -> String {
    assert_eq!(v["files"], json!([]), "no output may be written: {v}");
    v["errors"].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_symlink_to_a_file_outside_is_refused() {
    let (_g, r, o) = setup();
    symlink(&o.join("secret.csv"), &r.join("in/evil.csv"));
    let before = snapshot(&o);
    let e = run("fs.summarize", json!({"path": "in/evil.csv"}), &r)
        .await
        .unwrap_err();
    assert!(
        e.contains("params.path 'in/evil.csv'") && e.contains("outside the fs root"),
        "{e}"
    );
    let e = run("fs.csv_transform", csv_job("in/*.csv", "o"), &r)
        .await
        .unwrap_err();
    assert!(
        e.contains("params.input_glob") && e.contains("outside the fs root"),
        "{e}"
    );
    let e = run("fs.csv_transform", csv_job("in/evil.csv", "o"), &r)
        .await
        .unwrap_err();
    assert!(e.contains("outside the fs root"), "{e}");
    assert!(!r.join("o/evil.csv").exists());
    assert_eq!(snapshot(&o), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intermediate_directory_symlink_leading_out_is_refused() {
    let (_g, r, o) = setup();
    symlink(&o, &r.join("in/sub"));
    let before = snapshot(&o);
    let e = run("fs.summarize", json!({"path": "in/sub/secret.csv"}), &r)
        .await
        .unwrap_err();
    assert!(e.contains("outside the fs root"), "{e}");
    let e = run("fs.summarize", json!({"path": "in/sub"}), &r)
        .await
        .unwrap_err();
    assert!(e.contains("outside the fs root"), "{e}");
    for glob in ["in/sub/*.csv", "in/sub/secret.csv", "in/*/*.csv"] {
        let e = run("fs.csv_transform", csv_job(glob, "o"), &r)
            .await
            .unwrap_err();
        assert!(
            e.contains("params.input_glob") && e.contains("outside"),
            "{glob}: {e}"
        );
    }
    // Summarizing the parent does not follow the symlink.
    let v = run("fs.summarize", json!({"path": "in"}), &r)
        .await
        .unwrap();
    assert_eq!(v["files"], 1, "{v}");
    assert_eq!(snapshot(&o), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_symlink_leading_out_is_not_written_through() {
    let (_g, r, o) = setup();
    std::fs::create_dir_all(r.join("o")).unwrap();
    // An existing target (overwrite) and a dangling one (create).
    symlink(&o.join("secret.csv"), &r.join("o/a.csv"));
    std::fs::write(r.join("in/b.csv"), "x\n1\n").unwrap();
    symlink(&o.join("created.csv"), &r.join("o/b.csv"));
    let before = snapshot(&o);
    let v = run("fs.csv_transform", csv_job("in/*.csv", "o"), &r)
        .await
        .unwrap();
    assert_eq!(snapshot(&o), before);
    assert!(!o.join("created.csv").exists());
    let errs = file_errors(&v);
    assert!(
        errs.contains("'a.csv' is a symlink") && errs.contains("'b.csv' is a symlink"),
        "{errs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_partial_symlink_is_not_written_through() {
    let (_g, r, o) = setup();
    std::fs::create_dir_all(r.join("o")).unwrap();
    std::fs::create_dir_all(r.join("t")).unwrap();
    symlink(&o.join("secret.csv"), &r.join("o/a.csv.partial"));
    image::RgbImage::new(20, 10)
        .save(r.join("in/p.png"))
        .unwrap();
    symlink(&o.join("thumb.png"), &r.join("t/p.png.partial"));
    let before = snapshot(&o);
    let v = run("fs.csv_transform", csv_job("in/a.csv", "o"), &r)
        .await
        .unwrap();
    assert_eq!(snapshot(&o), before, "written through o/a.csv.partial");
    let errs = file_errors(&v);
    assert!(errs.contains("'a.csv.partial' is a symlink"), "{errs}");
    let v = run(
        "image.thumbnail",
        json!({"input_glob": "in/*.png", "output_dir": "t", "max_side": 5}),
        &r,
    )
    .await
    .unwrap();
    assert!(
        !o.join("thumb.png").exists(),
        "created through t/p.png.partial"
    );
    assert_eq!(snapshot(&o), before);
    let errs = file_errors(&v);
    assert!(errs.contains("'p.png.partial' is a symlink"), "{errs}");
    assert!(!r.join("o/a.csv").exists() && !r.join("t/p.png").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_output_parent_symlink_is_refused() {
    let (_g, r, o) = setup();
    symlink(&o, &r.join("made"));
    let before = snapshot(&o);
    for out in ["made/deeper", "made", "made/x/y"] {
        let e = run("fs.csv_transform", csv_job("in/a.csv", out), &r)
            .await
            .unwrap_err();
        assert!(
            e.contains("params.output_dir") && e.contains("outside"),
            "{out}: {e}"
        );
    }
    let e = run(
        "image.thumbnail",
        json!({"input_glob": "in/*.png", "output_dir": "made/t", "max_side": 5}),
        &r,
    )
    .await
    .unwrap_err();
    assert!(e.contains("params.output_dir"), "{e}");
    assert_eq!(snapshot(&o), before);
    assert!(!o.join("deeper").exists() && !o.join("a.csv").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotdot_and_absolute_paths_outside_are_refused() {
    let (_g, r, o) = setup();
    let before = snapshot(&o);
    let out_abs = o.join("new").to_string_lossy().into_owned();
    let cases = [
        (
            "fs.summarize",
            json!({"path": "../"}),
            "must not contain '..'",
        ),
        ("fs.summarize", json!({"path": "in/../../x"}), "'..'"),
        ("fs.summarize", json!({"path": "in/../in"}), "'..'"),
        (
            "fs.csv_transform",
            csv_job("../*.csv", "o"),
            "params.input_glob '../*.csv'",
        ),
        (
            "fs.csv_transform",
            csv_job("in/*.csv", "o/../../x"),
            "params.output_dir",
        ),
        (
            "fs.csv_transform",
            csv_job("in/*.csv", &out_abs),
            "absolute path outside the fs root",
        ),
        (
            "fs.summarize",
            json!({"path": "/etc"}),
            "absolute path outside the fs root",
        ),
    ];
    for (kind, p, want) in cases {
        let e = run(kind, p.clone(), &r).await.unwrap_err();
        assert!(e.contains(want), "{kind} {p}: {e}");
    }
    assert_eq!(snapshot(&o), before);
    assert!(!r.join("o").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_inside_the_root_still_work() {
    let (_g, r, _o) = setup();
    symlink(Path::new("in"), &r.join("alias"));
    std::fs::create_dir_all(r.join("real_out")).unwrap();
    symlink(Path::new("real_out"), &r.join("out_alias"));
    let v = run("fs.csv_transform", csv_job("alias/*.csv", "out_alias"), &r)
        .await
        .unwrap();
    assert_eq!(v["errors"], json!([]), "{v}");
    assert_eq!(v["files"][0]["output"], "out_alias/a.csv");
    assert_eq!(
        std::fs::read_to_string(r.join("real_out/a.csv")).unwrap(),
        "x,y\n1,2\n"
    );
    // Absolute symlinks are refused even when they point inside (the
    // documented limit of the handle-based confinement).
    symlink(&r.join("in"), &r.join("abs_alias"));
    let e = run("fs.csv_transform", csv_job("abs_alias/*.csv", "o2"), &r)
        .await
        .unwrap_err();
    assert!(e.contains("absolute symlink"), "{e}");
    // Output into the input's directory through an alias is still caught.
    let v = run("fs.csv_transform", csv_job("in/a.csv", "alias"), &r)
        .await
        .unwrap();
    assert!(file_errors(&v).contains("overwrite the input"), "{v}");
    // A stale regular partial file (a crashed attempt) is replaced.
    std::fs::write(r.join("real_out/a.csv.partial"), "junk").unwrap();
    run("fs.csv_transform", csv_job("in/a.csv", "real_out"), &r)
        .await
        .unwrap();
    assert!(!r.join("real_out/a.csv.partial").exists());
}

// ------------------------------------------------------------ FsRoot directly

#[test]
fn fs_root_api_confines_opens() {
    let (_g, r, o) = setup();
    symlink(&o, &r.join("in/out"));
    symlink(&o.join("secret.csv"), &r.join("in/s.csv"));
    symlink(Path::new("a.csv"), &r.join("in/inner.csv"));
    let fs = FsRoot::open(&r).unwrap();
    assert_eq!(fs.path(), r);
    assert_eq!(fs.read_to_string("f", "in/a.csv").unwrap(), "x,y\n1,2\n");
    let abs = r.join("in/inner.csv").to_string_lossy().into_owned();
    assert_eq!(fs.read_to_string("f", &abs).unwrap(), "x,y\n1,2\n");
    for bad in ["in/s.csv", "in/out/secret.csv", "../x", "/etc/passwd", ""] {
        let e = fs
            .read_to_string("input_file", bad)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!("input_file '{bad}'")), "{e}");
    }
    let e = fs.open_file("f", "nope").unwrap_err().to_string();
    assert!(e.contains("f 'nope'"), "{e}");
    assert_eq!(
        fs.glob("g", "in/*.csv").unwrap_err().to_string(),
        format!(
            "g 'in/s.csv': leads outside the fs root {} (through a symlink leading out, or an absolute symlink: only relative symlinks are followed)",
            r.display()
        )
    );
    assert_eq!(
        fs.glob("g", "in/a*.csv").unwrap(),
        vec![PathBuf::from("in/a.csv")]
    );
    assert_eq!(
        fs.glob("g", "**/a.csv").unwrap(),
        vec![PathBuf::from("in/a.csv")]
    );
    assert_eq!(
        fs.glob("g", "nothing/*.csv").unwrap(),
        Vec::<PathBuf>::new()
    );
    assert!(fs.output_dir("o", "in/out/new").is_err());
    assert!(!o.join("new").exists());
    let (rel, _) = fs.output_dir("o", "new/deeper").unwrap();
    assert_eq!(rel, PathBuf::from("new/deeper"));
    assert!(r.join("new/deeper").is_dir());
    // The path-returning check refuses the same escapes.
    assert!(crate::confine_existing(&r, "p", "in/s.csv").is_err());
    assert_eq!(
        crate::confine_existing(&r, "p", "in/inner.csv").unwrap(),
        r.join("in/a.csv")
    );
}
