//! Pipelines over a dataset (`POST /v1/datasets/{name}/pipeline`): one
//! workflow per item lacking the outputs of the chosen steps, with input
//! `{"dataset", "path"}` and the steps `thumbnail` (`image.thumbnail`) →
//! `caption` (`image.caption`) → `embed` (`text.embed`), each depending on
//! the one before it among those chosen. The steps attach their outputs to
//! the item themselves; this only fans the workflows out over the catalog.

use super::{DatasetsService, EMBED_DIM, EMBED_KIND};
use crate::api::ApiError;
use crate::auth::Caller;
use crate::service::jobs::{StepArgs, WorkflowArgs};
use crate::service::vectors::NewCollection;
use futures::StreamExt;
use orrery_dataset::{check_name, Item, ItemFilter, MAX_PAGE};
use serde_json::{json, Map, Value};

/// The steps a pipeline may run, in the order they run, with their kinds.
const STEPS: [(&str, &str); 3] = [
    ("thumbnail", "image.thumbnail"),
    ("caption", "image.caption"),
    ("embed", EMBED_KIND),
];
/// Most workflows one request starts (the rest: `next`, passed back as `after`).
pub const MAX_PIPELINE_LIMIT: usize = 1000;
/// Longest caption prompt (bytes).
const MAX_PROMPT: usize = 4096;
/// Workflow starts one request keeps in flight.
const STARTS_IN_FLIGHT: usize = 16;
/// The thumbnail step's longest side by default, and at most.
pub const DEFAULT_MAX_SIDE: u32 = 256;
const MAX_MAX_SIDE: u32 = 4096;
/// Where thumbnails go by default: `thumbnails/<dataset>` under the root,
/// outside the dataset's own directory so that a re-scan never takes them
/// for images of the dataset.
const THUMBNAIL_ROOT: &str = "thumbnails";

/// A pipeline request as a client gave it.
pub struct Pipeline {
    pub steps: Vec<String>,
    pub provider: Option<String>,
    pub prompt: Option<String>,
    pub only_missing: Option<bool>,
    pub queue: Option<String>,
    pub collection: Option<String>,
    pub after: Option<String>,
    pub limit: Option<usize>,
    /// The thumbnail step's output root (root-relative; default
    /// `thumbnails/<dataset>`); each item's thumbnail goes under it at the
    /// item's own directory, so that items of the same file name in
    /// different directories never share a thumbnail.
    pub thumbnail_dir: Option<String>,
    pub max_side: Option<u32>,
}

pub struct PipelineStarted {
    /// (workflow id, item path), in path order.
    pub workflows: Vec<(String, String)>,
    /// Items looked at that already had every output.
    pub skipped: u64,
    pub queue: String,
    pub collection: Option<String>,
    /// The last path looked at when `limit` workflows were started: pass
    /// it back as `after` for the rest. `None`: the catalog is done.
    pub next: Option<String>,
}

/// The chosen steps as workflow steps (each depending on the previous
/// chosen one), checked: known names, no repeats, canonical order.
fn workflow_steps(p: &Pipeline, collection: &Option<String>) -> Result<Vec<StepArgs>, ApiError> {
    let bad = |m: String| ApiError::bad("invalid_pipeline", m);
    if p.steps.is_empty() {
        return Err(bad(
            "steps must name at least one of thumbnail, caption, embed".into(),
        ));
    }
    let mut last_index = None;
    let mut out: Vec<StepArgs> = Vec::new();
    for s in &p.steps {
        let Some(i) = STEPS.iter().position(|(n, _)| n == s) else {
            return Err(bad(format!(
                "unknown step {s:?} (thumbnail, caption, embed)"
            )));
        };
        if last_index.is_some_and(|l| i <= l) {
            return Err(bad(
                "steps run in the order thumbnail, caption, embed; each at most once".into(),
            ));
        }
        last_index = Some(i);
        let (name, kind) = STEPS[i];
        let mut params = Map::new();
        if name == "caption" {
            if let Some(v) = &p.provider {
                params.insert("provider".into(), json!(v));
            }
            if let Some(v) = &p.prompt {
                params.insert("prompt".into(), json!(v));
            }
        }
        if name == "embed" {
            params.insert("collection".into(), json!(collection));
        }
        out.push(StepArgs {
            name: name.into(),
            kind: kind.into(),
            params: Value::Object(params),
            depends_on: out
                .last()
                .map(|prev| vec![prev.name.clone()])
                .unwrap_or_default(),
            ..StepArgs::default()
        });
    }
    if let Some(pr) = &p.prompt {
        if pr.len() > MAX_PROMPT {
            return Err(bad(format!("prompt is over {MAX_PROMPT} bytes")));
        }
    }
    if let Some(pv) = &p.provider {
        check_name(pv).map_err(|m| bad(format!("provider: {m}")))?;
    }
    if (p.provider.is_some() || p.prompt.is_some()) && !p.steps.iter().any(|s| s == "caption") {
        return Err(bad("provider and prompt are for the caption step".into()));
    }
    let thumbs = p.steps.iter().any(|s| s == "thumbnail");
    if (p.thumbnail_dir.is_some() || p.max_side.is_some()) && !thumbs {
        return Err(bad(
            "thumbnail_dir and max_side are for the thumbnail step".into()
        ));
    }
    if let Some(m) = p.max_side {
        if !(1..=MAX_MAX_SIDE).contains(&m) {
            return Err(bad(format!("max_side must be 1..={MAX_MAX_SIDE}, got {m}")));
        }
    }
    if let Some(d) = &p.thumbnail_dir {
        check_relative(d).map_err(|m| bad(format!("thumbnail_dir: {m}")))?;
    }
    Ok(out)
}

