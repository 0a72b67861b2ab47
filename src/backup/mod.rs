//! The BackupManager: whole-store archives and event backups, their catalogue, verification,
//! hot restore, restores with options, the drop-in folder and the schedule.
//!
//! Every method blocks (RocksDB, tar, gzip, hashing): call them off the async runtime. One
//! backup or restore runs at a time; a second gets [`Error::Busy`] naming the first.
//!
//! # Layout
//! The folders follow the layers, and imports point down the list, never up:
//!
//! - [`ops`]: the operations, one file each (`create`, `restore` (hot swap), `restore_with`
//!   (merges, clones, dry runs), `event_delete`, `purge`, `delete`, `rotate`, `schedule`,
//!   `dropin` and its `watch`er, `migrate`, `drill` and its `drill_schedule`; for the
//!   repository `prune`, `repo_restore`, `repo_export`), all run by the one [`ops::Runner`], which owns the one-operation slot,
//!   the timing, the log line and the audit entry;
//! - [`browse`]: read-only views into backups (collections, documents), over a cache of
//!   unpacked archives;
//! - [`catalog`]: what BACKUP_DIR holds, by id, listed and filtered;
//! - [`archive`]: the whole-store archive format (manifest, tar writer and hostile-input
//!   reader, parallel gzip, verify/unpack);
//! - [`repo`]: the backup repository (content-addressed objects and backup manifests in a
//!   folder or an S3 bucket, upload, download, verification, GFS retention and prune);
//! - [`event_backup`]: the event-backup format (`.json.gz`) and its streaming readers;
//! - [`audit`]: the audit trail; [`files`]: names, sidecars and publishing a finished file;
//!   [`config`], [`error`]: leaves.
//!
//! Next to come: the repository's encryption (in `repo/`), and `shipping/` beside it (the bus
//! log shipped into the repository as segments, for point-in-time restore), its operations
//! in `ops/` through the same runner.

pub mod archive;
pub mod audit;
pub mod browse;
pub mod catalog;
pub mod config;
pub mod error;
pub mod event_backup;
pub mod files;
pub mod notify;
pub mod ops;
pub mod repo;
pub mod ship;
pub mod standby;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

pub use archive::{verify, Counts, Manifest, Progress, Trigger, Verified};
pub use catalog::{Entry, Filter, Item, Kind};
pub use config::BackupConfig;
pub use error::{Error, Result};
pub use files::free_space;
pub use ops::create::Created;
pub use ops::drill_schedule::{DrillOutcome, DrillReport};
pub use ops::event_delete::{DeletedWithBackup, EventBackup};
pub use ops::migrate::{migrate_if_needed, MigrationError};
pub use ops::purge::{BackedUpAndPurged, PurgeReport, PurgeRequest};
pub use ops::restore::{Restored, Source};
pub use ops::restore_options::{Mode, Report, RestoreOptions};
pub use ops::restore_with::verify_event;
pub use ops::{drill, drill_schedule, dropin, schedule, watch};

use crate::store::Store;
use catalog::Catalog;
use ops::Runner;

/// Free space in BACKUP_DIR under which the health check counts its disk as full even
/// before there is an archive to compare with (1 MiB).
const LOW_SPACE: u64 = 1 << 20;

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
    runner: Runner,
    status: Mutex<Status>,
    started: Instant,
    cache: browse::Cache,
    /// Dropped archives startup left in place (only the newest is restored): the watcher
    /// leaves them too.
    left_at_startup: Mutex<Vec<PathBuf>>,
    /// The backup repository, when BACKUP_REPO is set.
    repo: Option<repo::Handle>,
    /// Checksums of the store's tables, so a backup hashes only new ones.
    known: archive::Known,
    /// Itself, for the threads that write pre-restore backups after a restore answered.
    me: std::sync::Weak<BackupManager>,
    /// Those threads, by the backup each writes.
    safety_copies: Mutex<std::collections::HashMap<String, std::thread::JoinHandle<()>>>,
    /// Log shipping's state.
    shipping: ship::Shipping,
    /// What this server follows while it is a standby.
    standby: Mutex<Option<Arc<standby::Follower>>>,
    /// Restore drills: one at a time, and the last one's report.
    drills: ops::drill_schedule::Drills,
}

