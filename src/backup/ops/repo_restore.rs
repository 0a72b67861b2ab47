//! Restoring a backup from the repository onto a machine whose store is empty: the fresh
//! machine of `eventvault restore --from URL` and of `AUTO_RESTORE_FROM` at startup.
//!
//! The steps, each safe to crash in:
//! 1. check that the store is empty (no `db`, or one that holds nothing), with the storage
//!    lock held by the caller;
//! 2. download and check the backup into `STORAGE_DIR/staging-…` (see
//!    [`crate::backup::repo::Repo::restore_into`]); a crash leaves a staging folder that the
//!    next start removes;
//! 3. set an empty `db` aside, rename the staging folder to `db` and fsync the folder.

use std::path::Path;

use serde::Serialize;

use crate::backup::archive::Counts;
use crate::backup::error::{Error, Result};
use crate::backup::files;
use crate::backup::repo::{self, Location, Repo, Settings};
use crate::store::{self, swap::STAGING_PREFIX};

/// A restore from the repository onto an empty store.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoredFrom {
    /// The repository, without secrets.
    pub repo: String,
    /// The backup restored.
    pub backup: String,
    /// When it was taken.
    pub created_at: String,
    /// Bus lastSeq of the restored store.
    pub last_seq: u64,
    /// What it holds.
    pub counts: Counts,
}

/// Whether the store in `storage_dir` holds nothing: no database, an empty folder, or a
/// store that opens and holds no message. Anything else (a folder with files that does not
/// open as a store, say) is not empty: it may be data, and is never replaced.
pub fn store_is_empty(storage_dir: &Path) -> Result<bool> {
    let db = store::db_path(storage_dir);
    let mut entries = match std::fs::read_dir(&db) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(Error::io(&db, e)),
    };
    if entries.next().is_none() {
        return Ok(true);
    }
    match store::inspect(&db) {
        Ok(snapshot) => Ok(snapshot.last_seq == 0),
        Err(e) => {
            tracing::warn!(db = %db.display(), error = %e, "the store does not open; it is not treated as empty");
            Ok(false)
        }
    }
}

/// The error of a repository that holds no backup.
pub fn no_backup(location: &Location) -> Error {
    repo::Error::Empty(location.to_string()).into()
}

/// Restores `backup` (the newest when `None`) from the repository at `location` into the
/// empty store of `storage_dir`, whose lock the caller holds.
pub fn restore_fresh(
    storage_dir: &Path,
    location: &Location,
    settings: &Settings,
    backup: Option<&str>,
) -> Result<RestoredFrom> {
    restore_fresh_as(storage_dir, location, settings, backup, true)
}

/// [`restore_fresh`]; without `new_timeline`, the store stays on the backup's timeline (a
/// standby, which goes on with its primary's log).
pub fn restore_fresh_as(
    storage_dir: &Path,
    location: &Location,
    settings: &Settings,
    backup: Option<&str>,
    new_timeline: bool,
) -> Result<RestoredFrom> {
    if !store_is_empty(storage_dir)? {
        return Err(Error::InvalidOptions(format!(
            "the store in {} is not empty: a restore from the repository onto this machine needs an empty \
             STORAGE_DIR (on a running server, restore a repository backup through the API instead)",
            storage_dir.display()
        )));
    }
    let repo = Repo::open(location, settings)?;
    let id = match backup {
        Some(id) => {
            files::check_id(id)?;
            files::id_of(id).to_owned()
        }
        None => repo.newest()?.ok_or_else(|| no_backup(location))?,
    };
    let staging = storage_dir.join(format!("{STAGING_PREFIX}{}", files::unique()));
    let free = files::free_space(storage_dir).unwrap_or(u64::MAX);
    let restored = repo.restore_into(&id, &staging, free);
    let manifest = match restored {
        Ok(manifest) => manifest,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e.into());
        }
    };
    let stamped = match new_timeline {
        true => {
            store::timeline::stamp_dir(&staging, &store_config(), store::timeline::Reason::Restore).map(drop)
        }
        false => Ok(()),
    };
    if let Err(e) = stamped {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e.into());
    }
    put_in_place(storage_dir, &staging)?;
    tracing::info!(repo = %location, backup = %id, last_seq = manifest.backup.last_seq, "restored from the backup repository");
    Ok(RestoredFrom {
        repo: location.to_string(),
        backup: id,
        created_at: manifest.backup.created_at.clone(),
        last_seq: manifest.backup.last_seq,
        counts: manifest.backup.counts,
    })
}