/// A root-relative directory: not empty, not absolute, no `..` or empty
/// components (the node's confined file access checks it again, against
/// symlinks too, when the step runs).
fn check_relative(d: &str) -> Result<(), String> {
    if d.is_empty() || d.len() > 1024 {
        return Err("must be 1..=1024 bytes".into());
    }
    if d.starts_with('/') || d.contains('\\') || d.contains('\0') {
        return Err(format!(
            "{d:?} must be relative to --fs-root, with / separators"
        ));
    }
    if d.split('/').any(|c| c.is_empty() || c == "..") {
        return Err(format!("{d:?} must not hold `..` or empty components"));
    }
    Ok(())
}

/// The steps of one item's workflow: the thumbnail step gets its output
/// directory (the thumbnail root joined with the item's own directory)
/// and size; the caption step reads the thumbnail when there is one.
fn item_steps(steps: &[StepArgs], thumb_root: &str, max_side: u32, path: &str) -> Vec<StepArgs> {
    let has_thumb = steps.iter().any(|s| s.name == "thumbnail");
    let dir = match path.rsplit_once('/') {
        Some((parent, _)) => format!("{thumb_root}/{parent}"),
        None => thumb_root.to_string(),
    };
    steps
        .iter()
        .cloned()
        .map(|mut s| {
            if let Value::Object(m) = &mut s.params {
                if s.name == "thumbnail" {
                    m.insert("output_dir".into(), json!(dir));
                    m.insert("max_side".into(), json!(max_side));
                }
                if s.name == "caption" && has_thumb {
                    m.insert("use_thumbnail".into(), json!(true));
                }
            }
            s
        })
        .collect()
}

/// Whether `item` lacks an output of one of `steps`.
fn lacks_output(item: &Item, steps: &[StepArgs]) -> bool {
    let o = &item.outputs;
    steps.iter().any(|s| match s.name.as_str() {
        "thumbnail" => o.thumbnail.is_none(),
        "caption" => o.caption.is_none(),
        _ => o.embedding_id.is_none(),
    })
}

