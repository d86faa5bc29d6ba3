//! Appends operations to the history as they happen.
//!
//! `index` and `time` are assigned under one lock together with the write,
//! so the order of lines in the file is the real-time order in which the
//! harness observed the events: an invoke is recorded before its request is
//! sent, a completion after its reply arrived.

use crate::history::{HistoryWriter, Op};
use anyhow::Result;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

pub struct Recorder {
    start: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    next: u64,
    writer: HistoryWriter<BufWriter<File>>,
    ops: Vec<Op>,
    error: Option<String>,
}

impl Recorder {
    pub fn create(path: &Path) -> Result<Recorder> {
        Ok(Recorder {
            start: Instant::now(),
            inner: Mutex::new(Inner {
                next: 0,
                writer: HistoryWriter::new(BufWriter::new(File::create(path)?)),
                ops: Vec::new(),
                error: None,
            }),
        })
    }

    /// Numbers, timestamps, writes and keeps `op`; returns it numbered.
    pub fn record(&self, op: Op) -> Op {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let time = self.start.elapsed().as_nanos() as u64;
        let op = op.at(g.next, time);
        g.next += 1;
        if let Err(e) = g.writer.append(&op) {
            g.error.get_or_insert(e.to_string());
        }
        g.ops.push(op.clone());
        op
    }

    /// Nanoseconds since the test started.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Everything recorded so far, and the first write error if any.
    pub fn finish(&self) -> (Vec<Op>, Option<String>) {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (g.ops.clone(), g.error.clone())
    }
}
