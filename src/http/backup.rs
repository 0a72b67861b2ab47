//! Routes of the BackupManager, with the seed's endpoints and response fields.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Who;
use super::error::ErrorBody;
use super::extract::{Json, OptionalJson, Path, Query};
use super::schema::{
    BackupCollectionPath, BackupCreated, BackupDeleted, BackupList, BackupPath, ExportedMetadata, File,
    History, RestoreReport, Restored,
};
use super::{blocking, limit, ApiError, ApiResult, AppState};
use crate::backup::archive::no_progress;
use crate::backup::browse::{CollectionInfo, DocPage, DocQuery};
use crate::backup::ops::pitr::{PointInTime, Target};
use crate::backup::{catalog, Filter, Item, PurgeRequest, Report, RestoreOptions, Trigger};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(list))
        .routes(routes!(restore))
        .routes(routes!(export_metadata))
        .routes(routes!(history))
        .routes(routes!(catalogue))
        .routes(routes!(show, delete))
        .routes(routes!(download))
        .routes(routes!(restore_with))
        .routes(routes!(collections))
        .routes(routes!(documents))
}

/// Options of a backup; all may be left out (an empty body too).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// A label: `[A-Za-z0-9._-]`, at most 64 characters.
    label: Option<String>,
    /// Exempt the backup from rotation and pruning.
    #[serde(default)]
    keep: bool,
    /// Purge these collections once the backup is verified.
    purge: Option<PurgeRequest>,
}

/// Takes a whole-store backup (and, with `purge`, purges once it is verified).
#[utoipa::path(
    post,
    path = "/api/backup/create",
    tag = "backups",
    request_body(content = Option<CreateBody>, description = "Options, or nothing"),
    responses(
        (status = 201, description = "Taken", body = BackupCreated),
        (status = 400, description = "`invalid_label`, `invalid_options` or \
            `invalid_json`", body = ErrorBody),
        (status = 409, description = "`busy`: another backup or restore is running", body = ErrorBody),
        (status = 507, description = "`disk_full`: not enough space; the live data is \
            unchanged", body = ErrorBody),
    )
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CatalogueQuery {
    /// `full` or `event`.
    kind: Option<String>,
    /// Only this event's backups.
    event_id: Option<String>,
}

/// Every backup of both kinds, local and in the repository, newest first.
#[utoipa::path(
    get,
    path = "/api/backups",
    tag = "backups",
    params(CatalogueQuery),
    responses(
        (status = 200, description = "The catalogue", body = Vec<crate::backup::catalog::Item>),
        (status = 400, description = "`invalid_kind`, `invalid_id` or `invalid_query`", body = ErrorBody),
        (status = 502, description = "`repository_unavailable`: the backup repository did not \
            answer", body = ErrorBody),
    )
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// How many entries, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The audit trail of backups, restores, deletions and purges, newest first.
#[utoipa::path(
    get,
    path = "/api/backup/history",
    tag = "backups",
    params(HistoryQuery),
    responses(
        (status = 200, description = "The newest entries", body = History),
        (status = 400, description = "`invalid_limit` or `invalid_query`", body = ErrorBody),
    )
)]
async fn history(State(s): State<AppState>, Query(q): Query<HistoryQuery>) -> ApiResult<axum::Json<Value>> {
    let limit = limit(q.limit)?;
    let entries = blocking(move || s.backups.audit().newest(limit)).await?;
    Ok(axum::Json(json!({"success": true, "entries": entries})))
}

