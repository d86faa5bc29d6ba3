//! Linearizable reads that share their leadership confirmation.
//!
//! A linearizable read on a leader must first confirm that the node still
//! leads (openraft's `ensure_linearizable`: a heartbeat round to a quorum)
//! and then wait until the state has applied the read index. Done per
//! request, N concurrent reads cost N heartbeat rounds — a vector search
//! that reads every shard of a collection pays one round per shard per
//! query. Here concurrent reads of one group share rounds instead.
//!
//! Why sharing is sound: a round confirms leadership *as of its start*, so
//! a read may only use a round that starts after the read arrived. Reads
//! that arrive while a round is in flight therefore join the **next**
//! round, which starts when the current one ends; every read that arrives
//! before that next round starts joins it. So at most one round per group
//! is in flight, and a read waits for at most two. (Joining the round in
//! flight would be the classic stale read: leadership confirmed before the
//! read began, by a leader that may have been deposed since.)
//!
//! The unit test `reads_never_join_a_round_that_started_before_them` is
//! the negative control: with reads allowed to join the round in flight,
//! it fails (checked). The jepsen register workload checks the whole read
//! path under partitions.

use crate::Raft;
use futures::future::{BoxFuture, FutureExt, Shared};
use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::LogId;
use orrery_types::{NodeAddr, NodeId};
use std::sync::{Arc, Mutex};

/// What a round answers: the read index, or why leadership could not be
/// confirmed (the caller forwards to the leader or reports no quorum).
pub type Confirmed =
    Result<Option<LogId<NodeId>>, RaftError<NodeId, CheckIsLeaderError<NodeId, NodeAddr>>>;

type Round = Shared<BoxFuture<'static, Confirmed>>;

/// How a round confirms leadership: openraft's in production, a counter
/// in the unit tests below.
pub(crate) trait Confirm: Clone + Send + Sync + 'static {
    fn confirm(&self) -> BoxFuture<'static, Confirmed>;
}

impl Confirm for Raft {
    fn confirm(&self) -> BoxFuture<'static, Confirmed> {
        let raft = self.clone();
        async move { raft.ensure_linearizable().await }.boxed()
    }
}

#[derive(Default)]
struct Rounds {
    /// The round in flight (or the last one, finished).
    current: Option<Round>,
    /// The round that starts when `current` ends; reads join it.
    next: Option<Round>,
}

/// The shared rounds of one group.
#[derive(Clone, Default)]
pub struct ReadIndex {
    rounds: Arc<Mutex<Rounds>>,
}

impl ReadIndex {
    /// Confirms leadership for a read that arrived now: joins the next
    /// round, creating it if needed. On success the state machine has
    /// applied at least the read index (openraft waits for it).
    pub async fn confirm(&self, raft: &Raft) -> Confirmed {
        self.confirm_with(raft).await
    }

    pub(crate) fn confirm_with<C: Confirm>(&self, c: &C) -> Round {
        let mut r = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(next) = &r.next {
            return next.clone();
        }
        let prev = r.current.clone();
        let rounds = self.rounds.clone();
        let c = c.clone();
        let round: Round = async move {
            if let Some(prev) = prev {
                let _ = prev.await;
            }
            // Start: from here on, arriving reads must wait for a later
            // round, so this one leaves `next` before it confirms anything.
            {
                let mut r = rounds.lock().unwrap_or_else(|p| p.into_inner());
                r.current = r.next.take();
            }
            c.confirm().await
        }
        .boxed()
        .shared();
        r.next = Some(round.clone());
        round
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// Counts rounds; each takes 20 ms and answers the number of rounds
    /// that *started* before it ended — as a read index would.
    #[derive(Clone, Default)]
    struct Counter {
        started: Arc<AtomicU64>,
    }

    impl Confirm for Counter {
        fn confirm(&self) -> BoxFuture<'static, Confirmed> {
            let started = self.started.clone();
            async move {
                let n = started.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(Some(LogId::new(openraft::CommittedLeaderId::new(1, 0), n)))
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn concurrent_reads_share_rounds() {
        let ri = ReadIndex::default();
        let c = Counter::default();
        let reads: Vec<_> = (0..100).map(|_| ri.confirm_with(&c)).collect();
        for r in futures::future::join_all(reads).await {
            r.unwrap();
        }
        assert_eq!(c.started.load(Ordering::SeqCst), 1, "100 reads, one round");
    }

    /// The safety property: a read's round starts after the read arrived.
    /// Shown to fail by letting reads join the round in flight (returning
    /// `r.current` when it is unfinished): the late read then gets the
    /// first round's answer.
    #[tokio::test]
    async fn reads_never_join_a_round_that_started_before_them() {
        let ri = ReadIndex::default();
        let c = Counter::default();
        let first = tokio::spawn(ri.confirm_with(&c));
        // Let the first round start.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(c.started.load(Ordering::SeqCst), 1);
        let before = c.started.load(Ordering::SeqCst);
        let late = ri.confirm_with(&c).await.unwrap().unwrap();
        assert!(
            late.index > before,
            "a read that arrived after round {before} started used round {}",
            late.index
        );
        assert_eq!(first.await.unwrap().unwrap().unwrap().index, 1);
    }

    #[tokio::test]
    async fn sequential_reads_each_get_a_fresh_round() {
        let ri = ReadIndex::default();
        let c = Counter::default();
        for i in 1..=3 {
            let got = ri.confirm_with(&c).await.unwrap().unwrap();
            assert_eq!(got.index, i);
        }
    }

    /// Every reader of an abandoned round left: the next reader is not
    /// stuck behind it.
    #[tokio::test]
    async fn abandoned_rounds_do_not_block_later_reads() {
        let ri = ReadIndex::default();
        let c = Counter::default();
        let r = ri.confirm_with(&c);
        let _ = tokio::time::timeout(Duration::from_millis(5), r).await;
        let got = tokio::time::timeout(Duration::from_secs(2), ri.confirm_with(&c))
            .await
            .expect("not stuck");
        assert!(got.unwrap().is_some());
    }
}
