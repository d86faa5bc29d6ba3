//! The Raft network: every Raft RPC of every group travels over one tonic
//! channel per peer, tagged with its group id.
//!
//! Most RPCs go as frames on one long-lived `RaftStream` per peer link
//! ([`Link`]), not as unary calls: openraft sends every committed entry's
//! commit index in an AppendEntries of its own, so a busy group makes two
//! RPCs per entry per follower, and a unary gRPC call (an HTTP/2 stream
//! with its headers and trailers, and a server task) cost a quarter of a
//! loaded cluster's CPU. Large payloads and snapshot chunks still go unary,
//! so that they never hold up the small frames of other groups behind them
//! on the shared stream; so does everything to a peer that does not know
//! `RaftStream` (an older version, during an upgrade).

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
use orrery_proto::peer::{RaftKind, RaftReply, RaftRequest, RaftStreamRequest};
use orrery_types::{GroupId, NodeAddr, NodeId};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

/// Payloads above this size go as unary calls (see the module docs).
pub const STREAM_MAX_PAYLOAD: usize = 256 << 10;

/// How long a peer that answered `RaftStream` with "unimplemented" is
/// spoken to with unary calls only before the stream is tried again.
const UNARY_ONLY_FOR: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Shared tonic channels, one per peer address. Channels reconnect by
/// themselves, so a restarted peer is reached again without intervention.
#[derive(Clone, Default)]
pub struct PeerClients {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// The open Raft stream of each peer link.
    links: Arc<Mutex<HashMap<String, Arc<Link>>>>,
    /// Peers that do not implement `RaftStream`, and since when we know.
    unary_only: Arc<Mutex<HashMap<String, Instant>>>,
    /// Source address for outgoing peer connections. Binding it lets
    /// address-based firewall rules (and the fault-injection suite's
    /// partitions) tell the nodes of one host apart.
    source: Option<IpAddr>,
    /// Mutual TLS to peers (this node's certificate, the cluster CA);
    /// `None` only for `--insecure` nodes.
    tls: Option<ClientTlsConfig>,
}

/// The client side of the peer port's mutual TLS: trust only the cluster
/// CA, and show this node's certificate.
pub fn peer_tls(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(cert_pem, key_pem))
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
            links: Arc::default(),
            unary_only: Arc::default(),
            source,
            tls: None,
        }
    }

    /// Peers are reached over mutual TLS when `tls` is given.
    pub fn with_tls(mut self, tls: Option<ClientTlsConfig>) -> Self {
        self.tls = tls;
        self
    }

    /// The Raft stream to `peer_addr`, opened (again) if there is none or
    /// the last one broke.
    fn link(&self, peer_addr: &str) -> Result<Arc<Link>, Status> {
        let mut links = lock(&self.links);
        if let Some(l) = links.get(peer_addr) {
            if !l.is_closed() {
                return Ok(l.clone());
            }
        }
        let link = Link::open(self.client(peer_addr).map_err(unreachable)?);
        links.insert(peer_addr.to_string(), link.clone());
        Ok(link)
    }

    fn is_unary_only(&self, peer_addr: &str) -> bool {
        let mut m = lock(&self.unary_only);
        match m.get(peer_addr) {
            Some(since) if since.elapsed() < UNARY_ONLY_FOR => true,
            Some(_) => {
                m.remove(peer_addr);
                false
            }
            None => false,
        }
    }

    fn set_unary_only(&self, peer_addr: &str) {
        lock(&self.unary_only).insert(peer_addr.to_string(), Instant::now());
    }

    /// A client for the peer at `peer_addr` (host:port).
    pub fn client(&self, peer_addr: &str) -> Result<PeerClient<Channel>, tonic::Status> {
        let mut map = lock(&self.channels);
        if let Some(ch) = map.get(peer_addr) {
            return Ok(Self::wrap(ch.clone()));
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint =
            Endpoint::from_shared(format!("{scheme}://{peer_addr}")).map_err(|e| {
                tonic::Status::invalid_argument(format!("bad peer address {peer_addr}: {e}"))
            })?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| {
                tonic::Status::invalid_argument(format!("peer TLS for {peer_addr}: {e}"))
            })?;
        }
        let endpoint = endpoint
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

type Waiter = oneshot::Sender<Result<RaftReply, Status>>;

