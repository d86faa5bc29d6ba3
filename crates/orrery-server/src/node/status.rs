//! Status: this node's view of its groups, and every member's, gathered
//! over the peer channel.

use super::ops::GroupReport;
use super::Node;
use openraft::ServerState;
use orrery_raft::PeerClients;
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
        let mut reports = Vec::new();
        let mut unreachable = Vec::new();
        for (id, m) in self.poll_members().await {
            match m {
                Some(mut m) => reports.append(&mut m.reports),
                None => unreachable.push(id),
            }
        }
        (reports, unreachable)
    }

    /// Every member's status (this node's first, then the others in id
    /// order), gathered over the peer channel with a 1 s timeout each;
    /// `None` for a member that did not answer.
    pub async fn poll_members(&self) -> Vec<(NodeId, Option<MemberStatus>)> {
        let p = self.placement();
        let me = MemberStatus {
            reports: self.local_reports(),
            version: MemberVersion::this_build(),
        };
        let futs = p.members.values().filter(|m| m.id != self.id()).map(|m| {
            let clients = self.registry.clients().clone();
            let (id, addr) = (m.id, m.addr.peer_addr.clone());
            async move { (id, member_status(&clients, &addr).await) }
        });
        let mut out = vec![(self.id(), Some(me))];
        out.extend(futures::future::join_all(futs).await);
        out
    }
}

/// One member's answer to LocalStatus.
pub struct MemberStatus {
    pub reports: Vec<GroupReport>,
    pub version: MemberVersion,
}

/// What a node reports about its build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberVersion {
    /// The highest cluster version it supports.
    pub supported: u32,
    /// Its build; empty for builds from before cluster versions.
    pub build: String,
}

impl MemberVersion {
    pub fn this_build() -> Self {
        MemberVersion {
            supported: super::version::supported(),
            build: super::version::build(),
        }
    }
}

/// Asks the node at `peer_addr` for its LocalStatus (1 s timeout).
pub async fn member_status(clients: &PeerClients, peer_addr: &str) -> Option<MemberStatus> {
    let mut c = clients.client(peer_addr).ok()?;
    let mut req = tonic::Request::new(orrery_proto::peer::LocalStatusRequest {});
    req.set_timeout(Duration::from_secs(1));
    let reply = tokio::time::timeout(Duration::from_secs(1), c.local_status(req))
        .await
        .ok()?
        .ok()?
        .into_inner();
    Some(MemberStatus {
        reports: orrery_storage::decode::<Vec<GroupReport>>(&reply.payload).ok()?,
        version: MemberVersion {
            // Builds from before cluster versions leave it 0: version 1.
            supported: reply.supported_version.max(orrery_raft::version::BASE),
            build: reply.build,
        },
    })
}
