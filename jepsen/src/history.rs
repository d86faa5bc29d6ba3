//! The history format: one operation record per line (JSON Lines), in the
//! vocabulary of Jepsen.
//!
//! Every client operation appears twice: once when the client *invokes* it
//! (`"type": "invoke"`) and once when it *completes* (`"ok"`, `"fail"` or
//! `"info"`). [`pair`] matches the two records of each operation. The format is
//! specified precisely in `jepsen/README.md`.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Well-known values of an operation's `f` field.
pub mod f {
    /// Register read / final read of a set or queue.
    pub const READ: &str = "read";
    /// Register write.
    pub const WRITE: &str = "write";
    /// Register compare-and-set; value `[expected, new]`.
    pub const CAS: &str = "cas";
    /// Set add; value is the element.
    pub const ADD: &str = "add";
    /// Queue enqueue; value is the job id.
    pub const ENQUEUE: &str = "enqueue";
    /// Queue claim; ok value `{"job": id, "token": t}`.
    pub const CLAIM: &str = "claim";
    /// Queue complete; value `{"job": id, "token": t}`.
    pub const COMPLETE: &str = "complete";
}

/// Who performed an operation: a client process (a logical, single-threaded
/// client identified by a non-negative integer) or the nemesis (the fault
/// injector), written as the string `"nemesis"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Process {
    /// A client process.
    Client(u64),
    /// The fault injector.
    Nemesis,
}

impl Process {
    /// True for [`Process::Nemesis`].
    pub fn is_nemesis(self) -> bool {
        matches!(self, Process::Nemesis)
    }

    /// `p3` for client 3, `nemesis` for the nemesis.
    pub fn label(self) -> String {
        match self {
            Process::Client(p) => format!("p{p}"),
            Process::Nemesis => "nemesis".to_owned(),
        }
    }
}

impl From<u64> for Process {
    fn from(p: u64) -> Self {
        Process::Client(p)
    }
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Process::Client(p) => write!(f, "{p}"),
            Process::Nemesis => f.write_str("nemesis"),
        }
    }
}

impl Serialize for Process {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Process::Client(p) => s.serialize_u64(*p),
            Process::Nemesis => s.serialize_str("nemesis"),
        }
    }
}

impl<'de> Deserialize<'de> for Process {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Process;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer or the string \"nemesis\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Process, E> {
                Ok(Process::Client(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Process, E> {
                u64::try_from(v)
                    .map(Process::Client)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Process, E> {
                if v == "nemesis" {
                    Ok(Process::Nemesis)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The `type` of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    /// The operation was invoked (sent).
    Invoke,
    /// The operation definitely took effect; the value is its result.
    Ok,
    /// The operation definitely did not take effect.
    Fail,
    /// Unknown outcome (timeout, connection lost, ...): it may or may not
    /// have taken effect, at any time after its invocation.
    Info,
}

impl fmt::Display for OpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpType::Invoke => "invoke",
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
        })
    }
}

/// One record (one line) of a history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history: strictly increasing along the file. The
    /// order of `index` is the authoritative real-time order.
    pub index: u64,
    /// Nanoseconds since the start of the test (used for latencies only).
    pub time: u64,
    /// Who performed the operation.
    pub process: Process,
    /// invoke / ok / fail / info.
    #[serde(rename = "type")]
    pub kind: OpType,
    /// The function: `read`, `write`, `cas`, `add`, `enqueue`, `claim`,
    /// `complete`, or a nemesis function such as `start-partition`.
    pub f: String,
    /// The key operated on, if the workload has keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Argument (invoke) or result (completion); `null` when absent.
    #[serde(default)]
    pub value: Value,
    /// The node the client talked to, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Error description for `fail` / `info` completions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Op {
    /// A record with index and time 0 and no key, node or error; set those
    /// with the `with_*` methods or let [`HistoryBuilder`] number it.
    pub fn new(
        process: impl Into<Process>,
        kind: OpType,
        f: impl Into<String>,
        value: Value,
    ) -> Op {
        Op {
            index: 0,
            time: 0,
            process: process.into(),
            kind,
            f: f.into(),
            key: None,
            value,
            node: None,
            error: None,
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<String>) -> Op {
        self.key = Some(key.into());
        self
    }

    /// Sets the node.
    pub fn with_node(mut self, node: impl Into<String>) -> Op {
        self.node = Some(node.into());
        self
    }

    /// Sets the error.
    pub fn with_error(mut self, error: impl Into<String>) -> Op {
        self.error = Some(error.into());
        self
    }

    /// Sets index and time.
    pub fn at(mut self, index: u64, time: u64) -> Op {
        self.index = index;
        self.time = time;
        self
    }

    /// True for `invoke` records.
    pub fn is_invoke(&self) -> bool {
        self.kind == OpType::Invoke
    }

    /// A short human-readable rendering, e.g. `#12 p3 ok read k1 -> 5`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "#{} {} {} {}",
            self.index,
            self.process.label(),
            self.kind,
            self.f
        );
        if let Some(k) = &self.key {
            s.push(' ');
            s.push_str(k);
        }
        if !self.value.is_null() || self.f == f::READ && self.kind == OpType::Ok {
            s.push_str(if self.kind == OpType::Invoke {
                " "
            } else {
                " -> "
            });
            s.push_str(&self.value.to_string());
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(" ({e})"));
        }
        s
    }
}