impl BackupManager {
    /// A manager over an open store.
    pub fn new(config: BackupConfig, store: Arc<Store>) -> Arc<Self> {
        let cache = browse::Cache::new(config.backup_dir.join(browse::CACHE_DIR), config.browse_cache_bytes);
        let repo = config.repo.as_ref().map(|(location, settings)| repo::Handle::open(location, settings));
        Arc::new_cyclic(|me| BackupManager {
            me: me.clone(),
            safety_copies: Mutex::new(std::collections::HashMap::new()),
            repo,
            runner: Runner::new(
                audit::Audit::new(&config.backup_dir),
                notify::Notifier::new(config.webhook.clone()),
            ),
            cache,
            config,
            store,
            catalog: Catalog::default(),
            status: Mutex::new(Status::default()),
            started: Instant::now(),
            left_at_startup: Mutex::new(Vec::new()),
            known: archive::Known::default(),
            shipping: ship::Shipping::default(),
            standby: Mutex::new(None),
            drills: ops::drill_schedule::Drills::default(),
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
        self.runner.audit()
    }

    /// The details of a backup of either kind: for an archive its manifest, for an event
    /// backup its metadata, beside the catalogue's fields.
    pub fn details(&self, id: &str) -> Result<Value> {
        self.catalog.details(&self.config.backup_dir, id)
    }

    /// Backups of both kinds that pass `filter`, newest first.
    pub fn list_all(&self, filter: &Filter) -> Result<Vec<Item>> {
        let mut items = self.catalog.list_all(&self.config.backup_dir, filter)?;
        // Repository backups are whole-store backups: an event listing never waits for it.
        if filter.kind != Some(Kind::Event) {
            items.extend(self.repo_items().into_iter().filter(|item| filter.matches(item)));
        }
        items.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.name.cmp(&a.name)));
        Ok(items)
    }

    fn repo_items(&self) -> Vec<Item> {
        self.repo.as_ref().map(repo_items).unwrap_or_default()
    }

    /// The collections a backup holds.
    pub fn collections(&self, id: &str) -> Result<Vec<browse::CollectionInfo>> {
        browse::collections(&self.config, &self.cache, id)
    }

    /// A page of documents of a backup.
    pub fn documents(&self, id: &str, collection: &str, query: &browse::DocQuery) -> Result<browse::DocPage> {
        browse::documents(&self.config, &self.cache, id, collection, query)
    }

    /// Verifies an archive of BACKUP_DIR completely (see [`archive::verify`]).
    pub fn verify(&self, name: &str, progress: Progress<'_>) -> Result<Verified> {
        archive::verify(&self.config, name, progress)
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
            Err(self.pending(name).unwrap_or_else(|| Error::NotFound(name.into())))
        }
    }

    /// Records how the last backup went, for the health check.
    fn note_result(&self, trigger: Trigger, result: std::result::Result<(), &Error>, started: Instant) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.last_duration_ms = Some(started.elapsed().as_millis() as u64);
        let failed = result.is_err();
        status.last_error = result.err().map(|e| e.to_string());
        if trigger == Trigger::Scheduled {
            status.last_scheduled_failed = failed;
        }
    }

    /// Removes what crashed backups left in BACKUP_DIR.
    pub fn clean_leftovers(&self) -> Result<()> {
        for dir in [self.config.backup_dir.clone(), files::event_dir(&self.config.backup_dir)] {
            for name in catalog::clean_leftovers(&dir)? {
                tracing::info!(name, "removed the leftover of an interrupted backup");
            }
        }
        Ok(())
    }

    /// What is running, if anything.
    pub fn running(&self) -> Option<String> {
        self.runner.running()
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
        let stale = self.stale(&entries);
        let last_success =
            newest_good(&entries).map(|(at, _)| at.to_rfc3339_opts(SecondsFormat::Millis, true));
        // The next archive will be about as large as the newest one, and rotation frees room
        // only after it is written: with less free space than that, the next backup (and every
        // event deletion, which waits for its event's backup) fails for want of space.
        let free = free_space(&self.config.backup_dir);
        let needed = latest.map_or(0, |l| l.size).max(LOW_SPACE);
        let low_space = free.is_some_and(|free| free < needed);
        let (repo, repo_failed) = match &self.repo {
            Some(handle) => {
                let (section, failed) = handle.health();
                (Some(section), failed)
            }
            None => (None, false),
        };
        // Undo points whose pre-restore backup is not written, and not being written: a restore
        // that cannot be undone through the API until it is.
        let (undo_pending, undo_stuck) = self.undo_points();
        let degraded =
            status.last_scheduled_failed || stale || !available || low_space || repo_failed || undo_stuck;
        let section = json!({
            "stale": stale,
            "lastSuccess": last_success,
            "undoPending": undo_pending,
            "available": available,
            "freeBytes": free,
            "lowSpace": low_space,
            "count": entries.len(),
            "latest": latest.map(|l| json!({"name": l.name, "created": l.created, "size": l.size})),
            "totalSizeMB": files::mb(total),
            "totalSizeBytes": total,
            "lastError": status.last_error,
            "nextScheduled": status.next_scheduled.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            "lastDurationMs": status.last_duration_ms,
            "running": self.running(),
            "autoBackup": self.config.auto_backup,
            "repo": repo,
        });
        (section, degraded)
    }
}

/// The repository's backups as catalogue items; none (with a warning in the log, and the
/// error in health) when it cannot be listed.
pub fn repo_items(handle: &repo::Handle) -> Vec<Item> {
    match handle.backups() {
        Ok(backups) => backups
            .into_iter()
            .map(|(id, manifest)| match manifest {
                Ok(summary) => Item::repo(&summary.manifest, summary.size),
                Err(e) => Item::repo_damaged(&id, e),
            })
            .collect(),
        Err(e) => {
            tracing::warn!(repo = %handle.shown(), error = %e, "the backup repository cannot be listed");
            Vec::new()
        }
    }
}

