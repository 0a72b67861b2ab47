//! Routes of the event registry.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Who;
use super::error::ErrorBody;
use super::extract::{Json, OptionalJson, Path, Query, RawBody};
use super::schema::{
    BatchCreated, CollectionPath, Document, DocumentPage, EventBackupCreated, EventPath, IfMatch, RecordPath,
};
use super::{blocking, limit, ApiError, ApiResult, AppState, PageQuery, RawJson};
use crate::backup::catalog::Item;
use crate::backup::Trigger;
use crate::backup::{DeletedWithBackup, Filter};
use crate::registry::{batch_json, parse_records, Deleted, Update};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events, create_event))
        .routes(routes!(get_event, put_event, patch_event, delete_event))
        .routes(routes!(event_backups, backup_event))
        .routes(routes!(list_records, create_record))
        .routes(routes!(create_batch))
        .routes(routes!(get_record, put_record, patch_record, delete_record))
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

/// Creates an event.
#[utoipa::path(
    post,
    path = "/api/events",
    tag = "events",
    request_body(content = Object, description = "The document: a JSON object; `id`, `createdAt`, \
        `updatedAt` and `version` are the server's"),
    responses(
        (status = 201, description = "Created", body = Document),
        (status = 400, description = "`invalid_json` or `invalid_document`", body = ErrorBody),
        (status = 413, description = "`document_too_large` or `payload_too_large`", body = ErrorBody),
        (status = 507, description = "`disk_full`: nothing was written", body = ErrorBody),
    )
)]
async fn create_event(State(s): State<AppState>, Json(body): Json<Value>) -> ApiResult<RawJson> {
    let doc = blocking(move || s.registry.create_event(body)).await?;
    Ok(RawJson(StatusCode::CREATED, doc.0))
}

/// Lists events, by id.
#[utoipa::path(
    get,
    path = "/api/events",
    tag = "events",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of events", body = DocumentPage),
        (status = 400, description = "`invalid_query`, `invalid_limit` or \
            `invalid_cursor`", body = ErrorBody),
    )
)]
async fn list_events(State(s): State<AppState>, Query(q): Query<PageQuery>) -> ApiResult<RawJson> {
    let limit = limit(q.limit)?;
    let page = blocking(move || s.registry.list_events(q.cursor.as_deref(), limit)).await?;
    Ok(RawJson::ok(page.to_json()))
}

