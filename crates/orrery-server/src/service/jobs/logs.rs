//! Job logs: kept in memory by the engine of the node that ran the
//! attempt. Any other node reads them from that node (its REST endpoint
//! with `local=true`, so that nodes of different builds interoperate).

use super::JobsService;
use crate::api::ApiError;
use futures::stream::BoxStream;
use futures::StreamExt;
use orrery_exec::LogChunk;
use orrery_types::NodeId;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

/// An attempt's logs: all that is kept, or (following) that and then what
/// the run writes until it ends.
pub enum JobLogs {
    Text(Vec<u8>),
    Follow(BoxStream<'static, LogEvent>),
}

/// A piece of a followed log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogEvent {
    Data(Vec<u8>),
    /// The follower fell behind and this many chunks were skipped.
    Lagged(u64),
    /// The run ended; nothing more comes.
    End,
    /// The node that runs the attempt stopped answering.
    Failed(String),
}

impl LogEvent {
    /// What a follower is told when it lagged.
    pub fn lagged_message(n: u64) -> String {
        format!("{n} chunks skipped; re-read the logs without follow")
    }
}

impl JobsService {
    /// The logs of attempt `attempt` (default: the last) of job `id`, from
    /// the node that ran it.
    pub async fn logs(
        &self,
        id: &str,
        attempt: Option<u64>,
        follow: bool,
    ) -> Result<JobLogs, ApiError> {
        let job = self.get_job(id).await?;
        let run = match attempt {
            Some(a) => job.runs.iter().find(|r| r.attempt as u64 == a),
            None => job.runs.last(),
        }
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "job {id} has no run{} yet",
                attempt.map(|a| format!(" {a}")).unwrap_or_default()
            ))
        })?;
        let (attempt, run_node) = (run.attempt as u64, run.node);
        if run_node == 0 {
            return Err(ApiError::NotFound(format!(
                "attempt {attempt} of job {id} ran on an external worker; its logs are not kept by Orrery"
            )));
        }
        if run_node != self.node.id() {
            return self.remote_logs(run_node, id, attempt, follow).await;
        }
        self.local_logs(id, attempt, follow)
    }

    /// The logs this node's engine keeps of an attempt.
    pub fn local_logs(&self, id: &str, attempt: u64, follow: bool) -> Result<JobLogs, ApiError> {
        let me = self.node.id();
        let engine = self
            .engine
            .get()
            .ok_or_else(|| ApiError::NotFound(format!("node {me} runs no job engine")))?;
        let gone = || {
            ApiError::NotFound(format!(
                "logs of attempt {attempt} of job {id} are no longer on node {me} (kept in memory for recent runs only)"
            ))
        };
        if !follow {
            let (bytes, _) = engine.logs().read(id, attempt).ok_or_else(gone)?;
            return Ok(JobLogs::Text(bytes));
        }
        let (initial, rx) = engine.logs().follow(id, attempt).ok_or_else(gone)?;
        let first = futures::stream::iter((!initial.is_empty()).then_some(LogEvent::Data(initial)));
        let rest = futures::stream::unfold(Some(rx), |rx| async move {
            let mut rx = rx?;
            let ev = match rx.recv().await {
                Ok(LogChunk::Data(d)) => LogEvent::Data(d),
                Ok(LogChunk::End) | Err(RecvError::Closed) => return Some((LogEvent::End, None)),
                Err(RecvError::Lagged(n)) => LogEvent::Lagged(n),
            };
            Some((ev, Some(rx)))
        });
        Ok(JobLogs::Follow(first.chain(rest).boxed()))
    }

    async fn remote_logs(
        &self,
        run_node: NodeId,
        id: &str,
        attempt: u64,
        follow: bool,
    ) -> Result<JobLogs, ApiError> {
        let p = self.node.placement();
        let member = p.members.get(&run_node).ok_or_else(|| {
            ApiError::NotFound(format!(
                "node {run_node}, which ran attempt {attempt}, is no longer a member"
            ))
        })?;
        let url = format!(
            "{}://{}/v1/jobs/{id}/logs?attempt={attempt}&local=true&follow={follow}",
            self.scheme(),
            member.addr.addr
        );
        let mut req = self.http().get(&url);
        if !follow {
            req = req.timeout(self.node.cfg.request_timeout);
        }
        let unreachable = |e: reqwest::Error| {
            ApiError::unavailable(format!(
                "node {run_node} (which ran attempt {attempt}) is unreachable: {e}"
            ))
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(remote_error(status, &body));
        }
        if !follow {
            let bytes = resp.bytes().await.map_err(unreachable)?;
            return Ok(JobLogs::Text(bytes.to_vec()));
        }
        Ok(JobLogs::Follow(sse_events(resp.bytes_stream().boxed())))
    }
}

