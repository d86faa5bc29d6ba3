//! `orrery restore`: prepares the data directory of one node of a new
//! cluster from a backup file, offline.
//!
//! Every node of the new cluster is restored from the same file with the
//! same `--members`; each writes the groups it will host (the placement
//! group, and the shards the planner gives it) as their snapshots at the
//! backup's log points, with the new membership. Nothing is coordinated
//! between the nodes, so everything they must agree on is computed the
//! same way from the same inputs: the new cluster id (from the file's
//! checksum and the members) and the shard map (the placement planner,
//! which is deterministic). Started on those directories, the nodes elect
//! leaders among themselves and serve exactly the backed-up content.

use orrery_placement::{
    plan_leaders, plan_replicas, Member, MemberState, PlacementState, ShardInfo,
};
use orrery_raft::{GroupState, TypeConfig};
use orrery_storage::backup_file::{self, BackupFileError, BackupReader, Section};
use orrery_storage::{seed_group, NodeStorage, StateMachine};
use orrery_types::{shard_group, GroupId, NodeAddr, NodeId, PLACEMENT_GROUP};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufReader;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{path}: {reason}")]
    File {
        path: String,
        // Not `source`: the message already says it, and anyhow would
        // print it twice.
        reason: BackupFileError,
    },
    #[error("--members: {0}")]
    Members(String),
    #[error("data directory {path}: {message}")]
    DataDir { path: String, message: String },
    #[error("the backup's contents: {0}")]
    Content(String),
    #[error("storage: {0}")]
    Storage(#[from] orrery_storage::StorageError),
}

pub struct RestoreOptions {
    pub from: PathBuf,
    pub data_dir: PathBuf,
    pub id: NodeId,
    /// Every member of the new cluster, this node included.
    pub members: BTreeMap<NodeId, NodeAddr>,
}

/// What was written.
#[derive(Debug)]
pub struct RestoreSummary {
    pub source_cluster_id: String,
    pub cluster_id: String,
    /// The groups this node hosts, each with the log index it starts at.
    pub groups: Vec<(GroupId, u64)>,
    pub shard_count: u32,
}

/// Parses the member list as `--initial-members` does (`ID@CLIENT/PEER`
/// or `ID@HOST` with the given ports, comma-separated), so that a
/// Compose file's list serves both.
pub fn parse_members(
    s: &str,
    client_port: u16,
    peer_port: u16,
) -> Result<BTreeMap<NodeId, NodeAddr>, RestoreError> {
    crate::bootstrap::parse_members(s, client_port, peer_port).map_err(RestoreError::Members)
}

/// The new cluster's placement: the old shard count, the new members (all
/// voters), and replicas planned for them as a fresh cluster's planner
/// would (`plan_replicas`, then `plan_leaders` for preferred leaders).
pub fn plan_placement(
    old: &PlacementState,
    members: &BTreeMap<NodeId, NodeAddr>,
    cluster_id: String,
) -> PlacementState {
    let mut p = PlacementState {
        cluster_id: Some(cluster_id),
        members: members
            .iter()
            .map(|(id, addr)| {
                let m = Member {
                    id: *id,
                    addr: addr.clone(),
                    state: MemberState::Voter,
                };
                (*id, m)
            })
            .collect(),
        // Later epochs than the old map's: nothing planned against the old
        // map can apply to this one.
        shards: old
            .shards
            .iter()
            .map(|s| ShardInfo {
                replicas: Vec::new(),
                epoch: s.epoch + 1,
            })
            .collect(),
        retired: old
            .retired
            .iter()
            .filter(|id| !members.contains_key(id))
            .copied()
            .collect(),
        // New members declare their capacities when they start; the
        // throttles are set again by the operator (the restored cluster
        // may not run version 9 yet).
        capacities: BTreeMap::new(),
        move_limits: None,
    };
    for plan in [plan_replicas as fn(&PlacementState) -> _, plan_leaders] {
        // Each plan is computed against one state; applying it can enable
        // more (bounded: every round moves towards balance).
        for _ in 0..16 {
            let cmds = plan(&p);
            if cmds.is_empty() {
                break;
            }
            for c in cmds {
                p.apply(c);
            }
        }
    }
    p
}

