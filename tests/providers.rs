//! Model providers and `image.caption` on a real 3-node cluster (TLS,
//! tokens) against a stand-in provider: `tests/provider_standin.py`, an
//! external HTTP server speaking the OpenAI-compatible API (and Ollama's)
//! that captions an image by the colour of its first pixel, so each
//! caption proves the image went over the wire. Node 1 alone has
//! `--providers` (so every caption job runs there and its client-side
//! rate limit can be measured); all three have `--fs-root` and run
//! thumbnails. Covered: captions stored on dataset items and in job
//! results (OpenAI and Ollama kinds, the API key from the environment), a
//! 500 (retried, then dead), a timeout, a 429 with Retry-After, the
//! per-provider spacing, an unknown provider, a destination the SSRF guard
//! refuses, a bad providers file refused at start, and a workflow
//! thumbnail → caption fanned out over 3 items.

mod common;

use common::{orrery_bin, Cluster};
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The stand-in provider process, killed on drop.
struct StandIn {
    child: Child,
    port: u16,
}

impl StandIn {
    fn start(key: &str) -> StandIn {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/provider_standin.py");
        let mut child = Command::new("python3")
            .arg(script)
            .env("STANDIN_KEY", key)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the stand-in provider (python3)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the stand-in's port");
        let port = line.trim().parse().expect("a port number");
        StandIn { child, port }
    }

    /// Every request the stand-in saw.
    async fn log(&self) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/log", self.port);
        let v: Value = reqwest::get(url)
            .await
            .expect("log")
            .json()
            .await
            .expect("json");
        v.as_array().cloned().unwrap_or_default()
    }

    async fn seen(&self, mode: &str) -> Vec<Value> {
        self.log()
            .await
            .into_iter()
            .filter(|e| e["mode"] == mode)
            .collect()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn solid_png(root: &Path, rel: &str, rgb: [u8; 3]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    image::RgbImage::from_pixel(40, 30, image::Rgb(rgb))
        .save(&p)
        .expect("save");
}

fn providers_file(dir: &Path, port: u16) -> std::path::PathBuf {
    let base = format!("http://127.0.0.1:{port}");
    let text = format!(
        r#"default_provider = "standin"
[[provider]]
name = "standin"
kind = "openai"
base_url = "{base}/ok/v1"
model = "stand-in-vl"
api_key_env = "STANDIN_KEY"
[[provider]]
name = "llama"
kind = "ollama"
base_url = "{base}/ok"
model = "llava"
api_key_env = "STANDIN_KEY"
[[provider]]
name = "broken"
kind = "openai"
base_url = "{base}/fail/v1"
model = "m"
api_key_env = "STANDIN_KEY"
[[provider]]
name = "slow"
kind = "openai"
base_url = "{base}/slow/v1"
model = "m"
api_key_env = "STANDIN_KEY"
timeout_ms = 500
[[provider]]
name = "busy"
kind = "openai"
base_url = "{base}/busy/v1"
model = "m"
api_key_env = "STANDIN_KEY"
[[provider]]
name = "paced"
kind = "openai"
base_url = "{base}/paced/v1"
model = "m"
api_key_env = "STANDIN_KEY"
max_requests_per_minute = 120
[[provider]]
name = "guarded"
kind = "openai"
base_url = "http://127.0.0.2:{port}/ok/v1"
model = "m"
"#
    );
    let f = dir.join("providers.toml");
    std::fs::write(&f, text).expect("write providers");
    f
}

async fn submit(c: &Cluster, params: Value) -> String {
    let v = c
        .json_ok(
            0,
            "POST",
            "/v1/jobs",
            Some(json!({"queue": "cap", "kind": "image.caption", "params": params})),
            201,
        )
        .await;
    v["id"].as_str().expect("id").to_string()
}

async fn caption_of(c: &Cluster, ds: &str, path: &str) -> Value {
    let v = c
        .json_ok(
            1,
            "GET",
            &format!("/v1/datasets/{ds}/items?limit=100"),
            None,
            200,
        )
        .await;
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["path"] == path)
        .cloned()
        .unwrap_or_else(|| panic!("no item {path}: {v}"))
}

