//! The BackupManager: checkpoint archives, their catalog and rotation, verification, hot
//! restore, the drop-in folder and the schedule.
//!
//! Every method blocks (RocksDB, tar, gzip, hashing): call them off the async runtime. One
//! backup or restore runs at a time; a second gets [`Error::Busy`] naming the first.

pub mod archive;
pub mod audit;
pub mod browse;
pub mod catalog;
pub mod dropin;
mod error;
pub mod event;
pub mod manifest;
pub mod merge;
mod pgzip;
mod restore;
pub mod schedule;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Value};

pub use catalog::Entry;
pub use error::{Error, Result};
pub use manifest::{Counts, Manifest, Trigger};
pub use restore::{free_space, verify, Restored, Verified};

use crate::config::Options;
use crate::store::{self, Store, EVENTS_COUNTER, RECORDS_COUNTER_PREFIX};
use archive::Progress;
use audit::{Action, Actor, Outcome};
use catalog::Catalog;

/// Free space in BACKUP_DIR under which the health check counts its disk as full even
/// before there is an archive to compare with (1 MiB).
const LOW_SPACE: u64 = 1 << 20;

/// What the BackupManager needs from the options.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    /// STORAGE_DIR (the database lives in its `db/`).
    pub storage_dir: PathBuf,
    /// BACKUP_DIR.
    pub backup_dir: PathBuf,
    /// RESTORE_DIR.
    pub restore_dir: PathBuf,
    /// Take scheduled backups.
    pub auto_backup: bool,
    /// Interval of scheduled backups.
    pub interval: Duration,
    /// Archives kept by rotation (archives with `keep` are not counted).
    pub max_backups: usize,
    /// Restore archives dropped into RESTORE_DIR.
    pub auto_restore: bool,
    /// How long a dropped file must stay unchanged before it is read.
    pub settle: Duration,
    /// gzip level of archives.
    pub compression_level: u32,
    /// Upper bound of what one restore may unpack (0: the free space of STORAGE_DIR).
    pub restore_max_bytes: u64,
    /// Bytes of unpacked archives the browse cache keeps.
    pub browse_cache_bytes: u64,
}

impl BackupConfig {
    /// The configuration of `opts`.
    pub fn from_options(opts: &Options) -> Self {
        BackupConfig {
            storage_dir: opts.storage_dir.clone(),
            backup_dir: opts.backup_dir.clone(),
            restore_dir: opts.restore_dir.clone(),
            auto_backup: opts.auto_backup_enabled,
            interval: Duration::from_millis(opts.auto_backup_interval.max(1000)),
            max_backups: opts.max_backups,
            auto_restore: opts.auto_restore_enabled,
            settle: Duration::from_millis(opts.restore_settle_ms),
            compression_level: opts.backup_compression_level.min(9),
            restore_max_bytes: opts.restore_max_bytes,
            browse_cache_bytes: opts.browse_cache_mb.saturating_mul(1 << 20),
        }
    }
}

/// A backup that was written.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    /// Archive file name.
    pub name: String,
    /// Full path (the seed's `backupPath`).
    pub backup_path: String,
    /// Size in bytes.
    pub size: u64,
    /// Size in MiB.
    #[serde(rename = "sizeMB")]
    pub size_mb: String,
    /// When it was taken.
    pub created_at: String,
    /// SHA-256 of the archive (also in its sidecar).
    pub sha256: String,
    /// Why.
    pub trigger: Trigger,
    /// Label.
    pub label: Option<String>,
    /// Exempt from rotation.
    pub keep: bool,
    /// Bus lastSeq in the archive.
    pub last_seq: u64,
    /// What the archive holds.
    pub counts: Counts,
    /// How long it took.
    pub duration_ms: u64,
    /// Archives that rotation removed afterwards.
    pub rotated: Vec<String>,
}

#[derive(Debug, Default)]
struct Status {
    last_error: Option<String>,
    last_scheduled_failed: bool,
    last_duration_ms: Option<u64>,
    next_scheduled: Option<DateTime<Utc>>,
}

/// The BackupManager. Shared as an `Arc`.
#[derive(Debug)]
pub struct BackupManager {
    config: BackupConfig,
    store: Arc<Store>,
    catalog: Catalog,
    busy: Mutex<Option<String>>,
    status: Mutex<Status>,
    started: Instant,
    audit: audit::Audit,
    cache: browse::Cache,
    /// Dropped archives startup left in place (only the newest is restored): the watcher
    /// leaves them too.
    left_at_startup: Mutex<Vec<std::path::PathBuf>>,
}

