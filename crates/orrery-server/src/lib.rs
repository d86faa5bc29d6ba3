//! The Orrery node: storage, Raft groups, the REST and gRPC fronts on the
//! client address, and the peer service on the peer address.

// The policy run futures (gRPC → service → node write with its version
// gate → forward) nest deeper than rustc's default layout query depth.
#![recursion_limit = "256"]

pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod grpc;
pub mod http;
mod listen;
pub mod netguard;
pub mod node;
pub mod overload;
pub mod providers;
pub mod restore;
pub mod service;

pub use api::ApiError;
pub use node::{Node, NodeConfig};
pub use orrery_exec::GpuSelection;
pub use orrery_raft::RaftSettings;
pub use service::policies::enqueue_dedupe_key;

use node::ops::GroupReport;
use openraft::ServerState;
use orrery_proto::peer::peer_server::PeerServer;
use orrery_raft::{PeerClients, Registry};
use orrery_storage::NodeStorage;
use orrery_types::{group_name, PLACEMENT_GROUP};
use service::Services;
use std::fmt::Write;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Errors that stop a node from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("data directory {path}: {message}")]
    DataDir { path: String, message: String },
    #[error(transparent)]
    Raft(#[from] orrery_raft::Error),
    #[error("storage: {0}")]
    Storage(#[from] orrery_storage::StorageError),
    #[error("server: {0}")]
    Serve(String),
    #[error(
        "storage failed: {0}; this node stopped rather than acknowledge writes it cannot store. \
         Free space or fix the disk, then start it again (docs/operations.md, Failure handling)"
    )]
    StorageFailed(String),
}

/// Where the node's listeners ended up (useful with port 0).
pub struct Bound {
    pub client: std::net::SocketAddr,
    pub peer: std::net::SocketAddr,
}

