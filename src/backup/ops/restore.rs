//! Restoring a whole-store archive hot: verified and unpacked beside the live store, then
//! swapped in without a restart.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use super::create::{describe_dir, write_local};
use super::{Op, Slot};
use crate::backup::archive::{self, verify_into, Progress, Trigger};
use crate::backup::audit::{Action, Actor};
use crate::backup::catalog::{self, Kind};
use crate::backup::error::{Error, Result};
use crate::backup::{files, BackupManager};
use crate::store::swap::{STAGING_PREFIX, UNDO_PREFIX};
use crate::store::timeline::Reason;

/// A restore that went through.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Restored {
    /// The archive restored.
    pub restored_from: String,
    /// The backup of the data it replaced, to undo the restore.
    pub pre_restore_backup: String,
    /// Bus lastSeq of the restored store.
    pub last_seq: u64,
    /// How long it took.
    pub duration_ms: u64,
}

/// Where the archive to restore comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// BACKUP_DIR: its sidecar must be there.
    Backups,
    /// The drop-in folder: the sidecar is checked when it is there.
    RestoreFolder,
}

impl BackupManager {
    /// Restores an archive of BACKUP_DIR into the live store, without a restart. Its sidecar
    /// must be there.
    pub fn restore(&self, name: &str, actor: Actor, progress: Progress<'_>) -> Result<Restored> {
        let path = self.path_of(name)?;
        self.restore_file(&path, Source::Backups, actor, progress)
    }

    /// Restores an archive from `path`, in the slot.
    pub fn restore_file(
        &self,
        path: &Path,
        source: Source,
        actor: Actor,
        progress: Progress<'_>,
    ) -> Result<Restored> {
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let from = match source {
            Source::Backups => "backups",
            Source::RestoreFolder => "restore folder",
        };
        let op = Op::new(Action::Restore, Kind::Full, &name, actor, Slot::Exclusive)
            .options(json!({"mode": "swap", "from": from}));
        self.runner.run(op, |_| self.restore_in_slot(path, &name, source, progress))
    }

    /// The steps of a restore:
    /// 1. verify and unpack the archive into `STORAGE_DIR/staging-…` in one pass (sidecar,
    ///    every file's checksum, format version, hostile entries);
    /// 2. open the staged store read-only and check it against the manifest;
    /// 3. freeze writes and swap directories while no request runs (see `store::swap`); the
    ///    replaced store, closed with every acknowledged write in it, is kept as
    ///    `STORAGE_DIR/undo-<pre-restore backup>`;
    /// 4. after the restore has answered, the pre-restore backup is written from it in the
    ///    background, at low priority (see [`BackupManager::keep_safe`]), and only then is it
    ///    removed. A crash before that leaves the undo point, which startup copies.
    ///
    /// Any failure before step 3 leaves the live store untouched and serving. The caller
    /// holds the slot.
    pub(crate) fn restore_in_slot(
        &self,
        path: &Path,
        name: &str,
        source: Source,
        progress: Progress<'_>,
    ) -> Result<Restored> {
        let require_sidecar = source == Source::Backups;
        self.swap_in_staged(name, Reason::Restore, |staging| {
            let verified = archive::pgzip::at_low_priority(|| {
                verify_into(&self.config, path, name, staging, require_sidecar, progress)
            });
            Ok(verified?.manifest.name)
        })
    }

    /// Steps 2 to 4 of a restore, for a store that `stage` puts into the new directory it is
    /// given, checked, and names. The caller holds the slot.
    pub(crate) fn swap_in_staged(
        &self,
        name: &str,
        reason: Reason,
        stage: impl FnOnce(&Path) -> Result<String>,
    ) -> Result<Restored> {
        let started = Instant::now();
        let staging = self.staging_dir();
        let result = (|| {
            let restored_from = stage(&staging)?;
            crate::fault::point("restore.after_staging")?;
            let pre = self.undo_name();
            self.check_room_for_safety_copy()?;
            let frozen = self.store.freeze();
            // What the replaced log holds and the repository does not yet is shipped first, so
            // a point-in-time restore on the old timeline reaches its last write (best effort: a
            // repository that is down does not hold a restore back).
            if self.config.ship.is_some() && self.following().is_none() {
                self.ship_now();
            }
            let gate = self.store.gate();
            let requests = gate.blocking_write();
            let last_seq = self.store.replace_with(&staging, Some(&format!("{UNDO_PREFIX}{pre}")), reason)?;
            drop(requests);
            drop(frozen);
            tracing::info!(from = name, undo = %pre, "restored; the pre-restore backup is written in the background");
            self.start_safety_copy(&pre, name);
            Ok::<_, Error>(Restored {
                restored_from,
                pre_restore_backup: pre,
                last_seq,
                duration_ms: started.elapsed().as_millis() as u64,
            })
        })();
        if staging.exists() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        if result.is_err() {
            tracing::error!(from = name, "restore failed; the live data is unchanged");
        }
        result
    }

