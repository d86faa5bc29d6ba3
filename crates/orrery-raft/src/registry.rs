//! The groups a node hosts, keyed by group id.

use crate::network::{GroupNetwork, PeerClients};
use crate::{Error, GroupState, Raft, SmHandle, TypeConfig};
use openraft::storage::RaftLogStorage;
use openraft::{Config, SnapshotPolicy};
use orrery_storage::{LogStore, NodeStorage, StateMachineStore};
use orrery_types::{group_name, GroupId, NodeId};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Raft timing and compaction settings, the same for every group.
#[derive(Clone, Debug)]
pub struct RaftSettings {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot (and allow purging the log below it) after at least
    /// this many entries since the last one, and once the log appended
    /// since is at least as large as that snapshot (see `snapshots.rs`).
    pub snapshot_logs: u64,
    /// Entries kept in the log below the last snapshot, so that briefly
    /// lagging followers catch up from the log instead of a snapshot.
    pub keep_logs: u64,
    pub snapshot_chunk_bytes: u64,
    /// How long a leadership confirmed by a read-index round serves
    /// linearizable reads without another round (see [`crate::lease`]);
    /// 0 turns leases off. Must stay below `election_min_ms`.
    pub read_lease_ms: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            heartbeat_ms: 150,
            election_min_ms: 800,
            election_max_ms: 1600,
            snapshot_logs: 10_000,
            keep_logs: 1_000,
            snapshot_chunk_bytes: 1 << 20,
            read_lease_ms: 400,
        }
    }
}

impl RaftSettings {
    fn openraft_config(&self) -> Result<Config, Error> {
        let c = Config {
            cluster_name: "orrery".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_min_ms,
            election_timeout_max: self.election_max_ms,
            // Our own schedule requests snapshots (`snapshots::run`).
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: self.keep_logs,
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            install_snapshot_timeout: 4000,
            max_payload_entries: 1024,
            replication_lag_threshold: self.snapshot_logs.max(1000),
            ..Default::default()
        };
        c.validate()
            .map_err(|e| Error::Fatal(format!("invalid raft settings: {e}")))
    }
}

/// One Raft group on this node.
pub struct Group {
    pub id: GroupId,
    pub raft: Raft,
    pub sm: SmHandle,
    log: LogStore<TypeConfig>,
    /// Set when this node led the group before it restarted: the vote it
    /// led under, and the last log index it had then (see
    /// [`Group::read_barrier`]).
    restart_floor: std::sync::Mutex<Option<(openraft::Vote<NodeId>, u64)>>,
    /// Leadership confirmations shared by concurrent linearizable reads.
    read_index: crate::read_index::ReadIndex,
    /// The leader lease those confirmations grant (see [`crate::lease`]).
    lease: std::sync::Mutex<Option<crate::lease::Lease>>,
    lease_len: Duration,
}

/// How a linearizable read was confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPath {
    /// Under the leader's lease: no network round.
    Lease,
    /// By a read-index round (a heartbeat to a quorum), shared with the
    /// reads that arrived with it.
    Round,
}

impl Group {
    /// Confirms, for a linearizable read that arrives now, that this
    /// replica leads and has applied the read index; concurrent reads share
    /// the confirmation round (see [`crate::read_index`]).
    pub async fn ensure_linearizable(&self) -> crate::read_index::Confirmed {
        self.confirm_read().await.0
    }

