//! GPU jobs on a real NVIDIA GPU: a real 3-node cluster whose node 1 owns
//! the host's GPUs (`--gpus <their UUIDs>`) and whose nodes 2 and 3 own none
//! (`--gpus none`), driven through nodes 2 and 3.
//!
//! These tests need an NVIDIA driver (NVML) and `python3` with a CUDA build
//! of PyTorch for the GPU workload, so they are `#[ignore]`d: CI has no GPU.
//! `scripts/gpu-check.sh` runs them, here or on a GPU machine the test
//! binary and the node binaries were carried to (`ORRERY_BIN_DIR`).
//! The no-GPU behaviour is covered by tests/jobs.rs and orrery-exec's tests.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The workload: reports what it was given, takes `MIB` of GPU memory and
/// multiplies matrices for `SECONDS` (writing its pid first, so a test can
/// check it was killed).
const WORKLOAD: &str = r#"
import os, sys, time
seconds, mib, pidfile = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
with open(pidfile, "w") as f:
    f.write(str(os.getpid()))
print("CUDA_VISIBLE_DEVICES=" + os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"), flush=True)
import torch
print("device_count=%d" % torch.cuda.device_count(), flush=True)
hold = torch.empty(mib * 1024 * 1024, dtype=torch.uint8, device="cuda")
a = torch.randn(4096, 4096, device="cuda")
end = time.time() + seconds
n = 0
while time.time() < end:
    for _ in range(20):
        a = torch.tanh(a @ a)
    torch.cuda.synchronize()
    n += 20
print("products=%d" % n, flush=True)
"#;

/// One GPU as `nvidia-smi` sees it (the truth the inventory is checked against).
#[derive(Debug)]
struct SmiGpu {
    index: u32,
    uuid: String,
    name: String,
    memory_total_mb: u64,
    compute_cap: String,
}

fn nvidia_smi() -> Vec<SmiGpu> {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,uuid,name,memory.total,compute_cap",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .expect("nvidia-smi: these tests need an NVIDIA driver (run scripts/gpu-check.sh on a GPU machine)");
    assert!(out.status.success(), "nvidia-smi failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            SmiGpu {
                index: f[0].parse().unwrap(),
                uuid: f[1].to_string(),
                name: f[2].to_string(),
                memory_total_mb: f[3].parse().unwrap(),
                compute_cap: f[4].to_string(),
            }
        })
        .collect()
}

