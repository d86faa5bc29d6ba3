//! Workloads: what the client processes do, and how each reply maps to a
//! completion.
//!
//! Completion rules (Jepsen's): `ok` means it happened; `fail` means it
//! certainly did not (a CAS that lost, a 4xx, a connection that was never
//! made, or any error on a read, which changes nothing); `info` means the
//! outcome is unknown (timeout, 5xx, a connection cut mid-request) — the
//! write may take effect at any later time, or never.

use crate::db::client_addr;
use crate::history::{f, Op, OpType};
use crate::net::CLIENT_IP;
use anyhow::Result;
use rand::rngs::StdRng;
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Reads, writes and compare-and-sets on independent registers.
    Register,
    /// Unique adds under a prefix; a final read must hold every acknowledged add.
    Set,
    /// Job queues: enqueue, claim (a lease token), complete with the token.
    Queue,
    /// Workflows (a -> {b, c} -> d): start, claim and complete step jobs.
    Workflow,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Set => "set",
            Workload::Queue => "queue",
            Workload::Workflow => "workflow",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadConsistency {
    Linearizable,
    /// Any replica answers from local state: expected to fail the checker
    /// under partitions (the suite's proof that it can fail).
    Stale,
}

/// The registers in use. Each key takes `per_key` operations, then a fresh
/// key replaces it, so per-key linearizability checking stays small.
pub struct KeyPool {
    prefix: String,
    active: Vec<(String, u32)>,
    next: u64,
    per_key: u32,
    all: Vec<String>,
}

impl KeyPool {
    pub fn new(prefix: String, active: usize, per_key: u32) -> KeyPool {
        let mut p = KeyPool {
            prefix,
            active: Vec::new(),
            next: 0,
            per_key,
            all: Vec::new(),
        };
        for _ in 0..active.max(1) {
            let k = p.fresh();
            p.active.push((k, 0));
        }
        p
    }

    fn fresh(&mut self) -> String {
        let k = format!("{}k{}", self.prefix, self.next);
        self.next += 1;
        self.all.push(k.clone());
        k
    }

    pub fn pick(&mut self, rng: &mut StdRng) -> String {
        let i = rng.gen_range(0..self.active.len());
        self.active[i].1 += 1;
        let key = self.active[i].0.clone();
        if self.active[i].1 >= self.per_key {
            let k = self.fresh();
            self.active[i] = (k, 0);
        }
        key
    }

    pub fn all(&self) -> Vec<String> {
        self.all.clone()
    }
}

/// An operation to perform, before it is recorded.
#[derive(Clone, Debug)]
pub enum Request {
    Read {
        key: String,
    },
    Write {
        key: String,
        value: u64,
    },
    Cas {
        key: String,
        expected: u64,
        new: u64,
    },
    Add {
        element: u64,
    },
    ReadSet,
    /// Submit a job to the test queue; ok value: the job id.
    Enqueue {
        element: u64,
    },
    /// Lease one job; ok value `{"job": id, "token": t}`.
    Claim,
    /// Complete a leased job with its token.
    Complete {
        job: String,
        token: u64,
    },
    /// Complete a leased job in the next claim (`complete` in the claim
    /// request, one entry for both). Recorded as a `complete`; its ok or
    /// fail value carries `"claimed": {"job", "token"}` when the claim took
    /// a job, which the runner records as a `claim` of its own.
    Settle {
        job: String,
        token: u64,
    },
    /// Every job of the test queue: `{"pending": [...], "completed": [...]}`.
    ReadQueue,
    /// Start a workflow; ok value: its id.
    StartWorkflow {
        element: u64,
    },
    /// Lease one step job; ok value `{"job", "token", "workflow", "step"}`.
    ClaimStep,
    /// Complete a leased step job (the claim's ok value).
    CompleteStep {
        claimed: Value,
    },
    /// Every workflow: `{"workflows": {id: {"state", "steps"}}}`.
    ReadWorkflows,
}

