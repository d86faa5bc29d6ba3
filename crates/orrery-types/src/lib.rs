//! Identifiers and small value types shared by every Orrery crate.
//!
//! Nothing here does I/O; everything is deterministic so that it can be used
//! inside Raft state machines.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node's permanent identity. Never reused after the node is removed.
pub type NodeId = u64;

/// Identifies one Raft group hosted by the cluster.
///
/// Group 0 is the placement group; shard `s` is served by group `s + 1`.
pub type GroupId = u64;

/// Index of a data shard, `0..shard_count`.
pub type ShardId = u32;

/// The group that holds membership, the shard map and catalogs.
pub const PLACEMENT_GROUP: GroupId = 0;

/// Maximum number of replicas a data shard is given.
pub const MAX_REPLICAS: usize = 3;

/// The Raft group that serves a shard.
pub fn shard_group(shard: ShardId) -> GroupId {
    u64::from(shard) + 1
}

/// The shard served by a group, or `None` for the placement group.
pub fn group_shard(group: GroupId) -> Option<ShardId> {
    if group == PLACEMENT_GROUP {
        None
    } else {
        ShardId::try_from(group - 1).ok()
    }
}

/// Human-readable group name used in logs and metrics.
pub fn group_name(group: GroupId) -> String {
    match group_shard(group) {
        None => "placement".to_string(),
        Some(s) => format!("shard-{s}"),
    }
}

/// Addresses of a node, stored in every Raft membership config so that any
/// group can reach its peers without asking the placement group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    /// Client-facing address: REST and public gRPC.
    pub addr: String,
    /// Peer address: Raft RPCs and request forwarding.
    pub peer_addr: String,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (peer {})", self.addr, self.peer_addr)
    }
}

/// 64-bit FNV-1a. Chosen because it is stable across Rust versions,
/// platforms and processes, unlike `std`'s `DefaultHasher`, and the shard of
/// a key must never change while the shard count stays the same.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The shard of a key: a stable hash of the key modulo the shard count.
pub fn shard_for_key(key: &[u8], shard_count: u32) -> ShardId {
    if shard_count == 0 {
        return 0;
    }
    (stable_hash(key) % u64::from(shard_count)) as ShardId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable() {
        // Pinned values: changing the hash would move every key.
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            shard_for_key(b"a", 8),
            (0xaf63_dc4c_8601_ec8c_u64 % 8) as u32
        );
    }

    #[test]
    fn groups_round_trip() {
        for s in 0..100 {
            assert_eq!(group_shard(shard_group(s)), Some(s));
        }
        assert_eq!(group_shard(PLACEMENT_GROUP), None);
        assert_eq!(group_name(0), "placement");
        assert_eq!(group_name(3), "shard-2");
    }

    #[test]
    fn keys_spread_over_shards() {
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[shard_for_key(format!("key-{i}").as_bytes(), 8) as usize] += 1;
        }
        for c in counts {
            assert!(c > 800 && c < 1200, "uneven spread: {counts:?}");
        }
    }
}
