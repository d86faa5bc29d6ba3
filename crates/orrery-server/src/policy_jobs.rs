//! Policy work that runs as jobs: async runs (`policy.run`) go through the
//! job queue module so that a run survives the node that accepted it.

use crate::api::error::ApiError;
use crate::node::Node;
use crate::service::jobs::{JobsService, QueueArgs, SubmitArgs};
use crate::service::Services;
use orrery_exec::{KindHandler, RunContext};
use serde_json::{json, Value as Json};
use std::sync::{Arc, Weak};

/// The internal queue policy jobs go to, created on first use.
pub const POLICY_QUEUE: &str = "_policies";
pub const RUN_KIND: &str = "policy.run";

impl Node {
    /// Creates [`POLICY_QUEUE`] unless it exists (a concurrent create is fine).
    pub async fn ensure_policy_queue(&self, jobs: &JobsService) -> Result<(), ApiError> {
        if jobs.queue_spec(POLICY_QUEUE).await.is_ok() {
            return Ok(());
        }
        let args = QueueArgs {
            name: POLICY_QUEUE.to_string(),
            partitions: None,
            lease_s: Some(60),
            max_attempts: Some(3),
            backoff_initial_ms: None,
            backoff_multiplier: None,
            backoff_max_ms: None,
            concurrency_limit: None,
        };
        match jobs.create_queue(args).await {
            Ok(_) | Err(ApiError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Submits a job to [`POLICY_QUEUE`], deduplicated by `dedupe_key`.
    pub async fn submit_policy_job(
        &self,
        jobs: &JobsService,
        kind: &str,
        params: Json,
        dedupe_key: Option<String>,
    ) -> Result<String, ApiError> {
        self.ensure_policy_queue(jobs).await?;
        let (job, _) = jobs
            .submit(SubmitArgs {
                queue: POLICY_QUEUE.to_string(),
                kind: kind.to_string(),
                params,
                priority: 0,
                run_at_ms: None,
                delay_ms: None,
                resources: Default::default(),
                dedupe_key,
                submitted_by: Some("policy".to_string()),
            })
            .await?;
        Ok(job.id.to_string())
    }
}

impl Node {
    /// Checks the params of the kinds this module adds when a job is
    /// submitted, so that a mistake is a 400 naming the field rather than a
    /// job that fails later. Other kinds pass untouched.
    pub async fn check_policy_job(&self, kind: &str, params: &Json) -> Result<(), ApiError> {
        let bad = |m: String| ApiError::bad("invalid_params", m);
        match kind {
            RUN_KIND => return run_id(params).map(|_| ()).map_err(bad),
            BACKTEST_KIND => {}
            _ => return Ok(()),
        }
        let p = backtest_params(params).map_err(bad)?;
        check_input_file(p.input_file).map_err(bad)?;
        // The file is read on the node that runs the job; nodes of one
        // cluster are configured alike, so the receiving node's flag stands
        // for theirs.
        if self.cfg.fs_root.is_none() {
            return Err(bad(
                "params.input_file: this node has no --fs-root; backtests read files under it"
                    .into(),
            ));
        }
        let policy = match self.policy_get(p.policy).await {
            Ok(pol) => pol,
            Err(ApiError::NotFound(m)) => return Err(bad(format!("params.policy: {m}"))),
            Err(e) => return Err(e),
        };
        for (field, v) in [
            ("version", Some(p.version)),
            ("compare_with_version", p.compare),
        ] {
            let Some(v) = v else { continue };
            match self.version_get(&policy.id, v).await {
                Ok(_) => {}
                Err(ApiError::NotFound(_)) => {
                    return Err(bad(format!(
                        "params.{field}: policy {:?} has no version {v}",
                        policy.name
                    )))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A backtest's input file: relative, inside the fs root, JSONL or CSV.
fn check_input_file(f: &str) -> Result<(), String> {
    use std::path::{Component, Path};
    let path = Path::new(f);
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "params.input_file must be a relative path under the fs root without \"..\", got {f:?}"
        ));
    }
    let lower = f.to_ascii_lowercase();
    if !(lower.ends_with(".jsonl") || lower.ends_with(".csv")) {
        return Err(format!(
            "params.input_file must name a .jsonl or .csv file, got {f:?}"
        ));
    }
    Ok(())
}

/// Evaluates an async run recorded as `running` and records its end.
struct RunHandler {
    // Weak: the engine holding this handler is owned by the services.
    node: Weak<Services>,
    rt: tokio::runtime::Handle,
}

fn run_id(params: &Json) -> Result<&str, String> {
    params
        .get("run_id")
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| "params.run_id must be a non-empty string".to_string())
}

impl KindHandler for RunHandler {
    fn validate(&self, params: &Json) -> Result<(), String> {
        run_id(params).map(|_| ())
    }

    fn run(&self, params: &Json, ctx: &RunContext) -> Result<Json, String> {
        let id = run_id(params)?;
        let node = self
            .node
            .upgrade()
            .ok_or_else(|| "the node is shutting down".to_string())?;
        let run = self
            .rt
            .block_on(node.policy_run_finish(&node.jobs, id))
            .map_err(|e| format!("run {id}: {e}"))?;
        ctx.log(&format!("run {id}: {}", run.status.as_str()));
        Ok(json!({"run_id": id, "status": run.status.as_str()}))
    }
}

/// The kinds the policy module adds to a node's execution engine.
pub fn handlers(s: &Arc<Services>) -> Vec<(String, Arc<dyn KindHandler>)> {
    let rt = tokio::runtime::Handle::current();
    vec![
        (
            RUN_KIND.to_string(),
            Arc::new(RunHandler {
                node: Arc::downgrade(s),
                rt: rt.clone(),
            }) as Arc<dyn KindHandler>,
        ),
        (
            BACKTEST_KIND.to_string(),
            Arc::new(BacktestHandler {
                node: Arc::downgrade(&s.node),
                rt,
            }) as Arc<dyn KindHandler>,
        ),
    ]
}

pub const BACKTEST_KIND: &str = "policy.backtest";

/// Most input lines a backtest reads.
const MAX_BACKTEST_INPUTS: usize = 1_000_000;
/// Examples of differing outputs kept in a backtest result.
const MAX_EXAMPLES: usize = 10;

/// `policy.backtest`: evaluates a version (and optionally a second one) on
/// every input of a JSONL or CSV file under the node's fs root, submitting
/// nothing, and reports the outcome distribution and the differences.
struct BacktestHandler {
    node: Weak<Node>,
    rt: tokio::runtime::Handle,
}

struct BacktestParams<'a> {
    policy: &'a str,
    version: u32,
    input_file: &'a str,
    compare: Option<u32>,
}

fn version_field(params: &Json, field: &str) -> Result<Option<u32>, String> {
    match params.get(field) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| format!("params.{field} must be a positive integer")),
    }
}

fn backtest_params(params: &Json) -> Result<BacktestParams<'_>, String> {
    let obj = params
        .as_object()
        .ok_or_else(|| "params must be an object".to_string())?;
    for k in obj.keys() {
        if !["policy", "version", "input_file", "compare_with_version"].contains(&k.as_str()) {
            return Err(format!(
                "unknown param {k:?} (policy, version, input_file, compare_with_version)"
            ));
        }
    }
    let s = |f: &str| {
        params
            .get(f)
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("params.{f} must be a non-empty string"))
    };
    Ok(BacktestParams {
        policy: s("policy")?,
        version: version_field(params, "version")?
            .ok_or_else(|| "params.version is required".to_string())?,
        input_file: s("input_file")?,
        compare: version_field(params, "compare_with_version")?,
    })
}