/// One `RaftStream` to a peer: request frames go out through `tx`, and a
/// reader task hands each reply frame to the caller waiting on its id.
struct Link {
    tx: mpsc::UnboundedSender<RaftStreamRequest>,
    state: Arc<Mutex<LinkState>>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct LinkState {
    pending: HashMap<u64, Waiter>,
    /// The peer accepted the stream (answered its headers).
    open: bool,
    /// Why the stream ended. Set once; a closed link takes no requests, so
    /// none can wait on it for a reply that will never come.
    closed: Option<Status>,
}

impl Link {
    fn open(mut client: PeerClient<Channel>) -> Arc<Link> {
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            tx,
            state: Arc::default(),
            next_id: AtomicU64::new(1),
        });
        let state = link.state.clone();
        tokio::spawn(async move {
            let end = match client.raft_stream(UnboundedReceiverStream::new(rx)).await {
                Err(status) => status,
                Ok(response) => {
                    lock(&state).open = true;
                    let mut inbound = response.into_inner();
                    loop {
                        match inbound.message().await {
                            Ok(Some(frame)) => {
                                let waiter = lock(&state).pending.remove(&frame.id);
                                if let Some(w) = waiter {
                                    let _ = w.send(frame.into_result());
                                }
                            }
                            Ok(None) => {
                                break Status::unavailable("the peer ended the raft stream")
                            }
                            Err(status) => break status,
                        }
                    }
                }
            };
            let mut st = lock(&state);
            for (_, w) in st.pending.drain() {
                let _ = w.send(Err(end.clone()));
            }
            st.closed = Some(end);
        });
        link
    }

    fn is_open(&self) -> bool {
        lock(&self.state).open
    }

    fn is_closed(&self) -> bool {
        lock(&self.state).closed.is_some()
    }

    /// Sends `request` and waits at most `ttl` for its reply.
    async fn call(&self, request: RaftRequest, ttl: Duration) -> Result<RaftReply, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&self.state);
            if let Some(status) = &st.closed {
                return Err(CallError::Status(status.clone()));
            }
            st.pending.insert(id, tx);
        }
        // Whatever ends this call (a reply, the timeout, or the caller
        // dropping it), its id must not stay behind in `pending`.
        let _forget = Forget { link: self, id };
        let frame = RaftStreamRequest {
            id,
            request: Some(request),
        };
        if self.tx.send(frame).is_err() {
            return Err(CallError::Status(Status::unavailable(
                "the raft stream is closed",
            )));
        }
        match tokio::time::timeout(ttl, rx).await {
            Err(_) => Err(CallError::TimedOut),
            Ok(Err(_)) => Err(CallError::Status(Status::unavailable(
                "the raft stream is closed",
            ))),
            Ok(Ok(r)) => r.map_err(CallError::Status),
        }
    }
}

struct Forget<'a> {
    link: &'a Link,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.link.state).pending.remove(&self.id);
    }
}

/// A peer that cannot even be addressed is unreachable to openraft (which
/// then backs off), not a transient network error (retried at once).
fn unreachable(s: Status) -> Status {
    Status::unavailable(s.message().to_string())
}

