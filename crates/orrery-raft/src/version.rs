//! Cluster versions: which replicated formats a cluster may use.
//!
//! A rolling upgrade runs old and new binaries side by side, and an old
//! node fails on a log entry (or snapshot) it cannot decode. So every
//! format change after the first release is gated: it gets a cluster
//! version here, and nothing that needs version `n` is proposed (or
//! written into a snapshot or storage) before the cluster's *active*
//! version is at least `n`. The active version rises only once every member
//! reports that it supports the next one (see the server's
//! `node/version.rs`), so an entry a node cannot decode never reaches it.
//!
//! Adding a command variant: append it last in its enum (bincode stores
//! the variant index), add it to [`COMMAND_VERSIONS`] with the version that
//! introduces it, and if that version is new, append it to [`VERSIONS`]. A
//! unit test fails if a variant has no entry.

use crate::state::Command;
use serde::ser::{self, Impossible, Serialize};

/// One cluster version: what a cluster running it may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterVersion {
    pub number: u32,
    pub name: &'static str,
    pub adds: &'static str,
}

/// Every cluster version, oldest first, numbered 1, 2, ...
pub const VERSIONS: &[ClusterVersion] = &[
    ClusterVersion {
        number: 1,
        name: "base",
        adds: "every command, snapshot and storage format of the releases before cluster versions",
    },
    ClusterVersion {
        number: 2,
        name: "kv-delete-prefix",
        adds: "kv.DeletePrefix: delete every key with a prefix (DELETE /v1/kv?prefix=)",
    },
    ClusterVersion {
        number: 3,
        name: "kv-chunked-values",
        adds: "kv.PutChunk/PutStaged: values over 1 MiB replicate as 1 MiB entries; snapshots holding an upload in progress use the extended format",
    },
    ClusterVersion {
        number: 4,
        name: "policy-node-types",
        adds: "policy graphs may use sub_policy, decision_table and terminate nodes",
    },
    ClusterVersion {
        number: 5,
        name: "policy-shadow-retention",
        adds: "policy.SetPolicySettings/PutRunV2/PruneRuns: shadow versions, run retention and stored terminations; policy snapshots holding them use the extended format",
    },
    ClusterVersion {
        number: 6,
        name: "policy-run-keys",
        adds: "policy.PutRunOnce: a run requested with a run_key is recorded once per policy and key (a retry answers with that run; another input is a 409)",
    },
    ClusterVersion {
        number: 7,
        name: "workflows",
        adds: "queue.StartWorkflow/CancelWorkflow: workflows (DAGs of step jobs) in shard groups; queue snapshots holding workflows use the extended format",
    },
    ClusterVersion {
        number: 8,
        name: "datasets",
        adds: "dataset.*: datasets (catalogs of image items, scanned by dataset.scan jobs) in shard groups; snapshots holding datasets use the extended format with a dataset section",
    },
    ClusterVersion {
        number: 9,
        name: "capacity-weights",
        adds: "placement.SetCapacity/SetMoveLimits: members' declared capacities weight replica and leader shares; the rebalancer's throttles are replicated; placement snapshots holding them carry a trailing section",
    },
];

/// The highest cluster version this build supports: the last of [`VERSIONS`]
/// (a test checks they agree).
pub const SUPPORTED: u32 = 9;

/// The version a cluster runs before it ever recorded one.
pub const BASE: u32 = 1;