/// A CSV cell as JSON: a number or bool when it reads as one, else a string.
fn csv_cell(s: &str) -> Json {
    let t = s.trim();
    if let Ok(i) = t.parse::<i64>() {
        return json!(i);
    }
    if let Ok(f) = t.parse::<f64>() {
        if f.is_finite() {
            return json!(f);
        }
    }
    match t {
        "true" => json!(true),
        "false" => json!(false),
        _ => Json::String(t.to_string()),
    }
}

/// Inputs from a file: CSV (`.csv`: a header row, then one input per row;
/// plain comma separation, no quoting) or JSON lines (anything else).
pub fn parse_inputs(name: &str, text: &str) -> Result<Vec<Json>, String> {
    let mut out = Vec::new();
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    if name.to_ascii_lowercase().ends_with(".csv") {
        let Some((_, header)) = lines.next() else {
            return Ok(out);
        };
        let cols: Vec<&str> = header.split(',').map(str::trim).collect();
        for (i, l) in lines {
            let cells: Vec<&str> = l.split(',').collect();
            if cells.len() != cols.len() {
                return Err(format!(
                    "input_file line {}: {} cells, the header has {}",
                    i + 1,
                    cells.len(),
                    cols.len()
                ));
            }
            let m: serde_json::Map<String, Json> = cols
                .iter()
                .zip(cells)
                .map(|(c, v)| (c.to_string(), csv_cell(v)))
                .collect();
            out.push(Json::Object(m));
            if out.len() > MAX_BACKTEST_INPUTS {
                break;
            }
        }
    } else {
        for (i, l) in lines {
            out.push(
                serde_json::from_str(l)
                    .map_err(|e| format!("input_file line {}: not JSON: {e}", i + 1))?,
            );
            if out.len() > MAX_BACKTEST_INPUTS {
                break;
            }
        }
    }
    if out.len() > MAX_BACKTEST_INPUTS {
        return Err(format!(
            "input_file has more than {MAX_BACKTEST_INPUTS} inputs"
        ));
    }
    Ok(out)
}

