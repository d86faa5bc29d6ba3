//! Validation and compilation of the node types added with cluster version
//! 4: `decision_table`, `terminate` and `sub_policy` (the older types are
//! compiled in [`crate::graph`]).
//!
//! Every error names the node ([`PolicyError::Invalid`]), or is a
//! [`PolicyError::TooLarge`] naming it for the limits of [`crate::limits`].

use crate::graph::{check_keys, err, expression, obj, valid_name, CompiledKind, Expression};
use crate::{limits, PolicyError};
use serde_json::Value as Json;
use std::collections::BTreeSet;

/// `{hit_policy: "first"|"collect", rules: [{when, output: {name: CEL}}],
/// default?: {name: CEL}}`. Like a DMN or ZEN table, the rows share their
/// output columns: every row (and the default) names the same outputs.
pub(crate) fn decision_table(
    node: &str,
    cfg: &Json,
    input_fields: &BTreeSet<String>,
    scope: &BTreeSet<String>,
    assigned: &mut BTreeSet<String>,
) -> Result<CompiledKind, PolicyError> {
    check_keys(node, cfg, &["hit_policy", "rules", "default"])?;
    let collect = match cfg.get("hit_policy").and_then(Json::as_str) {
        Some("first") => false,
        Some("collect") => true,
        _ => {
            return Err(err(
                node,
                "config.hit_policy must be \"first\" or \"collect\"",
            ))
        }
    };
    let rules = cfg
        .get("rules")
        .and_then(Json::as_array)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| err(node, "config.rules must be a non-empty list of rules"))?;
    if rules.len() > limits::MAX_TABLE_ROWS {
        return Err(PolicyError::TooLarge(format!(
            "node {node:?}: the table has {} rules; at most {} are allowed",
            rules.len(),
            limits::MAX_TABLE_ROWS
        )));
    }
    // The columns are the first rule's outputs; sorted, so that every row
    // lists its expressions in the same order.
    let first = rules[0]
        .get("output")
        .and_then(Json::as_object)
        .ok_or_else(|| err(node, "rules[0].output must be an object of CEL expressions"))?;
    let columns: Vec<String> = first
        .keys()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if columns.is_empty() {
        return Err(err(node, "rules[0].output must name at least one output"));
    }
    if columns.len() > limits::MAX_TABLE_COLUMNS {
        return Err(PolicyError::TooLarge(format!(
            "node {node:?}: the table has {} outputs; at most {} are allowed",
            columns.len(),
            limits::MAX_TABLE_COLUMNS
        )));
    }
    for c in &columns {
        if !valid_name(c) {
            return Err(err(
                node,
                format!("cannot assign {c:?}: not an identifier, or reserved"),
            ));
        }
    }
    let outputs = |what: &str, m: &serde_json::Map<String, Json>| {
        let names: BTreeSet<&String> = m.keys().collect();
        if names.len() != columns.len() || !columns.iter().all(|c| names.contains(c)) {
            return Err(err(
                node,
                format!(
                    "{what} must name exactly the outputs of rules[0] ({}), got ({})",
                    columns.join(", "),
                    m.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        columns
            .iter()
            .map(|c| {
                let src = m.get(c).unwrap_or(&Json::Null);
                expression(node, &format!("{what}.{c}"), src, input_fields, scope)
            })
            .collect::<Result<Vec<Expression>, _>>()
    };
    let mut rows = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let what = format!("rules[{i}]");
        if !rule.is_object() {
            return Err(err(
                node,
                format!("{what} must be an object {{when, output}}"),
            ));
        }
        check_keys(node, rule, &["when", "output"])
            .map_err(|_| err(node, format!("{what} takes only `when` and `output`")))?;
        let when = expression(
            node,
            &format!("{what}.when"),
            rule.get("when").unwrap_or(&Json::Null),
            input_fields,
            scope,
        )?;
        let out = rule
            .get("output")
            .and_then(Json::as_object)
            .ok_or_else(|| {
                err(
                    node,
                    format!("{what}.output must be an object of CEL expressions"),
                )
            })?;
        rows.push((when, outputs(&format!("{what}.output"), out)?));
    }
    let default = match cfg.get("default") {
        None => None,
        Some(d) => Some(outputs(
            "default",
            d.as_object()
                .ok_or_else(|| err(node, "config.default must be an object of CEL expressions"))?,
        )?),
    };
    assigned.extend(columns.iter().cloned());
    Ok(CompiledKind::DecisionTable {
        collect,
        columns,
        rows,
        default,
    })
}

/// A terminate status: an identifier such as `approved`.
fn valid_status(s: &str) -> bool {
    let mut c = s.chars();
    s.len() <= 64
        && matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// `{status: "<identifier>", reason?: CEL}`; terminal (checked with the
/// edges in [`crate::graph`]).
pub(crate) fn terminate(
    node: &str,
    cfg: &Json,
    input_fields: &BTreeSet<String>,
    scope: &BTreeSet<String>,
) -> Result<CompiledKind, PolicyError> {
    check_keys(node, cfg, &["status", "reason"])?;
    let status = cfg
        .get("status")
        .and_then(Json::as_str)
        .filter(|s| valid_status(s))
        .ok_or_else(|| {
            err(
                node,
                "config.status must be an identifier of 1-64 characters, such as \"approved\"",
            )
        })?;
    let reason = cfg
        .get("reason")
        .map(|r| expression(node, "reason", r, input_fields, scope))
        .transpose()?;
    Ok(CompiledKind::Terminate {
        status: status.to_string(),
        reason,
    })
}

/// A policy name as the server accepts it (`check_name`).
fn valid_policy_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `{policy: "<name>", version?: N, input: {field: CEL}, output?: "<name>"}`.
/// Whether the policy and version exist is the server's check (it owns
/// the catalog), made when the version is created.
pub(crate) fn sub_policy(
    node: &str,
    cfg: &Json,
    input_fields: &BTreeSet<String>,
    scope: &BTreeSet<String>,
    assigned: &mut BTreeSet<String>,
) -> Result<CompiledKind, PolicyError> {
    check_keys(node, cfg, &["policy", "version", "input", "output"])?;
    let policy = cfg
        .get("policy")
        .and_then(Json::as_str)
        .filter(|s| valid_policy_name(s))
        .ok_or_else(|| {
            err(
                node,
                "config.policy must be a policy name (1-128 characters of [A-Za-z0-9._-])",
            )
        })?;
    let version = match cfg.get("version") {
        None | Some(Json::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|v| (1..=u64::from(u32::MAX)).contains(v))
                .map(|v| v as u32)
                .ok_or_else(|| err(node, "config.version must be a version number (1, 2, ...)"))?,
        ),
    };
    let mut input = Vec::new();
    for (field, src) in obj(node, cfg, "input")? {
        input.push((
            field.clone(),
            expression(node, &format!("input.{field}"), src, input_fields, scope)?,
        ));
    }
    let name =
        match cfg.get("output") {
            Some(v) => v
                .as_str()
                .filter(|s| valid_name(s))
                .ok_or_else(|| err(node, "config.output must be an identifier, not reserved"))?,
            None if valid_name(node) => node,
            None => return Err(err(
                node,
                "config.output is needed: the node id is not an identifier to bind the result to",
            )),
        };
    assigned.insert(name.to_string());
    Ok(CompiledKind::SubPolicy {
        policy: policy.to_string(),
        version,
        input,
        name: name.to_string(),
    })
}