/// The queue the `queue` workload uses (created at setup).
pub const QUEUE: &str = "jepsen";
/// Kind of the workload's jobs: no worker of the cluster runs it, so only
/// the test's processes claim them.
pub const QUEUE_KIND: &str = "jepsen.noop";
/// Lease of a claimed job: short, so jobs held by retired processes (whose
/// claim or completion had an unknown outcome) come back soon.
pub const QUEUE_LEASE_S: u64 = 3;

impl Request {
    /// The invoke record.
    pub fn invoke(&self, process: u64, node: u64) -> Op {
        let (fname, key, value) = match self {
            Request::Read { key } => (f::READ, Some(key.clone()), Value::Null),
            Request::Write { key, value } => (f::WRITE, Some(key.clone()), json!(value)),
            Request::Cas { key, expected, new } => {
                (f::CAS, Some(key.clone()), json!([expected, new]))
            }
            Request::Add { element } => (f::ADD, None, json!(element)),
            Request::ReadSet | Request::ReadQueue | Request::ReadWorkflows => {
                (f::READ, None, Value::Null)
            }
            Request::StartWorkflow { element } => (
                crate::check::workflow::START,
                None,
                json!({"element": element}),
            ),
            Request::ClaimStep => (f::CLAIM, None, Value::Null),
            Request::CompleteStep { claimed } => (f::COMPLETE, None, claimed.clone()),
            Request::Enqueue { element } => (f::ENQUEUE, None, json!({"element": element})),
            Request::Claim => (f::CLAIM, None, Value::Null),
            Request::Complete { job, token } | Request::Settle { job, token } => {
                (f::COMPLETE, None, json!({"job": job, "token": token}))
            }
        };
        let mut op = Op::new(process, OpType::Invoke, fname, value).with_node(format!("n{node}"));
        op.key = key;
        op
    }
}

/// Generates the next request of a process.
pub struct Generator {
    pub workload: Workload,
    pub keys: Mutex<KeyPool>,
    values: AtomicU64,
    /// Known values per key, to make CAS attempts plausible.
    last_written: Mutex<std::collections::HashMap<String, u64>>,
}

impl Generator {
    pub fn new(workload: Workload, run_prefix: &str, concurrency: usize) -> Generator {
        Generator {
            workload,
            keys: Mutex::new(KeyPool::new(
                format!("{run_prefix}/r/"),
                (concurrency / 3).max(1),
                300,
            )),
            values: AtomicU64::new(1),
            last_written: Mutex::new(Default::default()),
        }
    }

    pub fn next(&self, rng: &mut StdRng) -> Request {
        match self.workload {
            Workload::Register => {
                let key = self
                    .keys
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pick(rng);
                let roll: f64 = rng.gen();
                if roll < 0.5 {
                    Request::Read { key }
                } else {
                    let value = self.values.fetch_add(1, Ordering::Relaxed);
                    let mut lw = self.last_written.lock().unwrap_or_else(|p| p.into_inner());
                    if roll < 0.75 || !lw.contains_key(&key) {
                        lw.insert(key.clone(), value);
                        Request::Write { key, value }
                    } else {
                        let expected = lw[&key];
                        lw.insert(key.clone(), value);
                        Request::Cas {
                            key,
                            expected,
                            new: value,
                        }
                    }
                }
            }
            Workload::Set => Request::Add {
                element: self.values.fetch_add(1, Ordering::Relaxed),
            },
            // Completions come from the process that holds a lease (the
            // client loop asks for them); the generator balances the rest.
            // As for the queue: a process completes the step it holds.
            Workload::Workflow => {
                if rng.gen_bool(0.25) {
                    Request::StartWorkflow {
                        element: self.values.fetch_add(1, Ordering::Relaxed),
                    }
                } else {
                    Request::ClaimStep
                }
            }
            Workload::Queue => {
                if rng.gen_bool(0.5) {
                    Request::Enqueue {
                        element: self.values.fetch_add(1, Ordering::Relaxed),
                    }
                } else {
                    Request::Claim
                }
            }
        }
    }
}

