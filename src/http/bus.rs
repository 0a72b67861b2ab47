//! Routes of the event bus: read, publish, stream (SSE) and consumer offsets.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, KeepAliveStream, Sse};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::extract::{Json, Path, Query};
use super::schema::ConsumerOnTimeline;
use super::{blocking, ApiError, ApiResult, AppState};
use crate::bus::{Consumer, Message, Page};

/// Messages read from the store per round trip of a stream.
const STREAM_PAGE: usize = 500;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(read))
        .routes(routes!(stream))
        .routes(routes!(get_consumer, put_consumer))
        .routes(routes!(publish))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ReadQuery {
    /// Messages after this seq (default 0: from the start).
    after: Option<u64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Only this topic's messages.
    topic: Option<String>,
}

/// A page of the log, oldest first.
#[utoipa::path(
    get,
    path = "/api/bus",
    tag = "bus",
    params(ReadQuery),
    responses(
        (status = 200, description = "Messages after `after`", body = Page),
        (status = 400, description = "`invalid_query`, `invalid_limit` or `invalid_topic`", body = ErrorBody),
    )
)]
async fn read(State(s): State<AppState>, Query(q): Query<ReadQuery>) -> ApiResult<axum::Json<Page>> {
    let limit = super::limit(q.limit)?;
    let page = blocking(move || s.bus.read(q.after.unwrap_or(0), limit, q.topic.as_deref())).await?;
    Ok(axum::Json(page))
}

/// A message to publish.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    /// What happened, e.g. `reminder.sent`.
    #[serde(rename = "type")]
    kind: String,
    /// The payload (any JSON; `null` when left out).
    #[serde(default)]
    data: Value,
}

/// Appends a message to a client topic (`registry` is the registry's own).
#[utoipa::path(
    post,
    path = "/api/bus/{topic}",
    tag = "bus",
    params(("topic" = String, Path, description = "A topic name: letters, digits, `.`, `_`, `-`")),
    request_body = PublishBody,
    responses(
        (status = 201, description = "Appended", body = Message),
        (status = 400, description = "`invalid_topic`, `reserved_topic`, `invalid_type` or \
            `invalid_json`", body = ErrorBody),
        (status = 507, description = "`disk_full`: nothing was written", body = ErrorBody),
    )
)]
async fn publish(
    State(s): State<AppState>,
    Path(topic): Path<String>,
    Json(body): Json<PublishBody>,
) -> ApiResult<(StatusCode, axum::Json<Message>)> {
    let message = blocking(move || s.bus.publish(&topic, &body.kind, body.data)).await?;
    Ok((StatusCode::CREATED, axum::Json(message)))
}

/// A consumer's offset, and the timeline it belongs to (read together: the route passes the
/// gate).
#[utoipa::path(
    get,
    path = "/api/bus/consumers/{name}",
    tag = "bus",
    params(("name" = String, Path, description = "The consumer's name")),
    responses(
        (status = 200, description = "Its offset", body = ConsumerOnTimeline),
        (status = 400, description = "`invalid_consumer`", body = ErrorBody),
        (status = 404, description = "`not_found`: no offset was ever stored under that \
            name", body = ErrorBody),
    )
)]
async fn get_consumer(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<axum::Json<Value>> {
    let store = s.store.clone();
    let consumer = blocking(move || s.bus.consumer(&name)).await?;
    let mut value = serde_json::to_value(consumer).unwrap_or_default();
    value["timeline"] = json!(store.timeline().id);
    Ok(axum::Json(value))
}

/// A consumer's new offset.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct OffsetBody {
    /// Seq of the last message handled.
    offset: u64,
    /// The timeline the offset was read on (optional): 409 `timeline_changed` when the log
    /// is on another one.
    timeline: Option<String>,
}

