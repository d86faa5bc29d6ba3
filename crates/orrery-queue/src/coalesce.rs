//! Group commit for queue commands: concurrent requests to one shard leader
//! are merged into one bulk command, so that one log entry (one append, one
//! replication round, one fsync per replica) carries many of them.
//!
//! The merge is pure so that it can be checked against applying the
//! requests one by one: [`merge`] turns a list of commands into bulk
//! commands and the map back to the requests, [`split`] turns a bulk
//! response into the responses each request would have had.
//!
//! Only commands whose bulk form applies its items exactly as the single
//! commands would, in order, are merged: enqueues (`Enqueue`,
//! `EnqueueMany`), completions (`Complete`, `CompleteMany`), claims
//! (`Claim`, into `ClaimMany`) and settlements (`Settle`). Two concurrent
//! requests have no order between them, so merging them in arrival order
//! changes nothing a client can observe; the one difference is that the
//! merged command carries the latest of their stamped times.

use crate::{Completion, QueueCommand, QueueError, QueueResponse, Settlement, MAX_BATCH};

/// Merged commands are kept to about this many bytes of payload, so that a
/// burst does not become one huge log entry.
pub const MAX_MERGED_BYTES: usize = 1 << 20;

/// How one request's response is cut out of a bulk response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// A single-item command: its response is one item.
    One,
    /// A bulk command of this many items: its response is `Many` of them.
    Many(usize),
}

impl Slot {
    fn items(self) -> usize {
        match self {
            Slot::One => 1,
            Slot::Many(n) => n,
        }
    }
}