/// The cluster version each command kind needs, keyed `"<domain>.<Variant>"`
/// (the domain is the [`Command`] variant, lower-cased). Every variant of
/// every command enum is listed: a unit test enforces it.
///
/// The group-commit lane merges queue commands into bulk ones
/// (`EnqueueMany`, `ClaimMany`, `CompleteMany`, `Settle`) after the gate
/// has checked each part: a bulk kind must never need a higher version
/// than the kinds it merges (a test checks they are all base).
pub const COMMAND_VERSIONS: &[(&str, u32)] = &[
    ("placement.Init", 1),
    ("placement.UpsertMember", 1),
    ("placement.RemoveMember", 1),
    ("placement.SetReplicas", 1),
    ("placement.SetCapacity", 9),
    ("placement.SetMoveLimits", 9),
    ("kv.Put", 1),
    ("kv.Delete", 1),
    ("kv.Cas", 1),
    ("kv.DeletePrefix", 2),
    ("kv.PutChunk", 3),
    ("kv.PutStaged", 3),
    ("queue.CreateQueue", 1),
    ("queue.DeleteQueue", 1),
    ("queue.ReportGpus", 1),
    ("queue.Enqueue", 1),
    ("queue.EnqueueMany", 1),
    ("queue.Claim", 1),
    ("queue.ClaimMany", 1),
    ("queue.CompleteMany", 1),
    ("queue.Heartbeat", 1),
    ("queue.Complete", 1),
    ("queue.Fail", 1),
    ("queue.Cancel", 1),
    ("queue.ExpireLeases", 1),
    ("queue.Settle", 1),
    ("queue.Prune", 1),
    ("queue.ClaimSharing", 1),
    ("queue.StartWorkflow", 7),
    ("queue.CancelWorkflow", 7),
    ("vector.CreateCollection", 1),
    ("vector.DropCollection", 1),
    ("vector.Upsert", 1),
    ("vector.DeleteIds", 1),
    ("vector.DeleteFilter", 1),
    ("vector.DropData", 1),
    ("policy.CreatePolicy", 1),
    ("policy.UpdatePolicy", 1),
    ("policy.DeletePolicy", 1),
    ("policy.CreateVersion", 1),
    ("policy.ArchiveVersion", 1),
    ("policy.CreateDataSource", 1),
    ("policy.DeleteDataSource", 1),
    ("policy.PutRun", 1),
    ("policy.SetPolicySettings", 5),
    ("policy.PutRunV2", 5),
    ("policy.PruneRuns", 5),
    ("policy.PutRunOnce", 6),
    ("dataset.Create", 8),
    ("dataset.Delete", 8),
    ("dataset.BeginScan", 8),
    ("dataset.PutItems", 8),
    ("dataset.RemoveItems", 8),
    ("dataset.FinishScan", 8),
    ("dataset.AttachOutputs", 8),
    ("dataset.ScanJob", 8),
];

/// The version `number`, if this build knows it.
pub fn version(number: u32) -> Option<&'static ClusterVersion> {
    VERSIONS.iter().find(|v| v.number == number)
}

/// `"2 (kv-delete-prefix)"`, or just the number for a version this build
/// does not know.
pub fn describe(number: u32) -> String {
    match version(number) {
        Some(v) => format!("{} ({})", v.number, v.name),
        None => number.to_string(),
    }
}

/// The kind of `cmd`: its domain (the [`Command`] variant) and the domain
/// command's variant, as serde names them.
pub fn command_kind(cmd: &Command) -> Option<(&'static str, &'static str)> {
    let mut names = VariantNames::default();
    // Always fails: the recorder aborts at the inner enum's variant, before
    // any payload is serialised.
    let _ = cmd.serialize(&mut names);
    match names.seen[..] {
        [domain, variant] => Some((domain, variant)),
        _ => None,
    }
}

/// The cluster version `cmd` needs. A kind missing from the table (which
/// the unit test rules out) needs this build's newest version: refused
/// until the cluster is fully upgraded, never sent to an older node.
pub fn required_version(cmd: &Command) -> u32 {
    let Some((domain, variant)) = command_kind(cmd) else {
        return SUPPORTED;
    };
    COMMAND_VERSIONS
        .iter()
        .find(|(k, _)| {
            k.split_once('.')
                .is_some_and(|(d, v)| d.eq_ignore_ascii_case(domain) && v == variant)
        })
        .map_or(SUPPORTED, |(_, n)| *n)
}

/// Records the variant names of nested enums, outermost first, and stops
/// at the second (a `Serializer` that never writes anything).
#[derive(Default)]
struct VariantNames {
    seen: Vec<&'static str>,
}

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stop")
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

// The tests' variant-listing deserializer stops with the same error.
#[cfg(test)]
impl serde::de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

/// Everything that is not an enum variant stops the walk.
macro_rules! stop {
    ($($f:ident($($t:ty),*)),* $(,)?) => {
        $(fn $f(self, $(_: $t),*) -> Result<(), Stop> { Err(Stop) })*
    };
}

impl ser::Serializer for &mut VariantNames {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Impossible<(), Stop>;
    type SerializeTuple = Impossible<(), Stop>;
    type SerializeTupleStruct = Impossible<(), Stop>;
    type SerializeTupleVariant = Impossible<(), Stop>;
    type SerializeMap = Impossible<(), Stop>;
    type SerializeStruct = Impossible<(), Stop>;
    type SerializeStructVariant = Impossible<(), Stop>;

