//! Settings of the placement state added by cluster version 9
//! (`capacity-weights`): each member's declared capacity and the
//! rebalancer's throttles.
//!
//! Both live outside the base encoding of [`PlacementState`] (their fields
//! are `#[serde(skip)]`): a snapshot appends them as one trailing section,
//! and only when one is set. A state that never used them encodes exactly
//! as before, and a snapshot written before them (no trailing bytes)
//! decodes with every capacity 1 and no limits set.

use crate::{MoveLimits, PlacementError, PlacementState};
use orrery_types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The largest capacity a node may declare.
pub const MAX_CAPACITY: u32 = 1000;

/// The largest settable move limit (cluster-wide or per node).
pub const MAX_MOVES: u32 = 64;

/// The trailing section of a snapshot.
#[derive(Serialize, Deserialize)]
struct Section {
    capacities: BTreeMap<NodeId, u32>,
    move_limits: Option<MoveLimits>,
}

impl PlacementState {
    /// `node`'s declared capacity (1 unless set).
    pub fn capacity(&self, node: NodeId) -> u32 {
        self.capacities.get(&node).copied().unwrap_or(1)
    }

    pub(crate) fn set_capacity(&mut self, id: NodeId, capacity: u32) -> Result<(), PlacementError> {
        if !self.members.contains_key(&id) {
            return Err(PlacementError::UnknownMember(id));
        }
        if !(1..=MAX_CAPACITY).contains(&capacity) {
            return Err(PlacementError::InvalidSetting(format!(
                "capacity must be 1..={MAX_CAPACITY}, not {capacity}"
            )));
        }
        if capacity == 1 {
            self.capacities.remove(&id);
        } else {
            self.capacities.insert(id, capacity);
        }
        Ok(())
    }

    pub(crate) fn set_move_limits(
        &mut self,
        max_in_flight: u32,
        max_per_node: u32,
    ) -> Result<(), PlacementError> {
        for (name, v) in [("max_moves", max_in_flight), ("max_per_node", max_per_node)] {
            if !(1..=MAX_MOVES).contains(&v) {
                return Err(PlacementError::InvalidSetting(format!(
                    "{name} must be 1..={MAX_MOVES}, not {v} (pause rebalancing to stop moves)"
                )));
            }
        }
        self.move_limits = Some(MoveLimits {
            max_in_flight: max_in_flight as usize,
            max_per_node: max_per_node as usize,
        });
        Ok(())
    }

    /// Appends the trailing section to a base encoding, if anything is set.
    pub(crate) fn encode_settings(&self, out: &mut Vec<u8>) -> Result<(), String> {
        if self.capacities.is_empty() && self.move_limits.is_none() {
            return Ok(());
        }
        let section = Section {
            capacities: self.capacities.clone(),
            move_limits: self.move_limits,
        };
        let bytes = bincode::serde::encode_to_vec(&section, bincode::config::standard())
            .map_err(|e| e.to_string())?;
        out.extend(bytes);
        Ok(())
    }

