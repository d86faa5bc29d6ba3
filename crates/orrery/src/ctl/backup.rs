//! `orreryctl backup`: take a backup of a live cluster into a file, and
//! check a backup file (docs/operations.md, "Backup and restore").

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use orrery_client::{pb, Client};
use orrery_storage::backup_file::{self, BackupHeader, SectionInfo};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum BackupCmd {
    /// Back up every group of the cluster (admins): written to FILE.partial,
    /// checked, fsync'd, then renamed to FILE.
    Create {
        #[arg(long)]
        out: PathBuf,
    },
    /// Check every checksum of a backup file and show what it holds (no
    /// cluster needed).
    Verify { file: PathBuf },
}

fn partial_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Runs `verify` without a connection; `None` when the command needs one.
pub fn offline(cmd: &BackupCmd, as_json: bool) -> Option<Result<()>> {
    match cmd {
        BackupCmd::Verify { file } => Some(verify(file, as_json)),
        BackupCmd::Create { .. } => None,
    }
}

fn verify(file: &Path, as_json: bool) -> Result<()> {
    let (h, sections) = read_checked(file)?;
    show(file, &h, &sections, as_json);
    Ok(())
}

fn read_checked(file: &Path) -> Result<(BackupHeader, Vec<SectionInfo>)> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    backup_file::verify(std::io::BufReader::new(f)).with_context(|| format!("{}", file.display()))
}

fn show(file: &Path, h: &BackupHeader, sections: &[SectionInfo], as_json: bool) {
    let bytes: u64 = sections.iter().map(|s| s.bytes).sum();
    if as_json {
        let v = json!({
            "file": file.display().to_string(),
            "cluster_id": h.cluster_id,
            "cluster_version": h.cluster_version,
            "build": h.build,
            "created_ms": h.created_ms,
            "source_node": h.source_node,
            "shard_count": h.shard_count,
            "groups": sections.iter().map(|s| json!({
                "group": s.group, "index": s.point.index, "term": s.point.term,
                "bytes": s.bytes, "sha256": s.sha256,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    println!(
        "{}: backup of cluster {} (version {}, {}), {} groups, {bytes} bytes of state, checksums ok",
        file.display(),
        h.cluster_id,
        h.cluster_version,
        h.build,
        sections.len()
    );
    for s in sections {
        println!(
            "  group {:>4}  index {:>10}  term {:>4}  {:>10} bytes",
            s.group, s.point.index, s.point.term, s.bytes
        );
    }
}

pub async fn run(c: &mut Client, cmd: BackupCmd, as_json: bool) -> Result<()> {
    let out = match cmd {
        BackupCmd::Create { out } => out,
        BackupCmd::Verify { file } => return verify(&file, as_json),
    };
    let partial = partial_path(&out);
    let r = create(c, &out, &partial).await;
    if r.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    let (h, sections) = r?;
    show(&out, &h, &sections, as_json);
    Ok(())
}

async fn create(
    c: &mut Client,
    out: &Path,
    partial: &Path,
) -> Result<(BackupHeader, Vec<SectionInfo>)> {
    let mut f = std::fs::File::create(partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut stream = c
        .cluster()
        .create_backup(pb::CreateBackupRequest {})
        .await?
        .into_inner();
    while let Some(chunk) = stream.message().await? {
        f.write_all(&chunk.data)
            .with_context(|| format!("writing {}", partial.display()))?;
    }
    f.sync_all()
        .with_context(|| format!("fsync {}", partial.display()))?;
    drop(f);
    // A stream that ended early (the node stopped midway) does not verify.
    let checked = match read_checked(partial) {
        Ok(x) => x,
        Err(e) => bail!("the backup received does not verify, nothing kept: {e:#}"),
    };
    std::fs::rename(partial, out)
        .with_context(|| format!("renaming {} to {}", partial.display(), out.display()))?;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync {}", dir.display()))?;
    Ok(checked)
}