/// Reads an event.
#[utoipa::path(
    get,
    path = "/api/events/{id}",
    tag = "events",
    params(EventPath),
    responses(
        (status = 200, description = "The event", body = Document),
        (status = 400, description = "`invalid_id`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such event", body = ErrorBody),
    )
)]
async fn get_event(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<RawJson> {
    Ok(RawJson::ok(blocking(move || s.registry.get_event(&id)).await?.0))
}

/// Replaces an event's fields.
#[utoipa::path(
    put,
    path = "/api/events/{id}",
    tag = "events",
    params(EventPath, IfMatch),
    request_body(content = Object, description = "The document: a JSON object; `id`, `createdAt`, \
        `updatedAt` and `version` are the server's"),
    responses(
        (status = 200, description = "Replaced", body = Document),
        (status = 400, description = "`invalid_id`, `invalid_json`, `invalid_document` or \
            `invalid_if_match`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such event", body = ErrorBody),
        (status = 412, description = "`version_mismatch`: `If-Match` names another version; nothing \
            changed", body = ErrorBody),
        (status = 413, description = "`document_too_large` or `payload_too_large`", body = ErrorBody),
        (status = 507, description = "`disk_full`: nothing was written", body = ErrorBody),
    )
)]
async fn put_event(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<RawJson> {
    let expected = if_match(&headers)?;
    Ok(RawJson::ok(blocking(move || s.registry.update_event(&id, Update::Replace(body), expected)).await?.0))
}

/// Patches an event.
#[utoipa::path(
    patch,
    path = "/api/events/{id}",
    tag = "events",
    params(EventPath, IfMatch),
    request_body(content = Object, description = "A JSON merge patch (RFC 7396): `null` removes a field"),
    responses(
        (status = 200, description = "Patched", body = Document),
        (status = 400, description = "`invalid_id`, `invalid_json`, `invalid_document` or \
            `invalid_if_match`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such event", body = ErrorBody),
        (status = 412, description = "`version_mismatch`: `If-Match` names another version; nothing \
            changed", body = ErrorBody),
        (status = 413, description = "`document_too_large` or `payload_too_large`", body = ErrorBody),
        (status = 507, description = "`disk_full`: nothing was written", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    delete,
    path = "/api/events/{id}",
    tag = "events",
    params(EventPath, IfMatch),
    responses(
        (status = 200, description = "Deleted, after its backup was \
            written", body = crate::backup::DeletedWithBackup),
        (status = 400, description = "`invalid_id` or `invalid_if_match`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such event", body = ErrorBody),
        (status = 409, description = "`changed_during_backup` or `busy`: retry", body = ErrorBody),
        (status = 412, description = "`version_mismatch`: `If-Match` names another version; nothing \
            changed", body = ErrorBody),
        (status = 422, description = "`backup_failed`: the event is too large to back up; nothing \
            was deleted", body = ErrorBody),
        (status = 507, description = "`backup_failed` or `disk_full`: no room for its backup; \
            nothing was deleted", body = ErrorBody),
    )
)]
async fn delete_event(
    State(s): State<AppState>,
    Who(actor): Who,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<DeletedWithBackup>> {
    let expected = if_match(&headers)?;
    Ok(axum::Json(blocking(move || s.backups.delete_event(&id, expected, actor)).await?))
}

/// Writes a backup of one event, changing nothing.
#[utoipa::path(
    post,
    path = "/api/events/{id}/backup",
    tag = "backups",
    params(EventPath),
    request_body(content = Option<Object>, description = "Nothing, or `{}`"),
    responses(
        (status = 201, description = "The event backup, written", body = EventBackupCreated),
        (status = 400, description = "`invalid_id` or `invalid_json`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such event", body = ErrorBody),
        (status = 409, description = "`busy`: another backup or restore is running", body = ErrorBody),
        (status = 422, description = "`document_too_large`: the event is too large to back \
            up", body = ErrorBody),
        (status = 507, description = "`disk_full`: nothing was written", body = ErrorBody),
    )
)]
async fn backup_event(
    State(s): State<AppState>,
    Who(actor): Who,
    Path(id): Path<String>,
    OptionalJson(_empty): OptionalJson<EmptyBody>,
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

/// Lists one event's backups.
#[utoipa::path(
    get,
    path = "/api/events/{id}/backup",
    tag = "backups",
    params(EventPath),
    responses(
        (status = 200, description = "Its backups, newest first", body = Vec<crate::backup::catalog::Item>),
        (status = 400, description = "`invalid_id`", body = ErrorBody),
    )
)]
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

/// Creates a record.
#[utoipa::path(
    post,
    path = "/api/events/{id}/{collection}",
    tag = "events",
    params(CollectionPath),
    request_body(content = Object, description = "The document: a JSON object; `id`, `createdAt`, \
        `updatedAt` and `version` are the server's"),
    responses(
        (status = 201, description = "Created", body = Document),
        (status = 400, description = "`invalid_id`, `invalid_collection`, `reserved_collection`, \
            `invalid_json` or `invalid_document`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such event", body = ErrorBody),
        (status = 413, description = "`document_too_large` or `payload_too_large`", body = ErrorBody),
        (status = 507, description = "`disk_full`: nothing was written", body = ErrorBody),
    )
)]
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
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct BatchQuery {
    /// Also answer the created documents (`items`), not only their ids.
    #[serde(default)]
    echo: bool,
}

/// Parsing a batch (megabytes of JSON) happens on the blocking pool with the write. The answer
/// is `{count, ids}`; `?echo=true` adds the documents as stored (`items`), megabytes that a
/// client which sent them rarely needs back.
#[utoipa::path(
    post,
    path = "/api/events/{id}/{collection}/_batch",
    tag = "events",
    params(CollectionPath, BatchQuery),
    request_body(content = Vec<Object>, description = "Up to 10,000 records: a JSON array of objects"),
    responses(
        (status = 201, description = "All created, atomically", body = BatchCreated),
        (status = 400, description = "`invalid_id`, `invalid_collection`, `reserved_collection`, \
            `invalid_json`, `invalid_document` or `batch_too_large`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such event", body = ErrorBody),
        (status = 413, description = "`document_too_large` or `payload_too_large`", body = ErrorBody),
        (status = 507, description = "`disk_full`: nothing was written", body = ErrorBody),
    )
)]
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

