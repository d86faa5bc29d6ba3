//! The node runtime: routes every request to the group leader that can
//! serve it (locally or over the peer channel), executes membership
//! changes on the placement leader, and reconciles the shard groups hosted
//! here with the shard map.

mod admin;
pub mod backup;
pub mod group_commit;
mod group_gc;
mod handover;
pub mod metrics;
pub mod ops;
pub mod peer;
mod rebalance;
mod reconcile;
mod route;
pub(crate) mod status;
pub mod storage_health;
pub mod typed;
pub mod validate;
pub mod version;
mod view_read;

pub use admin::placement_error;
pub use rebalance::{RebalanceChange, RebalanceStatus};
pub use typed::{DomainCommand, DomainQuery};

use crate::api::ApiError;
use group_commit::GroupCommit;
use metrics::Metrics;
use orrery_placement::PlacementState;
use orrery_raft::{Group, RaftSettings, Registry};
use orrery_types::{shard_group, GroupId, NodeAddr, NodeId, PLACEMENT_GROUP};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A forwarded request may be forwarded again (its target lost leadership
/// meanwhile), but never in a loop.
pub(super) const MAX_HOPS: u32 = 3;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Address clients use (REST + gRPC), as advertised to peers.
    pub addr: String,
    /// Address peers use (Raft + forwarding), as advertised.
    pub peer_addr: String,
    pub data_dir: PathBuf,
    pub raft: RaftSettings,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub request_timeout: Duration,
    pub admin_timeout: Duration,
    /// Ask this endpoint to add us, if we are not a member yet.
    pub join: Option<String>,
    /// Source address of outgoing peer connections (`None`: the kernel picks).
    pub peer_source: Option<std::net::IpAddr>,
    /// Execution engine worker slots (0 = no engine on this node).
    pub workers: usize,
    /// Root directory for the built-in fs.* / image.* job kinds.
    pub fs_root: Option<PathBuf>,
    /// Run `command` jobs on this node.
    pub allow_command_jobs: bool,
    /// The user `command` jobs run as when the node runs as root.
    pub command_user: Option<String>,
    /// Which of the host's GPUs this node's engine manages.
    pub gpus: orrery_exec::GpuSelection,
    /// How long finished jobs are kept before shard leaders prune them.
    pub job_retention: Duration,
    /// TLS material (`--certs-dir`): the client port serves TLS, the peer
    /// port mutual TLS. `None` only with `--insecure`.
    pub certs: Option<orrery_tls::NodeCerts>,
    /// How callers are authenticated (`--insecure`, JWT, metrics).
    pub auth: crate::auth::AuthConfig,
    /// The admin token a joining node shows (`--join-token`).
    pub join_token: Option<String>,
    /// The one origin browsers may call from (`--cors-origin`).
    pub cors_origin: Option<String>,
    /// Policy settings: the http source allowlist, the deadline maximum.
    pub policies: crate::service::policies::PolicyConfig,
    /// How many replica moves the rebalancer runs at once (when this node
    /// leads the placement group).
    pub rebalance: orrery_placement::MoveLimits,
    /// This node's declared capacity (`--capacity`, 1..=1000): recorded in
    /// the placement state once the cluster runs version 9.
    pub capacity: u32,
    /// How long the shard map must have left this node out of a group
    /// before the group is dropped here (`--drop-grace-s`, `group_gc.rs`).
    pub drop_grace: Duration,
    /// Caps on client connections and requests in flight (`overload.rs`).
    pub limits: crate::overload::Limits,
    /// `--initial-members`: form a cluster by itself at start.
    pub bootstrap: Option<crate::bootstrap::Bootstrap>,
    /// `--providers`: the model providers `image.caption` jobs use (read
    /// and checked at start, keys included); `None`: this node does not
    /// claim `image.caption` jobs.
    pub providers: Option<Arc<crate::providers::ProvidersConfig>>,
}

impl NodeConfig {
    pub fn node_addr(&self) -> NodeAddr {
        NodeAddr {
            addr: self.addr.clone(),
            peer_addr: self.peer_addr.clone(),
        }
    }
}

pub struct Node {
    pub cfg: NodeConfig,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// The client port's connection and request budgets.
    pub budgets: Arc<crate::overload::Budgets>,
    reconcile: Notify,
    /// Groups with a membership change in flight (started by this node).
    busy: Mutex<HashSet<GroupId>>,
    /// Per group: when this node last tried to hand leadership to the
    /// preferred leader, and how many tries in a row failed.
    last_hand_over: Mutex<HashMap<GroupId, (Instant, u32)>>,
    /// Groups whose writes wait (until the instant) while their leadership
    /// is handed over.
    paused: Mutex<HashMap<GroupId, Instant>>,
    /// Lanes that merge concurrent queue writes into one entry per group.
    group_commit: GroupCommit,
    /// When this node (as placement leader) last looked for moves.
    last_rebalance: Mutex<Option<Instant>>,
    /// Why this node's storage failed, once it did (`storage_health.rs`).
    storage_failed: std::sync::OnceLock<String>,
    /// Shard groups hosted here that the confirmed shard map no longer
    /// lists this node for, and since when (`group_gc.rs`).
    departed: Mutex<HashMap<GroupId, Instant>>,
}

/// On a leader: how many entries of its log `target` does not have yet.
fn behind(m: &orrery_raft::RaftMetrics, target: NodeId) -> u64 {
    let matched = m
        .replication
        .as_ref()
        .and_then(|r| r.get(&target).cloned().flatten())
        .map(|l| l.index + 1)
        .unwrap_or(0);
    (m.last_log_index.map(|l| l + 1).unwrap_or(0)).saturating_sub(matched)
}