/// How one RPC failed before any reply was decoded.
enum CallError {
    TimedOut,
    Status(Status),
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
        let request = RaftRequest {
            group_id: self.group,
            kind: kind as i32,
            payload,
            target: self.target,
        };
        let streamed = kind != RaftKind::InstallSnapshot
            && request.payload.len() <= STREAM_MAX_PAYLOAD
            && !self.clients.is_unary_only(&self.peer_addr);
        let result = if streamed {
            match self.clients.link(&self.peer_addr) {
                Err(status) => Err(CallError::Status(status)),
                Ok(link) => {
                    // Only a stream the peer has not accepted yet can turn
                    // out to be unimplemented; keep a copy for the unary
                    // retry until then, not on every RPC.
                    let retry = (!link.is_open()).then(|| request.clone());
                    match (link.call(request, ttl).await, retry) {
                        (Err(CallError::Status(s)), Some(request))
                            if s.code() == Code::Unimplemented =>
                        {
                            self.clients.set_unary_only(&self.peer_addr);
                            self.unary(request, ttl).await
                        }
                        (r, _) => r,
                    }
                }
            }
        } else {
            self.unary(request, ttl).await
        };
        let reply = match result {
            Err(CallError::TimedOut) => {
                return Err(RPCError::Network(NetworkError::new(&TransportError(
                    format!("raft rpc to node {} timed out after {ttl:?}", self.target),
                ))))
            }
            Err(CallError::Status(status)) => {
                let err = TransportError(format!("node {}: {}", self.target, status.message()));
                return Err(match status.code() {
                    Code::Unavailable => RPCError::Unreachable(Unreachable::new(&err)),
                    _ => RPCError::Network(NetworkError::new(&err)),
                });
            }
            Ok(r) => r,
        };
        let decoded: Result<Resp, E> = orrery_storage::decode(&reply.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl PeerConnection {
    async fn unary(&self, request: RaftRequest, ttl: Duration) -> Result<RaftReply, CallError> {
        let mut client = self
            .clients
            .client(&self.peer_addr)
            .map_err(|s| CallError::Status(unreachable(s)))?;
        let mut request = tonic::Request::new(request);
        request.set_timeout(ttl);
        match tokio::time::timeout(ttl, client.raft(request)).await {
            Err(_) => Err(CallError::TimedOut),
            Ok(Err(status)) => Err(CallError::Status(status)),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
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

#[cfg(test)]
mod tests {
    //! The transport against a peer server whose behaviour each test picks:
    //! replies out of order, no `RaftStream` (an older node), a stream that
    //! breaks, a peer that never answers.
    use super::*;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
    use orrery_proto::peer::peer_server::{Peer, PeerServer};
    use orrery_proto::peer::{
        ForwardReply, ForwardRequest, LocalStatusReply, LocalStatusRequest, RaftStreamReply,
    };
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;
    use tokio_stream::Stream;

    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        /// Answer every frame; a vote for term t after (6 - t) × 20 ms, so
        /// that concurrent calls are answered in reverse order.
        Answer,
        /// `RaftStream` is unimplemented, as on an older node.
        NoStream,
        /// End the stream with an error at its first frame.
        Break,
        /// Take frames and never answer.
        Silent,
    }

    #[derive(Default)]
    struct Seen {
        streams: AtomicUsize,
        frames: AtomicUsize,
        unary: AtomicUsize,
    }

    struct TestPeer {
        mode: Arc<Mutex<Mode>>,
        seen: Arc<Seen>,
    }

    fn answer(r: &RaftRequest) -> Result<(RaftReply, Duration), Status> {
        let payload = match RaftKind::try_from(r.kind) {
            Ok(RaftKind::Vote) => {
                let req: VoteRequest<NodeId> = orrery_storage::decode(&r.payload)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                let delay =
                    Duration::from_millis(6u64.saturating_sub(req.vote.leader_id.term) * 20);
                let resp: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
                    Ok(VoteResponse::new(req.vote, None, true));
                return Ok((
                    RaftReply {
                        payload: orrery_storage::encode(&resp)
                            .map_err(|e| Status::internal(e.to_string()))?,
                    },
                    delay,
                ));
            }
            Ok(RaftKind::AppendEntries) => {
                let resp: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
                    Ok(AppendEntriesResponse::Success);
                orrery_storage::encode(&resp).map_err(|e| Status::internal(e.to_string()))?
            }
            _ => return Err(Status::unimplemented("not in this test")),
        };
        Ok((RaftReply { payload }, Duration::ZERO))
    }

    #[tonic::async_trait]
    impl Peer for TestPeer {
        async fn raft(
            &self,
            req: tonic::Request<RaftRequest>,
        ) -> Result<tonic::Response<RaftReply>, Status> {
            self.seen.unary.fetch_add(1, Ordering::SeqCst);
            let (reply, delay) = answer(req.get_ref())?;
            tokio::time::sleep(delay).await;
            Ok(tonic::Response::new(reply))
        }

        type RaftStreamStream =
            Pin<Box<dyn Stream<Item = Result<RaftStreamReply, Status>> + Send + 'static>>;

        async fn raft_stream(
            &self,
            req: tonic::Request<tonic::Streaming<RaftStreamRequest>>,
        ) -> Result<tonic::Response<Self::RaftStreamStream>, Status> {
            let mode = *lock(&self.mode);
            if mode == Mode::NoStream {
                return Err(Status::unimplemented("no RaftStream here"));
            }
            self.seen.streams.fetch_add(1, Ordering::SeqCst);
            let mut inbound = req.into_inner();
            let (tx, rx) = mpsc::unbounded_channel();
            let seen = self.seen.clone();
            tokio::spawn(async move {
                while let Ok(Some(frame)) = inbound.message().await {
                    seen.frames.fetch_add(1, Ordering::SeqCst);
                    match mode {
                        Mode::Break => {
                            let _ = tx.send(Err(Status::unavailable("broken on purpose")));
                            return;
                        }
                        Mode::Silent => continue,
                        _ => {}
                    }
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let Some(request) = frame.request.as_ref() else {
                            return;
                        };
                        let result = match answer(request) {
                            Ok((reply, delay)) => {
                                tokio::time::sleep(delay).await;
                                Ok(reply)
                            }
                            Err(s) => Err(s),
                        };
                        let out = RaftStreamReply::new(frame.id, result);
                        let _ = tx.send(Ok(out));
                    });
                }
            });
            Ok(tonic::Response::new(Box::pin(
                UnboundedReceiverStream::new(rx),
            )))
        }

        async fn forward(
            &self,
            _: tonic::Request<ForwardRequest>,
        ) -> Result<tonic::Response<ForwardReply>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn local_status(
            &self,
            _: tonic::Request<LocalStatusRequest>,
        ) -> Result<tonic::Response<LocalStatusReply>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
    }

    struct Harness {
        mode: Arc<Mutex<Mode>>,
        seen: Arc<Seen>,
        net: GroupNetwork,
        node: NodeAddr,
    }

    async fn harness(mode: Mode) -> Harness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr").to_string();
        let mode = Arc::new(Mutex::new(mode));
        let seen = Arc::new(Seen::default());
        let svc = PeerServer::new(TestPeer {
            mode: mode.clone(),
            seen: seen.clone(),
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Harness {
            mode,
            seen,
            net: GroupNetwork {
                group: 7,
                clients: PeerClients::new(None),
            },
            node: NodeAddr {
                addr: String::new(),
                peer_addr: addr,
            },
        }
    }

    impl Harness {
        async fn vote(
            &self,
            term: u64,
            ttl: Duration,
        ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
            let mut conn = self.net.clone().new_client(2, &self.node).await;
            conn.vote(
                VoteRequest::new(Vote::new(term, 1), None),
                RPCOption::new(ttl),
            )
            .await
        }

        fn pending(&self) -> usize {
            lock(&self.net.clients.links)
                .values()
                .map(|l| lock(&l.state).pending.len())
                .sum()
        }
    }

    const TTL: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn concurrent_calls_share_one_stream_and_get_their_own_replies() {
        let h = harness(Mode::Answer).await;
        let calls = (1..=5).map(|term| {
            let h = &h;
            async move { (term, h.vote(term, TTL).await) }
        });
        for (term, r) in futures::future::join_all(calls).await {
            let resp = r.expect("vote answered");
            assert_eq!(
                resp.vote.leader_id.term, term,
                "a reply went to the wrong caller"
            );
        }
        assert_eq!(h.seen.streams.load(Ordering::SeqCst), 1);
        assert_eq!(h.seen.frames.load(Ordering::SeqCst), 5);
        assert_eq!(h.seen.unary.load(Ordering::SeqCst), 0);
        assert_eq!(h.pending(), 0);
    }

    #[tokio::test]
    async fn peers_without_the_stream_get_unary_calls() {
        let h = harness(Mode::NoStream).await;
        assert_eq!(
            h.vote(3, TTL).await.expect("answered").vote.leader_id.term,
            3
        );
        assert_eq!(
            h.vote(4, TTL).await.expect("answered").vote.leader_id.term,
            4
        );
        assert_eq!(h.seen.unary.load(Ordering::SeqCst), 2);
        assert!(h.net.clients.is_unary_only(&h.node.peer_addr));
    }

    #[tokio::test]
    async fn a_broken_stream_fails_its_calls_and_the_next_call_reopens_it() {
        let h = harness(Mode::Break).await;
        match h.vote(1, TTL).await {
            Err(RPCError::Unreachable(_)) => {}
            other => {
                panic!("expected the broken stream to fail the call as unreachable, got {other:?}")
            }
        }
        *lock(&h.mode) = Mode::Answer;
        assert_eq!(
            h.vote(2, TTL)
                .await
                .expect("answered on a new stream")
                .vote
                .leader_id
                .term,
            2
        );
        assert_eq!(h.seen.streams.load(Ordering::SeqCst), 2);
        assert_eq!(h.seen.unary.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_call_that_times_out_leaves_nothing_pending() {
        let h = harness(Mode::Silent).await;
        match h.vote(1, Duration::from_millis(200)).await {
            Err(RPCError::Network(e)) => assert!(e.to_string().contains("timed out"), "{e}"),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(h.seen.frames.load(Ordering::SeqCst), 1);
        assert_eq!(h.pending(), 0);
    }

    #[tokio::test]
    async fn large_append_entries_go_unary() {
        let h = harness(Mode::Answer).await;
        let entries: Vec<Entry<TypeConfig>> = (1..=100_000)
            .map(|i| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
                payload: EntryPayload::Blank,
            })
            .collect();
        let big = AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries,
        };
        assert!(orrery_storage::encode(&big).expect("encode").len() > STREAM_MAX_PAYLOAD);
        let mut conn = h.net.clone().new_client(2, &h.node).await;
        let r = conn.append_entries(big, RPCOption::new(TTL)).await;
        assert!(matches!(r, Ok(AppendEntriesResponse::Success)), "{r:?}");
        assert_eq!(h.seen.unary.load(Ordering::SeqCst), 1);
        assert_eq!(h.seen.frames.load(Ordering::SeqCst), 0);
        // A small one takes the stream.
        let small = AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: vec![],
        };
        let r = conn.append_entries(small, RPCOption::new(TTL)).await;
        assert!(matches!(r, Ok(AppendEntriesResponse::Success)), "{r:?}");
        assert_eq!(h.seen.frames.load(Ordering::SeqCst), 1);
    }
}
