//! `orreryctl queues|jobs|gpus`: job queues over the gRPC API.

use anyhow::{bail, Result};
use clap::Subcommand;
use orrery_client::{pb, Client};
use serde_json::Value;
use std::io::Write;

#[derive(Subcommand)]
pub enum QueuesCmd {
    /// Create a queue.
    Create {
        name: String,
        /// Partitions [default: one per shard].
        #[arg(long)]
        partitions: Option<u32>,
        /// Lease of a claimed job in seconds [default: 30].
        #[arg(long)]
        lease_s: Option<u32>,
        /// Attempts before a job is dead [default: 3].
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Retry backoff: first delay in ms [default: 1000].
        #[arg(long)]
        backoff_initial_ms: Option<u64>,
        /// Retry backoff multiplier [default: 2.0].
        #[arg(long)]
        backoff_multiplier: Option<f64>,
        /// Retry backoff cap in ms [default: 60000].
        #[arg(long)]
        backoff_max_ms: Option<u64>,
        /// Most running jobs at once over all partitions.
        #[arg(long)]
        concurrency_limit: Option<u32>,
    },
    List,
    /// A queue with its counts per state.
    Show {
        name: String,
    },
}

#[derive(Subcommand)]
pub enum JobsCmd {
    /// Enqueue a job; prints it.
    Submit {
        #[arg(long)]
        queue: String,
        #[arg(long)]
        kind: String,
        /// Params as JSON.
        #[arg(long, default_value = "{}")]
        params: String,
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        priority: i32,
        /// Run no earlier than this many ms from now.
        #[arg(long)]
        delay_ms: Option<u64>,
        #[arg(long, default_value_t = 0)]
        gpus: u32,
        #[arg(long, default_value_t = 0)]
        gpu_memory_mb: u64,
        #[arg(long, default_value_t = 0)]
        cpus: u32,
        #[arg(long)]
        dedupe_key: Option<String>,
    },
    List {
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        cursor: Option<String>,
    },
    Get {
        id: String,
    },
    Cancel {
        id: String,
    },
    /// A run's logs (the last one unless --attempt).
    Logs {
        id: String,
        #[arg(long)]
        attempt: Option<u64>,
        /// Keep printing until the run ends.
        #[arg(long)]
        follow: bool,
    },
}

fn job_value(j: &pb::Job) -> Value {
    serde_json::from_str(&j.json).unwrap_or(Value::Null)
}

