//! Routing: every write and read goes to the group leader that can serve
//! it, locally or forwarded over the peer channel (at most `MAX_HOPS` times).

use super::group_commit::{Failure, GroupCommit, WriteError};
use super::ops::{ForwardOk, ForwardOp, Query, QueryResult};
use super::MAX_HOPS;
use super::{DomainCommand, DomainQuery, Node};
use crate::api::ApiError;
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use orrery_proto::peer::ForwardRequest;
use orrery_raft::Group;
use orrery_raft::{Command, Response};
use orrery_types::{group_name, group_shard};
use orrery_types::{GroupId, NodeAddr, NodeId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::timeout_at;

impl Node {
    /// Peer addresses of a group's replicas, preferred leader first.
    pub(super) fn replica_addrs(&self, group: GroupId) -> Result<Vec<(NodeId, String)>, ApiError> {
        let p = self.placement();
        if !p.is_initialized() {
            return Err(ApiError::NotInitialized);
        }
        let ids: Vec<NodeId> = match group_shard(group) {
            None => p.members.keys().copied().collect(),
            Some(s) => p
                .shards
                .get(s as usize)
                .map(|i| i.replicas.clone())
                .ok_or_else(|| ApiError::NotFound(format!("shard {s} does not exist")))?,
        };
        Ok(ids
            .into_iter()
            .filter_map(|id| p.members.get(&id).map(|m| (id, m.addr.peer_addr.clone())))
            .collect())
    }

    pub(super) async fn forward(
        &self,
        peer_addr: &str,
        op: &ForwardOp,
        hops: u32,
        deadline: Instant,
    ) -> Result<ForwardOk, FwdErr> {
        if hops >= MAX_HOPS {
            return Err(FwdErr::Api(ApiError::unavailable(
                "request forwarded too many times; leadership is changing",
            )));
        }
        let payload = orrery_storage::encode(op)
            .map_err(|e| FwdErr::Api(ApiError::Internal(e.to_string())))?;
        let mut client = self
            .registry
            .clients()
            .client(peer_addr)
            .map_err(|e| FwdErr::Api(ApiError::Internal(e.to_string())))?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut req = tonic::Request::new(ForwardRequest {
            payload,
            hops: hops + 1,
        });
        req.set_timeout(remaining);
        self.metrics.inc_forwarded();
        match timeout_at(deadline.into(), client.forward(req)).await {
            Err(_) => Err(FwdErr::Sent(format!("timed out waiting for {peer_addr}"))),
            Ok(Err(status)) => {
                let msg = format!("{peer_addr}: {}", status.message());
                // A failed connect means the request never left this node.
                if status.code() == tonic::Code::Unavailable && is_connect_error(&status) {
                    Err(FwdErr::NotSent(msg))
                } else {
                    Err(FwdErr::Sent(msg))
                }
            }
            Ok(Ok(reply)) => {
                let r: Result<ForwardOk, ApiError> =
                    orrery_storage::decode(&reply.into_inner().payload).map_err(|e| {
                        FwdErr::Api(ApiError::Internal(format!("bad forward reply: {e}")))
                    })?;
                r.map_err(FwdErr::Api)
            }
        }
    }

    /// Serves a forwarded operation (the Peer.Forward RPC).
    pub async fn handle_forward(&self, op: ForwardOp, hops: u32) -> Result<ForwardOk, ApiError> {
        match op {
            ForwardOp::Write { group, cmd } => self
                .write_hops(group, cmd, hops)
                .await
                .map(ForwardOk::Write),
            ForwardOp::Read {
                group,
                query,
                linearizable,
            } => self
                .read_hops(group, query, linearizable, hops)
                .await
                .map(ForwardOk::Read),
            ForwardOp::Admin(a) => self.admin_hops(a, hops).await.map(ForwardOk::Admin),
            ForwardOp::Campaign { group } => Ok(ForwardOk::Campaigned(self.campaign(group).await)),
        }
    }

    /// Replicates `cmd` through `group` and returns its applied response.
    pub async fn write<C: DomainCommand>(
        &self,
        group: GroupId,
        cmd: C,
    ) -> Result<C::Reply, ApiError> {
        let r = self.write_hops(group, cmd.into_command(), 0).await?;
        C::reply(r).map_err(|other| mismatched(group, "write", &other))
    }

    pub(super) async fn write_hops(
        &self,
        group: GroupId,
        cmd: Command,
        hops: u32,
    ) -> Result<Response, ApiError> {
        // Every write passes here, local or forwarded: a command the active
        // cluster version does not allow is never proposed, nor forwarded.
        self.check_version(&cmd).await?;
        // A node whose storage failed acknowledges nothing (not even what
        // it would forward: it is about to stop).
        self.check_storage()?;
        // ... and the public API's input rules (a peer's Forward skipped
        // that API).
        super::validate::command(&self.cfg, &cmd)?;
        let deadline = self.deadline();
        let op = ForwardOp::Write {
            group,
            cmd: cmd.clone(),
        };
        loop {
            let target = match self.registry.get(group) {
                Some(g) => {
                    self.wait_unpaused(group, deadline).await;
                    let unknown = || {
                        ApiError::OutcomeUnknown(format!(
                            "{} did not commit the write within {:?} (no quorum, or the leader changed)",
                            g.name(),
                            self.cfg.request_timeout
                        ))
                    };
                    match timeout_at(deadline.into(), self.propose(&g, cmd.clone())).await {
                        // Proposed, not committed in time: it may still be.
                        Err(_) | Ok(Err(Failure::TimedOut)) => return Err(unknown()),
                        // Committed, and its apply failed on every replica:
                        // a definite answer, nothing was changed.
                        Ok(Ok(Response::Failed { message })) => {
                            return Err(ApiError::ApplyFailed(message))
                        }
                        Ok(Ok(resp)) => return Ok(resp),
                        Ok(Err(Failure::Raft(e))) => match *e {
                            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => self
                                .leader_target(&f)
                                .or_else(|| self.moved_away_target(group)),
                            e => {
                                return Err(ApiError::OutcomeUnknown(format!("{}: {e}", g.name())))
                            }
                        },
                    }
                }
                None => self.remote_target(group)?,
            };
            if let Some(addr) = target {
                match self.forward(&addr, &op, hops, deadline).await {
                    Ok(ForwardOk::Write(r)) => return Ok(r),
                    Ok(_) => return Err(ApiError::Internal("mismatched forward reply".into())),
                    Err(FwdErr::Api(e)) => return Err(e),
                    // The write may have been applied: only the client can decide to retry.
                    Err(FwdErr::Sent(m)) => {
                        return Err(ApiError::OutcomeUnknown(format!("forwarded write: {m}")))
                    }
                    Err(FwdErr::NotSent(m)) => tracing::debug!(group, "forward not sent: {m}"),
                }
            }
            if Instant::now() + Duration::from_millis(50) >= deadline {
                return Err(ApiError::unavailable(format!(
                    "no leader for {} within {:?}",
                    orrery_types::group_name(group),
                    self.cfg.request_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Proposes `cmd` to the local replica of `g`: queue writes that can be
    /// merged go through the group's group-commit lane, the rest straight
    /// to Raft.
    pub(super) async fn propose(&self, g: &Arc<Group>, cmd: Command) -> Result<Response, Failure> {
        match cmd {
            // The lane bounds each proposal by the request timeout, not by
            // this caller's deadline: later requests merged into the same
            // lane run must not inherit a caller's nearly spent time. The
            // caller's own wait is bounded by `write_hops`.
            Command::Queue(q) if GroupCommit::takes_queue(&q) => {
                self.group_commit
                    .propose(g, q, self.cfg.request_timeout, &self.metrics)
                    .await
            }
            cmd => g
                .raft
                .client_write(cmd)
                .await
                .map(|r| r.data)
                .map_err(|e: WriteError| Failure::Raft(Box::new(e))),
        }
    }

    pub(super) fn leader_target(&self, f: &ForwardToLeader<NodeId, NodeAddr>) -> Option<String> {
        match (f.leader_id, &f.leader_node) {
            (Some(id), Some(node)) if id != self.id() => Some(node.peer_addr.clone()),
            _ => None,
        }
    }

    /// A group still open here whose replicas moved to other nodes knows no
    /// leader once it was removed from the group: route like a non-host.
    /// Removed means either the shard map no longer lists this node, or the
    /// group's own membership no longer has it. The second comes first for
    /// a placement leader that removed itself: until its `RemoveMember`
    /// record commits (through the new leader, which it must find), the
    /// placement state still lists it as a member.
    pub(super) fn moved_away_target(&self, group: GroupId) -> Option<String> {
        let in_group = self.registry.get(group).is_some_and(|g| {
            g.raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&self.id())
                .is_some()
        });
        let hosts_it = in_group
            && self
                .replica_addrs(group)
                .map(|r| r.iter().any(|(id, _)| *id == self.id()))
                .unwrap_or(true);
        if hosts_it {
            None
        } else {
            self.remote_target(group).ok().flatten()
        }
    }

    /// For a group not hosted here: a replica to forward to, rotating so a
    /// dead preferred replica does not stall every request.
    pub(super) fn remote_target(&self, group: GroupId) -> Result<Option<String>, ApiError> {
        // This node may be listed before it has opened the group (just after
        // init, or while being added); never forward to ourselves.
        let replicas: Vec<_> = self
            .replica_addrs(group)?
            .into_iter()
            .filter(|(id, _)| *id != self.id())
            .collect();
        if replicas.is_empty() {
            return Ok(None);
        }
        let i = self.metrics.next_rotation() % replicas.len();
        Ok(Some(replicas[i].1.clone()))
    }

    /// Reads `group`'s applied state: through its leader when
    /// `linearizable`, else from this node's replica when it has one.
    pub async fn read<Q: DomainQuery>(
        &self,
        group: GroupId,
        query: Q,
        linearizable: bool,
    ) -> Result<Q::Answer, ApiError> {
        let r = self
            .read_hops(group, query.into_query(), linearizable, 0)
            .await?;
        Q::answer(r).map_err(|other| mismatched(group, "read", &other))
    }

    pub(super) async fn read_hops(
        &self,
        group: GroupId,
        query: Query,
        linearizable: bool,
        hops: u32,
    ) -> Result<QueryResult, ApiError> {
        let deadline = self.deadline();
        let op = ForwardOp::Read {
            group,
            query: query.clone(),
            linearizable,
        };
        loop {
            let target = match self.registry.get(group) {
                Some(g) if !linearizable => return run_query(&g, &query).await,
                Some(g) => match timeout_at(deadline.into(), self.confirm_read(&g)).await {
                    Err(_) => {
                        return Err(ApiError::unavailable(format!(
                            "{} could not confirm leadership within {:?}: no quorum",
                            g.name(),
                            self.cfg.request_timeout
                        )))
                    }
                    Ok(Ok(_)) => {
                        if timeout_at(deadline.into(), g.read_barrier()).await.is_err() {
                            return Err(ApiError::unavailable(format!(
                                "{} restarted as leader and has not yet applied its log within {:?}",
                                g.name(),
                                self.cfg.request_timeout
                            )));
                        }
                        return run_query(&g, &query).await;
                    }
                    Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => self
                        .leader_target(&f)
                        .or_else(|| self.moved_away_target(group)),
                    Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
                        self.moved_away_target(group)
                    }
                    Ok(Err(e)) => return Err(ApiError::unavailable(format!("{}: {e}", g.name()))),
                },
                None => self.remote_target(group)?,
            };
            if let Some(addr) = target {
                match self.forward(&addr, &op, hops, deadline).await {
                    Ok(ForwardOk::Read(r)) => return Ok(r),
                    Ok(_) => return Err(ApiError::Internal("mismatched forward reply".into())),
                    Err(FwdErr::Api(e)) => return Err(e),
                    // Reads have no effect, so any transport failure may be retried.
                    Err(FwdErr::Sent(m)) | Err(FwdErr::NotSent(m)) => {
                        tracing::debug!(group, "read forward failed: {m}")
                    }
                }
            }
            if Instant::now() + Duration::from_millis(50) >= deadline {
                return Err(ApiError::unavailable(format!(
                    "no reachable leader for {} within {:?}",
                    orrery_types::group_name(group),
                    self.cfg.request_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Node {
    /// Confirms a linearizable read on `g` (under its lease or by a
    /// round) and counts which.
    async fn confirm_read(&self, g: &Group) -> orrery_raft::read_index::Confirmed {
        let (r, path) = g.confirm_read().await;
        if r.is_ok() {
            self.metrics.linearizable_read(path);
        }
        r
    }
}

pub(super) async fn run_query(g: &Group, q: &Query) -> Result<QueryResult, ApiError> {
    run_query_paused(g, q, || {}).await
}

/// [`run_query`], with `pause` run where a vector search begins, after the
/// state's lock is released (a test's hook; see `view_read`).
pub(super) async fn run_query_paused(
    g: &Group,
    q: &Query,
    pause: impl FnOnce() + Send + 'static,
) -> Result<QueryResult, ApiError> {
    match read_state(g, q) {
        Read::Done(r) => Ok(r),
        Read::Search(view) => super::view_read::search(view, pause).await,
    }
}

enum Read {
    Done(QueryResult),
    /// A vector search's view, searched after the lock is released.
    Search(Box<orrery_vector::SearchView>),
}

/// Answers `q` under the state's read lock, except a vector search, which
/// only takes its view there: apply (every domain of the group) must not
/// wait for a long search.
fn read_state(g: &Group, q: &Query) -> Read {
    // Taken before `read_at`'s lock: the membership sits under the same one.
    let membership =
        matches!(q, Query::Membership).then(|| super::group_gc::committed_membership(g));
    g.sm.read_at(|s, applied| {
        Read::Done(match q {
            Query::KvGet { key } => QueryResult::KvGet(s.kv.get(key).cloned()),
            Query::KvList { prefix, limit } => QueryResult::KvList(s.kv.list(prefix, *limit)),
            Query::Placement => QueryResult::Placement(Box::new(s.placement.clone())),
            Query::Jobs(q) => QueryResult::Jobs(s.queue.query(q)),
            Query::VectorCatalog => QueryResult::VectorCatalog(s.vector.catalog.clone()),
            Query::VectorSearch(r) => match s.vector.view(r) {
                Ok(v) => return Read::Search(Box::new(v)),
                Err(e) => QueryResult::VectorSearch(Err(e)),
            },
            Query::VectorGet {
                collection,
                uid,
                id,
            } => QueryResult::VectorGet(s.vector.get_point(collection, *uid, id).cloned()),
            Query::VectorInfo { collection, uid } => {
                QueryResult::VectorInfo(s.vector.shard_info(collection, *uid))
            }
            Query::Policy(q) => QueryResult::Policy(s.policy.query(q)),
            Query::GroupCopy => QueryResult::GroupCopy(super::backup::copy_state(s, applied)),
            Query::Membership => QueryResult::Membership(membership.clone().unwrap_or_default()),
            Query::Dataset(q) => QueryResult::Dataset(s.dataset.query(q)),
        })
    })
}

pub(super) enum FwdErr {
    /// The serving node answered with an error.
    Api(ApiError),
    /// The request may have reached the peer; its outcome is unknown.
    Sent(String),
    /// The request certainly did not leave this node.
    NotSent(String),
}

pub(super) fn is_connect_error(status: &tonic::Status) -> bool {
    let text = format!("{status:?}").to_lowercase();
    text.contains("connect") || text.contains("connection refused")
}

/// A group answered with another domain's response: a bug, reported as one.
fn mismatched(group: GroupId, what: &str, other: &dyn std::fmt::Debug) -> ApiError {
    ApiError::Internal(format!(
        "{} answered a {what} with {other:?}",
        group_name(group)
    ))
}