/// Clears the busy slot when dropped.
struct Busy<'a>(&'a BackupManager);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl BackupManager {
    /// A manager over an open store.
    pub fn new(config: BackupConfig, store: Arc<Store>) -> Arc<Self> {
        let cache = browse::Cache::new(config.backup_dir.join(browse::CACHE_DIR), config.browse_cache_bytes);
        Arc::new(BackupManager {
            audit: audit::Audit::new(&config.backup_dir),
            cache,
            config,
            store,
            catalog: Catalog::default(),
            busy: Mutex::new(None),
            status: Mutex::new(Status::default()),
            started: Instant::now(),
            left_at_startup: Mutex::new(Vec::new()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BackupConfig {
        &self.config
    }

    /// The store it protects.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The registry over that store.
    pub fn registry(&self) -> crate::registry::Registry {
        crate::registry::Registry::new(self.store.clone())
    }

    /// The audit trail.
    pub fn audit(&self) -> &audit::Audit {
        &self.audit
    }

    /// The details of a backup of either kind: for an archive its manifest, for an event
    /// backup its metadata, beside the catalogue's fields.
    pub fn details(&self, id: &str) -> Result<Value> {
        self.catalog.details(&self.config.backup_dir, id)
    }

    /// Backups of both kinds, newest first.
    pub fn list_all(&self) -> Result<Vec<catalog::Item>> {
        self.catalog.list_all(&self.config.backup_dir)
    }

    /// The collections a backup holds.
    pub fn collections(&self, id: &str) -> Result<Vec<browse::CollectionInfo>> {
        browse::collections(&self.config, &self.cache, id)
    }

    /// A page of documents of a backup.
    pub fn documents(&self, id: &str, collection: &str, query: &browse::DocQuery) -> Result<browse::DocPage> {
        browse::documents(&self.config, &self.cache, id, collection, query)
    }

    fn begin(&self, what: String) -> Result<Busy<'_>> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = busy.as_ref() {
            return Err(Error::Busy(running.clone()));
        }
        *busy = Some(what);
        Ok(Busy(self))
    }

    /// Takes a backup of the live store.
    pub fn create(
        &self,
        trigger: Trigger,
        label: Option<&str>,
        keep: bool,
        actor: Actor,
        progress: Progress<'_>,
    ) -> Result<Created> {
        self.create_then(trigger, label, keep, actor, progress, Ok)
    }

    /// Takes a backup and, in the same turn of the one-operation slot (so no deletion or
    /// restore of that archive can come between), runs `then` on it.
    pub(crate) fn create_then<T>(
        &self,
        trigger: Trigger,
        label: Option<&str>,
        keep: bool,
        actor: Actor,
        progress: Progress<'_>,
        then: impl FnOnce(Created) -> Result<T>,
    ) -> Result<T> {
        if let Some(label) = label {
            catalog::check_label(label)?;
        }
        let started = Instant::now();
        let name = catalog::new_name(&self.config.backup_dir, Utc::now(), label);
        let options = json!({"trigger": trigger, "label": label, "keep": keep});
        let _busy = match self.begin(format!("backup {name}")) {
            Ok(busy) => busy,
            Err(e) => {
                let id = catalog::id_of(&name);
                let error = Some(e.to_string());
                self.audit.record(
                    Action::Create,
                    "full",
                    id,
                    options,
                    Outcome::Failed,
                    started,
                    error,
                    actor,
                );
                return Err(e);
            }
        };
        let result = self.create_locked(&name, trigger, label, keep, progress);
        self.audit_result(Action::Create, "full", catalog::id_of(&name), options, &result, started, actor);
        then(result?)
    }

    /// Appends the outcome of an operation to the audit trail.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn audit_result<T>(
        &self,
        action: Action,
        kind: &str,
        target: &str,
        options: Value,
        result: &Result<T>,
        started: Instant,
        actor: Actor,
    ) {
        let (status, error) = match result {
            Ok(_) => (Outcome::Success, None),
            Err(e) => (Outcome::Failed, Some(e.to_string())),
        };
        self.audit.record(action, kind, target, options, status, started, error, actor);
    }

    /// The steps of a backup, each safe to crash in:
    /// 1. flush and checkpoint into `STORAGE_DIR/checkpoint-<name>` (hard links; writes go on);
    /// 2. read the checkpoint's counts and hash its files;
    /// 3. stream the archive into `BACKUP_DIR/.tmp-<name>` and fsync it;
    /// 4. write the sidecar atomically, then rename the archive into place and fsync the
    ///    directory: a crash before the rename leaves a temp file and an orphan sidecar,
    ///    both removed at startup, and never a partial `*.tar.gz`;
    /// 5. remove the checkpoint and rotate.
    fn create_locked(
        &self,
        name: &str,
        trigger: Trigger,
        label: Option<&str>,
        keep: bool,
        progress: Progress<'_>,
    ) -> Result<Created> {
        let started = Instant::now();
        std::fs::create_dir_all(&self.config.backup_dir)
            .map_err(|e| Error::io(&self.config.backup_dir, e))?;
        let checkpoint = self.config.storage_dir.join(format!("{}{name}", store::swap::CHECKPOINT_PREFIX));
        let result = pgzip::at_low_priority(|| {
            self.store.checkpoint(&checkpoint)?;
            crate::fault::point("backup.after_checkpoint")?;
            archive_dir(&self.config, &checkpoint, name, trigger, label, keep, progress)
        });
        let _ = std::fs::remove_dir_all(&checkpoint);
        let mut created = match result {
            Ok(created) => created,
            Err(e) => {
                self.note_result(trigger, Err(&e), started);
                return Err(e);
            }
        };
        created.duration_ms = started.elapsed().as_millis() as u64;
        created.rotated = self.rotate(name).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "rotation failed");
            Vec::new()
        });
        self.note_result(trigger, Ok(&created), started);
        tracing::info!(name, ?trigger, size = created.size, ms = created.duration_ms, "backup written");
        Ok(created)
    }

    fn note_result(&self, trigger: Trigger, result: std::result::Result<&Created, &Error>, started: Instant) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.last_duration_ms = Some(started.elapsed().as_millis() as u64);
        match result {
            Ok(_) => {
                status.last_error = None;
                if trigger == Trigger::Scheduled {
                    status.last_scheduled_failed = false;
                }
            }
            Err(e) => {
                status.last_error = Some(e.to_string());
                if trigger == Trigger::Scheduled {
                    status.last_scheduled_failed = true;
                }
            }
        }
    }

    /// Every archive, newest first.
    pub fn list(&self) -> Result<Vec<Entry>> {
        self.catalog.list(&self.config.backup_dir)
    }

    /// One archive's manifest; a damaged archive is [`Error::Damaged`].
    pub fn manifest(&self, name: &str) -> Result<Manifest> {
        let entry = self.catalog.get(&self.config.backup_dir, name)?;
        match entry.manifest {
            Some(m) => Ok((*m).clone()),
            None => Err(Error::damaged(name, entry.error.unwrap_or_default())),
        }
    }

    /// Path of an existing archive.
    pub fn path_of(&self, name: &str) -> Result<PathBuf> {
        catalog::check_name(name)?;
        let path = self.config.backup_dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::NotFound(name.into()))
        }
    }

    /// Deletes an archive and its sidecar.
    pub fn delete(&self, id: &str, actor: Actor) -> Result<String> {
        let started = Instant::now();
        let (kind, name, path) = catalog::resolve(&self.config.backup_dir, id)?;
        let result = self.begin(format!("deletion of {name}")).and_then(|_busy| {
            let dir = path.parent().unwrap_or(&self.config.backup_dir);
            catalog::delete(dir, &name)
        });
        self.cache.forget(&name);
        self.audit_result(
            Action::Delete,
            kind.as_str(),
            catalog::id_of(&name),
            Value::Null,
            &result,
            started,
            actor,
        );
        result.map(|()| name)
    }

    /// Deletes the oldest archives beyond MAX_BACKUPS (kept archives do not count), never
    /// `just_written`: whatever dates other files in the folder claim, the backup a call has
    /// just taken survives it.
    pub fn rotate(&self, just_written: &str) -> Result<Vec<String>> {
        let mut doomed = catalog::beyond(&self.list()?, self.config.max_backups);
        doomed.retain(|name| name != just_written);
        for name in &doomed {
            let started = Instant::now();
            let result = catalog::delete(&self.config.backup_dir, name);
            self.cache.forget(name);
            let options = json!({"reason": "rotation", "maxBackups": self.config.max_backups});
            self.audit_result(
                Action::Delete,
                "full",
                catalog::id_of(name),
                options,
                &result,
                started,
                Actor::System,
            );
            result?;
            tracing::info!(name, "rotated out");
        }
        Ok(doomed)
    }

    /// Removes what crashed backups left in BACKUP_DIR.
    pub fn clean_leftovers(&self) -> Result<()> {
        for dir in [self.config.backup_dir.clone(), event::dir(&self.config.backup_dir)] {
            for name in catalog::clean_leftovers(&dir)? {
                tracing::info!(name, "removed the leftover of an interrupted backup");
            }
        }
        Ok(())
    }

    /// What is running, if anything.
    pub fn running(&self) -> Option<String> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_next_scheduled(&self, at: Option<DateTime<Utc>>) {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).next_scheduled = at;
    }

    /// The `backup` section of the health endpoint, and whether it makes the service degraded.
    pub fn health(&self) -> (Value, bool) {
        let list = self.list();
        let available = list.is_ok() && is_writable(&self.config.backup_dir);
        let entries = list.unwrap_or_default();
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let latest = entries.first();
        let total: u64 = entries.iter().map(|e| e.size).sum();
        let stale_after = self.config.interval * 2;
        // An old archive is only stale when the data changed since: an idle store whose
        // scheduled backups are skipped is fully protected by its newest archive.
        let last_seq = self.store.head().last_seq;
        let stale = self.config.auto_backup
            && match latest
                .and_then(|l| DateTime::parse_from_rfc3339(&l.created).ok().map(|c| (c, l.last_seq)))
            {
                Some((created, archived_seq)) => {
                    archived_seq != Some(last_seq)
                        && (Utc::now() - created.with_timezone(&Utc)).to_std().unwrap_or_default()
                            > stale_after
                }
                None => self.started.elapsed() > stale_after && last_seq > 0,
            };
        // The next archive will be about as large as the newest one, and rotation frees room
        // only after it is written: with less free space than that, the next backup (and every
        // event deletion, which waits for its event's backup) fails for want of space.
        let free = free_space(&self.config.backup_dir);
        let needed = latest.map_or(0, |l| l.size).max(LOW_SPACE);
        let low_space = free.is_some_and(|free| free < needed);
        let degraded = status.last_scheduled_failed || stale || !available || low_space;
        let section = json!({
            "available": available,
            "freeBytes": free,
            "lowSpace": low_space,
            "count": entries.len(),
            "latest": latest.map(|l| json!({"name": l.name, "created": l.created, "size": l.size})),
            "totalSizeMB": catalog::mb(total),
            "lastError": status.last_error,
            "nextScheduled": status.next_scheduled.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            "lastDurationMs": status.last_duration_ms,
            "running": self.running(),
            "autoBackup": self.config.auto_backup,
        });
        (section, degraded)
    }
}