/// Stores a consumer's offset.
#[utoipa::path(
    put,
    path = "/api/bus/consumers/{name}",
    tag = "bus",
    params(("name" = String, Path, description = "The consumer's name")),
    request_body = OffsetBody,
    responses(
        (status = 200, description = "Stored", body = Consumer),
        (status = 400, description = "`invalid_consumer`, `offset_past_end` or \
            `invalid_json`", body = ErrorBody),
        (status = 409, description = "`timeline_changed`: the log is on another timeline than \
            `timeline`", body = ErrorBody),
        (status = 507, description = "`disk_full`: nothing was written", body = ErrorBody),
    )
)]
async fn put_consumer(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Json(body): Json<OffsetBody>,
) -> ApiResult<axum::Json<Consumer>> {
    Ok(axum::Json(blocking(move || s.bus.set_consumer(&name, body.offset, body.timeline.as_deref())).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// Messages after this seq (default 0); `Last-Event-ID` wins over it.
    after: Option<u64>,
    /// Only this topic's messages.
    topic: Option<String>,
}

/// Server-Sent Events: every message after `after` (or `Last-Event-ID`), then new ones as
/// they are committed. Each `message` event has the seq as its id. The first event,
/// `timeline`, names the log's timeline and `lastSeq`. When a restore replaces the log (or a
/// promoted standby starts a new timeline), a `replaced` event with the new `lastSeq` and
/// `timeline` is sent and the stream ends, so the client resyncs.
#[utoipa::path(
    get,
    path = "/api/bus/stream",
    tag = "bus",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this seq (as browsers send it)"),
    ),
    responses(
        (status = 200, description = "An endless Server-Sent Events stream: `timeline`, then a \
            `message` event per message (id: its seq, data: the message), `replaced` when a \
            restore replaced the log", content_type = "text/event-stream", body = String),
        (status = 400, description = "`invalid_query`, `invalid_topic` or \
            `invalid_last_event_id`", body = ErrorBody),
    )
)]
async fn stream(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> ApiResult<Sse<KeepAliveStream<ReceiverStream<Result<Event, Infallible>>>>> {
    let after = match headers.get("last-event-id") {
        Some(v) => v.to_str().ok().and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_last_event_id",
                "Last-Event-ID must be a message seq (a whole number)",
            )
        })?,
        None => q.after.unwrap_or(0),
    };
    if let Some(topic) = &q.topic {
        // Fail now with a 400 rather than inside the stream.
        let (bus, topic) = (s.bus.clone(), topic.clone());
        blocking(move || bus.read(u64::MAX - 1, 1, Some(&topic))).await?;
    }
    let (tx, rx) = mpsc::channel(STREAM_PAGE);
    tokio::spawn(follow(s, after, q.topic, tx));
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()))
}

async fn follow(
    s: AppState,
    mut cursor: u64,
    topic: Option<String>,
    tx: mpsc::Sender<Result<Event, Infallible>>,
) {
    let mut head = s.store.watch_head();
    let mut shutdown = s.shutdown.clone();
    let now = *head.borrow_and_update();
    let epoch = now.epoch;
    // The timeline before the first page: a swap after this shows as a new epoch below, or
    // as a page read on another timeline.
    let timeline = s.store.timeline().id;
    let data = json!({"timeline": timeline, "lastSeq": now.last_seq}).to_string();
    if tx.send(Ok(Event::default().event("timeline").data(data))).await.is_err() {
        return;
    }
    loop {
        let (bus, topic_now) = (s.bus.clone(), topic.clone());
        let page = blocking(move || bus.read(cursor, STREAM_PAGE, topic_now.as_deref())).await;
        let page = match page {
            Ok(page) => page,
            Err(e) if e.status() == StatusCode::SERVICE_UNAVAILABLE => {
                // The store is being swapped; the head watch tells when it is back.
                Page { messages: Vec::new(), last_seq: cursor, timeline: String::new() }
            }
            Err(_) => return,
        };
        if !page.timeline.is_empty() && page.timeline != timeline {
            // Read from a restored log: none of it is sent under the old timeline.
            let data =
                json!({"lastSeq": page.last_seq, "epoch": s.store.head().epoch, "timeline": page.timeline})
                    .to_string();
            let _ = tx.send(Ok(Event::default().event("replaced").data(data))).await;
            return;
        }
        let full = page.messages.len() == STREAM_PAGE;
        for message in page.messages {
            cursor = message.seq;
            let event = Event::default().id(message.seq.to_string()).event("message");
            let event = event.json_data(&message).unwrap_or_else(|_| Event::default().comment("unencodable"));
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            changed = head.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *head.borrow_and_update();
                if now.epoch != epoch {
                    let data = json!({"lastSeq": now.last_seq, "epoch": now.epoch, "timeline": s.store.timeline().id})
                        .to_string();
                    let _ = tx.send(Ok(Event::default().event("replaced").data(data))).await;
                    return;
                }
            }
            _ = shutdown.changed() => return,
            _ = tx.closed() => return,
        }
    }
}