/// The new cluster's id: the same on every node restored from the same
/// file with the same members, and not the source's. `file` names the
/// file's content (its sections' checksums and its header).
fn new_cluster_id(file: &str, members: &BTreeMap<NodeId, NodeAddr>) -> String {
    let mut h = Sha256::new();
    h.update(b"orrery restore\0");
    h.update(file.as_bytes());
    for (id, a) in members {
        h.update(format!("{id}@{}/{}\0", a.addr, a.peer_addr).as_bytes());
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn dir_err(dir: &Path, message: impl Into<String>) -> RestoreError {
    RestoreError::DataDir {
        path: dir.display().to_string(),
        message: message.into(),
    }
}

/// Restores node `opts.id`'s data directory. The file is read through and
/// every checksum checked before anything is written; the directory must
/// be missing or empty. If writing fails midway, what was written is
/// removed again.
pub async fn restore(opts: &RestoreOptions) -> Result<RestoreSummary, RestoreError> {
    if !opts.members.contains_key(&opts.id) {
        return Err(RestoreError::Members(format!(
            "this node (--id {}) is not among them",
            opts.id
        )));
    }
    let dir = &opts.data_dir;
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(dir_err(dir, "is not empty; restore only into an empty or missing directory (this never overwrites a node's data)"));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(dir_err(dir, e.to_string())),
    }
    let file_err = |reason: BackupFileError| RestoreError::File {
        path: opts.from.display().to_string(),
        reason,
    };
    let open = || {
        std::fs::File::open(&opts.from)
            .map(BufReader::new)
            .map_err(|e| file_err(e.into()))
    };
    // First pass: every checksum, before anything is written.
    let (header, sections) = backup_file::verify(open()?).map_err(file_err)?;
    let supported = crate::node::version::supported();
    if header.cluster_version > supported {
        return Err(RestoreError::Content(format!(
            "it is of cluster version {}, and this build supports versions up to {supported}: restore with the build that took it, or a newer one",
            header.cluster_version
        )));
    }
    // Named by what was just verified, so the file is not hashed again.
    let mut name = format!(
        "{} {} {}",
        header.cluster_id, header.created_ms, header.source_node
    );
    for s in &sections {
        name.push(' ');
        name.push_str(&s.sha256);
    }
    let cluster_id = new_cluster_id(&name, &opts.members);
    std::fs::create_dir_all(dir).map_err(|e| dir_err(dir, e.to_string()))?;
    let result = write_groups(opts, open()?, &cluster_id).await;
    if result.is_err() {
        // The directory was empty: nothing but what we wrote is lost.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
    let groups = result?;
    Ok(RestoreSummary {
        source_cluster_id: header.cluster_id,
        cluster_id,
        groups,
        shard_count: header.shard_count,
    })
}

async fn write_groups(
    opts: &RestoreOptions,
    file: impl std::io::Read,
    cluster_id: &str,
) -> Result<Vec<(GroupId, u64)>, RestoreError> {
    let file_err = |reason: BackupFileError| RestoreError::File {
        path: opts.from.display().to_string(),
        reason,
    };
    let mut reader = BackupReader::open(file).map_err(file_err)?;
    let header = reader.header().clone();
    if header.groups.first() != Some(&PLACEMENT_GROUP) {
        return Err(RestoreError::Content(
            "the placement group's section is not first".into(),
        ));
    }
    let expected: Vec<GroupId> = std::iter::once(PLACEMENT_GROUP)
        .chain((0..header.shard_count).map(shard_group))
        .collect();
    if header.groups != expected {
        return Err(RestoreError::Content(format!(
            "the groups {:?} are not the placement group and shards 0..{}",
            header.groups, header.shard_count
        )));
    }
    std::fs::write(opts.data_dir.join("node_id"), format!("{}\n", opts.id))
        .map_err(|e| dir_err(&opts.data_dir, e.to_string()))?;
    let storage = NodeStorage::open(&opts.data_dir)?;
    let mut placement: Option<PlacementState> = None;
    let mut written = Vec::new();
    while let Some(section) = reader.next_section().map_err(file_err)? {
        let mut state =
            <GroupState as StateMachine<TypeConfig>>::restore(&section.data).map_err(|e| {
                RestoreError::Content(format!("group {} does not decode: {e}", section.group))
            })?;
        let voters: BTreeSet<NodeId> = if section.group == PLACEMENT_GROUP {
            let p = &state.placement;
            if !p.is_initialized() || p.shard_count() != header.shard_count {
                return Err(RestoreError::Content(format!(
                    "the placement state (shards {}) does not match the header (shards {})",
                    p.shard_count(),
                    header.shard_count
                )));
            }
            state.placement = plan_placement(p, &opts.members, cluster_id.to_string());
            placement = Some(state.placement.clone());
            opts.members.keys().copied().collect()
        } else {
            let Some(p) = &placement else {
                return Err(RestoreError::Content(
                    "a shard before the placement group".into(),
                ));
            };
            let shard = section.group - 1;
            p.shards
                .get(shard as usize)
                .map(|s| s.replicas.iter().copied().collect())
                .unwrap_or_default()
        };
        if !voters.contains(&opts.id) {
            continue;
        }
        let last = section_point(&section);
        let data = if section.group == PLACEMENT_GROUP {
            StateMachine::<TypeConfig>::snapshot(&state).map_err(RestoreError::Content)?
        } else {
            section.data
        };
        seed(
            &storage,
            &opts.members,
            &voters,
            opts.id,
            section.group,
            &last,
            data,
        )?;
        written.push((section.group, section.point.index));
    }
    storage.flush().await?;
    Ok(written)
}

fn section_point(s: &Section) -> openraft::LogId<u64> {
    openraft::LogId::new(
        openraft::CommittedLeaderId::new(s.point.term, s.point.leader),
        s.point.index,
    )
}

fn seed(
    storage: &NodeStorage,
    members: &BTreeMap<NodeId, NodeAddr>,
    voters: &BTreeSet<NodeId>,
    me: NodeId,
    group: GroupId,
    last: &openraft::LogId<u64>,
    data: Vec<u8>,
) -> Result<(), RestoreError> {
    let nodes: BTreeMap<NodeId, NodeAddr> = voters
        .iter()
        .filter_map(|id| members.get(id).map(|a| (*id, a.clone())))
        .collect();
    let membership = openraft::Membership::new(vec![voters.clone()], nodes);
    let meta = openraft::SnapshotMeta {
        last_log_id: Some(*last),
        last_membership: openraft::StoredMembership::new(Some(*last), membership),
        snapshot_id: format!("restore-{}", last.index),
    };
    // A vote one term past the backup's last entry: the new cluster's
    // first leaders are elected in later terms than every entry they
    // follow. With no vote (term 0) openraft panicked handling the first
    // vote requests (tried: no shard ever elected a leader).
    let vote = openraft::Vote::new(last.leader_id.term + 1, me);
    seed_group::<TypeConfig>(storage, group, meta, data, vote)?;
    Ok(())
}

#[cfg(test)]
#[path = "restore_tests.rs"]
mod tests;
