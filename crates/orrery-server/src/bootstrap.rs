//! Self-forming clusters (`--initial-members`): nodes started together, as
//! a container orchestrator starts them, form one cluster with no manual
//! step.
//!
//! The lowest id listed bootstraps: it runs `cluster init` on itself, writes
//! the root token to `--root-token-file`, and adds the other listed nodes as
//! voters. It bootstraps only when **every** listed node answers on its peer
//! port and none of them belongs to a cluster yet (etcd's
//! `--initial-cluster-state new`, decided by looking instead of by a flag):
//! a lowest node restarted on a lost volume, or started while the others
//! are down, waits instead of making a second cluster. Any node may restart
//! at any time: a member's data directory says it belongs to a cluster, and
//! the bootstrapper resumes adding members it had not added yet (a crash
//! between init and the last add). Once all have been added it records so
//! in the placement group, and never re-adds a member an operator removed
//! later.

use crate::api::ApiError;
use crate::node::ops::AdminOp;
use crate::node::status::member_status;
use crate::service::Services;
use orrery_kv::KvCommand;
use orrery_types::{NodeAddr, NodeId, PLACEMENT_GROUP};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Recorded in the placement group's key-value state once every initial
/// member was added (replicated: survives restarts and leader changes).
const FORMED_KEY: &[u8] = b"cluster/initial-members-formed";

/// How often the bootstrapper looks again while it waits.
const EVERY: Duration = Duration::from_secs(1);

/// `--initial-members` and what goes with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bootstrap {
    pub members: BTreeMap<NodeId, NodeAddr>,
    /// Shards of the new cluster (`--initial-shards`; 0: init's default).
    pub shards: u32,
    /// Where the bootstrapping node writes the root token (mode 0600).
    pub root_token_file: PathBuf,
}