impl BackupManager {
    /// Whether the data changed since the newest archive (`latest`) and it is older than twice
    /// the backup interval. An old archive of an idle store is not stale: its scheduled backups
    /// are skipped, and the newest archive protects it fully.
    /// Without local archives (MAX_BACKUPS=0) the repository's newest backup counts.
    fn stale(&self, entries: &[Entry]) -> bool {
        let stale_after = self.config.interval * 2;
        let last_seq = self.store.head().last_seq;
        let newest = match self.config.local_archives() {
            true => newest_good(entries),
            false => self.repo_newest(),
        };
        // A standby takes no backups of its own: its primary's are in the repository.
        self.config.auto_backup
            && self.following().is_none()
            && match newest {
                Some((created, archived_seq)) => {
                    archived_seq != Some(last_seq)
                        && (Utc::now() - created).to_std().unwrap_or_default() > stale_after
                }
                None => self.started.elapsed() > stale_after && last_seq > 0,
            }
    }

    /// When the newest backup in the repository that reads was taken, and its lastSeq, as far
    /// as this server knows without asking the repository (the last listing, and what this
    /// server stored since).
    pub fn repo_newest(&self) -> Option<(DateTime<Utc>, Option<u64>)> {
        let handle = self.repo.as_ref()?;
        let listed =
            handle.newest_listed().and_then(|(created, seq)| Some((counted_time(&created)?, Some(seq))));
        let stored = handle.last_stored().and_then(|at| Some((counted_time(&at)?, None)));
        [listed, stored].into_iter().flatten().max_by_key(|(at, _)| *at)
    }

    /// Where failures are notified.
    pub fn notifier(&self) -> &notify::Notifier {
        self.runner.notifier()
    }

    /// Checks the conditions that are notified when they start and when they end (stale
    /// backups, shipping that fails or lags), every `every` until the manager is dropped.
    pub fn start_watching_conditions(&self, every: std::time::Duration) {
        if !self.notifier().enabled() {
            return;
        }
        if let Some(drill) =
            self.last_drill().filter(|d| d.outcome == ops::drill_schedule::DrillOutcome::Failed)
        {
            let why = drill.error.unwrap_or_else(|| "the last restore drill failed".into());
            self.notifier().failing_since_before(notify::Subject::Drill, &why);
        }
        let me = self.me.clone();
        let spawned = std::thread::Builder::new().name("conditions".into()).spawn(move || loop {
            std::thread::sleep(every);
            let Some(manager) = me.upgrade() else { return };
            manager.check_conditions();
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "the conditions thread did not start: stale backups and shipping are not notified");
        }
    }

    fn check_conditions(&self) {
        use notify::Subject;
        let entries = self.list().unwrap_or_default();
        // Without local archives, the repository's listing is what tells stale: read it
        // (this thread may wait; health never does).
        if !self.config.local_archives() {
            if let Some(handle) = &self.repo {
                let _ = handle.backups();
            }
        }
        let stale = self.stale(&entries).then(|| {
            let newest = entries
                .first()
                .map_or("there is none".to_owned(), |e| format!("the newest is {} of {}", e.name, e.created));
            format!(
                "backups are stale: the data changed and no backup was written for {} s ({newest})",
                (self.config.interval * 2).as_secs()
            )
        });
        self.notifier().condition(Subject::StaleBackups, stale);
        let shipping = self.ship_health().and_then(|(section, degraded)| {
            degraded.then(|| {
                let lag = section["lagSeconds"].as_f64().unwrap_or_default();
                match section["lastError"].as_str() {
                    Some(e) => format!("shipping the bus log fails ({lag:.1} s behind): {e}"),
                    None => format!("shipping the bus log is {lag:.1} s behind, more than SHIP_MAX_LAG_SECS"),
                }
            })
        });
        self.notifier().condition(Subject::Shipping, shipping);
    }
}

/// The newest archive that reads and is not dated in the future: the last successful local
/// backup. A damaged file, or one named for a later date, counts for nothing.
fn newest_good(entries: &[Entry]) -> Option<(DateTime<Utc>, Option<u64>)> {
    entries.iter().filter(|e| e.error.is_none()).find_map(|e| Some((counted_time(&e.created)?, e.last_seq)))
}

/// An RFC 3339 time a backup claims, when it is one that may count: not later than now (with a
/// minute for clocks that differ a little).
fn counted_time(rfc3339: &str) -> Option<DateTime<Utc>> {
    let at = DateTime::parse_from_rfc3339(rfc3339).ok()?.with_timezone(&Utc);
    (at <= Utc::now() + chrono::Duration::minutes(1)).then_some(at)
}

fn is_writable(dir: &Path) -> bool {
    std::fs::metadata(dir).map(|m| m.is_dir() && !m.permissions().readonly()).unwrap_or(false)
}
