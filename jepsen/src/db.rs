//! The database under test: real `orrery` processes, one per loopback
//! address, started, killed, paused and restarted by the nemesis.

use crate::access::Access;
use crate::net::{node_ip, CLIENT_IP};
use crate::procs::{self, CouldNotRun, Procs};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::fs::OpenOptions;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CLIENT_PORT: u16 = 17001;
pub const PEER_PORT: u16 = 17101;

/// Group id of the placement group and of shard `s`.
pub const PLACEMENT_GROUP: u64 = 0;

pub fn client_addr(id: u64) -> String {
    format!("{}:{CLIENT_PORT}", node_ip(id))
}

pub fn peer_addr(id: u64) -> String {
    format!("{}:{PEER_PORT}", node_ip(id))
}

fn sock(id: u64, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(node_ip(id), port)
}

pub struct NodeProc {
    pub id: u64,
    /// The `orrery` process itself (never a wrapper), tracked by [`Procs`].
    pid: Option<i32>,
    pub paused: bool,
    /// Clock offset (libfaketime) the node was (re)started with, if any.
    pub clock_offset_s: Option<i64>,
    /// Removed from the cluster: never started again under this id.
    pub retired: bool,
}

impl NodeProc {
    fn new(id: u64) -> NodeProc {
        NodeProc {
            id,
            pid: None,
            paused: false,
            clock_offset_s: None,
            retired: false,
        }
    }

    pub fn running(&self) -> bool {
        self.pid.is_some()
    }

    pub fn pid(&self) -> Option<i32> {
        self.pid
    }
}

pub struct Db {
    pub bin_dir: PathBuf,
    pub dir: PathBuf,
    pub nodes: Vec<NodeProc>,
    pub shards: u32,
    http: reqwest::Client,
    /// TLS and the root token, or plain (`--insecure`).
    pub access: Access,
    procs: Arc<Procs>,
    /// libfaketime, found on the first clock-skewed start.
    libfaketime: Option<PathBuf>,
    /// The power nemesis: each node's data directory is an
    /// `orrery-faultfs` mount (mounted at its first start), so that a power
    /// cut drops what the node did not fsync.
    faultfs: bool,
    mounts: std::collections::HashMap<u64, orrery_faultfs::Mounted>,
}

impl Db {
    /// `dir` must exist. Both paths are made absolute: node command lines
    /// carry them, and the end-of-test scan recognises the nodes by them.
    pub fn new(
        bin_dir: PathBuf,
        dir: PathBuf,
        nodes: usize,
        shards: u32,
        insecure: bool,
    ) -> Result<Db> {
        for b in ["orrery", "orreryctl"] {
            if !bin_dir.join(b).exists() {
                bail!(
                    "{} not found; build it first (cargo build --release -p orrery) or pass --bin-dir",
                    bin_dir.join(b).display()
                );
            }
        }
        let bin_dir = bin_dir
            .canonicalize()
            .with_context(|| format!("resolving {}", bin_dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        let access = if insecure {
            Access::insecure()
        } else {
            // The test's own cluster CA; each node gets a certificate for
            // its address when it first starts.
            let ca = dir.join("certs").join("ca");
            if !ca.join("ca.crt").exists() {
                run_ctl(
                    &bin_dir,
                    &[
                        "certs",
                        "create-ca",
                        "--certs-dir",
                        &ca.display().to_string(),
                    ],
                    None,
                )?;
            }
            Access::secure(ca.join("ca.crt"))
        };
        let http = access.client(
            reqwest::Client::builder()
                .local_address(std::net::IpAddr::V4(CLIENT_IP))
                .timeout(Duration::from_secs(2)),
        )?;
        let procs = Arc::new(Procs::new(bin_dir.join("orrery"), dir.clone()));
        Ok(Db {
            bin_dir,
            dir,
            nodes: (1..=nodes as u64).map(NodeProc::new).collect(),
            shards,
            http,
            access,
            procs,
            libfaketime: None,
            faultfs: false,
            mounts: std::collections::HashMap::new(),
        })
    }

    /// The registry of this test's node processes (for the final cleanup).
    pub fn procs(&self) -> Arc<Procs> {
        self.procs.clone()
    }

    /// libfaketime's path; a *could not run* error when it is missing.
    pub fn libfaketime(&mut self) -> Result<PathBuf, CouldNotRun> {
        if let Some(p) = &self.libfaketime {
            return Ok(p.clone());
        }
        let p = procs::find_libfaketime()?;
        self.libfaketime = Some(p.clone());
        Ok(p)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| !n.retired)
            .map(|n| n.id)
            .collect()
    }

    pub fn node(&mut self, id: u64) -> Result<&mut NodeProc> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .with_context(|| format!("no node n{id}"))
    }