/// HTTP client for the workloads; connections originate from [`CLIENT_IP`].
pub struct Client {
    pub(crate) http: reqwest::Client,
    /// Workflows acknowledged as started (read at the end).
    pub(crate) started: Mutex<std::collections::BTreeSet<String>>,
    access: crate::access::Access,
    consistency: ReadConsistency,
    set_prefix: String,
}

impl Client {
    /// `https://ADDR` (or `http://` on an `--insecure` run) of `node`.
    pub(crate) fn base(&self, node: u64) -> String {
        self.access.base(&client_addr(node))
    }

    fn kv_url(&self, node: u64, key: &str) -> String {
        format!("{}/v1/kv/{key}", self.base(node))
    }
}

pub(crate) fn err_text(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

impl Client {
    /// A client reaching the nodes as `access` says (TLS and the root
    /// token, which `Db::setup` has learnt by now).
    pub fn new(
        timeout: Duration,
        consistency: ReadConsistency,
        run_prefix: &str,
        access: &crate::access::Access,
    ) -> Result<Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = access.token() {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {t}").parse()?,
            );
        }
        Ok(Client {
            http: access.client(
                reqwest::Client::builder()
                    .local_address(std::net::IpAddr::V4(CLIENT_IP))
                    .timeout(timeout)
                    .connect_timeout(Duration::from_millis(500))
                    .pool_max_idle_per_host(64)
                    .default_headers(headers),
            )?,
            started: Mutex::new(Default::default()),
            access: access.clone(),
            consistency,
            set_prefix: format!("{run_prefix}/s/"),
        })
    }

    fn consistency(&self) -> &'static str {
        match self.consistency {
            ReadConsistency::Linearizable => "linearizable",
            ReadConsistency::Stale => "stale",
        }
    }

    /// Performs `req` against `node`; returns (type, value, error).
    pub async fn perform(&self, req: &Request, node: u64) -> (OpType, Value, Option<String>) {
        match req {
            Request::Read { key } => {
                let url = format!(
                    "{}?consistency={}",
                    self.kv_url(node, key),
                    self.consistency()
                );
                match self.http.get(url).send().await {
                    Ok(r) if r.status() == StatusCode::NOT_FOUND => (OpType::Ok, Value::Null, None),
                    Ok(r) if r.status().is_success() => match r.text().await {
                        Ok(t) => match t.parse::<u64>() {
                            Ok(v) => (OpType::Ok, json!(v), None),
                            Err(_) => (OpType::Ok, json!(t), None),
                        },
                        Err(e) => (OpType::Fail, Value::Null, Some(err_text(&e))),
                    },
                    Ok(r) => (OpType::Fail, Value::Null, Some(status_text(r).await)),
                    Err(e) => (OpType::Fail, Value::Null, Some(err_text(&e))),
                }
            }
            Request::Write { key, value } => {
                let r = self
                    .http
                    .put(self.kv_url(node, key))
                    .body(value.to_string())
                    .send()
                    .await;
                write_outcome(r, json!(value)).await
            }
            Request::Cas { key, expected, new } => {
                let r = self
                    .http
                    .post(format!("{}/cas", self.kv_url(node, key)))
                    .json(&json!({"expected": expected.to_string(), "value": new.to_string()}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == StatusCode::CONFLICT => (
                        OpType::Fail,
                        json!([expected, new]),
                        Some("cas mismatch".into()),
                    ),
                    other => write_outcome(other, json!([expected, new])).await,
                }
            }
            Request::Add { element } => {
                let key = format!("{}{element:010}", self.set_prefix);
                let r = self
                    .http
                    .put(self.kv_url(node, &key))
                    .body("1")
                    .send()
                    .await;
                write_outcome(r, json!(element)).await
            }
            Request::Enqueue { element } => {
                let r = self
                    .http
                    .post(format!("{}/v1/jobs",
                        self.base(node)))
                    .json(&json!({"queue": QUEUE, "kind": QUEUE_KIND, "params": {"element": element}}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                        Ok(v) => match v["id"].as_str() {
                            Some(id) => (OpType::Ok, json!(id), None),
                            None => (OpType::Info, Value::Null, Some(format!("no job id in {v}"))),
                        },
                        // Created, but the reply was lost: which id is unknown.
                        Err(e) => (OpType::Info, Value::Null, Some(err_text(&e))),
                    },
                    other => {
                        let (kind, _, e) = write_outcome(other, Value::Null).await;
                        (kind, Value::Null, e)
                    }
                }
            }
            Request::Claim => {
                let r = self
                    .http
                    .post(format!("{}/v1/queues/{QUEUE}/claim",
                        self.base(node)))
                    .json(&json!({"worker_id": "jepsen", "kinds": [QUEUE_KIND], "lease_s": QUEUE_LEASE_S, "wait_s": 0}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == StatusCode::NO_CONTENT => {
                        (OpType::Fail, Value::Null, Some("nothing to claim".into()))
                    }
                    Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                        Ok(v) => match (v["id"].as_str(), v["token"].as_u64()) {
                            (Some(id), Some(t)) => {
                                (OpType::Ok, json!({"job": id, "token": t}), None)
                            }
                            _ => (
                                OpType::Info,
                                Value::Null,
                                Some(format!("no id/token in {v}")),
                            ),
                        },
                        Err(e) => (OpType::Info, Value::Null, Some(err_text(&e))),
                    },
                    other => write_outcome(other, Value::Null).await,
                }
            }
            Request::Complete { job, token } => {
                let value = json!({"job": job, "token": token});
                let r = self
                    .http
                    .post(format!("{}/v1/jobs/{job}/complete", self.base(node)))
                    .json(&json!({"token": token, "result": {"ok": true}}))
                    .send()
                    .await;
                write_outcome(r, value).await
            }
            Request::Settle { job, token } => self.settle(job, *token, node).await,
            Request::ReadQueue => self.read_queue(node).await,
            Request::StartWorkflow { element } => self.start_workflow(*element, node).await,
            Request::ClaimStep => self.claim_step(node).await,
            Request::CompleteStep { claimed } => self.complete_step(claimed, node).await,
            Request::ReadWorkflows => self.read_workflows(node).await,
            Request::ReadSet => {
                let url = format!(
                    "{}/v1/kv?prefix={}&limit=10000&consistency={}",
                    self.base(node),
                    self.set_prefix,
                    self.consistency()
                );
                match self.http.get(url).send().await {
                    Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                        Ok(v) => {
                            let mut elems: Vec<u64> = v["items"]
                                .as_array()
                                .map(|a| {
                                    a.iter()
                                        .filter_map(|i| i["key"].as_str())
                                        .filter_map(|k| k.strip_prefix(&self.set_prefix))
                                        .filter_map(|e| e.parse().ok())
                                        .collect()
                                })
                                .unwrap_or_default();
                            elems.sort_unstable();
                            (OpType::Ok, json!(elems), None)
                        }
                        Err(e) => (OpType::Fail, Value::Null, Some(err_text(&e))),
                    },
                    Ok(r) => (OpType::Fail, Value::Null, Some(status_text(r).await)),
                    Err(e) => (OpType::Fail, Value::Null, Some(err_text(&e))),
                }
            }
        }
    }
}

