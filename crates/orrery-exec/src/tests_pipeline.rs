//! The pipeline kinds in the engine: `image.caption` through an in-test
//! captioner (it answers the size of the bytes it was given and their
//! media type, so the test sees what was read), dataset writes through an
//! in-test outputs map, `image.thumbnail` attaching its outputs, and
//! workflow step envelopes resolved for both kinds. The real provider
//! client and datasets service are covered by tests/providers.rs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::gpu::GpuInventory;
use crate::tests::{config, root, FakeSource, WAIT};
use crate::*;

#[derive(Default)]
struct Items(Mutex<BTreeMap<String, ItemOutputs>>);

#[async_trait::async_trait]
impl DatasetOutputs for Items {
    async fn attach(
        &self,
        dataset: &str,
        items: Vec<(String, ItemOutputs)>,
    ) -> Result<Vec<String>, String> {
        let mut m = self.0.lock().unwrap();
        let mut missing = Vec::new();
        for (path, o) in items {
            match m.get_mut(&format!("{dataset}/{path}")) {
                Some(cur) => {
                    if o.caption.is_some() {
                        cur.caption = o.caption;
                    }
                    if o.thumbnail.is_some() {
                        cur.thumbnail = o.thumbnail;
                    }
                }
                None => missing.push(path),
            }
        }
        Ok(missing)
    }
    async fn thumbnail(&self, dataset: &str, path: &str) -> Result<Option<String>, String> {
        let m = self.0.lock().unwrap();
        Ok(m.get(&format!("{dataset}/{path}"))
            .and_then(|o| o.thumbnail.clone()))
    }
}

struct Sizes;

#[async_trait::async_trait]
impl Captioner for Sizes {
    async fn caption(&self, req: CaptionRequest) -> Result<Caption, CaptionError> {
        match req.provider.as_deref() {
            Some("down") => Err(CaptionError {
                message: "provider down answered 503".into(),
                retry: true,
            }),
            Some("nope") => Err(CaptionError {
                message: "unknown provider \"nope\"".into(),
                retry: false,
            }),
            p => Ok(Caption {
                caption: format!("{} bytes of {} ({})", req.image.len(), req.mime, req.prompt),
                provider: p.unwrap_or("default").to_string(),
                model: "m".into(),
            }),
        }
    }
}

fn png(root: &std::path::Path, rel: &str, w: u32, h: u32) -> u64 {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(w, h, image::Rgb([9, 9, 9]))
        .save(&p)
        .unwrap();
    std::fs::metadata(&p).unwrap().len()
}

