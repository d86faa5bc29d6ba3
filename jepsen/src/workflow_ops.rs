//! The `workflow` workload's operations against the REST API: start the
//! diamond of [`crate::check::workflow::DAG`], claim and complete its step
//! jobs as an external worker, and the final read of every workflow.

use crate::check::workflow::DAG;
use crate::history::OpType;
use crate::workload::{err_text, status_text, write_outcome, Client, QUEUE, QUEUE_LEASE_S};
use reqwest::StatusCode;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// Kind of the workflows' step jobs: only the test's processes claim them.
pub const WF_KIND: &str = "jepsen.wf";

type Outcome = (OpType, Value, Option<String>);

impl Client {
    /// Starts a workflow; ok value: its id.
    pub(crate) async fn start_workflow(&self, element: u64, node: u64) -> Outcome {
        let steps: Vec<Value> = DAG
            .iter()
            .map(|(name, deps)| json!({"name": name, "kind": WF_KIND, "depends_on": deps}))
            .collect();
        let r = self
            .http
            .post(format!("{}/v1/workflows", self.base(node)))
            .json(&json!({"queue": QUEUE, "steps": steps, "input": {"element": element}}))
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                Ok(v) => match v["id"].as_str() {
                    Some(id) => {
                        self.started
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(id.to_string());
                        (OpType::Ok, json!(id), None)
                    }
                    None => (OpType::Info, Value::Null, Some(format!("no id in {v}"))),
                },
                Err(e) => (OpType::Info, Value::Null, Some(err_text(&e))),
            },
            other => {
                let (kind, _, e) = write_outcome(other, Value::Null).await;
                (kind, Value::Null, e)
            }
        }
    }

    /// Leases one step job; ok value `{"job", "token", "workflow", "step"}`
    /// (the last two from the job's params).
    pub(crate) async fn claim_step(&self, node: u64) -> Outcome {
        let r = self
            .http
            .post(format!("{}/v1/queues/{QUEUE}/claim", self.base(node)))
            .json(&json!({"worker_id": "jepsen-wf", "kinds": [WF_KIND], "lease_s": QUEUE_LEASE_S, "wait_s": 0}))
            .send()
            .await;
        match r {
            Ok(r) if r.status() == StatusCode::NO_CONTENT => {
                (OpType::Fail, Value::Null, Some("nothing to claim".into()))
            }
            Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                Ok(v) => {
                    let w = &v["params"]["workflow"];
                    match (v["id"].as_str(), v["token"].as_u64()) {
                        (Some(id), Some(t)) => (
                            OpType::Ok,
                            json!({"job": id, "token": t, "workflow": w["id"], "step": w["step"]}),
                            None,
                        ),
                        _ => (
                            OpType::Info,
                            Value::Null,
                            Some(format!("no id/token in {v}")),
                        ),
                    }
                }
                Err(e) => (OpType::Info, Value::Null, Some(err_text(&e))),
            },
            other => write_outcome(other, Value::Null).await,
        }
    }

    /// Completes a claimed step job (`claimed`: the claim's ok value).
    pub(crate) async fn complete_step(&self, claimed: &Value, node: u64) -> Outcome {
        let job = claimed["job"].as_str().unwrap_or_default();
        let r = self
            .http
            .post(format!("{}/v1/jobs/{job}/complete", self.base(node)))
            .json(&json!({"token": claimed["token"], "result": {"step": claimed["step"]}}))
            .send()
            .await;
        write_outcome(r, claimed.clone()).await
    }

    /// Every workflow with a job in the test queue, and every one this
    /// client saw acknowledged: `{"workflows": {id: {"state", "steps":
    /// {name: [job ids]}}}}`. Any error fails the read (it is retried).
    pub(crate) async fn read_workflows(&self, node: u64) -> Outcome {
        let mut ids: BTreeSet<String> = self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut cursor = String::new();
        loop {
            let url = format!(
                "{}/v1/jobs?queue={QUEUE}&limit=1000&cursor={cursor}",
                self.base(node)
            );
            let v = match self.get_json(url).await {
                Ok(Some(v)) => v,
                Ok(None) => return (OpType::Fail, Value::Null, Some("no job list".into())),
                Err(e) => return (OpType::Fail, Value::Null, Some(e)),
            };
            for j in v["jobs"].as_array().into_iter().flatten() {
                if let Some(id) = j["params"]["workflow"]["id"].as_str() {
                    ids.insert(id.to_string());
                }
            }
            match v["next_cursor"].as_str() {
                Some(c) if !c.is_empty() => cursor = c.to_string(),
                _ => break,
            }
        }
        let mut out = Map::new();
        for id in ids {
            let url = format!("{}/v1/workflows/{id}", self.base(node));
            let w = match self.get_json(url).await {
                Ok(Some(w)) => w,
                Ok(None) => continue,
                Err(e) => return (OpType::Fail, Value::Null, Some(e)),
            };
            let steps: Map<String, Value> = w["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    let jobs: Vec<Value> = s["jobs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|j| j["id"].clone())
                        .collect();
                    (
                        s["name"].as_str().unwrap_or_default().to_string(),
                        json!(jobs),
                    )
                })
                .collect();
            out.insert(id, json!({"state": w["state"], "steps": steps}));
        }
        (OpType::Ok, json!({"workflows": out}), None)
    }

    /// A GET's JSON body; `None` for a 404.
    async fn get_json(&self, url: String) -> Result<Option<Value>, String> {
        match self.http.get(url).send().await {
            Ok(r) if r.status() == StatusCode::NOT_FOUND => Ok(None),
            Ok(r) if r.status().is_success() => r.json().await.map(Some).map_err(|e| err_text(&e)),
            Ok(r) => Err(status_text(r).await),
            Err(e) => Err(err_text(&e)),
        }
    }
}
