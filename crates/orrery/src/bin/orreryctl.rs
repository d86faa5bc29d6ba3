//! `orreryctl`: administer an Orrery cluster over its gRPC API.

use anyhow::{anyhow, bail, Result};
use clap::{Parser, Subcommand};
use orrery_client::{pb, Client, Consistency};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[path = "../ctl/auth.rs"]
mod auth;
#[path = "../ctl/backup.rs"]
mod backup;
#[path = "../ctl/data_sources.rs"]
mod data_sources;
#[path = "../ctl/datasets.rs"]
mod datasets;
#[path = "../ctl/jobs.rs"]
mod jobs;
#[path = "../ctl/policies.rs"]
mod policies;
#[path = "../ctl/policies_shadow.rs"]
mod policies_shadow;
#[path = "../ctl/vectors.rs"]
mod vectors;
#[path = "../ctl/workflows.rs"]
mod workflows;

#[derive(Parser)]
#[command(name = "orreryctl", version, about = "Administer an Orrery cluster")]
struct Cli {
    /// Any node's client address, or several separated by commas: the
    /// first that answers is used [default: 127.0.0.1:17001].
    #[arg(long, global = true, env = "ORRERY_ENDPOINT")]
    endpoint: Option<String>,
    /// The cluster's client addresses, comma-separated, tried in order
    /// (`cluster/compose-env.sh` prints them); --endpoint wins.
    #[arg(long, global = true, env = "ORRERY_ENDPOINTS")]
    endpoints: Option<String>,
    /// Bearer token (`cluster init` prints the root token; `auth tokens
    /// create` makes others).
    #[arg(long, global = true, env = "ORRERY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The cluster CA's certificate (ca.crt): TLS to the endpoint. Without
    /// it orreryctl speaks plain HTTP/2, for `--insecure` nodes only.
    #[arg(long, global = true, env = "ORRERY_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
    /// Print JSON instead of text (read commands).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Cluster bootstrap.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Certificates: a cluster CA and node certificates (no cluster needed).
    #[command(subcommand)]
    Certs(auth::CertsCmd),
    /// Tokens (admins).
    #[command(subcommand)]
    Auth(auth::AuthCmd),
    /// Backups of the whole cluster (admins): create, verify.
    #[command(subcommand)]
    Backup(backup::BackupCmd),
    /// Membership.
    #[command(subcommand)]
    Members(MembersCmd),
    /// Per-group Raft status: leader, term, commit/applied, replica lag.
    Status,
    /// Data shards.
    #[command(subcommand)]
    Shards(ShardsCmd),
    /// The key-value namespace.
    #[command(subcommand)]
    Kv(KvCmd),
    /// Job queues.
    #[command(subcommand)]
    Queues(jobs::QueuesCmd),
    /// Jobs: submit, list, get, cancel, logs.
    #[command(subcommand)]
    Jobs(jobs::JobsCmd),
    /// The cluster's GPUs.
    Gpus,
    #[command(flatten)]
    Vectors(vectors::VectorCmd),
    /// Policies: create, list, show, versions, runs.
    #[command(subcommand)]
    Policies(policies::PoliciesCmd),
    /// Policy runs.
    #[command(subcommand)]
    Runs(policies::RunsCmd),
    /// Data sources that policies look values up in.
    #[command(subcommand)]
    DataSources(data_sources::DataSourcesCmd),
    /// Workflows (DAGs of step jobs): start, get, cancel.
    #[command(subcommand)]
    Workflows(workflows::WorkflowsCmd),
    /// Datasets (catalogs of image items under --fs-root): create, list,
    /// get, items, scan, delete.
    #[command(subcommand)]
    Datasets(datasets::DatasetsCmd),
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Make the endpoint node the first voter of a new cluster.
    Init {
        #[arg(long, default_value_t = 8)]
        shards: u32,
    },
    /// The cluster version: the active one, what each node supports, and
    /// whether advancing is held. See docs/operations.md, "Upgrades".
    Version {
        /// Keep the active version while nodes are upgraded, so that a
        /// rollback to the previous build stays possible.
        #[arg(long, conflicts_with_all = ["release", "finalize"])]
        hold: bool,
        /// Release the hold: the version advances on its own once every
        /// node supports the next one.
        #[arg(long, conflicts_with = "finalize")]
        release: bool,
        /// Release the hold and advance now (every node must support the
        /// new version). No rollback to an older build after this.
        #[arg(long)]
        finalize: bool,
    },
    /// Rebalancing of replicas over the voters: shows whether it is paused
    /// and which shards move; --pause / --resume switch it cluster-wide;
    /// --max-moves / --max-per-node set its throttles (cluster version 9).
    Rebalance {
        #[arg(long, conflicts_with = "resume")]
        pause: bool,
        #[arg(long)]
        resume: bool,
        /// Replica moves in flight at most, cluster-wide (1..=64).
        #[arg(long)]
        max_moves: Option<u32>,
        /// Replica moves in flight at most that involve one node (1..=64).
        #[arg(long)]
        max_per_node: Option<u32>,
    },
}

