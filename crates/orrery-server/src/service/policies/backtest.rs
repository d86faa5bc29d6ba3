//! `policy.backtest`: a version (and optionally a second one) evaluated on
//! every input of a JSONL or CSV file under the node's fs root, submitting
//! nothing; the result is the outcome distribution and the differences.

use super::jobs::upgrade;
use super::PoliciesService;
use orrery_exec::{KindHandler, RunContext};
use serde_json::{json, Value as Json};
use std::sync::Weak;

/// A backtest's input file: relative, inside the fs root, JSONL or CSV.
pub(super) fn check_input_file(f: &str) -> Result<(), String> {
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

pub const BACKTEST_KIND: &str = "policy.backtest";

/// Most input lines a backtest reads.
const MAX_BACKTEST_INPUTS: usize = 1_000_000;
/// Examples of differing outputs kept in a backtest result.
const MAX_EXAMPLES: usize = 10;

/// Runs `policy.backtest` jobs (see the module's comment).
pub(super) struct BacktestHandler {
    pub(super) svc: Weak<PoliciesService>,
    pub(super) rt: tokio::runtime::Handle,
}

pub(super) struct BacktestParams<'a> {
    pub(super) policy: &'a str,
    pub(super) version: u32,
    pub(super) input_file: &'a str,
    pub(super) compare: Option<u32>,
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

pub(super) fn backtest_params(params: &Json) -> Result<BacktestParams<'_>, String> {
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
fn parse_inputs(name: &str, text: &str) -> Result<Vec<Json>, String> {
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
fn outcome_key(o: &orrery_policy::eval::Outcome) -> String {
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
        // Read through the root's directory handle: no symlink or `..`
        // can lead the read outside --fs-root (docs/security.md).
        let fs = ctx.fs().ok_or_else(|| {
            "this node has no --fs-root; backtests read files under it".to_string()
        })?;
        let text = fs
            .read_to_string("input_file", p.input_file)
            .map_err(|e| e.to_string())?;
        let inputs = parse_inputs(p.input_file, &text)?;
        ctx.log(&format!("{} inputs from {}", inputs.len(), p.input_file));
        let svc = upgrade(&self.svc)?;
        let base = self
            .rt
            .block_on(svc.backtest(p.policy, p.version, &inputs))
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
                .block_on(svc.backtest(p.policy, cv, &inputs))
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
