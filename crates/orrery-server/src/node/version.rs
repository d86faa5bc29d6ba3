//! Cluster versions at run time (the table is orrery-raft's `version.rs`):
//! the active version and its hold, recorded in the placement group; the
//! gate that refuses commands the active version does not allow; and the
//! placement leader's task that advances the version once every member
//! supports the next one.
//!
//! The record lives where the previous release can read it: the placement
//! group's state has a KV map (the same `GroupState` as shards) that no
//! user write reaches (user keys always map to shard groups). The record is
//! one key, [`VERSION_KEY`], written with plain `KvCommand::Cas`, which
//! every build decodes: `"<active>"` or `"<active> held"`, absent = 1.
//! One key for both so that every change is one compare-and-set: a hold
//! can never interleave with an advance planned before it.

use super::status::MemberVersion;
use super::typed::KvGet;
use super::Node;
use crate::api::ApiError;
use openraft::ServerState;
use orrery_kv::{KvCommand, KvResponse};
use orrery_raft::version::{describe, required_version, BASE, SUPPORTED};
use orrery_raft::Command;
use orrery_types::{NodeId, PLACEMENT_GROUP};
use std::sync::Arc;
use std::time::Duration;

/// The placement group's KV key that holds the version record.
pub const VERSION_KEY: &[u8] = b"cluster/version";

/// TEST ONLY: lowers the highest cluster version this build supports (and
/// reports), to test refusals without building an older release.
pub const TEST_MAX_VERSION_ENV: &str = "ORRERY_TEST_MAX_CLUSTER_VERSION";

/// The highest cluster version this node supports.
pub fn supported() -> u32 {
    std::env::var(TEST_MAX_VERSION_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map_or(SUPPORTED, |m| m.clamp(BASE, SUPPORTED))
}

/// This node's build, as members report it.
pub fn build() -> String {
    format!("orrery {}", env!("CARGO_PKG_VERSION"))
}

/// The recorded cluster version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionRecord {
    pub active: u32,
    /// Advancing is held by the operator.
    pub held: bool,
}

impl VersionRecord {
    /// Reads the record's value; absent (a cluster that never recorded
    /// one) is version 1, not held. Unknown words are ignored.
    pub fn parse(value: Option<&[u8]>) -> Self {
        let text = value.map(String::from_utf8_lossy).unwrap_or_default();
        let mut words = text.split_whitespace();
        let active = words
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or(BASE)
            .max(BASE);
        VersionRecord {
            active,
            held: words.any(|w| w == "held"),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        if self.held {
            format!("{} held", self.active).into_bytes()
        } else {
            self.active.to_string().into_bytes()
        }
    }
}

pub fn too_low_message(required: u32, active: u32) -> String {
    format!(
        "this command needs cluster version {}; the cluster runs version {} — upgrade every node, and finalize if the version is held (orreryctl cluster version --finalize)",
        describe(required),
        describe(active)
    )
}

/// Each member and its version (`None`: it did not answer).
pub type MemberVersions = Vec<(NodeId, Option<MemberVersion>)>;

impl Node {
    /// The record's raw value in this node's copy of the placement group.
    /// It may lag the leader's, but the version only rises: a stale copy
    /// refuses more, never less.
    fn version_raw_local(&self) -> Option<Vec<u8>> {
        self.placement_group().and_then(|g| {
            g.sm.read(|s| s.kv.get(VERSION_KEY).map(|v| v.value.clone()))
        })
    }

    /// This node's copy of the version record.
    pub fn version_local(&self) -> VersionRecord {
        VersionRecord::parse(self.version_raw_local().as_deref())
    }

    /// The record's raw value, read through the placement leader.
    async fn version_raw_current(&self) -> Result<Option<Vec<u8>>, ApiError> {
        let key = VERSION_KEY.to_vec();
        let v = self.read(PLACEMENT_GROUP, KvGet { key }, true).await?;
        Ok(v.map(|v| v.value))
    }

    /// The version record as of now (through the placement leader), or
    /// without a quorum this node's copy.
    pub async fn version_current(&self) -> VersionRecord {
        match self.version_raw_current().await {
            Ok(v) => VersionRecord::parse(v.as_deref()),
            Err(_) => self.version_local(),
        }
    }

    /// The gate: refuses `cmd` if it needs a newer cluster version than the
    /// active one (or than this node supports), before anything is
    /// proposed or forwarded.
    pub(super) async fn check_version(&self, cmd: &Command) -> Result<(), ApiError> {
        self.require_version(required_version(cmd)).await
    }