/// Parses `ID@HOST,…` or `ID@CLIENT_ADDR/PEER_ADDR,…`. `ID@HOST` means the
/// node listens on the same ports as this one (`client_port`, `peer_port`),
/// as containers of one service do.
pub fn parse_members(
    spec: &str,
    client_port: u16,
    peer_port: u16,
) -> Result<BTreeMap<NodeId, NodeAddr>, String> {
    let mut out = BTreeMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, rest) = item
            .split_once('@')
            .ok_or_else(|| format!("{item:?}: expected ID@HOST or ID@CLIENT_ADDR/PEER_ADDR"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .ok()
            .filter(|&i| i > 0)
            .ok_or_else(|| format!("{item:?}: the id must be a positive integer"))?;
        let addr = match rest.split_once('/') {
            Some((c, p)) => NodeAddr {
                addr: host_port(c, None, item)?,
                peer_addr: host_port(p, None, item)?,
            },
            None => NodeAddr {
                addr: host_port(rest, Some(client_port), item)?,
                peer_addr: host_port(rest, Some(peer_port), item)?,
            },
        };
        if out.insert(id, addr).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    if out.is_empty() {
        return Err("no members listed".into());
    }
    Ok(out)
}

/// `host:port` from `s`, which must carry a port unless `port` is given
/// (and then must not: `n1:7001` alone is ambiguous, client or peer?).
fn host_port(s: &str, port: Option<u16>, item: &str) -> Result<String, String> {
    let s = s.trim();
    let bad = |why: &str| format!("{item:?}: {why}");
    if s.is_empty() || s.contains(char::is_whitespace) {
        return Err(bad("empty or malformed address"));
    }
    // An IPv6 literal is bracketed; anything else has no colon but the
    // port's.
    let host_end = if s.starts_with('[') {
        s.find(']')
            .ok_or_else(|| bad("unclosed [ in an IPv6 address"))?
            + 1
    } else {
        s.find(':').unwrap_or(s.len())
    };
    let (host, tail) = s.split_at(host_end);
    match (port, tail) {
        (Some(p), "") => Ok(format!("{host}:{p}")),
        (Some(_), _) => Err(bad(
            "give both addresses (ID@CLIENT_ADDR/PEER_ADDR) or a bare host (ID@HOST)",
        )),
        (None, t) => match t.strip_prefix(':').map(str::parse::<u16>) {
            Some(Ok(p)) if p > 0 && !host.is_empty() => Ok(format!("{host}:{p}")),
            _ => Err(bad("an address needs HOST:PORT")),
        },
    }
}

impl Bootstrap {
    /// Checks the list against this node: it must be listed, at the
    /// addresses it advertises (a mismatch would add a node no one reaches).
    pub fn check(&self, id: NodeId, me: &NodeAddr) -> Result<(), String> {
        match self.members.get(&id) {
            None => Err(format!("--initial-members does not list this node ({id})")),
            Some(a) if a != me => Err(format!(
                "--initial-members lists node {id} at {a}, but it advertises {me} \
                 (set --advertise/--peer-advertise, or list it as {id}@{}/{})",
                me.addr, me.peer_addr
            )),
            Some(_) => Ok(()),
        }
    }

    fn bootstrapper(&self) -> NodeId {
        self.members.keys().next().copied().unwrap_or(0)
    }
}

/// The start-up task: returns once this node's part is done (at once on
/// every node but the lowest listed, whose peers add nothing).
pub async fn run(s: Arc<Services>, b: Bootstrap, mut stop: tokio::sync::watch::Receiver<bool>) {
    if s.node.id() != b.bootstrapper() {
        tracing::info!(
            bootstrapper = b.bootstrapper(),
            "--initial-members: waiting to be added by the lowest listed node"
        );
        return;
    }
    let mut last_wait = String::new();
    loop {
        match step(&s, &b).await {
            Ok(Step::Done) => return,
            Ok(Step::Wait(why)) => {
                // Say why once per reason, not every second.
                if why != last_wait {
                    tracing::info!("--initial-members: {why}");
                    last_wait = why;
                }
            }
            Err(e) => tracing::warn!("--initial-members: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

enum Step {
    Done,
    Wait(String),
}

async fn step(s: &Services, b: &Bootstrap) -> Result<Step, ApiError> {
    let node = &s.node;
    let in_cluster = node.placement_group().is_some_and(|g| !g.is_pristine());
    if !in_cluster {
        if let Some(why) = peers_not_fresh(s, b).await {
            return Ok(Step::Wait(why));
        }
        writable_dir(&b.root_token_file)
            .map_err(|e| ApiError::Internal(format!("--root-token-file: {e}")))?;
        let init = s.cluster.init(b.shards).await?;
        if let Some(token) = &init.root_token {
            write_token(&b.root_token_file, token).map_err(|e| {
                ApiError::Internal(format!(
                    "cluster created, but its root token could not be written to {}: {e} \
                     (it cannot be shown again: remove every node's data directory and start over)",
                    b.root_token_file.display()
                ))
            })?;
            tracing::info!(file = %b.root_token_file.display(), "root token written");
        }
        tracing::info!(
            cluster_id = init.cluster_id,
            "--initial-members: cluster created"
        );
    }
    let p = node.placement();
    if !p.is_initialized() {
        return Ok(Step::Wait(
            "this node's placement state is not applied yet".into(),
        ));
    }
    let formed = node
        .placement_group()
        .is_some_and(|g| g.sm.read(|s| s.kv.get(FORMED_KEY).is_some()));
    if formed {
        return Ok(Step::Done);
    }
    for (&id, addr) in &b.members {
        if p.members.contains_key(&id) {
            continue;
        }
        let op = AdminOp::AddMember {
            id,
            addr: addr.addr.clone(),
            peer_addr: addr.peer_addr.clone(),
            learner_only: false,
        };
        tracing::info!(id, %addr, "--initial-members: adding");
        s.cluster.admin(op).await?;
    }
    let cmd = KvCommand::Put {
        key: FORMED_KEY.to_vec(),
        value: b"true".to_vec(),
    };
    node.write(PLACEMENT_GROUP, cmd).await?;
    tracing::info!("--initial-members: every listed node is a member");
    Ok(Step::Done)
}

/// Why the bootstrapper may not create a cluster now: a listed node does
/// not answer, or already belongs to a cluster. `None`: all are fresh.
async fn peers_not_fresh(s: &Services, b: &Bootstrap) -> Option<String> {
    let clients = s.node.registry.clients().clone();
    for (&id, addr) in b.members.iter().filter(|(&id, _)| id != s.node.id()) {
        let Some(st) = member_status(&clients, &addr.peer_addr).await else {
            return Some(format!(
                "node {id} ({}) does not answer yet; the cluster is created once every listed node answers",
                addr.peer_addr
            ));
        };
        let placement = st.reports.iter().find(|r| r.group == PLACEMENT_GROUP);
        if placement.is_some_and(|r| r.last_log_index > 0 || !r.voters.is_empty()) {
            return Some(format!(
                "node {id} already belongs to a cluster; not creating another \
                 (this node waits to be added back: `orreryctl members add`)"
            ));
        }
    }
    None
}

/// Fails early, before the cluster exists, if the token file could not be
/// written (a root token that is lost cannot be shown again).
fn writable_dir(file: &Path) -> std::io::Result<()> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(".orrery-token-probe");
    std::fs::File::create(&probe)?;
    std::fs::remove_file(&probe)
}

/// Writes the token readable by this user only, durably, all or nothing.
fn write_token(file: &Path, token: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = file.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    if let Some(d) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(c: &str, p: &str) -> NodeAddr {
        NodeAddr {
            addr: c.into(),
            peer_addr: p.into(),
        }
    }

    #[test]
    fn bare_hosts_take_this_nodes_ports() {
        let m = parse_members("1@n1, 2@n2,3@[::1]", 7001, 7101).unwrap();
        assert_eq!(m[&1], a("n1:7001", "n1:7101"));
        assert_eq!(m[&2], a("n2:7001", "n2:7101"));
        assert_eq!(m[&3], a("[::1]:7001", "[::1]:7101"));
    }

    #[test]
    fn explicit_addresses() {
        let m = parse_members("2@127.0.0.1:1/127.0.0.1:2,1@h:3/h:4", 9, 9).unwrap();
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(m[&2], a("127.0.0.1:1", "127.0.0.1:2"));
    }

    #[test]
    fn bad_lists_are_refused() {
        for bad in [
            "",
            "n1",
            "0@n1",
            "x@n1",
            "1@n1,1@n2",
            "1@n1:7001",
            "1@n1:7001/n1",
            "1@n1/n1:0",
            "1@/n:1",
            "1@[::1",
        ] {
            assert!(parse_members(bad, 1, 2).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn this_node_must_be_listed_at_its_addresses() {
        let b = Bootstrap {
            members: parse_members("1@n1,2@n2", 7001, 7101).unwrap(),
            shards: 0,
            root_token_file: "t".into(),
        };
        assert!(b.check(1, &a("n1:7001", "n1:7101")).is_ok());
        assert!(b.check(3, &a("n3:7001", "n3:7101")).is_err());
        assert!(b.check(2, &a("0.0.0.0:7001", "0.0.0.0:7101")).is_err());
        assert_eq!(b.bootstrapper(), 1);
    }

    #[test]
    fn the_token_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("sub/root.token");
        writable_dir(&f).unwrap();
        write_token(&f, "orr_x").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "orr_x\n");
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