fn pretty(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn job_line(j: &pb::Job) {
    println!(
        "{}  {:<10} {:<12} {:<16} attempts={} prio={}",
        j.id, j.state, j.queue, j.kind, j.attempts, j.priority
    );
}

pub async fn queues(c: &Client, cmd: QueuesCmd, as_json: bool) -> Result<()> {
    match cmd {
        QueuesCmd::Create {
            name,
            partitions,
            lease_s,
            max_attempts,
            backoff_initial_ms,
            backoff_multiplier,
            backoff_max_ms,
            concurrency_limit,
        } => {
            let q = c
                .create_queue(pb::CreateQueueRequest {
                    name,
                    partitions,
                    lease_s,
                    max_attempts,
                    backoff_initial_ms,
                    backoff_multiplier,
                    backoff_max_ms,
                    concurrency_limit,
                })
                .await?;
            if as_json {
                pretty(&serde_json::from_str(&q.json)?);
            } else {
                println!(
                    "queue {} created: {} partitions, lease {} s, {} attempts",
                    q.name, q.partitions, q.lease_s, q.max_attempts
                );
            }
        }
        QueuesCmd::List => {
            let qs = c.list_queues().await?;
            if as_json {
                let v: Vec<Value> = qs
                    .iter()
                    .map(|q| serde_json::from_str(&q.json).unwrap_or(Value::Null))
                    .collect();
                pretty(&Value::Array(v));
            } else {
                println!(
                    "{:<24} {:>10} {:>8} {:>9}",
                    "NAME", "PARTITIONS", "LEASE_S", "ATTEMPTS"
                );
                for q in qs {
                    println!(
                        "{:<24} {:>10} {:>8} {:>9}",
                        q.name, q.partitions, q.lease_s, q.max_attempts
                    );
                }
            }
        }
        QueuesCmd::Show { name } => {
            let q = c.get_queue(&name).await?;
            pretty(&serde_json::from_str(&q.json)?);
        }
    }
    Ok(())
}

pub async fn jobs(c: &Client, cmd: JobsCmd, as_json: bool) -> Result<()> {
    match cmd {
        JobsCmd::Submit {
            queue,
            kind,
            params,
            priority,
            delay_ms,
            gpus,
            gpu_memory_mb,
            cpus,
            dedupe_key,
        } => {
            if serde_json::from_str::<Value>(&params).is_err() {
                bail!("--params must be valid JSON, got {params:?}");
            }
            let (j, created) = c
                .submit_job(pb::SubmitRequest {
                    queue,
                    kind,
                    params_json: params,
                    priority,
                    run_at_ms: None,
                    delay_ms,
                    gpus,
                    gpu_memory_mb,
                    cpus,
                    shared_gpu: false,
                    dedupe_key,
                    submitted_by: std::env::var("USER").ok(),
                })
                .await?;
            if as_json {
                pretty(&job_value(&j));
            } else {
                println!(
                    "{} {}",
                    if created {
                        "submitted"
                    } else {
                        "existing (dedupe)"
                    },
                    j.id
                );
            }
        }
        JobsCmd::List {
            queue,
            state,
            limit,
            cursor,
        } => {
            let r = c
                .list_jobs(pb::ListJobsRequest {
                    queue,
                    state,
                    limit,
                    cursor,
                })
                .await?;
            if as_json {
                pretty(&serde_json::json!({
                    "jobs": r.jobs.iter().map(job_value).collect::<Vec<_>>(),
                    "next_cursor": r.next_cursor,
                }));
            } else {
                for j in &r.jobs {
                    job_line(j);
                }
                if let Some(n) = r.next_cursor {
                    println!("more: --cursor {n}");
                }
            }
        }
        JobsCmd::Get { id } => pretty(&job_value(&c.get_job(&id).await?)),
        JobsCmd::Cancel { id } => {
            let j = c.cancel_job(&id).await?;
            if as_json {
                pretty(&job_value(&j));
            } else {
                println!("{} {}", j.id, j.state);
            }
        }
        JobsCmd::Logs {
            id,
            attempt,
            follow,
        } => {
            let mut s = c
                .jobs()
                .logs(pb::LogsRequest {
                    id,
                    attempt,
                    follow,
                })
                .await?
                .into_inner();
            let mut out = std::io::stdout();
            while let Some(chunk) = s.message().await? {
                out.write_all(&chunk.data)?;
                if follow && !chunk.data.is_empty() && !chunk.data.ends_with(b"\n") {
                    out.write_all(b"\n")?;
                }
                out.flush()?;
                if chunk.end && follow {
                    break;
                }
            }
        }
    }
    Ok(())
}

pub async fn gpus(c: &Client, as_json: bool) -> Result<()> {
    let v: Value = serde_json::from_str(&c.gpus().await?)?;
    if as_json {
        pretty(&v);
        return Ok(());
    }
    let gpus = v["gpus"].as_array().cloned().unwrap_or_default();
    if gpus.is_empty() {
        println!("no GPUs reported by any node");
        return Ok(());
    }
    println!(
        "{:>4} {:<42} {:<24} {:>12} {:>5} {:>5}",
        "NODE", "UUID", "NAME", "MEM USED/MiB", "UTIL", "TEMP"
    );
    for g in gpus {
        println!(
            "{:>4} {:<42} {:<24} {:>5}/{:<6} {:>4}% {:>4}C",
            g["node"],
            g["uuid"].as_str().unwrap_or(""),
            g["name"].as_str().unwrap_or(""),
            g["memory_used_mb"],
            g["memory_total_mb"],
            g["utilization_pct"],
            g["temperature_c"]
        );
    }
    Ok(())
}