/// One command to propose, and the requests it answers.
#[derive(Debug)]
pub struct Merged {
    pub cmd: QueueCommand,
    /// `(request index, slot)` in item order. A command proposed as it came
    /// (nothing to merge it with) has one slot, `None`: its response is
    /// the request's response unchanged.
    pub slots: Vec<(usize, Option<Slot>)>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Class {
    Enqueue(u32),
    Complete,
    Claim,
    Settle,
}

/// Whether `cmd` may be merged with others: the class it merges within,
/// its slot, its weight against [`MAX_BATCH`] and its payload bytes.
fn class(cmd: &QueueCommand) -> Option<(Class, Slot, usize, usize)> {
    let completion_bytes = |c: &Completion| c.result.len() + c.job_id.len();
    match cmd {
        QueueCommand::Enqueue { shard, job, .. } => Some((
            Class::Enqueue(*shard),
            Slot::One,
            1,
            job.params.len() + job.kind.len() + job.queue.len(),
        )),
        QueueCommand::EnqueueMany { shard, jobs, .. } if jobs.len() <= MAX_BATCH => Some((
            Class::Enqueue(*shard),
            Slot::Many(jobs.len()),
            jobs.len(),
            jobs.iter()
                .map(|j| j.params.len() + j.kind.len() + j.queue.len())
                .sum(),
        )),
        QueueCommand::Complete { result, .. } => {
            Some((Class::Complete, Slot::One, 1, result.len()))
        }
        QueueCommand::CompleteMany { items, .. } if items.len() <= MAX_BATCH => Some((
            Class::Complete,
            Slot::Many(items.len()),
            items.len(),
            items.iter().map(completion_bytes).sum(),
        )),
        QueueCommand::Claim { .. } => Some((Class::Claim, Slot::One, 1, 0)),
        // Weighed by claims and completions together, so that a merged
        // settle stays within what a lone one may carry.
        QueueCommand::Settle { work, .. }
            if work.len() + work.iter().map(|w| w.completions.len()).sum::<usize>()
                <= MAX_BATCH =>
        {
            let items: usize = work.iter().map(|w| w.completions.len()).sum();
            Some((
                Class::Settle,
                Slot::Many(work.len()),
                work.len() + items,
                work.iter()
                    .flat_map(|w| &w.completions)
                    .map(completion_bytes)
                    .sum(),
            ))
        }
        _ => None,
    }
}

/// Whether [`merge`] can merge `cmd` with other commands.
pub fn mergeable(cmd: &QueueCommand) -> bool {
    class(cmd).is_some()
}

fn now_of(cmd: &QueueCommand) -> u64 {
    match cmd {
        QueueCommand::Enqueue { now_ms, .. }
        | QueueCommand::EnqueueMany { now_ms, .. }
        | QueueCommand::Complete { now_ms, .. }
        | QueueCommand::CompleteMany { now_ms, .. }
        | QueueCommand::Claim { now_ms, .. }
        | QueueCommand::Settle { now_ms, .. } => *now_ms,
        _ => 0,
    }
}

/// A bulk command being built.
struct Building {
    class: Class,
    cmds: Vec<(usize, Slot, QueueCommand)>,
    /// Summed weights (see [`class`]).
    items: usize,
    bytes: usize,
}

impl Building {
    fn finish(self) -> Merged {
        if self.cmds.len() == 1 {
            let (i, _, cmd) = self.cmds.into_iter().next().expect("one command");
            return Merged {
                cmd,
                slots: vec![(i, None)],
            };
        }
        let now_ms = self
            .cmds
            .iter()
            .map(|(_, _, c)| now_of(c))
            .max()
            .unwrap_or(0);
        let slots = self.cmds.iter().map(|(i, s, _)| (*i, Some(*s))).collect();
        let cmd = match self.class {
            Class::Enqueue(shard) => {
                let mut jobs = Vec::with_capacity(self.items);
                for (_, _, c) in self.cmds {
                    match c {
                        QueueCommand::Enqueue { job, .. } => jobs.push(job),
                        QueueCommand::EnqueueMany { jobs: js, .. } => jobs.extend(js),
                        _ => unreachable!("class Enqueue holds only enqueues"),
                    }
                }
                QueueCommand::EnqueueMany {
                    shard,
                    jobs,
                    now_ms,
                }
            }
            Class::Complete => {
                let mut items = Vec::with_capacity(self.items);
                for (_, _, c) in self.cmds {
                    match c {
                        QueueCommand::Complete {
                            job_id,
                            token,
                            result,
                            facts,
                            ..
                        } => items.push(Completion {
                            job_id,
                            token,
                            result,
                            facts,
                        }),
                        QueueCommand::CompleteMany { items: is, .. } => items.extend(is),
                        _ => unreachable!("class Complete holds only completions"),
                    }
                }
                QueueCommand::CompleteMany { items, now_ms }
            }
            Class::Claim => {
                let mut claims = Vec::with_capacity(self.items);
                for (_, _, c) in self.cmds {
                    match c {
                        QueueCommand::Claim { spec, .. } => claims.push(spec),
                        _ => unreachable!("class Claim holds only claims"),
                    }
                }
                QueueCommand::ClaimMany { claims, now_ms }
            }
            Class::Settle => {
                let mut work: Vec<Settlement> = Vec::with_capacity(self.cmds.len());
                for (_, _, c) in self.cmds {
                    match c {
                        QueueCommand::Settle { work: w, .. } => work.extend(w),
                        _ => unreachable!("class Settle holds only settlements"),
                    }
                }
                QueueCommand::Settle { work, now_ms }
            }
        };
        Merged { cmd, slots }
    }
}

/// Merges `cmds` (request `i` is `cmds[i]`) into as few commands as the
/// size limits allow, each class in request order. Commands that cannot be
/// merged come back on their own.
pub fn merge(cmds: Vec<QueueCommand>) -> Vec<Merged> {
    let mut out = Vec::new();
    let mut open: Vec<Building> = Vec::new();
    for (i, cmd) in cmds.into_iter().enumerate() {
        let Some((class, slot, n, bytes)) = class(&cmd) else {
            out.push(Merged {
                cmd,
                slots: vec![(i, None)],
            });
            continue;
        };
        let pos = open.iter().position(|b| b.class == class);
        if let Some(p) = pos {
            let b = &open[p];
            if b.items + n > MAX_BATCH || b.bytes + bytes > MAX_MERGED_BYTES {
                out.push(open.swap_remove(p).finish());
            }
        }
        match open.iter_mut().find(|b| b.class == class) {
            Some(b) => {
                b.items += n;
                b.bytes += bytes;
                b.cmds.push((i, slot, cmd));
            }
            None => open.push(Building {
                class,
                cmds: vec![(i, slot, cmd)],
                items: n,
                bytes,
            }),
        }
    }
    out.extend(open.into_iter().map(Building::finish));
    out
}

/// The response of each request a merged command answers, in `slots`
/// order. A response that is not one item per slot (a whole command
/// refused) is every request's response.
pub fn split(resp: QueueResponse, slots: &[(usize, Option<Slot>)]) -> Vec<QueueResponse> {
    if let [(_, None)] = slots {
        return vec![resp];
    }
    let want: usize = slots.iter().map(|(_, s)| s.map_or(1, Slot::items)).sum();
    let items = match resp {
        QueueResponse::Many(items) if items.len() == want => items,
        other => return vec![other; slots.len()],
    };
    let mut it = items.into_iter();
    slots
        .iter()
        .map(|(_, s)| match s {
            // Never short: `items` was counted against the slots above.
            None | Some(Slot::One) => it
                .next()
                .unwrap_or(QueueResponse::Rejected(QueueError::BatchTooLarge(0))),
            Some(Slot::Many(n)) => QueueResponse::Many(it.by_ref().take(*n).collect()),
        })
        .collect()
}