/// Builds a history in memory, numbering records consecutively and spacing
/// their times one millisecond apart (handy for tests and generators).
#[derive(Debug, Default, Clone)]
pub struct HistoryBuilder {
    ops: Vec<Op>,
}

impl HistoryBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `op`, overwriting its index (next position) and time
    /// (index × 1 ms).
    pub fn push(&mut self, op: Op) -> &mut Self {
        let i = self.ops.len() as u64;
        self.ops.push(op.at(i, i * 1_000_000));
        self
    }

    /// Appends a record built from the arguments; `key` may be `None`.
    pub fn record(
        &mut self,
        process: impl Into<Process>,
        kind: OpType,
        f: &str,
        key: Option<&str>,
        value: Value,
    ) -> &mut Self {
        let mut op = Op::new(process, kind, f, value);
        op.key = key.map(str::to_owned);
        self.push(op)
    }

    /// Appends an `invoke` record.
    pub fn invoke(&mut self, p: u64, f: &str, key: Option<&str>, value: Value) -> &mut Self {
        self.record(p, OpType::Invoke, f, key, value)
    }

    /// Appends an `ok` record.
    pub fn ok(&mut self, p: u64, f: &str, key: Option<&str>, value: Value) -> &mut Self {
        self.record(p, OpType::Ok, f, key, value)
    }

    /// Appends a `fail` record.
    pub fn fail(&mut self, p: u64, f: &str, key: Option<&str>, value: Value) -> &mut Self {
        self.record(p, OpType::Fail, f, key, value)
    }

    /// Appends an `info` record.
    pub fn info(&mut self, p: u64, f: &str, key: Option<&str>, value: Value) -> &mut Self {
        self.record(p, OpType::Info, f, key, value)
    }

    /// The records so far.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Finishes the history.
    pub fn build(&self) -> Vec<Op> {
        self.ops.clone()
    }
}

/// Errors reading or writing a history file.
#[derive(Debug)]
pub enum HistoryError {
    /// The file could not be opened, read or written.
    Io {
        /// The file, when reading from or writing to one.
        path: Option<PathBuf>,
        /// The underlying error.
        source: io::Error,
    },
    /// A line is not a valid record.
    Parse {
        /// The file, when reading from one.
        path: Option<PathBuf>,
        /// 1-based line number.
        line: usize,
        /// The underlying error (its own line number is always 1).
        source: serde_json::Error,
    },
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::Io { path, source } => match path {
                Some(p) => write!(f, "{}: {source}", p.display()),
                None => write!(f, "{source}"),
            },
            HistoryError::Parse { path, line, source } => {
                let mut msg = source.to_string();
                if let Some(i) = msg.rfind(" at line ") {
                    msg.truncate(i);
                }
                let loc = match path {
                    Some(p) => format!("{}:{line}", p.display()),
                    None => format!("line {line}"),
                };
                write!(f, "{loc}: column {}: {msg}", source.column())
            }
        }
    }
}

impl std::error::Error for HistoryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HistoryError::Io { source, .. } => Some(source),
            HistoryError::Parse { source, .. } => Some(source),
        }
    }
}

