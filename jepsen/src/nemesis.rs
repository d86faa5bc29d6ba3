//! The nemesis: faults injected on a schedule, each recorded in the history
//! (`"process": "nemesis"`, `"type": "info"`, `f` = `start-<fault>` /
//! `stop-<fault>`), with a recovery period between faults.

use crate::db::{Db, PLACEMENT_GROUP};
use crate::history::{Op, OpType, Process};
use crate::net;
use crate::procs::is_could_not_run;
use crate::recorder::Recorder;
use anyhow::Result;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};
use std::sync::{Arc, RwLock};
use std::time::Duration;

mod rebalance;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NemesisKind {
    None,
    /// Random halves, an isolated leader, or a bridge.
    Partition,
    /// kill -9 of random nodes or of leaders, then restart.
    Kill,
    /// SIGSTOP / SIGCONT of random nodes or of leaders.
    Pause,
    /// Add fresh nodes and remove members (the fresh ones, or group leaders
    /// holding replicas), also through an isolated leader.
    Membership,
    /// Restart one node with its clock shifted (libfaketime).
    Clock,
    /// Random packet loss between nodes.
    Loss,
    /// Power cut of a minority or of every node: killed, their faultfs
    /// mounts drop what was not fsynced, restarted after the interval.
    Power,
    /// A random one of the above for each interval.
    All,
    /// Add fresh nodes under load that stay: they must receive replicas
    /// by rebalancing while the schedule's other kinds (`rebalance,kill`)
    /// strike. Not part of `all`. Appended last.
    Rebalance,
}

impl NemesisKind {
    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::None => "none",
            NemesisKind::Partition => "partition",
            NemesisKind::Kill => "kill",
            NemesisKind::Pause => "pause",
            NemesisKind::Membership => "membership",
            NemesisKind::Clock => "clock",
            NemesisKind::Loss => "loss",
            NemesisKind::Power => "power",
            NemesisKind::All => "all",
            NemesisKind::Rebalance => "rebalance",
        }
    }
}

/// A schedule's name: its kinds joined by `,` (as given to `--nemesis`).
pub fn schedule_name(kinds: &[NemesisKind]) -> String {
    kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
}

/// A fault in effect, and what undoing it needs.
#[derive(Debug)]
enum Fault {
    Network(&'static str),
    Killed(Vec<u64>),
    /// Power cut; restarted when the fault stops.
    PowerCut(Vec<u64>),
    Paused(Vec<u64>),
    Clock(u64),
    /// A fresh node added; removed when the fault stops.
    Added(u64),
    /// A fresh node added by `rebalance`; it stays.
    Rebalancing(u64),
}

pub struct Nemesis {
    /// The schedule: one kind, or several taken in turn (`clock,kill`:
    /// a clock fault, then a kill, then a clock fault, …).
    pub kinds: Vec<NemesisKind>,
    /// Index into `kinds` of the next fault.
    turn: usize,
    pub db: Db,
    rec: Arc<Recorder>,
    rng: StdRng,
    /// Nodes clients may talk to (membership changes update it).
    pub live: Arc<RwLock<Vec<u64>>>,
    next_fresh_id: u64,
    max_ids: u64,
    /// Nodes the `rebalance` kind added as members.
    rebalance_added: Vec<u64>,
}

fn log(rec: &Recorder, f: &str, value: Value) {
    rec.record(Op::new(Process::Nemesis, OpType::Info, f, value));
}

impl Nemesis {
    pub fn new(
        kinds: Vec<NemesisKind>,
        db: Db,
        rec: Arc<Recorder>,
        rng: StdRng,
        live: Arc<RwLock<Vec<u64>>>,
    ) -> Nemesis {
        let n = db.nodes.len() as u64;
        Nemesis {
            kinds,
            turn: 0,
            db,
            rec,
            rng,
            live,
            next_fresh_id: n + 1,
            // Node addresses are 127.0.0.<id>; 100 is the clients'.
            max_ids: 99,
            rebalance_added: Vec::new(),
        }
    }

