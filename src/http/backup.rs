//! Routes of the BackupManager, with the seed's endpoints and response fields.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{Json, OptionalJson, Path};
use super::{blocking, ApiResult, AppState};
use crate::backup::archive::no_progress;
use crate::backup::Trigger;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/backup/create", post(create))
        .route("/api/backup/list", get(list))
        .route("/api/backup/restore", post(restore))
        .route("/api/backup/export-metadata", get(export_metadata))
        .route("/api/backups/{name}", get(show).delete(delete))
        .route("/api/backups/{name}/download", get(download))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    label: Option<String>,
    #[serde(default)]
    keep: bool,
}

async fn create(
    State(s): State<AppState>,
    OptionalJson(body): OptionalJson<CreateBody>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let created =
        blocking(move || s.backups.create(Trigger::Manual, body.label.as_deref(), body.keep, &no_progress))
            .await?;
    let mut value = serde_json::to_value(&created).expect("serialisable");
    value["success"] = json!(true);
    Ok((StatusCode::CREATED, axum::Json(value)))
}

async fn list(State(s): State<AppState>) -> ApiResult<axum::Json<Value>> {
    let backups = blocking(move || s.backups.list()).await?;
    Ok(axum::Json(json!({"success": true, "backups": backups})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RestoreBody {
    backup_name: String,
}

async fn restore(State(s): State<AppState>, Json(body): Json<RestoreBody>) -> ApiResult<axum::Json<Value>> {
    let restored = blocking(move || s.backups.restore(&body.backup_name, &no_progress)).await?;
    let mut value = serde_json::to_value(&restored).expect("serialisable");
    value["success"] = json!(true);
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

async fn show(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<axum::Json<Value>> {
    let manifest = blocking(move || s.backups.manifest(&name)).await?;
    Ok(axum::Json(serde_json::to_value(manifest).expect("serialisable")))
}

async fn delete(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<axum::Json<Value>> {
    let deleted = name.clone();
    blocking(move || s.backups.delete(&name)).await?;
    Ok(axum::Json(json!({"success": true, "deleted": deleted})))
}

/// Streams the archive; nothing is held in memory.
async fn download(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Response> {
    let (m, n) = (s.backups.clone(), name.clone());
    let path = blocking(move || m.path_of(&n)).await?;
    let file = tokio::fs::File::open(&path).await.map_err(|e| crate::backup::Error::io(&path, e))?;
    let size = file.metadata().await.map(|m| m.len()).ok();
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
    let mut response = (
        [
            (header::CONTENT_TYPE, "application/gzip".to_owned()),
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
