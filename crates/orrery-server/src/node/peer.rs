//! The peer service: Raft RPCs for every group, forwarded requests, status.

use crate::api::ApiError;
use crate::node::ops::{ForwardOk, ForwardOp};
use crate::node::Node;
use orrery_proto::peer::peer_server::Peer;
use orrery_proto::peer::{
    ForwardReply, ForwardRequest, LocalStatusReply, LocalStatusRequest, RaftKind, RaftReply,
    RaftRequest, RaftStreamReply, RaftStreamRequest,
};
use orrery_raft::TypeConfig;
use serde::{de::DeserializeOwned, Serialize};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

/// Frames of one peer's Raft stream handled at once (and replies queued):
/// enough for every group on a link to have an AppendEntries in flight.
const STREAM_IN_FLIGHT: usize = 256;

pub struct PeerService {
    pub node: Arc<Node>,
    /// Turns true when the node stops. A `RaftStream` never ends by itself,
    /// and the server's graceful shutdown waits for every open stream, so
    /// each one ends when this does.
    pub stop: watch::Receiver<bool>,
}

/// One Raft RPC for one of this node's groups, whichever way it came.
async fn raft_rpc(node: &Node, r: RaftRequest) -> Result<RaftReply, Status> {
    if r.target != node.id() {
        return Err(Status::failed_precondition(format!(
            "this is node {}, not node {}",
            node.id(),
            r.target
        )));
    }
    let group = node.registry.get(r.group_id).ok_or_else(|| {
        Status::not_found(format!(
            "group {} is not hosted on node {}",
            r.group_id,
            node.id()
        ))
    })?;
    let payload = match RaftKind::try_from(r.kind) {
        Ok(RaftKind::AppendEntries) => {
            let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> = decode(&r.payload)?;
            node.metrics.peer_append(rpc.entries.len());
            encode(&group.raft.append_entries(rpc).await)?
        }
        Ok(RaftKind::Vote) => {
            let rpc: openraft::raft::VoteRequest<u64> = decode(&r.payload)?;
            node.metrics.peer_vote();
            // A replica with no log yet (a learner being added, perhaps
            // after this node dropped the group: `group_gc.rs`) must not
            // help a candidate win: it may have forgotten entries that
            // candidate lacks. Every group starts from one node's log, so
            // no election ever needs such a vote.
            // A node that just started has forgotten when it last heard
            // from a leader; a leader's read lease counts on its followers
            // refusing votes for that long (orrery_raft::lease).
            if !node.registry.grants_votes() {
                return Err(Status::unavailable(format!(
                    "node {} started less than an election timeout ago: it grants no vote yet",
                    node.id()
                )));
            }
            if !group.has_log() {
                return Err(Status::unavailable(format!(
                    "group {} has no log on node {}: it grants no vote",
                    r.group_id,
                    node.id()
                )));
            }
            encode(&group.raft.vote(rpc).await)?
        }
        Ok(RaftKind::InstallSnapshot) => {
            let rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> = decode(&r.payload)?;
            node.metrics.peer_snapshot(rpc.data.len());
            encode(&group.raft.install_snapshot(rpc).await)?
        }
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown raft rpc kind {}",
                r.kind
            )))
        }
    };
    Ok(RaftReply { payload })
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    orrery_storage::decode(bytes).map_err(|e| Status::invalid_argument(format!("bad payload: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, Status> {
    orrery_storage::encode(v).map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        raft_rpc(&self.node, req.into_inner())
            .await
            .map(Response::new)
    }

    type RaftStreamStream =
        Pin<Box<dyn Stream<Item = Result<RaftStreamReply, Status>> + Send + 'static>>;

    async fn raft_stream(
        &self,
        req: Request<Streaming<RaftStreamRequest>>,
    ) -> Result<Response<Self::RaftStreamStream>, Status> {
        let mut inbound = req.into_inner();
        // Bounded: at most STREAM_IN_FLIGHT frames are handled at once and
        // as many replies wait to be sent. A peer that sends faster than
        // this node handles stops being read, and HTTP/2 flow control
        // pushes back on it, instead of queueing without limit.
        let (tx, rx) = mpsc::channel(STREAM_IN_FLIGHT);
        let slots = Arc::new(tokio::sync::Semaphore::new(STREAM_IN_FLIGHT));
        let node = self.node.clone();
        let mut stop = self.stop.clone();
        if *stop.borrow() {
            return Err(Status::unavailable("this node is stopping"));
        }
        tokio::spawn(async move {
            // Each frame is handled in a task of its own: an AppendEntries
            // waits for its fsync, and the other groups on this link must
            // not wait behind it (nor lose the shared fsync).
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let frame = tokio::select! {
                    m = inbound.message() => match m {
                        Ok(Some(frame)) => frame,
                        Ok(None) | Err(_) => break,
                    },
                    _ = stop.wait_for(|s| *s) => break,
                };
                let (node, tx) = (node.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let result = match frame.request {
                        Some(r) => raft_rpc(&node, r).await,
                        None => Err(Status::invalid_argument(
                            "raft stream frame without a request",
                        )),
                    };
                    let reply = RaftStreamReply::new(frame.id, result);
                    // The sender has gone when the link broke: nothing to
                    // answer then.
                    let _ = tx.send(Ok(reply)).await;
                });
            }
        });
        // The reply stream ends at stop even if a frame is still being
        // handled: its caller learns the link is gone, as from a crash.
        let mut stop = self.stop.clone();
        let replies = futures::StreamExt::take_until(ReceiverStream::new(rx), async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn forward(
        &self,
        req: Request<ForwardRequest>,
    ) -> Result<Response<ForwardReply>, Status> {
        let r = req.into_inner();
        let op: ForwardOp = decode(&r.payload)?;
        let span = tracing::debug_span!("forwarded", node = self.node.id(), hops = r.hops);
        let result: Result<ForwardOk, ApiError> =
            self.node.handle_forward(op, r.hops).instrument(span).await;
        Ok(Response::new(ForwardReply {
            payload: encode(&result)?,
        }))
    }

    async fn local_status(
        &self,
        _req: Request<LocalStatusRequest>,
    ) -> Result<Response<LocalStatusReply>, Status> {
        Ok(Response::new(LocalStatusReply {
            payload: encode(&self.node.local_reports())?,
            supported_version: crate::node::version::supported(),
            build: crate::node::version::build(),
        }))
    }
}
