//! The drop-in folder: archives placed in RESTORE_DIR are restored, at startup and while
//! running, then moved to `archived/` (or to `failed/` with a `.error.txt`).
//!
//! A dropped archive is taken up once, whatever crashes:
//! 1. it is claimed: moved (with its sidecar) into the hidden folder `.claimed/`, where
//!    nothing takes it up again;
//! 2. it is restored from there;
//! 3. it is filed under `archived/` or `failed/`.
//!
//! A crash after step 1 leaves it in `.claimed/`; startup files it under `failed/` with a
//! note instead of restoring it again, which could replace writes acknowledged after the
//! first restore.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::restore::{Restored, Source};
use crate::backup::archive::no_progress;
use crate::backup::audit::Actor;
use crate::backup::error::{Error, Result};
use crate::backup::files::{sidecar_path, write_atomic, ARCHIVE_SUFFIX, SIDECAR_SUFFIX};
use crate::backup::BackupManager;

/// Where restored archives go.
pub const ARCHIVED: &str = "archived";
/// Where archives that failed go.
pub const FAILED: &str = "failed";
/// Where a dropped archive waits while it is restored.
pub const CLAIMED: &str = ".claimed";
/// The note beside an archive a crash left claimed.
const INTERRUPTED: &str = "eventvault stopped while restoring or filing this archive, so it is not restored again on its own: the data is as it was before it or as it holds, with what was written since (see the log). Drop it in again to restore it.";

/// Whether `path` is a drop-in candidate: a `*.tar.gz` directly in the folder, not hidden.
pub(super) fn is_candidate(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    !name.starts_with('.') && name.ends_with(ARCHIVE_SUFFIX) && path.is_file()
}

/// The drop-in candidates in `dir`, newest (by mtime) first.
pub fn candidates(dir: &Path) -> Vec<PathBuf> {
    let Ok(read) = fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<(SystemTime, PathBuf)> = read
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_candidate(p))
        .map(|p| (fs::metadata(&p).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH), p))
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, p)| p).collect()
}

impl BackupManager {
    /// Restores one dropped archive and files it under `archived/` or `failed/`.
    pub fn restore_dropped(&self, path: &Path) -> Result<Restored> {
        self.take_up(path, None).unwrap_or_else(|| Err(Error::Busy("another operation".into())))
    }

    /// Claims, restores and files a dropped archive. `None` when it goes back to waiting:
    /// another operation runs, or it changed since `seen` (its copy was still being written).
    pub(super) fn take_up(
        &self,
        path: &Path,
        seen: Option<(u64, Option<SystemTime>)>,
    ) -> Option<Result<Restored>> {
        tracing::info!(archive = ?path, "BackupManager: restoring a dropped archive");
        let claimed = match claim(path) {
            Ok(claimed) => claimed,
            Err(e) => return Some(Err(Error::io(path, e))),
        };
        let result = self.restore_caught(&claimed);
        // Only `crash` means anything here: a crash between the restore and the filing.
        let _ = crate::fault::point("dropin.before_filing");
        let now = fs::metadata(&claimed).ok().map(|meta| (meta.len(), meta.modified().ok()));
        let wait = match &result {
            Err(Error::Busy(running)) => {
                tracing::info!(%running, "drop-in waits for the running operation");
                true
            }
            Err(Error::Damaged { .. }) => seen.is_some() && now != seen,
            _ => false,
        };
        if wait {
            if let Err(e) = move_with_sidecar(&claimed, path) {
                tracing::error!(archive = ?claimed, error = %e, "could not put a claimed drop-in back");
            }
            return None;
        }
        Some(self.file_result(&claimed, result))
    }

    /// At startup: what a crash left claimed is filed under `failed/`, never restored again.
    fn recover_claimed(&self) {
        let restore = &self.config.restore_dir;
        let claimed = restore.join(CLAIMED);
        let Ok(read) = fs::read_dir(&claimed) else { return };
        for entry in read.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // hidden there, as it could be filed nowhere
            }
            if !is_candidate(&path) {
                // A sidecar whose archive was filed already.
                let archive = name.strip_suffix(SIDECAR_SUFFIX).map(|a| claimed.join(a));
                if archive.is_some_and(|a| !a.exists()) {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            // Claiming moves the archive first: its sidecar may still wait in the folder.
            let left = sidecar_path(&restore.join(&name));
            if !restore.join(&name).exists() && left.is_file() && !sidecar_path(&path).exists() {
                let _ = fs::rename(&left, sidecar_path(&path));
            }
            tracing::warn!(archive = ?path, "a dropped archive was being restored or filed when eventvault stopped; filed under failed/");
            self.file(&path, FAILED, Some(INTERRUPTED));
        }
    }

