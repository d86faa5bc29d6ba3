//! Engine tests against an in-test job source, on real files in tempdirs
//! and real child processes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::gpu::GpuInventory;
use crate::*;

#[derive(Clone, Debug)]
pub(super) enum Outcome {
    Completed(Value, RunReport),
    Failed(String, RunReport),
}

impl Outcome {
    pub(super) fn ok(self) -> (Value, RunReport) {
        match self {
            Outcome::Completed(v, r) => (v, r),
            Outcome::Failed(e, _) => panic!("job failed: {e}"),
        }
    }
    pub(super) fn err(self) -> (String, RunReport) {
        match self {
            Outcome::Failed(e, r) => (e, r),
            Outcome::Completed(v, _) => panic!("job succeeded: {v}"),
        }
    }
}

/// An in-memory job source: a FIFO of jobs, long-poll claims, recorded
/// heartbeats and outcomes. GPU jobs are handed out only when the claim
/// offers enough free GPUs, like the real queue module.
#[derive(Default)]
pub(super) struct FakeSource {
    queue: Mutex<VecDeque<Claimed>>,
    arrived: Notify,
    claims: Mutex<Vec<ClaimRequest>>,
    claims_in_flight: AtomicUsize,
    heartbeats: Mutex<HashMap<String, u32>>,
    cancelled: Mutex<HashSet<String>>,
    conflicted: Mutex<HashSet<String>>,
    outcomes: Mutex<HashMap<String, Vec<Outcome>>>,
    /// Jobs failed with `fail_permanently` (not to be retried).
    pub(super) permanent: Mutex<HashSet<String>>,
    done: Notify,
    next: AtomicUsize,
}

impl FakeSource {
    pub(super) fn submit(&self, kind: &str, params: Value) -> String {
        self.submit_with(kind, params, Resources::default())
    }

    fn submit_with(&self, kind: &str, params: Value, resources: Resources) -> String {
        let id = format!("job-{}", self.next.fetch_add(1, Ordering::SeqCst));
        self.queue.lock().unwrap().push_back(Claimed {
            job_id: id.clone(),
            queue: "q".into(),
            kind: kind.into(),
            params,
            resources,
            token: 1,
            lease_s: 30,
        });
        self.arrived.notify_waiters();
        id
    }

    fn take(&self, req: &ClaimRequest) -> Option<Claimed> {
        let mut q = self.queue.lock().unwrap();
        let pos = q.iter().position(|j| {
            let offered = if j.resources.shared_gpu {
                req.free_gpus.len() + req.shared_gpus.len()
            } else {
                req.free_gpus.len()
            };
            req.kinds.contains(&j.kind) && offered as u32 >= j.resources.gpus
        })?;
        q.remove(pos)
    }

    pub(super) async fn outcome(&self, id: &str, within: Duration) -> Outcome {
        let deadline = Instant::now() + within;
        loop {
            let waiter = self.done.notified();
            if let Some(o) = self
                .outcomes
                .lock()
                .unwrap()
                .get(id)
                .and_then(|v| v.first())
            {
                return o.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "job {id} did not finish within {within:?}");
            let _ = tokio::time::timeout(left, waiter).await;
        }
    }

    fn record(&self, id: &str, o: Outcome) {
        self.outcomes
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default()
            .push(o);
        self.done.notify_waiters();
    }
}

#[async_trait::async_trait]
impl JobSource for FakeSource {
    async fn claim(&self, req: ClaimRequest) -> Result<Option<Claimed>, SourceError> {
        self.claims_in_flight.fetch_add(1, Ordering::SeqCst);
        // Counts down however the claim ends, dropped by the engine included.
        struct Done<'a>(&'a AtomicUsize);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _done = Done(&self.claims_in_flight);
        self.claims.lock().unwrap().push(req.clone());
        let deadline = tokio::time::Instant::now() + req.wait;
        let r = loop {
            let waiter = self.arrived.notified();
            if let Some(j) = self.take(&req) {
                break Some(j);
            }
            if tokio::time::timeout_at(deadline, waiter).await.is_err() {
                break None;
            }
        };
        Ok(r)
    }

    async fn heartbeat(&self, job_id: &str, _token: u64) -> Result<HeartbeatReply, SourceError> {
        *self
            .heartbeats
            .lock()
            .unwrap()
            .entry(job_id.to_string())
            .or_default() += 1;
        if self.conflicted.lock().unwrap().contains(job_id) {
            return Err(SourceError::Conflict("stale token".into()));
        }
        Ok(HeartbeatReply {
            cancelled: self.cancelled.lock().unwrap().contains(job_id),
        })
    }

    async fn complete(
        &self,
        job_id: &str,
        _t: u64,
        result: Value,
        run: RunReport,
    ) -> Result<(), SourceError> {
        self.record(job_id, Outcome::Completed(result, run));
        Ok(())
    }

    async fn fail(
        &self,
        job_id: &str,
        _t: u64,
        error: String,
        run: RunReport,
    ) -> Result<(), SourceError> {
        self.record(job_id, Outcome::Failed(error, run));
        // Free GPU slots may let a queued GPU job through now.
        self.arrived.notify_waiters();
        Ok(())
    }

    async fn fail_permanently(
        &self,
        job_id: &str,
        t: u64,
        error: String,
        run: RunReport,
    ) -> Result<(), SourceError> {
        self.permanent.lock().unwrap().insert(job_id.to_string());
        self.fail(job_id, t, error, run).await
    }
}