fn python() -> String {
    std::env::var("ORRERY_GPU_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn has_torch_cuda() {
    let out = Command::new(python())
        .args(["-c", "import torch; assert torch.cuda.is_available()"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        other => panic!(
            "the GPU workload needs {} with a CUDA build of PyTorch (set ORRERY_GPU_PYTHON): {other:?}",
            python()
        ),
    }
}

struct Gc {
    c: Cluster,
}

impl Gc {
    async fn job(&self, i: usize, id: &str) -> Value {
        self.c.job(i, id).await
    }

    /// Submits the workload through node `i`; returns the job id.
    async fn submit(
        &self,
        i: usize,
        seconds: f64,
        mib: u64,
        pidfile: &Path,
        resources: Value,
    ) -> String {
        let script = self.c.dir.path().join("workload.py");
        let argv = json!([
            python(),
            script,
            seconds.to_string(),
            mib.to_string(),
            pidfile
        ]);
        let j = self
            .c
            .json_ok(
                i,
                "POST",
                "/v1/jobs",
                Some(
                    json!({"queue": "gpu", "kind": "command", "params": {"argv": argv},
                            "resources": resources}),
                ),
                201,
            )
            .await;
        j["id"].as_str().unwrap().to_string()
    }

    async fn wait_state(&self, id: &str, states: &[&str], timeout: Duration) -> Value {
        self.c.wait_job(&[1, 2], id, states, timeout).await
    }

    /// Waits (up to 2 min) for job `id` to finish, however it ends.
    async fn finished(&self, id: &str) -> Value {
        self.wait_state(
            id,
            &["succeeded", "failed", "dead"],
            Duration::from_secs(120),
        )
        .await
    }

    async fn runs(&self, id: &str) -> Vec<Value> {
        self.c.job_runs(2, id).await
    }

    async fn logs(&self, i: usize, id: &str) -> String {
        let r = self
            .c
            .http
            .get(self.c.nodes[i].url(&format!("/v1/jobs/{id}/logs")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    async fn metrics(&self, i: usize) -> String {
        let r = self
            .c
            .http
            .get(self.c.nodes[i].url("/metrics"))
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    }

    async fn gpus(&self, i: usize) -> Value {
        self.c.json_ok(i, "GET", "/v1/gpus", None, 200).await
    }
}

/// The value of the first sample whose line starts with `prefix`.
fn gauge(m: &str, prefix: &str) -> f64 {
    m.lines()
        .find(|l| l.starts_with(prefix) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in\n{m}"))
}

fn pid_alive(pid: u32) -> bool {
    // A zombie has exited; only a running process counts.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs an NVIDIA GPU and PyTorch: run scripts/gpu-check.sh"]
async fn gpu_jobs_on_a_real_gpu() {
    let smi = nvidia_smi();
    assert!(!smi.is_empty(), "nvidia-smi lists no GPU");
    has_torch_cuda();
    eprintln!("GPUs: {smi:?}");

    // Node 1 names the GPUs by UUID, as an operator splitting a host would.
    let uuids = smi
        .iter()
        .map(|g| g.uuid.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let mut c = Cluster::start(1, &["--allow-command-jobs", "--gpus", &uuids]).await;
    for _ in 0..2 {
        c.add_node(&["--allow-command-jobs", "--gpus", "none"])
            .await;
    }
    c.form(3);
    std::fs::write(c.dir.path().join("workload.py"), WORKLOAD).unwrap();
    // Command jobs run as the command user (nobody, as the tests run as
    // root): the workload writes its pid files in this directory.
    let anyone = std::os::unix::fs::PermissionsExt::from_mode(0o1777);
    std::fs::set_permissions(c.dir.path(), anyone).unwrap();
    let t = Gc { c };

    // 1. Inventory: node 1 reports exactly the host's GPUs, nodes 2 and 3
    // none, and every node serves the same cluster view.
    let reported = Instant::now();
    let view = loop {
        let g = t.gpus(2).await;
        if g["gpus"].as_array().unwrap().len() == smi.len() {
            break g;
        }
        assert!(
            reported.elapsed() < Duration::from_secs(30),
            "node 1's GPUs never reached the placement group: {g}\n{}",
            t.c.log_tails(30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("/v1/gpus: {view}");
    for s in &smi {
        let g = view["gpus"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["uuid"] == s.uuid.as_str())
            .unwrap_or_else(|| panic!("{} missing from {view}", s.uuid));
        assert_eq!(g["node"], 1, "{g}");
        assert_eq!(g["index"], s.index, "{g}");
        assert_eq!(g["name"], s.name.as_str(), "{g}");
        assert_eq!(g["compute_capability"], s.compute_cap.as_str(), "{g}");
        let total = g["memory_total_mb"].as_u64().unwrap();
        assert!(
            total.abs_diff(s.memory_total_mb) <= 2,
            "{g} vs nvidia-smi {s:?}"
        );
        assert!(g["memory_used_mb"].as_u64().unwrap() < total, "{g}");
        assert!(g["temperature_c"].as_u64().unwrap() > 0, "{g}");
    }
    for n in view["nodes"].as_array().unwrap() {
        let want = if n["node"] == 1 { smi.len() } else { 0 };
        assert_eq!(n["gpus"], want, "{view}");
    }
    let ctl = t.c.ctl_ok(2, &["gpus"]);
    assert!(
        ctl.contains(&smi[0].uuid) && ctl.contains(&smi[0].name),
        "{ctl}"
    );

    t.c.json_ok(
        0,
        "POST",
        "/v1/queues",
        Some(json!({"name": "gpu", "lease_s": 10})),
        201,
    )
    .await;
    let uuid0 = smi[0].uuid.clone();

    // 2. A GPU job submitted through a node without GPUs runs on node 1,
    // sees exactly its GPU, and its run records NVML's peak memory and
    // utilisation.
    let pid1 = t.c.dir.path().join("burn.pid");
    let id = t.submit(1, 6.0, 4096, &pid1, json!({"gpus": 1})).await;
    let j = t.finished(&id).await;
    let logs = t.logs(2, &id).await;
    assert_eq!(j["state"], "succeeded", "{j}\nlogs:\n{logs}");
    assert!(
        logs.contains(&format!("CUDA_VISIBLE_DEVICES={uuid0}")),
        "{logs}"
    );
    assert!(logs.contains("device_count=1"), "{logs}");
    let runs = t.runs(&id).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let r = &runs[0];
    eprintln!("GPU run: {r}");
    assert_eq!(r["node"], 1, "{r}");
    assert_eq!(r["gpu_uuids"], json!([uuid0]), "{r}");
    assert_eq!(r["exit_code"], 0, "{r}");
    let peak = r["gpu_peak_memory_mb"]
        .as_u64()
        .unwrap_or_else(|| panic!("no peak memory: {r}"));
    assert!(
        peak >= 4096,
        "peak GPU memory {peak} MiB < the 4096 MiB the job held: {r}"
    );
    assert!(peak <= smi[0].memory_total_mb, "{r}");
    let util = r["gpu_mean_utilization_pct"]
        .as_f64()
        .unwrap_or_else(|| panic!("no utilisation: {r}"));
    assert!(
        util > 5.0 && util <= 100.0,
        "mean utilisation {util}% of a matmul loop: {r}"
    );

    // 3. Two jobs asking for the GPU never hold it together: while one
    // runs the other waits and says why; their runs do not overlap.
    let pa = t.c.dir.path().join("a.pid");
    let pb = t.c.dir.path().join("b.pid");
    let a = t.submit(1, 4.0, 1024, &pa, json!({"gpus": 1})).await;
    let b = t.submit(2, 4.0, 1024, &pb, json!({"gpus": 1})).await;
    let first = loop {
        let ja = t.job(1, &a).await;
        let jb = t.job(2, &b).await;
        if ja["state"] == "running" || jb["state"] == "running" {
            let (run, wait) = if ja["state"] == "running" {
                (&a, jb)
            } else {
                (&b, ja)
            };
            if wait["state"] == "queued" {
                assert_eq!(
                    wait["waiting"], "waiting: for a node with 1 free GPU (all busy)",
                    "{wait}"
                );
            }
            break run.clone();
        }
        assert!(
            !["succeeded", "failed", "dead"]
                .iter()
                .any(|s| ja["state"] == *s),
            "{ja}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("{first} took the GPU first");
    for id in [&a, &b] {
        let j = t.finished(id).await;
        assert_eq!(j["state"], "succeeded", "{j}\n{}", t.logs(2, id).await);
    }
    let (ra, rb) = (t.runs(&a).await, t.runs(&b).await);
    let span = |r: &Vec<Value>| {
        (
            r[0]["started_ms"].as_u64().unwrap(),
            r[0]["finished_ms"].as_u64().unwrap(),
        )
    };
    let ((sa, fa), (sb, fb)) = (span(&ra), span(&rb));
    assert!(
        fa <= sb || fb <= sa,
        "runs overlap on one GPU: {ra:?} {rb:?}"
    );
    assert_eq!(ra[0]["gpu_uuids"], json!([uuid0]));
    assert_eq!(rb[0]["gpu_uuids"], json!([uuid0]));

    // 3b. Jobs that ask to share (`shared_gpu`) run together on the GPU.
    let (psa, psb) = (t.c.dir.path().join("sa.pid"), t.c.dir.path().join("sb.pid"));
    let shared = json!({"gpus": 1, "shared_gpu": true});
    let sa = t.submit(1, 8.0, 1024, &psa, shared.clone()).await;
    let sb = t.submit(2, 8.0, 1024, &psb, shared).await;
    for id in [&sa, &sb] {
        let j = t.finished(id).await;
        assert_eq!(j["state"], "succeeded", "{j}\n{}", t.logs(2, id).await);
    }
    let (ra, rb) = (t.runs(&sa).await, t.runs(&sb).await);
    let ((sa0, fa0), (sb0, fb0)) = (span(&ra), span(&rb));
    assert!(
        sa0 < fb0 && sb0 < fa0,
        "shared jobs did not overlap: {ra:?} {rb:?}"
    );
    assert_eq!(ra[0]["gpu_uuids"], json!([uuid0]));
    assert_eq!(rb[0]["gpu_uuids"], json!([uuid0]));

    // 4. Jobs no node can run stay queued and say why.
    let more = smi.len() as u32 + 1;
    let too_many = t.submit(1, 1.0, 0, &pa, json!({"gpus": more})).await;
    let too_big_mb = smi[0].memory_total_mb + 1;
    let too_big = t
        .submit(
            2,
            1.0,
            0,
            &pa,
            json!({"gpus": 1, "gpu_memory_mb": too_big_mb}),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let j = t.job(1, &too_many).await;
    assert_eq!(j["state"], "queued", "{j}");
    assert_eq!(
        j["waiting"],
        format!("waiting: no node has {more} free GPUs"),
        "{j}"
    );
    let j = t.job(2, &too_big).await;
    assert_eq!(j["state"], "queued", "{j}");
    assert_eq!(
        j["waiting"],
        format!("waiting: no node has 1 free GPU with {too_big_mb} MiB"),
        "{j}"
    );
    for id in [&too_many, &too_big] {
        t.c.json_ok(1, "POST", &format!("/v1/jobs/{id}/cancel"), None, 200)
            .await;
        t.wait_state(id, &["cancelled"], Duration::from_secs(10))
            .await;
    }

    // 5. The inventory follows the GPU: a running job's memory shows in
    // /v1/gpus (refreshed every 10 s). Cancelling the job kills the
    // process, frees its memory and the GPU, and the next job gets it.
    let ph = t.c.dir.path().join("hold.pid");
    let hold = t.submit(2, 600.0, 8192, &ph, json!({"gpus": 1})).await;
    t.wait_state(&hold, &["running"], Duration::from_secs(60))
        .await;
    let start = Instant::now();
    let seen = loop {
        let g = t.gpus(1).await;
        let used = g["gpus"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["uuid"] == uuid0.as_str())
            .and_then(|g| g["memory_used_mb"].as_u64())
            .unwrap_or(0);
        if used >= 8192 {
            break used;
        }
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "/v1/gpus never showed the job's 8 GiB: {g}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "/v1/gpus showed {seen} MiB used after {:?}",
        start.elapsed()
    );
    // Node 1's /metrics shows the GPU held, with the job's memory.
    let m = t.metrics(0).await;
    let held = format!(
        "orrery_gpu_assigned{{uuid=\"{uuid0}\",index=\"0\",name=\"{}\"}} 1",
        smi[0].name
    );
    assert!(m.contains(&held), "{held} missing:\n{m}");
    let used = gauge(
        &m,
        &format!("orrery_gpu_memory_used_bytes{{uuid=\"{uuid0}\""),
    );
    assert!(used >= 8192.0 * 1024.0 * 1024.0, "used {used} bytes:\n{m}");
    assert!(t.metrics(1).await.contains("\norrery_gpus 0\n"));
    let pid: u32 = std::fs::read_to_string(&ph)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(pid));
    let t0 = Instant::now();
    t.c.json_ok(2, "POST", &format!("/v1/jobs/{hold}/cancel"), None, 200)
        .await;
    let j = t
        .wait_state(&hold, &["cancelled"], Duration::from_secs(10))
        .await;
    eprintln!("cancelled after {:?}: {j}", t0.elapsed());
    let gone = Instant::now();
    while pid_alive(pid) {
        assert!(
            gone.elapsed() < Duration::from_secs(10),
            "workload pid {pid} survived the cancel"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = t.runs(&hold).await;
    assert_eq!(r[0]["outcome"], "cancelled", "{r:?}");
    let pn = t.c.dir.path().join("next.pid");
    let next = t.submit(1, 1.0, 512, &pn, json!({"gpus": 1})).await;
    let j = t.finished(&next).await;
    assert_eq!(j["state"], "succeeded", "{j}\n{}", t.logs(1, &next).await);
    // The slot lets the GPU go just after it reports the outcome.
    let released = Instant::now();
    loop {
        let m = t.metrics(0).await;
        if m.contains(&held.replace("} 1", "} 0")) {
            assert_eq!(gauge(&m, "orrery_gpus "), smi.len() as f64);
            break;
        }
        assert!(
            released.elapsed() < Duration::from_secs(5),
            "GPU still assigned:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let free = Instant::now();
    loop {
        let apps = Command::new("nvidia-smi")
            .args(["--query-compute-apps=pid", "--format=csv,noheader"])
            .output()
            .unwrap();
        let apps = String::from_utf8_lossy(&apps.stdout).to_string();
        if !apps.lines().any(|l| l.trim() == pid.to_string()) {
            break;
        }
        assert!(
            free.elapsed() < Duration::from_secs(10),
            "pid {pid} still holds GPU memory: {apps}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
