//! Indexes derived from the jobs (never in snapshots, rebuilt on restore):
//! the per-queue tally, the ready index that claims walk, and the interned
//! names.

use crate::{Job, JobId, JobState, Name};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) counts: BTreeMap<(Name, JobState), u64>,
    /// Queued and running jobs by (queue, state, id). Ids sort by
    /// submission time: a queue's first queued job is its oldest.
    pub(crate) live: BTreeSet<(Name, JobState, JobId)>,
}

pub(crate) fn is_live(s: JobState) -> bool {
    !s.is_terminal()
}

impl Tally {
    /// A job of `queue` went from state `from` to `to` (`None`: it did
    /// not exist, or no longer does).
    pub(crate) fn moved(
        &mut self,
        queue: &Name,
        id: JobId,
        from: Option<JobState>,
        to: Option<JobState>,
    ) {
        if from == to {
            return;
        }
        if let Some(f) = from {
            let key = (queue.clone(), f);
            if let Some(n) = self.counts.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.counts.remove(&key);
                }
            }
            if is_live(f) {
                self.live.remove(&(queue.clone(), f, id));
            }
        }
        if let Some(t) = to {
            *self.counts.entry((queue.clone(), t)).or_default() += 1;
            if is_live(t) {
                self.live.insert((queue.clone(), t, id));
            }
        }
    }

    pub(crate) fn of<'a>(jobs: impl Iterator<Item = &'a Job>) -> Tally {
        let mut t = Tally::default();
        for j in jobs {
            t.moved(&j.queue, j.id, None, Some(j.state));
        }
        t
    }
}

/// A set of shared names. Only a memory saving: which `Arc` a job holds is
/// not part of the state's value, so two interners always compare equal.
#[derive(Clone, Default)]
pub(crate) struct Interner(BTreeSet<Name>);

impl Interner {
    pub(crate) fn get(&mut self, s: &str) -> Name {
        if let Some(n) = self.0.get(s) {
            return n.clone();
        }
        let n: Name = Arc::from(s);
        self.0.insert(n.clone());
        n
    }

    /// Forgets `name` once nothing else holds it (`name` itself and the
    /// set's copy are the two references left).
    pub(crate) fn release(&mut self, name: Name) {
        if Arc::strong_count(&name) <= 2 {
            self.0.remove(&*name);
        }
    }
}

impl PartialEq for Interner {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Interner {}

impl std::fmt::Debug for Interner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Interner({} names)", self.0.len())
    }
}

pub(crate) type ReadyIndex = BTreeMap<(Name, Name), BTreeSet<(i64, JobId)>>;

pub(crate) fn ready_add(ready: &mut ReadyIndex, job: &Job) {
    ready
        .entry((job.queue.clone(), job.kind.clone()))
        .or_default()
        .insert((-(job.priority as i64), job.id));
}

pub(crate) fn ready_remove(ready: &mut ReadyIndex, job: &Job) {
    let key = (job.queue.clone(), job.kind.clone());
    if let Some(set) = ready.get_mut(&key) {
        set.remove(&(-(job.priority as i64), job.id));
        if set.is_empty() {
            ready.remove(&key);
        }
    }
}