/// Restores from a backup with options: whole, dry, chosen events and collections, a clone.
#[utoipa::path(
    post,
    path = "/api/backups/{id}/restore",
    tag = "backups",
    params(BackupPath),
    request_body(content = Option<crate::backup::RestoreOptions>, description = "Options, or \
        nothing for a whole restore"),
    responses(
        (status = 200, description = "Restored (or planned, for a dry run)", body = RestoreReport),
        (status = 400, description = "`invalid_backup_name`, `invalid_options` or \
            `invalid_json`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such backup, here or in the \
            repository", body = ErrorBody),
        (status = 409, description = "`busy`, `event_exists` (a `newEventId` in use) or \
            `identity_required`", body = ErrorBody),
        (status = 422, description = "`damaged_archive`, `damaged_backup` or `newer_format`: the \
            backup cannot be read", body = ErrorBody),
        (status = 502, description = "`repository_unavailable`: the backup repository did not \
            answer", body = ErrorBody),
        (status = 507, description = "`disk_full`: not enough space; the live data is \
            unchanged", body = ErrorBody),
    )
)]
async fn restore_with(
    State(s): State<AppState>,
    Who(actor): Who,
    Path(id): Path<String>,
    OptionalJson(options): OptionalJson<RestoreOptions>,
) -> ApiResult<axum::Json<Value>> {
    let report: Report = blocking(move || s.backups.restore_with(&id, &options, actor)).await?;
    Ok(axum::Json(answer(&report)))
}

/// The collections a backup holds.
#[utoipa::path(
    get,
    path = "/api/backups/{id}/collections",
    tag = "backups",
    params(BackupPath),
    responses(
        (status = 200, description = "Its collections", body = Vec<crate::backup::browse::CollectionInfo>),
        (status = 400, description = "`invalid_backup_name`: a path-like id", body = ErrorBody),
        (status = 404, description = "`not_found`: no such backup, here or in the \
            repository", body = ErrorBody),
        (status = 409, description = "`identity_required`: the backup is encrypted and this server \
            has no identity", body = ErrorBody),
        (status = 422, description = "`damaged_archive`, `damaged_backup` or `newer_format`: the \
            backup cannot be read", body = ErrorBody),
        (status = 502, description = "`repository_unavailable`: the backup repository did not \
            answer", body = ErrorBody),
        (status = 507, description = "`disk_full`: not enough space; the live data is \
            unchanged", body = ErrorBody),
    )
)]
async fn collections(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Vec<CollectionInfo>>> {
    Ok(axum::Json(blocking(move || s.backups.collections(&id)).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DocumentsQuery {
    /// Only this event's documents.
    event_id: Option<String>,
    /// A case-insensitive substring of the document's JSON.
    q: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
}

/// A page of one collection's documents in a backup.
#[utoipa::path(
    get,
    path = "/api/backups/{id}/collections/{name}",
    tag = "backups",
    params(BackupCollectionPath, DocumentsQuery),
    responses(
        (status = 200, description = "A page of documents", body = crate::backup::browse::DocPage),
        (status = 400, description = "`invalid_backup_name`, `invalid_collection`, `invalid_id`, \
            `invalid_cursor`, `invalid_limit` or `invalid_query`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such backup, here or in the \
            repository", body = ErrorBody),
        (status = 409, description = "`identity_required`: the backup is encrypted and this server \
            has no identity", body = ErrorBody),
        (status = 422, description = "`damaged_archive`, `damaged_backup` or `newer_format`: the \
            backup cannot be read", body = ErrorBody),
        (status = 502, description = "`repository_unavailable`: the backup repository did not \
            answer", body = ErrorBody),
        (status = 507, description = "`disk_full`: not enough space; the live data is \
            unchanged", body = ErrorBody),
    )
)]
async fn documents(
    State(s): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    Query(q): Query<DocumentsQuery>,
) -> ApiResult<axum::Json<DocPage>> {
    let query = DocQuery { event_id: q.event_id, q: q.q, limit: limit(q.limit)?, cursor: q.cursor };
    Ok(axum::Json(blocking(move || s.backups.documents(&id, &name, &query)).await?))
}

/// The archives in BACKUP_DIR, newest first (the seed's answer).
#[utoipa::path(
    get,
    path = "/api/backup/list",
    tag = "backups",
    responses(
        (status = 200, description = "The archives", body = BackupList),
    )
)]
async fn list(State(s): State<AppState>) -> ApiResult<axum::Json<Value>> {
    let backups = blocking(move || s.backups.list()).await?;
    Ok(axum::Json(json!({"success": true, "backups": backups})))
}

/// Exactly one of `backupName`, `at` or `seq`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RestoreBody {
    /// An archive in BACKUP_DIR to restore whole.
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
                    "timeline and dryRun go with at or seq; to restore a backup dry, use POST \
                        /api/backups/{id}/restore",
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

