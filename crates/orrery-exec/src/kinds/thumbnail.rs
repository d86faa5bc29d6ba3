//! `image.thumbnail {input_glob | path, output_dir, max_side, dataset?}`: resized copies that
//! keep the aspect ratio, the longer side becoming `max_side` (images already
//! that small are copied at their size, never enlarged). The output has the
//! input's file name and format (PNG or JPEG).

use std::ffi::OsStr;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use cap_std::fs::Dir;

use rayon::prelude::*;
use serde_json::{json, Value};

use crate::confine::shown;
use crate::RunContext;

/// Thumbnail size for a `w`×`h` image whose longer side must fit `max_side`.
pub(crate) fn fit(w: u32, h: u32, max_side: u32) -> (u32, u32) {
    let long = w.max(h);
    if long <= max_side || long == 0 {
        return (w, h);
    }
    let scale = |s: u32| {
        ((u64::from(s) * u64::from(max_side) + u64::from(long) / 2) / u64::from(long)).max(1) as u32
    };
    (scale(w), scale(h))
}

fn one(
    input: std::fs::File,
    out_dir: &Dir,
    name: &OsStr,
    max_side: u32,
) -> Result<(u32, u32, u32, u32), String> {
    let reader = image::ImageReader::new(BufReader::new(input))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    // The content decides the format, not the file name.
    let format = reader
        .format()
        .filter(|f| matches!(f, image::ImageFormat::Png | image::ImageFormat::Jpeg))
        .ok_or("not a PNG or JPEG image")?;
    let img = reader.decode().map_err(|e| e.to_string())?;
    let (w, h) = (img.width(), img.height());
    let (tw, th) = fit(w, h, max_side);
    let thumb = if (tw, th) == (w, h) {
        img
    } else {
        img.resize_exact(tw, th, image::imageops::FilterType::Triangle)
    };
    let thumb = if format == image::ImageFormat::Jpeg {
        // JPEG has no alpha channel.
        image::DynamicImage::ImageRgb8(thumb.to_rgb8())
    } else {
        thumb
    };
    super::write_output(out_dir, name, |file| {
        let mut out = BufWriter::new(file);
        thumb
            .write_to(&mut out, format)
            .map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())
    })?;
    Ok((w, h, tw, th))
}

/// Output path and (width, height, thumb width, thumb height).
type Done = (PathBuf, (u32, u32, u32, u32));

pub(crate) fn run(params: &Value, ctx: &RunContext) -> Result<Value, String> {
    let fs = ctx
        .fs()
        .ok_or("image.thumbnail needs a node with --fs-root")?;
    // One file (`path`) is the glob matching just it.
    let (field, glob) = match params.get("path").and_then(Value::as_str) {
        Some(p) => ("params.path", glob::Pattern::escape(p)),
        None => (
            "params.input_glob",
            params
                .get("input_glob")
                .and_then(Value::as_str)
                .ok_or("params.input_glob is required")?
                .to_string(),
        ),
    };
    let out = params
        .get("output_dir")
        .and_then(Value::as_str)
        .ok_or("params.output_dir is required")?;
    let max_side = params
        .get("max_side")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n > 0)
        .ok_or("params.max_side must be a positive integer")?;
    let inputs = fs.glob(field, &glob).map_err(|e| e.to_string())?;
    if field == "params.path" && inputs.is_empty() {
        let p = params
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Err(format!("params.path {p:?}: no such file"));
    }
    let (out_rel, out_dir) = fs
        .output_dir("params.output_dir", out)
        .map_err(|e| e.to_string())?;
    let names = super::name_counts(&inputs);
    ctx.log(&format!("{} input image(s)", inputs.len()));
    let results: Vec<(PathBuf, Result<Done, String>)> = inputs
        .par_iter()
        .map(|input| {
            let r = (|| {
                if ctx.is_cancelled() {
                    return Err("cancelled".to_string());
                }
                let file = fs.dir().open(input).map_err(|e| e.to_string())?.into_std();
                let (name, output) = super::output_for(input, &file, &out_dir, &out_rel, &names)?;
                Ok((output, one(file, &out_dir, &name, max_side)?))
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
            Ok((output, (w, h, tw, th))) => {
                ctx.log(&format!("{}: {w}x{h} -> {tw}x{th}", shown(&input)));
                files.push(json!({"input": shown(&input), "output": shown(&output),
                    "width": w, "height": h, "thumb_width": tw, "thumb_height": th}));
            }
            Err(e) => {
                ctx.log(&format!("{}: {e}", shown(&input)));
                errors.push(json!({"input": shown(&input), "error": e}));
            }
        }
    }
    Ok(json!({"files": files, "errors": errors}))
}
