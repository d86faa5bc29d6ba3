//! `image.caption {dataset?, path, provider?, prompt?, use_thumbnail?,
//! max_tokens?}`: the parameters, and reading the image through the fs
//! root. The provider call and the dataset write are async and live in
//! `pipeline.rs`.

use std::io::Read;

use serde_json::{Map, Value};

use crate::RunContext;

/// The prompt when the job gives none.
pub const DEFAULT_PROMPT: &str = "Describe this image in one sentence.";
/// The longest prompt a job may give.
pub const MAX_PROMPT_CHARS: usize = 4096;
/// The most an image read for captioning may hold, whatever the provider
/// allows (its own `max_image_bytes` is checked by the provider client).
pub const MAX_READ_BYTES: u64 = 32 << 20;

/// The checked params of one `image.caption` job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptionParams {
    pub dataset: Option<String>,
    pub path: String,
    pub provider: Option<String>,
    pub prompt: String,
    pub use_thumbnail: bool,
    pub max_tokens: Option<u32>,
}

fn opt_str(o: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(format!("params.{field} must be a non-empty string")),
    }
}

impl CaptionParams {
    pub fn parse(p: &Value) -> Result<CaptionParams, String> {
        let o = super::object(
            "image.caption",
            p,
            &[
                "dataset",
                "path",
                "provider",
                "prompt",
                "use_thumbnail",
                "max_tokens",
            ],
        )?;
        let path = super::req_str(o, "path")?.to_string();
        let prompt = opt_str(o, "prompt")?.unwrap_or_else(|| DEFAULT_PROMPT.to_string());
        if prompt.chars().count() > MAX_PROMPT_CHARS {
            return Err(format!(
                "params.prompt must be at most {MAX_PROMPT_CHARS} characters"
            ));
        }
        let use_thumbnail = match o.get("use_thumbnail") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("params.use_thumbnail must be true or false".into()),
        };
        let max_tokens = super::opt_u64(o, "max_tokens", 1, 32768)?.map(|n| n as u32);
        Ok(CaptionParams {
            dataset: opt_str(o, "dataset")?,
            path,
            provider: opt_str(o, "provider")?,
            prompt,
            use_thumbnail,
            max_tokens,
        })
    }
}

pub(crate) fn validate(p: &Value) -> Result<(), String> {
    CaptionParams::parse(p).map(|_| ())
}

/// Reads the image at the root-relative `user` path (confined to the fs
/// root), at most [`MAX_READ_BYTES`]; returns its bytes and media type
/// (PNG or JPEG, by content).
pub(crate) fn read_image(
    ctx: &RunContext,
    field: &str,
    user: &str,
) -> Result<(Vec<u8>, &'static str), String> {
    let fs = ctx
        .fs()
        .ok_or("image.caption needs a node with --fs-root")?;
    let file = fs.open_file(field, user).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_READ_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{field} {user:?}: {e}"))?;
    if bytes.len() as u64 > MAX_READ_BYTES {
        return Err(format!(
            "{field} {user:?}: the image is over {MAX_READ_BYTES} bytes"
        ));
    }
    let mime = match image::guess_format(&bytes) {
        Ok(image::ImageFormat::Png) => "image/png",
        Ok(image::ImageFormat::Jpeg) => "image/jpeg",
        _ => return Err(format!("{field} {user:?}: not a PNG or JPEG image")),
    };
    Ok((bytes, mime))
}