async fn scanned(c: &Cluster, name: &str) {
    let start = Instant::now();
    loop {
        let v = c
            .json_ok(0, "GET", &format!("/v1/datasets/{name}"), None, 200)
            .await;
        if v["scan"]["state"] == "succeeded" {
            return;
        }
        assert!(v["scan"]["state"] != "failed", "{v}");
        assert!(start.elapsed() < Duration::from_secs(120), "scan: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const DONE: &[&str] = &["succeeded", "failed", "dead", "cancelled"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_caption_against_a_stand_in_provider() {
    let key = "sk-standin-test";
    let standin = StandIn::start(key);
    let root = tempfile::tempdir().expect("tempdir");
    let root_path = root.path().canonicalize().expect("canonical");
    let root_s = root_path.to_string_lossy().to_string();
    let colours = [
        ("red", [255, 0, 0]),
        ("green", [0, 255, 0]),
        ("blue", [0, 0, 255]),
    ];
    for (name, rgb) in colours {
        solid_png(&root_path, &format!("items/{name}.png"), rgb);
        solid_png(&root_path, &format!("flow/{name}.png"), rgb);
    }
    solid_png(&root_path, "solo/yellow.png", [255, 255, 0]);
    let conf = tempfile::tempdir().expect("tempdir");
    let pfile = providers_file(conf.path(), standin.port);
    let pfile_s = pfile.to_string_lossy().to_string();
    let with_providers = [
        "--workers",
        "2",
        "--fs-root",
        &root_s,
        "--providers",
        &pfile_s,
        "--http-sources-allow",
        "127.0.0.1",
    ];
    let mut c = Cluster::start_with_env(1, &with_providers, &[("STANDIN_KEY", key)]).await;
    for _ in 0..2 {
        c.add_node(&["--workers", "2", "--fs-root", &root_s]).await;
    }
    c.form(3);
    c.wait_version(8).await;
    c.json_ok(
        0,
        "POST",
        "/v1/queues",
        Some(json!({"name": "cap", "max_attempts": 2,
            "backoff": {"initial_ms": 200, "multiplier": 1.0, "max_ms": 200}})),
        201,
    )
    .await;
    c.json_ok(
        0,
        "POST",
        "/v1/datasets",
        Some(json!({"name": "shapes", "path": "items", "glob": "*.png"})),
        201,
    )
    .await;
    scanned(&c, "shapes").await;

    // Success: the caption is in the result and on the dataset item.
    let id = submit(&c, json!({"dataset": "shapes", "path": "items/red.png"})).await;
    let j = c
        .wait_job(&[0, 1, 2], &id, DONE, Duration::from_secs(60))
        .await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["result"]["caption"], "a red square", "{j}");
    assert_eq!(j["result"]["provider"], "standin");
    assert_eq!(j["result"]["model"], "stand-in-vl");
    assert_eq!(
        c.job_runs(0, &id).await[0]["node"],
        1,
        "only node 1 has providers"
    );
    let item = caption_of(&c, "shapes", "items/red.png").await;
    assert_eq!(item["caption"], "a red square", "{item}");
    // The Ollama kind, without a dataset: only the result.
    let id = submit(&c, json!({"path": "items/green.png", "provider": "llama"})).await;
    let j = c.wait_job(&[0], &id, DONE, Duration::from_secs(60)).await;
    assert_eq!(j["result"]["caption"], "a green square", "{j}");
    assert_eq!(j["result"]["model"], "llava");
    assert!(caption_of(&c, "shapes", "items/green.png").await["caption"].is_null());
    // Parameters are checked at submit.
    let (s, e) = c
        .json_req(
            0,
            "POST",
            "/v1/jobs",
            Some(json!({"queue": "cap", "kind": "image.caption",
                "params": {"path": "items/red.png", "max_tokens": 0}})),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(e.to_string().contains("params.max_tokens"), "{e}");

    // A 500: retried (max_attempts 2), then dead, with the provider's words.
    let id = submit(&c, json!({"path": "items/red.png", "provider": "broken"})).await;
    let j = c.wait_job(&[0], &id, DONE, Duration::from_secs(60)).await;
    assert_eq!(j["state"], "dead", "{j}");
    assert_eq!(j["attempts"], 2, "{j}");
    let err = j["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("provider \"broken\" answered 500") && err.contains("model exploded"),
        "{err}"
    );
    assert_eq!(standin.seen("fail").await.len(), 2);

    // A timeout: the provider sleeps 3 s, timeout_ms is 500.
    let t0 = Instant::now();
    let id = submit(&c, json!({"path": "items/red.png", "provider": "slow"})).await;
    let j = c.wait_job(&[0], &id, DONE, Duration::from_secs(60)).await;
    assert_eq!(j["state"], "dead", "{j}");
    assert_eq!(j["attempts"], 2, "{j}");
    let err = j["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("no answer within 500 ms (timeout_ms)"),
        "{err}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "the deadline held: {:?}",
        t0.elapsed()
    );

    // A 429 with Retry-After: 2: the attempt fails retryably, the next
    // one is held back until the provider's delay passed, and succeeds.
    let id = submit(&c, json!({"path": "items/blue.png", "provider": "busy"})).await;
    let j = c.wait_job(&[0], &id, DONE, Duration::from_secs(60)).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["attempts"], 2, "{j}");
    assert_eq!(j["result"]["caption"], "a blue square");
    let runs = c.job_runs(0, &id).await;
    let first = runs[0]["error"].as_str().unwrap_or_default();
    assert!(
        first.contains("429") && first.contains("Retry-After 2 s"),
        "{runs:?}"
    );
    let busy = standin.seen("busy").await;
    assert_eq!(busy.len(), 2, "{busy:?}");
    let gap = busy[1]["t"].as_f64().unwrap() - busy[0]["t"].as_f64().unwrap();
    assert!(gap >= 1.9, "the retry came {gap} s after the 429");

    // The client-side rate limit: 120/min = one request per 500 ms, for 4
    // jobs submitted at once (node 1's two slots would otherwise send two
    // at a time).
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(submit(&c, json!({"path": "solo/yellow.png", "provider": "paced"})).await);
    }
    for id in &ids {
        let j = c.wait_job(&[0], id, DONE, Duration::from_secs(60)).await;
        assert_eq!(j["result"]["caption"], "a yellow square", "{j}");
    }
    let mut ts: Vec<f64> = standin
        .seen("paced")
        .await
        .iter()
        .map(|e| e["t"].as_f64().unwrap())
        .collect();
    ts.sort_by(f64::total_cmp);
    assert_eq!(ts.len(), 4);
    for w in ts.windows(2) {
        // 500 ms apart when sent; 100 ms of slack for the way there.
        assert!(w[1] - w[0] >= 0.4, "requests not spaced: {ts:?}");
    }

    // An unknown provider fails at once (no retry), naming the known ones.
    let id = submit(&c, json!({"path": "items/red.png", "provider": "nope"})).await;
    let j = c.wait_job(&[0], &id, DONE, Duration::from_secs(60)).await;
    assert_eq!(j["state"], "failed", "{j}");
    assert_eq!(j["attempts"], 1, "{j}");
    let err = j["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("unknown provider \"nope\"") && err.contains("standin"),
        "{err}"
    );

    // A destination the SSRF guard refuses (127.0.0.2 is not allowlisted).
    let before = standin.log().await.len();
    let id = submit(&c, json!({"path": "items/red.png", "provider": "guarded"})).await;
    let j = c.wait_job(&[0], &id, DONE, Duration::from_secs(60)).await;
    assert_eq!(j["state"], "failed", "{j}");
    let err = j["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("127.0.0.2 is a loopback address; model providers may not reach it unless the operator allows it (--http-sources-allow)"),
        "{err}"
    );
    assert_eq!(
        standin.log().await.len(),
        before,
        "nothing reached the provider"
    );

    // A path out of the fs root is refused by the confinement.
    let id = submit(&c, json!({"path": "/etc/passwd"})).await;
    let j = c.wait_job(&[0], &id, DONE, Duration::from_secs(60)).await;
    assert_ne!(j["state"], "succeeded", "{j}");
    assert!(
        j["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("outside the fs root"),
        "{j}"
    );

    // A workflow: a worker lists the items, then a thumbnail per item
    // (attached to the item), then a caption of each thumbnail.
    c.json_ok(
        0,
        "POST",
        "/v1/datasets",
        Some(json!({"name": "flow", "path": "flow", "glob": "*.png"})),
        201,
    )
    .await;
    scanned(&c, "flow").await;
    let wf = c
        .json_ok(
            0,
            "POST",
            "/v1/workflows",
            Some(
                json!({"queue": "cap", "input": {"dataset": "flow"}, "steps": [
                    {"name": "list", "kind": "test.list"},
                    {"name": "thumb", "kind": "image.thumbnail", "depends_on": ["list"],
                     "for_each": "list", "params": {"output_dir": "thumbs", "max_side": 8}},
                    {"name": "caption", "kind": "image.caption", "depends_on": ["thumb"],
                     "for_each": "thumb", "params": {"use_thumbnail": true}}
                ]}),
            ),
            201,
        )
        .await;
    let wf_id = wf["id"].as_str().expect("id").to_string();
    let claimed = c
        .json_ok(
            0,
            "POST",
            "/v1/queues/cap/claim",
            Some(json!({"worker_id": "lister", "kinds": ["test.list"], "wait_s": 10})),
            200,
        )
        .await;
    let items: Vec<Value> = colours
        .iter()
        .map(|(n, _)| json!({"path": format!("flow/{n}.png")}))
        .collect();
    c.json_ok(
        0,
        "POST",
        &format!("/v1/jobs/{}/complete", claimed["id"].as_str().expect("id")),
        Some(json!({"token": claimed["token"], "result": items})),
        200,
    )
    .await;
    let start = Instant::now();
    let wf = loop {
        let v = c
            .json_ok(0, "GET", &format!("/v1/workflows/{wf_id}"), None, 200)
            .await;
        if v["state"] != "running" {
            break v;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "workflow: {v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(wf["state"], "succeeded", "{wf}");
    let caps = &wf["steps"][2]["result"];
    for (i, (n, _)) in colours.iter().enumerate() {
        let path = format!("flow/{n}.png");
        assert_eq!(caps[i]["caption"], format!("a {n} square"), "{wf}");
        assert_eq!(
            caps[i]["image"],
            format!("thumbs/{n}.png"),
            "captioned from the thumbnail: {wf}"
        );
        let item = caption_of(&c, "flow", &path).await;
        assert_eq!(item["caption"], format!("a {n} square"), "{item}");
        assert_eq!(item["thumbnail"], format!("thumbs/{n}.png"), "{item}");
        let (w, h) =
            image::image_dimensions(root_path.join(format!("thumbs/{n}.png"))).expect("thumb");
        assert_eq!((w, h), (8, 6));
    }
    // Other engine kinds stay refused as steps.
    let (s, e) = c
        .json_req(
            0,
            "POST",
            "/v1/workflows",
            Some(json!({"queue": "cap", "steps": [{"name": "s", "kind": "fs.summarize"}]})),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e.to_string().contains("does not take a step's params"),
        "{e}"
    );
}

/// A bad providers file stops the node at start, naming the provider and field.
#[test]
fn a_bad_providers_file_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("p.toml");
    for (text, want) in [
        (
            "[[provider]]\nname = \"v\"\nkind = \"openai\"\nbase_url = \"http://h/v1\"\nmodel = \"m\"\napi_key_env = \"ORRERY_TEST_NO_SUCH_VAR\"\n",
            "provider \"v\": api_key_env: the environment variable \"ORRERY_TEST_NO_SUCH_VAR\" is not set",
        ),
        (
            "[[provider]]\nname = \"v\"\nkind = \"openai\"\nbase_url = \"http://h/v1\"\nmodel = \"m\"\nmodle = \"x\"\n",
            "provider \"v\": unknown field \"modle\"",
        ),
    ] {
        std::fs::write(&f, text).expect("write");
        let out = Command::new("timeout")
            .arg("20")
            .arg(orrery_bin())
            .args(["serve", "--id", "1", "--insecure", "--providers"])
            .arg(&f)
            .current_dir(dir.path())
            .output()
            .expect("run orrery");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--providers") && err.contains(want), "{err}");
    }
}