/// The bucket an outcome counts in: the output's `decision` field when it
/// is a string, else the whole output as JSON text; failed runs count
/// under `"<failed>"`.
pub fn outcome_key(o: &orrery_policy::eval::Outcome) -> String {
    match &o.output {
        None => "<failed>".to_string(),
        Some(v) => match v.get("decision").and_then(Json::as_str) {
            Some(d) => d.to_string(),
            None => v.to_string(),
        },
    }
}

impl KindHandler for BacktestHandler {
    fn validate(&self, params: &Json) -> Result<(), String> {
        backtest_params(params).map(|_| ())
    }

    fn run(&self, params: &Json, ctx: &RunContext) -> Result<Json, String> {
        let p = backtest_params(params)?;
        let root = ctx.fs_root().ok_or_else(|| {
            "this node has no --fs-root; backtests read files under it".to_string()
        })?;
        let path = orrery_exec::confine_existing(root, "input_file", p.input_file)
            .map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("input_file {:?}: {e}", p.input_file))?;
        let inputs = parse_inputs(p.input_file, &text)?;
        ctx.log(&format!("{} inputs from {}", inputs.len(), p.input_file));
        let node = self
            .node
            .upgrade()
            .ok_or_else(|| "the node is shutting down".to_string())?;
        let base = self
            .rt
            .block_on(node.policy_backtest(p.policy, p.version, &inputs))
            .map_err(|e| e.to_string())?;
        let mut dist: std::collections::BTreeMap<String, u64> = Default::default();
        for o in &base {
            *dist.entry(outcome_key(o)).or_default() += 1;
        }
        let mut result = json!({
            "policy": p.policy,
            "version": p.version,
            "inputs": inputs.len(),
            "distribution": dist,
        });
        if let Some(cv) = p.compare {
            let other = self
                .rt
                .block_on(node.policy_backtest(p.policy, cv, &inputs))
                .map_err(|e| e.to_string())?;
            let mut cdist: std::collections::BTreeMap<String, u64> = Default::default();
            let mut differ = 0u64;
            let mut examples = Vec::new();
            for (i, (a, b)) in base.iter().zip(&other).enumerate() {
                *cdist.entry(outcome_key(b)).or_default() += 1;
                if a.output != b.output || a.error != b.error {
                    differ += 1;
                    if examples.len() < MAX_EXAMPLES {
                        examples.push(json!({
                            "index": i,
                            "input": inputs[i],
                            "output": a.output,
                            "compare_output": b.output,
                            "error": a.error,
                            "compare_error": b.error,
                        }));
                    }
                }
            }
            result["compare"] = json!({
                "version": cv,
                "distribution": cdist,
                "differ": differ,
                "examples": examples,
            });
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_from_csv_and_jsonl() {
        let csv = "income,debt,customer,vip\n100, 80 ,alice,true\n\n2.5,1,bob,false\n";
        assert_eq!(
            parse_inputs("h.CSV", csv).unwrap(),
            vec![
                json!({"income": 100, "debt": 80, "customer": "alice", "vip": true}),
                json!({"income": 2.5, "debt": 1, "customer": "bob", "vip": false}),
            ]
        );
        let e = parse_inputs("h.csv", "a,b\n1\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let jl = "{\"a\": 1}\n\n{\"a\": [2]}\n";
        assert_eq!(
            parse_inputs("h.jsonl", jl).unwrap(),
            vec![json!({"a": 1}), json!({"a": [2]})]
        );
        let e = parse_inputs("h.jsonl", "{\"a\": 1}\nnope\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn input_files_are_relative_jsonl_or_csv() {
        for ok in ["h.jsonl", "./dir/h.CSV", "a/b/c.jsonl"] {
            assert!(check_input_file(ok).is_ok(), "{ok}");
        }
        for (bad, needle) in [
            ("../h.jsonl", "relative"),
            ("/etc/h.csv", "relative"),
            ("a/../../h.csv", "relative"),
            ("h.txt", ".jsonl or .csv"),
            ("h", ".jsonl or .csv"),
        ] {
            let e = check_input_file(bad).unwrap_err();
            assert!(
                e.contains(needle) && e.contains("params.input_file"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn backtest_params_are_checked() {
        let ok = json!({"policy": "p", "version": 2, "input_file": "x.jsonl"});
        let p = backtest_params(&ok).unwrap();
        assert_eq!((p.policy, p.version, p.compare), ("p", 2, None));
        for (bad, needle) in [
            (json!({"version": 1, "input_file": "x"}), "params.policy"),
            (json!({"policy": "p", "input_file": "x"}), "params.version"),
            (
                json!({"policy": "p", "version": 0, "input_file": "x"}),
                "params.version",
            ),
            (
                json!({"policy": "p", "version": 1, "input_file": "x", "compare_with_version": "2"}),
                "compare_with_version",
            ),
            (
                json!({"policy": "p", "version": 1, "input_file": "x", "extra": 1}),
                "unknown param",
            ),
        ] {
            let e = backtest_params(&bad).err().unwrap();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