    /// Restores a dropped archive; a defect that panics while reading it is an error about
    /// that file, so the file is filed under `failed/` instead of stopping every start (or the
    /// watcher) while it is there.
    fn restore_caught(&self, path: &Path) -> Result<Restored> {
        let restore = || self.restore_file(path, Source::RestoreFolder, Actor::System, &no_progress);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(restore)).unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            tracing::error!(archive = ?path, panic = %why, "reading a dropped archive panicked");
            Err(Error::damaged(&name, format!("reading it failed on a defect of eventvault ({why})")))
        })
    }

    /// At startup: restores the newest dropped archive and leaves (and logs) the others.
    pub fn restore_dropped_at_startup(&self) -> Option<Result<Restored>> {
        self.recover_claimed();
        let mut found = candidates(&self.config.restore_dir).into_iter();
        let newest = found.next()?;
        let mut left = self.left_at_startup.lock().unwrap_or_else(|e| e.into_inner());
        for other in found {
            tracing::warn!(archive = ?other, "BackupManager: left in place; only the newest dropped archive is restored");
            left.push(other);
        }
        drop(left);
        Some(self.restore_dropped(&newest))
    }
}

/// Longest name filed: with `.error.txt` after it, a note still fits a file name.
const MAX_FILED_NAME: usize = 255 - ".error.txt".len();

/// `name`, or a shorter one that keeps its suffix, of at most [`MAX_FILED_NAME`] bytes.
fn filed_name(name: &str) -> String {
    if name.len() <= MAX_FILED_NAME {
        return name.to_owned();
    }
    let stem = name.strip_suffix(ARCHIVE_SUFFIX).unwrap_or(name);
    let mut end = MAX_FILED_NAME - ARCHIVE_SUFFIX.len();
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ARCHIVE_SUFFIX}", &stem[..end])
}

/// Moves an archive (and its sidecar) into `folder`, never overwriting, and writes
/// `<name>.error.txt` beside it when there is an error.
fn file_away(path: &Path, folder: &Path, error: Option<&str>) -> std::io::Result<()> {
    fs::create_dir_all(folder)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let mut target = folder.join(filed_name(&name));
    if target.exists() {
        let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S%3f");
        target = folder.join(filed_name(&format!("{stamp}-{name}")));
    }
    move_with_sidecar(path, &target)?;
    if let Some(error) = error {
        let mut note = target.clone().into_os_string();
        note.push(".error.txt");
        // Atomically: whoever watches failed/ never reads a half-written note.
        let body = format!("{}\n{error}\n", chrono::Utc::now().to_rfc3339());
        write_atomic(Path::new(&note), body.as_bytes()).map_err(std::io::Error::other)?;
    }
    Ok(())
}

fn move_with_sidecar(path: &Path, target: &Path) -> std::io::Result<()> {
    fs::rename(path, target)?;
    let sidecar = sidecar_path(path);
    if sidecar.symlink_metadata().is_ok() {
        fs::rename(&sidecar, sidecar_path(target))?;
    }
    Ok(())
}

/// Moves a dropped archive (then its sidecar) into `.claimed/`, keeping its name.
fn claim(path: &Path) -> std::io::Result<PathBuf> {
    let folder = path.parent().unwrap_or(Path::new(".")).join(CLAIMED);
    fs::create_dir_all(&folder)?;
    let claimed = folder.join(path.file_name().unwrap_or_default());
    move_with_sidecar(path, &claimed)?;
    Ok(claimed)
}

/// When a file cannot be filed away (say `failed` is not a folder), it is hidden in place: a
/// file left as it was would be taken up again, and a restored one restored over newer data.
fn hide(path: &Path) -> std::io::Result<PathBuf> {
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S%3f");
    let hidden = path.with_file_name(filed_name(&format!(".unfiled-{stamp}-{name}")));
    move_with_sidecar(path, &hidden)?;
    Ok(hidden)
}

impl BackupManager {
    fn file_result(&self, path: &Path, result: Result<Restored>) -> Result<Restored> {
        match &result {
            Ok(_) => self.file(path, ARCHIVED, None),
            Err(e) => self.file(path, FAILED, Some(&e.to_string())),
        }
        result
    }

    /// Files a dropped archive under `folder` (with `note` beside it), or hides it in place.
    fn file(&self, path: &Path, folder: &str, note: Option<&str>) {
        if let Err(e) = file_away(path, &self.config.restore_dir.join(folder), note) {
            match hide(path) {
                Ok(hidden) => {
                    tracing::error!(archive = ?path, error = %e, hidden_as = ?hidden, "could not file the dropped archive away; hid it in place")
                }
                Err(hiding) => {
                    tracing::error!(archive = ?path, error = %e, %hiding, "could not file the dropped archive away nor hide it; the watcher leaves it alone until it changes")
                }
            }
        }
    }
}