    /// The gate for a feature that is no command of its own (a policy
    /// graph using node types of version 4, say): refused with the error
    /// the gate gives commands while the active version (or this node's)
    /// is below `required`.
    pub async fn require_version(&self, required: u32) -> Result<(), ApiError> {
        if required <= BASE {
            return Ok(());
        }
        let mut active = self.version_local().active;
        if active < required {
            // This copy may lag an advance that just committed: ask the
            // placement leader before refusing.
            active = self.version_current().await.active;
        }
        let active = active.min(supported());
        if active < required {
            return Err(ApiError::ClusterVersionTooLow { required, active });
        }
        Ok(())
    }

    /// Every member's supported version (1 s timeout each).
    pub async fn member_versions(&self) -> MemberVersions {
        self.poll_members()
            .await
            .into_iter()
            .map(|(id, m)| (id, m.map(|m| m.version)))
            .collect()
    }

    /// Replaces the record `from` (raw, as read) by `to`; false if it
    /// changed meanwhile.
    async fn version_cas(
        &self,
        from: Option<Vec<u8>>,
        to: VersionRecord,
    ) -> Result<bool, ApiError> {
        let cmd = KvCommand::Cas {
            key: VERSION_KEY.to_vec(),
            expected: from,
            value: to.encode(),
        };
        match self.write(PLACEMENT_GROUP, cmd).await? {
            KvResponse::Cas { succeeded, .. } => Ok(succeeded),
            other => Err(ApiError::Internal(format!(
                "unexpected response to the version record: {other:?}"
            ))),
        }
    }

    /// Sets or releases the hold; returns the record as written.
    pub async fn set_version_hold(&self, held: bool) -> Result<VersionRecord, ApiError> {
        self.shard_count()?;
        for _ in 0..10 {
            let raw = self.version_raw_current().await?;
            let mut rec = VersionRecord::parse(raw.as_deref());
            if rec.held == held {
                return Ok(rec);
            }
            rec.held = held;
            if self.version_cas(raw, rec).await? {
                tracing::info!(active = rec.active, held, "cluster version hold changed");
                return Ok(rec);
            }
        }
        Err(ApiError::unavailable(
            "the cluster version record kept changing; retry",
        ))
    }

    /// Releases the hold and advances to the newest version every member
    /// supports, which must be the newest any member supports: refused
    /// (409) while a member is behind, naming it, and (503) while one does
    /// not answer.
    pub async fn finalize_version(&self) -> Result<VersionRecord, ApiError> {
        self.shard_count()?;
        for _ in 0..10 {
            let raw = self.version_raw_current().await?;
            let rec = VersionRecord::parse(raw.as_deref());
            let members = self.member_versions().await;
            let silent: Vec<NodeId> = members
                .iter()
                .filter(|(_, v)| v.is_none())
                .map(|(id, _)| *id)
                .collect();
            if !silent.is_empty() {
                return Err(ApiError::unavailable(format!(
                    "cannot finalize: nodes {silent:?} did not report their version; every member must answer"
                )));
            }
            let newest = members
                .iter()
                .filter_map(|(_, v)| v.as_ref().map(|v| v.supported))
                .max()
                .unwrap_or(BASE);
            let behind: Vec<String> = members
                .iter()
                .filter_map(|(id, v)| {
                    let v = v.as_ref()?;
                    (v.supported < newest)
                        .then(|| format!("node {id} supports {}", describe(v.supported)))
                })
                .collect();
            if !behind.is_empty() {
                return Err(ApiError::Conflict(format!(
                    "cannot finalize cluster version {}: {}; upgrade those nodes first",
                    describe(newest),
                    behind.join(", ")
                )));
            }
            let to = VersionRecord {
                active: rec.active.max(newest),
                held: false,
            };
            if to == rec {
                return Ok(rec);
            }
            if self.version_cas(raw, to).await? {
                tracing::info!(
                    from = rec.active,
                    to = to.active,
                    "cluster version finalized"
                );
                return Ok(to);
            }
        }
        Err(ApiError::unavailable(
            "the cluster version record kept changing; retry",
        ))
    }

    /// On the placement leader, unless held: one step up once every member
    /// supports the next version.
    async fn advance_once(&self) -> Result<(), ApiError> {
        let Some(g) = self.placement_group() else {
            return Ok(());
        };
        if g.raft.metrics().borrow().state != ServerState::Leader
            || !self.placement().is_initialized()
        {
            return Ok(());
        }
        let raw = self.version_raw_local();
        let rec = VersionRecord::parse(raw.as_deref());
        if rec.held || rec.active >= supported() {
            return Ok(());
        }
        let next = rec.active + 1;
        let members = self.member_versions().await;
        let ready = members
            .iter()
            .all(|(_, v)| v.as_ref().is_some_and(|v| v.supported >= next));
        if ready {
            let to = VersionRecord {
                active: next,
                held: false,
            };
            // The compare-and-set fails if the record changed since it was
            // read (a hold set meanwhile wins).
            if self.version_cas(raw, to).await? {
                tracing::info!(version = %describe(next), "cluster version advanced: every member supports it");
            }
        }
        Ok(())
    }

