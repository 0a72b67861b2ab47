//! Routes of the BackupManager, with the seed's endpoints and response fields.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Who;
use super::extract::{Json, OptionalJson, Path, Query};
use super::{blocking, limit, ApiError, ApiResult, AppState};
use crate::backup::archive::no_progress;
use crate::backup::browse::{CollectionInfo, DocPage, DocQuery};
use crate::backup::ops::pitr::{PointInTime, Target};
use crate::backup::{catalog, Filter, Item, PurgeRequest, Report, RestoreOptions, Trigger};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/backup/create", post(create))
        .route("/api/backup/list", get(list))
        .route("/api/backup/restore", post(restore))
        .route("/api/backup/export-metadata", get(export_metadata))
        .route("/api/backup/history", get(history))
        .route("/api/backups", get(catalogue))
        .route("/api/backups/{id}", get(show).delete(delete))
        .route("/api/backups/{id}/download", get(download))
        .route("/api/backups/{id}/restore", post(restore_with))
        .route("/api/backups/{id}/collections", get(collections))
        .route("/api/backups/{id}/collections/{name}", get(documents))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    label: Option<String>,
    #[serde(default)]
    keep: bool,
    purge: Option<PurgeRequest>,
}

async fn create(
    State(s): State<AppState>,
    Who(actor): Who,
    OptionalJson(body): OptionalJson<CreateBody>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    if let Some(purge) = &body.purge {
        purge.check()?;
    }
    let answer = blocking(move || {
        let label = body.label.as_deref();
        match &body.purge {
            None => {
                s.backups.create(Trigger::Manual, label, body.keep, actor, &no_progress).map(|c| answer(&c))
            }
            Some(purge) => {
                s.backups.create_and_purge(Trigger::Manual, label, purge, actor, &no_progress).map(|done| {
                    // The archive was verified before anything was purged.
                    let mut value = answer(&done);
                    value["verified"] = json!(true);
                    value
                })
            }
        }
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(answer)))
}

/// The answer of a route that did what it was asked: its result's fields and, as the seed's
/// answers have it, `"success": true`.
pub(super) fn answer<T: serde::Serialize>(result: &T) -> Value {
    let mut value = serde_json::to_value(result).unwrap_or_default();
    if let Value::Object(fields) = &mut value {
        fields.insert("success".into(), json!(true));
    }
    value
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CatalogueQuery {
    kind: Option<String>,
    event_id: Option<String>,
}

async fn catalogue(
    State(s): State<AppState>,
    Query(q): Query<CatalogueQuery>,
) -> ApiResult<axum::Json<Vec<Item>>> {
    let filter = Filter {
        kind: Filter::parse_kind(q.kind.as_deref())
            .map_err(|e| ApiError::bad_request("invalid_kind", e.to_string()))?,
        event_id: Filter::check_event_id(q.event_id)
            .map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))?,
    };
    Ok(axum::Json(blocking(move || s.backups.list_all(&filter)).await?))
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

async fn history(State(s): State<AppState>, Query(q): Query<HistoryQuery>) -> ApiResult<axum::Json<Value>> {
    let limit = limit(q.limit)?;
    let entries = blocking(move || s.backups.audit().newest(limit)).await?;
    Ok(axum::Json(json!({"success": true, "entries": entries})))
}

async fn restore_with(
    State(s): State<AppState>,
    Who(actor): Who,
    Path(id): Path<String>,
    OptionalJson(options): OptionalJson<RestoreOptions>,
) -> ApiResult<axum::Json<Value>> {
    let report: Report = blocking(move || s.backups.restore_with(&id, &options, actor)).await?;
    Ok(axum::Json(answer(&report)))
}

