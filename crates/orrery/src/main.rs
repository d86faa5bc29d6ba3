//! `orrery`: the Orrery node.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use orrery_server::service::policies::{HttpAllowlist, PolicyConfig};
use orrery_server::{GpuSelection, NodeConfig, RaftSettings};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

mod healthcheck;
mod restore_cmd;

#[derive(Parser)]
#[command(
    name = "orrery",
    version,
    about = "Orrery: a Raft-replicated database node"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node.
    Serve(Box<ServeArgs>),
    /// Exit 0 when the local node is ready (`GET /readyz` answers 200): the
    /// container image's HEALTHCHECK.
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Prepare this node's data directory of a new cluster from a backup
    /// (offline; run it for every node, then start them).
    Restore(restore_cmd::RestoreArgs),
}

#[derive(Clone, Copy, ValueEnum, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Every option can also come from a TOML file (`--config`, same names with
/// underscores) or an `ORRERY_*` environment variable; flags and variables
/// win over the file.
#[derive(clap::Args, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "ORRERY_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// This node's id: a positive integer, unique and never reused in the cluster.
    #[arg(long, env = "ORRERY_ID")]
    id: Option<u64>,
    /// Address for clients: REST and the public gRPC API [default: 127.0.0.1:17001].
    #[arg(long, env = "ORRERY_LISTEN")]
    listen: Option<String>,
    /// Address for peers: Raft and request forwarding [default: 127.0.0.1:17101].
    #[arg(long, env = "ORRERY_PEER_LISTEN")]
    peer_listen: Option<String>,
    /// Client address advertised to others, if it differs from --listen.
    #[arg(long, env = "ORRERY_ADVERTISE")]
    advertise: Option<String>,
    /// Peer address advertised to others, if it differs from --peer-listen.
    #[arg(long, env = "ORRERY_PEER_ADVERTISE")]
    peer_advertise: Option<String>,
    /// Source IP of outgoing peer connections [default: chosen by the kernel].
    /// Set it when several nodes share a host and firewall rules must tell
    /// them apart.
    #[arg(long, env = "ORRERY_PEER_SOURCE")]
    peer_source: Option<std::net::IpAddr>,
    /// Data directory [default: ./orrery-data/n<ID>].
    #[arg(long, env = "ORRERY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Ask this node (client address) to add us to its cluster.
    #[arg(long, env = "ORRERY_JOIN")]
    join: Option<String>,
    /// Form a cluster of these nodes by itself: `ID@HOST,…` (each listens
    /// on this node's ports) or `ID@CLIENT_ADDR/PEER_ADDR,…`. The lowest id
    /// creates the cluster once every listed node answers and none belongs
    /// to a cluster, then adds the others. Give every node the same list.
    #[arg(long, env = "ORRERY_INITIAL_MEMBERS")]
    initial_members: Option<String>,
    /// Shards of a cluster formed by --initial-members [default: 8].
    #[arg(long, env = "ORRERY_INITIAL_SHARDS")]
    initial_shards: Option<u32>,
    /// Where the node that forms a cluster (--initial-members) writes its
    /// root token, readable by this user only [default: DATA_DIR/root.token].
    #[arg(long, env = "ORRERY_ROOT_TOKEN_FILE")]
    root_token_file: Option<PathBuf>,
    /// Log format [default: text]; filter with RUST_LOG.
    #[arg(long, env = "ORRERY_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Raft heartbeat interval in ms [default: 150].
    #[arg(long, env = "ORRERY_HEARTBEAT_MS")]
    heartbeat_ms: Option<u64>,
    /// Minimum election timeout in ms [default: 800]; the maximum is twice this.
    #[arg(long, env = "ORRERY_ELECTION_TIMEOUT_MS")]
    election_timeout_ms: Option<u64>,
    /// How long in ms a leader serves linearizable reads after a quorum
    /// confirmed it, without another heartbeat round [default: half the
    /// election timeout]; 0 turns leader leases off (docs/architecture.md,
    /// "Reads"). Must be below --election-timeout-ms.
    #[arg(long, env = "ORRERY_READ_LEASE_MS")]
    read_lease_ms: Option<u64>,
    /// Snapshot (and compact the log) every this many entries [default: 10000].
    #[arg(long, env = "ORRERY_SNAPSHOT_LOGS")]
    snapshot_logs: Option<u64>,
    /// Entries kept below a snapshot for lagging followers [default: 1000].
    #[arg(long, env = "ORRERY_KEEP_LOGS")]
    keep_logs: Option<u64>,
    /// Largest key in bytes [default: 4096].
    #[arg(long, env = "ORRERY_MAX_KEY_BYTES")]
    max_key_bytes: Option<usize>,
    /// Largest value in bytes [default: 16777216].
    #[arg(long, env = "ORRERY_MAX_VALUE_BYTES")]
    max_value_bytes: Option<usize>,
    /// Time a request may wait for a leader or quorum before 503, in ms [default: 5000].
    #[arg(long, env = "ORRERY_REQUEST_TIMEOUT_MS")]
    request_timeout_ms: Option<u64>,
    /// Job worker slots of this node's execution engine; 0 runs no engine
    /// [default: the number of cores].
    #[arg(long, env = "ORRERY_WORKERS")]
    workers: Option<usize>,
    /// Root directory the built-in fs.* and image.* job kinds are confined
    /// to [default: none, and those kinds are refused on this node].
    #[arg(long, env = "ORRERY_FS_ROOT")]
    fs_root: Option<PathBuf>,
    /// Run `command` jobs (arbitrary processes) on this node [default: false].
    #[arg(long, env = "ORRERY_ALLOW_COMMAND_JOBS", num_args = 0..=1, default_missing_value = "true")]
    allow_command_jobs: Option<bool>,
    /// The user `command` jobs run as when the node runs as root; as root
    /// without it they are refused (never run as root). Ignored when the
    /// node is not root [default: none].
    #[arg(long, env = "ORRERY_COMMAND_USER")]
    command_user: Option<String>,
    /// GPUs this node manages: `all`, `none`, or NVML indices and UUIDs
    /// separated by commas (`0,2` or `GPU-8f0c…`); give each node on a
    /// multi-GPU host its own [default: all].
    #[arg(long, env = "ORRERY_GPUS")]
    gpus: Option<String>,
    /// Seconds a finished job (succeeded, failed, cancelled, dead) is kept,
    /// with its result, runs and dedupe key, before it is forgotten
    /// [default: 86400].
    #[arg(long, env = "ORRERY_JOB_RETENTION_S")]
    job_retention_s: Option<u64>,
    /// Directory with ca.crt, node.crt and node.key (`orreryctl certs
    /// create-node`): TLS on the client port, mutual TLS on the peer port.
    #[arg(long, env = "ORRERY_CERTS_DIR")]
    certs_dir: Option<PathBuf>,
    /// Run without TLS and without authentication: every caller is
    /// anonymous. Only for a node no one else can reach.
    #[arg(long, env = "ORRERY_INSECURE", num_args = 0..=1, default_missing_value = "true")]
    insecure: Option<bool>,
    /// The admin token a node started with --join shows.
    #[arg(long, env = "ORRERY_JOIN_TOKEN")]
    join_token: Option<String>,
    /// Accept JWTs signed with this key: an HS256 secret (at least 32
    /// bytes), or an RS256/ES256 public key in PEM.
    #[arg(long, env = "ORRERY_JWT_KEY")]
    jwt_key: Option<PathBuf>,
    /// The `aud` JWTs must carry [default: not checked].
    #[arg(long, env = "ORRERY_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// The `iss` JWTs must carry [default: not checked].
    #[arg(long, env = "ORRERY_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Serve /metrics without a token [default: false].
    #[arg(long, env = "ORRERY_METRICS_PUBLIC", num_args = 0..=1, default_missing_value = "true")]
    metrics_public: Option<bool>,
    /// The one web origin whose pages may call this node (CORS)
    /// [default: none, and no CORS headers].
    #[arg(long, env = "ORRERY_CORS_ORIGIN")]
    cors_origin: Option<String>,
    /// Addresses `http` data sources may reach although they are loopback,
    /// private or link-local: CIDRs, IPs and host names separated by commas
    /// (`127.0.0.1,10.1.0.0/16,metrics.internal`) [default: none].
    #[arg(long, env = "ORRERY_HTTP_SOURCES_ALLOW")]
    http_sources_allow: Option<String>,
    /// The model providers file (TOML) `image.caption` jobs use; read and
    /// checked at start, API keys included (docs/operations.md, "Model
    /// providers") [default: none, and this node does not claim
    /// image.caption jobs].
    #[arg(long, env = "ORRERY_PROVIDERS")]
    providers: Option<PathBuf>,
    /// The largest deadline, in ms, a policy version may ask for
    /// (`deadline_ms` in its graph; 100 when absent) [default: 1000].
    #[arg(long, env = "ORRERY_POLICY_MAX_DEADLINE_MS")]
    policy_max_deadline_ms: Option<u64>,
    /// How long policy runs are kept, in seconds, when their policy sets no
    /// `run_retention_ms` [default: 604800, 7 days].
    #[arg(long, env = "ORRERY_POLICY_RUN_RETENTION_S")]
    policy_run_retention_s: Option<u64>,
    /// Client connections this node keeps open; more are closed as soon as
    /// they are accepted [default: 4096].
    #[arg(long, env = "ORRERY_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Requests this node handles at once (streams not counted); more are
    /// answered 503 `overloaded` at once [default: 512].
    #[arg(long, env = "ORRERY_MAX_REQUESTS")]
    max_requests: Option<usize>,
    /// Long-lived streams (event streams, followed logs) open at once; more
    /// are answered 503 `overloaded` [default: 256].
    #[arg(long, env = "ORRERY_MAX_STREAMS")]
    max_streams: Option<usize>,
    /// Requests that may wait for a place when --max-requests are in
    /// flight; more are answered 503 `overloaded` at once. 0: no queue
    /// [default: 512].
    #[arg(long, env = "ORRERY_MAX_QUEUED")]
    max_queued: Option<usize>,
    /// How long, in ms, a request may wait for a place before it is
    /// answered 503 `overloaded`. 0: no queue [default: 250].
    #[arg(long, env = "ORRERY_QUEUE_WAIT_MS")]
    queue_wait_ms: Option<u64>,
    /// How long, in ms, a request (not a stream) may take until its answer
    /// starts; later it is answered 503 `timeout` and its work dropped. At
    /// least --request-timeout-ms. A shorter gRPC grpc-timeout wins
    /// [default: 30000, or twice --request-timeout-ms when that is longer].
    #[arg(long, env = "ORRERY_REQUEST_DEADLINE_MS")]
    request_deadline_ms: Option<u64>,
    /// Replica moves the rebalancer runs at once in the whole cluster
    /// (read on the placement leader) [default: 2].
    #[arg(long, env = "ORRERY_REBALANCE_MAX_MOVES")]
    rebalance_max_moves: Option<usize>,
    /// Replica moves that may involve one node at once [default: 1].
    #[arg(long, env = "ORRERY_REBALANCE_MAX_MOVES_PER_NODE")]
    rebalance_max_moves_per_node: Option<usize>,
    /// This node's capacity relative to the others' (1..=1000): it is given
    /// replicas and shard leaders in proportion (cluster version 9)
    /// [default: 1].
    #[arg(long, env = "ORRERY_CAPACITY")]
    capacity: Option<u32>,
    /// How long, in seconds, the shard map must have left this node out of
    /// a shard group before the node drops the group's data (5..=86400)
    /// [default: 10].
    #[arg(long, env = "ORRERY_DROP_GRACE_S")]
    drop_grace_s: Option<u64>,
}

