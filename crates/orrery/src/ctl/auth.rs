//! `orreryctl certs …` (no cluster needed) and `orreryctl auth tokens …`.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use orrery_client::{pb, Client};
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CertsCmd {
    /// Create a cluster CA: CERTS_DIR/ca.crt and CERTS_DIR/ca.key. Keep
    /// ca.key off the nodes.
    CreateCa {
        #[arg(long)]
        certs_dir: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        overwrite: bool,
    },
    /// Create a node certificate signed by the CA in --certs-dir, for the
    /// host names and IP addresses the node is reached at: OUT/ca.crt,
    /// OUT/node.crt, OUT/node.key (give OUT to `orrery serve --certs-dir`).
    CreateNode {
        #[arg(long)]
        certs_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(required = true)]
        hosts: Vec<String>,
        #[arg(long)]
        overwrite: bool,
    },
}

pub fn certs(cmd: CertsCmd, as_json: bool) -> Result<()> {
    let files = match cmd {
        CertsCmd::CreateCa {
            certs_dir,
            overwrite,
        } => orrery_tls::create_ca(&certs_dir, overwrite)?,
        CertsCmd::CreateNode {
            certs_dir,
            out,
            hosts,
            overwrite,
        } => orrery_tls::create_node(&certs_dir, &out, &hosts, overwrite)?,
    };
    if as_json {
        super::print_json(&json!({"files": files.0}));
    } else {
        for f in files.0 {
            println!("wrote {}", f.display());
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum AuthCmd {
    /// Bearer tokens: create, list, revoke (admins).
    #[command(subcommand)]
    Tokens(TokensCmd),
}

#[derive(Subcommand)]
pub enum TokensCmd {
    /// Create a token; it is printed once and stored only as a hash.
    Create {
        #[arg(long)]
        name: String,
        /// admin, writer, reader or worker.
        #[arg(long)]
        role: String,
        /// Worker tokens: the queues it may use (comma-separated).
        #[arg(long, value_delimiter = ',')]
        queues: Vec<String>,
        /// Lifetime: 90s, 15m, 12h, 30d [default: until revoked].
        #[arg(long)]
        ttl: Option<String>,
    },
    List,
    /// Revoke a token: it stops working on every node within seconds.
    Revoke {
        id: String,
    },
}

/// `90s`, `15m`, `12h`, `30d` (or plain seconds) in seconds.
pub fn parse_duration(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("duration {s:?}: expected a number and s, m, h or d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("duration {s:?}: the unit must be s, m, h or d"),
    };
    n.checked_mul(mult).context("duration too long")
}

fn info_json(t: &pb::TokenInfo) -> Value {
    let nz = |v: u64| if v == 0 { Value::Null } else { json!(v) };
    json!({"id": t.id, "name": t.name, "role": t.role, "queues": t.queues,
           "created_ms": t.created_ms, "expires_ms": nz(t.expires_ms), "revoked_ms": nz(t.revoked_ms)})
}

pub async fn auth(c: &Client, cmd: AuthCmd, as_json: bool) -> Result<()> {
    let AuthCmd::Tokens(cmd) = cmd;
    let mut a = c.auth();
    match cmd {
        TokensCmd::Create {
            name,
            role,
            queues,
            ttl,
        } => {
            let ttl_s = ttl.as_deref().map(parse_duration).transpose()?.unwrap_or(0);
            let r = a
                .create_token(pb::CreateTokenRequest {
                    name,
                    role,
                    queues,
                    ttl_s,
                })
                .await?
                .into_inner();
            let info = r.info.unwrap_or_default();
            if as_json {
                super::print_json(&json!({"id": info.id, "token": r.token}));
            } else {
                println!("token {} ({}, role {}):", info.id, info.name, info.role);
                println!("{}", r.token);
                println!("(shown only now; it is stored as a hash)");
            }
        }
        TokensCmd::List => {
            let r = a.list_tokens(pb::ListTokensRequest {}).await?.into_inner();
            if as_json {
                super::print_json(
                    &json!({"tokens": r.tokens.iter().map(info_json).collect::<Vec<_>>()}),
                );
            } else {
                println!(
                    "{:<18} {:<20} {:<7} {:<8} QUEUES",
                    "ID", "NAME", "ROLE", "STATE"
                );
                for t in &r.tokens {
                    let state = if t.revoked_ms > 0 {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<18} {:<20} {:<7} {:<8} {}",
                        t.id,
                        t.name,
                        t.role,
                        state,
                        t.queues.join(",")
                    );
                }
            }
        }
        TokensCmd::Revoke { id } => {
            let t = a
                .revoke_token(pb::RevokeTokenRequest { id })
                .await?
                .into_inner();
            if as_json {
                super::print_json(&info_json(&t));
            } else {
                println!("token {} ({}) revoked", t.id, t.name);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("90s").ok(), Some(90));
        assert_eq!(super::parse_duration("15m").ok(), Some(900));
        assert_eq!(super::parse_duration("2h").ok(), Some(7200));
        assert_eq!(super::parse_duration("30d").ok(), Some(2_592_000));
        assert_eq!(super::parse_duration("42").ok(), Some(42));
        assert!(super::parse_duration("1w").is_err() && super::parse_duration("h").is_err());
    }
}
