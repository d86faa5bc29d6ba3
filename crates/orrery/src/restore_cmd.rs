//! `orrery restore`: prepares a node's data directory of a new cluster from
//! a backup file (offline; docs/operations.md, "Backup and restore").

use anyhow::Result;
use orrery_server::restore::{parse_members, restore, RestoreOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The backup file (`orreryctl backup create --out FILE`).
    #[arg(long)]
    from: PathBuf,
    /// This node's data directory: missing or empty.
    #[arg(long)]
    data_dir: PathBuf,
    /// This node's id in the new cluster.
    #[arg(long)]
    id: u64,
    /// Every member of the new cluster, this one included, the same list
    /// on every node, as `--initial-members` takes it: `ID@CLIENT/PEER,...`
    /// with the addresses the nodes will advertise (e.g.
    /// `1@10.0.0.1:17001/10.0.0.1:17101`), or `ID@HOST,...` for nodes that
    /// all listen on --client-port and --peer-port (e.g. `1@n1,2@n2,3@n3`).
    #[arg(long)]
    members: String,
    /// The client port of `ID@HOST` members.
    #[arg(long, default_value_t = 17001)]
    client_port: u16,
    /// The peer port of `ID@HOST` members.
    #[arg(long, default_value_t = 17101)]
    peer_port: u16,
}

pub async fn run(a: RestoreArgs) -> Result<()> {
    let opts = RestoreOptions {
        members: parse_members(&a.members, a.client_port, a.peer_port)?,
        from: a.from,
        data_dir: a.data_dir,
        id: a.id,
    };
    let s = restore(&opts).await?;
    let shards: Vec<String> = s
        .groups
        .iter()
        .filter(|(g, _)| *g != orrery_types::PLACEMENT_GROUP)
        .map(|(g, i)| format!("{}@{i}", g - 1))
        .collect();
    println!(
        "restored node {} of cluster {} (from cluster {}) into {}: placement and {} of {} shards [{}]",
        opts.id,
        s.cluster_id,
        s.source_cluster_id,
        opts.data_dir.display(),
        shards.len(),
        s.shard_count,
        shards.join(" ")
    );
    Ok(())
}
