//! `GET /metrics`: Prometheus's text format, from the process's recorder (see
//! [`crate::observe`]), and the middleware that counts every request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::DateTime;
use metrics::gauge;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{health, ApiError, AppState};
use crate::observe;

/// The route.
pub const PATH: &str = "/metrics";

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Prometheus's text format: counters and histograms since the server started, gauges read
/// now (see "Monitoring" in the README). The read or admin token, or none with METRICS_PUBLIC.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
    )
)]
async fn metrics(State(s): State<AppState>) -> Response {
    let Some(handle) = observe::handle() else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "this process records no metrics")
            .into_response();
    };
    let health = health::report(&s).await;
    set_gauges(&health, &s);
    let handle = handle.clone();
    let text = tokio::task::spawn_blocking(move || {
        // Histograms are buffered until upkeep folds them in.
        handle.run_upkeep();
        handle.render()
    })
    .await;
    match text {
        Ok(text) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
        }
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// The gauges that describe state, from what `/api/health` says.
fn set_gauges(health: &Value, s: &AppState) {
    let status = health["status"].as_str().unwrap_or("degraded");
    for known in ["ok", "degraded"] {
        gauge!("eventvault_up", "status" => known).set(if known == status { 1.0 } else { 0.0 });
    }
    gauge!("eventvault_health_degraded").set(f64::from(status != "ok"));
    gauge!("eventvault_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    set(health, "/uptimeSeconds", "eventvault_uptime_seconds");
    set(health, "/store/sizeBytes", "eventvault_store_size_bytes");
    set(health, "/store/freeBytes", "eventvault_store_free_bytes");
    set(health, "/store/events", "eventvault_events");
    set(health, "/store/records", "eventvault_records");
    set(health, "/store/lastSeq", "eventvault_bus_last_seq");

    let backup = &health["backup"];
    let local = [("location", "local")];
    // 0 when no archive reads: "never", which an age alert catches.
    let last_success = timestamp(&backup["lastSuccess"]).unwrap_or(0.0);
    gauge!("eventvault_backup_last_success_timestamp_seconds", &local).set(last_success);
    if let Some(n) = backup["count"].as_f64() {
        gauge!("eventvault_stored_backups", &local).set(n);
    }
    if let Some(n) = backup["totalSizeBytes"].as_f64() {
        gauge!("eventvault_backup_storage_bytes", &local).set(n);
    }
    gauge!("eventvault_backup_stale").set(f64::from(backup["stale"].as_bool() == Some(true)));
    let repo = &backup["repo"];
    if repo.is_object() {
        let at_repo = [("location", "repo")];
        // What this server stored, or the last listing read: 0 when neither knows one.
        let newest = s.backups.repo_newest().map_or(0.0, |(at, _)| at.timestamp_millis() as f64 / 1000.0);
        gauge!("eventvault_backup_last_success_timestamp_seconds", &at_repo).set(newest);
        if let Some(n) = repo["backups"].as_f64() {
            gauge!("eventvault_stored_backups", &at_repo).set(n);
        }
        if let Some(n) = repo["sizeBytes"].as_f64() {
            gauge!("eventvault_backup_storage_bytes", &at_repo).set(n);
        }
        gauge!("eventvault_repo_failing").set(f64::from(!repo["lastError"].is_null()));
    }
    let ship = &health["ship"];
    if ship.is_object() {
        set(ship, "/lagSeconds", "eventvault_ship_lag_seconds");
        set(ship, "/lastShippedSeq", "eventvault_ship_last_shipped_seq");
        set(ship, "/segmentsShipped", "eventvault_ship_segments_shipped");
        set(ship, "/bytesShipped", "eventvault_ship_bytes_shipped");
    }
    let drill = &health["lastDrill"];
    if let Some(at) = timestamp(&drill["at"]) {
        gauge!("eventvault_drill_last_timestamp_seconds").set(at);
        gauge!("eventvault_drill_last_success").set(f64::from(drill["outcome"] == "passed"));
        set(drill, "/restoreSeconds", "eventvault_drill_restore_seconds");
    }
    if health["standby"].is_object() {
        set(&health["standby"], "/lagSeconds", "eventvault_standby_lag_seconds");
    }
}

/// Sets the gauge `name` to the number at `pointer`, when there is one.
fn set(value: &Value, pointer: &str, name: &'static str) {
    if let Some(n) = value.pointer(pointer).and_then(Value::as_f64) {
        gauge!(name).set(n);
    }
}

fn timestamp(value: &Value) -> Option<f64> {
    value.as_str().and_then(timestamp_of)
}

fn timestamp_of(rfc3339: &str) -> Option<f64> {
    DateTime::parse_from_rfc3339(rfc3339).ok().map(|t| t.timestamp_millis() as f64 / 1000.0)
}

/// Counts every request by method, route template and status, and times it. The route is the
/// template (`/api/events/{id}`), never the path a client sent, so the series stay few.
pub(super) async fn track(req: Request, next: Next) -> Response {
    let route = match req.extensions().get::<MatchedPath>() {
        Some(path) => path.as_str().to_owned(),
        None => "unmatched".to_owned(),
    };
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(observe::HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(observe::HTTP_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