pub(super) const WAIT: Duration = Duration::from_secs(60);

/// True when the tests run as root (command jobs then run as `nobody`).
pub(super) fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// A temp dir that a command child (as `nobody` when the tests are root)
/// can write to.
pub(super) fn shared_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

pub(super) fn config(root: Option<&Path>) -> ExecConfig {
    ExecConfig {
        node_id: 7,
        slots: 2,
        fs_root: root.map(Path::to_path_buf),
        allow_command_jobs: true,
        // As root, command jobs are refused without a command user.
        command_user: is_root().then(|| "nobody".to_string()),
        heartbeat_every: Duration::from_millis(100),
        claim_wait: Duration::from_millis(500),
        ..ExecConfig::default()
    }
}

pub(super) fn engine(cfg: ExecConfig) -> (Arc<FakeSource>, Engine) {
    engine_with(cfg, Vec::new(), GpuInventory::empty())
}

fn engine_with(
    cfg: ExecConfig,
    handlers: Vec<(String, Arc<dyn KindHandler>)>,
    gpus: GpuInventory,
) -> (Arc<FakeSource>, Engine) {
    let src = Arc::new(FakeSource::default());
    let e = Engine::start_with_inventory(cfg, src.clone(), handlers, gpus);
    (src, e)
}

pub(super) fn root() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().canonicalize().unwrap();
    (d, p)
}

pub(super) fn log_text(e: &Engine, id: &str) -> String {
    String::from_utf8_lossy(&e.logs().read(id, 1).map(|l| l.0).unwrap_or_default()).into_owned()
}

// ---------------------------------------------------------------- fs.summarize

