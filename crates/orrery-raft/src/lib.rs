//! Orrery's Raft layer: one openraft type configuration shared by every
//! group, the state dispatcher that routes commands to domain modules, the
//! gRPC network (one channel per peer, shared by all groups), and the
//! registry of the groups a node hosts.

pub mod lease;
pub mod network;
pub mod read_index;
pub mod registry;
pub mod snapshots;
pub mod state;
pub mod version;

pub use network::PeerClients;
pub use registry::{Group, RaftSettings, ReadPath, Registry};
pub use state::{Command, GroupState, Response};

use orrery_types::{NodeAddr, NodeId};
use std::io::Cursor;

openraft::declare_raft_types!(
    /// The type configuration of every Raft group in Orrery.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = NodeAddr,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, NodeAddr>;
pub type SmHandle = orrery_storage::SmHandle<TypeConfig, GroupState>;

/// Errors of the Raft layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage: {0}")]
    Storage(#[from] orrery_storage::StorageError),
    #[error("raft: {0}")]
    Fatal(String),
}