impl Node {
    pub fn new(cfg: NodeConfig, registry: Arc<Registry>) -> Arc<Self> {
        Arc::new(Self {
            budgets: crate::overload::Budgets::new(cfg.limits, cfg.admin_timeout),
            cfg,
            registry,
            metrics: Arc::new(Metrics::default()),
            reconcile: Notify::new(),
            busy: Mutex::new(HashSet::new()),
            last_hand_over: Mutex::new(HashMap::new()),
            paused: Mutex::new(HashMap::new()),
            group_commit: GroupCommit::default(),
            last_rebalance: Mutex::new(None),
            storage_failed: std::sync::OnceLock::new(),
            departed: Mutex::new(HashMap::new()),
        })
    }

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    pub fn placement_group(&self) -> Option<Arc<Group>> {
        self.registry.get(PLACEMENT_GROUP)
    }

    /// The placement state as of now: read through the placement leader
    /// (linearizable), so that a membership change that has returned is
    /// visible from every node. Without a quorum, this node's own view,
    /// which may be stale.
    pub async fn placement_current(&self) -> PlacementState {
        if self.placement().is_initialized() {
            if let Ok(p) = self.placement_read().await {
                return p;
            }
        }
        self.placement()
    }

    /// The placement state read linearizably (through the placement
    /// leader). The settings of cluster version 9 (capacities, move
    /// limits) are not in the state's encoding, so a read answered by
    /// another node lacks them: they are taken from this node's copy, which
    /// may lag by the entries not yet applied here (they change rarely;
    /// [`Node::change_rebalance`] waits for its own change to apply here).
    pub(super) async fn placement_read(&self) -> Result<PlacementState, ApiError> {
        let mut p = self
            .read(PLACEMENT_GROUP, typed::PlacementRead, true)
            .await?;
        let local = self.placement();
        p.capacities = local.capacities;
        p.move_limits = local.move_limits;
        Ok(p)
    }

    /// This node's copy of the placement state (may lag the leader's).
    pub fn placement(&self) -> PlacementState {
        self.placement_group()
            .map(|g| g.sm.read(|s| s.placement.clone()))
            .unwrap_or_default()
    }

    /// Whether this node can serve cluster operations now: it knows a
    /// placement leader and, when it is that leader, a quorum of the
    /// placement group acknowledged it within two election timeouts (a
    /// leader cut off from its quorum keeps believing it leads; it must
    /// not report ready). Returns the leader, or why not.
    pub fn readiness(&self) -> Result<NodeId, String> {
        if let Some(why) = self.storage_failure() {
            return Err(format!("storage failed: {why}"));
        }
        let Some(g) = self.placement_group() else {
            return Err("not part of an initialised cluster yet".into());
        };
        let m = g.raft.metrics().borrow().clone();
        let Some(leader) = m.current_leader else {
            return Err("no placement leader known (election in progress, or no quorum)".into());
        };
        if leader == self.id() {
            let limit = 2 * self.cfg.raft.election_max_ms;
            match m.millis_since_quorum_ack {
                Some(ms) if ms <= limit => {}
                Some(ms) => {
                    return Err(format!(
                    "this node leads the placement group but no quorum acknowledged it for {ms} ms"
                ))
                }
                None => {
                    return Err(
                        "this node leads the placement group but no quorum acknowledged it yet"
                            .into(),
                    )
                }
            }
        }
        Ok(leader)
    }

    pub fn placement_leader(&self) -> Option<NodeId> {
        self.placement_group()
            .and_then(|g| g.raft.metrics().borrow().current_leader)
    }

    /// The shard map as this node knows it, or an error before init.
    pub(super) fn shard_count(&self) -> Result<u32, ApiError> {
        let n = self
            .placement_group()
            .map(|g| g.sm.read(|s| s.placement.shard_count()))
            .unwrap_or(0);
        if n == 0 {
            Err(ApiError::NotInitialized)
        } else {
            Ok(n)
        }
    }

    /// Whether this node leads `group` as far as its own Raft core last
    /// said (a hint for choosing where to write: the write itself still
    /// goes through the normal route, which forwards if it is stale).
    pub fn leads(&self, group: GroupId) -> bool {
        self.registry
            .get(group)
            .is_some_and(|g| g.raft.metrics().borrow().current_leader == Some(self.id()))
    }

    pub fn group_for_key(&self, key: &[u8]) -> Result<GroupId, ApiError> {
        Ok(shard_group(orrery_types::shard_for_key(
            key,
            self.shard_count()?,
        )))
    }

    pub fn shard_groups(&self) -> Result<Vec<GroupId>, ApiError> {
        Ok((0..self.shard_count()?).map(shard_group).collect())
    }

    pub(super) fn deadline(&self) -> Instant {
        Instant::now() + self.cfg.request_timeout
    }

    pub fn wake_reconciler(&self) {
        self.reconcile.notify_one();
    }
}

/// A shard map listing `replicas` per shard (epoch 2): the planners' and
/// the group drop's unit tests read it.
#[cfg(test)]
pub(crate) fn test_shard_map(replicas: &[&[NodeId]]) -> orrery_placement::PlacementState {
    orrery_placement::PlacementState {
        cluster_id: Some("c".into()),
        shards: replicas
            .iter()
            .map(|r| orrery_placement::ShardInfo {
                replicas: r.to_vec(),
                epoch: 2,
            })
            .collect(),
        ..Default::default()
    }
}
