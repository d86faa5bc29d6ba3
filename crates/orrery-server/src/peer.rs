//! The peer service: Raft RPCs for every group, forwarded requests, status.

use crate::error::ApiError;
use crate::node::Node;
use crate::ops::{ForwardOk, ForwardOp};
use orrery_proto::peer::peer_server::Peer;
use orrery_proto::peer::{
    ForwardReply, ForwardRequest, LocalStatusReply, LocalStatusRequest, RaftKind, RaftReply,
    RaftRequest,
};
use orrery_raft::TypeConfig;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::Instrument;

pub struct PeerService(pub Arc<Node>);

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    orrery_storage::decode(bytes).map_err(|e| Status::invalid_argument(format!("bad payload: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, Status> {
    orrery_storage::encode(v).map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let r = req.into_inner();
        if r.target != self.0.id() {
            return Err(Status::failed_precondition(format!(
                "this is node {}, not node {}",
                self.0.id(),
                r.target
            )));
        }
        let group = self.0.registry.get(r.group_id).ok_or_else(|| {
            Status::not_found(format!(
                "group {} is not hosted on node {}",
                r.group_id,
                self.0.id()
            ))
        })?;
        let payload = match RaftKind::try_from(r.kind) {
            Ok(RaftKind::AppendEntries) => {
                let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> = decode(&r.payload)?;
                encode(&group.raft.append_entries(rpc).await)?
            }
            Ok(RaftKind::Vote) => {
                let rpc: openraft::raft::VoteRequest<u64> = decode(&r.payload)?;
                encode(&group.raft.vote(rpc).await)?
            }
            Ok(RaftKind::InstallSnapshot) => {
                let rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> = decode(&r.payload)?;
                encode(&group.raft.install_snapshot(rpc).await)?
            }
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown raft rpc kind {}",
                    r.kind
                )))
            }
        };
        Ok(Response::new(RaftReply { payload }))
    }

    async fn forward(
        &self,
        req: Request<ForwardRequest>,
    ) -> Result<Response<ForwardReply>, Status> {
        let r = req.into_inner();
        let op: ForwardOp = decode(&r.payload)?;
        let span = tracing::debug_span!("forwarded", node = self.0.id(), hops = r.hops);
        let result: Result<ForwardOk, ApiError> =
            self.0.handle_forward(op, r.hops).instrument(span).await;
        Ok(Response::new(ForwardReply {
            payload: encode(&result)?,
        }))
    }

    async fn local_status(
        &self,
        _req: Request<LocalStatusRequest>,
    ) -> Result<Response<LocalStatusReply>, Status> {
        Ok(Response::new(LocalStatusReply {
            payload: encode(&self.0.local_reports())?,
        }))
    }
}
