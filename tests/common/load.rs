//! A client load for tests that change a cluster under it: writers that PUT
//! unique keys one after another, each retried on 503 and connection errors
//! (rotating over the nodes, with backoff, as the clients do), recording
//! every write acknowledged.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    failed: Arc<Mutex<Vec<String>>>,
    retries: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `writers` writers over the nodes at `bases` (`https://host:port`,
    /// or `http://` for --insecure nodes), with `http` (its token and CA).
    pub fn start(http: reqwest::Client, bases: Vec<String>, writers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let retries = Arc::new(AtomicU64::new(0));
        let tasks = (0..writers)
            .map(|w| {
                let (s, a, f, r) = (stop.clone(), acked.clone(), failed.clone(), retries.clone());
                let (http, bases) = (http.clone(), bases.clone());
                tokio::spawn(async move {
                    let mut n = 0usize;
                    while !s.load(Ordering::Relaxed) {
                        n += 1;
                        let key = format!("load/{w}/{n:06}");
                        let value = format!("value-{w}-{n}-{}", n * 7919 % 1000);
                        match put_retrying(&http, &bases, n + w, &key, &value, &r).await {
                            Ok(()) => lock(&a).push((key, value)),
                            Err(e) => lock(&f).push(format!("{key}: {e}")),
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            acked,
            failed,
            retries,
            tasks,
        }
    }

    /// Waits until `more` further writes are acknowledged: the cluster
    /// serves.
    pub async fn wait_for_more(&self, more: usize) {
        let want = self.acked() + more;
        let start = Instant::now();
        while self.acked() < want {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the load made no progress: {} acknowledged; failures: {:?}",
                self.acked(),
                lock(&self.failed)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The writes acknowledged so far.
    pub fn acked_so_far(&self) -> Vec<(String, String)> {
        lock(&self.acked).clone()
    }

    pub fn acked(&self) -> usize {
        lock(&self.acked).len()
    }

    /// Stops the load; returns the acknowledged writes, the failures and
    /// the number of retries.
    pub async fn finish(self) -> (Vec<(String, String)>, Vec<String>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        let acked = std::mem::take(&mut *lock(&self.acked));
        let failed = std::mem::take(&mut *lock(&self.failed));
        (acked, failed, self.retries.load(Ordering::Relaxed))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// PUTs `key` until it is acknowledged, starting with node `start` of
/// `bases`. A PUT of the same value is idempotent, so retrying after an
/// unknown outcome is safe.
pub async fn put_retrying(
    http: &reqwest::Client,
    bases: &[String],
    start: usize,
    key: &str,
    value: &str,
    retries: &AtomicU64,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut backoff = Duration::from_millis(50);
    let mut i = start;
    loop {
        let url = format!("{}/v1/kv/{key}", bases[i % bases.len()]);
        let why = match http.put(&url).body(value.to_string()).send().await {
            Ok(r) if r.status() == 200 => return Ok(()),
            Ok(r) if r.status() == 503 => format!("503: {}", r.text().await.unwrap_or_default()),
            Ok(r) => {
                let s = r.status();
                return Err(format!("{s}: {}", r.text().await.unwrap_or_default()));
            }
            Err(e) => format!("{e}"),
        };
        retries.fetch_add(1, Ordering::Relaxed);
        if Instant::now() > deadline {
            return Err(format!("gave up after 60 s: {why}"));
        }
        i += 1;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
