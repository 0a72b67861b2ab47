//! `GET /api/health`: open to everyone, for probes and dashboards.

use axum::extract::State;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::schema::Health;
use super::{blocking, ApiError, AppState};
use crate::store::{EVENTS_COUNTER, RECORDS_COUNTER_PREFIX};

/// Free space the store's disk needs: one RocksDB write buffer (64 MiB, RocksDB's default,
/// which `store::options` keeps). A flush needs that much room; and once a write has failed
/// for want of space, RocksDB refuses every write (507) until that much is free again, then
/// resumes by itself within seconds.
const STORE_HEADROOM: u64 = 64 << 20;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health))
}

/// The server's state: the store, backups, log shipping, the standby. Open to everyone.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "`ok` or `degraded`, with what is degraded", body = Health),
    )
)]
async fn health(State(s): State<AppState>) -> axum::Json<Value> {
    axum::Json(report(&s).await)
}

/// What `/api/health` answers; `/metrics` reads its gauges from it too.
pub(super) async fn report(s: &AppState) -> Value {
    let store = s.store.clone();
    let size = blocking(move || store.size_on_disk()).await;
    let open = s.store.db().is_ok();
    let backups = s.backups.clone();
    let path = s.store.path().to_owned();
    let (backup, backup_degraded, free, ship, standby, drill) = tokio::task::spawn_blocking(move || {
        let (backup, degraded) = backups.health();
        // A failed last drill: a backup that does not restore, until a later drill passes.
        let (drill, drill_failed) = backups.drill_health();
        let ship = backups.ship_health();
        let standby = backups.standby_health();
        let others_degraded = ship.iter().chain(standby.iter()).any(|(_, d)| *d);
        let (ship, standby) = (ship.map(|(s, _)| s), standby.map(|(s, _)| s));
        let degraded = degraded || others_degraded || drill_failed;
        (backup, degraded, crate::backup::free_space(&path), ship, standby, drill)
    })
    .await
    .unwrap_or_else(|_| (json!({"available": false}), true, None, None, None, Value::Null));
    let low_space = free.is_some_and(|free| free < STORE_HEADROOM);
    let status = if open && size.is_ok() && !low_space && !backup_degraded { "ok" } else { "degraded" };
    let size = size.map_err(|e: ApiError| e.status()).ok();
    json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptimeSeconds": s.started.elapsed().as_secs(),
        "store": {
            "path": s.store.path().display().to_string(),
            "open": open,
            "events": s.store.counter(EVENTS_COUNTER),
            "records": s.store.counter_sum(RECORDS_COUNTER_PREFIX),
            "sizeBytes": size,
            "freeBytes": free,
            "lowSpace": low_space,
            "lastSeq": s.store.head().last_seq,
        },
        "timeline": s.store.timeline(),
        "backup": backup,
        "ship": ship,
        "standby": standby,
        "lastDrill": drill,
    })
}