    /// Makes room for a fresh node (membership nemesis).
    pub fn add_node_slot(&mut self, id: u64) {
        if !self.nodes.iter().any(|n| n.id == id) {
            self.nodes.push(NodeProc::new(id));
        }
    }

    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("n{id}.log"))
    }

    /// Node `id`'s certificate directory (made on its first start, for its
    /// address); `None` on an `--insecure` run.
    fn certs_dir(&self, id: u64, ip: &str) -> Result<Option<PathBuf>> {
        let Some(ca_cert) = self.access.ca_cert() else {
            return Ok(None);
        };
        let ca_dir = ca_cert.parent().context("CA directory")?;
        let out = self.dir.join("certs").join(format!("n{id}"));
        if !out.join("node.crt").exists() {
            let (ca, o) = (ca_dir.display().to_string(), out.display().to_string());
            run_ctl(
                &self.bin_dir,
                &["certs", "create-node", "--certs-dir", &ca, "--out", &o, ip],
                None,
            )?;
        }
        Ok(Some(out))
    }

    /// Puts every node's data directory on an `orrery-faultfs` mount (the
    /// power nemesis); a test that cannot mount cannot run.
    pub fn use_faultfs(&mut self) -> Result<(), CouldNotRun> {
        if let Some(why) = orrery_faultfs::unavailable() {
            return Err(CouldNotRun(format!("the power nemesis needs FUSE: {why}")));
        }
        self.faultfs = true;
        Ok(())
    }

    /// The faultfs mount's backing directory of node `id` (the "disk").
    fn disk_dir(&self, id: u64) -> PathBuf {
        self.dir.join("data").join(format!("n{id}.disk"))
    }

    fn mount(&mut self, id: u64) -> Result<()> {
        if self.faultfs && !self.mounts.contains_key(&id) {
            let m = orrery_faultfs::Mounted::start(&self.disk_dir(id), &self.data_dir(id))
                .with_context(|| format!("mounting faultfs for node n{id}"))?;
            self.mounts.insert(id, m);
        }
        Ok(())
    }

    /// Power cut of node `id`: `kill -9`, then its mount drops everything
    /// the node had not fsynced and is mounted again over what is left.
    /// Returns the filesystem's report.
    pub fn power_cut(&mut self, id: u64) -> Result<String> {
        self.kill(id)?;
        let Some(m) = self.mounts.remove(&id) else {
            bail!("node n{id} has no faultfs mount");
        };
        let report = m
            .power_cut(false)
            .with_context(|| format!("power cut of node n{id}"))?;
        self.mount(id)?;
        Ok(report)
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.join("data").join(format!("n{id}"))
    }

    /// Starts node `id` (again), optionally with its clock shifted by
    /// `clock_offset_s`, waits until it answers `/healthz`, and checks that
    /// the process answering is the one it started.
    ///
    /// A skewed node runs `orrery` itself with libfaketime preloaded, not
    /// under the `faketime` wrapper: the wrapper forks the program and
    /// waits for it, so its pid is not the node's, and a kill of it left
    /// the real node running, untracked, holding the node's ports.
    pub async fn start(&mut self, id: u64, clock_offset_s: Option<i64>) -> Result<()> {
        self.mount(id)?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))?;
        let orrery = self.procs.orrery().to_path_buf();
        let ip = node_ip(id).to_string();
        let certs = self.certs_dir(id, &ip)?;
        let mut cmd = Command::new(&orrery);
        cmd.arg("serve")
            .args(["--id", &id.to_string()])
            .args(["--listen", &client_addr(id)])
            .args(["--peer-listen", &peer_addr(id)])
            .args(["--peer-source", &ip])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .args(["--heartbeat-ms", "100"])
            .args(["--election-timeout-ms", "600"])
            .args(["--snapshot-logs", "400"])
            .args(["--keep-logs", "100"])
            .args(["--request-timeout-ms", "2000"])
            .args(
                certs
                    .iter()
                    .flat_map(|d| [std::ffi::OsStr::new("--certs-dir"), d.as_os_str()]),
            )
            .args((!self.access.is_secure()).then_some("--insecure"))
            .env(
                "RUST_LOG",
                "info,openraft=info,sled=warn,h2=warn,tower=warn",
            )
            // kill -9 then drops whatever the node did not fsync, as a power
            // cut would (see orrery_storage::power_loss_simulation).
            .env("ORRERY_TEST_POWER_LOSS", "1")
            // Only a skewed start sets these: never inherit them.
            .env_remove("FAKETIME")
            .env_remove("FAKETIME_SHARED")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let lib = match clock_offset_s {
            Some(off) => {
                let lib = self.libfaketime()?;
                // What `faketime -f ±Ns` set up, minus the fork: the same
                // library (libfaketime.so.1, not the MT variant) and the
                // same FAKETIME string. Like the wrapper by default, the
                // monotonic clocks are faked too (no DONT_FAKE_MONOTONIC);
                // FAKETIME_DONT_RESET only affects absolute (`@`) times.
                let preload = std::env::var_os("LD_PRELOAD");
                cmd.env("LD_PRELOAD", procs::preload_value(&lib, preload.as_deref()))
                    .env("FAKETIME", procs::faketime_spec(off));
                Some(lib)
            }
            None => {
                // A preload the harness itself runs under must not skew a
                // node that should keep real time.
                cmd.env_remove("LD_PRELOAD");
                None
            }
        };
        let pid = self
            .procs
            .spawn(&mut cmd, lib.is_some())
            .with_context(|| format!("starting {}", orrery.display()))?;
        let n = self.node(id)?;
        n.pid = Some(pid);
        n.paused = false;
        n.clock_offset_s = clock_offset_s;
        self.wait_started(id, pid, lib.as_deref(), Duration::from_secs(20))
            .await
    }

    /// Restarts node `id` with its clock shifted by `offset_s` (the clock
    /// nemesis).
    pub async fn restart_with_clock(&mut self, id: u64, offset_s: i64) -> Result<()> {
        self.kill(id)?;
        self.start(id, Some(offset_s)).await
    }

    /// Waits for `/healthz`, then checks (from /proc) that `pid` is the
    /// process serving it. Another process answering in its place is a
    /// node the harness lost track of: a *could not run* error.
    async fn wait_started(
        &mut self,
        id: u64,
        pid: i32,
        faketime: Option<&Path>,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/healthz", self.access.base(&client_addr(id)));
        let addr = sock(id, CLIENT_PORT);
        loop {
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    procs::verify_node(pid, addr, faketime)
                        .map_err(|e| CouldNotRun(format!("node n{id}: {e}")))?;
                    return Ok(());
                }
            }
            if let Some(st) = self.procs.try_wait(pid) {
                self.node(id)?.pid = None;
                let owners = procs::listeners_on(addr);
                if !owners.is_empty() {
                    bail!(CouldNotRun(format!(
                        "node n{id} (pid {pid}) exited during start ({st}) while {addr} is served by {}: a node the harness lost track of",
                        owners.join(", ")
                    )));
                }
                bail!(
                    "node n{id} exited during start ({st}); see {}",
                    self.log_path(id).display()
                );
            }
            if Instant::now() > deadline {
                bail!("node n{id} not healthy after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `kill -9` of the node and its process group; then its ports must be
    /// free, or some process the harness does not hold still serves them.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        let procs = self.procs.clone();
        let n = self.node(id)?;
        let pid = n.pid.take();
        n.paused = false;
        n.clock_offset_s = None;
        if let Some(pid) = pid {
            procs.kill(pid);
        }
        for addr in [sock(id, CLIENT_PORT), sock(id, PEER_PORT)] {
            let owners = procs::listeners_on(addr);
            if !owners.is_empty() {
                bail!(CouldNotRun(format!(
                    "after kill -9 of node n{id} ({}), {addr} is still served by {}",
                    pid.map_or("not running".to_string(), |p| format!("pid {p}")),
                    owners.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// SIGSTOP of the node and its process group.
    pub fn pause(&mut self, id: u64) -> Result<()> {
        let procs = self.procs.clone();
        let n = self.node(id)?;
        if let Some(pid) = n.pid {
            procs.signal(pid, libc::SIGSTOP);
            n.paused = true;
        }
        Ok(())
    }

    /// SIGCONT of the node and its process group.
    pub fn resume(&mut self, id: u64) -> Result<()> {
        let procs = self.procs.clone();
        let n = self.node(id)?;
        if let Some(pid) = n.pid {
            procs.signal(pid, libc::SIGCONT);
        }
        n.paused = false;
        Ok(())
    }

    /// SIGTERM to every node, then SIGKILL after a grace period; all reaped.
    pub async fn stop_all(&mut self) {
        self.procs.terminate_all(Duration::from_secs(5)).await;
        for n in &mut self.nodes {
            n.pid = None;
            n.paused = false;
        }
        // No node uses them any more: unmounted (a clean unmount keeps
        // everything).
        self.mounts.clear();
    }

    /// Runs orreryctl, killed after 30 s: an admin call sent to a node cut
    /// off from its quorum must not stall the nemesis.
    fn ctl(&self, args: &[&str]) -> Result<String> {
        tokio::task::block_in_place(|| run_ctl(&self.bin_dir, args, Some(&self.access)))
    }

    /// Starts every node, initialises the cluster on n1 and adds the rest.
    pub async fn setup(&mut self) -> Result<()> {
        std::fs::create_dir_all(self.dir.join("data"))?;
        for id in self.ids() {
            self.start(id, None).await?;
        }
        let ep = client_addr(1);
        let shards = self.shards.to_string();
        let out = self.ctl(&[
            "--endpoint",
            &ep,
            "--json",
            "cluster",
            "init",
            "--shards",
            &shards,
        ])?;
        if self.access.is_secure() {
            let v: Value = serde_json::from_str(&out).context("cluster init output")?;
            let token = v["root_token"]
                .as_str()
                .context("cluster init printed no root token")?;
            self.access.set_token(token);
        }
        for id in self.ids().into_iter().skip(1) {
            self.add_member(id)?;
        }
        Ok(())
    }

    /// Adds node `id` (already running) through any live node.
    pub fn add_member(&self, id: u64) -> Result<()> {
        let mut last = None;
        for via in self.ids() {
            if via == id || !self.nodes.iter().any(|n| n.id == via && n.running()) {
                continue;
            }
            match self.ctl(&[
                "--endpoint",
                &client_addr(via),
                "members",
                "add",
                &id.to_string(),
                "--addr",
                &client_addr(id),
                "--peer-addr",
                &peer_addr(id),
                "--wait",
                "60",
            ]) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no live node to add n{id} through")))
    }

    /// Removes node `id` from the cluster through node `via`.
    pub fn remove_member(&self, id: u64, via: u64) -> Result<String> {
        self.ctl(&[
            "--endpoint",
            &client_addr(via),
            "members",
            "remove",
            &id.to_string(),
        ])
    }

    /// The cluster view of node `id` (`GET /v1/cluster`).
    pub async fn cluster_view(&self, id: u64) -> Result<Value> {
        let url = format!("{}/v1/cluster", self.access.base(&client_addr(id)));
        let r = self.access.auth(self.http.get(url)).send().await?;
        if !r.status().is_success() {
            bail!("GET /v1/cluster on n{id}: {}", r.status());
        }
        Ok(r.json().await?)
    }

    /// Waits (up to 60 s) until every running node's copy of the cluster
    /// version is at least `min` (a new cluster finalizes the newest
    /// shortly after it forms; workflows need 7).
    pub async fn wait_version(&self, min: u64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        for n in self.nodes.iter().filter(|n| n.running()) {
            loop {
                let active = match self.cluster_view(n.id).await {
                    Ok(v) => v["cluster_version"]["active"].as_u64().unwrap_or(0),
                    Err(_) => 0,
                };
                if active >= min {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "n{} never reached cluster version {min} (at {active})",
                        n.id
                    );
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        Ok(())
    }

    /// Creates the `queue` workload's queue (idempotent: an existing one is fine).
    pub async fn create_queue(&self) -> Result<()> {
        use crate::workload::{QUEUE, QUEUE_LEASE_S};
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while Instant::now() < deadline {
            for n in self.nodes.iter().filter(|n| n.running()) {
                let url = format!("{}/v1/queues", self.access.base(&client_addr(n.id)));
                let r = self
                    .access
                    .auth(self.http.post(url))
                    .json(&serde_json::json!({"name": QUEUE, "lease_s": QUEUE_LEASE_S, "max_attempts": 1000}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() || r.status() == 409 => return Ok(()),
                    Ok(r) => {
                        last = format!("{}: {}", r.status(), r.text().await.unwrap_or_default())
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        bail!("could not create queue {QUEUE}: {last}")
    }

    /// The leader of `group` as some live node sees it.
    pub async fn leader_of(&self, group: u64) -> Option<u64> {
        for n in self.nodes.iter().filter(|n| n.running() && !n.paused) {
            let Ok(v) = self.cluster_view(n.id).await else {
                continue;
            };
            let l = if group == PLACEMENT_GROUP {
                v["placement_leader"].as_u64()
            } else {
                v["shards"]
                    .as_array()
                    .and_then(|s| s.iter().find(|s| s["group"].as_u64() == Some(group)))
                    .and_then(|s| s["leader"].as_u64())
            };
            if l.is_some() {
                return l;
            }
        }
        None
    }
}

/// Directory holding this executable, where cargo also puts `orrery`.
pub fn default_bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs orreryctl (killed after 30 s: an admin call sent to a node cut
/// off from its quorum must not stall the nemesis), trusting the test's CA
/// and sending its root token when `access` is secure.
fn run_ctl(bin_dir: &std::path::Path, args: &[&str], access: Option<&Access>) -> Result<String> {
    let mut cmd = Command::new("timeout");
    cmd.arg("30").arg(bin_dir.join("orreryctl")).args(args);
    if let Some(a) = access {
        if let Some(ca) = a.ca_cert() {
            cmd.env("ORRERY_CA_CERT", ca);
        }
        if let Some(t) = a.token() {
            cmd.env("ORRERY_TOKEN", t);
        }
    }
    let out = cmd.output().context("running orreryctl")?;
    if !out.status.success() {
        bail!(
            "orreryctl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
