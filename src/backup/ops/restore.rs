//! Restoring a whole-store archive hot: verified and unpacked beside the live store, then
//! swapped in without a restart.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use super::{Op, Slot};
use crate::backup::archive::{self, verify_into, Progress, Trigger};
use crate::backup::audit::{Action, Actor};
use crate::backup::catalog::{self, Kind};
use crate::backup::error::{Error, Result};
use crate::backup::{files, BackupManager};
use crate::store::swap::STAGING_PREFIX;

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
    /// 3. freeze writes and take the pre-restore backup, so the restore can be undone and no
    ///    acknowledged write is missing from it;
    /// 4. swap directories while no request runs (see `store::swap`).
    ///
    /// Any failure before step 4 leaves the live store untouched and serving. The caller
    /// holds the slot.
    pub(crate) fn restore_in_slot(
        &self,
        path: &Path,
        name: &str,
        source: Source,
        progress: Progress<'_>,
    ) -> Result<Restored> {
        let require_sidecar = source == Source::Backups;
        self.swap_in_staged(name, |staging| {
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
        stage: impl FnOnce(&Path) -> Result<String>,
    ) -> Result<Restored> {
        let started = Instant::now();
        let staging = self.staging_dir();
        let result = (|| {
            let restored_from = stage(&staging)?;
            crate::fault::point("restore.after_staging")?;
            let frozen = self.store.freeze();
            let pre = self.pre_restore_backup(name)?;
            crate::fault::point("restore.after_pre_restore")?;
            let gate = self.store.gate();
            let _requests = gate.blocking_write();
            let last_seq = self.store.replace_with(&staging)?;
            drop(frozen);
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

    /// The backup that undoes a restore, audited as an operation of its own.
    fn pre_restore_backup(&self, before: &str) -> Result<String> {
        let name = catalog::new_name(&self.config.backup_dir, chrono::Utc::now(), Some("pre-restore"));
        let op = Op::new(Action::Create, Kind::Full, &name, Actor::System, Slot::Shared)
            .options(json!({"trigger": Trigger::PreRestore, "before": before}));
        self.runner
            .run(op, |_| {
                let pre = Some("pre-restore");
                self.create_in_slot(&name, Trigger::PreRestore, pre, false, &archive::no_progress)
            })
            .map(|created| created.name)
    }

    fn staging_dir(&self) -> PathBuf {
        self.config.storage_dir.join(format!("{STAGING_PREFIX}{}", files::unique()))
    }
}