/// The node id is written into the data directory on first start, so that
/// a directory can never be served under another node's identity.
fn check_identity(cfg: &NodeConfig) -> Result<(), ServerError> {
    let dir = &cfg.data_dir;
    let err = |m: String| ServerError::DataDir {
        path: dir.display().to_string(),
        message: m,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let id_file = dir.join("node_id");
    match std::fs::read_to_string(&id_file) {
        Ok(s) => {
            let stored: u64 = s
                .trim()
                .parse()
                .map_err(|_| err(format!("{} is corrupt", id_file.display())))?;
            if stored != cfg.id {
                return Err(err(format!(
                    "it belongs to node {stored}, but this node was started with --id {}",
                    cfg.id
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_durably(dir, &id_file, format!("{}\n", cfg.id).as_bytes())
                .map_err(|e| err(e.to_string()))?;
        }
        Err(e) => return Err(err(e.to_string())),
    }
    Ok(())
}

/// Writes `file` so that a power cut leaves either no file or the whole
/// content: a temporary file, fsynced, renamed into place, and the
/// directory fsynced. (A plain write left an empty `node_id` after a power
/// cut, and the node refused to start: found by tests/power_loss.rs.)
fn write_durably(
    dir: &std::path::Path,
    file: &std::path::Path,
    data: &[u8],
) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = file.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    std::fs::File::open(dir)?.sync_all()
}

async fn bind(addr: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.into(),
            source,
        })
}

/// Runs a node until `shutdown` resolves. `client` and `peer` are the
/// addresses to bind; `cfg.addr`/`cfg.peer_addr` are what peers are told.
pub async fn run(
    cfg: NodeConfig,
    client: &str,
    peer: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(Bound) + Send,
) -> Result<(), ServerError> {
    if cfg.id == 0 {
        return Err(ServerError::Serve(
            "--id must be a positive integer (0 is reserved)".into(),
        ));
    }
    if cfg.certs.is_none() && !cfg.auth.insecure {
        return Err(ServerError::Serve(
            "no certificates: give --certs-dir (see `orreryctl certs`), or --insecure to run without TLS and authentication".into(),
        ));
    }
    check_identity(&cfg)?;
    let client_l = bind(client).await?;
    let peer_l = bind(peer).await?;
    let bound = Bound {
        client: client_l
            .local_addr()
            .map_err(|e| ServerError::Serve(e.to_string()))?,
        peer: peer_l
            .local_addr()
            .map_err(|e| ServerError::Serve(e.to_string()))?,
    };

    let storage = NodeStorage::open(&cfg.data_dir)?;
    storage.check_groups_present()?;
    // Vector indexes are saved next to the snapshots and loaded on restore
    // (a cache: without it, a restart rebuilds them). Set before any group
    // restores its state.
    let index_dir = cfg.data_dir.join("vector-index");
    if let Err(e) = orrery_vector::persist::set_dir(index_dir.clone()) {
        tracing::warn!(
            "cannot use {} for vector index dumps ({e}); indexes will be rebuilt after restarts",
            index_dir.display()
        );
    }
    let registry = Arc::new(Registry::new(
        cfg.id,
        storage.clone(),
        PeerClients::new(cfg.peer_source).with_tls(
            cfg.certs
                .as_ref()
                .map(|c| orrery_raft::network::peer_tls(&c.ca_pem, &c.cert_pem, &c.key_pem)),
        ),
        &cfg.raft,
    )?);
    registry.ensure(PLACEMENT_GROUP).await?;
    for g in storage.stored_groups() {
        registry.ensure(g).await?;
    }
    let node = Node::new(cfg.clone(), registry.clone());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    node::version::start(&node, stop_rx.clone())
        .await
        .map_err(ServerError::Serve)?;
    tokio::spawn(node.clone().run_reconciler(stop_rx.clone()));
    if let Some(j) = cfg.join.clone() {
        tokio::spawn(node.clone().run_join(j, stop_rx.clone()));
    }
    let authn =
        auth::Authenticator::new(node.clone(), cfg.auth.clone()).map_err(ServerError::Serve)?;
    let services = Services::new(node.clone(), Arc::new(authn));
    if let Some(b) = cfg.bootstrap.clone() {
        tokio::spawn(bootstrap::run(services.clone(), b, stop_rx.clone()));
    }
    let hooks = orrery_exec::Hooks {
        outputs: Some(Arc::new(service::datasets::EngineOutputs(Arc::downgrade(
            &services.datasets,
        )))),
        captioner: match &cfg.providers {
            None => None,
            Some(p) => Some(Arc::new(
                providers::ProviderClients::new(p.clone(), cfg.policies.http_allow.clone())
                    .map_err(ServerError::Serve)?,
            )),
        },
    };
    services
        .jobs
        .start(stop_rx.clone(), services.policies.kind_handlers(), hooks);
    services.policies.start_retention(stop_rx.clone());
    if cfg.auth.insecure {
        tracing::warn!(
            "--insecure: no TLS, and every caller may do anything but run command jobs; never expose this node"
        );
    }

    let grpc = grpc::router(&services);
    let rest = http::router(services.clone());
    // REST and gRPC share the client port; the content type tells them apart.
    let mut app = axum::Router::new().fallback_service(tower::service_fn(
        move |req: axum::extract::Request| {
            let is_grpc = req
                .headers()
                .get(axum::http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes().starts_with(b"application/grpc"))
                .unwrap_or(false);
            let svc = if is_grpc { grpc.clone() } else { rest.clone() };
            tower::ServiceExt::oneshot(svc, req)
        },
    ));
    if let Some(origin) = &cfg.cors_origin {
        app = app.layer(http::cors(origin).map_err(ServerError::Serve)?);
    }
    // Outermost: the excess is refused before any other work is done.
    app = app.layer(axum::middleware::from_fn_with_state(
        node.budgets.clone(),
        overload::guard,
    ));
    let make = app.into_make_service_with_connect_info::<auth::ConnInfo>();

    let mut rx1 = stop_rx.clone();
    let stopped = async move {
        let _ = rx1.changed().await;
    };
    type Served = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
    let client_srv: Served = match &cfg.certs {
        Some(certs) => {
            let tls = certs
                .server_config(false)
                .map_err(|e| ServerError::Serve(e.to_string()))?;
            let l = overload::Capped {
                inner: listen::TlsListener(orrery_tls::accept_tls(client_l, tls)),
                budgets: node.budgets.clone(),
            };
            let srv = axum::serve(l, make).with_graceful_shutdown(stopped);
            Box::pin(async move { srv.await.map_err(|e| e.to_string()) })
        }
        None => {
            let l = overload::Capped {
                inner: listen::PlainListener(client_l),
                budgets: node.budgets.clone(),
            };
            let srv = axum::serve(l, make).with_graceful_shutdown(stopped);
            Box::pin(async move { srv.await.map_err(|e| e.to_string()) })
        }
    };
    let peer_svc = PeerServer::new(node::peer::PeerService {
        node: node.clone(),
        stop: stop_rx.clone(),
    })
    .max_decoding_message_size(256 << 20)
    .max_encoding_message_size(256 << 20);
    let mut rx2 = stop_rx.clone();
    let peer_stopped = async move {
        let _ = rx2.changed().await;
    };
    let peer_builder = || {
        tonic::transport::Server::builder()
            .initial_stream_window_size(orrery_raft::network::PEER_STREAM_WINDOW)
            .initial_connection_window_size(orrery_raft::network::PEER_CONNECTION_WINDOW)
    };
    let peer_srv: Served = match &cfg.certs {
        // Mutual TLS: a client without a certificate from the cluster CA
        // does not get past the handshake.
        Some(certs) => {
            let tls = certs
                .server_config(true)
                .map_err(|e| ServerError::Serve(e.to_string()))?;
            let incoming = orrery_tls::accept_tls(peer_l, tls).into_stream();
            let srv = peer_builder()
                .add_service(peer_svc)
                .serve_with_incoming_shutdown(incoming, peer_stopped);
            Box::pin(async move { srv.await.map_err(|e| e.to_string()) })
        }
        None => {
            let incoming = tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(peer_l),
                |conn| {
                    if let Ok(tcp) = &conn {
                        let _ = tcp.set_nodelay(true);
                    }
                    conn
                },
            );
            let srv = peer_builder()
                .add_service(peer_svc)
                .serve_with_incoming_shutdown(incoming, peer_stopped);
            Box::pin(async move { srv.await.map_err(|e| e.to_string()) })
        }
    };

    tracing::info!(node = cfg.id, client = %bound.client, peer = %bound.peer, "orrery node listening");
    on_bound(bound);
    let storage_watch = tokio::spawn(node::storage_health::watch(node.clone(), stop_rx.clone()));
    let failed_storage = Arc::new(std::sync::OnceLock::new());
    let failed = failed_storage.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => tracing::info!("shutting down"),
            Ok(Some(why)) = storage_watch => {
                tracing::error!("stopping: storage failed");
                let _ = failed.set(why);
            }
        }
        let _ = stop_tx.send(true);
    });
    // Graceful shutdown waits for open connections to end, and a follower
    // of an SSE stream (`/v1/events/stream`, `logs?follow=true`) never
    // does: after the stop signal, connections get DRAIN to finish.
    let mut rx3 = stop_rx.clone();
    let drain_over = async move {
        let _ = rx3.changed().await;
        tokio::time::sleep(DRAIN).await;
    };
    let (a, b) = tokio::select! {
        r = async { tokio::join!(client_srv, peer_srv) } => r,
        _ = drain_over => {
            tracing::warn!("connections still open {}s after the stop signal; closing them", DRAIN.as_secs());
            (Ok(()), Ok(()))
        }
    };
    services.jobs.shutdown().await;
    registry.shutdown().await;
    if let Some(why) = failed_storage.get() {
        return Err(ServerError::StorageFailed(why.clone()));
    }
    a.map_err(ServerError::Serve)?;
    b.map_err(ServerError::Serve)?;
    tracing::info!("stopped");
    Ok(())
}

