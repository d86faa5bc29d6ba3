//! `fs.csv_transform {input_glob, output_dir, select?, rename?, filter?}`.
//!
//! Each matching CSV (with a header row) is transformed in parallel and
//! written under `output_dir` with the same file name. Order of operations:
//! `filter` (on the input columns), then `select` (output column order), then
//! `rename`. Filter: `{column, op, value}` with op one of
//! eq|ne|lt|le|gt|ge|contains; when both the cell and `value` parse as numbers
//! the comparison is numeric, otherwise it compares the strings
//! (byte-wise); `contains` is a substring test.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::PathBuf;

use cap_std::fs::Dir;

use rayon::prelude::*;
use serde_json::{json, Value};

use crate::confine::shown;
use crate::RunContext;

struct Filter {
    column: String,
    op: String,
    value: String,
}

struct Spec {
    select: Option<Vec<String>>,
    rename: HashMap<String, String>,
    filter: Option<Filter>,
}

fn value_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn matches(f: &Filter, cell: &str) -> bool {
    if f.op == "contains" {
        return cell.contains(&f.value);
    }
    let ord = match (cell.trim().parse::<f64>(), f.value.trim().parse::<f64>()) {
        (Ok(a), Ok(b)) => a.partial_cmp(&b),
        _ => Some(cell.cmp(f.value.as_str())),
    };
    let Some(ord) = ord else { return f.op == "ne" };
    match f.op.as_str() {
        "eq" => ord == Ordering::Equal,
        "ne" => ord != Ordering::Equal,
        "lt" => ord == Ordering::Less,
        "le" => ord != Ordering::Greater,
        "gt" => ord == Ordering::Greater,
        "ge" => ord != Ordering::Less,
        _ => false,
    }
}

fn transform(
    spec: &Spec,
    input: std::fs::File,
    out_dir: &Dir,
    name: &OsStr,
    ctx: &RunContext,
) -> Result<(u64, u64), String> {
    let mut rdr = csv::Reader::from_reader(input);
    let headers = rdr.headers().map_err(|e| e.to_string())?.clone();
    let index = |name: &str, what: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("{what} column '{name}' is not in the header"))
    };
    let cols: Vec<usize> = match &spec.select {
        Some(sel) => sel
            .iter()
            .map(|c| index(c, "select"))
            .collect::<Result<_, _>>()?,
        None => (0..headers.len()).collect(),
    };
    for old in spec.rename.keys() {
        if !cols.iter().any(|&i| &headers[i] == old) {
            return Err(format!(
                "rename column '{old}' is not in the output columns"
            ));
        }
    }
    let filter_col = match &spec.filter {
        Some(f) => Some(index(&f.column, "filter")?),
        None => None,
    };
    let out_header: Vec<&str> = cols
        .iter()
        .map(|&i| {
            spec.rename
                .get(&headers[i])
                .map(String::as_str)
                .unwrap_or(&headers[i])
        })
        .collect();
    let mut counts = (0u64, 0u64);
    super::write_output(out_dir, name, |file| {
        let mut wtr = csv::Writer::from_writer(file);
        wtr.write_record(&out_header).map_err(|e| e.to_string())?;
        let (rows_in, rows_out) = &mut counts;
        let mut rec = csv::StringRecord::new();
        while rdr.read_record(&mut rec).map_err(|e| e.to_string())? {
            *rows_in += 1;
            if *rows_in % 4096 == 0 && ctx.is_cancelled() {
                return Err("cancelled".to_string());
            }
            if let (Some(f), Some(i)) = (&spec.filter, filter_col) {
                if !matches(f, rec.get(i).unwrap_or("")) {
                    continue;
                }
            }
            wtr.write_record(cols.iter().map(|&i| rec.get(i).unwrap_or("")))
                .map_err(|e| e.to_string())?;
            *rows_out += 1;
        }
        wtr.flush().map_err(|e| e.to_string())
    })?;
    Ok(counts)
}

/// Output path, rows in, rows out.
type Done = (PathBuf, u64, u64);

pub(crate) fn run(params: &Value, ctx: &RunContext) -> Result<Value, String> {
    let fs = ctx
        .fs()
        .ok_or("fs.csv_transform needs a node with --fs-root")?;
    let glob = params
        .get("input_glob")
        .and_then(Value::as_str)
        .ok_or("params.input_glob is required")?;
    let out = params
        .get("output_dir")
        .and_then(Value::as_str)
        .ok_or("params.output_dir is required")?;
    let spec = Spec {
        select: params
            .get("select")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(value_string).collect()),
        rename: params
            .get("rename")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), value_string(v)))
                    .collect()
            })
            .unwrap_or_default(),
        filter: params
            .get("filter")
            .and_then(Value::as_object)
            .map(|f| Filter {
                column: f.get("column").map(value_string).unwrap_or_default(),
                op: f.get("op").map(value_string).unwrap_or_default(),
                value: f.get("value").map(value_string).unwrap_or_default(),
            }),
    };
    let inputs = fs
        .glob("params.input_glob", glob)
        .map_err(|e| e.to_string())?;
    let (out_rel, out_dir) = fs
        .output_dir("params.output_dir", out)
        .map_err(|e| e.to_string())?;
    let names = super::name_counts(&inputs);
    ctx.log(&format!("{} input file(s)", inputs.len()));
    let results: Vec<(PathBuf, Result<Done, String>)> = inputs
        .par_iter()
        .map(|input| {
            let r = (|| {
                if ctx.is_cancelled() {
                    return Err("cancelled".to_string());
                }
                let file = fs.dir().open(input).map_err(|e| e.to_string())?.into_std();
                let (name, output) = super::output_for(input, &file, &out_dir, &out_rel, &names)?;
                let (i, o) = transform(&spec, file, &out_dir, &name, ctx)?;
                Ok((output, i, o))
            })();
            (input.clone(), r)
        })
        .collect();
    if ctx.is_cancelled() {
        return Err("cancelled".into());
    }
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for (input, r) in results {
        match r {
            Ok((output, rows_in, rows_out)) => {
                ctx.log(&format!(
                    "{}: {rows_in} rows in, {rows_out} out",
                    shown(&input)
                ));
                files.push(json!({"input": shown(&input), "output": shown(&output), "rows_in": rows_in, "rows_out": rows_out}));
            }
            Err(e) => {
                ctx.log(&format!("{}: {e}", shown(&input)));
                errors.push(json!({"input": shown(&input), "error": e}));
            }
        }
    }
    Ok(json!({"files": files, "errors": errors}))
}
