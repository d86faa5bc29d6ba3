//! `orreryctl collections|points|search`: vector collections.

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use orrery_client::{pb, Client, PointId, VectorCollection, VectorHit, VectorPoint};
use serde_json::{json, Value};
use std::io::{BufRead, Write};

#[derive(Subcommand)]
pub enum VectorCmd {
    /// Vector collections.
    #[command(subcommand)]
    Collections(CollectionsCmd),
    /// Points of a collection.
    #[command(subcommand)]
    Points(PointsCmd),
    /// k-nearest-neighbour search.
    Search {
        collection: String,
        /// The query vector as a JSON list, e.g. '[0.1, 0.2]'.
        #[arg(long)]
        vector: String,
        #[arg(long, default_value_t = 10)]
        k: u32,
        /// A filter as JSON (see docs/api.md).
        #[arg(long)]
        filter: Option<String>,
        /// HNSW ef for this search (default: the collection's ef_search).
        #[arg(long)]
        ef: Option<u32>,
        /// Brute-force search instead of the index.
        #[arg(long)]
        exact: bool,
    },
}

#[derive(Subcommand)]
pub enum CollectionsCmd {
    Create {
        name: String,
        #[arg(long)]
        dim: u32,
        /// cosine, l2 or dot.
        #[arg(long, default_value = "cosine")]
        metric: String,
        /// Default: the cluster's shard count.
        #[arg(long)]
        shards: Option<u32>,
        #[arg(long)]
        replication: Option<u32>,
        #[arg(long)]
        m: Option<u32>,
        #[arg(long)]
        ef_construction: Option<u32>,
        #[arg(long)]
        ef_search: Option<u32>,
    },
    List,
    /// Definition, point count and per-shard index state.
    Show {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
pub enum PointsCmd {
    /// Upsert points from a JSON-lines file: `{"id":..,"vector":[..],"payload":{..}}` per line.
    Upsert {
        collection: String,
        #[arg(long)]
        file: std::path::PathBuf,
        /// Points per request (at most 10000).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    Get {
        collection: String,
        id: String,
    },
    /// Delete by ids (`--ids 1,2`) or by `--filter JSON`.
    Delete {
        collection: String,
        #[arg(long, value_delimiter = ',')]
        ids: Vec<String>,
        #[arg(long)]
        filter: Option<String>,
    },
}

fn parse_id(s: &str) -> PointId {
    match s.parse::<u64>() {
        Ok(n) => PointId::Num(n),
        Err(_) => PointId::Uuid(s.to_string()),
    }
}

fn id_json(p: &Option<pb::VectorPointId>) -> Value {
    match PointId::from_pb(p) {
        Some(PointId::Num(n)) => json!(n),
        Some(PointId::Uuid(u)) => json!(u),
        None => Value::Null,
    }
}

fn collection_json(c: &VectorCollection) -> Value {
    json!({"name": c.name, "dim": c.dim, "metric": c.metric, "shards": c.shards,
           "replication": c.replication, "m": c.m, "ef_construction": c.ef_construction,
           "ef_search": c.ef_search, "points": c.points,
           "shard_states": c.shard_states.iter().map(|s| json!({"shard": s.shard, "points": s.points, "index": s.index, "indexed_entries": s.indexed_entries})).collect::<Vec<_>>()})
}

fn hit_json(h: &VectorHit) -> Value {
    let payload: Value = serde_json::from_str(&h.payload_json).unwrap_or(Value::Null);
    json!({"id": id_json(&h.id), "score": h.score, "payload": payload})
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn point_from_line(line: &str, n: usize) -> Result<VectorPoint> {
    let v: Value = serde_json::from_str(line).with_context(|| format!("line {n}: not JSON"))?;
    let id = match &v["id"] {
        Value::Number(x) => PointId::Num(
            x.as_u64()
                .ok_or_else(|| anyhow!("line {n}: id must be an unsigned integer or a UUID"))?,
        ),
        Value::String(s) => PointId::Uuid(s.clone()),
        _ => bail!("line {n}: id is required"),
    };
    let vector = v["vector"]
        .as_array()
        .ok_or_else(|| anyhow!("line {n}: vector must be a list of numbers"))?
        .iter()
        .map(|x| {
            x.as_f64()
                .map(|f| f as f32)
                .ok_or_else(|| anyhow!("line {n}: vector has a non-number"))
        })
        .collect::<Result<Vec<_>>>()?;
    let payload_json = match &v["payload"] {
        Value::Null => String::new(),
        p @ Value::Object(_) => p.to_string(),
        _ => bail!("line {n}: payload must be an object"),
    };
    Ok(VectorPoint {
        id: Some(id.pb()),
        vector,
        payload_json,
    })
}

pub async fn run(c: &mut Client, cmd: VectorCmd, as_json: bool) -> Result<()> {
    match cmd {
        VectorCmd::Collections(CollectionsCmd::Create {
            name,
            dim,
            metric,
            shards,
            replication,
            m,
            ef_construction,
            ef_search,
        }) => {
            let r = c
                .create_collection(pb::VectorCreateCollectionRequest {
                    name,
                    dim,
                    metric,
                    shards: shards.unwrap_or(0),
                    replication: replication.unwrap_or(0),
                    m: m.unwrap_or(0),
                    ef_construction: ef_construction.unwrap_or(0),
                    ef_search: ef_search.unwrap_or(0),
                })
                .await?;
            if as_json {
                print(&collection_json(&r));
            } else {
                println!(
                    "created collection {} (dim {}, {}, {} shards)",
                    r.name, r.dim, r.metric, r.shards
                );
            }
        }
        VectorCmd::Collections(CollectionsCmd::List) => {
            let list = c.list_collections().await?;
            if as_json {
                print(
                    &json!({"collections": list.iter().map(collection_json).collect::<Vec<_>>()}),
                );
            } else {
                for x in list {
                    println!(
                        "{}\tdim={}\t{}\tshards={}",
                        x.name, x.dim, x.metric, x.shards
                    );
                }
            }
        }
        VectorCmd::Collections(CollectionsCmd::Show { name }) => {
            let x = c.get_collection(&name).await?;
            if as_json {
                print(&collection_json(&x));
            } else {
                println!("{}: dim={} metric={} shards={} replication={} m={} ef_construction={} ef_search={} points={}",
                    x.name, x.dim, x.metric, x.shards, x.replication, x.m, x.ef_construction, x.ef_search, x.points);
                for s in x.shard_states {
                    println!(
                        "  shard {}: {} points, index {} ({} entries)",
                        s.shard, s.points, s.index, s.indexed_entries
                    );
                }
            }
        }
        VectorCmd::Collections(CollectionsCmd::Delete { name }) => {
            c.drop_collection(&name).await?;
            println!("dropped collection {name}");
        }
        VectorCmd::Points(PointsCmd::Upsert {
            collection,
            file,
            batch,
        }) => {
            if batch == 0 || batch > 10_000 {
                bail!("--batch must be 1..=10000");
            }
            let total_bytes = std::fs::metadata(&file)
                .with_context(|| format!("{}", file.display()))?
                .len()
                .max(1);
            let f = std::io::BufReader::new(
                std::fs::File::open(&file).with_context(|| format!("{}", file.display()))?,
            );
            let (mut buf, mut done, mut read_bytes) = (Vec::new(), 0u64, 0u64);
            let progress = |done: u64, read: u64| {
                let pct = read as f64 * 100.0 / total_bytes as f64;
                let filled = (pct / 5.0) as usize;
                eprint!(
                    "\r[{}{}] {pct:5.1}%  {done} points",
                    "#".repeat(filled),
                    " ".repeat(20 - filled.min(20))
                );
                let _ = std::io::stderr().flush();
            };
            for (i, line) in f.lines().enumerate() {
                let line = line?;
                read_bytes += line.len() as u64 + 1;
                if line.trim().is_empty() {
                    continue;
                }
                buf.push(point_from_line(&line, i + 1)?);
                if buf.len() == batch {
                    done += c
                        .upsert_points(&collection, std::mem::take(&mut buf))
                        .await?;
                    progress(done, read_bytes);
                }
            }
            if !buf.is_empty() {
                done += c.upsert_points(&collection, buf).await?;
            }
            progress(done, total_bytes);
            eprintln!();
            if as_json {
                print(&json!({"upserted": done}));
            } else {
                println!("upserted {done} points into {collection}");
            }
        }
        VectorCmd::Points(PointsCmd::Get { collection, id }) => {
            let p = c.get_point(&collection, &parse_id(&id)).await?;
            let payload: Value = serde_json::from_str(&p.payload_json).unwrap_or(Value::Null);
            print(&json!({"id": id_json(&p.id), "vector": p.vector, "payload": payload}));
        }
        VectorCmd::Points(PointsCmd::Delete {
            collection,
            ids,
            filter,
        }) => {
            let n = match (ids.is_empty(), filter) {
                (false, None) => {
                    c.delete_points(
                        &collection,
                        &ids.iter().map(|s| parse_id(s)).collect::<Vec<_>>(),
                    )
                    .await?
                }
                (true, Some(f)) => c.delete_by_filter(&collection, &f).await?,
                _ => bail!("give exactly one of --ids or --filter"),
            };
            println!("deleted {n} points");
        }
        VectorCmd::Search {
            collection,
            vector,
            k,
            filter,
            ef,
            exact,
        } => {
            let vector: Vec<f32> =
                serde_json::from_str(&vector).context("--vector must be a JSON list of numbers")?;
            let r = c
                .search_with(pb::VectorSearchRequest {
                    collection,
                    vector,
                    k,
                    ef: ef.unwrap_or(0),
                    exact,
                    filter_json: filter.unwrap_or_default(),
                    with_payload: true,
                    ..Default::default()
                })
                .await?;
            if as_json {
                print(
                    &json!({"result": r.result.iter().map(hit_json).collect::<Vec<_>>(), "took_ms": r.took_ms}),
                );
            } else {
                for h in &r.result {
                    println!("{}\t{:.6}\t{}", id_json(&h.id), h.score, h.payload_json);
                }
                println!("({} results in {:.2} ms)", r.result.len(), r.took_ms);
            }
        }
    }
    Ok(())
}