/// Archives a RocksDB directory that nothing writes to (a checkpoint, or a closed store).
fn archive_dir(
    config: &BackupConfig,
    dir: &Path,
    name: &str,
    trigger: Trigger,
    label: Option<&str>,
    keep: bool,
    progress: Progress<'_>,
) -> Result<Created> {
    let snapshot = store::inspect(dir)?;
    let files = archive::describe_files(dir, progress)?;
    let created_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let manifest = Manifest {
        format_version: manifest::CURRENT_FORMAT,
        app_version: env!("CARGO_PKG_VERSION").into(),
        name: name.into(),
        label: label.map(Into::into),
        trigger,
        created_at: created_at.clone(),
        keep,
        last_seq: snapshot.last_seq,
        store_format: snapshot.format,
        counts: counts_of(&snapshot),
        rocksdb_version: manifest::ROCKSDB_VERSION.into(),
        files,
    };
    let dir_out = &config.backup_dir;
    let tmp = dir_out.join(format!("{}{name}", catalog::TEMP_PREFIX));
    let final_path = dir_out.join(name);
    let written = archive::write(dir, &manifest, &tmp, config.compression_level, progress);
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let publish = || -> Result<()> {
        crate::fault::point("backup.before_rename")?;
        archive::write_atomic(
            &catalog::sidecar_path(&final_path),
            catalog::sidecar_line(&written.sha256, name).as_bytes(),
        )?;
        std::fs::rename(&tmp, &final_path).map_err(|e| Error::io(&final_path, e))?;
        archive::sync_dir(dir_out)
    };
    if let Err(e) = publish() {
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_file(catalog::sidecar_path(&final_path));
        return Err(e);
    }
    Ok(Created {
        name: name.into(),
        backup_path: final_path.display().to_string(),
        size: written.size,
        size_mb: catalog::mb(written.size),
        created_at,
        sha256: written.sha256,
        trigger,
        label: label.map(Into::into),
        keep,
        last_seq: manifest.last_seq,
        counts: manifest.counts,
        duration_ms: 0,
        rotated: Vec::new(),
    })
}