    /// Refuses a node whose build is older than the cluster it would join:
    /// asks the new node for its version before it is added. Anything
    /// supports version 1, so below that nothing is asked.
    pub(super) async fn check_joining_version(
        &self,
        id: NodeId,
        peer_addr: &str,
    ) -> Result<(), ApiError> {
        let active = self.version_current().await.active;
        if active <= BASE {
            return Ok(());
        }
        let clients = self.registry.clients().clone();
        let Some(m) = super::status::member_status(&clients, peer_addr).await else {
            return Err(ApiError::unavailable(format!(
                "node {id} at {peer_addr} did not report its version; the cluster runs version {}, so it must answer before it joins (is it running?)",
                describe(active)
            )));
        };
        if m.version.supported < active {
            return Err(ApiError::Conflict(format!(
                "node {id} supports cluster version {} at most, but the cluster runs version {}; start it with a build that supports {}",
                describe(m.version.supported),
                describe(active),
                describe(active)
            )));
        }
        Ok(())
    }

    /// Advances the cluster version when it can (see `advance_once`), and
    /// warns loudly if the cluster runs a version this build lacks.
    pub async fn run_version_advancer(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut warned = false;
        loop {
            if let Err(e) = self.advance_once().await {
                tracing::debug!("cluster version: {e}");
            }
            let active = self.version_local().active;
            if active > supported() && !warned {
                tracing::error!(
                    "this build supports cluster version {} but the cluster runs version {}; replace it with a build that supports it",
                    describe(supported()),
                    describe(active)
                );
                warned = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// At start, once the groups are open: refuses to run on a cluster whose
/// active version this build does not support (its log may hold entries
/// this build cannot decode), else starts the advancer. The version is
/// the highest in the placement group's applied state or in any record in
/// its log not applied yet (the stored commit index may lag after a
/// restart, so a recent advance can be there only).
pub async fn start(
    node: &Arc<Node>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let mut active = node.version_local().active;
    if let Some(g) = node.placement_group() {
        let entries = g.unapplied_entries().await.map_err(|e| e.to_string())?;
        for e in entries {
            if let openraft::EntryPayload::Normal(Command::Kv(
                KvCommand::Put { key, value } | KvCommand::Cas { key, value, .. },
            )) = e.payload
            {
                if key == VERSION_KEY {
                    active = active.max(VersionRecord::parse(Some(&value)).active);
                }
            }
        }
    }
    if active > supported() {
        return Err(format!(
            "this build supports cluster version {} but the cluster runs version {}; use a build that supports it",
            describe(supported()),
            describe(active)
        ));
    }
    tokio::spawn(node.clone().run_version_advancer(shutdown));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_absent_is_base() {
        assert_eq!(
            VersionRecord::parse(None),
            VersionRecord {
                active: 1,
                held: false
            }
        );
        for rec in [
            VersionRecord {
                active: 2,
                held: false,
            },
            VersionRecord {
                active: 1,
                held: true,
            },
        ] {
            assert_eq!(VersionRecord::parse(Some(&rec.encode())), rec);
        }
        assert_eq!(VersionRecord::parse(Some(b"1 held")).encode(), b"1 held");
        assert_eq!(
            VersionRecord::parse(Some(b"3 held later-words")),
            VersionRecord {
                active: 3,
                held: true
            }
        );
        assert_eq!(VersionRecord::parse(Some(b"junk")).active, 1);
    }

    #[test]
    fn too_low_is_a_409_naming_the_versions() {
        let e = ApiError::ClusterVersionTooLow {
            required: 2,
            active: 1,
        };
        assert_eq!(e.http_status(), axum::http::StatusCode::CONFLICT);
        assert_eq!(e.body()["error"]["code"], "cluster_version_too_low");
        let m = e.to_string();
        assert!(m.contains("cluster version 2 (kv-delete-prefix)"), "{m}");
        assert!(m.contains("runs version 1 (base)"), "{m}");
        assert_eq!(
            tonic::Status::from(e).code(),
            tonic::Code::FailedPrecondition
        );
    }

    #[test]
    fn only_gated_commands_need_more_than_base() {
        let put = Command::Kv(KvCommand::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        });
        assert_eq!(required_version(&put), BASE);
        let dp = Command::Kv(KvCommand::DeletePrefix {
            prefix: b"p".to_vec(),
        });
        assert_eq!(required_version(&dp), 2);
    }
}
