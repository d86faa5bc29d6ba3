//! The built-in job kinds and their parameter validation.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, MetadataExt, OpenOptions};

use serde_json::{Map, Value};

pub(crate) fn validate(kind: &str, params: &Value) -> Result<(), String> {
    match kind {
        "fs.summarize" => validate_summarize(params),
        "fs.csv_transform" => validate_csv(params),
        "image.thumbnail" => validate_thumbnail(params),
        "command" => validate_command(params),
        "dataset.scan" => validate_dataset_scan(params),
        "image.caption" => caption::validate(params),
        _ => Ok(()),
    }
}

fn object<'a>(
    kind: &str,
    params: &'a Value,
    allowed: &[&str],
) -> Result<&'a Map<String, Value>, String> {
    let obj = params
        .as_object()
        .ok_or_else(|| format!("params of kind '{kind}' must be a JSON object"))?;
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!(
                "params.{k}: unknown field for kind '{kind}' (allowed: {})",
                allowed.join(", ")
            ));
        }
    }
    Ok(obj)
}

fn req_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(format!("params.{field} is required")),
        Some(Value::String(s)) if s.is_empty() => Err(format!("params.{field} must not be empty")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("params.{field} must be a string")),
    }
}

fn opt_u64(
    obj: &Map<String, Value>,
    field: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "params.{field} must be an integer in {min}..={max}"
            )),
        },
    }
}

fn validate_summarize(p: &Value) -> Result<(), String> {
    let o = object("fs.summarize", p, &["path", "max_depth"])?;
    req_str(o, "path")?;
    opt_u64(o, "max_depth", 0, 4096)?;
    Ok(())
}

/// The filter condition of `fs.csv_transform`.
pub(crate) const FILTER_OPS: &[&str] = &["eq", "ne", "lt", "le", "gt", "ge", "contains"];

fn validate_csv(p: &Value) -> Result<(), String> {
    let o = object(
        "fs.csv_transform",
        p,
        &["input_glob", "output_dir", "select", "rename", "filter"],
    )?;
    req_str(o, "input_glob")?;
    req_str(o, "output_dir")?;
    match o.get("select") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            if a.is_empty() {
                return Err("params.select must name at least one column".into());
            }
            for (i, c) in a.iter().enumerate() {
                if !c.is_string() {
                    return Err(format!(
                        "params.select[{i}] must be a string (a column name)"
                    ));
                }
            }
        }
        Some(_) => return Err("params.select must be an array of column names".into()),
    }
    match o.get("rename") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v {
                    Value::String(s) if !s.is_empty() => {}
                    _ => {
                        return Err(format!(
                            "params.rename.{k} must be a non-empty string (the new name)"
                        ))
                    }
                }
            }
        }
        Some(_) => return Err("params.rename must be an object {old: new}".into()),
    }
    match o.get("filter") {
        None | Some(Value::Null) => {}
        Some(Value::Object(f)) => {
            for k in f.keys() {
                if !["column", "op", "value"].contains(&k.as_str()) {
                    return Err(format!(
                        "params.filter.{k}: unknown field (allowed: column, op, value)"
                    ));
                }
            }
            match f.get("column") {
                Some(Value::String(s)) if !s.is_empty() => {}
                _ => return Err("params.filter.column must be a non-empty string".into()),
            }
            match f.get("op") {
                Some(Value::String(s)) if FILTER_OPS.contains(&s.as_str()) => {}
                _ => {
                    return Err(format!(
                        "params.filter.op must be one of {}",
                        FILTER_OPS.join(", ")
                    ))
                }
            }
            match f.get("value") {
                Some(Value::String(_)) | Some(Value::Number(_)) | Some(Value::Bool(_)) => {}
                _ => return Err("params.filter.value must be a string or a number".into()),
            }
        }
        Some(_) => return Err("params.filter must be an object {column, op, value}".into()),
    }
    Ok(())
}

fn validate_thumbnail(p: &Value) -> Result<(), String> {
    let o = object(
        "image.thumbnail",
        p,
        &["input_glob", "output_dir", "max_side", "dataset", "path"],
    )?;
    // One image (`path`, e.g. a dataset item) or every match of a glob.
    match (o.get("input_glob"), o.get("path")) {
        (Some(_), Some(_)) => return Err("give params.input_glob or params.path, not both".into()),
        (_, Some(_)) => {
            req_str(o, "path")?;
        }
        _ => {
            req_str(o, "input_glob")?;
        }
    }
    if o.contains_key("dataset") {
        req_str(o, "dataset")?;
    }
    req_str(o, "output_dir")?;
    if opt_u64(o, "max_side", 1, 16384)?.is_none() {
        return Err("params.max_side is required".into());
    }
    Ok(())
}

fn validate_dataset_scan(p: &Value) -> Result<(), String> {
    let o = object("dataset.scan", p, &["path", "glob", "after", "limit"])?;
    match o.get("path") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(_) => return Err("params.path must be a string".into()),
    }
    req_str(o, "glob")?;
    match o.get("after") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(_) => return Err("params.after must be a string (a path)".into()),
    }
    opt_u64(o, "limit", 1, dataset_scan::MAX_LIMIT)?;
    Ok(())
}