/// Takes the `pre-migration` backup of a closed store that needs migrating, then migrates
/// it. Returns the backup's name when there was anything to migrate. On failure the live
/// store is unchanged and the error names the backup.
pub fn migrate_if_needed(
    config: &BackupConfig,
    store_config: &store::StoreConfig,
) -> std::result::Result<Option<String>, MigrationError> {
    let Some(pending) = store::migrate::pending(&config.storage_dir)
        .map_err(|e| MigrationError::Check(Box::new(e.into())))?
    else {
        return Ok(None);
    };
    std::fs::create_dir_all(&config.backup_dir)
        .map_err(|e| MigrationError::Check(Box::new(Error::io(&config.backup_dir, e))))?;
    let name = catalog::new_name(&config.backup_dir, Utc::now(), Some("pre-migration"));
    let db = store::db_path(&config.storage_dir);
    tracing::info!(from = pending.from, to = pending.to, backup = %name, "the store needs migrating; backing it up first");
    let trail = audit::Audit::new(&config.backup_dir);
    let started = Instant::now();
    let options =
        json!({"trigger": Trigger::PreMigration, "fromFormat": pending.from, "toFormat": pending.to});
    let backup = archive_dir(
        config,
        &db,
        &name,
        Trigger::PreMigration,
        Some("pre-migration"),
        true,
        &archive::no_progress,
    );
    let (status, error) = match &backup {
        Ok(_) => (Outcome::Success, None),
        Err(e) => (Outcome::Failed, Some(e.to_string())),
    };
    trail.record(
        Action::Create,
        "full",
        catalog::id_of(&name),
        options,
        status,
        started,
        error,
        Actor::System,
    );
    backup.map_err(|e| MigrationError::Backup(Box::new(e)))?;
    store::migrate::run(&config.storage_dir, store_config, pending).map_err(|source| {
        tracing::error!(error = %source, backup = %name, "store migration failed; the store is unchanged");
        MigrationError::Step { backup: name.clone(), from: pending.from, to: pending.to, source }
    })?;
    tracing::info!(from = pending.from, to = pending.to, backup = %name, "store migrated");
    Ok(Some(name))
}

