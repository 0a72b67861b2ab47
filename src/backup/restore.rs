//! Verifying and restoring archives.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use serde_json::json;

use super::archive::{self, Limits, Progress};
use super::audit::{Action, Actor};
use super::manifest::{Manifest, Trigger};
use super::{catalog, pgzip};
use super::{counts_of, BackupConfig, BackupManager, Error, Result};
use crate::store::{self, swap::STAGING_PREFIX};

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

/// An archive that passed verification.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    /// Archive name.
    pub name: String,
    /// Whether a sidecar was there and matched.
    pub sidecar_checked: bool,
    /// Number of files checked.
    pub files: usize,
    /// Bytes of store files.
    pub bytes: u64,
    /// The manifest.
    pub manifest: Manifest,
}

impl BackupManager {
    /// Restores an archive of BACKUP_DIR into the live store, without a restart. Its sidecar
    /// must be there.
    pub fn restore(&self, name: &str, actor: Actor, progress: Progress<'_>) -> Result<Restored> {
        let path = self.path_of(name)?;
        self.restore_file(&path, true, actor, progress)
    }

    /// Restores an archive from any path (the drop-in folder). The sidecar is checked when it
    /// is there and required only when `require_sidecar`.
    pub fn restore_file(
        &self,
        path: &Path,
        require_sidecar: bool,
        actor: Actor,
        progress: Progress<'_>,
    ) -> Result<Restored> {
        let started = Instant::now();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let result = self
            .begin(format!("restore of {name}"))
            .and_then(|_busy| self.restore_locked(path, &name, require_sidecar, progress));
        let from = if require_sidecar { "backups" } else { "restore folder" };
        let options = json!({"mode": "swap", "from": from});
        self.audit_result(Action::Restore, "full", catalog::id_of(&name), options, &result, started, actor);
        result
    }

    /// The steps of a restore:
    /// 1. verify and unpack the archive into `STORAGE_DIR/staging-…` in one pass (sidecar,
    ///    every file's checksum, format version, hostile entries);
    /// 2. open the staged store read-only and check it against the manifest;
    /// 3. freeze writes and take the pre-restore backup, so the restore can be undone and no
    ///    acknowledged write is missing from it;
    /// 4. swap directories while no request runs (see `store::swap`).
    ///
    /// Any failure before step 4 leaves the live store untouched and serving.
    pub(super) fn restore_locked(
        &self,
        path: &Path,
        name: &str,
        require_sidecar: bool,
        progress: Progress<'_>,
    ) -> Result<Restored> {
        let started = Instant::now();
        let staging = self.staging_dir();
        let result = (|| {
            let verified = pgzip::at_low_priority(|| {
                verify_into(&self.config, path, name, &staging, require_sidecar, progress)
            });
            let manifest = verified?.manifest;
            crate::fault::point("restore.after_staging")?;
            let frozen = self.store.freeze();
            let pre_name =
                catalog::new_name(&self.config.backup_dir, chrono::Utc::now(), Some("pre-restore"));
            let pre_started = Instant::now();
            let pre = self.create_locked(
                &pre_name,
                Trigger::PreRestore,
                Some("pre-restore"),
                false,
                &archive::no_progress,
            );
            let options = json!({"trigger": Trigger::PreRestore, "before": name});
            self.audit_result(
                Action::Create,
                "full",
                catalog::id_of(&pre_name),
                options,
                &pre,
                pre_started,
                Actor::System,
            );
            let pre = pre?;
            crate::fault::point("restore.after_pre_restore")?;
            let gate = self.store.gate();
            let _requests = gate.blocking_write();
            let last_seq = self.store.replace_with(&staging)?;
            drop(frozen);
            Ok::<_, Error>(Restored {
                restored_from: manifest.name.clone(),
                pre_restore_backup: pre.name,
                last_seq,
                duration_ms: started.elapsed().as_millis() as u64,
            })
        })();
        if staging.exists() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        match &result {
            Ok(r) => {
                tracing::info!(from = name, pre_restore = %r.pre_restore_backup, last_seq = r.last_seq, ms = r.duration_ms, "restore complete")
            }
            Err(e) => tracing::error!(from = name, error = %e, "restore failed; the live data is unchanged"),
        }
        result
    }

    fn staging_dir(&self) -> PathBuf {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        self.config.storage_dir.join(format!("{STAGING_PREFIX}{}-{nanos}", std::process::id()))
    }

    /// Verifies an archive of BACKUP_DIR completely: the sidecar, every file's checksum, that
    /// the store opens, and that its counts equal the manifest's. Writes only to a temporary
    /// directory, removed afterwards.
    pub fn verify(&self, name: &str, progress: Progress<'_>) -> Result<Verified> {
        verify(&self.config, name, progress)
    }
}

/// [`BackupManager::verify`] without a manager: it needs no store, so the CLI runs it while
/// a server is up. The temporary directory is under BACKUP_DIR.
pub fn verify(config: &BackupConfig, name: &str, progress: Progress<'_>) -> Result<Verified> {
    catalog::check_name(name)?;
    let path = config.backup_dir.join(name);
    if !path.is_file() {
        return Err(Error::NotFound(name.into()));
    }
    // Unique per call: dry runs and the CLI may verify beside each other.
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let staging =
        config.backup_dir.join(format!("{}verify-{}-{nanos}", catalog::TEMP_PREFIX, std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = verify_into(config, &path, name, &staging, false, progress);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

pub(super) fn verify_into(
    config: &BackupConfig,
    path: &Path,
    name: &str,
    staging: &Path,
    require_sidecar: bool,
    progress: Progress<'_>,
) -> Result<Verified> {
    let sidecar = match require_sidecar {
        true => Some(catalog::required_sidecar(path, name)?),
        false => catalog::read_sidecar(path, name)?,
    };
    let max_bytes = match config.restore_max_bytes {
        0 => u64::MAX,
        max => max,
    };
    let free_where = staging.parent().unwrap_or(staging);
    let limits = Limits { max_bytes, disk_free: free_space(free_where).unwrap_or(u64::MAX) };
    let manifest = archive::unpack(path, name, staging, sidecar.as_deref(), limits, progress)?;
    let snapshot = store::inspect(staging)
        .map_err(|e| Error::damaged(name, format!("the archived store does not open: {e}")))?;
    let counts = counts_of(&snapshot);
    if snapshot.last_seq != manifest.last_seq || counts != manifest.counts {
        return Err(Error::damaged(
            name,
            format!(
                "the archived store holds {counts:?} up to seq {}, the manifest says {:?} up to seq {}",
                snapshot.last_seq, manifest.counts, manifest.last_seq
            ),
        ));
    }
    Ok(Verified {
        name: name.into(),
        sidecar_checked: sidecar.is_some(),
        files: manifest.files.len(),
        // Checked when the manifest was read.
        bytes: manifest.total_size().unwrap_or_default(),
        manifest,
    })
}

/// The most a restore may unpack: RESTORE_MAX_BYTES, and never more than fits on the disk.
pub(super) fn unpack_bound(config: &BackupConfig) -> u64 {
    let free = free_space(&config.storage_dir).unwrap_or(u64::MAX);
    match config.restore_max_bytes {
        0 => free,
        max => max.min(free),
    }
}

/// Bytes available to this user on the filesystem of `path`.
pub fn free_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `stat` a valid out-parameter.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut stat) } == 0)
        .then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}
