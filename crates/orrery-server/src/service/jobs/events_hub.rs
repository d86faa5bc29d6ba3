//! One watcher of the job events per node, shared by every event-stream
//! follower (`/v1/events/stream`).
//!
//! Each follower used to poll every shard every 300 ms, so a node's read
//! load grew with followers × shards even when nothing happened. Now one
//! task polls (only while someone follows) and bumps a generation number
//! when new events appear; followers sleep on that notification and read
//! only after it changed. Followers still read from their own cursors, so
//! a slow one loses nothing (events are retained per shard).

use super::JobsService;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// How often the watcher looks while anyone follows.
const EVERY: Duration = Duration::from_millis(300);

pub struct EventsHub {
    generation: watch::Sender<u64>,
    /// Wakes the watcher when its first follower arrives.
    followed: Notify,
}

impl Default for EventsHub {
    fn default() -> Self {
        EventsHub {
            generation: watch::Sender::new(0),
            followed: Notify::new(),
        }
    }
}

impl EventsHub {
    /// A follower's notifications: `changed()` returns once new events
    /// may be there. Dropping it stops counting the follower.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let rx = self.generation.subscribe();
        self.followed.notify_one();
        rx
    }
}

/// The watcher: runs until `stop`.
pub(super) async fn run(jobs: Arc<JobsService>, mut stop: watch::Receiver<bool>) {
    let hub = &jobs.events;
    let mut cursor: Vec<u64> = Vec::new();
    loop {
        if hub.generation.receiver_count() == 0 {
            tokio::select! {
                _ = hub.followed.notified() => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let nap = match jobs.events_since(&cursor, 500).await {
            Ok((evs, next)) if !evs.is_empty() => {
                cursor = next;
                hub.generation.send_modify(|g| *g += 1);
                // More may be waiting behind a full page.
                Duration::ZERO
            }
            Ok(_) => EVERY,
            Err(e) => {
                tracing::debug!("events watcher: {e}");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = stop.changed() => return,
        }
    }
}
