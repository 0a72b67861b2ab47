//! Routes of the event registry.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::extract::{Json, Path, Query};
use super::{blocking, limit, ApiError, ApiResult, AppState, PageQuery};
use crate::registry::{Deleted, ListPage, Update};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/events", get(list_events).post(create_event))
        .route("/api/events/{id}", get(get_event).put(put_event).patch(patch_event).delete(delete_event))
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

async fn create_event(
    State(s): State<AppState>,
    Json(body): Json<Value>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let doc = blocking(move || s.registry.create_event(body)).await?;
    Ok((StatusCode::CREATED, axum::Json(doc)))
}

async fn list_events(
    State(s): State<AppState>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<ListPage>> {
    let limit = limit(q.limit)?;
    Ok(axum::Json(blocking(move || s.registry.list_events(q.cursor.as_deref(), limit)).await?))
}

async fn get_event(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(blocking(move || s.registry.get_event(&id)).await?))
}

async fn put_event(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<axum::Json<Value>> {
    let expected = if_match(&headers)?;
    Ok(axum::Json(blocking(move || s.registry.update_event(&id, Update::Replace(body), expected)).await?))
}

async fn patch_event(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<axum::Json<Value>> {
    let expected = if_match(&headers)?;
    Ok(axum::Json(blocking(move || s.registry.update_event(&id, Update::Merge(body), expected)).await?))
}

async fn delete_event(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Deleted>> {
    let expected = if_match(&headers)?;
    Ok(axum::Json(blocking(move || s.registry.delete_event(&id, expected)).await?))
}

async fn create_record(
    State(s): State<AppState>,
    Path((id, collection)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let mut docs = blocking(move || s.registry.create_records(&id, &collection, vec![body])).await?;
    Ok((StatusCode::CREATED, axum::Json(docs.pop().unwrap_or_default())))
}

async fn create_batch(
    State(s): State<AppState>,
    Path((id, collection)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let Value::Array(records) = body else {
        return Err(ApiError::bad_request(
            "invalid_document",
            "a batch must be a JSON array of record objects",
        ));
    };
    let docs = blocking(move || s.registry.create_records(&id, &collection, records)).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"count": docs.len(), "items": docs}))))
}

async fn list_records(
    State(s): State<AppState>,
    Path((id, collection)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<ListPage>> {
    let limit = limit(q.limit)?;
    Ok(axum::Json(
        blocking(move || s.registry.list_records(&id, &collection, q.cursor.as_deref(), limit)).await?,
    ))
}

async fn get_record(
    State(s): State<AppState>,
    Path((id, collection, record)): Path<(String, String, String)>,
) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(blocking(move || s.registry.get_record(&id, &collection, &record)).await?))
}

async fn put_record(
    State(s): State<AppState>,
    Path((id, collection, record)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<axum::Json<Value>> {
    let expected = if_match(&headers)?;
    let update = Update::Replace(body);
    Ok(axum::Json(
        blocking(move || s.registry.update_record(&id, &collection, &record, update, expected)).await?,
    ))
}

async fn patch_record(
    State(s): State<AppState>,
    Path((id, collection, record)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<axum::Json<Value>> {
    let expected = if_match(&headers)?;
    let update = Update::Merge(body);
    Ok(axum::Json(
        blocking(move || s.registry.update_record(&id, &collection, &record, update, expected)).await?,
    ))
}

async fn delete_record(
    State(s): State<AppState>,
    Path((id, collection, record)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Deleted>> {
    let expected = if_match(&headers)?;
    Ok(axum::Json(blocking(move || s.registry.delete_record(&id, &collection, &record, expected)).await?))
}