impl Client {
    /// Completes `job` inside a claim request (a settlement). The outcome
    /// is the completion's: ok when it took, fail when it was refused
    /// (stale token) or never proposed, info when it may or may not have
    /// taken. A job the claim took comes back as `"claimed"`.
    async fn settle(&self, job: &str, token: u64, node: u64) -> (OpType, Value, Option<String>) {
        let value = json!({"job": job, "token": token});
        let r = self
            .http
            .post(format!("{}/v1/queues/{QUEUE}/claim", self.base(node)))
            .json(&json!({
                "worker_id": "jepsen",
                "kinds": [QUEUE_KIND],
                "lease_s": QUEUE_LEASE_S,
                "wait_s": 0,
                "complete": [{"id": job, "token": token, "result": {"ok": true}}],
            }))
            .send()
            .await;
        let r = match r {
            Ok(r) if r.status().is_success() => r,
            other => return write_outcome(other, value).await,
        };
        let v: Value = match r.json().await {
            Ok(v) => v,
            // The request was answered, so the completion was decided, but
            // the answer is lost.
            Err(e) => return (OpType::Info, value, Some(err_text(&e))),
        };
        let item = &v["completions"]["results"][0];
        let (kind, error) = if item["state"] == "succeeded" {
            (OpType::Ok, None)
        } else {
            let code = item["error"]["code"].as_str().unwrap_or_default();
            let definite = !matches!(code, "outcome_unknown" | "internal" | "");
            let kind = if definite { OpType::Fail } else { OpType::Info };
            (kind, Some(item.to_string()))
        };
        let mut value = value;
        if let Some(j) = v["jobs"].as_array().and_then(|a| a.first()) {
            if let (Some(id), Some(t)) = (j["id"].as_str(), j["token"].as_u64()) {
                value["claimed"] = json!({"job": id, "token": t});
            }
        }
        (kind, value, error)
    }