impl HistoryError {
    /// The 1-based line number of a parse error.
    pub fn line(&self) -> Option<usize> {
        match self {
            HistoryError::Parse { line, .. } => Some(*line),
            HistoryError::Io { .. } => None,
        }
    }

    fn with_path(self, p: &Path) -> Self {
        match self {
            HistoryError::Io { source, .. } => HistoryError::Io {
                path: Some(p.to_owned()),
                source,
            },
            HistoryError::Parse { line, source, .. } => HistoryError::Parse {
                path: Some(p.to_owned()),
                line,
                source,
            },
        }
    }
}

/// Parses one record.
pub fn parse_op(line: &str) -> Result<Op, serde_json::Error> {
    serde_json::from_str(line)
}

/// Parses a JSON Lines history from a string. Blank lines are skipped;
/// errors name the 1-based line number.
pub fn parse_jsonl(s: &str) -> Result<Vec<Op>, HistoryError> {
    let mut ops = Vec::new();
    for (i, line) in s.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        ops.push(parse_op(line).map_err(|source| HistoryError::Parse {
            path: None,
            line: i + 1,
            source,
        })?);
    }
    Ok(ops)
}

/// Parses a JSON Lines history from a reader.
pub fn read_jsonl_from(r: impl BufRead) -> Result<Vec<Op>, HistoryError> {
    let mut ops = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let line = line.map_err(|source| HistoryError::Io { path: None, source })?;
        if line.trim().is_empty() {
            continue;
        }
        ops.push(parse_op(&line).map_err(|source| HistoryError::Parse {
            path: None,
            line: i + 1,
            source,
        })?);
    }
    Ok(ops)
}

/// Reads a JSON Lines history file.
pub fn read_jsonl(path: impl AsRef<Path>) -> Result<Vec<Op>, HistoryError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| HistoryError::Io {
        path: Some(path.to_owned()),
        source,
    })?;
    read_jsonl_from(BufReader::new(file)).map_err(|e| e.with_path(path))
}

