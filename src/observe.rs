//! Prometheus metrics: the recorder, and the names every subsystem records under.
//!
//! The `metrics` macros are no-ops until [`install`] sets the process's recorder, which only
//! `serve` and `standby` do: a CLI command that runs an operation offline records nothing.
//! Names and units follow Prometheus conventions and are listed in README.md ("Monitoring").
//! Gauges that describe state (store size, backup storage, ship lag, the last drill) are set
//! when `/metrics` is scraped, from the same sources as `/api/health`, so the two never
//! disagree; what happens between scrapes (operations, uploads, requests) is counted here as
//! it happens.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Backups written, by `kind` (full, event), `location` (local, repo) and `outcome`.
pub const BACKUPS: &str = "eventvault_backups_total";
/// How long writing a backup took, by `kind` and `location`.
pub const BACKUP_DURATION: &str = "eventvault_backup_duration_seconds";
/// How large a written backup is (an archive, an event backup, or the bytes a repository
/// backup added), by `kind` and `location`.
pub const BACKUP_SIZE: &str = "eventvault_backup_size_bytes";
/// Restores, by `kind` (full, event), `location` (local, repo), `dry_run` and `outcome`.
pub const RESTORES: &str = "eventvault_restores_total";
/// How long a restore took, by `kind`, `location` and `dry_run`.
pub const RESTORE_DURATION: &str = "eventvault_restore_duration_seconds";
/// Other backup operations (delete, purge, promote), by `operation` and `outcome`.
pub const OPERATIONS: &str = "eventvault_backup_operations_total";
/// Restore drills, by `outcome` (passed, failed).
pub const DRILLS: &str = "eventvault_drills_total";
/// Failure notifications, by `outcome` (delivered, failed: every retry failed; dropped: the
/// queue was full).
pub const WEBHOOKS: &str = "eventvault_webhook_notifications_total";
/// HTTP requests, by `method`, `route` (the route template) and `status`.
pub const HTTP_REQUESTS: &str = "eventvault_http_requests_total";
/// How long answering took (until the response head), by `method` and `route`.
pub const HTTP_DURATION: &str = "eventvault_http_request_duration_seconds";

/// Buckets of durations: from a fast API call to a long restore.
const SECONDS: &[f64] =
    &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
/// Buckets of sizes: 1 KiB to 64 GiB by powers of 4.
const BYTES: &[f64] = &[
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
    17179869184.0,
    68719476736.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Sets this process's recorder (once; later calls return the same handle).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), BYTES));
            // Both bucket lists are constant and non-empty, the only way this can fail.
            let recorder = builder
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was set already; /metrics shows only what it records");
            }
            describe();
            handle
        })
        .clone()
}

/// The process's recorder, when [`install`] set it.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(BACKUPS, "Backups written, by kind, location and outcome.");
    describe_histogram!(BACKUP_DURATION, Unit::Seconds, "How long writing a backup took.");
    describe_histogram!(
        BACKUP_SIZE,
        Unit::Bytes,
        "Size of a written backup (for the repository: bytes it added)."
    );
    describe_counter!(RESTORES, "Restores, by kind, location, dry_run and outcome.");
    describe_histogram!(RESTORE_DURATION, Unit::Seconds, "How long a restore took.");
    describe_counter!(OPERATIONS, "Other backup operations (delete, purge, promote), by outcome.");
    describe_counter!(DRILLS, "Restore drills, by outcome.");
    describe_counter!(WEBHOOKS, "Failure notifications sent to WEBHOOK_URL, by outcome.");
    describe_counter!(HTTP_REQUESTS, "HTTP requests, by method, route template and status.");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request latency until the response head.");
    for (name, help) in GAUGES {
        describe_gauge!(*name, *help);
    }
}

/// The gauges set at scrape time, with their help texts.
pub const GAUGES: &[(&str, &str)] = &[
    ("eventvault_up", "1 while the server answers; with label status (ok, degraded) as /api/health says."),
    ("eventvault_health_degraded", "1 when /api/health says degraded."),
    ("eventvault_build_info", "1, with the version as a label."),
    ("eventvault_uptime_seconds", "Seconds since the server started."),
    ("eventvault_store_size_bytes", "Bytes of the store's files on disk."),
    ("eventvault_store_free_bytes", "Free bytes on the store's disk."),
    ("eventvault_events", "Events in the registry."),
    ("eventvault_records", "Records in the registry."),
    ("eventvault_bus_last_seq", "The bus's last sequence number."),
    ("eventvault_backup_last_success_timestamp_seconds", "Unix time of the newest backup, by location."),
    ("eventvault_stored_backups", "Backups held, by location (local: archives in BACKUP_DIR)."),
    ("eventvault_backup_storage_bytes", "Bytes the backups use, by location."),
    (
        "eventvault_backup_stale",
        "1 when the data changed and the newest backup is older than twice the interval.",
    ),
    ("eventvault_repo_failing", "1 when the last backup to the repository failed."),
    ("eventvault_ship_lag_seconds", "How long the oldest write not yet shipped has waited."),
    ("eventvault_ship_last_shipped_seq", "The last bus seq shipped to the repository."),
    ("eventvault_ship_segments_shipped", "Log segments shipped since the server started."),
    ("eventvault_ship_bytes_shipped", "Bytes of log shipped since the server started."),
    ("eventvault_standby_lag_seconds", "On a standby: how far it is behind what its primary shipped."),
    ("eventvault_drill_last_timestamp_seconds", "Unix time of the last restore drill."),
    ("eventvault_drill_last_success", "1 when the last restore drill passed, 0 when it failed."),
    ("eventvault_drill_restore_seconds", "Restore time of the newest backup measured by the last drill."),
];

/// The `location` label of an operation on a backup.
pub fn location(in_repo: bool) -> &'static str {
    if in_repo {
        "repo"
    } else {
        "local"
    }
}

/// Records a backup operation that ended. `bytes` is the size it wrote, when it wrote one.
pub fn backup_done(
    kind: &'static str,
    in_repo: bool,
    outcome: &'static str,
    took: Duration,
    bytes: Option<u64>,
) {
    let location = location(in_repo);
    metrics::counter!(BACKUPS, "kind" => kind, "location" => location, "outcome" => outcome).increment(1);
    metrics::histogram!(BACKUP_DURATION, "kind" => kind, "location" => location).record(took.as_secs_f64());
    if let Some(bytes) = bytes {
        metrics::histogram!(BACKUP_SIZE, "kind" => kind, "location" => location).record(bytes as f64);
    }
}

/// Records a restore that ended.
pub fn restore_done(kind: &'static str, in_repo: bool, dry_run: bool, outcome: &'static str, took: Duration) {
    let (location, dry_run) = (location(in_repo), if dry_run { "true" } else { "false" });
    metrics::counter!(RESTORES, "kind" => kind, "location" => location, "dry_run" => dry_run, "outcome" => outcome)
        .increment(1);
    metrics::histogram!(RESTORE_DURATION, "kind" => kind, "location" => location, "dry_run" => dry_run)
        .record(took.as_secs_f64());
}

/// Records another operation that ended.
pub fn operation_done(operation: &'static str, outcome: &'static str) {
    metrics::counter!(OPERATIONS, "operation" => operation, "outcome" => outcome).increment(1);
}