/// Puts a staged store in place of the empty one of `storage_dir` (whose lock the caller
/// holds, and which it checked is empty).
pub(crate) fn put_in_place(storage_dir: &Path, staging: &Path) -> Result<()> {
    let db = store::db_path(storage_dir);
    if db.exists() {
        // Set aside, and kept until the restore is in place, then removed.
        let aside = storage_dir.join(format!("db.empty-{}", files::unique()));
        std::fs::rename(&db, &aside).map_err(|e| Error::io(&db, e))?;
        std::fs::rename(staging, &db).map_err(|e| Error::io(staging, e))?;
        files::sync_dir(storage_dir)?;
        let _ = std::fs::remove_dir_all(&aside);
    } else {
        std::fs::rename(staging, &db).map_err(|e| Error::io(staging, e))?;
        files::sync_dir(storage_dir)?;
    }
    Ok(())
}

/// The store settings of an offline restore: the store is opened once, to start its timeline.
pub(crate) fn store_config() -> store::StoreConfig {
    store::StoreConfig { sync_writes: true, block_cache_mb: 8 }
}

impl crate::backup::BackupManager {
    /// Whether backup `id` is in the repository (when there is one).
    pub fn in_repo(&self, id: &str) -> Result<bool> {
        let Some(handle) = &self.repo else { return Ok(false) };
        if files::check_id(id).is_err() {
            return Ok(false);
        }
        let id = files::id_of(id);
        // The cached listing: a mistyped id is a quick 404 even while the repository is slow.
        match handle.backups() {
            Ok(listed) => Ok(listed.iter().any(|(b, _)| b == id)),
            Err(e) => {
                tracing::warn!(repo = %handle.shown(), error = %e, "the backup repository cannot be listed");
                Ok(false)
            }
        }
    }

    /// Restores a repository backup hot: downloaded and checked beside the live store, then
    /// swapped in as an archive is (a dry run downloads and checks, and changes nothing).
    /// With options that merge part of it (events, collections, a clone), it is downloaded
    /// into the browse cache, as an archive is unpacked there, and merged from it.
    pub(crate) fn restore_from_repo(
        &self,
        id: &str,
        options: &super::restore_options::RestoreOptions,
        actor: crate::backup::audit::Actor,
    ) -> Result<super::restore_options::Report> {
        use super::restore_options::{Mode, Report};
        use super::{Op, Slot};
        use crate::backup::audit::Action;
        use crate::backup::catalog::Kind;
        options.check()?;
        if options.is_selective() {
            super::restore_with::check_clone(options)?;
        }
        let handle = self.repo.as_ref().ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let id = files::id_of(id).to_owned();
        let started = std::time::Instant::now();
        let slot = if options.dry_run { Slot::Shared } else { Slot::Exclusive };
        let mut audited = serde_json::to_value(options).unwrap_or_default();
        if let Some(fields) = audited.as_object_mut() {
            fields.insert("location".into(), "repo".into());
            fields.insert("repo".into(), handle.shown().into());
        }
        let op = Op::new(Action::Restore, Kind::Full, &id, actor, slot).options(audited);
        self.runner.run(op, |ctx| {
            let repo = handle.repo()?;
            let bound = self.config.unpack_bound();
            if options.is_selective() {
                let mut report = Report::new(&id, Kind::Full, Mode::Merge, options.dry_run);
                let size = handle
                    .backups()?
                    .into_iter()
                    .find(|(b, _)| *b == id)
                    .and_then(|(_, summary)| summary.ok())
                    .map(|s| s.size)
                    .unwrap_or_default();
                // A repository backup never changes: its id and size are its stamp.
                let stamp = (size, std::time::SystemTime::UNIX_EPOCH);
                let opened = self.cache.open_with(&id, stamp, |dir| {
                    let manifest = repo.restore_into(&id, dir, bound)?;
                    Ok(manifest.backup.total_size().unwrap_or_default())
                })?;
                let result = self.merge_opened(&id, &opened, options, &mut report);
                report.duration_ms = started.elapsed().as_millis() as u64;
                report.last_seq = self.store().head().last_seq;
                if result.is_err() && report.changed_anything() {
                    ctx.done(super::restore_with::part_restored(&report));
                }
                return result.map(|()| report);
            }
            let mut report = Report::new(&id, Kind::Full, Mode::Swap, options.dry_run);
            if options.dry_run {
                let staging =
                    self.config.storage_dir.join(format!("{STAGING_PREFIX}dry-{}", files::unique()));
                let checked = repo.restore_into(&id, &staging, bound);
                let _ = std::fs::remove_dir_all(&staging);
                report.replaced_with = Some(checked?.backup.counts);
            } else {
                let mut counts = None;
                let restored =
                    self.swap_in_staged(&id, crate::store::timeline::Reason::Restore, |staging| {
                        let manifest = repo.restore_into(&id, staging, bound)?;
                        counts = Some(manifest.backup.counts.clone());
                        Ok(manifest.backup.name)
                    })?;
                report.pre_restore_backup = Some(restored.pre_restore_backup);
                report.replaced_with = counts;
            }
            report.duration_ms = started.elapsed().as_millis() as u64;
            report.last_seq = self.store().head().last_seq;
            Ok(report)
        })
    }
}