/// A generated tree: nested dirs, mixed extensions and sizes, an empty dir,
/// a symlink to a file and one leading outside (neither is counted).
fn make_tree(root: &Path, outside: &Path) {
    let mut n = 0u64;
    for a in 0..4 {
        for b in 0..3 {
            let dir = root.join(format!("tree/d{a}/e{b}"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..(a + b + 1) {
                n += 1;
                let ext = ["txt", "CSV", "png", "", "tar.gz"][(n % 5) as usize];
                let name = if ext.is_empty() {
                    format!("f{f}")
                } else {
                    format!("f{f}.{ext}")
                };
                std::fs::write(dir.join(name), vec![b'x'; ((n * 7919) % 5000) as usize]).unwrap();
            }
        }
    }
    std::fs::create_dir_all(root.join("tree/empty")).unwrap();
    std::fs::write(root.join("tree/top.md"), "hello").unwrap();
    std::os::unix::fs::symlink(root.join("tree/top.md"), root.join("tree/link.md")).unwrap();
    std::os::unix::fs::symlink(outside, root.join("tree/out")).unwrap();
}

/// files, dirs, bytes, by extension, (size, path) of every file.
type Acc = (
    u64,
    u64,
    u64,
    BTreeMap<String, (u64, u64)>,
    Vec<(u64, String)>,
);

/// The plain sequential walk the parallel one must equal.
fn sequential(root: &Path, start: &Path, max_depth: Option<u64>) -> Value {
    fn go(root: &Path, dir: &Path, depth: u64, max: Option<u64>, acc: &mut Acc) {
        let here = depth + 1;
        if max.is_some_and(|m| here > m) {
            return;
        }
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                acc.1 += 1;
                if max.is_none_or(|m| here < m) {
                    go(root, &p, here, max, acc);
                }
            } else if md.is_file() {
                acc.0 += 1;
                acc.2 += md.len();
                let ext = p
                    .extension()
                    .map(|e| e.to_string_lossy().to_lowercase())
                    .unwrap_or_default();
                let e = acc.3.entry(ext).or_default();
                e.0 += 1;
                e.1 += md.len();
                acc.4.push((
                    md.len(),
                    p.strip_prefix(root).unwrap().to_string_lossy().into_owned(),
                ));
            }
        }
    }
    let mut acc = Default::default();
    go(root, start, 0, max_depth, &mut acc);
    let (files, dirs, bytes, by_ext, mut largest) = acc;
    largest.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    largest.truncate(10);
    json!({
        "files": files, "dirs": dirs, "bytes": bytes,
        "by_extension": by_ext.iter().map(|(k, (f, b))| (k.clone(), json!({"files": f, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
        "largest": largest.iter().map(|(b, p)| json!({"path": p, "bytes": b})).collect::<Vec<_>>(),
        "errors": [], "error_count": 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_summarize_equals_a_sequential_walk() {
    let (_g, r) = root();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("big"), vec![0u8; 100_000]).unwrap();
    make_tree(&r, outside.path());
    let (src, e) = engine(config(Some(&r)));
    let all = src.submit("fs.summarize", json!({"path": "tree"}));
    let d2 = src.submit("fs.summarize", json!({"path": "tree", "max_depth": 2}));
    let sub = src.submit(
        "fs.summarize",
        json!({"path": r.join("tree/d3").to_string_lossy()}),
    );
    let (v, run) = src.outcome(&all, WAIT).await.ok();
    let expected = sequential(&r, &r.join("tree"), None);
    assert_eq!(v, expected);
    assert!(v["files"].as_u64().unwrap() > 40, "{v}");
    assert_eq!(
        v["by_extension"]["csv"]["files"],
        expected["by_extension"]["csv"]["files"]
    );
    assert_eq!(run.exit_code, Some(0));
    assert_eq!(run.node, 7);
    assert!(run.finished_ms >= run.started_ms);
    assert_eq!(
        src.outcome(&d2, WAIT).await.ok().0,
        sequential(&r, &r.join("tree"), Some(2))
    );
    assert_eq!(
        src.outcome(&sub, WAIT).await.ok().0,
        sequential(&r, &r.join("tree/d3"), None)
    );
    assert!(log_text(&e, &all).contains("summarizing tree"));
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_attempts_fail_with_clear_errors() {
    let (_g, r) = root();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(r.join("in")).unwrap();
    std::os::unix::fs::symlink(outside.path(), r.join("in/out")).unwrap();
    std::fs::write(outside.path().join("x.csv"), "a\n1\n").unwrap();
    let (src, e) = engine(config(Some(&r)));
    let cases = [
        ("fs.summarize", json!({"path": "../"}), "'..'"),
        ("fs.summarize", json!({"path": "in/../../etc"}), "'..'"),
        (
            "fs.summarize",
            json!({"path": "/etc"}),
            "outside the fs root",
        ),
        ("fs.summarize", json!({"path": "in/out"}), "symlink"),
        (
            "fs.csv_transform",
            json!({"input_glob": "in/out/*.csv", "output_dir": "o"}),
            "params.input_glob",
        ),
        (
            "fs.csv_transform",
            json!({"input_glob": "in/*.csv", "output_dir": "in/out/o"}),
            "params.output_dir",
        ),
        (
            "fs.csv_transform",
            json!({"input_glob": "in/*.csv", "output_dir": "/tmp"}),
            "outside the fs root",
        ),
        (
            "image.thumbnail",
            json!({"input_glob": "../*.png", "output_dir": "o", "max_side": 8}),
            "'..'",
        ),
    ];
    let ids: Vec<_> = cases
        .iter()
        .map(|(k, p, _)| src.submit(k, p.clone()))
        .collect();
    for (id, (kind, p, want)) in ids.iter().zip(cases.iter()) {
        let (err, run) = src.outcome(id, WAIT).await.err();
        assert!(err.contains(want), "{kind} {p}: {err}");
        assert_eq!(run.exit_code, None);
    }
    assert!(!outside.path().join("o").exists());
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_fs_root_refuses_fs_and_image_kinds() {
    let (src, e) = engine(ExecConfig {
        allow_command_jobs: false,
        ..config(None)
    });
    assert!(e.kinds().is_empty(), "{:?}", e.kinds());
    // Not offered in claims...
    let id = src.submit("fs.summarize", json!({"path": "."}));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(src.outcomes.lock().unwrap().get(&id).is_none());
    assert!(src
        .claims
        .lock()
        .unwrap()
        .iter()
        .all(|c| c.kinds.is_empty()));
    e.shutdown().await;
    // ...and refused with a clear error if handed out anyway.
    let src = Arc::new(FakeSource::default());
    let forced = Arc::new(Forced(src.clone()));
    let e = Engine::start_with_inventory(config(None), forced, Vec::new(), GpuInventory::empty());
    let id = src.submit("fs.summarize", json!({"path": "."}));
    let (err, _) = src.outcome(&id, WAIT).await.err();
    assert!(err.contains("no usable --fs-root"), "{err}");
    e.shutdown().await;
}

/// Hands out jobs whatever kinds the claim offers (a misbehaving source).
struct Forced(Arc<FakeSource>);

#[async_trait::async_trait]
impl JobSource for Forced {
    async fn claim(&self, mut req: ClaimRequest) -> Result<Option<Claimed>, SourceError> {
        req.kinds = vec!["fs.summarize".into(), "command".into(), "gpu.job".into()];
        req.free_gpus = vec![fake_gpu(9); 4];
        self.0.claim(req).await
    }
    async fn heartbeat(&self, id: &str, t: u64) -> Result<HeartbeatReply, SourceError> {
        self.0.heartbeat(id, t).await
    }
    async fn complete(&self, id: &str, t: u64, v: Value, r: RunReport) -> Result<(), SourceError> {
        self.0.complete(id, t, v, r).await
    }
    async fn fail(&self, id: &str, t: u64, e: String, r: RunReport) -> Result<(), SourceError> {
        self.0.fail(id, t, e, r).await
    }
}

// ------------------------------------------------------------ fs.csv_transform

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_transform_selects_renames_and_filters() {
    let (_g, r) = root();
    std::fs::create_dir_all(r.join("in")).unwrap();
    for i in 0..3 {
        let mut s = String::from("id,name,score,city\n");
        for row in 0..50 {
            s.push_str(&format!(
                "{row},n{i}_{row},{},\"Town, {}\"\n",
                (row * 7 + i) % 100,
                row % 3
            ));
        }
        std::fs::write(r.join(format!("in/f{i}.csv")), s).unwrap();
    }
    std::fs::write(r.join("in/notes.txt"), "not a csv").unwrap();
    let (src, e) = engine(config(Some(&r)));
    let id = src.submit(
        "fs.csv_transform",
        json!({"input_glob": "in/*.csv", "output_dir": "out/x",
               "select": ["name", "score", "city"], "rename": {"score": "points"},
               "filter": {"column": "score", "op": "ge", "value": 50}}),
    );
    let (v, _) = src.outcome(&id, WAIT).await.ok();
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "{v}");
    assert_eq!(v["errors"], json!([]));
    for (i, f) in files.iter().enumerate() {
        assert_eq!(f["input"], format!("in/f{i}.csv"));
        assert_eq!(f["output"], format!("out/x/f{i}.csv"));
        assert_eq!(f["rows_in"], 50);
        let expected: Vec<Vec<String>> = (0..50)
            .filter(|row| (row * 7 + i) % 100 >= 50)
            .map(|row| {
                vec![
                    format!("n{i}_{row}"),
                    ((row * 7 + i) % 100).to_string(),
                    format!("Town, {}", row % 3),
                ]
            })
            .collect();
        assert_eq!(f["rows_out"], expected.len());
        let mut rdr = csv::Reader::from_path(r.join(format!("out/x/f{i}.csv"))).unwrap();
        assert_eq!(
            rdr.headers().unwrap().iter().collect::<Vec<_>>(),
            vec!["name", "points", "city"]
        );
        let got: Vec<Vec<String>> = rdr
            .records()
            .map(|r| r.unwrap().iter().map(str::to_string).collect())
            .collect();
        assert_eq!(got, expected);
    }
    // String compare and contains; a missing column is a per-file error.
    let id = src.submit(
        "fs.csv_transform",
        json!({"input_glob": "in/f0.csv", "output_dir": "out/y", "filter": {"column": "city", "op": "contains", "value": ", 2"}}),
    );
    let (v, _) = src.outcome(&id, WAIT).await.ok();
    assert_eq!(v["files"][0]["rows_out"], 16, "{v}");
    let id = src.submit(
        "fs.csv_transform",
        json!({"input_glob": "in/f0.csv", "output_dir": "out/z", "select": ["nope"]}),
    );
    let (v, _) = src.outcome(&id, WAIT).await.ok();
    assert!(
        v["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("select column 'nope'"),
        "{v}"
    );
    assert!(!r.join("out/z/f0.csv").exists());
    // Two matches with one name would write one output: both refused.
    std::fs::create_dir_all(r.join("in/sub")).unwrap();
    std::fs::copy(r.join("in/f0.csv"), r.join("in/sub/f0.csv")).unwrap();
    let id = src.submit(
        "fs.csv_transform",
        json!({"input_glob": "in/**/f0.csv", "output_dir": "out/w"}),
    );
    let (v, _) = src.outcome(&id, WAIT).await.ok();
    assert_eq!(v["files"], json!([]), "{v}");
    assert_eq!(v["errors"].as_array().unwrap().len(), 2, "{v}");
    assert!(
        v["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("same name"),
        "{v}"
    );
    // Writing next to the inputs is refused per file.
    let id = src.submit(
        "fs.csv_transform",
        json!({"input_glob": "in/f1.csv", "output_dir": "in"}),
    );
    let (v, _) = src.outcome(&id, WAIT).await.ok();
    assert!(
        v["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("overwrite the input"),
        "{v}"
    );
    e.shutdown().await;
}

// ------------------------------------------------------------- image.thumbnail

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnails_keep_aspect_ratio() {
    let (_g, r) = root();
    std::fs::create_dir_all(r.join("img")).unwrap();
    let sizes = [(200u32, 100u32), (30, 90), (40, 20)];
    for (i, (w, h)) in sizes.iter().enumerate() {
        let img = image::RgbImage::from_fn(*w, *h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, i as u8])
        });
        img.save(r.join(format!("img/p{i}.png"))).unwrap();
    }
    image::RgbImage::from_pixel(120, 60, image::Rgb([1, 2, 3]))
        .save(r.join("img/j.jpg"))
        .unwrap();
    std::fs::write(r.join("img/broken.png"), "not a png").unwrap();
    let (src, e) = engine(config(Some(&r)));
    let id = src.submit(
        "image.thumbnail",
        json!({"input_glob": "img/*", "output_dir": "thumbs", "max_side": 60}),
    );
    let (v, _) = src.outcome(&id, WAIT).await.ok();
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 4, "{v}");
    assert_eq!(v["errors"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["errors"][0]["input"], "img/broken.png");
    let expect: HashMap<&str, (u32, u32, u32, u32)> = [
        ("img/p0.png", (200, 100, 60, 30)),
        ("img/p1.png", (30, 90, 20, 60)),
        ("img/p2.png", (40, 20, 40, 20)),
        ("img/j.jpg", (120, 60, 60, 30)),
    ]
    .into();
    for f in files {
        let input = f["input"].as_str().unwrap();
        let (w, h, tw, th) = expect[input];
        assert_eq!(
            (
                f["width"].as_u64(),
                f["height"].as_u64(),
                f["thumb_width"].as_u64(),
                f["thumb_height"].as_u64()
            ),
            (
                Some(w.into()),
                Some(h.into()),
                Some(tw.into()),
                Some(th.into())
            ),
            "{f}"
        );
        let out = r.join(f["output"].as_str().unwrap());
        assert!(out.starts_with(r.join("thumbs")));
        let img = image::open(&out).unwrap();
        assert_eq!((img.width(), img.height()), (tw, th));
    }
    assert_eq!(crate::kinds::thumbnail::fit(1000, 1, 10), (10, 1));
    assert_eq!(crate::kinds::thumbnail::fit(3, 1000, 100), (1, 100));
    e.shutdown().await;
}

// --------------------------------------------------------------------- command

fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waiting for an init that does not reap is dead too.
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

async fn read_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if let Ok(p) = s.trim().parse() {
                return p;
            }
        }
        assert!(Instant::now() < deadline, "no pid file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(pid) {
        assert!(Instant::now() < deadline, "process {pid} still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_output_is_captured() {
    let (src, e) = engine(config(None));
    assert_eq!(e.kinds(), vec!["command".to_string()]);
    let id = src.submit(
        "command",
        json!({"argv": ["sh", "-c", "echo hello; echo oops >&2; echo \"v=$V cuda=[$CUDA_VISIBLE_DEVICES] pwd=$(pwd)\""],
               "env": {"V": "42"}, "cwd": "/tmp"}),
    );
    let (v, run) = src.outcome(&id, WAIT).await.ok();
    assert_eq!(v, json!({"exit_code": 0}));
    assert_eq!(run.exit_code, Some(0));
    let log = log_text(&e, &id);
    assert!(log.contains("hello\n") && log.contains("oops\n"), "{log}");
    assert!(log.contains("v=42 cuda=[] pwd=/tmp"), "{log}");
    assert!(e.logs().read(&id, 1).unwrap().1, "log marked ended");
    let id = src.submit("command", json!({"argv": ["sh", "-c", "echo bye; exit 3"]}));
    let (err, run) = src.outcome(&id, WAIT).await.err();
    assert_eq!(err, "command exited with code 3");
    assert_eq!(run.exit_code, Some(3));
    let id = src.submit("command", json!({"argv": ["/nonexistent/prog"]}));
    let (err, _) = src.outcome(&id, WAIT).await.err();
    assert!(err.contains("cannot start '/nonexistent/prog'"), "{err}");
    let id = src.submit(
        "command",
        json!({"argv": ["true"], "cwd": "/nonexistent/dir"}),
    );
    let (err, _) = src.outcome(&id, WAIT).await.err();
    assert!(
        err.contains("params.cwd '/nonexistent/dir' is not a directory"),
        "{err}"
    );
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_timeout_kills_the_process_group() {
    let dir = shared_tempdir();
    let pidfile = dir.path().join("pid");
    let (src, e) = engine(config(None));
    let id = src.submit(
        "command",
        json!({"argv": ["sh", "-c", format!("sleep 1000 & echo $! > {}; wait", pidfile.display())], "timeout_s": 1}),
    );
    let pid = read_pid(&pidfile).await;
    let (err, run) = src.outcome(&id, WAIT).await.err();
    assert!(err.contains("timed out after 1 s"), "{err}");
    assert!(run.duration_ms >= 1000, "{run:?}");
    wait_gone(pid).await;
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_process_group() {
    let dir = shared_tempdir();
    let pidfile = dir.path().join("pid");
    let (src, e) = engine(config(None));
    let id = src.submit(
        "command",
        json!({"argv": ["sh", "-c", format!("echo started; sleep 1000 & echo $! > {}; wait", pidfile.display())]}),
    );
    let pid = read_pid(&pidfile).await;
    assert!(!gone(pid));
    let t = Instant::now();
    src.cancelled.lock().unwrap().insert(id.clone());
    let (err, _) = src.outcome(&id, WAIT).await.err();
    assert_eq!(err, CANCELLED);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "cancel took {:?}",
        t.elapsed()
    );
    wait_gone(pid).await;
    let deadline = Instant::now() + WAIT;
    while !e.logs().read(&id, 1).unwrap().1 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = log_text(&e, &id);
    assert!(
        log.contains("started") && log.contains("process group killed"),
        "{log}"
    );
    assert_eq!(src.outcomes.lock().unwrap()[&id].len(), 1, "reported once");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_lease_stops_the_work_and_reports_nothing() {
    let dir = shared_tempdir();
    let pidfile = dir.path().join("pid");
    let (src, e) = engine(config(None));
    let id = src.submit(
        "command",
        json!({"argv": ["sh", "-c", format!("sleep 1000 & echo $! > {}; wait", pidfile.display())]}),
    );
    let pid = read_pid(&pidfile).await;
    src.conflicted.lock().unwrap().insert(id.clone());
    wait_gone(pid).await;
    let deadline = Instant::now() + WAIT;
    while !e.logs().read(&id, 1).unwrap().1 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(src.outcomes.lock().unwrap().get(&id).is_none());
    assert!(log_text(&e, &id).contains("lease lost"));
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_while_running_and_command_refused_when_disabled() {
    let (src, e) = engine(config(None));
    let id = src.submit("command", json!({"argv": ["sleep", "1"]}));
    src.outcome(&id, WAIT).await.ok();
    let beats = src.heartbeats.lock().unwrap()[&id];
    assert!(
        (5..=30).contains(&beats),
        "{beats} heartbeats in 1 s at 100 ms"
    );
    e.shutdown().await;

    let src = Arc::new(FakeSource::default());
    // Some kind must be runnable (here the fs kinds), or no slot claims at all.
    let (_dir, fs_root) = root();
    let cfg = ExecConfig {
        allow_command_jobs: false,
        ..config(Some(&fs_root))
    };
    let e = Engine::start_with_inventory(
        cfg,
        Arc::new(Forced(src.clone())),
        Vec::new(),
        GpuInventory::empty(),
    );
    let id = src.submit("command", json!({"argv": ["true"]}));
    let (err, _) = src.outcome(&id, WAIT).await.err();
    assert!(err.contains("--allow-command-jobs"), "{err}");
    e.shutdown().await;
}

// ------------------------------------------------------------------------ GPUs

fn fake_gpu(i: u32) -> GpuInfo {
    GpuInfo {
        uuid: format!("GPU-fake-{i}"),
        index: i,
        name: "Fake".into(),
        memory_total_mb: 16_000,
        memory_used_mb: 0,
        utilization_pct: 0,
        temperature_c: 40,
        compute_capability: "8.0".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_jobs_get_their_own_gpus() {
    let dir = shared_tempdir();
    let (src, e) = engine_with(
        config(None),
        Vec::new(),
        GpuInventory::fixed(vec![fake_gpu(0)]),
    );
    assert_eq!(e.gpus().len(), 1);
    let gpu = Resources {
        gpus: 1,
        ..Resources::default()
    };
    // Two GPU jobs, one GPU, two slots: they must not overlap.
    let ids: Vec<_> = (0..2)
        .map(|i| {
            let f = dir.path().join(format!("cuda{i}"));
            src.submit_with(
                "command",
                json!({"argv": ["sh", "-c", format!("echo $CUDA_VISIBLE_DEVICES > {}; sleep 0.5", f.display())]}),
                gpu.clone(),
            )
        })
        .collect();
    let mut runs = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (_, run) = src.outcome(id, WAIT).await.ok();
        assert_eq!(run.gpu_uuids, vec!["GPU-fake-0".to_string()]);
        assert_eq!(run.gpu_peak_memory_mb, None, "no NVML, no samples");
        assert_eq!(run.gpu_mean_utilization_pct, None);
        let seen = std::fs::read_to_string(dir.path().join(format!("cuda{i}"))).unwrap();
        assert_eq!(seen.trim(), "GPU-fake-0");
        runs.push(run);
    }
    runs.sort_by_key(|r| r.started_ms);
    assert!(
        runs[0].finished_ms <= runs[1].started_ms,
        "GPU shared: {runs:?}"
    );
    // While a GPU job ran, no concurrent claim offered the GPU.
    assert!(src
        .claims
        .lock()
        .unwrap()
        .iter()
        .any(|c| c.free_gpus.len() == 1));
    e.shutdown().await;
}

/// A GPU let go is offered again soon, not after the offering slot's
/// long poll (here 5 s) runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freed_gpu_is_offered_again_promptly() {
    let cfg = ExecConfig {
        slots: 4,
        claim_wait: Duration::from_secs(5),
        ..config(None)
    };
    let (src, e) = engine_with(cfg, Vec::new(), GpuInventory::fixed(vec![fake_gpu(0)]));
    let gpu = Resources {
        gpus: 1,
        ..Resources::default()
    };
    let a = src.submit_with("command", json!({"argv": ["sleep", "0.5"]}), gpu.clone());
    let b = src.submit_with("command", json!({"argv": ["true"]}), gpu);
    let (_, ra) = src.outcome(&a, WAIT).await.ok();
    let (_, rb) = src.outcome(&b, WAIT).await.ok();
    let gap = rb.started_ms.saturating_sub(ra.finished_ms);
    assert!(gap < 2_000, "the GPU sat idle {gap} ms between jobs");
    e.shutdown().await;
}

/// `shared_gpu` jobs run together on one GPU (the claim offers it to them
/// as shared); an exclusive job waits until they have all let it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_gpu_jobs_share_one_gpu() {
    let (src, e) = engine_with(
        config(None),
        Vec::new(),
        GpuInventory::fixed(vec![fake_gpu(0)]),
    );
    let shared = Resources {
        gpus: 1,
        shared_gpu: true,
        ..Resources::default()
    };
    let sleep = json!({"argv": ["sh", "-c", "echo $CUDA_VISIBLE_DEVICES; sleep 1.5"]});
    let a = src.submit_with("command", sleep.clone(), shared.clone());
    let b = src.submit_with("command", sleep.clone(), shared);
    let x = src.submit_with(
        "command",
        json!({"argv": ["true"]}),
        Resources {
            gpus: 1,
            ..Resources::default()
        },
    );
    let (_, ra) = src.outcome(&a, WAIT).await.ok();
    let (_, rb) = src.outcome(&b, WAIT).await.ok();
    let (_, rx) = src.outcome(&x, WAIT).await.ok();
    for r in [&ra, &rb, &rx] {
        assert_eq!(r.gpu_uuids, vec!["GPU-fake-0".to_string()]);
    }
    assert!(
        ra.started_ms < rb.finished_ms && rb.started_ms < ra.finished_ms,
        "shared jobs did not overlap: {ra:?} {rb:?}"
    );
    assert!(
        rx.started_ms >= ra.finished_ms.max(rb.finished_ms),
        "the exclusive job ran beside shared ones: {rx:?} {ra:?} {rb:?}"
    );
    // The second shared job was claimed on the shared offer alone.
    assert!(src
        .claims
        .lock()
        .unwrap()
        .iter()
        .any(|c| c.free_gpus.is_empty() && c.shared_gpus.len() == 1));
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gpus_without_nvml() {
    let (src, e) = engine(config(None));
    assert!(e.gpus().is_empty());
    let id = src.submit_with(
        "command",
        json!({"argv": ["true"]}),
        Resources {
            gpus: 1,
            ..Resources::default()
        },
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        src.outcomes.lock().unwrap().get(&id).is_none(),
        "GPU job stays queued"
    );
    assert!(src
        .claims
        .lock()
        .unwrap()
        .iter()
        .all(|c| c.free_gpus.is_empty()));
    e.shutdown().await;
    // Handed out anyway: refused with a clear error, not run.
    let src = Arc::new(FakeSource::default());
    let e = Engine::start_with_inventory(
        config(None),
        Arc::new(Forced(src.clone())),
        Vec::new(),
        GpuInventory::empty(),
    );
    let id = src.submit_with(
        "command",
        json!({"argv": ["true"]}),
        Resources {
            gpus: 1,
            ..Resources::default()
        },
    );
    let (err, _) = src.outcome(&id, WAIT).await.err();
    assert!(err.contains("no 1 free GPU"), "{err}");
    e.shutdown().await;
}

// ------------------------------------------------- handlers, limits, lifecycle

struct Sum;

impl KindHandler for Sum {
    fn validate(&self, params: &Value) -> Result<(), String> {
        match params.get("numbers").and_then(Value::as_array) {
            Some(a) if a.iter().all(Value::is_number) => Ok(()),
            _ => Err("params.numbers must be an array of numbers".into()),
        }
    }
    fn run(&self, params: &Value, ctx: &RunContext) -> Result<Value, String> {
        let n: f64 = params["numbers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_f64)
            .sum();
        ctx.log(&format!("sum is {n}"));
        if let Some(big) = params.get("pad").and_then(Value::as_u64) {
            return Ok(json!({"pad": "x".repeat(big as usize)}));
        }
        Ok(json!({"sum": n, "gpus": ctx.gpus().len(), "root": ctx.fs_root().is_some()}))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_handlers_and_result_cap() {
    let cfg = ExecConfig {
        max_result_bytes: 1000,
        ..config(None)
    };
    let (src, e) = engine_with(
        cfg,
        vec![("test.sum".into(), Arc::new(Sum))],
        GpuInventory::empty(),
    );
    assert!(e.kinds().contains(&"test.sum".to_string()));
    let id = src.submit("test.sum", json!({"numbers": [1, 2, 3.5]}));
    let (v, run) = src.outcome(&id, WAIT).await.ok();
    assert_eq!(v, json!({"sum": 6.5, "gpus": 0, "root": false}));
    assert_eq!(run.exit_code, Some(0));
    assert_eq!(log_text(&e, &id), "sum is 6.5\n");
    let id = src.submit("test.sum", json!({"numbers": "no"}));
    assert_eq!(
        src.outcome(&id, WAIT).await.err().0,
        "params.numbers must be an array of numbers"
    );
    let id = src.submit("test.sum", json!({"numbers": [], "pad": 2000}));
    let (err, run) = src.outcome(&id, WAIT).await.err();
    assert!(
        err.contains("result is 2010 bytes") && err.contains("max_result_bytes"),
        "{err}"
    );
    assert_eq!(run.exit_code, Some(0), "the work itself succeeded");
    let (ctx, logs) = RunContext::detached(None, vec!["g".into()]);
    assert_eq!(Sum.run(&json!({"numbers": [1]}), &ctx).unwrap()["gpus"], 1);
    assert_eq!(logs.read("detached", 0).unwrap().0, b"sum is 1\n".to_vec());
    e.shutdown().await;
}

/// A source that answers every claim at once with nothing.
#[derive(Default)]
struct Empty {
    claims: AtomicUsize,
}

#[async_trait::async_trait]
impl JobSource for Empty {
    async fn claim(&self, _req: ClaimRequest) -> Result<Option<Claimed>, SourceError> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        Ok(None)
    }
    async fn heartbeat(&self, _: &str, _: u64) -> Result<HeartbeatReply, SourceError> {
        Ok(HeartbeatReply::default())
    }
    async fn complete(&self, _: &str, _: u64, _: Value, _: RunReport) -> Result<(), SourceError> {
        Ok(())
    }
    async fn fail(&self, _: &str, _: u64, _: String, _: RunReport) -> Result<(), SourceError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_busy_loop_and_shutdown_stops_claiming() {
    let src = Arc::new(Empty::default());
    let e =
        Engine::start_with_inventory(config(None), src.clone(), Vec::new(), GpuInventory::empty());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let n = src.claims.load(Ordering::SeqCst);
    // Two slots, 250 ms pause after an instant empty answer: about 8.
    assert!((2..=16).contains(&n), "{n} claims in 1 s");
    e.shutdown().await;
    let after = src.claims.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(src.claims.load(Ordering::SeqCst), after);

    // A long-polling source: shutdown interrupts the claims in flight.
    let (src, e) = engine(config(None));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    e.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(src.claims_in_flight.load(Ordering::SeqCst), 0);
    let id = src.submit("command", json!({"argv": ["true"]}));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        src.outcomes.lock().unwrap().get(&id).is_none(),
        "claimed after shutdown"
    );
}

/// An engine that can run nothing must not claim: an empty kinds list
/// matches every kind, so its slots would take (and fail) jobs meant for
/// external workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_runnable_means_no_claims() {
    let src = Arc::new(Empty::default());
    let cfg = ExecConfig {
        allow_command_jobs: false,
        ..config(None)
    };
    let e = Engine::start_with_inventory(cfg, src.clone(), Vec::new(), GpuInventory::empty());
    assert!(e.kinds().is_empty());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(src.claims.load(Ordering::SeqCst), 0);
    e.shutdown().await;
}

// ------------------------------------------------------------- validate_params

#[test]
fn validate_params_names_the_field() {
    let ok = [
        ("fs.summarize", json!({"path": "a"})),
        ("fs.summarize", json!({"path": "a", "max_depth": 3})),
        (
            "fs.csv_transform",
            json!({"input_glob": "*.csv", "output_dir": "o", "select": ["a"], "rename": {"a": "b"}, "filter": {"column": "a", "op": "lt", "value": 3}}),
        ),
        (
            "image.thumbnail",
            json!({"input_glob": "*.png", "output_dir": "o", "max_side": 64}),
        ),
        (
            "command",
            json!({"argv": ["ls", ""], "env": {"A": "b"}, "cwd": "/", "timeout_s": 0.5}),
        ),
        ("some.external.kind", json!("anything")),
    ];
    for (k, p) in ok {
        assert_eq!(validate_params(k, &p), Ok(()), "{k} {p}");
    }
    let bad = [
        ("fs.summarize", json!([]), "must be a JSON object"),
        ("fs.summarize", json!({}), "params.path is required"),
        (
            "fs.summarize",
            json!({"path": 3}),
            "params.path must be a string",
        ),
        (
            "fs.summarize",
            json!({"path": ""}),
            "params.path must not be empty",
        ),
        (
            "fs.summarize",
            json!({"path": "a", "max_depth": -1}),
            "params.max_depth",
        ),
        (
            "fs.summarize",
            json!({"path": "a", "depth": 1}),
            "params.depth: unknown field",
        ),
        (
            "fs.csv_transform",
            json!({"output_dir": "o"}),
            "params.input_glob is required",
        ),
        (
            "fs.csv_transform",
            json!({"input_glob": "x"}),
            "params.output_dir is required",
        ),
        (
            "fs.csv_transform",
            json!({"input_glob": "x", "output_dir": "o", "select": "a"}),
            "params.select must be an array",
        ),
        (
            "fs.csv_transform",
            json!({"input_glob": "x", "output_dir": "o", "select": [1]}),
            "params.select[0]",
        ),
        (
            "fs.csv_transform",
            json!({"input_glob": "x", "output_dir": "o", "rename": {"a": 1}}),
            "params.rename.a",
        ),
        (
            "fs.csv_transform",
            json!({"input_glob": "x", "output_dir": "o", "filter": {"column": "a", "op": "like", "value": 1}}),
            "params.filter.op",
        ),
        (
            "fs.csv_transform",
            json!({"input_glob": "x", "output_dir": "o", "filter": {"op": "eq", "value": 1}}),
            "params.filter.column",
        ),
        (
            "fs.csv_transform",
            json!({"input_glob": "x", "output_dir": "o", "filter": {"column": "a", "op": "eq"}}),
            "params.filter.value",
        ),
        (
            "image.thumbnail",
            json!({"input_glob": "x", "output_dir": "o"}),
            "params.max_side is required",
        ),
        (
            "image.thumbnail",
            json!({"input_glob": "x", "output_dir": "o", "max_side": 0}),
            "params.max_side",
        ),
        ("command", json!({}), "params.argv is required"),
        (
            "command",
            json!({"argv": []}),
            "params.argv must not be empty",
        ),
        (
            "command",
            json!({"argv": "ls"}),
            "params.argv must be an array",
        ),
        ("command", json!({"argv": ["ls", 1]}), "params.argv[1]"),
        ("command", json!({"argv": [""]}), "params.argv[0]"),
        (
            "command",
            json!({"argv": ["ls"], "env": {"A": 1}}),
            "params.env.A",
        ),
        (
            "command",
            json!({"argv": ["ls"], "env": {"A=B": "1"}}),
            "params.env: invalid variable name",
        ),
        (
            "command",
            json!({"argv": ["ls"], "timeout_s": 0}),
            "params.timeout_s",
        ),
        ("command", json!({"argv": ["ls"], "cwd": 5}), "params.cwd"),
    ];
    for (k, p, want) in bad {
        let e = validate_params(k, &p).unwrap_err();
        assert!(e.contains(want), "{k} {p}: {e}");
    }
}