async fn collections(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Vec<CollectionInfo>>> {
    Ok(axum::Json(blocking(move || s.backups.collections(&id)).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DocumentsQuery {
    event_id: Option<String>,
    q: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn documents(
    State(s): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    Query(q): Query<DocumentsQuery>,
) -> ApiResult<axum::Json<DocPage>> {
    let query = DocQuery { event_id: q.event_id, q: q.q, limit: limit(q.limit)?, cursor: q.cursor };
    Ok(axum::Json(blocking(move || s.backups.documents(&id, &name, &query)).await?))
}

async fn list(State(s): State<AppState>) -> ApiResult<axum::Json<Value>> {
    let backups = blocking(move || s.backups.list()).await?;
    Ok(axum::Json(json!({"success": true, "backups": backups})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RestoreBody {
    backup_name: Option<String>,
    /// A point-in-time restore to this moment (RFC 3339).
    at: Option<String>,
    /// A point-in-time restore to this seq.
    seq: Option<u64>,
    /// The timeline whose history a point-in-time restore follows.
    timeline: Option<String>,
    /// A point-in-time restore that only plans and reads the log.
    #[serde(default)]
    dry_run: bool,
}

/// The point-in-time restore a body asks for, if it asks for one.
fn point_in_time(body: &RestoreBody) -> ApiResult<Option<PointInTime>> {
    let target = match (&body.backup_name, &body.at, body.seq) {
        (Some(_), None, None) => {
            if body.timeline.is_some() || body.dry_run {
                return Err(ApiError::bad_request(
                    "invalid_options",
                    "timeline and dryRun go with at or seq; to restore a backup dry, use POST /api/backups/{id}/restore",
                ));
            }
            return Ok(None);
        }
        (None, Some(at), None) => Target::At(
            chrono::DateTime::parse_from_rfc3339(at)
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_options",
                        format!(
                            "at must be an RFC 3339 time such as 2026-11-22T10:15:00Z, not {}",
                            crate::untrusted::quote(at.as_bytes())
                        ),
                    )
                })?
                .with_timezone(&chrono::Utc),
        ),
        (None, None, Some(seq)) => Target::Seq(seq),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_options",
                "give exactly one of backupName, at (a point in time) or seq (a bus sequence number)",
            ))
        }
    };
    if body.timeline.as_deref().is_some_and(|t| !crate::store::timeline::is_id(t)) {
        return Err(ApiError::bad_request(
            "invalid_options",
            "timeline must be a timeline id (26 characters)",
        ));
    }
    Ok(Some(PointInTime { target, timeline: body.timeline.clone(), dry_run: body.dry_run }))
}

async fn restore(
    State(s): State<AppState>,
    Who(actor): Who,
    Json(body): Json<RestoreBody>,
) -> ApiResult<axum::Json<Value>> {
    if let Some(request) = point_in_time(&body)? {
        let report = blocking(move || s.backups.restore_point_in_time(&request, actor)).await?;
        let mut value = serde_json::to_value(&report).unwrap_or_default();
        value["success"] = json!(true);
        value["message"] = json!(if report.dry_run {
            "Dry run: nothing was changed."
        } else {
            "Restored to the point in time. The server is already serving the restored data; no restart is needed."
        });
        return Ok(axum::Json(value));
    }
    let name = body.backup_name.unwrap_or_default();
    let restored = blocking(move || s.backups.restore(&name, actor, &no_progress)).await?;
    let mut value = answer(&restored);
    // The seed told clients what to restart; nothing needs restarting now.
    value["restartCommand"] = Value::Null;
    value["message"] =
        json!("Restore complete. The server is already serving the restored data; no restart is needed.");
    Ok(axum::Json(value))
}

async fn export_metadata(State(s): State<AppState>) -> ApiResult<axum::Json<Value>> {
    let backups = blocking(move || s.backups.list()).await?;
    let created: Vec<&str> = backups.iter().map(|b| b.created.as_str()).collect();
    Ok(axum::Json(json!({
        "success": true,
        "metadata": {
            "backupCount": backups.len(),
            "totalSize": backups.iter().map(|b| b.size).sum::<u64>(),
            "oldestBackup": created.iter().min(),
            "newestBackup": created.iter().max(),
            "backups": backups,
        }
    })))
}

async fn show(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(blocking(move || s.backups.details(&id)).await?))
}

async fn delete(
    State(s): State<AppState>,
    Who(actor): Who,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let deleted = blocking(move || s.backups.delete(&id, actor)).await?;
    Ok(axum::Json(json!({"success": true, "deleted": deleted})))
}

/// Streams the file; nothing is held in memory.
async fn download(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let (name, file) = blocking(move || {
        let dir = &s.backups.config().backup_dir;
        match catalog::resolve(dir, &id) {
            Ok((_, name, path)) => {
                let file =
                    crate::untrusted::open_regular(&path).map_err(|e| crate::backup::Error::io(&path, e))?;
                Ok((name, file))
            }
            // Only in the repository: exported in the archive format.
            Err(crate::backup::Error::NotFound(_)) if s.backups.in_repo(&id)? => {
                s.backups.export_from_repo(&id)
            }
            Err(e) => Err(e),
        }
    })
    .await?;
    let file = tokio::fs::File::from_std(file);
    let size = file.metadata().await.map(|m| m.len()).ok();
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type(&name).to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        body,
    )
        .into_response();
    if let Some(size) = size {
        response.headers_mut().insert(header::CONTENT_LENGTH, size.into());
    }
    Ok(response)
}

/// An archive is gzip; an encrypted export (`….tar.gz.age`) is an opaque age file.
fn content_type(name: &str) -> &'static str {
    match name.ends_with(".age") {
        true => "application/octet-stream",
        false => "application/gzip",
    }
}
