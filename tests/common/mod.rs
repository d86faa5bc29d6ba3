//! Test harness: real `orrery` processes on free loopback ports, each with
//! its own data directory, driven over real sockets.

#![allow(dead_code)]

pub mod h2c;
pub mod load;
pub mod storage;

use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `orrery` binary: the one cargo built for this test, or
/// `$ORRERY_BIN_DIR/orrery` when set (a test binary carried to another
/// machine, e.g. scripts/gpu-check.sh, finds its binaries there).
pub fn orrery_bin() -> PathBuf {
    bin("orrery", env!("CARGO_BIN_EXE_orrery"))
}

/// The `orreryctl` binary (see [`orrery_bin`]).
pub fn orreryctl_bin() -> PathBuf {
    bin("orreryctl", env!("CARGO_BIN_EXE_orreryctl"))
}

fn bin(name: &str, built: &str) -> PathBuf {
    match std::env::var_os("ORRERY_BIN_DIR") {
        Some(dir) => Path::new(&dir).join(name),
        None => PathBuf::from(built),
    }
}

/// A loopback port that is free now and that no other test of this
/// process was given. A port the kernel picks (`bind :0`) comes from the
/// ephemeral range, and between this check and the node's own bind an
/// outgoing connection of a test running in parallel could take it (seen
/// as a node failing with "Address already in use"). So ports come from
/// below that range, where the kernel never assigns client ports.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let (lo, hi) = ephemeral_range();
    for _ in 0..10_000 {
        // RandomState is seeded randomly per instance: a cheap random number.
        let r = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let p = 10_000 + (r % 20_000) as u16;
        if (lo..=hi).contains(&p) {
            continue;
        }
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.contains(&p) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            given.insert(p);
            return p;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The kernel's range for client ports (Linux default 32768–60999).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

pub struct TestNode {
    pub id: u64,
    pub addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub extra: Vec<String>,
    /// The binary this node runs (`None`: [`orrery_bin`]); the upgrade
    /// test swaps it between restarts.
    pub bin: Option<PathBuf>,
    /// Environment variables for this node only (after [`Cluster::env`]).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl TestNode {
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.insecure() { "http" } else { "https" };
        format!("{scheme}://{}{}", self.addr, path)
    }

    /// Started with `--insecure` (no TLS, no tokens); every other test
    /// node is secure, with its own certificate from the cluster's CA.
    pub fn insecure(&self) -> bool {
        self.extra.iter().any(|a| a == "--insecure")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The node process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The node process's resident memory in KiB (`VmRSS`), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

/// The cluster's HTTP client: it trusts the cluster CA and, once
/// `cluster init` has printed the root token, sends it with every request.
pub struct Http {
    plain: reqwest::Client,
    authed: std::sync::OnceLock<reqwest::Client>,
}

impl std::ops::Deref for Http {
    type Target = reqwest::Client;
    fn deref(&self) -> &reqwest::Client {
        self.authed.get().unwrap_or(&self.plain)
    }
}

/// An HTTP client that trusts `ca` (the cluster CA's PEM file) and sends
/// `token` (when given) as a bearer token.
pub fn http_client(ca: &Path, token: Option<&str>) -> reqwest::Client {
    let pem = std::fs::read(ca).expect("read ca.crt");
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA certificate"));
    if let Some(t) = token {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {t}").parse().expect("token header"),
        );
        b = b.default_headers(h);
    }
    b.build().expect("http client")
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<TestNode>,
    pub http: Http,
    /// The root token `cluster init` printed (secure clusters).
    pub root_token: std::sync::OnceLock<String>,
    /// Environment variables set on every node process.
    pub env: Vec<(String, String)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("ORRERY_TEST_KEEP").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            eprintln!("test cluster files kept in {}", kept.keep().display());
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Cluster {
    /// Starts `n` nodes (not yet a cluster) with `extra` flags for each.
    pub async fn start(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with_env(n, extra, &[]).await
    }

    /// Like [`Cluster::start`], with environment variables for every node.
    pub async fn start_with_env(n: usize, extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Cluster {
            dir,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            nodes: Vec::new(),
            http: Http {
                plain: reqwest::Client::new(),
                authed: std::sync::OnceLock::new(),
            },
            root_token: std::sync::OnceLock::new(),
        };
        orrery_tls::create_ca(&c.ca_dir(), false).expect("create the cluster CA");
        c.http.plain = http_client(&c.ca_cert(), None);
        for _ in 0..n {
            c.add_node(extra).await;
        }
        c
    }

    /// The cluster CA's directory (ca.crt, ca.key).
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// The cluster CA's certificate: what clients trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.ca_dir().join("ca.crt")
    }

    /// Node `id`'s certificate directory (made on first use, for
    /// 127.0.0.1 and localhost).
    pub fn certs_dir(&self, id: u64) -> PathBuf {
        let d = self.dir.path().join(format!("certs-n{id}"));
        if !d.join("node.crt").exists() {
            orrery_tls::create_node(
                &self.ca_dir(),
                &d,
                &["127.0.0.1".into(), "localhost".into()],
                false,
            )
            .expect("create a node certificate");
        }
        d
    }

    /// A gRPC client of node `i` (TLS and the root token when secure).
    pub async fn grpc(&self, i: usize) -> Result<orrery_client::Client, orrery_client::Error> {
        let opts = if self.nodes[i].insecure() {
            orrery_client::Options::default()
        } else {
            orrery_client::Options {
                ca_cert: Some(self.ca_cert()),
                token: self.root_token.get().cloned(),
            }
        };
        orrery_client::Client::connect_with(&self.nodes[i].addr, &opts).await
    }

    /// A client like [`Cluster::http`] that also says every body is JSON.
    pub fn http_json(&self) -> reqwest::Client {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::CONTENT_TYPE,
            "application/json".parse().expect("header"),
        );
        if let Some(t) = self.root_token.get() {
            h.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {t}").parse().expect("header"),
            );
        }
        let pem = std::fs::read(self.ca_cert()).expect("read ca.crt");
        reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA certificate"))
            .default_headers(h)
            .build()
            .expect("http client")
    }

    /// The root token (after `cluster init`).
    pub fn token(&self) -> &str {
        self.root_token.get().map(String::as_str).unwrap_or("")
    }

    /// Keeps the root token `cluster init` printed, and from then on sends
    /// it with every request of [`Cluster::http`].
    pub fn set_root_token(&self, token: &str) {
        if self.root_token.set(token.to_string()).is_ok() {
            let _ = self
                .http
                .authed
                .set(http_client(&self.ca_cert(), Some(token)));
        }
    }

    /// Starts one more node process (id = count + 1) and waits for /healthz.
    pub async fn add_node(&mut self, extra: &[&str]) -> usize {
        self.add_node_with(extra, None, &[]).await
    }

    /// [`Cluster::add_node`] running `bin` (`None`: [`orrery_bin`]) with
    /// `env` for this node only.
    pub async fn add_node_with(
        &mut self,
        extra: &[&str],
        bin: Option<PathBuf>,
        env: &[(&str, &str)],
    ) -> usize {
        let i = self.plan_node(extra, bin, env);
        self.restart(i).await;
        i
    }

    /// Adds node `count + 1` (ports chosen, certificate made when started)
    /// without starting it: tests that must know every address first.
    pub fn plan_node(
        &mut self,
        extra: &[&str],
        bin: Option<PathBuf>,
        env: &[(&str, &str)],
    ) -> usize {
        let id = self.nodes.len() as u64 + 1;
        let data_dir = self.dir.path().join(format!("n{id}"));
        let node = TestNode {
            id,
            addr: format!("127.0.0.1:{}", free_port()),
            peer_addr: format!("127.0.0.1:{}", free_port()),
            log: self.dir.path().join(format!("n{id}.log")),
            data_dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            bin,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// (Re)starts node `i` with its data directory, and waits for /healthz.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        let url = self.nodes[i].url("/healthz");
        wait_until(Duration::from_secs(20), || async {
            self.http
                .get(&url)
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false)
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "node {} did not become healthy; log:\n{}",
                i + 1,
                self.log(i)
            )
        });
    }

    /// Starts node `i`'s process without waiting for it.
    pub fn spawn(&mut self, i: usize) {
        let mut env = self.env.clone();
        let n = &mut self.nodes[i];
        env.extend(n.env.iter().cloned());
        let bin = n.bin.clone().unwrap_or_else(orrery_bin);
        assert!(n.child.is_none(), "node {} is already running", n.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .expect("log file");
        let secure = !n.insecure();
        let (id, extra) = (n.id, n.extra.clone());
        let certs = secure.then(|| self.certs_dir(id));
        let n = &mut self.nodes[i];
        let mut cmd = Command::new(bin);
        cmd.args([
            "serve",
            "--id",
            &n.id.to_string(),
            "--listen",
            &n.addr,
            "--peer-listen",
            &n.peer_addr,
        ])
        .arg("--data-dir")
        .arg(&n.data_dir);
        // A previous release (the upgrade test's) predates --insecure and
        // runs without TLS anyway.
        let legacy = n.bin.is_some();
        cmd.args(n.extra.iter().filter(|a| !(legacy && *a == "--insecure")));
        if let Some(d) = &certs {
            cmd.arg("--certs-dir").arg(d);
        }
        // A node told to join shows the root token (tests that join with
        // another token pass their own --join-token).
        let joins = extra.iter().any(|a| a == "--join");
        if secure && joins && !extra.iter().any(|a| a == "--join-token") {
            if let Some(t) = self.root_token.get() {
                cmd.args(["--join-token", t]);
            }
        }
        let child = cmd
            .env("RUST_LOG", "info,openraft=warn")
            // The tests run as root, where command jobs need a user to run
            // as (by env, not flag: older binaries in upgrade tests ignore it).
            .env("ORRERY_COMMAND_USER", "nobody")
            .envs(env)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn orrery");
        n.child = Some(child);
    }

    /// The exit status of node `i` if its process has exited (then it is
    /// no longer considered running).
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let n = &mut self.nodes[i];
        let st = n.child.as_mut()?.try_wait().ok()??;
        n.child = None;
        Some(st)
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; returns the exit status.
    pub fn terminate(&mut self, i: usize) -> std::process::ExitStatus {
        let mut c = self.nodes[i].child.take().expect("node running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return s;
            }
            if start.elapsed() > Duration::from_secs(15) {
                let _ = c.kill();
                panic!("node {} did not stop within 15 s of SIGTERM", i + 1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `n` lines of every node's log, for failure messages.
    pub fn log_tails(&self, n: usize) -> String {
        (0..self.nodes.len())
            .map(|i| {
                let log = self.log(i);
                let lines: Vec<&str> = log.lines().collect();
                let from = lines.len().saturating_sub(n);
                format!(
                    "--- node {} log tail ---\n{}",
                    i + 1,
                    lines[from..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// `orreryctl --endpoint NODE ARGS`, with the cluster CA and the root
    /// token in its environment. A successful `cluster init` hands its
    /// root token to [`Cluster::set_root_token`].
    pub fn ctl(&self, i: usize, args: &[&str]) -> Output {
        let mut cmd = Command::new(orreryctl_bin());
        cmd.args(["--endpoint", &self.nodes[i].addr]).args(args);
        if !self.nodes[i].insecure() {
            cmd.env("ORRERY_CA_CERT", self.ca_cert());
            if let Some(t) = self.root_token.get() {
                cmd.env("ORRERY_TOKEN", t);
            }
        }
        let out = cmd.output().expect("run orreryctl");
        let is_init = args.windows(2).any(|w| w == ["cluster", "init"]);
        if is_init && out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            let token = text
                .split(|c: char| c.is_whitespace() || c == '"')
                .find(|w| w.starts_with("orr_"));
            if let Some(t) = token {
                self.set_root_token(t);
            }
        }
        out
    }

    pub fn ctl_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.ctl(i, args);
        assert!(
            out.status.success(),
            "orreryctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ctl_json(&self, i: usize, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ctl_ok(i, &a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("orreryctl {args:?} printed invalid JSON ({e}): {out}"))
    }

    /// `cluster init` on node 1 and `members add` for every other node.
    pub fn form(&self, shards: u32) {
        self.ctl_ok(0, &["cluster", "init", "--shards", &shards.to_string()]);
        for n in &self.nodes[1..] {
            self.ctl_ok(
                0,
                &[
                    "members",
                    "add",
                    &n.id.to_string(),
                    "--addr",
                    &n.addr,
                    "--peer-addr",
                    &n.peer_addr,
                    "--wait",
                    "60",
                ],
            );
        }
    }

    /// A started and formed cluster.
    pub async fn formed(n: usize, shards: u32, extra: &[&str]) -> Cluster {
        let c = Cluster::start(n, extra).await;
        c.form(shards);
        c
    }

    /// A request to node `i` with an optional JSON body: the status and the
    /// answer (JSON; text that is not JSON as a string; Null when empty).
    pub async fn json_req(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = self.nodes[i].url(path);
        let mut r = match method {
            "GET" => self.http.get(&url),
            "POST" => self.http.post(&url),
            "PUT" => self.http.put(&url),
            "PATCH" => self.http.patch(&url),
            "DELETE" => self.http.delete(&url),
            _ => panic!("json_req: unsupported method {method}"),
        };
        if let Some(b) = body {
            r = r.json(&b);
        }
        // Policy evaluation with lookups and a loaded machine can exceed
        // the client's default 20 s.
        let resp = r
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    /// Waits (60 s at most) until every running node's own copy of the
    /// cluster version is at least `min`: features gated on a version act
    /// on the receiving node's copy, and the version rises one step a
    /// second after the cluster forms.
    pub async fn wait_version(&self, min: u64) {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_running() {
                continue;
            }
            wait_until(Duration::from_secs(60), || async {
                let (s, v) = self.json_req(i, "GET", "/v1/cluster", None).await;
                s == 200 && v["cluster_version"]["active"].as_u64() >= Some(min)
            })
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "node {i} never showed cluster version {min}\n{}",
                    self.log_tails(20)
                )
            });
        }
    }

    /// A [`Cluster::json_req`] that retries 503 (leader elections on a
    /// loaded machine) for up to 60 s; any other answer is returned.
    pub async fn json_retrying(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let start = Instant::now();
        loop {
            let (s, v) = self.json_req(i, method, path, body.clone()).await;
            if s == 503 && start.elapsed() < Duration::from_secs(60) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            return (s, v);
        }
    }

    /// A [`Cluster::json_retrying`] that must succeed (200 or 201).
    pub async fn json_success(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let (s, v) = self.json_retrying(i, method, path, body).await;
        assert!(s == 200 || s == 201, "{method} {path}: {s} {v}");
        v
    }

    /// A [`Cluster::json_req`] that must answer `want`; 503 (a leader
    /// change) is retried for 30 s. Panics with the nodes' log tails.
    pub async fn json_ok(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
        want: u16,
    ) -> Value {
        let start = Instant::now();
        loop {
            let (s, v) = self.json_req(i, method, path, body.clone()).await;
            if s == want {
                return v;
            }
            if s != 503 || start.elapsed() > Duration::from_secs(30) {
                panic!(
                    "{method} {path} -> {s} (wanted {want}): {v}\n{}",
                    self.log_tails(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An unlabelled counter summed over every node's `/metrics` (each
    /// node must have it).
    pub async fn counter_sum(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for (i, n) in self.nodes.iter().enumerate() {
            let text = self
                .http
                .get(n.url("/metrics"))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("metrics text");
            sum += text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("node {} has no {name}", i + 1));
        }
        sum
    }

    /// `GET /v1/jobs/{id}` through node `i`.
    pub async fn job(&self, i: usize, id: &str) -> Value {
        self.json_ok(i, "GET", &format!("/v1/jobs/{id}"), None, 200)
            .await
    }

    /// The runs of job `id`, read through node `i`.
    pub async fn job_runs(&self, i: usize, id: &str) -> Vec<Value> {
        let v = self
            .json_ok(i, "GET", &format!("/v1/jobs/{id}/runs"), None, 200)
            .await;
        v["runs"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until job `id` is in one of `states`, reading it through the
    /// nodes `via` in turn; returns it.
    pub async fn wait_job(
        &self,
        via: &[usize],
        id: &str,
        states: &[&str],
        timeout: Duration,
    ) -> Value {
        let start = Instant::now();
        let mut n = 0;
        loop {
            let (s, j) = self
                .json_req(via[n % via.len()], "GET", &format!("/v1/jobs/{id}"), None)
                .await;
            n += 1;
            if s == 200 && states.iter().any(|st| j["state"] == *st) {
                return j;
            }
            if start.elapsed() > timeout {
                panic!(
                    "job {id} not in {states:?} within {timeout:?}: {j}\n{}",
                    self.log_tails(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn put(&self, i: usize, key: &str, value: &str) -> reqwest::Response {
        self.http
            .put(self.nodes[i].url(&format!("/v1/kv/{key}")))
            .body(value.to_string())
            .send()
            .await
            .expect("PUT")
    }

    /// PUT that must succeed; returns the revision.
    pub async fn put_ok(&self, i: usize, key: &str, value: &str) -> u64 {
        let r = self.put(i, key, value).await;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "PUT {key} via node {} failed: {body}", i + 1);
        let v: Value = serde_json::from_str(&body).expect("json");
        v["revision"].as_u64().expect("revision")
    }

    pub async fn get(&self, i: usize, key: &str, consistency: &str) -> (u16, String) {
        let r = self
            .http
            .get(self.nodes[i].url(&format!("/v1/kv/{key}?consistency={consistency}")))
            .send()
            .await
            .expect("GET");
        let s = r.status().as_u16();
        (s, r.text().await.unwrap_or_default())
    }

    /// Waits until `orreryctl status` (asked from node `i`) shows a leader
    /// and lag 0 on every replica of every group, for `nodes` replicas.
    pub async fn wait_caught_up(&self, i: usize, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let out = self.ctl(i, &["--json", "status"]);
            if out.status.success() {
                if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
                    let groups = v["groups"].as_array().cloned().unwrap_or_default();
                    let ok = !groups.is_empty()
                        && groups.iter().all(|g| {
                            !g["leader"].is_null()
                                && g["replicas"]
                                    .as_array()
                                    .map(|r| r.iter().all(|r| r["lag"] == 0))
                                    .unwrap_or(false)
                        });
                    if ok {
                        return v;
                    }
                }
            }
            if start.elapsed() > timeout {
                panic!(
                    "cluster did not catch up within {timeout:?}: {}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    self.log_tails(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> Result<(), ()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    let m = e
                        .metadata()
                        .map(|m| (m.is_dir(), m.len()))
                        .unwrap_or((false, 0));
                    if m.0 {
                        dir_size(&e.path())
                    } else {
                        m.1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Replicas and preferred leaderships per node id, from `shards list`.
pub fn shares(
    c: &Cluster,
) -> (
    std::collections::BTreeMap<u64, usize>,
    std::collections::BTreeMap<u64, usize>,
) {
    let shards = c.ctl_json(0, &["shards", "list"]);
    let mut replicas = std::collections::BTreeMap::new();
    let mut preferred = std::collections::BTreeMap::new();
    for s in shards["shards"].as_array().expect("shards") {
        let r = s["replicas"].as_array().expect("replicas");
        for (k, n) in r.iter().enumerate() {
            let id = n.as_u64().expect("node id");
            *replicas.entry(id).or_default() += 1;
            if k == 0 {
                *preferred.entry(id).or_default() += 1;
            }
        }
    }
    (replicas, preferred)
}
