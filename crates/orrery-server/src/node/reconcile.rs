//! Reconciliation: the groups hosted here follow the shard map, and the
//! placement leader keeps the shard map complete; joining a cluster.

use super::Node;
use crate::api::{lock, ApiError};
use openraft::ChangeMembers;
use openraft::ServerState;
use orrery_placement::{plan_leaders, plan_replicas, PlacementState};
use orrery_raft::Group;
use orrery_types::shard_group;
use orrery_types::{NodeAddr, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

impl Node {
    /// Brings the groups hosted here in line with the shard map, and on the
    /// placement leader, the shard map in line with the members.
    pub async fn run_reconciler(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        // Its reads can wait for a request timeout each: a task of its own.
        tokio::spawn(self.clone().run_group_gc(shutdown.clone()));
        loop {
            if let Err(e) = self.reconcile_once().await {
                tracing::debug!("reconcile: {e}");
            }
            tokio::select! {
                _ = self.reconcile.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    pub(super) async fn reconcile_once(self: &Arc<Self>) -> Result<(), ApiError> {
        let local = self.placement();
        if !local.is_initialized() {
            return Ok(());
        }
        let p = match self.map_to_act_on(local).await {
            Some(p) => p,
            None => return Ok(()),
        };
        let me = self.id();
        for (s, info) in p.shards.iter().enumerate() {
            let gid = shard_group(s as u32);
            if !info.replicas.contains(&me) {
                // Replicas moved off this node: while it still leads the
                // group, it carries out the move (then steps down).
                if let Some(g) = self.registry.get(gid) {
                    self.reconcile_shard_membership(&g, &info.replicas, &p);
                }
                continue;
            }
            let g = self
                .registry
                .ensure(gid)
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            // Only a shard's very first replica may bootstrap it; every later
            // replica joins through the existing group's leader.
            // Epoch 1 is the map `Init` wrote; a later single-replica list is
            // a move, whose new replica must join the existing group (a fresh
            // bootstrap there would fork the shard).
            if info.replicas == [me] && info.epoch == 1 && g.is_pristine() {
                let members: BTreeMap<NodeId, NodeAddr> =
                    [(me, self.cfg.node_addr())].into_iter().collect();
                if let Err(e) = g.raft.initialize(members).await {
                    tracing::warn!(group = gid, "initialise shard group: {e}");
                } else {
                    tracing::info!(group = gid, "shard group bootstrapped");
                }
            }
            self.reconcile_shard_membership(&g, &info.replicas, &p);
            self.maybe_hand_over(&g, &info.replicas, &p);
        }
        self.declare_capacity(&p).await;
        // The placement leader keeps the shard map complete.
        if let Some(pg) = self.placement_group() {
            if pg.raft.metrics().borrow().state == ServerState::Leader {
                let mut plan = plan_replicas(&p);
                if plan.is_empty() {
                    plan = plan_leaders(&p);
                }
                if plan.is_empty() {
                    // Balance replica counts only once every shard has its
                    // replicas and its preferred leader.
                    self.maybe_rebalance(&p).await;
                }
                for cmd in plan {
                    tracing::info!(?cmd, "placement plan");
                    if let Err(e) = self.placement_write(cmd).await {
                        tracing::debug!("placement plan not applied: {e}");
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// The shard map this tick acts on, or `None` to skip the tick.
    ///
    /// This node's own copy of the placement state can be far behind: a
    /// restarted node applies only the committed prefix it stored (the
    /// commit index is written every few hundred entries), so its first
    /// view can be the map `Init` wrote, with one replica per shard. openraft
    /// brings a node that led a shard group back as that group's leader at
    /// once, so acting on that view would shrink live groups to the
    /// replicas of a long-gone map (seen in the container suite: a node
    /// restarted in a rolling upgrade replaced shard voters [1,2,3] with
    /// [1]). Any change to a group's membership, and the placement
    /// leader's plans, are therefore made only from the map read through
    /// the placement leader (linearizable); without a quorum, nothing is
    /// changed this tick, and no group opened. Ticks with nothing to change
    /// use the local copy.
    async fn map_to_act_on(self: &Arc<Self>, local: PlacementState) -> Option<PlacementState> {
        let leads_placement = self
            .placement_group()
            .is_some_and(|pg| pg.raft.metrics().borrow().state == ServerState::Leader);
        let pending = local.shards.iter().enumerate().any(|(s, info)| {
            self.registry
                .get(shard_group(s as u32))
                .is_some_and(|g| self.membership_change_due(&g, &info.replicas))
        });
        // A shard group to open here for the first time (a replica moved to
        // this node) is opened only on the confirmed map too: a restarted
        // node's stale copy may still list groups it was moved off, and
        // dropped (`group_gc.rs`).
        let me = self.id();
        let missing = local.shards.iter().enumerate().any(|(s, info)| {
            info.replicas.contains(&me) && self.registry.get(shard_group(s as u32)).is_none()
        });
        if !leads_placement && !pending && !missing {
            return Some(local);
        }
        match self.placement_read().await {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::debug!("reconcile skipped: shard map not confirmed: {e}");
                None
            }
        }
    }

    /// Whether this node leads `g` and its voters differ from `desired`,
    /// with no change in progress: a membership change is due.
    fn membership_change_due(&self, g: &Group, desired: &[NodeId]) -> bool {
        let m = g.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return false;
        }
        let mem = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
        let want: BTreeSet<NodeId> = desired.iter().copied().collect();
        // A leader that is no longer a voter has removed itself (a move off
        // this node) and only waits for that change to commit and to step
        // down. It must propose nothing more: openraft keeps it leader
        // until then, but its state no longer counts it as one (a second
        // change there trips openraft's "only leader" assertion).
        voters != want && voters.contains(&self.id()) && mem.get_joint_config().len() <= 1
    }

    /// On a shard leader: make the group's voters equal the shard map's
    /// replicas (learners first, so a new replica catches up before voting).
    pub(super) fn reconcile_shard_membership(
        self: &Arc<Self>,
        g: &Arc<Group>,
        desired: &[NodeId],
        p: &PlacementState,
    ) {
        if !self.membership_change_due(g, desired) {
            return;
        }
        let m = g.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership().clone();
        let want: BTreeSet<NodeId> = desired.iter().copied().collect();
        let mut nodes = BTreeMap::new();
        for id in &want {
            match p.members.get(id) {
                Some(member) => {
                    nodes.insert(*id, member.addr.clone());
                }
                None => return,
            }
        }
        if !lock(&self.busy).insert(g.id) {
            return;
        }
        let node = self.clone();
        let g = g.clone();
        tokio::spawn(async move {
            let r = async {
                for (id, addr) in &nodes {
                    if mem.get_node(id).is_none() {
                        tracing::info!(group = g.id, node = id, "adding shard replica as learner");
                        tokio::time::timeout(node.cfg.admin_timeout, g.raft.add_learner(*id, addr.clone(), true))
                            .await
                            .map_err(|_| format!("learner {id} did not catch up"))?
                            .map_err(|e| e.to_string())?;
                    }
                }
                node.bounded(g.raft.change_membership(ChangeMembers::ReplaceAllVoters(want), false))
                    .await?;
                tracing::info!(group = g.id, voters = ?nodes.keys().collect::<Vec<_>>(), "shard membership updated");
                Ok::<_, String>(())
            }
            .await;
            lock(&node.busy).remove(&g.id);
            match r {
                // Done: the next step (a hand-over, the next move) at once.
                Ok(()) => node.wake_reconciler(),
                // Retried on the reconciler's next tick (500 ms), not at
                // once: waking it here made a change that cannot finish
                // (e.g. another still in progress) spin at full CPU.
                Err(e) => tracing::warn!(group = g.id, "shard membership change: {e}"),
            }
        });
    }

    /// Asks `endpoint` to add this node, until it is a member.
    pub async fn run_join(
        self: Arc<Self>,
        endpoint: String,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let is_member = self
                .placement_group()
                .map(|g| !g.is_pristine())
                .unwrap_or(false);
            if is_member {
                tracing::info!("joined the cluster");
                return;
            }
            match self.ask_to_join(&endpoint).await {
                Ok(()) => {
                    tracing::info!(%endpoint, "added to the cluster");
                    return;
                }
                Err(e) => tracing::warn!(%endpoint, "join: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One AddMember call to `endpoint`: over TLS (trusting the cluster
    /// CA) with the `--join-token` on a secure cluster.
    async fn ask_to_join(&self, endpoint: &str) -> Result<(), String> {
        use orrery_proto::v1::cluster_client::ClusterClient;
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
        let host = endpoint
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let ep = match &self.cfg.certs {
            Some(c) => Endpoint::from_shared(format!("https://{host}"))
                .map_err(|e| e.to_string())?
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&c.ca_pem)))
                .map_err(|e| e.to_string())?,
            None => Endpoint::from_shared(format!("http://{host}")).map_err(|e| e.to_string())?,
        };
        let ch = ep
            .connect()
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let mut c = ClusterClient::new(ch);
        let mut req = tonic::Request::new(orrery_proto::v1::AddMemberRequest {
            id: self.id(),
            addr: self.cfg.addr.clone(),
            peer_addr: self.cfg.peer_addr.clone(),
            learner_only: false,
        });
        if let Some(t) = &self.cfg.join_token {
            let v = format!("Bearer {t}")
                .parse()
                .map_err(|_| "--join-token holds characters a header cannot".to_string())?;
            req.metadata_mut().insert("authorization", v);
        }
        c.add_member(req)
            .await
            .map(|_| ())
            .map_err(|s| s.message().to_string())
    }
}
