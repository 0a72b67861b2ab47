//! Routes of the event registry.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;

use super::auth::Who;
use super::extract::{Json, OptionalJson, Path, Query, RawBody};
use super::{blocking, limit, ApiError, ApiResult, AppState, PageQuery, RawJson};
use crate::backup::catalog::Item;
use crate::backup::Trigger;
use crate::backup::{DeletedWithBackup, Filter};
use crate::registry::{batch_json, parse_records, Deleted, Update};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/events", get(list_events).post(create_event))
        .route("/api/events/{id}", get(get_event).put(put_event).patch(patch_event).delete(delete_event))
        .route("/api/events/{id}/backup", get(event_backups).post(backup_event))
        .route("/api/events/{id}/{collection}", get(list_records).post(create_record))
        .route("/api/events/{id}/{collection}/_batch", post(create_batch))
        .route(
            "/api/events/{id}/{collection}/{record_id}",
            get(get_record).put(put_record).patch(patch_record).delete(delete_record),
        )
}

/// `If-Match: 3` or `If-Match: "3"`; `*` matches any version.
fn if_match(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    let bare = text.trim_start_matches("W/").trim_matches('"');
    bare.parse().map(Some).map_err(|_| {
        ApiError::bad_request(
            "invalid_if_match",
            format!("If-Match must be a document version such as 3, not {text:?}"),
        )
    })
}

async fn create_event(State(s): State<AppState>, Json(body): Json<Value>) -> ApiResult<RawJson> {
    let doc = blocking(move || s.registry.create_event(body)).await?;
    Ok(RawJson(StatusCode::CREATED, doc.0))
}

async fn list_events(State(s): State<AppState>, Query(q): Query<PageQuery>) -> ApiResult<RawJson> {
    let limit = limit(q.limit)?;
    let page = blocking(move || s.registry.list_events(q.cursor.as_deref(), limit)).await?;
    Ok(RawJson::ok(page.to_json()))
}

async fn get_event(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<RawJson> {
    Ok(RawJson::ok(blocking(move || s.registry.get_event(&id)).await?.0))
}

async fn put_event(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<RawJson> {
    let expected = if_match(&headers)?;
    Ok(RawJson::ok(blocking(move || s.registry.update_event(&id, Update::Replace(body), expected)).await?.0))
}

async fn patch_event(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<RawJson> {
    let expected = if_match(&headers)?;
    Ok(RawJson::ok(blocking(move || s.registry.update_event(&id, Update::Merge(body), expected)).await?.0))
}

/// The event's backup is written first; nothing is deleted unless it is on disk.
async fn delete_event(
    State(s): State<AppState>,
    Who(actor): Who,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<DeletedWithBackup>> {
    let expected = if_match(&headers)?;
    Ok(axum::Json(blocking(move || s.backups.delete_event(&id, expected, actor)).await?))
}

async fn backup_event(
    State(s): State<AppState>,
    Who(actor): Who,
    Path(id): Path<String>,
    OptionalJson(_): OptionalJson<EmptyBody>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let written = blocking(move || s.backups.backup_event(&id, Trigger::Manual, actor)).await?;
    let mut value = serde_json::to_value(written).expect("serialisable");
    value["success"] = serde_json::json!(true);
    Ok((StatusCode::CREATED, axum::Json(value)))
}

/// `POST /api/events/{id}/backup` takes no options; an empty object is accepted.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

async fn event_backups(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Vec<Item>>> {
    if !crate::names::is_id(&id) {
        return Err(crate::registry::Error::InvalidId(id).into());
    }
    let filter = Filter { kind: None, event_id: Some(id) };
    Ok(axum::Json(blocking(move || s.backups.list_all(&filter)).await?))
}

async fn create_record(
    State(s): State<AppState>,
    Path((id, collection)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> ApiResult<RawJson> {
    let mut docs = blocking(move || {
        let records = parse_records(&body, false)?;
        s.registry.create_records(&id, &collection, records)
    })
    .await?;
    let created = docs.pop().ok_or_else(|| ApiError::internal("a one-record batch returned no record"))?;
    Ok(RawJson(StatusCode::CREATED, created.doc.0))
}

/// Query of `_batch`.
#[derive(Debug, serde::Deserialize)]
struct BatchQuery {
    /// Also answer the created documents (`items`), not only their ids.
    #[serde(default)]
    echo: bool,
}

/// Parsing a batch (megabytes of JSON) happens on the blocking pool with the write. The answer
/// is `{count, ids}`; `?echo=true` adds the documents as stored (`items`), megabytes that a
/// client which sent them rarely needs back.
async fn create_batch(
    State(s): State<AppState>,
    Path((id, collection)): Path<(String, String)>,
    Query(q): Query<BatchQuery>,
    RawBody(body): RawBody,
) -> ApiResult<RawJson> {
    let answer = blocking(move || {
        let records = parse_records(&body, true)?;
        let created = s.registry.create_records(&id, &collection, records)?;
        Ok::<_, crate::registry::Error>(batch_json(&created, q.echo))
    })
    .await?;
    Ok(RawJson(StatusCode::CREATED, answer))
}

async fn list_records(
    State(s): State<AppState>,
    Path((id, collection)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> ApiResult<RawJson> {
    let limit = limit(q.limit)?;
    let page =
        blocking(move || s.registry.list_records(&id, &collection, q.cursor.as_deref(), limit)).await?;
    Ok(RawJson::ok(page.to_json()))
}

async fn get_record(
    State(s): State<AppState>,
    Path((id, collection, record)): Path<(String, String, String)>,
) -> ApiResult<RawJson> {
    Ok(RawJson::ok(blocking(move || s.registry.get_record(&id, &collection, &record)).await?.0))
}

async fn put_record(
    State(s): State<AppState>,
    Path((id, collection, record)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<RawJson> {
    let expected = if_match(&headers)?;
    let update = Update::Replace(body);
    let doc = blocking(move || s.registry.update_record(&id, &collection, &record, update, expected)).await?;
    Ok(RawJson::ok(doc.0))
}

async fn patch_record(
    State(s): State<AppState>,
    Path((id, collection, record)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<RawJson> {
    let expected = if_match(&headers)?;
    let update = Update::Merge(body);
    let doc = blocking(move || s.registry.update_record(&id, &collection, &record, update, expected)).await?;
    Ok(RawJson::ok(doc.0))
}

async fn delete_record(
    State(s): State<AppState>,
    Path((id, collection, record)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Deleted>> {
    let expected = if_match(&headers)?;
    Ok(axum::Json(blocking(move || s.registry.delete_record(&id, &collection, &record, expected)).await?))
}
