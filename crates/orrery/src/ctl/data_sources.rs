//! `orreryctl data-sources ...`: the lookups policies read (static tables,
//! KV prefixes, allowlisted HTTP endpoints; docs/api.md).

use anyhow::{Context, Result};
use clap::Subcommand;
use orrery_client::Client;
use serde_json::Value;

#[derive(Subcommand)]
pub enum DataSourcesCmd {
    /// Create a data source from a JSON definition file
    /// (`{"name", "kind", ...}` as the REST body; `-` reads stdin).
    Create {
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// List data sources.
    List,
    /// Delete a data source.
    Delete { name: String },
}

fn parse(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or(Value::String(s.to_string()))
}

pub async fn data_sources(c: &mut Client, cmd: DataSourcesCmd, as_json: bool) -> Result<()> {
    match cmd {
        DataSourcesCmd::Create { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let def: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let created = parse(&c.data_source_create(&def.to_string()).await?);
            if as_json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                let name = created.get("name").and_then(Value::as_str).unwrap_or("?");
                println!("created data source {name}");
            }
        }
        DataSourcesCmd::List => {
            let all: Vec<Value> = c.data_sources().await?.iter().map(|d| parse(d)).collect();
            if as_json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "data_sources": all }))?
                );
            } else {
                println!("{:<24} KIND", "NAME");
                for d in &all {
                    let field =
                        |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    println!("{:<24} {}", field("name"), field("kind"));
                }
            }
        }
        DataSourcesCmd::Delete { name } => {
            c.data_source_delete(&name).await?;
            println!("deleted data source {name}");
        }
    }
    Ok(())
}
