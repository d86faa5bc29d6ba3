//! `orreryctl policies shadow ...` and `orreryctl policies retention ...`
//! (cluster version 5).

use crate::policies::{policy_json, pretty};
use anyhow::Result;
use clap::Subcommand;
use orrery_client::{pb, Client};
use serde_json::json;

#[derive(Subcommand)]
pub enum ShadowCmd {
    /// Evaluate VERSION next to the live version on every recorded run
    /// (its output recorded, never acted on: enqueue nodes submit nothing).
    Set { id: String, version: u32 },
    /// Stop shadow evaluation.
    Clear { id: String },
    /// Compare live and shadow outputs over the newest shadowed runs.
    Compare {
        id: String,
        /// Runs created at or after this time (ms since the Unix epoch).
        #[arg(long)]
        since: Option<u64>,
        /// Runs created before this time (ms since the Unix epoch).
        #[arg(long)]
        until: Option<u64>,
        /// Shadowed runs compared (default 100, at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// The next_cursor of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum RetentionCmd {
    /// Keep the policy's runs MS milliseconds.
    Set { id: String, ms: u64 },
    /// Back to the node's default (`--policy-run-retention-s`, 7 days).
    Clear { id: String },
}

pub async fn shadow(c: &mut Client, cmd: ShadowCmd, as_json: bool) -> Result<()> {
    match cmd {
        ShadowCmd::Set { id, version } => {
            pretty(&policy_json(
                &c.policy_settings(&id, Some(Some(version)), None).await?,
            ));
        }
        ShadowCmd::Clear { id } => {
            pretty(&policy_json(
                &c.policy_settings(&id, Some(None), None).await?,
            ));
        }
        ShadowCmd::Compare {
            id,
            since,
            until,
            limit,
            cursor,
        } => {
            let r = c
                .policy_shadow_compare(pb::CompareShadowRequest {
                    policy_id: id,
                    since,
                    until,
                    limit,
                    cursor,
                })
                .await?;
            let rate = (r.compared > 0).then(|| r.agreed as f64 / r.compared as f64);
            if as_json {
                let differing: Vec<_> = r
                    .differing
                    .iter()
                    .map(|d| json!({"id": d.run_id, "version": d.version, "shadow_version": d.shadow_version}))
                    .collect();
                pretty(&json!({
                    "policy_id": r.policy_id, "shadow_version": r.shadow_version,
                    "compared": r.compared, "agreed": r.agreed, "differed": r.compared - r.agreed,
                    "shadow_failed": r.shadow_failed, "agreement_rate": rate,
                    "differing": differing, "next_cursor": r.next_cursor,
                }));
            } else {
                let pct = rate.map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0));
                println!(
                    "compared {} runs: {} agree ({pct}), {} differ, {} shadow failures",
                    r.compared,
                    r.agreed,
                    r.compared - r.agreed,
                    r.shadow_failed
                );
                for d in &r.differing {
                    println!(
                        "  {} v{} vs shadow v{}",
                        d.run_id, d.version, d.shadow_version
                    );
                }
                if let Some(n) = r.next_cursor {
                    println!("(more: --cursor {n})");
                }
            }
        }
    }
    Ok(())
}

pub async fn retention(c: &mut Client, cmd: RetentionCmd) -> Result<()> {
    let p = match cmd {
        RetentionCmd::Set { id, ms } => c.policy_settings(&id, None, Some(Some(ms))).await?,
        RetentionCmd::Clear { id } => c.policy_settings(&id, None, Some(None)).await?,
    };
    pretty(&policy_json(&p));
    Ok(())
}
