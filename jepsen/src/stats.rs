//! Statistics over a history: completions per `f` and type, latency
//! percentiles, and a PNG plot of latency over time with the nemesis
//! intervals shaded (like Jepsen's `latency-raw.png`).

use crate::history::{Op, OpType, Process};
use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One completed client operation.
#[derive(Clone, Debug)]
pub struct Sample {
    pub f: String,
    pub kind: OpType,
    /// Invoke time, ns since start.
    pub start: u64,
    pub latency_ns: u64,
}

/// Matches each completion with its process's pending invoke.
pub fn samples(ops: &[Op]) -> Vec<Sample> {
    let mut pending: HashMap<u64, &Op> = HashMap::new();
    let mut out = Vec::new();
    for op in ops {
        let Process::Client(p) = op.process else {
            continue;
        };
        if op.kind == OpType::Invoke {
            pending.insert(p, op);
        } else if let Some(inv) = pending.remove(&p) {
            out.push(Sample {
                f: inv.f.clone(),
                kind: op.kind,
                start: inv.time,
                latency_ns: op.time.saturating_sub(inv.time),
            });
        }
    }
    out
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1e6
}

/// Nemesis intervals: (name, start ns, end ns) from `start-X` … `stop-X`
/// (or `heal`, or the end of the history).
pub fn nemesis_intervals(ops: &[Op]) -> Vec<(String, u64, u64)> {
    let end = ops.last().map(|o| o.time).unwrap_or(0);
    let mut open: BTreeMap<String, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for op in ops.iter().filter(|o| o.process == Process::Nemesis) {
        if let Some(name) = op.f.strip_prefix("start-") {
            open.entry(name.to_string()).or_insert(op.time);
        } else if let Some(name) = op.f.strip_prefix("stop-") {
            if let Some(s) = open.remove(name) {
                out.push((name.to_string(), s, op.time));
            }
        } else if op.f == "heal" {
            for (name, s) in std::mem::take(&mut open) {
                out.push((name, s, op.time));
            }
        }
    }
    for (name, s) in open {
        out.push((name, s, end));
    }
    out
}

/// `{"count": {f: {ok, fail, info}}, "latency_ms": {f: {p50, p90, p99, max}}}`
/// (latencies of `ok` completions).
pub fn summarize(ops: &[Op]) -> Value {
    let samples = samples(ops);
    let mut counts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut lat: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for s in &samples {
        *counts
            .entry(s.f.clone())
            .or_default()
            .entry(s.kind.to_string())
            .or_default() += 1;
        if s.kind == OpType::Ok {
            lat.entry(s.f.clone()).or_default().push(s.latency_ns);
        }
    }
    let latency: BTreeMap<String, Value> = lat
        .into_iter()
        .map(|(f, mut v)| {
            v.sort_unstable();
            (
                f,
                json!({"p50": percentile(&v, 0.5), "p90": percentile(&v, 0.9),
                       "p99": percentile(&v, 0.99), "max": percentile(&v, 1.0)}),
            )
        })
        .collect();
    let nemesis: Vec<Value> = nemesis_intervals(ops)
        .into_iter()
        .map(|(n, s, e)| json!({"fault": n, "start_s": s as f64 / 1e9, "end_s": e as f64 / 1e9}))
        .collect();
    json!({"count": counts, "latency_ms": latency, "nemesis": nemesis})
}

/// Registers a system font for plot labels; false if none is installed
/// (the plot is then drawn without text).
fn register_font() -> bool {
    const FONTS: &[&str] = &[
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ];
    for p in FONTS {
        if let Ok(bytes) = std::fs::read(p) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(
                "sans-serif",
                plotters::style::FontStyle::Normal,
                bytes,
            )
            .is_ok()
            {
                return true;
            }
        }
    }
    false
}

/// Writes `latency-raw.png`: one point per operation (x: invoke time in s,
/// y: latency in ms, log scale; green ok, red fail, orange info), nemesis
/// intervals shaded grey.
pub fn plot(ops: &[Op], path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let e = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    let samples = samples(ops);
    let t_end = (ops.last().map(|o| o.time).unwrap_or(0) as f64 / 1e9).max(1.0);
    let lat_ms = |s: &Sample| (s.latency_ns as f64 / 1e6).max(0.01);
    let y_max = samples.iter().map(lat_ms).fold(1.0f64, f64::max) * 1.5;
    let text = register_font();

    let root = BitMapBackend::new(path, (1200, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if text {
        builder
            .caption(
                "latency over time (shaded: nemesis active)",
                ("sans-serif", 20),
            )
            .x_label_area_size(40)
            .y_label_area_size(60);
    }
    let mut chart = builder
        .build_cartesian_2d(0f64..t_end, (0.01f64..y_max).log_scale())
        .map_err(|x| e(&x))?;
    if text {
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc("latency (ms)")
            .draw()
            .map_err(|x| e(&x))?;
    }
    let shade = RGBColor(200, 200, 200).mix(0.5).filled();
    chart
        .draw_series(nemesis_intervals(ops).into_iter().map(|(_, s, end)| {
            Rectangle::new([(s as f64 / 1e9, 0.01), (end as f64 / 1e9, y_max)], shade)
        }))
        .map_err(|x| e(&x))?;
    for (kind, color) in [
        (OpType::Ok, RGBColor(30, 150, 30)),
        (OpType::Fail, RGBColor(200, 30, 30)),
        (OpType::Info, RGBColor(230, 140, 0)),
    ] {
        chart
            .draw_series(
                samples
                    .iter()
                    .filter(|s| s.kind == kind)
                    .map(|s| Circle::new((s.start as f64 / 1e9, lat_ms(s)), 2, color.filled())),
            )
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
