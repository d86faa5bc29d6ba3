//! Streams of the job queues: an attempt's logs (followed as Server-Sent
//! Events) and the shards' events (a page, or a stream).

use super::extract::{Path, Query};
use super::openapi_errors::ErrorBody;
use super::AppState;
use crate::api::cursor::{cursor_string, parse_cursor};
use crate::api::jobs_view::EventView;
use crate::api::limits::{DEFAULT_EVENT_LIMIT, MAX_EVENT_LIMIT};
use crate::api::ApiError;
use crate::service::jobs::{JobLogs, LogEvent};
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs/{id}/logs", get(logs))
        .route("/v1/events", get(events))
        .route("/v1/events/stream", get(events_stream))
}

fn invalid(field: &str, what: &str) -> ApiError {
    ApiError::bad("invalid_field", format!("field {field:?} must be {what}"))
}

fn flag(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1"))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LogParams {
    /// `true`: follow the attempt's output as Server-Sent Events.
    #[param(value_type = Option<bool>)]
    follow: Option<String>,
    /// Set by the node that proxies the request here: read this node's logs.
    #[param(value_type = Option<bool>)]
    local: Option<String>,
    /// The attempt (default: the last).
    #[param(value_type = Option<u32>, minimum = 1)]
    attempt: Option<String>,
}

#[utoipa::path(get, path = "/v1/jobs/{id}/logs", operation_id = "job_logs", tag = "jobs",
    params(("id" = String, Path, description = "The job's id."), LogParams),
    responses(
        (status = 200, description = "The attempt's output as text; with `follow=true` a stream of             Server-Sent Events (`log` events, `lagged` when some were dropped, then `end`).",
            content((String = "text/plain; charset=utf-8"), (String = "text/event-stream"))),
        (status = 400, description = "`invalid_field` (attempt), `missing_field`.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job, attempt or log.", body = ErrorBody),
    ))]
/// The logs of an attempt (default: the last), from the node that ran it;
/// `follow=true`: as SSE (`log` events, then `end`).
async fn logs(
    State(s): State<AppState>,
    Extension(caller): Extension<crate::auth::Caller>,
    Path(id): Path<String>,
    Query(p): Query<LogParams>,
) -> Result<Response, ApiError> {
    s.jobs
        .authorize_job(&caller, &id, crate::service::jobs::JobAction::Use)
        .await?;
    let follow = flag(p.follow.as_deref());
    let attempt: Option<u64> = match &p.attempt {
        None => None,
        Some(a) => Some(
            a.parse()
                .map_err(|_| invalid("attempt", "a positive integer"))?,
        ),
    };
    let logs = if flag(p.local.as_deref()) {
        let attempt = attempt
            .ok_or_else(|| ApiError::bad("missing_field", "attempt is required with local=true"))?;
        s.jobs.local_logs(&id, attempt, follow)?
    } else {
        s.jobs.logs(&id, attempt, follow).await?
    };
    let events = match logs {
        JobLogs::Text(bytes) => {
            return Ok(([("content-type", "text/plain; charset=utf-8")], bytes).into_response())
        }
        JobLogs::Follow(events) => events,
    };
    // `end` is the last event; a source that failed just ends the stream.
    let stream = events
        .take_while(|e| std::future::ready(!matches!(e, LogEvent::Failed(_))))
        .map(|e| {
            let ev = match e {
                LogEvent::Data(d) => SseEvent::default()
                    .event("log")
                    .data(String::from_utf8_lossy(&d)),
                LogEvent::Lagged(n) => SseEvent::default()
                    .event("lagged")
                    .data(LogEvent::lagged_message(n)),
                LogEvent::End | LogEvent::Failed(_) => SseEvent::default().event("end").data("end"),
            };
            Ok::<_, Infallible>(ev)
        });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EventParams {
    /// A `cursor` from an earlier answer (seqs joined by `.`); none: from the start.
    #[param(pattern = "^([0-9]+(\\.[0-9]+)*)?$")]
    since: Option<String>,
    /// Events per page (default 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    limit: Option<String>,
}

/// A page of job events.
#[derive(Serialize, utoipa::ToSchema)]
struct Events<'a> {
    events: Vec<EventView<'a>>,
    cursor: String,
}

#[utoipa::path(get, path = "/v1/events", operation_id = "events", tag = "jobs",
    params(EventParams),
    responses(
        (status = 200, description = "Events after the cursor, and the cursor after them.", body = Events),
        (status = 400, description = "`invalid_cursor`, `invalid_field` (limit).", body = ErrorBody),
    ))]
async fn events(
    State(s): State<AppState>,
    Query(p): Query<EventParams>,
) -> Result<Response, ApiError> {
    let cursor = parse_cursor(p.since.as_deref().unwrap_or(""))?;
    let limit = match &p.limit {
        None => DEFAULT_EVENT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_EVENT_LIMIT).contains(l))
            .ok_or_else(|| invalid("limit", &format!("1..={MAX_EVENT_LIMIT}")))?,
    };
    let (evs, next) = s.jobs.events_since(&cursor, limit).await?;
    Ok(Json(Events {
        events: evs.iter().map(|(s, e)| EventView::new(*s, e)).collect(),
        cursor: cursor_string(&next),
    })
    .into_response())
}

#[utoipa::path(get, path = "/v1/events/stream", operation_id = "events_stream", tag = "jobs",
    params(EventParams, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this cursor (wins over `since`).")),
    responses(
        (status = 200, description = "Server-Sent Events, one per job event: `event` is its type,             `id` the cursor after it, `data` the event as in `GET /v1/events`. Never ends.",
            content_type = "text/event-stream", body = String),
        (status = 400, description = "`invalid_cursor`.", body = ErrorBody),
    ))]
/// Server-Sent Events of every shard's events. Each SSE `id` is the cursor
/// after that event, so a reconnect with `Last-Event-ID` resumes exactly.
async fn events_stream(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<EventParams>,
) -> Result<Response, ApiError> {
    let from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .or(p.since)
        .unwrap_or_default();
    let cursor = parse_cursor(&from)?;
    let changed = s.jobs.events.subscribe();
    let stream = futures::stream::unfold(
        (s, cursor, VecDeque::<SseEvent>::new(), changed),
        |(s, mut cursor, mut pending, mut changed)| async move {
            loop {
                if let Some(ev) = pending.pop_front() {
                    return Some((Ok::<_, Infallible>(ev), (s, cursor, pending, changed)));
                }
                match s.jobs.events_since(&cursor, 500).await {
                    Ok((evs, _)) if !evs.is_empty() => {
                        for (shard, e) in &evs {
                            let i = *shard as usize;
                            if cursor.len() <= i {
                                cursor.resize(i + 1, 0);
                            }
                            cursor[i] = e.seq;
                            let data = serde_json::to_string(&EventView::new(*shard, e))
                                .unwrap_or_default();
                            pending.push_back(
                                SseEvent::default()
                                    .id(cursor_string(&cursor))
                                    .event(e.kind.clone())
                                    .data(data),
                            );
                        }
                    }
                    // Nothing new: wait for the node's events watcher (the
                    // timeout only bounds a missed notification).
                    Ok(_) => {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(30), changed.changed()).await;
                    }
                    Err(e) => {
                        tracing::debug!("event stream: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response())
}
