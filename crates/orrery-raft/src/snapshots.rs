//! When a group builds its next snapshot.
//!
//! openraft's own policy snapshots every N entries. A snapshot serialises
//! the whole state, so with a fixed N its cost grows with the state: a job
//! queue that retains a day of finished jobs would write its whole state
//! again every few seconds. Here a snapshot is due once at least N entries
//! were applied since the last one **and** the log appended since then is
//! at least as large as that snapshot. Snapshot work is then bounded by the
//! bytes written to the log (each log byte pays for at most one byte of
//! snapshot), and the log kept on disk by about one state's size.

use crate::Group;
use std::sync::Weak;
use std::time::Duration;

/// How often each group's schedule looks at its metrics.
pub const TICK: Duration = Duration::from_millis(200);

/// Ticks to wait for a requested snapshot before requesting it again (a
/// build that failed, or a request openraft dropped while it was busy).
const RETRY_TICKS: u32 = 150;

/// What a schedule looks at on each tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Last applied log index, if any.
    pub applied: Option<u64>,
    /// Last log index in the current snapshot, if any.
    pub snapshot: Option<u64>,
    /// Bytes appended to this group's log since the node started.
    pub appended_bytes: u64,
    /// Size of the current snapshot's state (0 before the first).
    pub snapshot_bytes: u64,
}

/// The pure part: given what a group looks like now, is a snapshot due?
#[derive(Debug)]
pub struct Schedule {
    min_logs: u64,
    last_snapshot: Option<u64>,
    /// `appended_bytes` when the current snapshot was first seen.
    baseline: u64,
    /// Ticks since a snapshot was requested and not yet seen.
    pending: Option<u32>,
}

impl Schedule {
    pub fn new(min_logs: u64) -> Self {
        Self {
            min_logs: min_logs.max(1),
            last_snapshot: None,
            baseline: 0,
            pending: None,
        }
    }

    /// Records `o`; true when a snapshot should be requested now.
    pub fn tick(&mut self, o: Observed) -> bool {
        if o.snapshot != self.last_snapshot {
            // Built here or installed from the leader: the log since counts
            // from now on.
            self.last_snapshot = o.snapshot;
            self.baseline = o.appended_bytes;
            self.pending = None;
        }
        if let Some(t) = &mut self.pending {
            *t += 1;
            if *t < RETRY_TICKS {
                return false;
            }
        }
        let next = |i: Option<u64>| i.map_or(0, |i| i + 1);
        let logs_since = next(o.applied).saturating_sub(next(o.snapshot));
        let bytes_since = o.appended_bytes.saturating_sub(self.baseline);
        let due = logs_since >= self.min_logs && bytes_since >= o.snapshot_bytes;
        if due {
            self.pending = Some(0);
        }
        due
    }
}

/// Runs `group`'s schedule until the group is gone or its Raft stopped.
pub(crate) async fn run(group: Weak<Group>, min_logs: u64) {
    let mut schedule = Schedule::new(min_logs);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let Some(g) = group.upgrade() else {
            return;
        };
        let observed = {
            let m = g.raft.metrics();
            let m = m.borrow();
            if m.running_state.is_err() {
                return;
            }
            Observed {
                applied: m.last_applied.map(|l| l.index),
                snapshot: m.snapshot.map(|l| l.index),
                appended_bytes: g.log_appended_bytes(),
                snapshot_bytes: g.sm.snapshot_bytes(),
            }
        };
        if schedule.tick(observed) {
            tracing::debug!(group = g.id, ?observed, "snapshot due");
            if let Err(e) = g.raft.trigger().snapshot().await {
                tracing::debug!(group = g.id, "snapshot schedule stops: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn obs(applied: u64, snapshot: Option<u64>, appended: u64, snap_bytes: u64) -> Observed {
        Observed {
            applied: Some(applied),
            snapshot,
            appended_bytes: appended,
            snapshot_bytes: snap_bytes,
        }
    }

    #[test]
    fn the_first_snapshot_comes_after_min_logs_entries() {
        let mut s = Schedule::new(100);
        assert!(!s.tick(obs(98, None, 10_000, 0)));
        assert!(s.tick(obs(99, None, 10_100, 0)));
    }

    #[test]
    fn a_large_state_waits_for_as_many_log_bytes() {
        let mut s = Schedule::new(100);
        // A snapshot of 1 MB at index 1000, seen when 5 MB had been appended.
        assert!(!s.tick(obs(1000, Some(1000), 5_000_000, 1_000_000)));
        // Plenty of entries, but only 0.5 MB of log since.
        assert!(!s.tick(obs(5000, Some(1000), 5_500_000, 1_000_000)));
        assert!(s.tick(obs(9000, Some(1000), 6_000_000, 1_000_000)));
    }

    #[test]
    fn a_small_state_still_waits_for_min_logs() {
        let mut s = Schedule::new(100);
        assert!(!s.tick(obs(1000, Some(1000), 0, 10)));
        assert!(!s.tick(obs(1099, Some(1000), 1_000_000, 10)));
        assert!(s.tick(obs(1100, Some(1000), 1_000_000, 10)));
    }

    #[test]
    fn a_request_is_not_repeated_until_it_lapses() {
        let mut s = Schedule::new(10);
        assert!(s.tick(obs(100, None, 1000, 0)));
        for _ in 1..RETRY_TICKS {
            assert!(!s.tick(obs(100, None, 1000, 0)));
        }
        assert!(
            s.tick(obs(100, None, 1000, 0)),
            "a lapsed request is repeated"
        );
        // The snapshot shows up: the log since it starts from zero.
        assert!(!s.tick(obs(100, Some(100), 1000, 50)));
        assert!(!s.tick(obs(110, Some(100), 1040, 50)));
        assert!(s.tick(obs(110, Some(100), 1050, 50)));
    }

    #[test]
    fn an_installed_snapshot_restarts_the_count() {
        let mut s = Schedule::new(10);
        assert!(!s.tick(obs(5, None, 500, 0)));
        // A snapshot installed from the leader far ahead.
        assert!(!s.tick(obs(500, Some(500), 500, 4000)));
        assert!(!s.tick(obs(600, Some(500), 4000, 4000)));
        assert!(s.tick(obs(600, Some(500), 4500, 4000)));
    }

    proptest! {
        /// Whatever the workload, the state bytes the schedule has written
        /// as snapshots never exceed the log bytes appended plus one state:
        /// each snapshot but the last was paid for by at least as many log
        /// bytes appended after it.
        #[test]
        fn snapshot_work_is_bounded_by_log_bytes(
            steps in proptest::collection::vec((1u64..50, 1u64..400, -300i64..300), 1..400),
            min_logs in 1u64..200,
        ) {
            let mut s = Schedule::new(min_logs);
            let (mut applied, mut appended, mut state, mut max_state) = (0u64, 0u64, 1u64, 1u64);
            let (mut snapshot, mut snap_bytes, mut written) = (None, 0u64, 0u64);
            for (entries, bytes, growth) in steps {
                applied += entries;
                appended += bytes;
                state = state.saturating_add_signed(growth).max(1);
                max_state = max_state.max(state);
                if s.tick(obs(applied, snapshot, appended, snap_bytes)) {
                    // Built at once, as if the build were instant.
                    snapshot = Some(applied);
                    snap_bytes = state;
                    written += state;
                    prop_assert!(!s.tick(obs(applied, snapshot, appended, snap_bytes)));
                }
            }
            prop_assert!(written <= appended + max_state, "{written} > {appended} + {max_state}");
        }
    }
}
