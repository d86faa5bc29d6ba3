//! Memory stays bounded under excess load (issue 23, item 6): a node with
//! low caps is offered several hundred HTTP/1.1 keep-alive connections and
//! HTTP/2 streams, each uploading a 2 MiB body that stalls before its last
//! byte, plus clients that do not read the answers they asked for. The
//! excess must be refused quickly (503 `overloaded`, or the connection
//! closed at accept), the node must keep answering a probe and, once the
//! request deadline freed the stalled uploads, normal requests, and its
//! resident memory must stay under a bound that the same load exceeds
//! without the caps.
//!
//! `OVERLOAD_MEMORY_UNCAPPED=1` runs the same load with the caps raised out
//! of reach, to show the bound bites: the test then fails (RSS far past the
//! bound, nothing refused). Numbers in docs/benchmarks.md ("overload").

mod common;

use bytes::Bytes;
use common::{http_client, wait_until, Cluster};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BODY: usize = 2 << 20;
const H1_UPLOADS: usize = 300;
const H2_CONNECTIONS: usize = 4;
const H2_STREAMS: usize = 50;
const SLOW_READERS: usize = 32;
const MAX_REQUESTS: usize = 16;
/// How long the flood runs before it is looked at; the capped node's
/// request deadline (`DEADLINE`) is longer, so the stalled uploads still
/// hold their places then.
const FLOOD: Duration = Duration::from_secs(12);
const DEADLINE: &str = "16000";
/// Growth over the idle node's RSS. Capped, the stalled bodies being read
/// are at most `MAX_REQUESTS` x 2 MiB; uncapped, every one of the 500 is.
const BOUND_MIB: u64 = 256;

fn flags(uncapped: bool) -> Vec<&'static str> {
    if uncapped {
        vec![
            "--max-connections",
            "100000",
            "--max-requests",
            "100000",
            "--max-queued",
            "100000",
            "--request-deadline-ms",
            "600000",
        ]
    } else {
        vec![
            "--max-connections",
            "96",
            "--max-requests",
            "16",
            "--max-queued",
            "16",
            "--queue-wait-ms",
            "250",
            "--request-deadline-ms",
            DEADLINE,
        ]
    }
}

/// How one request of the flood ended (by the time it was looked at).
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    /// Still unanswered.
    Pending,
    /// An HTTP answer: status and error code (if any), how long after the
    /// request was sent.
    Answered(u16, String, Duration),
    /// The connection was closed or reset (at accept, or after a 503 sent
    /// before the body was read).
    Closed(Duration),
}

type Outcomes = Arc<std::sync::Mutex<Vec<Outcome>>>;

fn record(o: &Outcomes, i: usize, v: Outcome) {
    o.lock().unwrap_or_else(|p| p.into_inner())[i] = v;
}

/// A body that announces `BODY` bytes and sends all but the last.
fn stalled(data: Bytes) -> reqwest::Body {
    let head = futures::stream::once(async move { Ok::<_, std::io::Error>(data) });
    reqwest::Body::wrap_stream(futures::StreamExt::chain(head, futures::stream::pending()))
}