/// Why a migration did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The store's format could not be read.
    #[error("checking whether the store needs migrating: {0}")]
    Check(Box<Error>),
    /// The pre-migration backup failed, so nothing was migrated.
    #[error("the pre-migration backup failed, so the store was not migrated (it is unchanged): {0}")]
    Backup(Box<Error>),
    /// A step failed; the live store is unchanged.
    #[error(
        "migrating the store from format {from} to {to} failed: {source}. The store is unchanged; \
         the backup {backup} taken before the migration holds it as it was"
    )]
    Step {
        /// The pre-migration backup.
        backup: String,
        /// Format of the store.
        from: u32,
        /// Format this build writes.
        to: u32,
        /// What failed.
        source: store::Error,
    },
}

/// The manifest counts of a store snapshot.
pub fn counts_of(snapshot: &store::Snapshot) -> Counts {
    Counts {
        events: snapshot.counters.get(EVENTS_COUNTER).copied().unwrap_or(0),
        records: snapshot
            .counters
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(RECORDS_COUNTER_PREFIX).map(|c| (c.to_owned(), *v)))
            .filter(|(_, v)| *v > 0)
            .collect(),
        bus_messages: snapshot.last_seq,
    }
}

fn is_writable(dir: &Path) -> bool {
    std::fs::metadata(dir).map(|m| m.is_dir() && !m.permissions().readonly()).unwrap_or(false)
}