/// How long open connections may take to finish once a node is told to
/// stop (SIGTERM) before they are closed.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A per-group gauge: name, help text, and how to read it from a report.
type Gauge = (&'static str, &'static str, fn(&GroupReport) -> u64);

/// A per-group metric read from the running group: name, type, help text.
type GroupMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&orrery_raft::Group) -> u64,
);

/// Raft gauges per group, in Prometheus text format, with this node's GPUs
/// (`gpus`, and the UUIDs running jobs hold: see [`render_gpu_metrics`]).
pub fn render_raft_metrics(
    node: &Node,
    gpus: &[orrery_exec::GpuInfo],
    held: &[String],
    out: &mut String,
) {
    let reports = node.local_reports();
    let gauges: [Gauge; 4] = [
        ("orrery_raft_term", "Current Raft term per group.", |r| {
            r.term
        }),
        (
            "orrery_raft_commit_index",
            "Highest committed log index per group.",
            |r| r.commit_index(),
        ),
        (
            "orrery_raft_applied_index",
            "Highest applied log index per group.",
            |r| r.applied,
        ),
        (
            "orrery_raft_last_log_index",
            "Last log index per group.",
            |r| r.last_log_index,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for r in &reports {
            let _ = writeln!(
                out,
                "{name}{{group=\"{}\"}} {}",
                group_name(r.group),
                value(r)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP orrery_storage_failed 1 once this node's storage failed (it then stops).\n# TYPE orrery_storage_failed gauge\norrery_storage_failed {}",
        u8::from(node.storage_failure().is_some())
    );
    let w = node.registry.storage().wal().stats();
    let wal: [(&str, &str, &str, u64); 5] = [
        (
            "orrery_wal_appends_total",
            "counter",
            "Log appends (of any number of entries) handed to the write-ahead log.",
            w.appends,
        ),
        (
            "orrery_wal_syncs_total",
            "counter",
            "fdatasync calls of the write-ahead log (appends per sync: group commit).",
            w.syncs,
        ),
        (
            "orrery_wal_bytes_total",
            "counter",
            "Bytes written to the write-ahead log.",
            w.bytes,
        ),
        (
            "orrery_wal_segments",
            "gauge",
            "Write-ahead log segment files in use.",
            w.segments,
        ),
        (
            "orrery_wal_compacted_entries_total",
            "counter",
            "Log entries copied forward so that old segments could be deleted.",
            w.moved,
        ),
    ];
    for (name, kind, help, v) in wal {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {v}");
    }
    render_gpu_metrics(gpus, held, out);
    let _ = writeln!(out, "# TYPE orrery_raft_is_leader gauge");
    for g in node.registry.all() {
        let leader = g.raft.metrics().borrow().state == ServerState::Leader;
        let _ = writeln!(
            out,
            "orrery_raft_is_leader{{group=\"{}\"}} {}",
            group_name(g.id),
            u8::from(leader)
        );
    }
    // What the snapshot schedule weighs (docs/architecture.md, "Snapshots").
    let snapshots: [GroupMetric; 3] = [
        (
            "orrery_raft_snapshot_index",
            "gauge",
            "Last log index in the group's current snapshot (0: none).",
            |g| g.raft.metrics().borrow().snapshot.map_or(0, |l| l.index),
        ),
        (
            "orrery_raft_snapshot_bytes",
            "gauge",
            "Size of the state in the group's current snapshot.",
            |g| g.sm.snapshot_bytes(),
        ),
        (
            "orrery_raft_log_appended_bytes_total",
            "counter",
            "Encoded bytes appended to the group's log since the node started.",
            |g| g.log_appended_bytes(),
        ),
    ];
    let groups = node.registry.all();
    for (name, kind, help, value) in snapshots {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for g in &groups {
            let _ = writeln!(out, "{name}{{group=\"{}\"}} {}", group_name(g.id), value(g));
        }
    }
}

/// This node's GPUs (as of the engine's last 10 s refresh) in Prometheus
/// text format; `held` are the UUIDs running jobs hold.
pub fn render_gpu_metrics(gpus: &[orrery_exec::GpuInfo], held: &[String], out: &mut String) {
    let _ = writeln!(out, "# HELP orrery_gpus GPUs this node manages (--gpus).");
    let _ = writeln!(out, "# TYPE orrery_gpus gauge");
    let _ = writeln!(out, "orrery_gpus {}", gpus.len());
    type Reading = fn(&orrery_exec::GpuInfo, bool) -> f64;
    let per_gpu: [(&str, &str, Reading); 5] = [
        (
            "orrery_gpu_memory_total_bytes",
            "Memory of the GPU.",
            |g, _| (g.memory_total_mb * 1024 * 1024) as f64,
        ),
        (
            "orrery_gpu_memory_used_bytes",
            "Memory used on the GPU, by any process.",
            |g, _| (g.memory_used_mb * 1024 * 1024) as f64,
        ),
        (
            "orrery_gpu_utilization_percent",
            "GPU utilisation over NVML's last sample period.",
            |g, _| f64::from(g.utilization_pct),
        ),
        (
            "orrery_gpu_temperature_celsius",
            "GPU core temperature.",
            |g, _| f64::from(g.temperature_c),
        ),
        (
            "orrery_gpu_assigned",
            "1 while a running job holds the GPU.",
            |_, h| if h { 1.0 } else { 0.0 },
        ),
    ];
    for (name, help, read) in per_gpu {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for g in gpus {
            let _ = writeln!(
                out,
                "{name}{{uuid=\"{}\",index=\"{}\",name=\"{}\"}} {}",
                label(&g.uuid),
                g.index,
                label(&g.name),
                read(g, held.contains(&g.uuid))
            );
        }
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_metrics_render_every_gpu_and_escape_labels() {
        let g = |i: u32, name: &str| orrery_exec::GpuInfo {
            uuid: format!("GPU-{i}"),
            index: i,
            name: name.into(),
            memory_total_mb: 80 * 1024,
            memory_used_mb: 1024,
            utilization_pct: 42,
            temperature_c: 51,
            compute_capability: "9.0".into(),
        };
        let mut out = String::new();
        render_gpu_metrics(
            &[g(0, "H100"), g(1, "odd \"name\"")],
            &["GPU-1".into()],
            &mut out,
        );
        for want in [
            "orrery_gpus 2\n",
            "orrery_gpu_memory_total_bytes{uuid=\"GPU-0\",index=\"0\",name=\"H100\"} 85899345920\n",
            "orrery_gpu_memory_used_bytes{uuid=\"GPU-0\",index=\"0\",name=\"H100\"} 1073741824\n",
            "orrery_gpu_utilization_percent{uuid=\"GPU-0\",index=\"0\",name=\"H100\"} 42\n",
            "orrery_gpu_temperature_celsius{uuid=\"GPU-0\",index=\"0\",name=\"H100\"} 51\n",
            "orrery_gpu_assigned{uuid=\"GPU-0\",index=\"0\",name=\"H100\"} 0\n",
            "orrery_gpu_assigned{uuid=\"GPU-1\",index=\"1\",name=\"odd \\\"name\\\"\"} 1\n",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
        let mut none = String::new();
        render_gpu_metrics(&[], &[], &mut none);
        assert!(none.contains("orrery_gpus 0\n"), "{none}");
        assert!(!none.contains("orrery_gpu_assigned{"), "{none}");
    }
}