/// Writes records as JSON Lines (one compact object and `\n` per record).
pub fn write_jsonl_to<'a>(
    mut w: impl Write,
    ops: impl IntoIterator<Item = &'a Op>,
) -> io::Result<()> {
    for op in ops {
        serde_json::to_writer(&mut w, op)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Renders records as a JSON Lines string.
pub fn to_jsonl(ops: &[Op]) -> String {
    let mut buf = Vec::new();
    write_jsonl_to(&mut buf, ops).expect("writing to a Vec cannot fail");
    String::from_utf8(buf).expect("serde_json writes UTF-8")
}

/// Writes a JSON Lines history file, replacing any existing file.
pub fn write_jsonl(path: impl AsRef<Path>, ops: &[Op]) -> Result<(), HistoryError> {
    let path = path.as_ref();
    let io_err = |source| HistoryError::Io {
        path: Some(path.to_owned()),
        source,
    };
    let file = File::create(path).map_err(io_err)?;
    write_jsonl_to(BufWriter::new(file), ops).map_err(io_err)
}

/// Appends records to a JSON Lines sink one at a time, flushing after each
/// so that a crashed test still leaves a readable prefix.
#[derive(Debug)]
pub struct HistoryWriter<W: Write> {
    w: W,
}

impl<W: Write> HistoryWriter<W> {
    /// Wraps a sink.
    pub fn new(w: W) -> Self {
        HistoryWriter { w }
    }

    /// Writes one record and flushes.
    pub fn append(&mut self, op: &Op) -> io::Result<()> {
        serde_json::to_writer(&mut self.w, op)?;
        self.w.write_all(b"\n")?;
        self.w.flush()
    }

    /// Returns the sink.
    pub fn into_inner(self) -> W {
        self.w
    }
}

/// An operation's invocation and its completion, if one was recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The `invoke` record.
    pub invoke: Op,
    /// The `ok` / `fail` / `info` record; `None` if the history ended first
    /// (treated exactly like `info`).
    pub completion: Option<Op>,
}

impl Pair {
    /// The process that performed the operation.
    pub fn process(&self) -> Process {
        self.invoke.process
    }

    /// The operation's function.
    pub fn f(&self) -> &str {
        &self.invoke.f
    }

    /// The key: the invocation's, else the completion's.
    pub fn key(&self) -> Option<&str> {
        self.invoke
            .key
            .as_deref()
            .or_else(|| self.completion.as_ref().and_then(|c| c.key.as_deref()))
    }

    /// `Ok`, `Fail` or `Info` (also for a missing completion).
    pub fn outcome(&self) -> OpType {
        self.completion.as_ref().map_or(OpType::Info, |c| c.kind)
    }

    /// True if the operation definitely took effect.
    pub fn is_ok(&self) -> bool {
        self.outcome() == OpType::Ok
    }

    /// True if the operation definitely did not take effect.
    pub fn is_fail(&self) -> bool {
        self.outcome() == OpType::Fail
    }

    /// True if the outcome is unknown.
    pub fn is_info(&self) -> bool {
        self.outcome() == OpType::Info
    }

    /// History position of the invocation.
    pub fn invoke_index(&self) -> u64 {
        self.invoke.index
    }

    /// History position of the completion; `None` when the outcome is
    /// unknown (`info` or missing), i.e. the operation may take effect at any
    /// later point.
    pub fn complete_index(&self) -> Option<u64> {
        match &self.completion {
            Some(c) if c.kind != OpType::Info => Some(c.index),
            _ => None,
        }
    }

    /// The completion's value when it is `ok` and non-null, otherwise the
    /// invocation's value.
    pub fn value(&self) -> &Value {
        match &self.completion {
            Some(c) if c.kind == OpType::Ok && !c.value.is_null() => &c.value,
            _ => &self.invoke.value,
        }
    }

    /// Nanoseconds from invocation to completion, if a completion exists.
    pub fn latency_ns(&self) -> Option<u64> {
        self.completion
            .as_ref()
            .map(|c| c.time.saturating_sub(self.invoke.time))
    }

    /// The records of this operation (one or two).
    pub fn records(&self) -> Vec<Op> {
        let mut v = vec![self.invoke.clone()];
        v.extend(self.completion.clone());
        v
    }

    /// A short rendering, e.g. `p3 write k1 5 [#4..#9 ok]`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.process().label(), self.f());
        if let Some(k) = self.key() {
            s.push(' ');
            s.push_str(k);
        }
        let v = self.value();
        if !v.is_null() || self.f() == f::READ && self.is_ok() {
            s.push(' ');
            s.push_str(&v.to_string());
        }
        match &self.completion {
            Some(c) => s.push_str(&format!(
                " [#{}..#{} {}]",
                self.invoke.index, c.index, c.kind
            )),
            None => s.push_str(&format!(" [#{}.. no completion]", self.invoke.index)),
        }
        s
    }
}

/// A history that does not follow the pairing rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    /// Indices must strictly increase along the history.
    #[error("record #{index} follows record #{previous}: indices must strictly increase")]
    IndexNotIncreasing {
        /// The offending record's index.
        index: u64,
        /// The previous record's index.
        previous: u64,
    },
    /// A process invoked an operation while another was outstanding.
    #[error("record #{index}: process {process} invokes while its operation #{outstanding} is still outstanding")]
    ConcurrentInvoke {
        /// The offending record's index.
        index: u64,
        /// The process.
        process: Process,
        /// Index of the outstanding invocation.
        outstanding: u64,
    },
    /// A completion with no outstanding invocation on its process.
    #[error("record #{index}: {kind} completion for process {process}, which has no outstanding invocation")]
    OrphanCompletion {
        /// The offending record's index.
        index: u64,
        /// The process.
        process: Process,
        /// The completion's type.
        kind: OpType,
    },
    /// A completion whose `f` or `key` differs from its invocation's.
    #[error("record #{index}: completion's {field} {found:?} differs from invocation #{invoke}'s {expected:?}")]
    Mismatch {
        /// The completion's index.
        index: u64,
        /// The invocation's index.
        invoke: u64,
        /// `"f"` or `"key"`.
        field: &'static str,
        /// The invocation's value of the field.
        expected: String,
        /// The completion's value of the field.
        found: String,
    },
}

