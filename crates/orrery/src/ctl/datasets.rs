//! `orreryctl datasets create|list|get|items|scan|delete|pipeline|search`
//! (docs/api.md, "Datasets", "Text search and pipelines"), over the REST
//! API (datasets have no gRPC service).

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
    /// Start one workflow per item lacking outputs: thumbnail, caption, embed.
    Pipeline {
        name: String,
        /// Steps, comma-separated, in this order: thumbnail,caption,embed.
        #[arg(long, default_value = "thumbnail,caption,embed", value_delimiter = ',')]
        steps: Vec<String>,
        /// The caption step's provider (a name from the providers file).
        #[arg(long)]
        provider: Option<String>,
        /// The caption step's prompt.
        #[arg(long)]
        prompt: Option<String>,
        /// Every item, also those that have the outputs already.
        #[arg(long)]
        all: bool,
        /// The workflows' queue (default: `pipeline`).
        #[arg(long)]
        queue: Option<String>,
        /// The embed step's collection (default: the dataset's name).
        #[arg(long)]
        collection: Option<String>,
        /// Start after this item path (a previous answer's `next`).
        #[arg(long)]
        after: Option<String>,
        /// Most workflows to start (1..=1000).
        #[arg(long)]
        limit: Option<usize>,
        /// The thumbnail step's output root under --fs-root (default
        /// `thumbnails/NAME`).
        #[arg(long)]
        thumbnail_dir: Option<String>,
        /// The thumbnail step's longest side (default 256).
        #[arg(long)]
        max_side: Option<u32>,
    },
    /// Items whose captions are closest to TEXT (needs a running
    /// orrery-embed-worker).
    Search {
        name: String,
        text: String,
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// How long to wait for the query's embedding.
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// The embed worker's queue (default: `pipeline`).
        #[arg(long)]
        queue: Option<String>,
        /// The embeddings collection (default: the dataset's name).
        #[arg(long)]
        collection: Option<String>,
    },
}

/// Adds the fields that are set to a JSON object.
fn set_opt(body: &mut Value, fields: &[(&str, Option<Value>)]) {
    for (k, v) in fields {
        if let Some(v) = v {
            body[*k] = v.clone();
        }
    }
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
        DatasetsCmd::Pipeline {
            name,
            steps,
            provider,
            prompt,
            all,
            queue,
            collection,
            after,
            limit,
            thumbnail_dir,
            max_side,
        } => {
            let mut body = json!({"steps": steps, "only_missing": !all});
            set_opt(
                &mut body,
                &[
                    ("provider", provider.as_ref().map(|v| json!(v))),
                    ("prompt", prompt.as_ref().map(|v| json!(v))),
                    ("queue", queue.as_ref().map(|v| json!(v))),
                    ("collection", collection.as_ref().map(|v| json!(v))),
                    ("after", after.as_ref().map(|v| json!(v))),
                    ("limit", limit.map(|v| json!(v))),
                    ("thumbnail_dir", thumbnail_dir.as_ref().map(|v| json!(v))),
                    ("max_side", max_side.map(|v| json!(v))),
                ],
            );
            let path = format!("/v1/datasets/{}/pipeline", enc(name));
            rest.call(Method::POST, &path, Some(&body)).await?
        }
        DatasetsCmd::Search {
            name,
            text,
            k,
            timeout_ms,
            queue,
            collection,
        } => {
            let mut body = json!({"text": text, "k": k});
            set_opt(
                &mut body,
                &[
                    ("timeout_ms", timeout_ms.map(|v| json!(v))),
                    ("queue", queue.as_ref().map(|v| json!(v))),
                    ("collection", collection.as_ref().map(|v| json!(v))),
                ],
            );
            let path = format!("/v1/datasets/{}/search", enc(name));
            rest.call(Method::POST, &path, Some(&body)).await?
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
        DatasetsCmd::Pipeline { .. } => {
            println!(
                "started {} workflows in queue {} ({} items skipped)",
                v["started"],
                v["queue"].as_str().unwrap_or(""),
                v["skipped"]
            );
            for w in v["workflows"].as_array().into_iter().flatten() {
                println!(
                    "{}  {}",
                    w["id"].as_str().unwrap_or(""),
                    w["path"].as_str().unwrap_or("")
                );
            }
            if let Some(n) = v["next"].as_str() {
                println!("(more: --after {n})");
            }
        }
        DatasetsCmd::Search { .. } => {
            for h in v["results"].as_array().into_iter().flatten() {
                println!(
                    "{:.4}  {}  {}",
                    h["score"].as_f64().unwrap_or(f64::NAN),
                    h["path"].as_str().unwrap_or(""),
                    h["caption"].as_str().unwrap_or("")
                );
            }
        }
        _ => print_dataset(&v),
    }
    Ok(())
}