    /// Alternates quiet periods and faults until `stop` fires, then heals.
    /// A fault that fails is logged and the schedule goes on, except when
    /// the harness lost control of a node ([`crate::procs::CouldNotRun`]):
    /// then it stops and returns the error, which ends the test.
    pub async fn run(
        &mut self,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<()> {
        if self.kinds.iter().all(|&k| k == NemesisKind::None) {
            let _ = stop.changed().await;
            return Ok(());
        }
        loop {
            if sleep_or_stop(interval, &mut stop).await {
                break;
            }
            let fault = match self.start_fault().await {
                Ok(f) => f,
                Err(e) => {
                    log(&self.rec, "nemesis-error", json!(format!("{e:#}")));
                    if is_could_not_run(&e) {
                        return Err(e);
                    }
                    None
                }
            };
            let stopped = sleep_or_stop(interval, &mut stop).await;
            if let Some(f) = fault {
                if let Err(e) = self.stop_fault(f).await {
                    log(&self.rec, "nemesis-error", json!(format!("{e:#}")));
                    if is_could_not_run(&e) {
                        return Err(e);
                    }
                }
            }
            if stopped {
                break;
            }
        }
        Ok(())
    }

    /// The next kind of the schedule (`all`: a random one).
    fn pick_kind(&mut self) -> NemesisKind {
        let kind = self
            .kinds
            .get(self.turn % self.kinds.len().max(1))
            .copied()
            .unwrap_or(NemesisKind::None);
        self.turn += 1;
        match kind {
            NemesisKind::All => *[
                NemesisKind::Partition,
                NemesisKind::Kill,
                NemesisKind::Pause,
                NemesisKind::Membership,
                NemesisKind::Clock,
                NemesisKind::Loss,
            ]
            .choose(&mut self.rng)
            .unwrap_or(&NemesisKind::Partition),
            k => k,
        }
    }

    fn running_ids(&self) -> Vec<u64> {
        self.db
            .nodes
            .iter()
            .filter(|n| !n.retired && n.running())
            .map(|n| n.id)
            .collect()
    }

    /// A random shard's group id (groups 1..=shards), or the placement group.
    fn random_group(&mut self) -> u64 {
        if self.rng.gen_bool(0.3) {
            PLACEMENT_GROUP
        } else {
            self.rng.gen_range(1..=self.db.shards as u64)
        }
    }

    /// Victims for kill/pause: a group's leader half the time, else a
    /// random minority.
    async fn victims(&mut self) -> Vec<u64> {
        let ids = self.running_ids();
        if self.rng.gen_bool(0.5) {
            let g = self.random_group();
            if let Some(l) = self.db.leader_of(g).await {
                if ids.contains(&l) {
                    return vec![l];
                }
            }
        }
        let minority = ((ids.len() - 1) / 2).max(1);
        let k = self.rng.gen_range(1..=minority);
        ids.choose_multiple(&mut self.rng, k).copied().collect()
    }

    async fn start_fault(&mut self) -> Result<Option<Fault>> {
        let ids = self.db.ids();
        match self.pick_kind() {
            NemesisKind::None | NemesisKind::All => Ok(None),
            NemesisKind::Partition => {
                let mut shuffled = ids.clone();
                shuffled.shuffle(&mut self.rng);
                let roll = self.rng.gen_range(0..3);
                if roll == 0 {
                    let g = self.random_group();
                    let Some(l) = self.db.leader_of(g).await else {
                        return Ok(None);
                    };
                    let rest: Vec<u64> = ids.iter().copied().filter(|&i| i != l).collect();
                    net::cut(&[l], &rest)?;
                    log(
                        &self.rec,
                        "start-partition",
                        json!({"mode": "isolate-leader", "group": g, "isolated": [l], "rest": rest}),
                    );
                } else if roll == 1 && ids.len() >= 5 {
                    let half = shuffled.len() / 2;
                    let (a, rest) = shuffled.split_at(half);
                    let (bridge, b) = rest.split_at(1);
                    net::cut(a, b)?;
                    log(
                        &self.rec,
                        "start-partition",
                        json!({"mode": "bridge", "a": a, "bridge": bridge, "b": b}),
                    );
                } else {
                    let half = self.rng.gen_range(1..=shuffled.len() / 2);
                    let (a, b) = shuffled.split_at(half);
                    net::cut(a, b)?;
                    log(
                        &self.rec,
                        "start-partition",
                        json!({"mode": "halves", "a": a, "b": b}),
                    );
                }
                Ok(Some(Fault::Network("partition")))
            }
            NemesisKind::Loss => {
                let p = self.rng.gen_range(0.05..0.3);
                net::lossy(&ids, p)?;
                log(&self.rec, "start-loss", json!({"probability": p}));
                Ok(Some(Fault::Network("loss")))
            }
            NemesisKind::Kill => {
                let v = self.victims().await;
                for &id in &v {
                    self.db.kill(id)?;
                }
                log(&self.rec, "start-kill", json!(v));
                Ok(Some(Fault::Killed(v)))
            }
            NemesisKind::Power => {
                // Every node at once half the time: only then can a write
                // that a majority acknowledged but did not fsync be lost.
                let v = if self.rng.gen_bool(0.5) {
                    self.running_ids()
                } else {
                    self.victims().await
                };
                let mut reports = Vec::new();
                // Killed first, all of them, then the disks cut: what a
                // node fsynced before it died is all that may remain.
                for &id in &v {
                    self.db.kill(id)?;
                }
                for &id in &v {
                    reports.push(json!({"node": id, "faultfs": self.db.power_cut(id)?}));
                }
                log(
                    &self.rec,
                    "start-power",
                    json!({"nodes": v, "cuts": reports}),
                );
                Ok(Some(Fault::PowerCut(v)))
            }
            NemesisKind::Pause => {
                let v = self.victims().await;
                for &id in &v {
                    self.db.pause(id)?;
                }
                log(&self.rec, "start-pause", json!(v));
                Ok(Some(Fault::Paused(v)))
            }
            NemesisKind::Clock => {
                let running = self.running_ids();
                let Some(&id) = running.choose(&mut self.rng) else {
                    return Ok(None);
                };
                let off: i64 =
                    if self.rng.gen_bool(0.5) { 1 } else { -1 } * self.rng.gen_range(5..120);
                let r = self.db.restart_with_clock(id, off).await;
                log(
                    &self.rec,
                    "start-clock",
                    json!({"node": id, "offset_s": off}),
                );
                r?;
                Ok(Some(Fault::Clock(id)))
            }
            NemesisKind::Membership => self.membership_start().await,
            NemesisKind::Rebalance => self.rebalance_start().await,
        }
    }

    /// Adds a fresh node (a new id: removed ids never come back).
    async fn membership_start(&mut self) -> Result<Option<Fault>> {
        Ok(self
            .add_fresh_node("start-add-member")
            .await?
            .map(|(id, _)| Fault::Added(id)))
    }

    /// Starts a fresh node and adds it as a voter (through any live node),
    /// logging `event` first. `None` when no id is left; else the id and
    /// whether it joined (a partition or a kill may get in the way: it then
    /// stays running, outside the cluster).
    pub(super) async fn add_fresh_node(&mut self, event: &str) -> Result<Option<(u64, bool)>> {
        if self.next_fresh_id > self.max_ids {
            return Ok(None);
        }
        let id = self.next_fresh_id;
        self.next_fresh_id += 1;
        self.db.add_node_slot(id);
        log(&self.rec, event, json!({"node": id}));
        self.db.start(id, None).await?;
        match self.db.add_member(id) {
            Ok(()) => {
                self.live
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(id);
                log(&self.rec, "added-member", json!({"node": id}));
                Ok(Some((id, true)))
            }
            Err(e) => {
                log(
                    &self.rec,
                    "add-member-failed",
                    json!({"node": id, "error": e.to_string()}),
                );
                Ok(Some((id, false)))
            }
        }
    }

    /// Removes a member: the fresh node added at the start of this fault,
    /// or (half the time, when that node made it in) the current leader of
    /// a random shard or of the placement group, whose replicas the cluster
    /// must move off it first. Usually through a random member; sometimes
    /// through the placement leader while it is isolated (which must not
    /// corrupt anything: the request fails or the majority carries it out).
    async fn membership_stop(&mut self, fresh: u64) -> Result<()> {
        let fresh_added = self
            .live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&fresh);
        let mut id = fresh;
        if fresh_added && self.rng.gen_bool(0.5) {
            let g = self.random_group();
            if let Some(l) = self.db.leader_of(g).await {
                if l != fresh {
                    log(&self.rec, "remove-leader", json!({"node": l, "group": g}));
                    id = l;
                }
            }
        }
        self.live
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&n| n != id);
        let ids = self.db.ids();
        let through_isolated = self.rng.gen_bool(0.3);
        let leader = self.db.leader_of(PLACEMENT_GROUP).await;
        let result = match (through_isolated, leader) {
            (true, Some(l)) => {
                let rest: Vec<u64> = ids.iter().copied().filter(|&i| i != l).collect();
                net::cut(&[l], &rest)?;
                log(
                    &self.rec,
                    "start-partition",
                    json!({"mode": "isolate-leader", "group": PLACEMENT_GROUP, "isolated": [l], "rest": rest}),
                );
                let r = self.db.remove_member(id, l);
                net::heal()?;
                log(&self.rec, "stop-partition", Value::Null);
                // The isolated leader could not commit: remove for real now.
                tokio::time::sleep(Duration::from_secs(2)).await;
                match r {
                    Ok(out) => Ok(out),
                    Err(_) => self.remove_via_any(id).await,
                }
            }
            _ => self.remove_via_any(id).await,
        };
        match result {
            Ok(_) => {
                log(&self.rec, "removed-member", json!({"node": id}));
                self.db.kill(id)?;
                self.db.node(id)?.retired = true;
            }
            Err(e) => {
                // Still a member: keep it running and serving.
                self.live
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(id);
                log(
                    &self.rec,
                    "remove-member-failed",
                    json!({"node": id, "error": e.to_string()}),
                );
            }
        }
        Ok(())
    }