/// Lists an event's records of one collection, by id.
#[utoipa::path(
    get,
    path = "/api/events/{id}/{collection}",
    tag = "events",
    params(CollectionPath, PageQuery),
    responses(
        (status = 200, description = "A page of records", body = DocumentPage),
        (status = 400, description = "`invalid_id`, `invalid_collection`, `invalid_query`, \
            `invalid_limit` or `invalid_cursor`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such event", body = ErrorBody),
    )
)]
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

/// Reads a record.
#[utoipa::path(
    get,
    path = "/api/events/{id}/{collection}/{record_id}",
    tag = "events",
    params(RecordPath),
    responses(
        (status = 200, description = "The record", body = Document),
        (status = 400, description = "`invalid_id` or `invalid_collection`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such event or record", body = ErrorBody),
    )
)]
async fn get_record(
    State(s): State<AppState>,
    Path((id, collection, record)): Path<(String, String, String)>,
) -> ApiResult<RawJson> {
    Ok(RawJson::ok(blocking(move || s.registry.get_record(&id, &collection, &record)).await?.0))
}

/// Replaces a record's fields.
#[utoipa::path(
    put,
    path = "/api/events/{id}/{collection}/{record_id}",
    tag = "events",
    params(RecordPath, IfMatch),
    request_body(content = Object, description = "The document: a JSON object; `id`, `createdAt`, \
        `updatedAt` and `version` are the server's"),
    responses(
        (status = 200, description = "Replaced", body = Document),
        (status = 400, description = "`invalid_id`, `invalid_collection`, `invalid_json`, \
            `invalid_document` or `invalid_if_match`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such event or record", body = ErrorBody),
        (status = 412, description = "`version_mismatch`: `If-Match` names another version; nothing \
            changed", body = ErrorBody),
        (status = 413, description = "`document_too_large` or `payload_too_large`", body = ErrorBody),
        (status = 507, description = "`disk_full`: nothing was written", body = ErrorBody),
    )
)]
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

/// Patches a record.
#[utoipa::path(
    patch,
    path = "/api/events/{id}/{collection}/{record_id}",
    tag = "events",
    params(RecordPath, IfMatch),
    request_body(content = Object, description = "A JSON merge patch (RFC 7396): `null` removes a field"),
    responses(
        (status = 200, description = "Patched", body = Document),
        (status = 400, description = "`invalid_id`, `invalid_collection`, `invalid_json`, \
            `invalid_document` or `invalid_if_match`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such event or record", body = ErrorBody),
        (status = 412, description = "`version_mismatch`: `If-Match` names another version; nothing \
            changed", body = ErrorBody),
        (status = 413, description = "`document_too_large` or `payload_too_large`", body = ErrorBody),
        (status = 507, description = "`disk_full`: nothing was written", body = ErrorBody),
    )
)]
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

/// Deletes a record.
#[utoipa::path(
    delete,
    path = "/api/events/{id}/{collection}/{record_id}",
    tag = "events",
    params(RecordPath, IfMatch),
    responses(
        (status = 200, description = "Deleted", body = crate::registry::Deleted),
        (status = 400, description = "`invalid_id`, `invalid_collection` or \
            `invalid_if_match`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such event or record", body = ErrorBody),
        (status = 412, description = "`version_mismatch`: `If-Match` names another version; nothing \
            changed", body = ErrorBody),
        (status = 507, description = "`disk_full`: nothing was written", body = ErrorBody),
    )
)]
async fn delete_record(
    State(s): State<AppState>,
    Path((id, collection, record)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Deleted>> {
    let expected = if_match(&headers)?;
    Ok(axum::Json(blocking(move || s.registry.delete_record(&id, &collection, &record, expected)).await?))
}