impl ServeArgs {
    /// Fills every unset option from `file`.
    fn merge(self, file: ServeArgs) -> ServeArgs {
        macro_rules! pick {
            ($($f:ident),*) => { ServeArgs { config: self.config, $($f: self.$f.or(file.$f)),* } };
        }
        pick!(
            id,
            listen,
            peer_listen,
            advertise,
            peer_advertise,
            peer_source,
            data_dir,
            join,
            initial_members,
            initial_shards,
            root_token_file,
            log_format,
            heartbeat_ms,
            election_timeout_ms,
            read_lease_ms,
            snapshot_logs,
            keep_logs,
            max_key_bytes,
            max_value_bytes,
            request_timeout_ms,
            workers,
            fs_root,
            allow_command_jobs,
            command_user,
            gpus,
            job_retention_s,
            certs_dir,
            insecure,
            join_token,
            jwt_key,
            jwt_audience,
            jwt_issuer,
            metrics_public,
            cors_origin,
            http_sources_allow,
            providers,
            policy_max_deadline_ms,
            policy_run_retention_s,
            rebalance_max_moves,
            rebalance_max_moves_per_node,
            capacity,
            drop_grace_s,
            max_connections,
            max_requests,
            max_streams,
            max_queued,
            queue_wait_ms,
            request_deadline_ms
        )
    }
}

