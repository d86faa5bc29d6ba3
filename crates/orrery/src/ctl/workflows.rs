//! `orreryctl workflows start|get|cancel` (docs/api.md, "Workflows").
//! Workflows have no gRPC service yet, so these speak the REST API, which
//! every node serves on the same client address as gRPC.

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum WorkflowsCmd {
    /// Start a workflow from a JSON definition file (the REST body:
    /// `{"queue", "steps": [...], "input"}`; `-` reads stdin).
    Start {
        #[arg(long)]
        file: PathBuf,
    },
    /// A workflow with each step's state, jobs and result.
    Get { id: String },
    /// Cancel a workflow: no further step starts, its jobs are cancelled.
    Cancel { id: String },
}

/// Where and how to reach the REST API.
pub struct Rest {
    pub endpoints: Vec<String>,
    pub ca_cert: Option<PathBuf>,
    pub token: Option<String>,
}

impl Rest {
    fn client(&self) -> Result<reqwest::Client> {
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(60));
        if let Some(ca) = &self.ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            b = b
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(b.build()?)
    }

    /// Sends the request to each endpoint in turn until one answers.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let http = self.client()?;
        let scheme = if self.ca_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let mut last = anyhow!("no endpoint");
        for e in &self.endpoints {
            let mut r = http.request(method.clone(), format!("{scheme}://{e}{path}"));
            if let Some(t) = &self.token {
                r = r.bearer_auth(t);
            }
            if let Some(b) = body {
                r = r.json(b);
            }
            match r.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let v: Value = resp.json().await.unwrap_or(Value::Null);
                    if status.is_success() {
                        return Ok(v);
                    }
                    let msg = v["error"]["message"].as_str().unwrap_or("");
                    bail!(
                        "{} {}: {msg}",
                        status.as_u16(),
                        v["error"]["code"].as_str().unwrap_or("")
                    );
                }
                Err(err) => last = anyhow!("{e}: {err}"),
            }
        }
        Err(last)
    }
}

fn print(w: &Value, as_json: bool) -> Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(w)?);
        return Ok(());
    }
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    println!(
        "workflow {} ({}) on queue {}",
        s(&w["id"]),
        s(&w["state"]),
        s(&w["queue"])
    );
    if let Some(e) = w["error"].as_str() {
        println!("error: {e}");
    }
    println!("{:<24} {:<10} {:>5} DEPENDS ON", "STEP", "STATE", "JOBS");
    for st in w["steps"].as_array().into_iter().flatten() {
        let deps: Vec<String> = st["depends_on"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        println!(
            "{:<24} {:<10} {:>5} {}",
            s(&st["name"]),
            s(&st["state"]),
            st["jobs"].as_array().map_or(0, Vec::len),
            deps.join(",")
        );
    }
    Ok(())
}

pub async fn run(rest: &Rest, cmd: WorkflowsCmd, as_json: bool) -> Result<()> {
    use reqwest::Method;
    let w = match cmd {
        WorkflowsCmd::Start { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let def: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            rest.call(Method::POST, "/v1/workflows", Some(&def)).await?
        }
        WorkflowsCmd::Get { id } => {
            rest.call(Method::GET, &format!("/v1/workflows/{id}"), None)
                .await?
        }
        WorkflowsCmd::Cancel { id } => {
            rest.call(Method::POST, &format!("/v1/workflows/{id}/cancel"), None)
                .await?
        }
    };
    print(&w, as_json)
}
