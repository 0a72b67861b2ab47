//! Schemas, for the OpenAPI document, of the answers that handlers build as JSON values or
//! write as raw bytes (stored documents go out as they are stored). These types are never
//! built: they only describe. Each lists the fields every answer has; the objects stay open
//! (no `additionalProperties: false`), since answers carry more that the README describes (a
//! backup's manifest, a report's per-event detail). Schemathesis checks real answers against
//! them in `make api-check`, which is what keeps them true.
#![allow(dead_code)]

use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// The path of an event.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EventPath {
    /// The event id.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    id: String,
}

/// The path of a collection of an event's records.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CollectionPath {
    /// The event id.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    id: String,
    /// A collection name (`backup` is reserved).
    #[param(pattern = "^[a-z][a-z0-9_-]{0,63}$")]
    collection: String,
}

/// The path of a record.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RecordPath {
    /// The event id.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    id: String,
    /// A collection name (`backup` is reserved).
    #[param(pattern = "^[a-z][a-z0-9_-]{0,63}$")]
    collection: String,
    /// The record id.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    record_id: String,
}

/// The path of a backup.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BackupPath {
    /// The backup: its file name, with or without `.tar.gz` / `.json.gz`.
    id: String,
}

/// The path of a collection in a backup.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BackupCollectionPath {
    /// The backup: its file name, with or without `.tar.gz` / `.json.gz`.
    id: String,
    /// The collection (`_events` for the events).
    name: String,
}

/// The optimistic-concurrency header of updates and deletes.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfMatch {
    /// Change only this version (`3` or `"3"`; `*` for any): 412 otherwise.
    #[param(rename = "If-Match")]
    if_match: Option<String>,
}

/// An event or a record as stored: the client's fields, and the server's `id`, `createdAt`,
/// `updatedAt` and `version`.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    /// Set by the server.
    id: String,
    /// RFC 3339 UTC.
    created_at: String,
    /// RFC 3339 UTC.
    updated_at: String,
    /// Starts at 1, one more on each update; send it back as `If-Match`.
    version: u64,
}

/// A page of events or records, oldest id first.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocumentPage {
    /// The documents.
    items: Vec<Document>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// The answer to a batch.
#[derive(ToSchema)]
pub struct BatchCreated {
    /// Records created.
    count: u64,
    /// Their ids, in the order of the request.
    ids: Vec<String>,
    /// The documents as stored, with `?echo=true` only.
    items: Option<Vec<Document>>,
}

/// `ok`, or `degraded` when the store is closed or short of space, or a backup, log shipping
/// or standby is failing.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// All is well.
    Ok,
    /// Something needs attention; the sections say what.
    Degraded,
}

/// `GET /api/health`.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    status: HealthStatus,
    /// The server's version.
    version: String,
    /// Its process id.
    pid: u32,
    /// Seconds since it started.
    uptime_seconds: u64,
    store: StoreHealth,
    /// The store's timeline: `{id, startedAt, reason, startSeq, history}`.
    #[schema(value_type = Object)]
    timeline: Value,
    /// Backups: the newest, the schedule, the repository.
    #[schema(value_type = Object)]
    backup: Value,
    /// Log shipping, when configured.
    #[schema(value_type = Option<Object>)]
    ship: Option<Value>,
    /// The standby's state, on a standby.
    #[schema(value_type = Option<Object>)]
    standby: Option<Value>,
    /// The last restore drill; `null` before the first.
    last_drill: Option<crate::backup::DrillReport>,
}

/// The store section of the health check.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreHealth {
    /// STORAGE_DIR.
    path: String,
    /// Whether the store is open (not mid-restore).
    open: bool,
    /// Number of events.
    events: u64,
    /// Number of records (all events, all collections).
    records: u64,
    /// Size on disk; `null` when it cannot be read right now.
    size_bytes: Option<u64>,
    /// Free space on its disk.
    free_bytes: Option<u64>,
    /// Less free space than a write buffer needs.
    low_space: bool,
    /// The newest bus seq.
    last_seq: u64,
}

/// A consumer's offset, and the timeline of the log it counts in.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerOnTimeline {
    /// Consumer name.
    name: String,
    /// Seq of the last message the consumer handled.
    offset: u64,
    /// When the offset was last written.
    updated_at: String,
    /// The log's timeline id.
    timeline: String,
}

/// A whole-store backup just taken: `{name, backupPath, size, sizeMB, createdAt, sha256,
/// trigger, label, keep, lastSeq, counts, durationMs, rotated, repo?}`; with `purge`, also
/// `{purged, purgedTotal, keptChanged, verified}`.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupCreated {
    /// Always `true`.
    success: bool,
    /// The archive's file name.
    name: String,
    /// Its size in bytes.
    size: u64,
    /// The bus seq it holds up to.
    last_seq: u64,
}

/// A restore of a whole archive, or a point-in-time restore (`{backup, backupLastSeq,
/// messagesReplayed, writesReplayed, replayedFrom, replayedTo, newTimeline, preRestoreBackup,
/// dryRun, …}`).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Restored {
    /// Always `true`.
    success: bool,
    /// What was done, for a person.
    message: String,
    /// The newest bus seq after it.
    last_seq: u64,
}

/// A restore with options: `{backupId, kind, mode, dryRun, events, totals, warnings,
/// replacedWith, preRestoreBackup, lastSeq, durationMs}`.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    /// Always `true`.
    success: bool,
    /// The backup restored from.
    backup_id: String,
    /// Only planned: nothing changed.
    dry_run: bool,
    /// The newest bus seq after it.
    last_seq: u64,
}

/// The archives in BACKUP_DIR, newest first.
#[derive(ToSchema)]
pub struct BackupList {
    /// Always `true`.
    success: bool,
    /// `[{name, size, sizeMB, created, label, trigger, keep, counts, …}]`.
    #[schema(value_type = Vec<Object>)]
    backups: Vec<Value>,
}

/// Metadata of every archive, for migration planning.
#[derive(ToSchema)]
pub struct ExportedMetadata {
    /// Always `true`.
    success: bool,
    metadata: BackupsMetadata,
}

/// The metadata of the archives.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupsMetadata {
    /// How many.
    backup_count: u64,
    /// Their bytes.
    total_size: u64,
    /// Creation time of the oldest; `null` with none.
    oldest_backup: Option<String>,
    /// Creation time of the newest; `null` with none.
    newest_backup: Option<String>,
    /// As `GET /api/backup/list` lists them.
    #[schema(value_type = Vec<Object>)]
    backups: Vec<Value>,
}

/// A deleted backup.
#[derive(ToSchema)]
pub struct BackupDeleted {
    /// Always `true`.
    success: bool,
    /// The file deleted.
    deleted: String,
}

/// The audit trail, newest first.
#[derive(ToSchema)]
pub struct History {
    /// Always `true`.
    success: bool,
    /// `[{time, action, kind, target, options, status, durationMs, error, actor}]`.
    #[schema(value_type = Vec<Object>)]
    entries: Vec<Value>,
}

/// An event backup just written.
#[derive(ToSchema)]
pub struct EventBackupCreated {
    /// Always `true`.
    success: bool,
    #[serde(flatten)]
    backup: crate::backup::EventBackup,
}

/// A standby promoted to primary.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Promoted {
    /// Always `true`.
    promoted: bool,
    /// The new timeline it writes on.
    timeline: String,
    /// The last seq it had applied.
    last_seq: u64,
    /// The repository it followed.
    followed: String,
}

/// A file's bytes.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct File(Vec<u8>);