fn code_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_stays_bounded_under_excess_load() {
    let uncapped = std::env::var_os("OVERLOAD_MEMORY_UNCAPPED").is_some();
    let c = Cluster::formed(1, 1, &flags(uncapped)).await;
    let (ca, token) = (c.ca_cert(), c.token().to_string());
    // A client whose keep-alive connection predates the flood: a monitor's
    // (over the connection cap, new connections are closed at accept).
    let keeper = http_client(&ca, Some(&token));
    let big = vec![b'b'; 1 << 20];
    let r = keeper
        .put(c.nodes[0].url("/v1/kv/big"))
        .body(big)
        .send()
        .await
        .expect("put big");
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = c.nodes[0].rss_kib().expect("node RSS");

    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = {
        let (peak, pid) = (peak.clone(), c.nodes[0].pid().expect("pid"));
        tokio::spawn(async move {
            loop {
                if let Some(v) = rss_of(pid) {
                    peak.fetch_max(v, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let data = Bytes::from(vec![b'x'; BODY - 1]);
    let total = H2_CONNECTIONS * H2_STREAMS + H1_UPLOADS;
    let outcomes: Outcomes = Arc::new(std::sync::Mutex::new(vec![Outcome::Pending; total]));
    let started = Instant::now();
    let mut tasks = Vec::new();
    // HTTP/2 first, so that their connections are among those accepted.
    let addr = c.nodes[0].addr.clone();
    let mut h2_conns = Vec::new();
    for k in 0..H2_CONNECTIONS {
        let mut h2 = common::h2c::connect(&addr, &ca)
            .await
            .expect("an HTTP/2 connection");
        for s in 0..H2_STREAMS {
            let i = k * H2_STREAMS + s;
            let head = http::Request::put(format!("https://{addr}/v1/kv/h2-{i}"))
                .header("authorization", format!("Bearer {token}"))
                .header("content-length", BODY.to_string())
                .body(())
                .expect("head");
            // h2 wants the handle ready before each new stream.
            h2 = match h2.clone().ready().await {
                Ok(h) => h,
                Err(_) => break,
            };
            let Ok((resp, mut body)) = h2.send_request(head, false) else {
                record(&outcomes, i, Outcome::Closed(started.elapsed()));
                continue;
            };
            let _ = body.send_data(data.clone(), false);
            let o = outcomes.clone();
            let started = Instant::now();
            tasks.push(tokio::spawn(async move {
                let _held = body;
                match resp.await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let mut b = r.into_body();
                        let mut text = Vec::new();
                        while let Some(Ok(chunk)) = b.data().await {
                            let _ = b.flow_control().release_capacity(chunk.len());
                            text.extend_from_slice(&chunk);
                        }
                        let code = code_of(&String::from_utf8_lossy(&text));
                        record(&o, i, Outcome::Answered(status, code, started.elapsed()));
                    }
                    Err(_) => record(&o, i, Outcome::Closed(started.elapsed())),
                }
            }));
        }
        h2_conns.push(h2);
    }
    for k in 0..H1_UPLOADS {
        let i = H2_CONNECTIONS * H2_STREAMS + k;
        let client = upload_client(&ca, &token);
        let url = c.nodes[0].url(&format!("/v1/kv/h1-{k}"));
        let (o, data) = (outcomes.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let r = client
                .put(url)
                .header("content-length", BODY.to_string())
                .body(stalled(data))
                .send()
                .await;
            match r {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let code = code_of(&r.text().await.unwrap_or_default());
                    record(&o, i, Outcome::Answered(status, code, started.elapsed()));
                }
                Err(_) => record(&o, i, Outcome::Closed(started.elapsed())),
            }
        }));
    }
    // Readers that ask for 1 MiB and do not read it (held until the end).
    let readers = {
        let (ca, token, url) = (ca.clone(), token.clone(), c.nodes[0].url("/v1/kv/big"));
        tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..SLOW_READERS {
                let client = http_client(&ca, Some(&token));
                if let Ok(r) = client.get(&url).send().await {
                    held.push((client, r));
                }
            }
            held
        })
    };

    // (b) While the flood is on, the probe answers at once.
    // Long enough for the uncapped node to take in most of the bodies
    // (~100 MB/s of TLS on the loaded 2-core test machine).
    tokio::time::sleep_until((started + FLOOD).into()).await;
    let t = Instant::now();
    let probe = keeper
        .get(c.nodes[0].url("/healthz"))
        .timeout(Duration::from_secs(3))
        .send()
        .await;
    let probe_ok = probe.is_ok_and(|r| r.status() == 200);
    let probe_took = t.elapsed();

    // (a) By now the excess has been refused: all but the requests that
    // hold a place (their handlers wait for the stalled bodies).
    let seen = outcomes.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let pending = seen.iter().filter(|o| **o == Outcome::Pending).count();
    let overloaded = seen
        .iter()
        .filter(|o| matches!(o, Outcome::Answered(503, code, _) if code == "overloaded"))
        .count();
    let closed = seen
        .iter()
        .filter(|o| matches!(o, Outcome::Closed(_)))
        .count();
    let timed_out = seen
        .iter()
        .filter(|o| matches!(o, Outcome::Answered(503, code, _) if code == "timeout"))
        .count();
    let mut refusals: Vec<Duration> = seen
        .iter()
        .filter_map(|o| match o {
            Outcome::Answered(503, _, t) | Outcome::Closed(t) => Some(*t),
            _ => None,
        })
        .collect();
    refusals.sort();
    let median_refusal = refusals.get(refusals.len() / 2).copied();
    let slowest_refusal = refusals.last().copied();
    let peak_mib = (peak.load(Ordering::Relaxed).saturating_sub(baseline)) / 1024;
    eprintln!(
        "uncapped={uncapped}: after {:?}, of {total} uploads: {pending} pending, {overloaded} \
         answered 503 overloaded, {closed} closed, {timed_out} timed out; refusals: median \
         {median_refusal:?}, slowest {slowest_refusal:?}; RSS baseline {} MiB, peak growth {peak_mib} MiB (bound \
         {BOUND_MIB}); probe {probe_ok} in {probe_took:?}",
        started.elapsed(),
        baseline / 1024
    );
    assert!(
        peak_mib < BOUND_MIB,
        "RSS grew by {peak_mib} MiB under the flood (bound {BOUND_MIB} MiB)"
    );
    assert!(
        pending <= MAX_REQUESTS,
        "{pending} requests still unanswered after {FLOOD:?} (at most {MAX_REQUESTS} hold a place)"
    );
    assert!(overloaded > 0, "nothing was answered 503 overloaded");
    assert_eq!(timed_out, 0, "the deadline passed already");
    // "Quickly" is what `pending` above checks: every refusal came within
    // FLOOD, before the deadline that ends a request holding a place. The
    // time itself is mostly connecting and CPU (300 TLS handshakes from a
    // debug-built client on a loaded 2-core machine: medians of 0.3-5.8 s
    // seen at load average 10), so it is printed, not asserted.
    assert!(
        probe_ok,
        "the probe failed under the flood ({probe_took:?})"
    );

    // (b) Normal requests are served again once the request deadline
    // has freed the places the stalled uploads held.
    wait_until(Duration::from_secs(30), || async {
        keeper
            .put(c.nodes[0].url("/v1/kv/after"))
            .body("v")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await
    .expect("a normal write is served after the flood's deadline");
    let m = keeper
        .get(c.nodes[0].url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    let counter = |name: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(counter("orrery_requests_timed_out_total") >= 1.0, "{m}");
    assert!(
        counter("orrery_requests_shed_total") >= overloaded as f64,
        "{m}"
    );
    let peak_mib = (peak.load(Ordering::Relaxed).saturating_sub(baseline)) / 1024;
    assert!(
        peak_mib < BOUND_MIB,
        "RSS grew by {peak_mib} MiB (bound {BOUND_MIB} MiB)"
    );
    sampler.abort();
    for t in tasks {
        t.abort();
    }
    readers.abort();
    drop(h2_conns);
}

/// An HTTP/1.1 client with a connection of its own, and a timeout longer
/// than the node's deadline (which must be what ends a stalled upload).
fn upload_client(ca: &std::path::Path, token: &str) -> reqwest::Client {
    let pem = std::fs::read(ca).expect("read ca.crt");
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("token header"),
    );
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA certificate"))
        .default_headers(h)
        .build()
        .expect("http client")
}

fn rss_of(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