    async fn remove_via_any(&mut self, id: u64) -> Result<String> {
        let mut last = None;
        for _ in 0..10 {
            let via: Vec<u64> = self
                .running_ids()
                .into_iter()
                .filter(|&i| i != id)
                .collect();
            let Some(&v) = via.choose(&mut self.rng) else {
                break;
            };
            match self.db.remove_member(id, v) {
                Ok(o) => return Ok(o),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no node to remove n{id} through")))
    }

    async fn stop_fault(&mut self, f: Fault) -> Result<()> {
        match f {
            Fault::Network(what) => {
                net::heal()?;
                log(&self.rec, &format!("stop-{what}"), Value::Null);
            }
            Fault::Killed(v) => {
                for &id in &v {
                    self.db.start(id, None).await?;
                }
                log(&self.rec, "stop-kill", json!(v));
            }
            Fault::PowerCut(v) => {
                for &id in &v {
                    self.db.start(id, None).await?;
                }
                log(&self.rec, "stop-power", json!(v));
            }
            Fault::Paused(v) => {
                for &id in &v {
                    self.db.resume(id)?;
                }
                log(&self.rec, "stop-pause", json!(v));
            }
            Fault::Clock(id) => {
                self.db.kill(id)?;
                self.db.start(id, None).await?;
                log(&self.rec, "stop-clock", json!({"node": id}));
            }
            Fault::Added(id) => {
                self.membership_stop(id).await?;
            }
            Fault::Rebalancing(id) => {
                self.rebalance_stop(id).await?;
            }
        }
        Ok(())
    }

    /// Undoes everything: heals the network, resumes and restarts nodes.
    pub async fn heal_all(&mut self) -> Result<()> {
        net::heal()?;
        let ids: Vec<u64> = self.db.ids();
        for id in ids {
            let n = self.db.node(id)?;
            if n.paused {
                self.db.resume(id)?;
            }
            let n = self.db.node(id)?;
            if !n.running() || n.clock_offset_s.is_some() {
                self.db.kill(id)?;
                self.db.start(id, None).await?;
            }
        }
        log(&self.rec, "heal", Value::Null);
        Ok(())
    }
}

/// Sleeps; true if `stop` fired first.
async fn sleep_or_stop(d: Duration, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}