/// Pairs every invocation with its completion on the same process.
///
/// A process has at most one outstanding operation; the next record of that
/// process after an `invoke` must be its completion. An `info` completion
/// ends the operation with an unknown outcome (the process may invoke
/// again); an invocation never completed is returned with `completion:
/// None`. A completion may omit `key` (it inherits the invocation's).
/// The result is ordered by invocation index.
pub fn pair(history: &[Op]) -> Result<Vec<Pair>, PairError> {
    let mut out: Vec<Pair> = Vec::new();
    let mut outstanding: HashMap<Process, usize> = HashMap::new();
    let mut previous: Option<u64> = None;
    for op in history {
        if let Some(prev) = previous {
            if op.index <= prev {
                return Err(PairError::IndexNotIncreasing {
                    index: op.index,
                    previous: prev,
                });
            }
        }
        previous = Some(op.index);
        if op.kind == OpType::Invoke {
            if let Some(&i) = outstanding.get(&op.process) {
                return Err(PairError::ConcurrentInvoke {
                    index: op.index,
                    process: op.process,
                    outstanding: out[i].invoke.index,
                });
            }
            outstanding.insert(op.process, out.len());
            out.push(Pair {
                invoke: op.clone(),
                completion: None,
            });
            continue;
        }
        let Some(i) = outstanding.remove(&op.process) else {
            return Err(PairError::OrphanCompletion {
                index: op.index,
                process: op.process,
                kind: op.kind,
            });
        };
        let inv = &out[i].invoke;
        if inv.f != op.f {
            return Err(PairError::Mismatch {
                index: op.index,
                invoke: inv.index,
                field: "f",
                expected: inv.f.clone(),
                found: op.f.clone(),
            });
        }
        if let (Some(a), Some(b)) = (&inv.key, &op.key) {
            if a != b {
                return Err(PairError::Mismatch {
                    index: op.index,
                    invoke: inv.index,
                    field: "key",
                    expected: a.clone(),
                    found: b.clone(),
                });
            }
        }
        out[i].completion = Some(op.clone());
    }
    Ok(out)
}

