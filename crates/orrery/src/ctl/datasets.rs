//! `orreryctl datasets create|list|get|items|scan|delete` (docs/api.md,
//! "Datasets"), over the REST API (datasets have no gRPC service).

use super::workflows::Rest;
use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum DatasetsCmd {
    /// Create a dataset of the files matching GLOB under PATH (beneath the
    /// nodes' --fs-root) and start its first scan.
    Create {
        name: String,
        #[arg(long)]
        path: String,
        #[arg(long)]
        glob: String,
        /// The queue its scan jobs go to (default: `datasets`).
        #[arg(long)]
        queue: Option<String>,
    },
    /// Every dataset.
    List,
    /// A dataset and its last scan.
    Get { name: String },
    /// One page of items in path order.
    Items {
        name: String,
        /// Items with paths after this one (the previous page's `next`).
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only items with (true) or without (false) a caption.
        #[arg(long)]
        has_caption: Option<bool>,
        /// Only files with this extension (`png`).
        #[arg(long)]
        ext: Option<String>,
    },
    /// Re-scan: pick up added, removed and changed files.
    Scan { name: String },
    /// Delete the dataset's catalog (the files stay).
    Delete { name: String },
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_dataset(d: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    println!(
        "{:<24} {:>7} items {:>12} bytes  scan {} ({})  {}/{}",
        s(&d["name"]),
        d["items"],
        d["bytes"],
        d["scan"]["generation"],
        s(&d["scan"]["state"]),
        s(&d["path"]),
        s(&d["glob"])
    );
    if let Some(e) = d["scan"]["error"].as_str() {
        println!("  scan error: {e}");
    }
}

pub async fn run(rest: &Rest, cmd: DatasetsCmd, as_json: bool) -> Result<()> {
    let v = match &cmd {
        DatasetsCmd::Create {
            name,
            path,
            glob,
            queue,
        } => {
            let mut body = json!({"name": name, "path": path, "glob": glob});
            if let Some(q) = queue {
                body["queue"] = json!(q);
            }
            rest.call(Method::POST, "/v1/datasets", Some(&body)).await?
        }
        DatasetsCmd::List => rest.call(Method::GET, "/v1/datasets", None).await?,
        DatasetsCmd::Get { name } => {
            rest.call(Method::GET, &format!("/v1/datasets/{}", enc(name)), None)
                .await?
        }
        DatasetsCmd::Items {
            name,
            after,
            limit,
            has_caption,
            ext,
        } => {
            let mut q = format!("/v1/datasets/{}/items?limit={limit}", enc(name));
            if let Some(a) = after {
                q.push_str(&format!("&after={}", enc(a)));
            }
            if let Some(h) = has_caption {
                q.push_str(&format!("&has_caption={h}"));
            }
            if let Some(e) = ext {
                q.push_str(&format!("&ext={}", enc(e)));
            }
            rest.call(Method::GET, &q, None).await?
        }
        DatasetsCmd::Scan { name } => {
            rest.call(
                Method::POST,
                &format!("/v1/datasets/{}/scan", enc(name)),
                None,
            )
            .await?
        }
        DatasetsCmd::Delete { name } => {
            rest.call(Method::DELETE, &format!("/v1/datasets/{}", enc(name)), None)
                .await?
        }
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match cmd {
        DatasetsCmd::List => {
            for d in v["datasets"].as_array().into_iter().flatten() {
                print_dataset(d);
            }
        }
        DatasetsCmd::Items { .. } => {
            for i in v["items"].as_array().into_iter().flatten() {
                println!(
                    "{}  {} bytes  {}x{}  {}  {}",
                    i["path"].as_str().unwrap_or(""),
                    i["size"],
                    i["width"],
                    i["height"],
                    i["sha256"].as_str().unwrap_or(""),
                    i["caption"].as_str().unwrap_or("")
                );
            }
            if let Some(n) = v["next"].as_str() {
                println!("(more: --after {n})");
            }
        }
        DatasetsCmd::Delete { name } => {
            println!("deleted {name} ({} items)", v["items"]);
        }
        _ => print_dataset(&v),
    }
    Ok(())
}
