//! Group commit of queue writes on a shard leader.
//!
//! Every Raft entry costs the same fixed work whatever it carries: an
//! append and an fsync on each replica, a replication round trip, and a
//! dozen task wake-ups across three processes. Under load that fixed cost,
//! not the jobs, is what limits the queue. So each group has a lane: at
//! most [`IN_FLIGHT`] proposals of mergeable queue commands (one) are in flight
//! at once, and requests that arrive meanwhile wait in the lane and go out
//! together as one bulk command when a proposal returns
//! ([`orrery_queue::coalesce`] does the merge and the split), after a short
//! pause that lets requests already arriving join them ([`GATHER_YIELDS`]).
//! A lone request on an idle lane is proposed at once, as it came, so
//! nothing waits at low load.
//!
//! Proposals run in tasks of their own, so a caller that gives up (its
//! deadline passed) never strands the requests merged with its own; a
//! request whose caller has gone before its turn is not proposed at all
//! (the caller was told the outcome is unknown, which covers both).

use crate::node::metrics::Metrics;
use openraft::error::{ClientWriteError, RaftError};
use orrery_queue::coalesce;
use orrery_queue::QueueCommand;
use orrery_raft::{Command, Group, Response};
use orrery_types::{GroupId, NodeAddr, NodeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Mergeable proposals in flight per group. One: while it replicates, the
/// next batch gathers. On the 3-node benchmark (2 cores) one in flight
/// gave about 1.4× the enqueue throughput of two, whose smaller batches
/// cost more entries than the extra pipelining saved.
pub const IN_FLIGHT: usize = 1;

pub type WriteError = RaftError<NodeId, ClientWriteError<NodeId, NodeAddr>>;

/// What a request learns: its response, the proposal's error, or that the
/// proposal did not finish within `limit` (it may still commit).
pub type Outcome = Result<Response, Failure>;

#[derive(Debug)]
pub enum Failure {
    Raft(Box<WriteError>),
    TimedOut,
}

struct Pending {
    cmd: QueueCommand,
    reply: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct LaneState {
    waiting: Vec<Pending>,
    in_flight: usize,
}

#[derive(Default)]
struct Lane {
    state: Mutex<LaneState>,
}

/// The lanes of the groups this node proposes to.
#[derive(Default)]
pub struct GroupCommit {
    lanes: Mutex<HashMap<GroupId, Arc<Lane>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GroupCommit {
    /// Whether `cmd` goes through a lane (see [`GroupCommit::propose`]).
    pub fn takes_queue(cmd: &QueueCommand) -> bool {
        coalesce::mergeable(cmd)
    }

    /// Proposes `cmd` (for which [`GroupCommit::takes_queue`] holds) through
    /// `group`'s lane and waits for its own response. `limit` bounds each
    /// proposal, so that a lane never stays blocked behind a write that
    /// cannot commit.
    pub async fn propose(
        &self,
        group: &Arc<Group>,
        cmd: QueueCommand,
        limit: Duration,
        metrics: &Arc<Metrics>,
    ) -> Outcome {
        let lane = lock(&self.lanes).entry(group.id).or_default().clone();
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut st = lock(&lane.state);
            st.waiting.push(Pending { cmd, reply: tx });
            if st.in_flight < IN_FLIGHT {
                st.in_flight += 1;
                Some(std::mem::take(&mut st.waiting))
            } else {
                None
            }
        };
        if let Some(batch) = start {
            tokio::spawn(run(lane, group.clone(), batch, limit, metrics.clone()));
        }
        // The proposer always answers; a closed channel would mean it
        // panicked, and then the outcome is unknown.
        rx.await.unwrap_or(Err(Failure::TimedOut))
    }
}

/// Times the lane's proposer yields to the runtime, once a proposal has
/// returned and others are waiting, before it takes the next batch.
///
/// Why: the callers just answered send their next requests at once, and
/// those are already in this node's sockets, or being parsed, when the
/// proposal returns. Without a pause half of a lane's callers went into
/// each entry and the other half into the next (about 2.7 of 5 per
/// entry in the 3-node benchmark); with it, about 3.2 – 4 go into each,
/// and every entry saved is an fsync on each replica and four peer RPCs.
/// Yields, not a timer: they cost nothing when the runtime has nothing
/// else to run (a lightly loaded node proposes within microseconds), and
/// under load they let exactly the work that brings more requests run
/// first. On the 3-node benchmark 64 yields gave 15 – 35 % less node CPU
/// per job in every cell and 20 – 40 % more jobs per second in the
/// single-job cells (docs/benchmarks.md); 256 was no better.
pub const GATHER_YIELDS: usize = 64;

async fn gather() {
    for _ in 0..GATHER_YIELDS {
        tokio::task::yield_now().await;
    }
}

/// Proposes `batch`, then whatever gathered meanwhile, until the lane is
/// empty.
async fn run(
    lane: Arc<Lane>,
    group: Arc<Group>,
    mut batch: Vec<Pending>,
    limit: Duration,
    metrics: Arc<Metrics>,
) {
    let mut proposed = false;
    loop {
        batch.retain(|p| !p.reply.is_closed());
        if !batch.is_empty() {
            propose_batch(&group, batch, limit, &metrics).await;
            proposed = true;
        }
        if proposed && !lock(&lane.state).waiting.is_empty() {
            gather().await;
        }
        let mut st = lock(&lane.state);
        if st.waiting.is_empty() {
            st.in_flight -= 1;
            return;
        }
        batch = std::mem::take(&mut st.waiting);
    }
}

async fn propose_batch(group: &Group, batch: Vec<Pending>, limit: Duration, metrics: &Metrics) {
    let (cmds, mut replies): (Vec<QueueCommand>, Vec<Option<oneshot::Sender<Outcome>>>) =
        batch.into_iter().map(|p| (p.cmd, Some(p.reply))).unzip();
    let merged = coalesce::merge(cmds);
    metrics.group_committed(replies.len(), merged.len());
    let proposals = merged.into_iter().map(|m| {
        let raft = group.raft.clone();
        async move {
            let r = tokio::time::timeout(limit, raft.client_write(Command::Queue(m.cmd))).await;
            (m.slots, r)
        }
    });
    for (slots, r) in futures::future::join_all(proposals).await {
        let outcomes: Vec<Outcome> = match r {
            Err(_) => slots.iter().map(|_| Err(Failure::TimedOut)).collect(),
            Ok(Err(e)) => slots
                .iter()
                .map(|_| Err(Failure::Raft(Box::new(e.clone()))))
                .collect(),
            Ok(Ok(resp)) => match resp.data {
                Response::Queue(q) => coalesce::split(q, &slots)
                    .into_iter()
                    .map(|q| Ok(Response::Queue(q)))
                    .collect(),
                other => slots.iter().map(|_| Ok(other.clone())).collect(),
            },
        };
        for ((i, _), o) in slots.iter().zip(outcomes) {
            if let Some(tx) = replies.get_mut(*i).and_then(Option::take) {
                let _ = tx.send(o);
            }
        }
    }
}
