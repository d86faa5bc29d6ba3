//! `orreryctl policies ...` and `orreryctl runs ...`.

use anyhow::{Context, Result};
use clap::Subcommand;
use orrery_client::{pb, Client};
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum PoliciesCmd {
    /// Create a policy.
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List policies.
    List,
    /// A policy (by id or name) with its versions.
    Show { id: String },
    /// Change a policy's description and/or its allocation of traffic.
    Update {
        id: String,
        #[arg(long)]
        description: Option<String>,
        /// VERSION=WEIGHT pairs, comma-separated, e.g. `1=90,2=10`.
        #[arg(long)]
        allocation: Option<String>,
    },
    /// Delete a policy, its versions and its runs.
    Delete { id: String },
    /// Versions of a policy.
    #[command(subcommand)]
    Version(VersionCmd),
    /// Run a policy (synchronously unless --async) and print the run.
    Run {
        id: String,
        /// The input, a JSON object.
        #[arg(long)]
        input: String,
        /// Use this version instead of the allocation's choice.
        #[arg(long)]
        version: Option<u32>,
        /// Key for the allocation's stable choice of version.
        #[arg(long)]
        run_key: Option<String>,
        /// Record the run and return at once; a `policy.run` job evaluates
        /// it (see `orreryctl runs get`).
        #[arg(long = "async")]
        run_async: bool,
    },
    /// The shadow (challenger) version: evaluated next to the live one on
    /// every recorded run, without side effects, and compared with it.
    #[command(subcommand)]
    Shadow(crate::policies_shadow::ShadowCmd),
    /// How long the policy's runs are kept.
    #[command(subcommand)]
    Retention(crate::policies_shadow::RetentionCmd),
    /// Evaluate many inputs at once (not recorded as runs); prints one
    /// result per input, in input order.
    RunBatch {
        id: String,
        /// A JSON array of inputs, or one JSON input per line; `-` reads stdin.
        #[arg(long)]
        inputs: std::path::PathBuf,
        #[arg(long)]
        version: Option<u32>,
    },
}

#[derive(Subcommand)]
pub enum VersionCmd {
    /// Validate a graph file and store it as the policy's next version.
    Create {
        id: String,
        /// JSON file: {"nodes": [...], "edges": [...]} (or {"graph": {...}}).
        #[arg(long)]
        file: std::path::PathBuf,
        /// Keep the current allocation (by default the new version takes all traffic).
        #[arg(long)]
        inactive: bool,
    },
    /// A policy's versions.
    List { id: String },
    /// One version, with its graph.
    Get { id: String, version: u32 },
    /// Archive a version: still readable, never run (refused while the
    /// allocation gives it weight).
    Archive { id: String, version: u32 },
}

#[derive(Subcommand)]
pub enum RunsCmd {
    /// Runs, newest first.
    List {
        /// Policy id or name.
        #[arg(long)]
        policy: Option<String>,
        #[arg(long)]
        version: Option<u32>,
        /// running, succeeded or failed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// The next_cursor of the previous page.
        #[arg(long)]
        cursor: Option<String>,
        /// Runs created at or after this time (ms since the Unix epoch).
        #[arg(long)]
        since: Option<u64>,
        /// Runs created before this time (ms since the Unix epoch).
        #[arg(long)]
        until: Option<u64>,
        /// Runs a terminate node ended with this status (e.g. approved).
        #[arg(long)]
        outcome: Option<String>,
    },
    /// One run, with its trace.
    Get { id: String },
}

/// `1=90,2=10` → [(1, 90), (2, 10)].
fn parse_allocation(s: &str) -> Result<Vec<(u32, u64)>> {
    s.split(',')
        .map(|pair| {
            let (v, w) = pair
                .split_once('=')
                .with_context(|| format!("--allocation: {pair:?} is not VERSION=WEIGHT"))?;
            let v = v
                .trim()
                .parse()
                .with_context(|| format!("--allocation: bad version {v:?}"))?;
            let w = w
                .trim()
                .parse()
                .with_context(|| format!("--allocation: bad weight {w:?}"))?;
            Ok((v, w))
        })
        .collect()
}

