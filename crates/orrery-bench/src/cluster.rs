//! A local cluster of real `orrery` processes on free loopback ports, with
//! data directories under one temporary directory. Dropping it stops every
//! node (SIGTERM, then SIGKILL if one does not exit in time).

use anyhow::{anyhow, bail, Context, Result};
use orrery_client::{pb, Client, Consistency};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Node {
    pub id: u64,
    pub addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

pub struct LocalCluster {
    /// Removed on drop unless `keep` was asked for.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    pub nodes: Vec<Node>,
}

/// `n` distinct free loopback ports (all held open until every one is picked).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding a free loopback port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

impl LocalCluster {
    /// `--certs-dir` (a certificate made for node `id`), or `--insecure`.
    fn security_args(root: &Path, id: u64) -> Result<Vec<std::ffi::OsString>> {
        if crate::access::insecure() {
            return Ok(vec!["--insecure".into()]);
        }
        let out = root.join(format!("certs-n{id}"));
        orrery_tls::create_node(
            &root.join("ca"),
            &out,
            &["127.0.0.1".into(), "localhost".into()],
            false,
        )?;
        Ok(vec!["--certs-dir".into(), out.into_os_string()])
    }

    /// Spawns `n` nodes (not yet a cluster) from `orrery` at `bin`, with data
    /// directories in a new temporary directory under `parent`.
    pub fn spawn(bin: &Path, n: usize, parent: &Path, keep: bool) -> Result<Self> {
        if !bin.is_file() {
            bail!(
                "{} not found; build it with `cargo build --release -p orrery` or pass --bin-dir",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("orrery-bench-")
            .tempdir_in(parent)
            .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
        let root = dir.path().to_path_buf();
        let dir = if keep {
            eprintln!("keeping data and logs in {}", root.display());
            let _ = dir.keep();
            None
        } else {
            Some(dir)
        };
        let mut c = LocalCluster {
            dir,
            root: root.clone(),
            nodes: Vec::new(),
        };
        if !crate::access::insecure() {
            orrery_tls::create_ca(&root.join("ca"), false)?;
            crate::access::set_ca_cert(root.join("ca").join("ca.crt"));
        }
        let ports = free_ports(2 * n)?;
        for i in 0..n {
            let id = i as u64 + 1;
            let node = Node {
                id,
                addr: format!("127.0.0.1:{}", ports[2 * i]),
                peer_addr: format!("127.0.0.1:{}", ports[2 * i + 1]),
                data_dir: root.join(format!("n{id}")),
                log: root.join(format!("n{id}.log")),
                child: None,
            };
            let log = std::fs::File::create(&node.log).context("creating a node log file")?;
            let child = Command::new(bin)
                .args([
                    "serve",
                    "--id",
                    &id.to_string(),
                    "--listen",
                    &node.addr,
                    "--peer-listen",
                    &node.peer_addr,
                ])
                .arg("--data-dir")
                .arg(&node.data_dir)
                .args(Self::security_args(&root, id)?)
                .env(
                    "RUST_LOG",
                    "info,openraft=warn,sled=warn,h2=warn,tower=warn",
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            c.nodes.push(Node {
                child: Some(child),
                ..node
            });
        }
        Ok(c)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The last `lines` lines of node `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Every node's WARN and ERROR log lines (the first `max` of each).
    pub fn log_problems(&self, max: usize) -> Vec<(u64, usize, Vec<String>)> {
        self.nodes
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(&n.log).unwrap_or_default();
                let bad: Vec<&str> = text
                    .lines()
                    .filter(|l| {
                        l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("panicked")
                    })
                    .collect();
                (
                    n.id,
                    bad.len(),
                    bad.iter().take(max).map(|s| s.to_string()).collect(),
                )
            })
            .collect()
    }

    /// Process ids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// Fails if a node process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            if let Some(c) = n.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    let id = n.id;
                    n.child = None;
                    bail!(
                        "node {id} exited ({status}); last log lines:\n{}",
                        self.log_tail(i, 30)
                    );
                }
            }
        }
        Ok(())
    }

    /// Waits until every node answers GET /healthz.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let http = crate::access::http()
            .timeout(Duration::from_secs(2))
            .build()?;
        let start = Instant::now();
        for i in 0..self.nodes.len() {
            let url = format!("{}/healthz", crate::access::base(&self.nodes[i].addr));
            loop {
                self.check_alive()?;
                let ok = http
                    .get(&url)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                if ok {
                    break;
                }
                if start.elapsed() > timeout {
                    bail!(
                        "node {} not healthy after {timeout:?}; last log lines:\n{}",
                        self.nodes[i].id,
                        self.log_tail(i, 30)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// `cluster init` on node 1, `members add` for the others, then waits
    /// until every shard has a replica on every node (up to 3), a leader,
    /// and no lagging replica, and a write and a linearizable read succeed
    /// through every node.
    pub async fn form(&mut self, shards: u32, timeout: Duration) -> Result<()> {
        self.form_members(shards, self.nodes.len(), timeout).await
    }

    /// Forms a cluster of the first `members` nodes (the others stay
    /// outside until [`LocalCluster::add_member`]).
    pub async fn form_members(
        &mut self,
        shards: u32,
        members: usize,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut c = Client::connect_with(&self.nodes[0].addr, &crate::access::grpc()).await?;
        let init = c
            .cluster()
            .init(pb::InitRequest { shards })
            .await
            .context("cluster init")?
            .into_inner();
        if !init.root_token.is_empty() {
            crate::access::set_token(&init.root_token);
            // The first client was made before there was a token.
            c = Client::connect_with(&self.nodes[0].addr, &crate::access::grpc()).await?;
        }
        for i in 1..members {
            let id = self.nodes[i].id;
            let left = deadline.saturating_duration_since(Instant::now());
            for p in self.add_member(i, left).await? {
                eprintln!("  node {id}: {p}");
            }
        }
        let want = members.min(3);
        let mut last = String::new();
        loop {
            self.check_alive()?;
            let (ready, line) = readiness(&mut c, want).await;
            if line != last {
                eprintln!("  {line}");
                last = line;
            }
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!("cluster not ready after {timeout:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // End to end through every member.
        for n in &self.nodes[..members] {
            let mut nc = Client::connect_with(&n.addr, &crate::access::grpc()).await?;
            let key = format!("bench/ready/{}", n.id);
            loop {
                let r = async {
                    nc.put(key.clone(), b"ok".to_vec()).await?;
                    nc.get_with(key.clone(), Consistency::Linearizable).await
                }
                .await;
                match r {
                    Ok(Some(_)) => break,
                    Ok(None) => bail!("node {}: a key just written reads as missing", n.id),
                    Err(e) if Instant::now() > deadline => {
                        bail!("node {} cannot serve requests: {e}", n.id)
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        Ok(())
    }

    /// Adds node `i` (spawned, not yet a member) through node 1; returns
    /// the steps it reported once it is a voter (its shard replicas come
    /// later: those of shards that lack them, or by rebalancing).
    pub async fn add_member(&self, i: usize, timeout: Duration) -> Result<Vec<String>> {
        let mut c = Client::connect_with(&self.nodes[0].addr, &crate::access::grpc()).await?;
        let n = &self.nodes[i];
        let req = pb::AddMemberRequest {
            id: n.id,
            addr: n.addr.clone(),
            peer_addr: n.peer_addr.clone(),
            learner_only: false,
        };
        let r = tokio::time::timeout(timeout, c.cluster().add_member(req))
            .await
            .map_err(|_| anyhow!("adding node {} timed out", n.id))?
            .with_context(|| format!("adding node {}", n.id))?;
        Ok(r.into_inner().progress)
    }

    /// Which node leads how many shards, as node 1 sees it.
    pub async fn shard_leaders(&self) -> Result<BTreeMap<String, u32>> {
        let mut c = Client::connect_with(&self.nodes[0].addr, &crate::access::grpc()).await?;
        let shards = c.shards().await?;
        let mut m = BTreeMap::new();
        for s in shards {
            let k = if s.leader == 0 {
                "unknown".to_string()
            } else {
                format!("node{}", s.leader)
            };
            *m.entry(k).or_insert(0) += 1;
        }
        Ok(m)
    }

    /// The sum over nodes of `orrery_forwarded_total` (requests a node
    /// passed to another node); None if a node did not answer.
    pub async fn forwarded_total(&self, http: &reqwest::Client) -> Option<u64> {
        let addrs: Vec<String> = self.nodes.iter().map(|n| n.addr.clone()).collect();
        let [v] = metric_totals(http, &addrs, ["orrery_forwarded_total"]).await?;
        Some(v as u64)
    }

    /// SIGTERM every node, then wait for each (SIGKILL after `grace`).
    /// Returns one line per node saying how it ended.
    pub fn shutdown(&mut self, grace: Duration) -> Vec<String> {
        let mut out = Vec::new();
        for n in &self.nodes {
            if let Some(c) = &n.child {
                let _ = Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let start = Instant::now();
        for n in &mut self.nodes {
            let Some(mut c) = n.child.take() else {
                continue;
            };
            loop {
                match c.try_wait() {
                    Ok(Some(s)) => {
                        out.push(format!("node {} stopped: {s}", n.id));
                        break;
                    }
                    Ok(None) if start.elapsed() < grace => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        out.push(format!(
                            "node {} did not stop within {grace:?} of SIGTERM; killed",
                            n.id
                        ));
                        break;
                    }
                }
            }
        }
        out
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for line in self.shutdown(Duration::from_secs(15)) {
            if line.contains("killed") {
                eprintln!("{line}");
            }
        }
        if let Some(d) = self.dir.take() {
            let _ = d.close();
        }
    }
}

/// Whether every shard is fully replicated and led, plus a progress line.
async fn readiness(c: &mut Client, want: usize) -> (bool, String) {
    let shards = match c.shards().await {
        Ok(s) => s,
        Err(e) => return (false, format!("listing shards: {e}")),
    };
    let status = match c.cluster().status(pb::StatusRequest {}).await {
        Ok(r) => r.into_inner(),
        Err(e) => return (false, format!("status: {}", e.message())),
    };
    let placed = shards.iter().filter(|s| s.replicas.len() >= want).count();
    let caught_up = status
        .groups
        .iter()
        .filter(|g| {
            g.leader != 0 && g.replicas.iter().filter(|r| r.voter && r.lag == 0).count() >= want
        })
        .count();
    let ready = !shards.is_empty()
        && placed == shards.len()
        && status.unreachable.is_empty()
        && caught_up == status.groups.len()
        && status.groups.len() > shards.len();
    let line = format!(
        "{placed}/{} shards placed on {want} nodes; {caught_up}/{} raft groups led with {want} caught-up voters",
        shards.len(),
        status.groups.len()
    );
    (ready, line)
}

/// Sums each of the counters `names` over the `/metrics` of every node in
/// `addrs`; None if a node did not answer or lacks one of them.
pub async fn metric_totals<const N: usize>(
    http: &reqwest::Client,
    addrs: &[String],
    names: [&str; N],
) -> Option<[f64; N]> {
    let mut sum = [0.0; N];
    for addr in addrs {
        let text = http
            .get(format!("{}/metrics", crate::access::base(addr)))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        for (i, name) in names.iter().enumerate() {
            sum[i] += text
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))?
                .trim()
                .parse::<f64>()
                .ok()?;
        }
    }
    Some(sum)
}
