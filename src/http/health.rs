//! `GET /api/health`: open to everyone, for probes and dashboards.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::{blocking, ApiError, AppState};
use crate::store::EVENTS_COUNTER;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/health", get(health))
}

async fn health(State(s): State<AppState>) -> axum::Json<Value> {
    let store = s.store.clone();
    let size = blocking(move || store.size_on_disk()).await;
    let open = s.store.db().is_ok();
    let backups = s.backups.clone();
    let (backup, backup_degraded) = tokio::task::spawn_blocking(move || backups.health())
        .await
        .unwrap_or_else(|_| (json!({"available": false}), true));
    let status = if open && size.is_ok() && !backup_degraded { "ok" } else { "degraded" };
    let size = size.map_err(|e: ApiError| e.status()).ok();
    axum::Json(json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptimeSeconds": s.started.elapsed().as_secs(),
        "store": {
            "path": s.store.path().display().to_string(),
            "open": open,
            "events": s.store.counter(EVENTS_COUNTER),
            "sizeBytes": size,
            "lastSeq": s.store.head().last_seq,
        },
        "backup": backup,
    }))
}