/// A JSON array of inputs, or one JSON document per line.
fn read_inputs(path: &std::path::Path) -> Result<Vec<String>> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&text) {
        return Ok(items.iter().map(Value::to_string).collect());
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<Value>(l)
                .map(|v| v.to_string())
                .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))
        })
        .collect()
}

fn parse(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or(Value::String(s.to_string()))
}

pub(crate) fn policy_json(p: &pb::Policy) -> Value {
    json!({"id": p.id, "name": p.name, "description": p.description, "created": p.created, "updated": p.updated,
           "allocation": p.allocation.iter().map(|w| json!({"version": w.version, "weight": w.weight})).collect::<Vec<_>>(),
           "latest_version": p.latest_version, "shadow_version": p.shadow_version,
           "run_retention_ms": p.run_retention_ms})
}

fn version_json(v: &pb::PolicyVersion) -> Value {
    json!({"policy_id": v.policy_id, "version": v.version, "graph": parse(&v.graph_json), "created_by": v.created_by,
           "created": v.created, "archived": v.archived})
}

fn run_json(r: &pb::PolicyRun) -> Value {
    let shadow = r.shadow.as_ref().map(|s| {
        json!({"version": s.version, "output": s.output_json.as_deref().map(parse), "error": s.error,
               "would_enqueue": s.would_enqueue})
    });
    let termination = r
        .termination
        .as_ref()
        .map(|t| json!({"status": t.status, "reason": t.reason}));
    json!({"id": r.id, "policy_id": r.policy_id, "version": r.version, "status": r.status, "run_key": r.run_key,
           "input": parse(&r.input_json), "output": r.output_json.as_deref().map(parse),
           "trace": parse(&r.trace_json), "error": r.error, "created": r.created, "finished": r.finished,
           "shadow": shadow, "termination": termination})
}

