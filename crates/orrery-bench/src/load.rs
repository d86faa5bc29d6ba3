//! The load generator: closed-loop workers, one connection each, spread
//! round-robin over the nodes; every operation's latency is recorded.

use anyhow::{anyhow, bail, Result};
use orrery_client::{Client, Consistency};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Grpc,
    Http,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
        }
    }
}

/// One client connection to one node.
pub enum Conn {
    Grpc(Box<Client>),
    Http { http: reqwest::Client, base: String },
}

impl Conn {
    pub async fn connect(protocol: Protocol, addr: &str, op_timeout: Duration) -> Result<Conn> {
        Ok(match protocol {
            Protocol::Grpc => Conn::Grpc(Box::new(
                Client::connect_with(addr, &crate::access::grpc()).await?,
            )),
            Protocol::Http => Conn::Http {
                // A client of its own per worker: its own keep-alive connection.
                http: crate::access::http()
                    .timeout(op_timeout)
                    .pool_max_idle_per_host(1)
                    .build()?,
                base: format!("{}/v1/kv/", crate::access::base(addr)),
            },
        })
    }

    pub async fn put(&mut self, key: &str, value: &[u8]) -> Result<()> {
        match self {
            Conn::Grpc(c) => {
                c.put(key, value.to_vec()).await?;
            }
            Conn::Http { http, base } => {
                let r = http
                    .put(format!("{base}{key}"))
                    .body(value.to_vec())
                    .send()
                    .await?;
                let status = r.status();
                let body = r.bytes().await?;
                if !status.is_success() {
                    bail!("PUT {status}: {}", String::from_utf8_lossy(&body));
                }
            }
        }
        Ok(())
    }

    /// A linearizable read that must find a value of `want_len` bytes.
    pub async fn get(&mut self, key: &str, want_len: usize) -> Result<()> {
        let got = match self {
            Conn::Grpc(c) => match c.get_with(key, Consistency::Linearizable).await? {
                Some(v) => v.value.len(),
                None => bail!("key {key} not found"),
            },
            Conn::Http { http, base } => {
                let r = http.get(format!("{base}{key}")).send().await?;
                let status = r.status();
                let body = r.bytes().await?;
                if !status.is_success() {
                    bail!("GET {status}: {}", String::from_utf8_lossy(&body));
                }
                body.len()
            }
        };
        if got != want_len {
            bail!("key {key}: read {got} bytes, wrote {want_len}");
        }
        Ok(())
    }
}

/// Opens `n` connections, connection `i` to node `(i + offset) % addrs.len()`.
pub async fn connect_all(
    protocol: Protocol,
    addrs: &[String],
    n: usize,
    offset: usize,
    op_timeout: Duration,
) -> Result<Vec<(usize, Conn)>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let node = (i + offset) % addrs.len();
        out.push((
            node,
            Conn::connect(protocol, &addrs[node], op_timeout).await?,
        ));
    }
    Ok(out)
}

pub fn value(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x = xorshift(x);
            b'a' + (x % 26) as u8
        })
        .collect()
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

pub fn get_key(i: usize) -> String {
    format!("bench/get/{i:06}")
}