/// `ORRERY_TEST_UNSAFE_READ_LEASE=1` lets the tests set a lease longer
/// than the followers' (tests/read_lease.rs shows that such a lease gives
/// stale reads: the negative control of the lease's safety test).
fn unsafe_lease_for_tests() -> bool {
    std::env::var("ORRERY_TEST_UNSAFE_READ_LEASE").is_ok_and(|v| v == "1")
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,openraft=warn,sled=warn,h2=warn,tower=warn")
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only on a terminal: logs redirected to files stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let args = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config {}", path.display()))?;
            let file: ServeArgs = toml::from_str(&text)
                .with_context(|| format!("parsing config {}", path.display()))?;
            args.merge(file)
        }
        None => args,
    };
    init_logging(args.log_format.unwrap_or_default());
    let Some(id) = args.id else {
        bail!("--id is required (a positive integer unique in the cluster)")
    };
    if id == 0 {
        bail!("--id must be a positive integer; 0 is reserved");
    }
    let listen = args.listen.unwrap_or_else(|| "127.0.0.1:17001".into());
    let peer_listen = args.peer_listen.unwrap_or_else(|| "127.0.0.1:17101".into());
    let election = args.election_timeout_ms.unwrap_or(800);
    let raft = RaftSettings {
        heartbeat_ms: args.heartbeat_ms.unwrap_or(150),
        election_min_ms: election,
        election_max_ms: election * 2,
        snapshot_logs: args.snapshot_logs.unwrap_or(10_000),
        keep_logs: args.keep_logs.unwrap_or(1_000),
        read_lease_ms: args.read_lease_ms.unwrap_or(election / 2),
        ..RaftSettings::default()
    };
    // A lease as long as the followers' own (election_max_ms) would leave no
    // margin for clocks that run at different rates; half the minimum
    // election timeout tolerates a 4x difference.
    if raft.read_lease_ms >= raft.election_min_ms && !unsafe_lease_for_tests() {
        bail!(
            "--read-lease-ms ({}) must be below --election-timeout-ms ({}); 0 turns leases off",
            raft.read_lease_ms,
            raft.election_min_ms
        );
    }
    if raft.heartbeat_ms >= raft.election_min_ms {
        bail!(
            "--heartbeat-ms ({}) must be below --election-timeout-ms ({})",
            raft.heartbeat_ms,
            raft.election_min_ms
        );
    }
    let gpus: GpuSelection = match &args.gpus {
        Some(s) => s.parse().map_err(anyhow::Error::msg)?,
        None => GpuSelection::All,
    };
    let insecure = args.insecure.unwrap_or(false);
    let certs = match (&args.certs_dir, insecure) {
        (Some(_), true) => bail!("--certs-dir and --insecure exclude each other"),
        (Some(dir), false) => Some(
            orrery_tls::NodeCerts::load(dir)
                .with_context(|| format!("loading certificates from {}", dir.display()))?,
        ),
        (None, true) => None,
        (None, false) => bail!(
            "no certificates: give --certs-dir DIR (made with `orreryctl certs create-ca` and `create-node`), \
             or --insecure to run without TLS and authentication (never on a reachable address)"
        ),
    };
    if args.join.is_some() && !insecure && args.join_token.is_none() {
        bail!("--join needs --join-token (an admin token of the cluster)");
    }
    let jwt = args
        .jwt_key
        .map(|key_file| orrery_server::auth::jwt::JwtConfig {
            key_file,
            audience: args.jwt_audience,
            issuer: args.jwt_issuer,
        });
    let policies = PolicyConfig {
        http_allow: HttpAllowlist::parse(args.http_sources_allow.as_deref().unwrap_or(""))
            .map_err(|e| anyhow::anyhow!("--http-sources-allow: {e}"))?,
        max_deadline_ms: match args.policy_max_deadline_ms {
            Some(0) => bail!("--policy-max-deadline-ms must be positive"),
            Some(ms) => ms,
            None => PolicyConfig::default().max_deadline_ms,
        },
        run_retention_ms: match args.policy_run_retention_s {
            Some(0) => bail!("--policy-run-retention-s must be positive"),
            Some(s) => s.saturating_mul(1000),
            None => PolicyConfig::default().run_retention_ms,
        },
    };
    let providers = match &args.providers {
        None => None,
        Some(f) => Some(std::sync::Arc::new(
            orrery_server::providers::load(f).map_err(|e| anyhow::anyhow!("--providers {e}"))?,
        )),
    };
    let defaults = orrery_placement::MoveLimits::default();
    let rebalance = orrery_placement::MoveLimits {
        max_in_flight: match args.rebalance_max_moves {
            Some(0) => bail!("--rebalance-max-moves must be positive (pause with `orreryctl cluster rebalance --pause`)"),
            Some(n) => n,
            None => defaults.max_in_flight,
        },
        max_per_node: match args.rebalance_max_moves_per_node {
            Some(0) => bail!("--rebalance-max-moves-per-node must be positive"),
            Some(n) => n,
            None => defaults.max_per_node,
        },
    };
    let capacity = match args.capacity {
        Some(c) if !(1..=orrery_placement::MAX_CAPACITY).contains(&c) => bail!(
            "--capacity must be 1..={}, not {c}",
            orrery_placement::MAX_CAPACITY
        ),
        Some(c) => c,
        None => 1,
    };
    let drop_grace = match args.drop_grace_s {
        Some(s) if !(5..=86_400).contains(&s) => {
            bail!("--drop-grace-s must be 5..=86400 (seconds), not {s}")
        }
        Some(s) => Duration::from_secs(s),
        None => Duration::from_secs(10),
    };
    let addr = args.advertise.unwrap_or_else(|| listen.clone());
    let peer_addr = args.peer_advertise.unwrap_or_else(|| peer_listen.clone());
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from(format!("orrery-data/n{id}")));
    let bootstrap = match &args.initial_members {
        None => None,
        Some(_) if args.join.is_some() => {
            bail!("--initial-members and --join exclude each other")
        }
        Some(spec) => {
            let members = orrery_server::bootstrap::parse_members(
                spec,
                port_of(&listen, "--listen")?,
                port_of(&peer_listen, "--peer-listen")?,
            )
            .map_err(|e| anyhow::anyhow!("--initial-members: {e}"))?;
            let b = orrery_server::bootstrap::Bootstrap {
                members,
                shards: args.initial_shards.unwrap_or(0),
                root_token_file: args
                    .root_token_file
                    .unwrap_or_else(|| data_dir.join("root.token")),
            };
            let me = orrery_types::NodeAddr {
                addr: addr.clone(),
                peer_addr: peer_addr.clone(),
            };
            b.check(id, &me).map_err(anyhow::Error::msg)?;
            Some(b)
        }
    };
    let request_timeout = Duration::from_millis(args.request_timeout_ms.unwrap_or(5000));
    let dl = orrery_server::overload::Limits::default();
    let positive = |v: Option<usize>, d: usize, flag: &str| match v {
        Some(0) => bail!("{flag} must be positive"),
        Some(n) => Ok(n),
        None => Ok(d),
    };
    let limits = orrery_server::overload::Limits {
        max_connections: positive(
            args.max_connections,
            dl.max_connections,
            "--max-connections",
        )?,
        max_requests: positive(args.max_requests, dl.max_requests, "--max-requests")?,
        max_streams: positive(args.max_streams, dl.max_streams, "--max-streams")?,
        max_queued: args.max_queued.unwrap_or(dl.max_queued),
        queue_wait: args
            .queue_wait_ms
            .map_or(dl.queue_wait, Duration::from_millis),
        // Unset: 30 s, or twice --request-timeout-ms when that is longer,
        // so that raising the services' wait does not leave the outer
        // deadline cutting it short.
        request_deadline: args.request_deadline_ms.map_or(
            dl.request_deadline.max(request_timeout * 2),
            Duration::from_millis,
        ),
    };
    // The services' own wait (leader, quorum, commit) answers a clearer
    // error than the outer deadline: the outer one must not cut it short.
    if limits.request_deadline < request_timeout {
        bail!(
            "--request-deadline-ms ({} ms) must be at least --request-timeout-ms ({} ms)",
            limits.request_deadline.as_millis(),
            request_timeout.as_millis()
        );
    }
    let cfg = NodeConfig {
        id,
        addr,
        peer_addr,
        data_dir,
        raft,
        max_key_bytes: args.max_key_bytes.unwrap_or(4096),
        max_value_bytes: args.max_value_bytes.unwrap_or(16 << 20),
        request_timeout,
        admin_timeout: Duration::from_secs(60),
        join: args.join,
        peer_source: args.peer_source,
        workers: args.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }),
        fs_root: args.fs_root,
        allow_command_jobs: args.allow_command_jobs.unwrap_or(false),
        command_user: args.command_user,
        gpus,
        job_retention: Duration::from_secs(args.job_retention_s.unwrap_or(86_400)),
        certs,
        auth: orrery_server::auth::AuthConfig {
            insecure,
            metrics_public: args.metrics_public.unwrap_or(false),
            jwt,
        },
        join_token: args.join_token,
        cors_origin: args.cors_origin,
        policies,
        rebalance,
        capacity,
        drop_grace,
        bootstrap,
        limits,
        providers,
    };
    orrery_server::run(cfg, &listen, &peer_listen, shutdown_signal(), |b| {
        eprintln!(
            "orrery node {id} ready: client {} peer {}",
            b.client, b.peer
        );
    })
    .await?;
    Ok(())
}

/// The port of a listen address (`HOST:PORT`).
fn port_of(addr: &str, flag: &str) -> Result<u16> {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{flag} {addr:?}: expected HOST:PORT"))
}

// glibc's malloc spent a quarter of a loaded node's CPU in its bins
// (consolidation, unlinking); mimalloc's thread-local pages avoid that.
// Measured in docs/benchmarks.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Serve(args) => serve(*args).await,
            Cmd::Healthcheck(args) => healthcheck::run(args).await,
            Cmd::Restore(args) => restore_cmd::run(args).await,
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