    /// Reads the trailing section (`rest`: the bytes after the base
    /// encoding; empty in snapshots from before version 9).
    pub(crate) fn decode_settings(&mut self, rest: &[u8]) -> Result<(), String> {
        if rest.is_empty() {
            return Ok(());
        }
        let (section, _): (Section, usize) =
            bincode::serde::decode_from_slice(rest, bincode::config::standard())
                .map_err(|e| format!("placement snapshot settings: {e}"))?;
        self.capacities = section.capacities;
        self.move_limits = section.move_limits;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::tests::addr;
    use crate::{
        MemberState, MoveLimits, PlacementCommand, PlacementError, PlacementResponse,
        PlacementState,
    };
    use proptest::prelude::*;

    fn two_members() -> PlacementState {
        let mut s = PlacementState::default();
        s.apply(PlacementCommand::Init {
            cluster_id: "c".into(),
            shard_count: 4,
            node_id: 1,
            addr: addr(1),
        });
        s.apply(PlacementCommand::UpsertMember {
            id: 2,
            addr: addr(2),
            state: MemberState::Voter,
        });
        s
    }

    #[test]
    fn capacities_and_limits_are_validated() {
        let mut s = two_members();
        let bad = |r: PlacementResponse| {
            matches!(
                r,
                PlacementResponse::Rejected(PlacementError::InvalidSetting(_))
            )
        };
        assert!(bad(
            s.apply(PlacementCommand::SetCapacity { id: 2, capacity: 0 })
        ));
        assert!(bad(s.apply(PlacementCommand::SetCapacity {
            id: 2,
            capacity: super::MAX_CAPACITY + 1
        })));
        assert_eq!(
            s.apply(PlacementCommand::SetCapacity { id: 9, capacity: 2 }),
            PlacementResponse::Rejected(PlacementError::UnknownMember(9))
        );
        assert!(bad(s.apply(PlacementCommand::SetMoveLimits {
            max_in_flight: 0,
            max_per_node: 1
        })));
        assert!(bad(s.apply(PlacementCommand::SetMoveLimits {
            max_in_flight: 1,
            max_per_node: super::MAX_MOVES + 1
        })));
        assert_eq!(s, two_members(), "refused commands change nothing");
        let ok = PlacementResponse::Ok;
        assert_eq!(
            s.apply(PlacementCommand::SetCapacity { id: 2, capacity: 3 }),
            ok
        );
        assert_eq!(s.capacity(2), 3);
        assert_eq!(s.capacity(1), 1);
        // Back to 1 is the default again: nothing left to encode.
        assert_eq!(
            s.apply(PlacementCommand::SetCapacity { id: 2, capacity: 1 }),
            ok
        );
        assert!(s.capacities.is_empty());
        assert_eq!(s.snapshot(), two_members().snapshot());
        // A removed member's capacity goes with it.
        assert_eq!(
            s.apply(PlacementCommand::SetCapacity { id: 2, capacity: 5 }),
            ok
        );
        assert_eq!(s.apply(PlacementCommand::RemoveMember { id: 2 }), ok);
        assert!(s.capacities.is_empty());
    }

    #[test]
    fn old_snapshots_decode_with_capacity_one() {
        // The base encoding as every release before version 9 wrote it.
        let old = two_members();
        let bytes = bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap();
        assert_eq!(bytes, old.snapshot().unwrap(), "unchanged format");
        let back = PlacementState::restore(&bytes).unwrap();
        assert_eq!(back, old);
        assert_eq!(back.capacity(2), 1);
        assert_eq!(back.move_limits, None);
    }

    proptest! {
        /// Any capacities and limits survive snapshot/restore, and two
        /// replicas applying the same commands agree.
        #[test]
        fn settings_round_trip(
            caps in prop::collection::vec((1u64..=3, 0u32..=1001), 0..6),
            limits in prop::option::of((0u32..=65, 0u32..=65)),
        ) {
            let mut a = two_members();
            let mut b = PlacementState::restore(&a.snapshot().unwrap()).unwrap();
            let mut cmds: Vec<PlacementCommand> = caps
                .into_iter()
                .map(|(id, capacity)| PlacementCommand::SetCapacity { id, capacity })
                .collect();
            if let Some((m, p)) = limits {
                cmds.push(PlacementCommand::SetMoveLimits { max_in_flight: m, max_per_node: p });
            }
            for c in cmds {
                prop_assert_eq!(a.apply(c.clone()), b.apply(c));
            }
            prop_assert_eq!(&a, &b);
            let back = PlacementState::restore(&a.snapshot().unwrap()).unwrap();
            prop_assert_eq!(&back, &a);
            if let Some(MoveLimits { max_in_flight, max_per_node }) = back.move_limits {
                prop_assert!(max_in_flight >= 1 && max_per_node >= 1);
            }
        }
    }
}