/// Restores an archive by name, or the store to a point in time (`at` or `seq`) from the
/// repository's backups and shipped log.
#[utoipa::path(
    post,
    path = "/api/backup/restore",
    tag = "backups",
    request_body = RestoreBody,
    responses(
        (status = 200, description = "Restored (or planned, for a dry run)", body = Restored),
        (status = 400, description = "`invalid_options`, `invalid_backup_name` or \
            `invalid_json`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such backup, here or in the \
            repository", body = ErrorBody),
        (status = 409, description = "`busy`, `point_unreachable` or `identity_required`", body = ErrorBody),
        (status = 422, description = "`damaged_archive`, `damaged_backup` or `newer_format`: the \
            backup cannot be read", body = ErrorBody),
        (status = 502, description = "`repository_unavailable`: the backup repository did not \
            answer", body = ErrorBody),
        (status = 507, description = "`disk_full`: not enough space; the live data is \
            unchanged", body = ErrorBody),
    )
)]
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
            "Restored to the point in time. The server is already serving the restored data; no \
                restart is needed."
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

/// Metadata of every archive, for migration planning.
#[utoipa::path(
    get,
    path = "/api/backup/export-metadata",
    tag = "backups",
    responses(
        (status = 200, description = "The metadata", body = ExportedMetadata),
    )
)]
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

/// One backup: the catalogue fields, and its manifest (archives) or `metadata` (event backups).
#[utoipa::path(
    get,
    path = "/api/backups/{id}",
    tag = "backups",
    params(BackupPath),
    responses(
        (status = 200, description = "The backup", body = Object),
        (status = 400, description = "`invalid_backup_name`: a path-like id", body = ErrorBody),
        (status = 404, description = "`not_found`: no such backup, here or in the \
            repository", body = ErrorBody),
        (status = 422, description = "`damaged_archive`, `damaged_backup` or `newer_format`: the \
            backup cannot be read", body = ErrorBody),
        (status = 502, description = "`repository_unavailable`: the backup repository did not \
            answer", body = ErrorBody),
    )
)]
async fn show(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(blocking(move || s.backups.details(&id)).await?))
}

/// Deletes a backup.
#[utoipa::path(
    delete,
    path = "/api/backups/{id}",
    tag = "backups",
    params(BackupPath),
    responses(
        (status = 200, description = "Deleted", body = BackupDeleted),
        (status = 400, description = "`invalid_backup_name`: a path-like id", body = ErrorBody),
        (status = 404, description = "`not_found`: no such backup, here or in the \
            repository", body = ErrorBody),
        (status = 409, description = "`busy`: another backup or restore is running", body = ErrorBody),
    )
)]
async fn delete(
    State(s): State<AppState>,
    Who(actor): Who,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let deleted = blocking(move || s.backups.delete(&id, actor)).await?;
    Ok(axum::Json(json!({"success": true, "deleted": deleted})))
}

/// Downloads a backup. The file is streamed; nothing is held in memory. A backup that is only
/// in the repository comes in the archive format (checked on the way).
#[utoipa::path(
    get,
    path = "/api/backups/{id}/download",
    tag = "backups",
    params(BackupPath),
    responses(
        (status = 200, description = "The file: a tar.gz archive, a gzip JSON event backup, or an \
            encrypted export (`.age`)", content(
            (File = "application/gzip"),
            (File = "application/octet-stream"),
        )),
        (status = 400, description = "`invalid_backup_name`: a path-like id", body = ErrorBody),
        (status = 404, description = "`not_found`: no such backup, here or in the \
            repository", body = ErrorBody),
        (status = 409, description = "`identity_required`: the backup is encrypted and this server \
            has no identity", body = ErrorBody),
        (status = 422, description = "`damaged_archive`, `damaged_backup` or `newer_format`: the \
            backup cannot be read", body = ErrorBody),
        (status = 502, description = "`repository_unavailable`: the backup repository did not \
            answer", body = ErrorBody),
        (status = 507, description = "`disk_full`: no room to export it", body = ErrorBody),
    )
)]
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
