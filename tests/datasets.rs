//! Datasets on a real 3-node cluster with `--fs-root`: an import of a
//! generated folder of PNG and JPEG images is exact (count, sizes, sha256,
//! dimensions); a re-scan picks up added, removed and changed files; bad
//! paths and input are refused with clear errors; `orreryctl datasets`.
//! Scans run 4 files per job here, so each scan is a chain of jobs and the
//! per-page range bookkeeping is exercised.

mod common;

use common::Cluster;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// path -> (size, sha256, width, height), as the catalog must hold it.
type Expected = BTreeMap<String, (u64, String, u64, u64)>;

fn write_image(root: &Path, rel: &str, w: u32, h: u32, seed: u8) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x as u8).wrapping_add(seed), (y as u8) ^ seed, seed])
    });
    img.save(&p).expect("save image");
}

fn expected(root: &Path, rels: &[String]) -> Expected {
    rels.iter()
        .map(|r| {
            let bytes = std::fs::read(root.join(r)).expect("read");
            let sha: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let (w, h) = image::image_dimensions(root.join(r)).expect("dims");
            (r.clone(), (bytes.len() as u64, sha, w as u64, h as u64))
        })
        .collect()
}

/// Every item, paging `limit` at a time.
async fn all_items(c: &Cluster, node: usize, name: &str, limit: usize, extra: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/datasets/{name}/items?limit={limit}{extra}");
        if let Some(a) = &after {
            path.push_str(&format!("&after={}", urlencode(a)));
        }
        let v = c.json_ok(node, "GET", &path, None, 200).await;
        out.extend(v["items"].as_array().expect("items").iter().cloned());
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => return out,
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn as_expected(items: &[Value]) -> Expected {
    items
        .iter()
        .map(|i| {
            (
                i["path"].as_str().expect("path").to_string(),
                (
                    i["size"].as_u64().expect("size"),
                    i["sha256"].as_str().expect("sha").to_string(),
                    i["width"].as_u64().expect("w"),
                    i["height"].as_u64().expect("h"),
                ),
            )
        })
        .collect()
}

/// Waits until scan `generation` of `name` succeeded; returns the dataset.
async fn scanned(c: &Cluster, name: &str, generation: u64) -> Value {
    let start = Instant::now();
    loop {
        let (s, v) = c
            .json_req(1, "GET", &format!("/v1/datasets/{name}"), None)
            .await;
        if s == 200 && v["scan"]["generation"] == generation && v["scan"]["state"] != "running" {
            assert_eq!(v["scan"]["state"], "succeeded", "{v}");
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "scan {generation} of {name} did not end: {s} {v}\n{}",
            c.log_tails(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_import_rescan_and_errors() {
    let root = tempfile::tempdir().expect("tempdir");
    let root_path = root.path().canonicalize().expect("canonical root");
    let root_s = root_path.to_string_lossy().to_string();
    let c = Cluster::start_with_env(
        3,
        &["--workers", "2", "--fs-root", &root_s],
        &[("ORRERY_TEST_DATASET_PAGE_FILES", "4")],
    )
    .await;
    c.form(3);
    c.wait_version(8).await;

    // 18 PNGs and 6 JPEGs of known sizes, in two levels; a text file the
    // glob matches but that is no image; a file outside the dataset.
    let mut rels = Vec::new();
    for i in 0..18u32 {
        let rel = format!("photos/{}/p{i:02}.png", if i % 2 == 0 { "a" } else { "b" });
        write_image(&root_path, &rel, 8 + i, 5 + 2 * i, i as u8);
        rels.push(rel);
    }
    for i in 0..6u32 {
        let rel = format!("photos/j{i}.jpg");
        write_image(&root_path, &rel, 40 + i, 30, 100 + i as u8);
        rels.push(rel);
    }
    std::fs::write(root_path.join("photos/notes.png"), b"not an image").expect("write");
    std::fs::write(root_path.join("outside.png"), b"x").expect("write");

    let v = c
        .json_ok(
            0,
            "POST",
            "/v1/datasets",
            Some(json!({"name": "photos", "path": "photos", "glob": "**/*.*"})),
            201,
        )
        .await;
    assert_eq!(v["name"], "photos");
    assert_eq!(v["queue"], "datasets");
    assert_eq!(v["scan"]["generation"], 1);
    let d = scanned(&c, "photos", 1).await;
    let want = expected(&root_path, &rels);
    assert_eq!(d["items"], want.len() as u64, "{d}");
    let bytes: u64 = want.values().map(|w| w.0).sum();
    assert_eq!(d["bytes"], bytes);
    assert_eq!(d["scan"]["added"], 24);
    // Exact, from every node, in pages of 5.
    for node in 0..3 {
        let items = all_items(&c, node, "photos", 5, "").await;
        assert_eq!(as_expected(&items), want, "node {node}");
        let paths: Vec<&str> = items
            .iter()
            .map(|i| i["path"].as_str().unwrap_or(""))
            .collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "items come in path order");
    }
    // Filters.
    let jpgs = all_items(&c, 2, "photos", 100, "&ext=JPG").await;
    assert_eq!(jpgs.len(), 6);

    // Outputs attached by path; unknown paths are reported back.
    let a = c
        .json_ok(
            0,
            "PATCH",
            "/v1/datasets/photos/items",
            Some(json!({"items": [
                {"path": "photos/a/p00.png", "caption": "a red square", "thumbnail": "thumbs/p00.png"},
                {"path": "photos/b/p01.png", "caption": "kept", "embedding_id": "e1"},
                {"path": "photos/nope.png", "caption": "x"},
            ]})),
            200,
        )
        .await;
    assert_eq!(a["updated"], 2);
    assert_eq!(a["missing"], json!(["photos/nope.png"]));
    let captioned = all_items(&c, 1, "photos", 100, "&has_caption=true").await;
    assert_eq!(captioned.len(), 2);
    assert_eq!(captioned[0]["thumbnail"], "thumbs/p00.png");
    let uncaptioned = all_items(&c, 1, "photos", 100, "&has_caption=false").await;
    assert_eq!(uncaptioned.len(), 22);

    // Change the folder: 3 added (one in a new directory), 2 removed, 1
    // rewritten with other content (it loses its caption); p01 unchanged
    // keeps its caption.
    let mut rels2: Vec<String> = rels
        .iter()
        .filter(|r| !r.ends_with("p04.png") && !r.ends_with("j3.jpg"))
        .cloned()
        .collect();
    std::fs::remove_file(root_path.join("photos/a/p04.png")).expect("rm");
    std::fs::remove_file(root_path.join("photos/j3.jpg")).expect("rm");
    write_image(&root_path, "photos/a/p00.png", 64, 48, 77);
    for (i, rel) in ["photos/c/new0.png", "photos/a/p99.png", "photos/zz.jpg"]
        .iter()
        .enumerate()
    {
        write_image(&root_path, rel, 11 + i as u32, 13, 200 + i as u8);
        rels2.push(rel.to_string());
    }
    let v = c
        .json_ok(2, "POST", "/v1/datasets/photos/scan", None, 202)
        .await;
    assert_eq!(v["scan"]["generation"], 2);
    let d = scanned(&c, "photos", 2).await;
    let want2 = expected(&root_path, &rels2);
    assert_eq!(d["items"], want2.len() as u64);
    assert_eq!(
        (
            &d["scan"]["added"],
            &d["scan"]["updated"],
            &d["scan"]["removed"]
        ),
        (&json!(3), &json!(1), &json!(2)),
        "{d}"
    );
    let items = all_items(&c, 0, "photos", 7, "").await;
    assert_eq!(as_expected(&items), want2);
    let by_path: BTreeMap<&str, &Value> = items
        .iter()
        .map(|i| (i["path"].as_str().unwrap_or(""), i))
        .collect();
    assert_eq!(by_path["photos/a/p00.png"]["caption"], Value::Null);
    assert_eq!(by_path["photos/a/p00.png"]["width"], 64);
    assert_eq!(by_path["photos/b/p01.png"]["caption"], "kept");
    assert_eq!(by_path["photos/b/p01.png"]["embedding_id"], "e1");

    // A second dataset on the whole root; the list shows both.
    c.json_ok(
        1,
        "POST",
        "/v1/datasets",
        Some(json!({"name": "all-jpegs", "path": root_s, "glob": "**/*.jpg", "queue": "datasets"})),
        201,
    )
    .await;
    let d = scanned(&c, "all-jpegs", 1).await;
    assert_eq!(d["path"], ".");
    assert_eq!(d["items"], 6);
    let l = c.json_ok(0, "GET", "/v1/datasets", None, 200).await;
    let names: Vec<&str> = l["datasets"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| d["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["all-jpegs", "photos"]);

    bad_input(&c, &root_path).await;
    cli(&c).await;

    // Delete: the catalog goes, the files stay.
    let v = c
        .json_ok(0, "DELETE", "/v1/datasets/photos", None, 200)
        .await;
    assert_eq!(v["items"], want2.len() as u64);
    c.json_ok(1, "GET", "/v1/datasets/photos", None, 404).await;
    c.json_ok(1, "GET", "/v1/datasets/photos/items", None, 404)
        .await;
    assert!(root_path.join("photos/b/p01.png").exists());
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

async fn bad_input(c: &Cluster, root: &Path) {
    let outside = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(outside.path(), root.join("escape")).expect("symlink");
    for (body, want_code) in [
        (
            json!({"name": "x", "path": "../", "glob": "*"}),
            "invalid_path",
        ),
        (
            json!({"name": "x", "path": "photos/../..", "glob": "*"}),
            "invalid_path",
        ),
        (
            json!({"name": "x", "path": "/etc", "glob": "*"}),
            "invalid_path",
        ),
        (
            json!({"name": "x", "path": "escape", "glob": "*"}),
            "invalid_path",
        ),
        (
            json!({"name": "x", "path": "missing", "glob": "*"}),
            "invalid_path",
        ),
        (
            json!({"name": "x", "path": "outside.png", "glob": "*"}),
            "invalid_path",
        ),
        (
            json!({"name": "x", "path": "", "glob": "*"}),
            "invalid_path",
        ),
        (
            json!({"name": "x", "path": "photos", "glob": "../*"}),
            "invalid_glob",
        ),
        (
            json!({"name": "x", "path": "photos", "glob": "/etc/*"}),
            "invalid_glob",
        ),
        (
            json!({"name": "x", "path": "photos", "glob": "[a"}),
            "invalid_glob",
        ),
        (
            json!({"name": "a/b", "path": "photos", "glob": "*"}),
            "invalid_name",
        ),
        (json!({"name": "x", "path": "photos"}), "missing_field"),
        (
            json!({"name": "x", "path": "photos", "glob": "*", "extra": 1}),
            "unknown_field",
        ),
    ] {
        let (s, v) = c
            .json_retrying(0, "POST", "/v1/datasets", Some(body.clone()))
            .await;
        assert_eq!((s, code(&v)), (400, want_code), "{body}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap_or("").is_empty());
    }
    let (s, v) = c
        .json_retrying(
            0,
            "POST",
            "/v1/datasets",
            Some(json!({"name": "x", "path": "photos", "glob": "*", "queue": "no-such-queue"})),
        )
        .await;
    assert_eq!((s, code(&v)), (404, "not_found"), "{v}");
    let (s, v) = c
        .json_retrying(
            0,
            "POST",
            "/v1/datasets",
            Some(json!({"name": "photos", "path": "photos", "glob": "*"})),
        )
        .await;
    assert_eq!((s, code(&v)), (409, "conflict"), "{v}");
    for (method, path, want) in [
        ("GET", "/v1/datasets/nope", 404),
        ("GET", "/v1/datasets/nope/items", 404),
        ("POST", "/v1/datasets/nope/scan", 404),
        ("DELETE", "/v1/datasets/nope", 404),
        ("GET", "/v1/datasets/photos/items?limit=0", 400),
        ("GET", "/v1/datasets/photos/items?limit=1001", 400),
        ("GET", "/v1/datasets/photos/items?has_caption=maybe", 400),
        ("GET", "/v1/datasets/photos/items?bogus=1", 400),
    ] {
        let (s, v) = c.json_retrying(1, method, path, None).await;
        assert_eq!(s, want, "{method} {path}: {v}");
        assert!(v["error"]["code"].is_string(), "{v}");
    }
    for body in [
        json!({"items": []}),
        json!({"items": [{"path": "photos/a/p00.png", "thumbnail": "../x.png"}]}),
        json!({"items": [{"path": "photos/a/p00.png", "caption": "x".repeat(20_000)}]}),
        json!({"items": [{"path": "photos/a/p00.png", "size": 3}]}),
    ] {
        let (s, v) = c
            .json_retrying(2, "PATCH", "/v1/datasets/photos/items", Some(body))
            .await;
        assert_eq!(s, 400, "{v}");
    }
}

async fn cli(c: &Cluster) {
    let l = c.ctl_json(0, &["datasets", "list"]);
    assert_eq!(l["datasets"].as_array().map(Vec::len), Some(2), "{l}");
    let g = c.ctl_json(1, &["datasets", "get", "photos"]);
    assert_eq!(g["name"], "photos");
    let i = c.ctl_json(
        2,
        &[
            "datasets", "items", "photos", "--limit", "3", "--ext", "jpg",
        ],
    );
    assert_eq!(i["items"].as_array().map(Vec::len), Some(3), "{i}");
    let s = c.ctl_json(0, &["datasets", "scan", "all-jpegs"]);
    assert_eq!(s["scan"]["generation"], 2);
    scanned(c, "all-jpegs", 2).await;
    let out = c.ctl(0, &["datasets", "get", "nope"]);
    assert!(!out.status.success());
    let cr = c.ctl_json(
        1,
        &[
            "datasets", "create", "ctl-set", "--path", "photos/b", "--glob", "*.png",
        ],
    );
    assert_eq!(cr["name"], "ctl-set");
    let d = scanned(c, "ctl-set", 1).await;
    assert_eq!(d["items"], 9);
    let del = c.ctl_json(2, &["datasets", "delete", "ctl-set"]);
    assert_eq!(del["items"], 9);
}

/// Below cluster version 8 every dataset endpoint is refused before
/// anything is proposed or read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_need_cluster_version_8() {
    let root = tempfile::tempdir().expect("tempdir");
    let root_s = root.path().to_string_lossy().to_string();
    std::fs::create_dir_all(root.path().join("imgs")).expect("mkdir");
    let c = Cluster::start_with_env(
        1,
        &["--workers", "1", "--fs-root", &root_s],
        &[("ORRERY_TEST_MAX_CLUSTER_VERSION", "7")],
    )
    .await;
    c.form(1);
    c.wait_version(7).await;
    for (method, path, body) in [
        (
            "POST",
            "/v1/datasets",
            Some(json!({"name": "d", "path": "imgs", "glob": "*.png"})),
        ),
        ("GET", "/v1/datasets", None),
        ("GET", "/v1/datasets/d/items", None),
    ] {
        let (s, v) = c.json_retrying(0, method, path, body).await;
        assert_eq!(
            (s, code(&v)),
            (409, "cluster_version_too_low"),
            "{method} {path}: {v}"
        );
    }
}
