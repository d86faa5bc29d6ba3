//! Group commit: one task per node turns many pending log appends into one
//! fsync. Appends insert their entries into sled and queue their completion
//! callback here; the task drains the queue, flushes once and completes every
//! callback in the order it was queued, so openraft sees appends become
//! durable in the order it issued them.

use tokio::sync::mpsc;

type Callback = Box<dyn FnOnce(Result<(), std::io::Error>) + Send>;

#[derive(Clone)]
pub struct Flusher {
    tx: mpsc::UnboundedSender<Callback>,
}

impl Flusher {
    pub(crate) fn spawn(db: sled::Db) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Callback>();
        tokio::spawn(async move {
            let mut batch: Vec<Callback> = Vec::new();
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                let result = db.flush_async().await;
                for cb in batch.drain(..) {
                    let r = match &result {
                        Ok(_) => Ok(()),
                        Err(e) => Err(std::io::Error::other(e.to_string())),
                    };
                    cb(r);
                }
            }
        });
        Self { tx }
    }

    /// Queues `done` to run once everything written so far is on disk.
    pub fn after_flush(&self, done: impl FnOnce(Result<(), std::io::Error>) + Send + 'static) {
        if let Err(mpsc::error::SendError(cb)) = self.tx.send(Box::new(done)) {
            // The flusher only stops when the runtime does; report instead of
            // pretending the write is durable.
            cb(Err(std::io::Error::other("storage flusher stopped")));
        }
    }
}