/// The error another node answered a logs request with.
fn remote_error(status: u16, body: &Value) -> ApiError {
    let msg = body["error"]["message"]
        .as_str()
        .unwrap_or("logs unavailable")
        .to_string();
    match status {
        404 => ApiError::NotFound(msg),
        400 => ApiError::bad(
            body["error"]["code"].as_str().unwrap_or("invalid_request"),
            msg,
        ),
        _ => ApiError::unavailable(msg),
    }
}

/// The events of a Server-Sent Events body (as this server writes them:
/// `event: log|lagged|end` and `data:` lines, blank-line separated).
fn sse_events<B, E>(body: BoxStream<'static, Result<B, E>>) -> BoxStream<'static, LogEvent>
where
    B: AsRef<[u8]> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    futures::stream::unfold(Some((body, Vec::new())), |state| async move {
        let (mut body, mut buf) = state?;
        loop {
            // Split on bytes: a chunk may end inside a UTF-8 character.
            if let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = buf.drain(..pos + 2).collect();
                match parse_event(&String::from_utf8_lossy(&event)) {
                    Some(LogEvent::End) => return Some((LogEvent::End, None)),
                    Some(ev) => return Some((ev, Some((body, buf)))),
                    None => continue,
                }
            }
            match body.next().await {
                Some(Ok(b)) => buf.extend_from_slice(b.as_ref()),
                Some(Err(e)) => return Some((LogEvent::Failed(e.to_string()), None)),
                None => return None,
            }
        }
    })
    .boxed()
}

/// One SSE event; `None` for comments (keep-alives) and empty events.
fn parse_event(event: &str) -> Option<LogEvent> {
    let mut kind = "";
    let mut data = Vec::new();
    for line in event.lines() {
        if let Some(k) = line.strip_prefix("event:") {
            kind = k.trim();
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    match kind {
        "end" => Some(LogEvent::End),
        _ if data.is_empty() => None,
        "lagged" => {
            let n = data[0].split(' ').next().and_then(|n| n.parse().ok());
            Some(LogEvent::Lagged(n.unwrap_or(0)))
        }
        _ => Some(LogEvent::Data(data.join("\n").into_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sse_bodies_become_log_events() {
        let parts: Vec<Result<String, String>> = vec![
            Ok("event: log\ndata: a\ndata: b\n\n: keep".into()),
            Ok("-alive\n\nevent: lagged\ndata: ".into()),
            Ok(format!(
                "{}\n\nevent: end\ndata: end\n\nevent: log\ndata: late\n\n",
                LogEvent::lagged_message(3)
            )),
        ];
        let evs: Vec<LogEvent> = sse_events(futures::stream::iter(parts).boxed())
            .collect()
            .await;
        assert_eq!(
            evs,
            vec![
                LogEvent::Data(b"a\nb".to_vec()),
                LogEvent::Lagged(3),
                LogEvent::End
            ]
        );
    }

    #[test]
    fn remote_errors_keep_their_kind() {
        let body = serde_json::json!({"error": {"code": "not_found", "message": "gone"}});
        assert_eq!(remote_error(404, &body), ApiError::NotFound("gone".into()));
        assert_eq!(
            remote_error(502, &Value::Null),
            ApiError::unavailable("logs unavailable")
        );
    }
}