/// Writes the keys the GET cells read, `conns.len()` writers in parallel.
pub async fn preload(conns: Vec<(usize, Conn)>, keys: usize, value_bytes: usize) -> Result<()> {
    let workers = conns.len();
    let mut tasks = Vec::new();
    for (w, (_, mut conn)) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let v = value(value_bytes, w as u64 + 7);
            for i in (w..keys).step_by(workers) {
                let mut tries = 0;
                loop {
                    match conn.put(&get_key(i), &v).await {
                        Ok(()) => break,
                        Err(e) if tries >= 5 => {
                            return Err(anyhow!("preloading {}: {e}", get_key(i)))
                        }
                        Err(_) => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

pub struct CellSpec {
    pub op: Op,
    /// Distinguishes the keys of different PUT cells.
    pub tag: String,
    pub warmup: Duration,
    pub duration: Duration,
    /// Stop after this many measured operations (then `duration` is only a cap).
    pub ops: Option<u64>,
    pub value_bytes: usize,
    pub get_keys: usize,
    pub op_timeout: Duration,
}

#[derive(Default)]
pub struct CellResult {
    /// Latencies of measured, successful operations, in ns, sorted.
    pub latencies_ns: Vec<u64>,
    pub errors: u64,
    /// Operations issued, warm-up and failures included.
    pub attempts: u64,
    /// Seconds from the end of warm-up until the last worker stopped.
    pub elapsed: Duration,
    /// Successful measured operations completed in each whole second.
    pub per_second: Vec<u64>,
    /// A few distinct error messages.
    pub error_samples: Vec<String>,
    pub warmup_errors: u64,
}

impl CellResult {
    /// Nearest-rank percentile in milliseconds.
    pub fn pct_ms(&self, q: f64) -> Option<f64> {
        let v = &self.latencies_ns;
        if v.is_empty() {
            return None;
        }
        let rank = ((v.len() as f64) * q).ceil() as usize;
        Some(v[rank.clamp(1, v.len()) - 1] as f64 / 1e6)
    }

    pub fn mean_ms(&self) -> Option<f64> {
        let v = &self.latencies_ns;
        (!v.is_empty()).then(|| v.iter().sum::<u64>() as f64 / v.len() as f64 / 1e6)
    }
}

/// Runs one cell: every connection drives operations back to back until the
/// time (or op budget) runs out. Bounded: no worker starts an operation after
/// warm-up + duration, and each operation is cut off at `op_timeout`.
pub async fn run_cell(conns: Vec<(usize, Conn)>, spec: &CellSpec) -> Result<CellResult> {
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let stop_at = measure_from + spec.duration;
    let budget = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (w, (_node, mut conn)) in conns.into_iter().enumerate() {
        let budget = budget.clone();
        let ops = spec.ops;
        let op = spec.op;
        let key_prefix = format!("bench/{}/w{w}/", spec.tag);
        let get_keys = spec.get_keys.max(1);
        let value_bytes = spec.value_bytes;
        let op_timeout = spec.op_timeout;
        let v = value(value_bytes, w as u64 + 1);
        tasks.push(tokio::spawn(async move {
            let mut r = CellResult::default();
            let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ ((w as u64 + 1) << 17);
            let mut seq = 0u64;
            loop {
                let t = Instant::now();
                if t >= stop_at {
                    break;
                }
                let measuring = t >= measure_from;
                if measuring {
                    if let Some(limit) = ops {
                        if budget.fetch_add(1, Ordering::Relaxed) >= limit {
                            break;
                        }
                    }
                }
                let res = match op {
                    Op::Put => {
                        seq += 1;
                        let key = format!("{key_prefix}{seq}");
                        tokio::time::timeout(op_timeout, conn.put(&key, &v)).await
                    }
                    Op::Get => {
                        rng = xorshift(rng);
                        let key = get_key((rng % get_keys as u64) as usize);
                        tokio::time::timeout(op_timeout, conn.get(&key, value_bytes)).await
                    }
                };
                let done = Instant::now();
                r.attempts += 1;
                let res = match res {
                    Ok(inner) => inner,
                    Err(_) => Err(anyhow!("no answer within {op_timeout:?}")),
                };
                match res {
                    Ok(()) if measuring => {
                        r.latencies_ns.push((done - t).as_nanos() as u64);
                        let sec = (done - measure_from).as_secs() as usize;
                        if r.per_second.len() <= sec {
                            r.per_second.resize(sec + 1, 0);
                        }
                        r.per_second[sec] += 1;
                    }
                    Ok(()) => {}
                    Err(e) => {
                        if measuring {
                            r.errors += 1;
                        } else {
                            r.warmup_errors += 1;
                        }
                        let msg = e.to_string();
                        if r.error_samples.len() < 3 && !r.error_samples.contains(&msg) {
                            r.error_samples.push(msg);
                        }
                        // Do not spin on a failing node.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (r, Instant::now())
        }));
    }
    let mut total = CellResult::default();
    let mut last_stop = measure_from;
    for t in tasks {
        let (r, stopped) = t.await?;
        last_stop = last_stop.max(stopped);
        total.latencies_ns.extend(r.latencies_ns);
        total.errors += r.errors;
        total.warmup_errors += r.warmup_errors;
        total.attempts += r.attempts;
        if total.per_second.len() < r.per_second.len() {
            total.per_second.resize(r.per_second.len(), 0);
        }
        for (i, n) in r.per_second.iter().enumerate() {
            total.per_second[i] += n;
        }
        for m in r.error_samples {
            if total.error_samples.len() < 5 && !total.error_samples.contains(&m) {
                total.error_samples.push(m);
            }
        }
    }
    total.latencies_ns.sort_unstable();
    total.elapsed = last_stop.saturating_duration_since(measure_from);
    // Only whole seconds: the last partial one would look like a dip.
    // Seconds with nothing completed (a stall) show as zeros.
    let whole = total.elapsed.as_secs() as usize;
    total.per_second.resize(whole, 0);
    Ok(total)
}