pub(crate) fn pretty(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn policies(c: &mut Client, cmd: PoliciesCmd, as_json: bool) -> Result<()> {
    match cmd {
        PoliciesCmd::Create { name, description } => {
            let p = c.policy_create(&name, &description).await?;
            if as_json {
                pretty(&policy_json(&p));
            } else {
                println!("created policy {} ({})", p.name, p.id);
            }
        }
        PoliciesCmd::List => {
            let ps = c.policy_list().await?;
            if as_json {
                pretty(&json!({"policies": ps.iter().map(policy_json).collect::<Vec<_>>()}));
            } else {
                println!("{:<22} {:<24} {:<8} ALLOCATION", "ID", "NAME", "LATEST");
                for p in &ps {
                    let alloc: Vec<String> = p
                        .allocation
                        .iter()
                        .map(|w| format!("v{}:{}", w.version, w.weight))
                        .collect();
                    println!(
                        "{:<22} {:<24} {:<8} {}",
                        p.id,
                        p.name,
                        p.latest_version,
                        alloc.join(",")
                    );
                }
            }
        }
        PoliciesCmd::Show { id } => {
            let p = c.policy_get(&id).await?;
            let vs = c.policy_versions(&p.id).await?;
            let mut v = policy_json(&p);
            v["versions"] = json!(vs.iter().map(version_json).collect::<Vec<_>>());
            pretty(&v);
        }
        PoliciesCmd::Update {
            id,
            description,
            allocation,
        } => {
            let allocation = allocation.as_deref().map(parse_allocation).transpose()?;
            if description.is_none() && allocation.is_none() {
                anyhow::bail!("nothing to change: give --description and/or --allocation");
            }
            let p = c.policy_update(&id, description, allocation).await?;
            pretty(&policy_json(&p));
        }
        PoliciesCmd::Shadow(cmd) => crate::policies_shadow::shadow(c, cmd, as_json).await?,
        PoliciesCmd::Retention(cmd) => crate::policies_shadow::retention(c, cmd).await?,
        PoliciesCmd::Delete { id } => {
            c.policy_delete(&id).await?;
            println!("deleted policy {id}");
        }
        PoliciesCmd::RunBatch {
            id,
            inputs,
            version,
        } => {
            let inputs = read_inputs(&inputs)?;
            let r = c.policy_run_batch(&id, inputs, version).await?;
            let results: Vec<Value> = r
                .results
                .iter()
                .map(|b| {
                    json!({"status": b.status, "output": b.output_json.as_deref().map(parse),
                           "error": b.error})
                })
                .collect();
            pretty(&json!({"version": r.version, "results": results}));
        }
        PoliciesCmd::Version(VersionCmd::List { id }) => {
            let vs = c.policy_versions(&id).await?;
            if as_json {
                pretty(&json!({"versions": vs.iter().map(version_json).collect::<Vec<_>>()}));
            } else {
                println!("{:<8} {:<9} {:<14} CREATED", "VERSION", "ARCHIVED", "BY");
                for v in &vs {
                    println!(
                        "{:<8} {:<9} {:<14} {}",
                        v.version, v.archived, v.created_by, v.created
                    );
                }
            }
        }
        PoliciesCmd::Version(VersionCmd::Get { id, version }) => {
            let p = c.policy_get(&id).await?;
            pretty(&version_json(&c.policy_version(&p.id, version).await?));
        }
        PoliciesCmd::Version(VersionCmd::Archive { id, version }) => {
            let v = c.policy_version_archive(&id, version).await?;
            if as_json {
                pretty(&version_json(&v));
            } else {
                println!("archived version {} of policy {}", v.version, v.policy_id);
            }
        }
        PoliciesCmd::Version(VersionCmd::Create { id, file, inactive }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let doc: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let graph = doc.get("graph").cloned().unwrap_or(doc);
            let v = c
                .policy_version_create(&id, &graph.to_string(), inactive)
                .await?;
            if as_json {
                pretty(&version_json(&v));
            } else {
                println!("created version {} of policy {}", v.version, v.policy_id);
            }
        }
        PoliciesCmd::Run {
            id,
            input,
            version,
            run_key,
            run_async,
        } => {
            serde_json::from_str::<Value>(&input).context("--input is not JSON")?;
            let r = if run_async {
                c.policy_run_async(&id, &input, version, run_key).await?
            } else {
                c.policy_run(&id, &input, version, run_key).await?
            };
            pretty(&run_json(&r));
        }
    }
    Ok(())
}

pub async fn runs(c: &mut Client, cmd: RunsCmd, as_json: bool) -> Result<()> {
    match cmd {
        RunsCmd::List {
            policy,
            version,
            status,
            limit,
            cursor,
            since,
            until,
            outcome,
        } => {
            let r = c
                .runs_list(pb::ListPolicyRunsRequest {
                    policy,
                    version,
                    status,
                    limit,
                    cursor,
                    since,
                    until,
                    outcome,
                })
                .await?;
            if as_json {
                pretty(
                    &json!({"runs": r.runs.iter().map(run_json).collect::<Vec<_>>(), "next_cursor": r.next_cursor}),
                );
            } else {
                println!(
                    "{:<30} {:<22} {:<8} {:<10} OUTPUT",
                    "RUN", "POLICY", "VERSION", "STATUS"
                );
                for run in &r.runs {
                    let out = run
                        .output_json
                        .clone()
                        .or(run.error.clone())
                        .unwrap_or_default();
                    println!(
                        "{:<30} {:<22} {:<8} {:<10} {}",
                        run.id, run.policy_id, run.version, run.status, out
                    );
                }
                if let Some(n) = r.next_cursor {
                    println!("(more: --cursor {n})");
                }
            }
        }
        RunsCmd::Get { id } => pretty(&run_json(&c.run_get(&id).await?)),
    }
    Ok(())
}