    stop!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
    );

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), Stop> {
        Err(Stop)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        value.serialize(self)
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, v: &'static str) -> Result<(), Stop> {
        self.seen.push(v);
        Err(Stop)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        v: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        self.seen.push(v);
        if self.seen.len() < 2 {
            value.serialize(self)
        } else {
            Err(Stop)
        }
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Stop> {
        Err(Stop)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Stop> {
        Err(Stop)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Stop> {
        Err(Stop)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        v: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Stop> {
        self.seen.push(v);
        Err(Stop)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Stop> {
        Err(Stop)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Stop> {
        Err(Stop)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        v: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Stop> {
        self.seen.push(v);
        Err(Stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orrery_kv::KvCommand;
    use orrery_placement::PlacementCommand;
    use orrery_policy::store::PolicyCommand;
    use orrery_queue::QueueCommand;
    use orrery_vector::VectorCommand;
    use serde::de::{self, Deserialize, Visitor};
    use std::collections::BTreeSet;

    /// The variant names serde's derive hands to `deserialize_enum`: every
    /// variant of the enum, in declaration order.
    fn variants<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
        let mut d = EnumNames(None);
        let _ = T::deserialize(&mut d);
        d.0.expect("not an enum")
    }

    struct EnumNames(Option<&'static [&'static str]>);

    use super::Stop;

    impl<'de> de::Deserializer<'de> for &mut EnumNames {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(variants);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map struct identifier ignored_any
        }
    }

    /// Every command enum by its [`Command`] variant. A new domain (a new
    /// `Command` variant) must be added here, or the test below fails.
    fn domains() -> Vec<(&'static str, &'static [&'static str])> {
        vec![
            ("Placement", variants::<PlacementCommand>()),
            ("Kv", variants::<KvCommand>()),
            ("Queue", variants::<QueueCommand>()),
            ("Vector", variants::<VectorCommand>()),
            ("Policy", variants::<PolicyCommand>()),
            ("Dataset", variants::<orrery_dataset::DatasetCommand>()),
        ]
    }

    #[test]
    fn every_command_kind_declares_its_version() {
        let domains = domains();
        let outer: BTreeSet<&str> = variants::<Command>().iter().copied().collect();
        let listed: BTreeSet<&str> = domains.iter().map(|(d, _)| *d).collect();
        assert_eq!(outer, listed, "a Command variant without its domain here");
        let mut want = BTreeSet::new();
        for (domain, vs) in &domains {
            for v in *vs {
                want.insert(format!("{}.{v}", domain.to_lowercase()));
            }
        }
        let mut have = BTreeSet::new();
        for (k, n) in COMMAND_VERSIONS {
            assert!(have.insert(k.to_string()), "{k} is listed twice");
            assert!(
                (1..=SUPPORTED).contains(n),
                "{k} needs version {n}, outside 1..={SUPPORTED}"
            );
        }
        let missing: Vec<_> = want.difference(&have).collect();
        let stale: Vec<_> = have.difference(&want).collect();
        assert!(
            missing.is_empty(),
            "command kinds without a cluster version in COMMAND_VERSIONS: {missing:?}"
        );
        assert!(
            stale.is_empty(),
            "COMMAND_VERSIONS lists kinds that do not exist: {stale:?}"
        );
    }

    #[test]
    fn versions_are_numbered_in_order_and_supported_is_the_last() {
        for (i, v) in VERSIONS.iter().enumerate() {
            assert_eq!(v.number, i as u32 + 1, "{v:?}");
        }
        assert_eq!(VERSIONS.last().map(|v| v.number), Some(SUPPORTED));
        assert_eq!(VERSIONS[0].number, BASE);
        assert_eq!(describe(2), "2 (kv-delete-prefix)");
        assert_eq!(describe(99), "99");
    }

    #[test]
    fn kinds_come_from_serde_without_the_payload() {
        let put = Command::Kv(KvCommand::Put {
            key: b"k".to_vec(),
            value: vec![0; 1 << 20],
        });
        assert_eq!(command_kind(&put), Some(("Kv", "Put")));
        assert_eq!(required_version(&put), 1);
        let dp = Command::Kv(KvCommand::DeletePrefix {
            prefix: b"p/".to_vec(),
        });
        assert_eq!(required_version(&dp), 2);
        let q = Command::Queue(QueueCommand::ExpireLeases { now_ms: 1 });
        assert_eq!(command_kind(&q), Some(("Queue", "ExpireLeases")));
        let v = Command::Vector(VectorCommand::DropData {
            collection: "c".into(),
        });
        assert_eq!(command_kind(&v), Some(("Vector", "DropData")));
        let p = Command::Placement(PlacementCommand::RemoveMember { id: 3 });
        assert_eq!(command_kind(&p), Some(("Placement", "RemoveMember")));
    }

    #[test]
    fn merged_queue_commands_need_no_newer_version() {
        for k in [
            "queue.EnqueueMany",
            "queue.ClaimMany",
            "queue.CompleteMany",
            "queue.Settle",
        ] {
            let n = COMMAND_VERSIONS.iter().find(|(n, _)| *n == k).map(|x| x.1);
            assert_eq!(n, Some(BASE), "{k}");
        }
    }
}