impl DatasetsService {
    /// Starts one workflow per item (lacking outputs, with `only_missing`,
    /// the default), at most `limit` per request, in path order.
    pub async fn pipeline(
        &self,
        name: &str,
        p: Pipeline,
        caller: &Caller,
    ) -> Result<PipelineStarted, ApiError> {
        check_name(name).map_err(|m| ApiError::bad("invalid_name", m))?;
        let limit = p.limit.unwrap_or(MAX_PIPELINE_LIMIT);
        if !(1..=MAX_PIPELINE_LIMIT).contains(&limit) {
            return Err(ApiError::bad(
                "invalid_pipeline",
                format!("limit must be 1..={MAX_PIPELINE_LIMIT}, got {limit}"),
            ));
        }
        let embeds = p.steps.iter().any(|s| s == "embed");
        let collection = embeds.then(|| {
            p.collection
                .clone()
                .unwrap_or_else(|| super::default_collection(name))
        });
        if p.collection.is_some() && !embeds {
            return Err(ApiError::bad(
                "invalid_pipeline",
                "collection is for the embed step",
            ));
        }
        let steps = workflow_steps(&p, &collection)?;
        let thumb_root = p
            .thumbnail_dir
            .clone()
            .unwrap_or_else(|| format!("{THUMBNAIL_ROOT}/{name}"));
        let max_side = p.max_side.unwrap_or(DEFAULT_MAX_SIDE);
        let queue = p
            .queue
            .clone()
            .unwrap_or_else(|| super::DEFAULT_PIPELINE_QUEUE.into());
        crate::service::jobs::check_name("queue", &queue)?;
        caller.check_queue(&queue)?;
        self.get(name).await?;
        self.ensure_queue(&queue, super::DEFAULT_PIPELINE_QUEUE)
            .await?;
        if let Some(c) = &collection {
            self.ensure_collection(c).await?;
        }
        let only_missing = p.only_missing.unwrap_or(true);
        let mut started = PipelineStarted {
            workflows: Vec::new(),
            skipped: 0,
            queue: queue.clone(),
            collection,
            next: None,
        };
        // The items first (reads), then the workflows (writes).
        let mut todo: Vec<String> = Vec::new();
        let mut after = p.after;
        'pages: loop {
            let page = self
                .items_range(name, after.clone(), None, MAX_PAGE, ItemFilter::default())
                .await?;
            for item in page.items {
                if todo.len() == limit {
                    started.next = after;
                    break 'pages;
                }
                after = Some(item.meta.path.clone());
                if only_missing && !lacks_output(&item, &steps) {
                    started.skipped += 1;
                } else {
                    todo.push(item.meta.path);
                }
            }
            if page.next.is_none() {
                break;
            }
        }
        // Several starts in flight (each is one Raft entry in its queue
        // partition's shard), answered in path order; the first error ends
        // the request (the workflows already started run on).
        let starts = todo.into_iter().map(|path| {
            let args = WorkflowArgs {
                queue: queue.clone(),
                steps: item_steps(&steps, &thumb_root, max_side, &path),
                input: json!({"dataset": name, "path": path}),
                caller: Some(caller.clone()),
            };
            async move {
                let w = self.jobs.start_workflow(args).await?;
                Ok::<_, ApiError>((w.workflow.id.to_string(), path))
            }
        });
        let mut stream = futures::stream::iter(starts).buffered(STARTS_IN_FLIGHT);
        while let Some(r) = stream.next().await {
            started.workflows.push(r?);
        }
        Ok(started)
    }

    /// The embeddings collection, created (dim 384, cosine) when missing;
    /// one of another dimension is a 409.
    async fn ensure_collection(&self, name: &str) -> Result<(), ApiError> {
        let c = match self.vectors.collection(name).await {
            Ok(c) => c,
            Err(ApiError::NotFound(_)) => {
                let n = NewCollection {
                    name: name.into(),
                    dim: EMBED_DIM,
                    metric: Some("cosine".into()),
                    shards: None,
                    replication: None,
                    m: None,
                    ef_construction: None,
                    ef_search: None,
                };
                self.vectors.create_collection(n).await?
            }
            Err(e) => return Err(e),
        };
        if c.dim != EMBED_DIM {
            return Err(ApiError::Conflict(format!(
                "collection {name:?} has dim {}; text.embed vectors have {EMBED_DIM}",
                c.dim
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(steps: &[&str]) -> Pipeline {
        Pipeline {
            steps: steps.iter().map(|s| s.to_string()).collect(),
            provider: None,
            prompt: None,
            only_missing: None,
            queue: None,
            collection: None,
            after: None,
            limit: None,
            thumbnail_dir: None,
            max_side: None,
        }
    }

    #[test]
    fn steps_chain_in_order() {
        let s =
            workflow_steps(&req(&["thumbnail", "caption", "embed"]), &Some("c".into())).unwrap();
        let names: Vec<_> = s
            .iter()
            .map(|s| (s.name.as_str(), s.kind.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("thumbnail", "image.thumbnail"),
                ("caption", "image.caption"),
                ("embed", "text.embed")
            ]
        );
        assert!(s[0].depends_on.is_empty());
        assert_eq!(s[1].depends_on, ["thumbnail"]);
        assert_eq!(s[2].depends_on, ["caption"]);
        assert_eq!(s[2].params, json!({"collection": "c"}));
        let s = workflow_steps(&req(&["caption", "embed"]), &Some("c".into())).unwrap();
        assert!(s[0].depends_on.is_empty());
    }

    #[test]
    fn bad_steps_are_refused() {
        for steps in [
            &[][..],
            &["resize"],
            &["embed", "caption"],
            &["caption", "caption"],
        ] {
            assert!(workflow_steps(&req(steps), &None).is_err(), "{steps:?}");
        }
        let mut p = req(&["embed"]);
        p.prompt = Some("x".into());
        assert!(workflow_steps(&p, &Some("c".into())).is_err());
        let mut p = req(&["caption"]);
        p.max_side = Some(64);
        assert!(
            workflow_steps(&p, &None).is_err(),
            "max_side without thumbnail"
        );
        for bad in ["", "/abs", "a/../b", "a//b", "..", "a\\b"] {
            let mut p = req(&["thumbnail"]);
            p.thumbnail_dir = Some(bad.into());
            assert!(workflow_steps(&p, &None).is_err(), "{bad:?}");
        }
        let mut p = req(&["thumbnail"]);
        p.max_side = Some(0);
        assert!(workflow_steps(&p, &None).is_err());
    }

    #[test]
    fn each_item_gets_its_own_thumbnail_directory() {
        let s = workflow_steps(&req(&["thumbnail", "caption"]), &None).unwrap();
        let a = item_steps(&s, "thumbnails/d", 128, "photos/a/x.png");
        assert_eq!(
            a[0].params,
            json!({"output_dir": "thumbnails/d/photos/a", "max_side": 128})
        );
        assert_eq!(a[1].params, json!({"use_thumbnail": true}));
        let top = item_steps(&s, "thumbnails/d", 128, "x.png");
        assert_eq!(top[0].params["output_dir"], json!("thumbnails/d"));
        let c = workflow_steps(&req(&["caption"]), &None).unwrap();
        assert_eq!(item_steps(&c, "t", 1, "a/b.png")[0].params, json!({}));
    }
}