fn validate_command(p: &Value) -> Result<(), String> {
    let o = object("command", p, &["argv", "env", "cwd", "timeout_s"])?;
    match o.get("argv") {
        None | Some(Value::Null) => return Err("params.argv is required".into()),
        Some(Value::Array(a)) => {
            if a.is_empty() {
                return Err("params.argv must not be empty".into());
            }
            for (i, s) in a.iter().enumerate() {
                match s {
                    Value::String(s) if !s.contains('\0') && (i > 0 || !s.is_empty()) => {}
                    _ => {
                        return Err(format!(
                            "params.argv[{i}] must be a string (the program first, non-empty)"
                        ))
                    }
                }
            }
        }
        Some(_) => return Err("params.argv must be an array of strings".into()),
    }
    match o.get("env") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if k.is_empty() || k.contains('=') || k.contains('\0') {
                    return Err(format!("params.env: invalid variable name '{k}'"));
                }
                if let Some(why) = command_env::reserved_env(k) {
                    return Err(format!("params.env.{k}: a job cannot set it ({why})"));
                }
                if !v.is_string() {
                    return Err(format!("params.env.{k} must be a string"));
                }
            }
        }
        Some(_) => return Err("params.env must be an object {NAME: value}".into()),
    }
    match o.get("cwd") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(_) => return Err("params.cwd must be a non-empty string".into()),
    }
    match o.get("timeout_s") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_f64() {
            Some(t) if t > 0.0 && t <= 7.0 * 86400.0 => {}
            _ => return Err("params.timeout_s must be a number of seconds in (0, 604800]".into()),
        },
    }
    Ok(())
}

pub(crate) mod caption;
pub(crate) mod command;
pub(crate) mod command_env;
pub(crate) mod csv_transform;
pub(crate) mod dataset_scan;
pub(crate) mod fs_summarize;
pub(crate) mod pipeline;
pub(crate) mod step;
pub(crate) mod thumbnail;

/// How many inputs share each file name (outputs are flat in `output_dir`).
pub(crate) fn name_counts(inputs: &[PathBuf]) -> HashMap<OsString, usize> {
    let mut m = HashMap::new();
    for i in inputs {
        if let Some(n) = i.file_name() {
            *m.entry(n.to_owned()).or_insert(0) += 1;
        }
    }
    m
}

/// The output name of `input` (root-relative) in `out_dir`, refusing
/// collisions: two inputs with the same name, or an output that is its own
/// input (same file, whatever the path: compared by device and inode of the
/// opened input). Returns the name and the output's root-relative path.
pub(crate) fn output_for(
    input: &Path,
    opened: &std::fs::File,
    out_dir: &Dir,
    out_rel: &Path,
    names: &HashMap<OsString, usize>,
) -> Result<(OsString, PathBuf), String> {
    let name = input.file_name().ok_or("input has no file name")?;
    if names.get(name).copied().unwrap_or(0) > 1 {
        return Err(
            "another matched file has the same name; outputs would collide in output_dir".into(),
        );
    }
    let inp = opened.metadata().map_err(|e| e.to_string())?;
    if let Ok(out) = out_dir.metadata(name) {
        if out.dev() == inp.dev() && out.ino() == inp.ino() {
            return Err("output would overwrite the input (output_dir is its directory)".into());
        }
    }
    Ok((name.to_owned(), out_rel.join(name)))
}

/// Writes the output `name` in `out_dir`: `write` fills `NAME.partial`,
/// which is then renamed into place, so a failed file never leaves a
/// half-written output; on failure the partial file is removed. Everything
/// goes through the `out_dir` handle (never a path): the partial file is
/// created with O_CREAT|O_EXCL, which does not follow a symlink, and rename
/// replaces a symlink rather than writing through it. A symlink already at
/// either name is refused outright, for a clear error.
pub(crate) fn write_output(
    out_dir: &Dir,
    name: &OsStr,
    write: impl FnOnce(std::fs::File) -> Result<(), String>,
) -> Result<(), String> {
    let mut partial = name.to_owned();
    partial.push(".partial");
    for n in [name, partial.as_os_str()] {
        if let Ok(md) = out_dir.symlink_metadata(n) {
            if md.file_type().is_symlink() {
                return Err(format!(
                    "output '{}' is a symlink; refusing to write through it",
                    n.to_string_lossy()
                ));
            }
        }
    }
    // A stale partial file of an attempt that died is ours to replace.
    match out_dir.remove_file(&partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", partial.to_string_lossy())),
    }
    let file = out_dir
        .open_with(&partial, OpenOptions::new().write(true).create_new(true))
        .map_err(|e| format!("{}: {e}", partial.to_string_lossy()))?;
    let done = write(file.into_std()).and_then(|()| {
        out_dir
            .rename(&partial, out_dir, name)
            .map_err(|e| format!("{}: {e}", name.to_string_lossy()))
    });
    if done.is_err() {
        let _ = out_dir.remove_file(&partial);
    }
    done
}

/// Runs a blocking built-in kind (everything but `command`).
pub(crate) fn run_blocking(
    kind: &str,
    params: &Value,
    ctx: &crate::RunContext,
) -> Result<Value, String> {
    match kind {
        "fs.summarize" => fs_summarize::run(params, ctx),
        "fs.csv_transform" => csv_transform::run(params, ctx),
        "image.thumbnail" => thumbnail::run(params, ctx),
        "dataset.scan" => dataset_scan::run(params, ctx),
        other => Err(format!("kind '{other}' is not a built-in blocking kind")),
    }
}