fn start(root: &std::path::Path, captioner: bool) -> (Arc<FakeSource>, Engine, Arc<Items>) {
    let items = Arc::new(Items::default());
    let hooks = Hooks {
        outputs: Some(items.clone()),
        captioner: captioner.then(|| Arc::new(Sizes) as Arc<dyn Captioner>),
    };
    let src = Arc::new(FakeSource::default());
    let e = Engine::start_with_hooks(
        config(Some(root)),
        src.clone(),
        Vec::new(),
        GpuInventory::empty(),
        hooks,
    );
    (src, e, items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caption_thumbnail_and_steps() {
    let (_d, r) = root();
    let size = png(&r, "ds/a.png", 40, 20);
    png(&r, "ds/b.png", 10, 10);
    std::fs::write(r.join("ds/notes.png"), "not an image").unwrap();
    let (_n, e0, _) = start(&r, false);
    assert!(!e0.kinds().contains(&"image.caption".to_string()));
    drop(e0);
    let (src, e, items) = start(&r, true);
    assert!(e.kinds().contains(&"image.caption".to_string()));
    for p in ["ds/a.png", "ds/b.png"] {
        items
            .0
            .lock()
            .unwrap()
            .insert(format!("d/{p}"), ItemOutputs::default());
    }

    // The image itself, its caption stored on the item.
    let id = src.submit("image.caption", json!({"dataset": "d", "path": "ds/a.png"}));
    let (v, run) = src.outcome(&id, WAIT).await.ok();
    let want = format!("{size} bytes of image/png ({DEFAULT_PROMPT})");
    assert_eq!(v["caption"], want.as_str(), "{v}");
    assert_eq!(v["image"], "ds/a.png");
    assert_eq!(run.exit_code, Some(0));
    assert_eq!(
        items.0.lock().unwrap()["d/ds/a.png"].caption.as_deref(),
        Some(want.as_str())
    );

    // A thumbnail of one item, attached; then its caption from it.
    let id = src.submit(
        "image.thumbnail",
        json!({"path": "ds/a.png", "output_dir": "th", "max_side": 8, "dataset": "d"}),
    );
    let (v, _) = src.outcome(&id, WAIT).await.ok();
    assert_eq!(
        (v["attached"].clone(), v["path"].clone()),
        (json!(1), json!("ds/a.png")),
        "{v}"
    );
    assert_eq!(
        items.0.lock().unwrap()["d/ds/a.png"].thumbnail.as_deref(),
        Some("th/a.png")
    );
    let thumb = std::fs::metadata(r.join("th/a.png")).unwrap().len();
    // As a workflow step: dataset from the input, path from the item.
    let step = json!({"workflow": {"id": "w", "step": "c"}, "input": {"dataset": "d"},
        "params": {"use_thumbnail": true, "prompt": "what?"}, "deps": {},
        "item": {"path": "ds/a.png"}, "index": 0});
    let id = src.submit("image.caption", step);
    let (v, _) = src.outcome(&id, WAIT).await.ok();
    assert_eq!(v["image"], "th/a.png", "{v}");
    assert_eq!(v["caption"], format!("{thumb} bytes of image/png (what?)"));

    // A glob over the dataset dir: items attached, a non-item reported.
    png(&r, "ds/extra/c.png", 4, 4);
    let id = src.submit(
        "image.thumbnail",
        json!({"input_glob": "ds/**/*.png", "output_dir": "th2", "max_side": 4, "dataset": "d"}),
    );
    let (v, _) = src.outcome(&id, WAIT).await.ok();
    assert_eq!(v["attached"], 2, "{v}");
    assert_eq!(v["not_items"], json!(["ds/extra/c.png"]), "{v}");

    // Failures: retryable, permanent, a missing item, a non-image, a path out.
    let id = src.submit(
        "image.caption",
        json!({"path": "ds/b.png", "provider": "down"}),
    );
    let (err, _) = src.outcome(&id, WAIT).await.err();
    assert!(err.contains("503"), "{err}");
    assert!(!src.permanent.lock().unwrap().contains(&id));
    let id = src.submit(
        "image.caption",
        json!({"path": "ds/b.png", "provider": "nope"}),
    );
    let (err, _) = src.outcome(&id, WAIT).await.err();
    assert!(err.contains("unknown provider"), "{err}");
    assert!(src.permanent.lock().unwrap().contains(&id));
    let id = src.submit(
        "image.caption",
        json!({"dataset": "other", "path": "ds/b.png"}),
    );
    let (err, _) = src.outcome(&id, WAIT).await.err();
    assert!(err.contains("has no item \"ds/b.png\""), "{err}");
    let id = src.submit("image.caption", json!({"path": "ds/notes.png"}));
    let (err, _) = src.outcome(&id, WAIT).await.err();
    assert!(err.contains("not a PNG or JPEG image"), "{err}");
    let id = src.submit("image.caption", json!({"path": "../x.png"}));
    let (err, _) = src.outcome(&id, WAIT).await.err();
    assert!(err.contains("'..'"), "{err}");
    let id = src.submit(
        "image.thumbnail",
        json!({"path": "ds/zz.png", "output_dir": "t", "max_side": 4}),
    );
    let (err, _) = src.outcome(&id, WAIT).await.err();
    assert!(err.contains("no such file"), "{err}");
    e.shutdown().await;
}

#[test]
fn caption_params_name_the_field() {
    assert!(validate_params("image.caption", &json!({"path": "a.png"})).is_ok());
    for (p, want) in [
        (json!({}), "params.path is required"),
        (json!({"path": "a", "max_tokens": 0}), "params.max_tokens"),
        (
            json!({"path": "a", "use_thumbnail": 1}),
            "params.use_thumbnail",
        ),
        (json!({"path": "a", "provider": ""}), "params.provider"),
        (
            json!({"path": "a", "prompt": "x".repeat(5000)}),
            "params.prompt",
        ),
        (
            json!({"path": "a", "colour": 1}),
            "params.colour: unknown field",
        ),
    ] {
        let e = validate_params("image.caption", &p).unwrap_err();
        assert!(e.contains(want), "{p}: {e}");
    }
    let both = json!({"path": "a", "input_glob": "*", "output_dir": "o", "max_side": 4});
    assert!(validate_params("image.thumbnail", &both)
        .unwrap_err()
        .contains("not both"));
}
