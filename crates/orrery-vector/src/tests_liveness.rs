//! The index's liveness bookkeeping (`index.rs`, `dead_at`): a search of
//! the state at revision R keeps the index entries with `rev <= R <
//! dead_at` without looking each candidate up in the points map, so that
//! integer check must say exactly what the map says — for the live state
//! and for every older view of it, whatever overwrites, deletes (by id
//! and by filter), drops and re-creations came between.

use super::*;
use crate::tests::arb_cmd;
use proptest::prelude::*;
use std::time::{Duration, Instant};

fn wait_current(c: &ShardCollection) {
    let Some(h) = &c.index else { return };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !h.current(c.last_rev) {
        assert!(
            h.shared.state.load(std::sync::atomic::Ordering::Acquire) != index::FAILED,
            "indexer failed"
        );
        assert!(Instant::now() < deadline, "index never caught up");
        std::thread::sleep(Duration::from_millis(2));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn index_visibility_is_the_states_at_every_revision(
        cmds in prop::collection::vec(arb_cmd(), 1..60),
    ) {
        let mut s = VectorState::default();
        let mut views = Vec::new();
        for (i, c) in cmds.into_iter().enumerate() {
            s.apply(i as u64 + 1, c);
            // A clone shares the live index but keeps this moment's points.
            if let Some(c) = s.data.get("c") {
                views.push(c.clone());
            }
        }
        for v in &views {
            wait_current(v);
        }
        for (n, v) in views.iter().enumerate() {
            let errors = v.visibility_errors();
            prop_assert!(errors.is_empty(), "view {}: {:?}", n, errors);
        }
    }
}