/// A canonical string for a JSON value (object keys sorted), usable as a
/// hash-map key for value equality.
pub fn canonical(v: &Value) -> String {
    fn go(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    go(&m[k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    go(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    go(v, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_and_shape() {
        let mut h = HistoryBuilder::new();
        h.invoke(0, f::WRITE, Some("k1"), json!(3))
            .push(Op::new(
                Process::Nemesis,
                OpType::Invoke,
                "start-partition",
                json!(["n1"]),
            ))
            .push(
                Op::new(0u64, OpType::Ok, f::WRITE, json!(3))
                    .with_key("k1")
                    .with_node("n2"),
            )
            .push(Op::new(
                Process::Nemesis,
                OpType::Info,
                "start-partition",
                Value::Null,
            ))
            .push(Op::new(1u64, OpType::Invoke, f::READ, Value::Null).with_key("k1"))
            .push(
                Op::new(1u64, OpType::Info, f::READ, Value::Null)
                    .with_key("k1")
                    .with_error("timeout"),
            );
        let ops = h.build();
        let text = to_jsonl(&ops);
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(
            first,
            json!({"index": 0, "time": 0, "process": 0, "type": "invoke", "f": "write", "key": "k1", "value": 3})
        );
        let second: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(second["process"], json!("nemesis"));
        assert_eq!(parse_jsonl(&text).unwrap(), ops);
    }

    #[test]
    fn parse_errors_name_the_line() {
        let text = "{\"index\":0,\"time\":0,\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}\n\n{\"index\":1,\"time\":5,\"process\":\"bob\",\"type\":\"ok\",\"f\":\"read\"}\n";
        let err = parse_jsonl(text).unwrap_err();
        assert_eq!(err.line(), Some(3));
        let msg = err.to_string();
        assert!(msg.starts_with("line 3: column"), "{msg}");
        assert!(msg.contains("nemesis"), "{msg}");

        let err =
            parse_jsonl("{\"index\":0,\"time\":0,\"process\":0,\"type\":\"done\",\"f\":\"read\"}")
                .unwrap_err();
        assert_eq!(err.line(), Some(1));
        assert!(err.to_string().contains("done"), "{err}");

        let err = parse_jsonl("not json").unwrap_err();
        assert_eq!(err.line(), Some(1));
    }

    #[test]
    fn missing_value_is_null() {
        let op =
            parse_op(r#"{"index":0,"time":0,"process":3,"type":"invoke","f":"read","key":"k"}"#)
                .unwrap();
        assert_eq!(op.value, Value::Null);
        assert_eq!(op.process, Process::Client(3));
        assert!(
            parse_op(r#"{"index":0,"time":0,"process":-1,"type":"invoke","f":"read"}"#).is_err()
        );
    }

    #[test]
    fn file_round_trip_and_error_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let mut h = HistoryBuilder::new();
        h.invoke(0, f::ADD, None, json!(1))
            .ok(0, f::ADD, None, json!(1));
        write_jsonl(&path, &h.build()).unwrap();
        assert_eq!(read_jsonl(&path).unwrap(), h.build());

        let mut w = HistoryWriter::new(Vec::new());
        for op in h.ops() {
            w.append(op).unwrap();
        }
        assert_eq!(
            String::from_utf8(w.into_inner()).unwrap(),
            to_jsonl(h.ops())
        );

        std::fs::write(&path, format!("{}{{oops\n", to_jsonl(h.ops()))).unwrap();
        let err = read_jsonl(&path).unwrap_err();
        assert_eq!(err.line(), Some(3));
        assert!(err.to_string().contains("history.jsonl:3"), "{err}");

        let err = read_jsonl(dir.path().join("missing.jsonl")).unwrap_err();
        assert!(err.to_string().contains("missing.jsonl"), "{err}");
    }

    #[test]
    fn pairing() {
        let mut h = HistoryBuilder::new();
        h.invoke(0, f::WRITE, Some("a"), json!(1))
            .invoke(1, f::READ, Some("a"), Value::Null)
            .ok(1, f::READ, None, json!(1))
            .info(0, f::WRITE, Some("a"), json!(1))
            .invoke(0, f::WRITE, Some("a"), json!(2))
            .invoke(2, f::CAS, Some("a"), json!([1, 2]))
            .fail(2, f::CAS, Some("a"), json!([1, 2]));
        let pairs = pair(h.ops()).unwrap();
        assert_eq!(pairs.len(), 4);
        assert!(pairs[0].is_info());
        assert_eq!(pairs[0].complete_index(), None);
        assert!(pairs[1].is_ok());
        assert_eq!(pairs[1].key(), Some("a"));
        assert_eq!(pairs[1].value(), &json!(1));
        assert_eq!(pairs[1].complete_index(), Some(2));
        assert!(pairs[2].completion.is_none() && pairs[2].is_info());
        assert!(pairs[3].is_fail());
    }

    #[test]
    fn pairing_errors() {
        let mut h = HistoryBuilder::new();
        h.invoke(0, f::READ, None, Value::Null)
            .invoke(0, f::READ, None, Value::Null);
        assert!(matches!(
            pair(h.ops()),
            Err(PairError::ConcurrentInvoke {
                index: 1,
                outstanding: 0,
                ..
            })
        ));

        let mut h = HistoryBuilder::new();
        h.ok(0, f::READ, None, Value::Null);
        assert!(matches!(
            pair(h.ops()),
            Err(PairError::OrphanCompletion { index: 0, .. })
        ));

        let mut h = HistoryBuilder::new();
        h.invoke(0, f::READ, Some("a"), Value::Null)
            .ok(0, f::WRITE, Some("a"), Value::Null);
        let e = pair(h.ops()).unwrap_err();
        assert!(matches!(e, PairError::Mismatch { field: "f", .. }), "{e}");

        let mut h = HistoryBuilder::new();
        h.invoke(0, f::READ, Some("a"), Value::Null)
            .ok(0, f::READ, Some("b"), Value::Null);
        assert!(matches!(
            pair(h.ops()),
            Err(PairError::Mismatch { field: "key", .. })
        ));

        let mut ops = HistoryBuilder::new();
        ops.invoke(0, f::READ, None, Value::Null)
            .ok(0, f::READ, None, Value::Null);
        let mut ops = ops.build();
        ops[1].index = 0;
        assert!(matches!(
            pair(&ops),
            Err(PairError::IndexNotIncreasing { .. })
        ));
    }

    #[test]
    fn canonical_sorts_keys() {
        assert_eq!(
            canonical(&json!({"b": 1, "a": [1, {"d": null, "c": "x"}]})),
            r#"{"a":[1,{"c":"x","d":null}],"b":1}"#
        );
    }
}
