//! Status: this node's view of its groups, and every member's, gathered
//! over the peer channel.

use super::ops::GroupReport;
use super::Node;
use openraft::ServerState;
use orrery_types::NodeId;
use std::time::Duration;

impl Node {
    /// This node's view of each group it hosts.
    pub fn local_reports(&self) -> Vec<GroupReport> {
        self.registry
            .all()
            .into_iter()
            .map(|g| {
                let m = g.raft.metrics().borrow().clone();
                let mem = m.membership_config.membership();
                GroupReport {
                    group: g.id,
                    node: self.id(),
                    is_leader: m.state == ServerState::Leader,
                    leader: m.current_leader,
                    term: m.current_term,
                    last_log_index: m.last_log_index.unwrap_or(0),
                    applied: m.last_applied.map(|l| l.index).unwrap_or(0),
                    snapshot: m.snapshot.map(|l| l.index).unwrap_or(0),
                    voters: mem.voter_ids().collect(),
                    learners: mem.learner_ids().collect(),
                    matched: m.replication.as_ref().map(|r| {
                        r.iter()
                            .map(|(n, l)| (*n, l.map(|l| l.index).unwrap_or(0)))
                            .collect()
                    }),
                }
            })
            .collect()
    }

    /// Reports from every member, each gathered over the peer channel.
    pub async fn cluster_reports(&self) -> (Vec<GroupReport>, Vec<NodeId>) {
        let p = self.placement();
        let mut reports = self.local_reports();
        let mut unreachable = Vec::new();
        let futs = p.members.values().filter(|m| m.id != self.id()).map(|m| {
            let clients = self.registry.clients().clone();
            let (id, addr) = (m.id, m.addr.peer_addr.clone());
            async move {
                let r = async {
                    let mut c = clients.client(&addr).ok()?;
                    let mut req = tonic::Request::new(orrery_proto::peer::LocalStatusRequest {});
                    req.set_timeout(Duration::from_secs(1));
                    let reply = tokio::time::timeout(Duration::from_secs(1), c.local_status(req))
                        .await
                        .ok()?
                        .ok()?;
                    orrery_storage::decode::<Vec<GroupReport>>(&reply.into_inner().payload).ok()
                }
                .await;
                (id, r)
            }
        });
        for (id, r) in futures::future::join_all(futs).await {
            match r {
                Some(mut rs) => reports.append(&mut rs),
                None => unreachable.push(id),
            }
        }
        (reports, unreachable)
    }
}
