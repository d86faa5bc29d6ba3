//! The `rebalance` nemesis: fresh nodes join under client load and must
//! receive replicas by rebalancing, while the other kinds of the schedule
//! (`rebalance,partition`, `rebalance,kill`) cut and kill nodes between
//! and during the moves. Unlike `membership`, the added nodes stay: the
//! cluster only grows, and moves onto them run into the next faults.
//!
//! After the run (healed, before the nodes stop) [`Nemesis::rebalance_report`]
//! waits, bounded, until every added member holds replicas, and reports
//! what each holds; the runner records it in `results.json` (`rebalance`).

use super::{log, Fault, Nemesis};
use anyhow::Result;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

impl Nemesis {
    /// Starts a fresh node and adds it as a voter (through any live node).
    /// The fault's end only looks at what it received so far.
    pub(super) async fn rebalance_start(&mut self) -> Result<Option<Fault>> {
        match self.add_fresh_node("start-rebalance").await? {
            Some((id, true)) => {
                self.rebalance_added.push(id);
                Ok(Some(Fault::Rebalancing(id)))
            }
            // Not a member: not counted.
            _ => Ok(None),
        }
    }

    /// The end of a `rebalance` fault: records the replicas the node
    /// holds by now (it may hold none yet; moves go on).
    pub(super) async fn rebalance_stop(&mut self, id: u64) -> Result<()> {
        let held = self.replicas_of().await;
        let shards = held.get(&id).cloned().unwrap_or_default();
        log(
            &self.rec,
            "stop-rebalance",
            json!({"node": id, "shards": shards}),
        );
        Ok(())
    }

    /// Each member's shards, as the first live node that answers sees the
    /// shard map (empty when none answers).
    async fn replicas_of(&self) -> BTreeMap<u64, Vec<u64>> {
        let mut out = BTreeMap::new();
        for id in self.running_ids() {
            let Ok(v) = self.db.cluster_view(id).await else {
                continue;
            };
            for m in v["members"].as_array().into_iter().flatten() {
                let (Some(n), Some(s)) = (m["id"].as_u64(), m["shards"].as_array()) else {
                    continue;
                };
                out.insert(n, s.iter().filter_map(Value::as_u64).collect());
            }
            break;
        }
        out
    }

    /// After the run: `None` if this schedule added no node; else waits (at
    /// most `within`) until every added node that is still a member holds
    /// a replica, and says what each holds and whether all received some.
    pub async fn rebalance_report(&mut self, within: Duration) -> Option<Value> {
        if self.rebalance_added.is_empty() {
            return None;
        }
        let started = Instant::now();
        let mut held;
        loop {
            held = self.replicas_of().await;
            let done = self
                .rebalance_added
                .iter()
                .all(|id| held.get(id).is_some_and(|s| !s.is_empty()));
            if done || started.elapsed() >= within {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let added: Vec<Value> = self
            .rebalance_added
            .iter()
            .map(|id| json!({"node": id, "shards": held.get(id).cloned().unwrap_or_default()}))
            .collect();
        let all = self
            .rebalance_added
            .iter()
            .all(|id| held.get(id).is_some_and(|s| !s.is_empty()));
        let counts: BTreeMap<String, usize> =
            held.iter().map(|(n, s)| (n.to_string(), s.len())).collect();
        Some(json!({
            "added": added,
            "all_received_replicas": all,
            "waited_s": started.elapsed().as_secs_f64(),
            "replicas_per_node": counts,
        }))
    }
}