    /// Lists every job of the test queue, page by page (each page is a
    /// linearizable read of every shard).
    async fn read_queue(&self, node: u64) -> (OpType, Value, Option<String>) {
        let mut pending = Vec::new();
        let mut completed = Vec::new();
        let mut cursor = String::new();
        for _ in 0..10_000 {
            let url = format!(
                "{}/v1/jobs?queue={QUEUE}&limit=1000&cursor={cursor}",
                self.base(node)
            );
            let v = match self.http.get(url).send().await {
                Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                    Ok(v) => v,
                    Err(e) => return (OpType::Fail, Value::Null, Some(err_text(&e))),
                },
                Ok(r) => return (OpType::Fail, Value::Null, Some(status_text(r).await)),
                Err(e) => return (OpType::Fail, Value::Null, Some(err_text(&e))),
            };
            for j in v["jobs"].as_array().into_iter().flatten() {
                let Some(id) = j["id"].as_str() else { continue };
                match j["state"].as_str() {
                    Some("succeeded") => completed.push(id.to_string()),
                    Some("queued" | "running") => pending.push(id.to_string()),
                    // Failed, cancelled or dead jobs are neither: the
                    // checker reports them as lost.
                    _ => {}
                }
            }
            match v["next_cursor"].as_str() {
                Some(c) if !c.is_empty() => cursor = c.to_string(),
                _ => {
                    return (
                        OpType::Ok,
                        json!({"pending": pending, "completed": completed}),
                        None,
                    )
                }
            }
        }
        (OpType::Fail, Value::Null, Some("too many pages".into()))
    }
}

pub(crate) async fn status_text(r: reqwest::Response) -> String {
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    format!("{status}: {body}")
}

/// A write's completion: 2xx ok; 4xx fail (refused before anything was
/// proposed); 503 `unavailable` fail (nothing proposed); a connection never
/// established fail; everything else (`outcome_unknown`, timeouts, cut
/// connections) info.
pub(crate) async fn write_outcome(
    r: reqwest::Result<reqwest::Response>,
    value: Value,
) -> (OpType, Value, Option<String>) {
    match r {
        Ok(r) if r.status().is_success() => (OpType::Ok, value, None),
        Ok(r) if r.status().is_client_error() => (OpType::Fail, value, Some(status_text(r).await)),
        // Orrery's 503s say whether anything was proposed: `unavailable`
        // and `not_initialized` mean nothing was; `outcome_unknown` that
        // it may have been.
        Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
            let text = status_text(r).await;
            let definite = ["\"code\":\"unavailable\"", "\"code\":\"not_initialized\""]
                .iter()
                .any(|c| text.contains(c));
            let kind = if definite { OpType::Fail } else { OpType::Info };
            (kind, value, Some(text))
        }
        Ok(r) => (OpType::Info, value, Some(status_text(r).await)),
        Err(e) if e.is_connect() => (OpType::Fail, value, Some(err_text(&e))),
        Err(e) => (OpType::Info, value, Some(err_text(&e))),
    }
}
