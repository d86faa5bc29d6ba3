//! Engine kinds as workflow steps (`image.thumbnail`, `image.caption`).
//!
//! A step's job carries `{"workflow", "input", "params", "deps", "item"?,
//! "index"?}` (docs/api.md, "Workflows"), not the kind's own params. For
//! these kinds the engine runs the step's `params`, with `dataset` and
//! `path` filled in when the step's params leave them out: from the item
//! (an object with those fields, or a string: the path), else from the
//! workflow's input (an object with those fields). The step's own params
//! always win.

use serde_json::{Map, Value};

/// The kinds that may be workflow steps although the engine runs them.
pub const STEP_KINDS: &[&str] = &["image.thumbnail", "image.caption"];

/// Whether `params` is a step job's envelope (as the queue module builds it).
fn is_step(params: &Value) -> bool {
    params
        .get("workflow")
        .and_then(Value::as_object)
        .is_some_and(|w| w.get("id").is_some_and(Value::is_string) && w.contains_key("step"))
}

/// The params the kind runs with: `params` itself for a plain job, the
/// step's params with `dataset`/`path` filled in for a step job.
pub(crate) fn resolve(kind: &str, params: &Value) -> Value {
    if !STEP_KINDS.contains(&kind) || !is_step(params) {
        return params.clone();
    }
    let mut own = match params.get("params") {
        Some(Value::Object(m)) => m.clone(),
        // Not an object: left for validation to refuse, naming it.
        Some(v) if !v.is_null() => return v.clone(),
        _ => Map::new(),
    };
    let item = params.get("item");
    let input = params.get("input");
    for field in ["dataset", "path"] {
        if own.get(field).is_some_and(|v| !v.is_null()) {
            continue;
        }
        let from_item = match item {
            Some(Value::Object(o)) => o.get(field).filter(|v| v.is_string()).cloned(),
            Some(Value::String(s)) if field == "path" => Some(Value::String(s.clone())),
            _ => None,
        };
        let from_input = || {
            input
                .and_then(Value::as_object)
                .and_then(|o| o.get(field))
                .filter(|v| v.is_string())
                .cloned()
        };
        if let Some(v) = from_item.or_else(from_input) {
            own.insert(field.to_string(), v);
        }
    }
    Value::Object(own)
}

/// Checks a step's params at workflow start: as the kind's params, except
/// that `dataset` and `path` may come from the item or input later.
pub(crate) fn validate_step(kind: &str, step_params: &Value) -> Result<(), String> {
    let mut p = match step_params {
        Value::Null => Map::new(),
        Value::Object(m) => m.clone(),
        _ => return Err(format!("params of kind '{kind}' must be a JSON object")),
    };
    let needs_path = match kind {
        "image.caption" => true,
        "image.thumbnail" => !p.contains_key("input_glob"),
        _ => false,
    };
    if needs_path && !p.contains_key("path") {
        p.insert("path".into(), Value::String("step-item".into()));
    }
    super::validate(kind, &Value::Object(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(params: Value, input: Value, item: Option<Value>) -> Value {
        let mut v = json!({"workflow": {"id": "w1", "step": "s"}, "input": input,
            "params": params, "deps": {}});
        if let Some(i) = item {
            v["item"] = i;
            v["index"] = json!(0);
        }
        v
    }

    #[test]
    fn plain_jobs_are_untouched() {
        let p = json!({"path": "a.png", "workflow": 1});
        assert_eq!(resolve("image.caption", &p), p);
        let s = step(json!({}), json!({"dataset": "d"}), None);
        assert_eq!(resolve("fs.summarize", &s), s);
    }

    #[test]
    fn item_then_input_fill_dataset_and_path() {
        let s = step(
            json!({"prompt": "p"}),
            json!({"dataset": "d"}),
            Some(json!("x/a.png")),
        );
        assert_eq!(
            resolve("image.caption", &s),
            json!({"prompt": "p", "dataset": "d", "path": "x/a.png"})
        );
        let s = step(
            json!({}),
            json!({"dataset": "d", "path": "in.png"}),
            Some(json!({"path": "x/b.png", "dataset": "e", "size": 3})),
        );
        assert_eq!(
            resolve("image.caption", &s),
            json!({"dataset": "e", "path": "x/b.png"})
        );
        // The step's own params win; a non-string item field is ignored.
        let s = step(
            json!({"dataset": "mine"}),
            json!({"path": "in.png"}),
            Some(json!({"dataset": "e", "path": 5})),
        );
        assert_eq!(
            resolve("image.thumbnail", &s),
            json!({"dataset": "mine", "path": "in.png"})
        );
    }

    #[test]
    fn step_params_are_validated_without_their_path() {
        assert!(validate_step("image.caption", &json!({"prompt": "p"})).is_ok());
        assert!(validate_step("image.caption", &Value::Null).is_ok());
        assert!(validate_step("image.caption", &json!({"bogus": 1})).is_err());
        assert!(validate_step(
            "image.thumbnail",
            &json!({"output_dir": "t", "max_side": 8})
        )
        .is_ok());
        assert!(validate_step("image.thumbnail", &json!({"output_dir": "t"})).is_err());
        assert!(validate_step("image.caption", &json!([1])).is_err());
    }
}