    /// The name of the next pre-restore backup.
    fn undo_name(&self) -> String {
        self.fresh_name(Some("pre-restore"))
    }

    /// A name for a new whole-store backup: free in BACKUP_DIR, among undo points and the
    /// safety copies being written (whose backups do not exist yet), and, when BACKUP_DIR
    /// holds no archives (MAX_BACKUPS=0), in the repository. With local archives a name is
    /// never asked of the repository: a backup would wait on it (a listing, retried when it is
    /// down) to learn what BACKUP_DIR already says.
    pub(crate) fn fresh_name(&self, label: Option<&str>) -> String {
        let mut at = chrono::Utc::now();
        loop {
            let name = catalog::new_name(&self.config.backup_dir, at, label);
            let reserved = self.config.storage_dir.join(format!("{UNDO_PREFIX}{name}")).exists()
                || self.safety_copies.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&name)
                || (!self.config.local_archives() && self.in_repo(&name).unwrap_or(false));
            if !reserved {
                return name;
            }
            at += chrono::Duration::seconds(1);
        }
    }

    /// The undo points in STORAGE_DIR (the pre-restore backups they are to become), and
    /// whether any of them is not being copied (its copy failed; retried after the next
    /// backup, and at startup).
    pub(crate) fn undo_points(&self) -> (Vec<String>, bool) {
        let names = self.scan_undo_points().0;
        let copies = self.safety_copies.lock().unwrap_or_else(|e| e.into_inner());
        let stuck = names.iter().any(|n| copies.get(n).is_none_or(|h| h.is_finished()));
        (names, stuck)
    }

    /// Answers for a pre-restore backup that is still being written.
    pub(crate) fn pending(&self, name: &str) -> Option<Error> {
        let id = files::id_of(name);
        let name = format!("{id}{}", files::ARCHIVE_SUFFIX);
        let undo = self.config.storage_dir.join(format!("{UNDO_PREFIX}{name}"));
        undo.exists().then(|| {
            // Busy says "… is running; try again when it has finished".
            Error::Busy(format!("writing the pre-restore backup {name} from the data the restore replaced"))
        })
    }

    /// A restore goes ahead only when its pre-restore archive will fit in BACKUP_DIR: the
    /// store's size, with room to spare (the archive of incompressible tables is a little
    /// larger than they are). Without local archives the repository takes it.
    fn check_room_for_safety_copy(&self) -> Result<()> {
        if !self.config.local_archives() {
            return Ok(());
        }
        let need = self.store.size_on_disk()?;
        let need = need + need / 50 + (1 << 20);
        let free = files::free_space(&self.config.backup_dir).unwrap_or(u64::MAX);
        if free < need {
            return Err(Error::DiskFull {
                path: self.config.backup_dir.clone(),
                source: std::io::Error::other(format!(
                    "the pre-restore backup needs about {need} bytes and {free} are free; nothing was restored"
                )),
            });
        }
        Ok(())
    }

    /// Writes the pre-restore backup `name` from its undo point on a thread of its own.
    fn start_safety_copy(&self, name: &str, before: &str) {
        let Some(me) = self.me.upgrade() else { return };
        let mut copies = self.safety_copies.lock().unwrap_or_else(|e| e.into_inner());
        // Finished threads are joined (their stacks freed); one copy per undo point at a time.
        copies.retain(|_, h| !h.is_finished());
        if copies.contains_key(name) {
            return;
        }
        let (owned, before) = (name.to_owned(), before.to_owned());
        let spawned = std::thread::Builder::new()
            .name("eventvault-undo".into())
            .spawn(move || archive::pgzip::at_low_priority(|| me.keep_safe(&owned, &before)));
        match spawned {
            Ok(handle) => {
                copies.insert(name.to_owned(), handle);
            }
            Err(e) => {
                tracing::error!(error = %e, "could not start the safety copy; it is retried after the next backup")
            }
        }
    }

    /// Writes the pre-restore backup `name` from the undo point `STORAGE_DIR/undo-<name>`
    /// (the store a restore replaced, closed): a local archive, and a copy in the repository
    /// (the only one with MAX_BACKUPS=0). The undo point is removed once the copy is written;
    /// if it fails, the undo point stays and is tried again after the next backup and at the
    /// next start.
    pub(crate) fn keep_safe(&self, name: &str, before: &str) {
        let undo = self.config.storage_dir.join(format!("{UNDO_PREFIX}{name}"));
        let op = Op::new(Action::Create, Kind::Full, name, Actor::System, Slot::Shared)
            .options(json!({"trigger": Trigger::PreRestore, "before": before}));
        let written = self.runner.run(op, |_| {
            crate::fault::point("restore.before_safety_copy")?;
            let label = Some("pre-restore");
            // Stamped with the restore's time, not the copy's: rotation and "newest" see it
            // where it belongs. Its name's second, or its newest message's time when that is
            // later: a backup never predates what it holds (a point-in-time restore to a
            // moment before those writes must not start from it).
            let mut manifest =
                describe_dir(&undo, name, Trigger::PreRestore, label, false, &archive::no_progress, None)?;
            if let Some(at) = catalog::time_of_name(name) {
                let newest = crate::store::inspect(&undo)?.last_ts_ms;
                let at = at.timestamp_millis().max(newest);
                manifest.created_at = chrono::DateTime::from_timestamp_millis(at)
                    .unwrap_or_default()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            }
            // A crash after a copy was written, before the undo point went: not written twice,
            // once what is there is seen to hold this very data.
            let archived = self.already_archived(name, &manifest)?;
            if self.config.local_archives() && !archived {
                write_local(&self.config, &undo, &manifest, &archive::no_progress)?;
            }
            let stored = self.already_in_repo(name, &manifest)?;
            if self.repo.is_some() && !stored {
                match self.copy_to_repo(&undo, &manifest) {
                    Ok(_) => {}
                    Err(e) if self.config.local_archives() => {
                        tracing::warn!(error = %e, backup = name, "the pre-restore backup is local only: storing it in the repository failed")
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        match written {
            Ok(()) => {
                if let Err(e) = crate::store::swap::discard(&self.config.storage_dir, &undo) {
                    tracing::warn!(dir = %undo.display(), error = %e, "could not remove the undo point after its copy");
                }
                if let Err(e) = self.rotate(name) {
                    tracing::warn!(error = %e, "rotation failed");
                }
            }
            Err(e) => tracing::error!(
                error = %e, undo = %undo.display(),
                "the pre-restore backup could not be written; its undo point stays, and is tried again after the next backup and at the next start"
            ),
        }
    }

    /// Whether BACKUP_DIR holds the archive `name` of exactly the data `manifest` describes;
    /// an archive of that name with other data is an error (the undo point is kept).
    fn already_archived(&self, name: &str, manifest: &crate::backup::archive::Manifest) -> Result<bool> {
        if !self.config.backup_dir.join(name).exists() {
            return Ok(false);
        }
        match self.manifest(name) {
            Ok(m) if m.last_seq == manifest.last_seq && m.counts == manifest.counts => Ok(true),
            _ => Err(Error::Busy(format!("{name} exists and holds other data; the undo point is kept"))),
        }
    }

    /// [`Self::already_archived`], in the repository.
    fn already_in_repo(&self, name: &str, manifest: &crate::backup::archive::Manifest) -> Result<bool> {
        let Some(handle) = &self.repo else { return Ok(false) };
        if !self.in_repo(name)? {
            return Ok(false);
        }
        let id = files::id_of(name);
        let listed = handle.backups()?;
        match listed.iter().find(|(b, _)| b == id).map(|(_, s)| s) {
            Some(Ok(s))
                if s.manifest.last_seq == manifest.last_seq && s.manifest.counts == manifest.counts =>
            {
                Ok(true)
            }
            _ => {
                Err(Error::Busy(format!("{id} is in the repository with other data; the undo point is kept")))
            }
        }
    }

    /// Writes, now, the safety copies of undo points a crash or a stop left behind (for an
    /// offline command, which may end before a thread would finish).
    pub fn finish_safety_copies_now(&self) {
        for name in self.undo_points().0 {
            tracing::info!(backup = %name, "writing the pre-restore backup of an undo point a stop left");
            self.keep_safe(&name, "a restore before the last stop");
        }
    }

    /// Writes the safety copies of undo points a crash or a stop left behind (at startup).
    pub fn finish_safety_copies(&self) {
        let (names, others) = self.scan_undo_points();
        for dir in others {
            tracing::warn!(
                dir,
                "an undo point with a name this eventvault did not write, or not a folder; left alone"
            );
        }
        for name in names {
            tracing::info!(backup = %name, "writing the pre-restore backup of an undo point a stop left");
            self.start_safety_copy(&name, "a restore before the last stop");
        }
    }

    /// The undo points of STORAGE_DIR, sorted: the backups they are to become, and the
    /// entries named like one that are not (a bad name, or not a folder), which are left alone.
    fn scan_undo_points(&self) -> (Vec<String>, Vec<String>) {
        let (mut names, mut others) = (Vec::new(), Vec::new());
        let Ok(entries) = std::fs::read_dir(&self.config.storage_dir) else { return (names, others) };
        for entry in entries.flatten() {
            let dir = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = dir.strip_prefix(UNDO_PREFIX) else { continue };
            match files::check_name(name).is_ok() && entry.path().is_dir() {
                true => names.push(name.to_owned()),
                false => others.push(dir),
            }
        }
        names.sort();
        (names, others)
    }

    /// Waits for the safety copies started so far (before the process exits).
    pub fn wait_for_safety_copies(&self) {
        let handles = std::mem::take(&mut *self.safety_copies.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, handle) in handles {
            let _ = handle.join();
        }
    }

    fn staging_dir(&self) -> PathBuf {
        self.config.storage_dir.join(format!("{STAGING_PREFIX}{}", files::unique()))
    }
}
