//! Verifying an archive completely: unpacked and checked file by file ([`super::unpack`]),
//! then opened as a store whose counts must equal the manifest's.

use std::path::Path;

use serde::Serialize;

use super::manifest::{Counts, Manifest};
use super::read::{unpack, Limits};
use super::Progress;
use crate::backup::config::BackupConfig;
use crate::backup::error::{Error, Result};
use crate::backup::files::{self, free_space, TEMP_PREFIX};
use crate::store;

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

/// Verifies an archive of BACKUP_DIR completely: the sidecar, every file's checksum, that
/// the store opens, and that its counts equal the manifest's. It needs no store, so the CLI
/// runs it while a server is up; it writes only to a temporary directory under BACKUP_DIR,
/// removed afterwards.
pub fn verify(config: &BackupConfig, name: &str, progress: Progress<'_>) -> Result<Verified> {
    files::check_name(name)?;
    let path = config.backup_dir.join(name);
    if !path.is_file() {
        return Err(Error::NotFound(name.into()));
    }
    // Unique per call: dry runs and the CLI may verify beside each other.
    let staging = config.backup_dir.join(format!("{TEMP_PREFIX}verify-{}", files::unique()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = verify_into(config, &path, name, &staging, false, progress);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// Verifies the archive at `path` into the new directory `staging`, which holds the store
/// afterwards (the caller removes it). The sidecar is checked when it is there and required
/// only when `require_sidecar`.
pub fn verify_into(
    config: &BackupConfig,
    path: &Path,
    name: &str,
    staging: &Path,
    require_sidecar: bool,
    progress: Progress<'_>,
) -> Result<Verified> {
    let sidecar = match require_sidecar {
        true => Some(files::required_sidecar(path, name)?),
        false => files::read_sidecar(path, name)?,
    };
    let max_bytes = match config.restore_max_bytes {
        0 => u64::MAX,
        max => max,
    };
    let free_where = staging.parent().unwrap_or(staging);
    let limits = Limits { max_bytes, disk_free: free_space(free_where).unwrap_or(u64::MAX) };
    let manifest = unpack(path, name, staging, sidecar.as_deref(), limits, progress)?;
    let snapshot = store::inspect(staging)
        .map_err(|e| Error::damaged(name, format!("the archived store does not open: {e}")))?;
    let counts = Counts::of(&snapshot);
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