#[derive(Subcommand)]
enum MembersCmd {
    /// Add a node: learner, catch up, voter, then shard replicas.
    Add {
        id: u64,
        /// The new node's client address.
        #[arg(long)]
        addr: String,
        /// The new node's peer address.
        #[arg(long)]
        peer_addr: String,
        /// Keep it a learner (no vote, no shard replicas).
        #[arg(long)]
        learner: bool,
        /// Seconds to wait for shard replicas to be placed and caught up (0: don't wait).
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    List,
    /// Remove a node; its shard replicas move to the other voters first.
    Remove {
        id: u64,
    },
    /// Promote a learner to voter.
    Promote {
        id: u64,
    },
}

#[derive(Subcommand)]
enum ShardsCmd {
    List,
}

#[derive(Subcommand)]
enum KvCmd {
    Put {
        key: String,
        value: String,
    },
    Get {
        key: String,
        /// linearizable (default) or stale.
        #[arg(long, default_value = "linearizable")]
        consistency: String,
    },
    Del {
        key: String,
    },
    /// Delete one key, or with --prefix every key that starts with it
    /// (needs cluster version 2).
    #[command(alias = "rm")]
    Delete {
        #[arg(required_unless_present = "prefix", conflicts_with = "prefix")]
        key: Option<String>,
        #[arg(long)]
        prefix: Option<String>,
    },
    List {
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn member_json(m: &pb::Member) -> Value {
    json!({"id": m.id, "addr": m.addr, "peer_addr": m.peer_addr, "state": m.state,
        "capacity": m.capacity, "shards": m.shards})
}

async fn status(c: &mut Client, as_json: bool) -> Result<()> {
    let s = c.cluster().status(pb::StatusRequest {}).await?.into_inner();
    if as_json {
        let groups: Vec<Value> = s
            .groups
            .iter()
            .map(|g| {
                json!({"group": g.group_id, "name": g.name, "leader": nz(g.leader), "term": g.term,
                       "commit_index": g.commit_index, "applied_index": g.applied_index,
                       "last_log_index": g.last_log_index, "reported_by": g.reported_by,
                       "replicas": g.replicas.iter().map(|r| json!({"node": r.node_id, "matched": r.matched, "lag": r.lag, "voter": r.voter})).collect::<Vec<_>>()})
            })
            .collect();
        let version = s.cluster_version.as_ref().map(version_json);
        print_json(
            &json!({"cluster_id": s.cluster_id, "node_id": s.node_id, "groups": groups, "unreachable": s.unreachable,
                    "cluster_version": version, "insecure": s.insecure}),
        );
        return Ok(());
    }
    println!("cluster {} (as seen from node {})", s.cluster_id, s.node_id);
    if s.insecure {
        println!(
            "WARNING: node {} runs with --insecure: no TLS, no authentication",
            s.node_id
        );
    }
    match &s.cluster_version {
        Some(v) => print_version(v),
        None => println!(
            "cluster version: unknown (node {} predates cluster versions)",
            s.node_id
        ),
    }
    if !s.unreachable.is_empty() {
        println!("unreachable nodes: {:?}", s.unreachable);
    }
    println!(
        "{:<12} {:>6} {:>6} {:>8} {:>8}  REPLICAS (node:matched/lag, * = voter)",
        "GROUP", "LEADER", "TERM", "COMMIT", "APPLIED"
    );
    for g in &s.groups {
        let reps: Vec<String> = g
            .replicas
            .iter()
            .map(|r| {
                format!(
                    "{}{}:{}/{}",
                    r.node_id,
                    if r.voter { "*" } else { "" },
                    r.matched,
                    r.lag
                )
            })
            .collect();
        let leader = if g.leader == 0 {
            "-".to_string()
        } else {
            g.leader.to_string()
        };
        println!(
            "{:<12} {:>6} {:>6} {:>8} {:>8}  {}",
            g.name,
            leader,
            g.term,
            g.commit_index,
            g.applied_index,
            reps.join(" ")
        );
    }
    Ok(())
}

fn version_json(v: &pb::ClusterVersion) -> Value {
    let nodes: Vec<Value> = v
        .nodes
        .iter()
        .map(|n| json!({"id": n.node_id, "supported": nz(n.supported.into()), "build": n.build}))
        .collect();
    json!({"active": v.active, "active_name": v.active_name, "held": v.held,
           "supported": v.supported, "nodes": nodes})
}

fn print_version(v: &pb::ClusterVersion) {
    let name = if v.active_name.is_empty() {
        String::new()
    } else {
        format!(" ({})", v.active_name)
    };
    println!(
        "cluster version {}{}{}",
        v.active,
        name,
        if v.held { ", held" } else { "" }
    );
    println!("{:<6} {:>8}  BUILD", "NODE", "SUPPORTS");
    for n in &v.nodes {
        let (sup, build) = match n.supported {
            0 => ("-".to_string(), "(did not answer)"),
            s if n.build.is_empty() => (s.to_string(), "(before cluster versions)"),
            s => (s.to_string(), n.build.as_str()),
        };
        println!("{:<6} {:>8}  {}", n.node_id, sup, build);
    }
    let newest = v.nodes.iter().map(|n| n.supported).max().unwrap_or(0);
    if newest > v.active {
        if v.held {
            println!("held: once every node is upgraded, run `orreryctl cluster version --finalize` (no rollback after that)");
        } else {
            println!("version {newest} is supported by some nodes: the cluster advances once every node supports it");
        }
    }
}

fn nz(v: u64) -> Value {
    if v == 0 {
        Value::Null
    } else {
        json!(v)
    }
}

/// Waits until every shard the placement leader gave `id` has it as a
/// caught-up voter, printing progress.
async fn wait_for_replicas(c: &mut Client, id: u64, wait: Duration) -> Result<()> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let shards = c.shards().await?;
        let status = c.cluster().status(pb::StatusRequest {}).await?.into_inner();
        let voters = shards
            .iter()
            .filter(|s| s.replicas.len() < 3 || s.replicas.contains(&id))
            .count();
        let ready = shards
            .iter()
            .filter(|s| {
                s.replicas.contains(&id)
                    && status.groups.iter().any(|g| {
                        g.group_id == s.group_id
                            && g.replicas
                                .iter()
                                .any(|r| r.node_id == id && r.voter && r.lag == 0)
                    })
            })
            .count();
        let full = shards
            .iter()
            .filter(|s| s.replicas.len() >= 3 || s.replicas.contains(&id))
            .count()
            == shards.len();
        let line = format!("shard replicas on node {id}: {ready} ready of {voters} planned");
        if line != last {
            println!("{line}");
            last = line;
        }
        if full && ready == shards.iter().filter(|s| s.replicas.contains(&id)).count() {
            println!("node {id} holds {ready} shard replicas, all caught up");
            return Ok(());
        }
        if start.elapsed() > wait {
            bail!("timed out after {wait:?} waiting for shard replicas on node {id}; check `orreryctl status`");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn run(cli: Cli) -> Result<()> {
    let cli = match cli.cmd {
        Cmd::Certs(cmd) => return auth::certs(cmd, cli.json),
        Cmd::Backup(cmd) => match backup::offline(&cmd, cli.json) {
            Some(r) => return r,
            None => Cli {
                cmd: Cmd::Backup(cmd),
                ..cli
            },
        },
        cmd => Cli { cmd, ..cli },
    };
    let opts = orrery_client::Options {
        ca_cert: cli.ca_cert.clone(),
        token: cli.token.clone(),
    };
    let list = cli
        .endpoint
        .as_deref()
        .or(cli.endpoints.as_deref())
        .unwrap_or("127.0.0.1:17001");
    if let Cmd::Workflows(cmd) = cli.cmd {
        let rest = workflows::Rest {
            endpoints: orrery_client::split_endpoints(list),
            ca_cert: cli.ca_cert,
            token: cli.token,
        };
        return workflows::run(&rest, cmd, cli.json).await;
    }
    if let Cmd::Datasets(cmd) = cli.cmd {
        let rest = workflows::Rest {
            endpoints: orrery_client::split_endpoints(list),
            ca_cert: cli.ca_cert,
            token: cli.token,
        };
        return datasets::run(&rest, cmd, cli.json).await;
    }
    let mut c = Client::connect_any(&orrery_client::split_endpoints(list), &opts).await?;
    match cli.cmd {
        Cmd::Certs(cmd) => auth::certs(cmd, cli.json)?,
        Cmd::Auth(cmd) => auth::auth(&c, cmd, cli.json).await?,
        Cmd::Backup(cmd) => backup::run(&mut c, cmd, cli.json).await?,
        Cmd::Vectors(v) => vectors::run(&mut c, v, cli.json).await?,
        Cmd::Cluster(ClusterCmd::Init { shards }) => {
            let r = c
                .cluster()
                .init(pb::InitRequest { shards })
                .await?
                .into_inner();
            let root = (!r.root_token.is_empty()).then_some(&r.root_token);
            if cli.json {
                print_json(
                    &json!({"cluster_id": r.cluster_id, "node_id": r.node_id, "shards": r.shards, "root_token": root}),
                );
            } else {
                println!(
                    "initialised cluster {} with {} shards; node {} is the first voter",
                    r.cluster_id, r.shards, r.node_id
                );
                if let Some(t) = root {
                    println!("root token (an admin token; shown only now, keep it safe):");
                    println!("{t}");
                }
            }
        }
        Cmd::Cluster(ClusterCmd::Version {
            hold,
            release,
            finalize,
        }) => {
            use pb::set_version_request::Action;
            let v = if hold {
                c.set_cluster_version(Action::Hold(true)).await?
            } else if release {
                c.set_cluster_version(Action::Hold(false)).await?
            } else if finalize {
                c.set_cluster_version(Action::Finalize(true)).await?
            } else {
                c.cluster_version().await?
            };
            if cli.json {
                print_json(&version_json(&v));
            } else {
                print_version(&v);
            }
        }
        Cmd::Cluster(ClusterCmd::Rebalance {
            pause,
            resume,
            max_moves,
            max_per_node,
        }) => {
            let paused = match (pause, resume) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let r = if paused.is_none() && max_moves.is_none() && max_per_node.is_none() {
                c.rebalance().await?
            } else {
                c.change_rebalance(paused, max_moves, max_per_node).await?
            };
            let view = json!({"paused": r.paused, "balanced": r.balanced, "moving": r.moving,
                "max_moves": r.max_moves, "max_per_node": r.max_per_node, "limits_set": r.limits_set});
            if cli.json {
                print_json(&view);
            } else {
                println!(
                    "rebalancing {}; replicas {}; moves at most {} in flight, {} per node{}; shards moving: {}",
                    if r.paused { "PAUSED" } else { "on" },
                    if r.balanced {
                        "balanced"
                    } else {
                        "not balanced yet"
                    },
                    r.max_moves,
                    r.max_per_node,
                    if r.limits_set { "" } else { " (node flags)" },
                    if r.moving.is_empty() {
                        "none".to_string()
                    } else {
                        format!("{:?}", r.moving)
                    }
                );
            }
        }
        Cmd::Members(MembersCmd::Add {
            id,
            addr,
            peer_addr,
            learner,
            wait,
        }) => {
            println!("adding node {id} ({addr}, peer {peer_addr})...");
            let r = c
                .cluster()
                .add_member(pb::AddMemberRequest {
                    id,
                    addr,
                    peer_addr,
                    learner_only: learner,
                })
                .await?
                .into_inner();
            for p in &r.progress {
                println!("  {p}");
            }
            if !learner && wait > 0 {
                wait_for_replicas(&mut c, id, Duration::from_secs(wait)).await?;
            }
        }
        Cmd::Members(MembersCmd::List) => {
            let r = c
                .cluster()
                .list_members(pb::ListMembersRequest {})
                .await?
                .into_inner();
            if cli.json {
                print_json(
                    &json!({"cluster_id": r.cluster_id, "placement_leader": nz(r.placement_leader),
                    "members": r.members.iter().map(member_json).collect::<Vec<_>>()}),
                );
            } else {
                println!(
                    "cluster {}; placement leader {}",
                    r.cluster_id, r.placement_leader
                );
                println!(
                    "{:<6} {:<8} {:<22} {:<22} {:<4} SHARDS",
                    "ID", "STATE", "ADDR", "PEER ADDR", "CAP"
                );
                for m in &r.members {
                    println!(
                        "{:<6} {:<8} {:<22} {:<22} {:<4} {:?}",
                        m.id,
                        m.state,
                        m.addr,
                        m.peer_addr,
                        m.capacity.max(1),
                        m.shards
                    );
                }
            }
        }
        Cmd::Members(MembersCmd::Remove { id }) => {
            c.cluster()
                .remove_member(pb::RemoveMemberRequest { id })
                .await?;
            println!("node {id} removed; its id is retired and cannot rejoin");
        }
        Cmd::Members(MembersCmd::Promote { id }) => {
            c.cluster()
                .promote_member(pb::PromoteMemberRequest { id })
                .await?;
            println!("node {id} is now a voter");
        }
        Cmd::Status => status(&mut c, cli.json).await?,
        Cmd::Queues(q) => jobs::queues(&c, q, cli.json).await?,
        Cmd::Jobs(j) => jobs::jobs(&c, j, cli.json).await?,
        Cmd::Gpus => jobs::gpus(&c, cli.json).await?,
        Cmd::Policies(cmd) => policies::policies(&mut c, cmd, cli.json).await?,
        Cmd::Runs(cmd) => policies::runs(&mut c, cmd, cli.json).await?,
        Cmd::DataSources(cmd) => data_sources::data_sources(&mut c, cmd, cli.json).await?,
        Cmd::Workflows(_) => bail!("workflows are answered over REST (above)"),
        Cmd::Datasets(_) => bail!("datasets are answered over REST (above)"),
        Cmd::Shards(ShardsCmd::List) => {
            let r = c
                .cluster()
                .list_shards(pb::ListShardsRequest {})
                .await?
                .into_inner();
            // Shards whose replicas are moving (empty from builds before
            // rebalancing, which do not answer GetRebalance).
            let moving = c.rebalance().await.map(|r| r.moving).unwrap_or_default();
            if cli.json {
                print_json(
                    &json!({"shards": r.shards.iter().map(|s| json!({"id": s.id, "group": s.group_id, "replicas": s.replicas, "epoch": s.epoch, "leader": nz(s.leader), "moving": moving.contains(&s.id)})).collect::<Vec<_>>()}),
                );
            } else {
                println!(
                    "{:<6} {:<6} {:<7} {:<6} REPLICAS",
                    "SHARD", "GROUP", "LEADER", "EPOCH"
                );
                for s in &r.shards {
                    let leader = if s.leader == 0 {
                        "-".to_string()
                    } else {
                        s.leader.to_string()
                    };
                    let note = if moving.contains(&s.id) {
                        "  (moving)"
                    } else {
                        ""
                    };
                    println!(
                        "{:<6} {:<6} {:<7} {:<6} {:?}{note}",
                        s.id, s.group_id, leader, s.epoch, s.replicas
                    );
                }
            }
        }
        Cmd::Kv(KvCmd::Put { key, value }) => {
            let rev = c.put(key, value).await?;
            if cli.json {
                print_json(&json!({"revision": rev}));
            } else {
                println!("OK revision {rev}");
            }
        }
        Cmd::Kv(KvCmd::Get { key, consistency }) => {
            let cons = match consistency.as_str() {
                "linearizable" => Consistency::Linearizable,
                "stale" => Consistency::Stale,
                other => bail!("--consistency must be linearizable or stale, got {other:?}"),
            };
            match c.get_with(key.clone(), cons).await? {
                None => return Err(anyhow!("key {key:?} not found")),
                Some(v) if cli.json => print_json(
                    &json!({"key": key, "value": String::from_utf8_lossy(&v.value), "revision": v.revision}),
                ),
                Some(v) => println!("{}", String::from_utf8_lossy(&v.value)),
            }
        }
        Cmd::Kv(KvCmd::Delete {
            prefix: Some(prefix),
            ..
        }) => {
            let n = c.delete_prefix(prefix.clone()).await?;
            if cli.json {
                print_json(&json!({"deleted": n}));
            } else {
                println!("deleted {n} keys with prefix {prefix:?}");
            }
        }
        Cmd::Kv(KvCmd::Del { key })
        | Cmd::Kv(KvCmd::Delete {
            key: Some(key),
            prefix: None,
        }) => {
            let existed = c.delete(key.clone()).await?;
            if cli.json {
                print_json(&json!({"deleted": existed}));
            } else if existed {
                println!("deleted {key}");
            } else {
                println!("{key} did not exist");
            }
        }
        Cmd::Kv(KvCmd::Delete {
            key: None,
            prefix: None,
        }) => bail!("give a key or --prefix"),
        Cmd::Kv(KvCmd::List { prefix, limit }) => {
            let items = c.list(prefix, limit, Consistency::Linearizable).await?;
            if cli.json {
                print_json(
                    &json!({"items": items.iter().map(|i| json!({"key": String::from_utf8_lossy(&i.key), "value": String::from_utf8_lossy(&i.value), "revision": i.revision})).collect::<Vec<_>>()}),
                );
            } else {
                for i in &items {
                    println!(
                        "{}\t{}",
                        String::from_utf8_lossy(&i.key),
                        String::from_utf8_lossy(&i.value)
                    );
                }
            }
        }
    }
    Ok(())
}

fn main() {
    // Behave like other CLI tools in a pipeline (`orreryctl ... | head`):
    // end quietly on a closed pipe instead of panicking in println!.
    // SAFETY: called before any other thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
