//! The async halves of the pipeline kinds: `image.caption` (read the
//! image, ask the provider, store the caption) and the dataset write of
//! `image.thumbnail` when its params name a `dataset`. The provider and
//! the dataset are reached through [`Hooks`], which the server injects.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::watch;

use super::caption::{read_image, CaptionParams};
use crate::hooks::{CaptionRequest, Hooks, ItemOutputs};
use crate::RunContext;

/// A failed pipeline step: its message, and whether a retry may help.
pub(crate) struct Failed {
    pub message: String,
    pub retry: bool,
}

impl Failed {
    fn retry(message: String) -> Failed {
        Failed {
            message,
            retry: true,
        }
    }
    fn permanent(message: String) -> Failed {
        Failed {
            message,
            retry: false,
        }
    }
}

/// Runs one `image.caption` job (`params` already resolved for a step).
pub(crate) async fn caption(
    hooks: &Hooks,
    node: u64,
    params: &Value,
    ctx: Arc<RunContext>,
    mut cancel: watch::Receiver<bool>,
) -> Result<Value, Failed> {
    let Some(captioner) = hooks.captioner.clone() else {
        return Err(Failed::retry(format!(
            "image.caption jobs are refused on node {node} (started without --providers)"
        )));
    };
    let p = CaptionParams::parse(params).map_err(Failed::permanent)?;
    let mut image = p.path.clone();
    let mut field = "params.path";
    if p.use_thumbnail {
        match (&p.dataset, &hooks.outputs) {
            (Some(ds), Some(out)) => match out.thumbnail(ds, &p.path).await {
                Ok(Some(t)) if !t.is_empty() => {
                    image = t;
                    field = "the item's thumbnail";
                }
                Ok(_) => ctx.log("the item has no thumbnail; sending the image itself"),
                Err(e) => return Err(Failed::retry(format!("reading the item's thumbnail: {e}"))),
            },
            _ => ctx.log("use_thumbnail without a dataset: sending the image itself"),
        }
    }
    let read_ctx = ctx.clone();
    let read_path = image.clone();
    let (bytes, mime) =
        match tokio::task::spawn_blocking(move || read_image(&read_ctx, field, &read_path)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(Failed::retry(e)),
            Err(e) => return Err(Failed::retry(format!("reading the image: {e}"))),
        };
    ctx.log(&format!("{image}: {} bytes ({mime})", bytes.len()));
    let req = CaptionRequest {
        provider: p.provider.clone(),
        image: bytes,
        mime,
        prompt: p.prompt.clone(),
        max_tokens: p.max_tokens,
    };
    let c = tokio::select! {
        r = captioner.caption(req) => r.map_err(|e| Failed { message: e.message, retry: e.retry })?,
        _ = cancel.wait_for(|c| *c) => return Err(Failed::retry(crate::CANCELLED.to_string())),
    };
    ctx.log(&format!(
        "caption from {} ({}): {}",
        c.provider, c.model, c.caption
    ));
    if let Some(ds) = &p.dataset {
        let out = hooks
            .outputs
            .as_ref()
            .ok_or_else(|| Failed::retry(format!("node {node} cannot write dataset outputs")))?;
        let outputs = ItemOutputs {
            caption: Some(c.caption.clone()),
            ..ItemOutputs::default()
        };
        let missing = out
            .attach(ds, vec![(p.path.clone(), outputs)])
            .await
            .map_err(|e| Failed::retry(format!("storing the caption on {ds:?}: {e}")))?;
        if !missing.is_empty() {
            return Err(Failed::permanent(format!(
                "dataset {ds:?} has no item {:?}; the caption was not stored",
                p.path
            )));
        }
    }
    Ok(
        json!({"caption": c.caption, "provider": c.provider, "model": c.model,
        "dataset": p.dataset, "path": p.path, "image": image}),
    )
}

/// Attaches the thumbnails an `image.thumbnail` run made to the items of
/// `params.dataset` (by input path), if it names one; the result gains
/// `dataset` and `path` (as given: a workflow's next step, fanned out over
/// these results, finds its item in them), `attached` (how many items were
/// updated) and `not_items` (inputs that are no item of the dataset).
pub(crate) async fn attach_thumbnails(
    hooks: &Hooks,
    node: u64,
    params: &Value,
    mut result: Value,
) -> Result<Value, Failed> {
    if let Some(p) = params.get("path") {
        result["path"] = p.clone();
    }
    let Some(ds) = params.get("dataset").and_then(Value::as_str) else {
        return Ok(result);
    };
    result["dataset"] = json!(ds);
    let out = hooks
        .outputs
        .as_ref()
        .ok_or_else(|| Failed::retry(format!("node {node} cannot write dataset outputs")))?;
    let items: Vec<(String, ItemOutputs)> = result["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let input = f["input"].as_str()?.to_string();
            let thumb = f["output"].as_str()?.to_string();
            Some((
                input,
                ItemOutputs {
                    thumbnail: Some(thumb),
                    ..ItemOutputs::default()
                },
            ))
        })
        .collect();
    let mut missing = Vec::new();
    let total = items.len();
    let mut rest = items;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(ATTACH_BATCH));
        let batch = std::mem::replace(&mut rest, tail);
        missing.extend(
            out.attach(ds, batch)
                .await
                .map_err(|e| Failed::retry(format!("storing thumbnails on {ds:?}: {e}")))?,
        );
    }
    // A job naming one item must find it; a glob may match other files.
    if params.get("path").is_some() && !missing.is_empty() {
        return Err(Failed::permanent(format!(
            "dataset {ds:?} has no item {:?}; the thumbnail was made but not stored",
            missing[0]
        )));
    }
    result["attached"] = json!(total - missing.len());
    result["not_items"] = json!(missing);
    Ok(result)
}

/// Items per dataset write (the datasets service's batch limit).
const ATTACH_BATCH: usize = 1000;
