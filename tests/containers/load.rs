//! A gRPC client load for the container tests: writers that PUT unique keys
//! through `orrery-client`, spreading over the cluster's endpoints, and read
//! earlier writes back. Each request is retried on another node after 503
//! (`unavailable`), a connection error or a 3 s timeout, as clients do; a
//! request fails only when it is refused otherwise or gives up after 60 s.
//! Every acknowledged write and every request's latency (retries included)
//! is recorded.

use orrery_client::{Client, Consistency, Error, Options};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
const GIVE_UP: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Shared {
    acked: Mutex<Vec<(String, String)>>,
    failed: Mutex<Vec<String>>,
    /// (when the request finished, how long it took).
    latencies: Mutex<Vec<(Instant, Duration)>>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    retries: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A connection per endpoint, made on first use and again after an error.
pub struct Nodes {
    endpoints: Vec<String>,
    opts: Options,
    clients: Vec<Option<Client>>,
}

impl Nodes {
    pub fn new(endpoints: Vec<String>, opts: Options) -> Nodes {
        let clients = endpoints.iter().map(|_| None).collect();
        Nodes {
            endpoints,
            opts,
            clients,
        }
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    async fn client(&mut self, i: usize) -> Result<&mut Client, Error> {
        if self.clients[i].is_none() {
            let c = Client::connect_with(&self.endpoints[i], &self.opts).await?;
            self.clients[i] = Some(c);
        }
        self.clients[i]
            .as_mut()
            .ok_or_else(|| tonic::Status::internal("no client").into())
    }
}

/// Errors after which the same request goes to another node: the node
/// refused for want of a leader or quorum (503), or could not be reached.
fn retryable(e: &Error) -> bool {
    match e {
        Error::Connect { .. } => true,
        Error::Status(s) => {
            matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
            ) || (s.code() == tonic::Code::Unknown
                && ["transport", "connection", "h2", "broken pipe", "reset"]
                    .iter()
                    .any(|w| s.message().to_lowercase().contains(w)))
        }
    }
}

/// Runs one request against node `start`, then the next ones, until it
/// succeeds, fails for good, or `GIVE_UP` passes.
pub async fn retrying<T, F>(
    nodes: &mut Nodes,
    start: usize,
    retries: &AtomicU64,
    mut op: F,
) -> Result<T, String>
where
    F: for<'a> FnMut(
        &'a mut Client,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<T, Error>> + Send + 'a>,
    >,
{
    let deadline = Instant::now() + GIVE_UP;
    let mut backoff = Duration::from_millis(50);
    let mut i = start;
    loop {
        let n = i % nodes.len();
        // The connect is bounded too: a paused container's kernel accepts
        // the TCP connection, and the TLS handshake then never finishes.
        let why = match tokio::time::timeout(ATTEMPT_TIMEOUT, nodes.client(n)).await {
            Err(_) => format!("no connection within {ATTEMPT_TIMEOUT:?}"),
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(c)) => match tokio::time::timeout(ATTEMPT_TIMEOUT, op(c)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if retryable(&e) => e.to_string(),
                Ok(Err(e)) => return Err(format!("{}: {e}", nodes.endpoints[n])),
                Err(_) => format!("no answer within {ATTEMPT_TIMEOUT:?}"),
            },
        };
        // A fresh connection next time: the old one may point at a
        // container that is gone or paused.
        nodes.clients[n] = None;
        retries.fetch_add(1, Ordering::Relaxed);
        if Instant::now() > deadline {
            return Err(format!("gave up after {GIVE_UP:?}: {why}"));
        }
        i += 1;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

impl Load {
    /// `writers` writers over `endpoints`; each reads one of its earlier
    /// writes back (linearizable, from another node) after every third
    /// write and records a wrong answer as a failure.
    pub fn start(endpoints: Vec<String>, opts: Options, writers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        let retries = Arc::new(AtomicU64::new(0));
        let tasks = (0..writers)
            .map(|w| {
                let (stop, shared, retries) = (stop.clone(), shared.clone(), retries.clone());
                let mut nodes = Nodes::new(endpoints.clone(), opts.clone());
                tokio::spawn(async move {
                    let mut mine: Vec<(String, String)> = Vec::new();
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let key = format!("ctest/{w}/{n:06}");
                        let value = format!("value-{w}-{n}");
                        let t = Instant::now();
                        let (k, v) = (key.clone(), value.clone());
                        let r = retrying(&mut nodes, n + w, &retries, |c| {
                            let (k, v) = (k.clone(), v.clone());
                            Box::pin(async move { c.put(k, v).await })
                        })
                        .await;
                        if r.is_ok() {
                            mine.push((key.clone(), value.clone()));
                        }
                        shared.record(t, r.map(|_| (key.clone(), value.clone())), &key);
                        if n.is_multiple_of(3) && !mine.is_empty() {
                            let (k, v) = mine[(n * 7919) % mine.len()].clone();
                            let t = Instant::now();
                            let key = k.clone();
                            let r = retrying(&mut nodes, n + w + 1, &retries, |c| {
                                let k = key.clone();
                                Box::pin(
                                    async move { c.get_with(k, Consistency::Linearizable).await },
                                )
                            })
                            .await;
                            let r = match r {
                                Ok(Some(got)) if got.value == v.as_bytes() => Ok(()),
                                Ok(got) => Err(format!("read {got:?}, wrote {v}")),
                                Err(e) => Err(e),
                            };
                            shared.record_read(t, r, &k);
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            shared,
            retries,
            tasks,
        }
    }

    /// Waits until `more` further writes are acknowledged (the cluster
    /// serves); panics after `within`.
    pub async fn wait_for_more(&self, more: usize, within: Duration) {
        let want = self.acked() + more;
        let start = Instant::now();
        while self.acked() < want {
            assert!(
                start.elapsed() < within,
                "the load made no progress in {within:?}: {} acknowledged; failures: {:?}",
                self.acked(),
                self.failures()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn acked(&self) -> usize {
        lock(&self.shared.acked).len()
    }

    /// The writes acknowledged so far (the load goes on).
    pub fn acked_so_far(&self) -> Vec<(String, String)> {
        lock(&self.shared.acked).clone()
    }

    pub fn failures(&self) -> Vec<String> {
        lock(&self.shared.failed).clone()
    }

    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Latencies of the requests that finished after `since`, sorted.
    pub fn latencies_since(&self, since: Instant) -> Vec<Duration> {
        let mut v: Vec<Duration> = lock(&self.shared.latencies)
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, d)| *d)
            .collect();
        v.sort();
        v
    }

    /// Stops the load; returns the acknowledged writes.
    pub async fn finish(self) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        let acked = std::mem::take(&mut *lock(&self.shared.acked));
        acked
    }
}

impl Shared {
    fn record(&self, t: Instant, r: Result<(String, String), String>, key: &str) {
        lock(&self.latencies).push((Instant::now(), t.elapsed()));
        match r {
            Ok(kv) => lock(&self.acked).push(kv),
            Err(e) => lock(&self.failed).push(format!("put {key}: {e}")),
        }
    }

    fn record_read(&self, t: Instant, r: Result<(), String>, key: &str) {
        lock(&self.latencies).push((Instant::now(), t.elapsed()));
        if let Err(e) = r {
            lock(&self.failed).push(format!("get {key}: {e}"));
        }
    }
}

/// The `q` quantile of sorted latencies.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
