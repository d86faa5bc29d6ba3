//! The Raft network: every Raft RPC of every group travels over one tonic
//! channel per peer, tagged with its group id.

use crate::TypeConfig;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use orrery_proto::peer::peer_client::PeerClient;
use orrery_proto::peer::{RaftKind, RaftRequest};
use orrery_types::{GroupId, NodeAddr, NodeId};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Shared tonic channels, one per peer address. Channels reconnect by
/// themselves, so a restarted peer is reached again without intervention.
#[derive(Clone, Default)]
pub struct PeerClients {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Source address for outgoing peer connections. Binding it lets
    /// address-based firewall rules (and the fault-injection suite's
    /// partitions) tell the nodes of one host apart.
    source: Option<IpAddr>,
}

#[derive(Debug)]
struct TransportError(String);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransportError {}

/// HTTP/2 flow-control windows of the peer channel (both ends; see
/// [`PeerClients::client`]).
pub const PEER_STREAM_WINDOW: u32 = 32 << 20;
pub const PEER_CONNECTION_WINDOW: u32 = 64 << 20;

impl PeerClients {
    /// Clients whose connections originate from `source` when given.
    pub fn new(source: Option<IpAddr>) -> Self {
        Self {
            channels: Arc::default(),
            source,
        }
    }

    /// A client for the peer at `peer_addr` (host:port).
    pub fn client(&self, peer_addr: &str) -> Result<PeerClient<Channel>, tonic::Status> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(peer_addr) {
            return Ok(Self::wrap(ch.clone()));
        }
        let endpoint = Endpoint::from_shared(format!("http://{peer_addr}"))
            .map_err(|e| {
                tonic::Status::invalid_argument(format!("bad peer address {peer_addr}: {e}"))
            })?
            .local_address(self.source)
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            // openraft gives every AppendEntries one heartbeat interval
            // (150 ms) end to end. With HTTP/2's default 64 KiB windows a
            // large entry (a 16 MiB value) needs hundreds of window updates,
            // each a scheduling round trip on a loaded machine, and never
            // arrives in time: the group would retry it forever. Windows as
            // large as the largest entry let it stream in one go.
            .initial_stream_window_size(PEER_STREAM_WINDOW)
            .initial_connection_window_size(PEER_CONNECTION_WINDOW)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let ch = endpoint.connect_lazy();
        map.insert(peer_addr.to_string(), ch.clone());
        Ok(Self::wrap(ch))
    }

    fn wrap(ch: Channel) -> PeerClient<Channel> {
        PeerClient::new(ch)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20)
    }
}

/// Builds per-target connections for one group.
#[derive(Clone)]
pub struct GroupNetwork {
    pub group: GroupId,
    pub clients: PeerClients,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> Self::Network {
        PeerConnection {
            group: self.group,
            target,
            peer_addr: node.peer_addr.clone(),
            clients: self.clients.clone(),
        }
    }
}

pub struct PeerConnection {
    group: GroupId,
    target: NodeId,
    peer_addr: String,
    clients: PeerClients,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, NodeAddr, E>>;

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &self,
        kind: RaftKind,
        req: &Req,
        ttl: Duration,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload =
            orrery_storage::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = self
            .clients
            .client(&self.peer_addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&TransportError(e.to_string()))))?;
        let mut request = tonic::Request::new(RaftRequest {
            group_id: self.group,
            kind: kind as i32,
            payload,
            target: self.target,
        });
        request.set_timeout(ttl);
        let reply = match tokio::time::timeout(ttl, client.raft(request)).await {
            Err(_) => {
                return Err(RPCError::Network(NetworkError::new(&TransportError(
                    format!("raft rpc to node {} timed out after {ttl:?}", self.target),
                ))))
            }
            Ok(Err(status)) => {
                let err = TransportError(format!("node {}: {}", self.target, status.message()));
                return Err(match status.code() {
                    tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&err)),
                    _ => RPCError::Network(NetworkError::new(&err)),
                });
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        let decoded: Result<Resp, E> = orrery_storage::decode(&reply.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        self.call(RaftKind::AppendEntries, &rpc, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.call(RaftKind::InstallSnapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.call(RaftKind::Vote, &rpc, option.hard_ttl()).await
    }
}