    /// [`Group::ensure_linearizable`], saying which way the read was
    /// confirmed: under this leader's lease when it holds a valid one,
    /// else by a round, which renews the lease when it succeeds.
    pub async fn confirm_read(&self) -> (crate::read_index::Confirmed, ReadPath) {
        if let Some(index) = self.lease_read().await {
            return (Ok(Some(index)), ReadPath::Lease);
        }
        // The round this read joins starts after it arrived, so its
        // heartbeats leave after `arrived`: the lease counts from here.
        let arrived = Instant::now();
        let (leader, vote, membership) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (
                m.state == openraft::ServerState::Leader,
                m.vote,
                *m.membership_config.log_id(),
            )
        };
        let r = self.read_index.confirm(&self.raft).await;
        if r.is_ok() && leader && !self.lease_len.is_zero() {
            let lease = crate::lease::Lease {
                vote,
                membership,
                until: arrived + self.lease_len,
            };
            let mut held = self.lease.lock().unwrap_or_else(|p| p.into_inner());
            // Rounds may end out of order; keep the later lease.
            if held
                .as_ref()
                .is_none_or(|h| h.vote != vote || h.until < lease.until)
            {
                *held = Some(lease);
            }
        }
        (r, ReadPath::Round)
    }

    /// A read under the lease: the read index, once applied here, or
    /// `None` when the read needs a round.
    async fn lease_read(&self) -> Option<openraft::LogId<NodeId>> {
        let lease = self
            .lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        if Instant::now() >= lease.until {
            return None;
        }
        // Asked of the core itself (a message on its queue, no network):
        // the metrics may lag a step-down.
        let core = self
            .raft
            .with_raft_state(|st| crate::lease::CoreView {
                leader: st.server_state == openraft::ServerState::Leader,
                vote: *st.vote_ref(),
                membership: *st.membership_state.effective().log_id(),
                committed: st.committed,
            })
            .await
            .ok()?;
        let index = crate::lease::lease_read_index(&lease, &core, Instant::now())?;
        let mut rx = self.raft.metrics();
        loop {
            if rx
                .borrow_and_update()
                .last_applied
                .is_some_and(|a| a.index >= index.index)
            {
                return Some(index);
            }
            rx.changed().await.ok()?;
        }
    }

    /// Waits, after `ensure_linearizable` succeeded, until a read on this
    /// replica may be served.
    ///
    /// openraft 0.9 brings a node that led before a restart back as leader
    /// at once, in its old term, and takes the larger of the first entry
    /// it proposed in that term and its stored commit index as the read
    /// index. The stored commit index need not be durable, so after a
    /// crash of every node that read index can be older than writes that
    /// were acknowledged: a read could miss them. Every acknowledged write
    /// is in the log this leader restarted with (it led the term that
    /// committed them, or they came before it), so reads wait until that
    /// whole log is applied. Once it is, or once the node leads under
    /// another vote (a new term proposes a fresh entry first) or no longer
    /// leads, the barrier is gone for good.
    pub async fn read_barrier(&self) {
        let floor = *self.restart_floor.lock().unwrap_or_else(|p| p.into_inner());
        let Some((vote, floor)) = floor else {
            return;
        };
        let mut rx = self.raft.metrics();
        loop {
            {
                let m = rx.borrow_and_update();
                if m.vote != vote || m.last_applied.is_some_and(|l| l.index >= floor) {
                    break;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
        *self.restart_floor.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Whether this replica has never voted or logged: a group that was
    /// neither initialised here nor joined yet.
    pub fn is_pristine(&self) -> bool {
        self.log.is_pristine()
    }

    /// Whether this replica holds any log entry or snapshot. A replica
    /// without one is a learner yet to be caught up (or a group not yet
    /// joined): it must grant no vote. Had it held entries before (a
    /// group dropped here and re-added), a candidate missing committed
    /// entries could otherwise win with its vote.
    pub fn has_log(&self) -> bool {
        self.raft.metrics().borrow().last_log_index.is_some()
    }

    pub fn name(&self) -> String {
        group_name(self.id)
    }

    /// The entries of this replica's log after its applied index: after a
    /// restart, committed entries the state has not re-applied yet (the
    /// stored commit index may lag), and any uncommitted tail.
    pub async fn unapplied_entries(&self) -> Result<Vec<openraft::Entry<TypeConfig>>, Error> {
        use openraft::storage::RaftLogReader;
        let from = self.sm.last_applied_index() + 1;
        let mut log = self.log.clone();
        log.try_get_log_entries(from..)
            .await
            .map_err(|e| Error::Fatal(format!("group {}: reading the log: {e}", self.id)))
    }

    /// Encoded bytes appended to this group's log since the node started.
    pub fn log_appended_bytes(&self) -> u64 {
        self.log.appended_bytes()
    }
}

pub struct Registry {
    node_id: NodeId,
    storage: NodeStorage,
    clients: PeerClients,
    config: Arc<Config>,
    snapshot_logs: u64,
    lease_len: Duration,
    /// When this node started: it grants no vote for `election_max_ms`
    /// after (see [`Registry::grants_votes`]).
    started: Instant,
    vote_quiet: Duration,
    groups: RwLock<BTreeMap<GroupId, Arc<Group>>>,
    create_lock: tokio::sync::Mutex<()>,
}

impl Registry {
    pub fn new(
        node_id: NodeId,
        storage: NodeStorage,
        clients: PeerClients,
        settings: &RaftSettings,
    ) -> Result<Self, Error> {
        Ok(Self {
            node_id,
            storage,
            clients,
            config: Arc::new(settings.openraft_config()?),
            snapshot_logs: settings.snapshot_logs,
            lease_len: Duration::from_millis(settings.read_lease_ms),
            started: Instant::now(),
            // Without leases nothing relies on the quiet time.
            vote_quiet: if settings.read_lease_ms == 0 {
                Duration::ZERO
            } else {
                Duration::from_millis(settings.election_max_ms)
            },
            groups: RwLock::new(BTreeMap::new()),
            create_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Whether this node may grant votes yet. A follower refuses votes for
    /// `election_max_ms` after it last heard from its leader — the leader
    /// lease counts on that (see [`crate::lease`]) — but a restarted node
    /// has forgotten when that was: it refuses every vote for as long
    /// after it starts instead.
    pub fn grants_votes(&self) -> bool {
        self.started.elapsed() >= self.vote_quiet
    }

    pub fn clients(&self) -> &PeerClients {
        &self.clients
    }

    pub fn storage(&self) -> &NodeStorage {
        &self.storage
    }

    pub fn get(&self, id: GroupId) -> Option<Arc<Group>> {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<Group>> {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Returns the group, opening it from storage (or creating it empty) if
    /// this node does not run it yet.
    pub async fn ensure(&self, id: GroupId) -> Result<Arc<Group>, Error> {
        if let Some(g) = self.get(id) {
            return Ok(g);
        }
        let _guard = self.create_lock.lock().await;
        if let Some(g) = self.get(id) {
            return Ok(g);
        }
        let log = LogStore::<TypeConfig>::open(&self.storage, id)?;
        let entries = log.verify()?;
        log.check_durable()?;
        let sm_store = StateMachineStore::<TypeConfig, GroupState>::open(&self.storage, id)?
            .observed_by(self.node_id);
        let sm = sm_store.handle();
        let restart_floor = {
            let mut l = log.clone();
            let vote = l
                .read_vote()
                .await
                .map_err(|e| Error::Fatal(format!("group {id}: reading the vote: {e}")))?;
            let last = l
                .get_log_state()
                .await
                .map_err(|e| Error::Fatal(format!("group {id}: reading the log: {e}")))?
                .last_log_id
                .map_or(0, |l| l.index);
            vote.filter(|v| v.committed && v.leader_id.node_id == self.node_id)
                .map(|v| (v, last))
        };
        let network = GroupNetwork {
            group: id,
            clients: self.clients.clone(),
        };
        let raft = Raft::new(
            self.node_id,
            self.config.clone(),
            network,
            log.clone(),
            sm_store,
        )
        .await
        .map_err(|e| Error::Fatal(e.to_string()))?;
        if let Some((_, floor)) = restart_floor {
            tracing::info!(group = id, name = %group_name(id), floor, "led before the restart: linearizable reads wait until the log up to the floor is applied");
        }
        tracing::info!(group = id, name = %group_name(id), entries, "raft group started");
        let group = Arc::new(Group {
            id,
            raft,
            sm,
            log,
            restart_floor: std::sync::Mutex::new(restart_floor),
            read_index: Default::default(),
            lease: std::sync::Mutex::new(None),
            lease_len: self.lease_len,
        });
        self.groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, group.clone());
        tokio::spawn(crate::snapshots::run(
            Arc::downgrade(&group),
            self.snapshot_logs,
        ));
        Ok(group)
    }

    /// Stops group `id` and takes it out of the registry, its storage
    /// untouched: until it is [`Registry::ensure`]d again this node answers
    /// the group's Raft RPCs with "not hosted", as a crashed node would.
    /// Returns the stopped group, if it ran here.
    pub async fn stop(&self, id: GroupId) -> Result<Option<Arc<Group>>, Error> {
        let _guard = self.create_lock.lock().await;
        let removed = self
            .groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(g) = &removed {
            g.raft
                .shutdown()
                .await
                .map_err(|e| Error::Fatal(format!("group {id}: stopping raft: {e}")))?;
            tracing::info!(group = id, name = %group_name(id), "raft group stopped");
        }
        Ok(removed)
    }

    /// Deletes a stopped group's log, metadata and snapshot from this
    /// node's storage, keeping only its last vote (see
    /// `NodeStorage::drop_group_keeping_vote`).
    pub async fn delete_stopped(&self, id: GroupId) -> Result<(), Error> {
        let _guard = self.create_lock.lock().await;
        if self.get(id).is_some() {
            return Err(Error::Fatal(format!(
                "group {id} runs here: it cannot be deleted"
            )));
        }
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || storage.drop_group_keeping_vote(id))
            .await
            .map_err(|e| Error::Fatal(e.to_string()))?
            .map_err(|e| Error::Fatal(format!("group {id}: deleting its data: {e}")))?;
        tracing::info!(group = id, name = %group_name(id), "group data deleted");
        Ok(())
    }

    /// Stops every group's Raft task (on shutdown).
    pub async fn shutdown(&self) {
        for g in self.all() {
            if let Err(e) = g.raft.shutdown().await {
                tracing::warn!(group = g.id, "raft shutdown: {e}");
            }
        }
        if let Err(e) = self.storage.flush().await {
            tracing::warn!("final flush failed: {e}");
        }
    }
}
