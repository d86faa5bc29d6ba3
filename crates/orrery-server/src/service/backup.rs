//! Backups of a live cluster: every group's state, each copied on its
//! leader at one point of its log, streamed in the backup file's format
//! (`orrery_storage::backup_file`).
//!
//! Consistency: each group's section is exactly its state after the entry
//! its log point names, and holds every write acknowledged before the
//! backup was asked for (each copy is a linearizable read, taken after the
//! request arrived). Groups are copied one after another, so writes
//! accepted while the backup runs may be in some groups' sections and not
//! in others': there is no cross-group atomicity (docs/operations.md,
//! "Backup and restore").
//!
//! Memory: one group's serialised state at a time (on its leader and on
//! the node answering), streamed out in chunks of at most `CHUNK` bytes.

use crate::api::{now_ms, ApiError};
use crate::node::backup::{CopyGroup, GroupCopy};
use crate::node::version::{VersionRecord, VERSION_KEY};
use crate::node::Node;
use futures::Stream;
use orrery_raft::{GroupState, TypeConfig};
use orrery_storage::backup_file::{BackupEncoder, BackupHeader};
use orrery_storage::StateMachine;
use orrery_types::{shard_group, GroupId, PLACEMENT_GROUP};
use std::pin::Pin;
use std::sync::Arc;

/// The largest piece of a backup stream (a gRPC message or a body chunk).
pub const CHUNK: usize = 1 << 20;

pub type BackupStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, ApiError>> + Send>>;

pub struct BackupService {
    node: Arc<Node>,
}

impl BackupService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// Starts a backup: the placement group is copied before this returns
    /// (so that an uninitialised node or a group without quorum is an
    /// ordinary error answer), the shard groups while the stream is read.
    pub async fn create(&self) -> Result<BackupStream, ApiError> {
        let first = self.copy(PLACEMENT_GROUP).await?;
        let state = <GroupState as StateMachine<TypeConfig>>::restore(&first.data)
            .map_err(|e| ApiError::Internal(format!("placement copy: {e}")))?;
        let p = &state.placement;
        let Some(cluster_id) = p.cluster_id.clone() else {
            return Err(ApiError::NotInitialized);
        };
        let version = VersionRecord::parse(state.kv.get(VERSION_KEY).map(|v| &v.value[..]));
        let mut groups: Vec<GroupId> = vec![PLACEMENT_GROUP];
        groups.extend((0..p.shard_count()).map(shard_group));
        let header = BackupHeader {
            cluster_id,
            cluster_version: version.active,
            build: crate::node::version::build(),
            created_ms: now_ms(),
            source_node: self.node.id(),
            shard_count: p.shard_count(),
            groups: groups.clone(),
        };
        let (mut enc, head) = BackupEncoder::new(&header).map_err(internal)?;
        tracing::info!(
            cluster = %header.cluster_id,
            groups = groups.len(),
            "backup started"
        );
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, ApiError>>(4);
        let node = self.node.clone();
        tokio::spawn(async move {
            let run = async {
                send(&tx, head).await?;
                let mut copy = Some(first);
                for g in groups {
                    let c = match copy.take() {
                        Some(c) => c,
                        None => copy_group(&node, g).await?,
                    };
                    let (head, tail) = enc.section(g, c.point, &c.data).map_err(internal)?;
                    send(&tx, head).await?;
                    for piece in c.data.chunks(CHUNK) {
                        send(&tx, piece.to_vec()).await?;
                    }
                    send(&tx, tail).await?;
                    tracing::debug!(
                        group = g,
                        index = c.point.index,
                        bytes = c.data.len(),
                        "backup: group copied"
                    );
                }
                send(&tx, enc.finish().map_err(internal)?).await?;
                tracing::info!("backup finished");
                Ok::<(), ApiError>(())
            };
            if let Err(e) = run.await {
                tracing::warn!("backup failed: {e}");
                // The reader may be gone already; then there is no one to tell.
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn copy(&self, group: GroupId) -> Result<GroupCopy, ApiError> {
        copy_group(&self.node, group).await
    }
}

async fn copy_group(node: &Node, group: GroupId) -> Result<GroupCopy, ApiError> {
    node.read(group, CopyGroup, true)
        .await?
        .map_err(|e| ApiError::Internal(format!("copying group {group}: {e}")))
}

/// Sends a piece; a closed channel means the client went away.
async fn send(
    tx: &tokio::sync::mpsc::Sender<Result<Vec<u8>, ApiError>>,
    bytes: Vec<u8>,
) -> Result<(), ApiError> {
    tx.send(Ok(bytes))
        .await
        .map_err(|_| ApiError::unavailable("the backup's reader went away"))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("backup: {e}"))
}
