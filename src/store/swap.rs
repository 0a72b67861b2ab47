//! Replacing the live database directory with a restored one, and finishing or rolling back
//! a replacement that a crash interrupted.
//!
//! The steps, each safe to crash in:
//! 1. The caller has verified the staged store, taken the pre-restore backup, frozen writes
//!    and closed the gate: no request is running.
//! 2. Close the live database (flushing it).
//! 3. Write the marker `STORAGE_DIR/SWAP` naming the staging and old directories: to a temp
//!    file, fsynced, renamed, so it appears whole or not at all. A crash before the rename
//!    leaves the old store in place, a staging directory and perhaps a temp marker, all of
//!    which startup removes.
//! 4. Rename `db` to the old name. A crash here leaves no `db`: startup sees the marker and
//!    finishes the swap forward (the staged store was verified before step 1).
//! 5. Rename the staging directory to `db`. A crash here leaves the new store in place and
//!    the old one beside it: startup removes the old one.
//! 6. Open the new store; if it does not open, put the old one back.
//! 7. Remove the marker, then the old directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::timeline::{self, Reason, Timeline};
use super::{db_path, load_write_state, open_db, Error, Result, Store};
use crate::fault;

/// Name of the marker file in STORAGE_DIR.
pub const MARKER: &str = "SWAP";
/// Prefix of staging directories in STORAGE_DIR.
pub const STAGING_PREFIX: &str = "staging-";
/// Prefix of checkpoint directories in STORAGE_DIR.
pub const CHECKPOINT_PREFIX: &str = "checkpoint-";
const OLD_PREFIX: &str = "db.old-";
/// Prefix of a replaced store kept as the undo point of a restore until its safety copy is
/// written (`undo-<name of the pre-restore backup>`): never removed as a leftover.
pub const UNDO_PREFIX: &str = "undo-";
/// Prefix of a marker being written; a crash can leave one, which startup removes.
const MARKER_TEMP_PREFIX: &str = ".SWAP.tmp-";
/// Longest marker read: two directory names and a timeline (whose history is bounded).
const MAX_MARKER_BYTES: u64 = 128 << 10;

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    staging: String,
    old: String,
    /// The timeline the restored store starts, written into it once it is open; a crash
    /// before that leaves it here for startup to write.
    #[serde(default)]
    timeline: Option<Timeline>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn sync_dir(dir: &Path) -> Result<()> {
    crate::durable::sync_dir(dir).map_err(io(dir))
}

fn storage_dir(store: &Store) -> PathBuf {
    store.path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

impl Store {
    /// Replaces the live database with the store in `staging` (a directory in STORAGE_DIR).
    /// The caller holds the gate for writing. On error the old store is open again. With
    /// `keep_old_as` (a name starting with [`UNDO_PREFIX`]), the replaced store is moved there
    /// and kept, closed, instead of removed: from the first rename on, a crash leaves it there.
    /// The restored store starts a new timeline (for `reason`), named in the marker, so that
    /// even a crash right after the swap never continues the old one.
    pub fn replace_with(&self, staging: &Path, keep_old_as: Option<&str>, reason: Reason) -> Result<u64> {
        let dir = storage_dir(self);
        let mut state = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        // Read-only: the staged store may fill the disk to the last page.
        let staged = super::inspect(staging)?;
        let timeline = match &staged.timeline {
            Some(current) => current.branch(reason, staged.last_seq),
            None => Timeline::first(reason, staged.last_seq),
        };
        // 2. Close the live database once the last reader has let go of it.
        self.close_exclusive()?;
        let staging_name = staging.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let old_name = match keep_old_as {
            Some(name) if name.starts_with(UNDO_PREFIX) && !dir.join(name).exists() => name.to_owned(),
            Some(name) => {
                return Err(Error::Io {
                    path: dir.join(name),
                    source: std::io::Error::other("the undo point's name is taken; nothing was replaced"),
                })
            }
            None => format!("{OLD_PREFIX}{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f")),
        };
        let old = dir.join(&old_name);
        let marker = dir.join(MARKER);
        let reopen_old = |e: Error| -> Error {
            if let Ok(db) = open_db(&self.path, &self.config) {
                *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(std::sync::Arc::new(db));
            }
            e
        };
        // 3. The marker.
        let body = serde_json::to_vec(&Marker {
            staging: staging_name,
            old: old_name,
            timeline: Some(timeline.clone()),
        })
        .expect("serialisable");
        write_synced(&marker, &body).map_err(reopen_old)?;
        fault::point("swap.after_marker")?;
        // 4. and 5. The renames.
        fs::rename(&self.path, &old).map_err(io(&self.path)).map_err(reopen_old)?;
        sync_dir(&dir)?;
        fault::point("swap.after_old_moved")?;
        if let Err(e) = fs::rename(staging, &self.path).map_err(io(staging)) {
            let _ = fs::rename(&old, &self.path);
            let _ = fs::remove_file(&marker);
            return Err(reopen_old(e));
        }
        sync_dir(&dir)?;
        fault::point("swap.after_new_in_place")?;
        // 6. Open the new store, or put the old one back.
        let opened =
            open_db(&self.path, &self.config).and_then(|db| timeline::write(&db, &timeline).map(|()| db));
        let db = match opened {
            Ok(db) => db,
            Err(e) => {
                let failed = dir.join(format!("{STAGING_PREFIX}failed-{}", std::process::id()));
                let _ = fs::rename(&self.path, &failed);
                let _ = fs::rename(&old, &self.path);
                let _ = fs::remove_file(&marker);
                let _ = fs::remove_dir_all(&failed);
                return Err(reopen_old(e));
            }
        };
        *state = load_write_state(&db)?;
        state.timeline = Some(timeline.clone());
        *self.timeline.write().unwrap_or_else(|e| e.into_inner()) = timeline;
        let last_seq = state.last_seq;
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = Some(std::sync::Arc::new(db));
        // 7. Done: the marker goes first, so a crash now leaves only an old directory behind.
        fs::remove_file(&marker).map_err(io(&marker))?;
        sync_dir(&dir)?;
        self.head.send_modify(|h| {
            h.last_seq = last_seq;
            h.epoch += 1;
        });
        drop(state);
        if keep_old_as.is_some() {
            return Ok(last_seq);
        }
        if let Err(e) = fs::remove_dir_all(&old) {
            tracing::warn!(dir = %old.display(), error = %e, "could not remove the replaced store; remove it by hand");
        }
        Ok(last_seq)
    }

    /// Takes the handle out and waits (up to 30 s) until no reader holds a clone, then flushes
    /// and drops it, which closes the database.
    fn close_exclusive(&self) -> Result<()> {
        let Some(mut db) = self.db.write().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match std::sync::Arc::try_unwrap(db) {
                Ok(db) => {
                    // A flush that fails (a full disk) leaves the store open and serving.
                    if let Err(e) = db.flush_wal(true).and_then(|()| db.flush()) {
                        *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(std::sync::Arc::new(db));
                        return Err(e.into());
                    }
                    drop(db);
                    return Ok(());
                }
                Err(shared) if Instant::now() < deadline => {
                    db = shared;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(shared) => {
                    *self.db.write().unwrap_or_else(|e| e.into_inner()) = Some(shared);
                    return Err(Error::Io {
                        path: self.path.clone(),
                        source: std::io::Error::other(
                            "the store stayed in use for 30 s; nothing was replaced",
                        ),
                    });
                }
            }
        }
    }
}

/// Writes the marker so that it appears whole or not at all: a temp file beside it, fsync,
/// rename, fsync of the folder. Startup decides what to do from it, so a torn marker must
/// never be what a crash leaves.
fn write_synced(path: &Path, body: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!("{MARKER_TEMP_PREFIX}{}", std::process::id()));
    crate::durable::write_atomic(path, &tmp, body, || fault::io_point("swap.marker_written"))
        .map_err(io(path))
}

/// Replaces the closed database directory of `storage_dir` with `staging` (used by
/// migrations, which run before the store opens), under the same marker as a restore.
pub(crate) fn swap_closed(storage_dir: &Path, staging: &Path) -> Result<()> {
    let live = db_path(storage_dir);
    let staging_name = staging.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let old_name = format!("{OLD_PREFIX}{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"));
    let old = storage_dir.join(&old_name);
    let marker = storage_dir.join(MARKER);
    let body = serde_json::to_vec(&Marker { staging: staging_name, old: old_name, timeline: None })
        .expect("serialisable");
    write_synced(&marker, &body)?;
    fs::rename(&live, &old).map_err(io(&live))?;
    sync_dir(storage_dir)?;
    fs::rename(staging, &live).map_err(io(staging))?;
    sync_dir(storage_dir)?;
    fs::remove_file(&marker).map_err(io(&marker))?;
    sync_dir(storage_dir)?;
    if let Err(e) = fs::remove_dir_all(&old) {
        tracing::warn!(dir = %old.display(), error = %e, "could not remove the migrated-from store; remove it by hand");
    }
    Ok(())
}

/// Removes a directory of STORAGE_DIR that is no longer needed (an undo point once copied):
/// renamed first to a leftover name, so that a crash half-way through the removal leaves a
/// leftover that startup removes, never a half-deleted directory under its old name.
pub fn discard(storage_dir: &Path, dir: &Path) -> Result<()> {
    let leftover =
        storage_dir.join(format!("{OLD_PREFIX}discard-{}", chrono::Utc::now().format("%Y%m%d%H%M%S%6f")));
    fs::rename(dir, &leftover).map_err(io(dir))?;
    sync_dir(storage_dir)?;
    fs::remove_dir_all(&leftover).map_err(io(&leftover))
}

/// What startup recovery did.
#[derive(Debug, PartialEq, Eq)]
pub enum Recovery {
    /// No interrupted swap.
    Nothing,
    /// The swap was finished: the restored store is live.
    RolledForward,
    /// The swap was undone: the old store is live.
    RolledBack,
}

/// Finishes or rolls back a swap that a crash interrupted, then removes leftover staging and
/// checkpoint directories. Runs at startup with the storage lock held and the store closed.
pub fn recover(storage_dir: &Path) -> Result<Recovery> {
    let marker_path = storage_dir.join(MARKER);
    let mut outcome = Recovery::Nothing;
    if marker_path.exists() {
        outcome = match read_marker(&marker_path)? {
            Some(marker) => finish(storage_dir, &marker)?,
            None => without_marker(storage_dir)?,
        };
        sync_dir(storage_dir)?;
        fs::remove_file(&marker_path).map_err(io(&marker_path))?;
        sync_dir(storage_dir)?;
    }
    for entry in fs::read_dir(storage_dir).map_err(io(storage_dir))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let leftover = [STAGING_PREFIX, CHECKPOINT_PREFIX, OLD_PREFIX].iter().any(|p| name.starts_with(p));
        if leftover && entry.path().is_dir() {
            tracing::info!(dir = %entry.path().display(), "removing the leftover of an interrupted backup or restore");
            fs::remove_dir_all(entry.path()).map_err(io(&entry.path()))?;
        } else if name.starts_with(MARKER_TEMP_PREFIX) {
            fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
        }
    }
    Ok(outcome)
}

/// The marker, or `None` when it is not a marker this code wrote whole: empty or torn by
/// a crash of a version that wrote it in place, or damaged.
fn read_marker(path: &Path) -> Result<Option<Marker>> {
    use std::io::Read;
    let file = crate::untrusted::open_regular(path).map_err(io(path))?;
    let mut raw = Vec::new();
    file.take(MAX_MARKER_BYTES).read_to_end(&mut raw).map_err(io(path))?;
    let marker = serde_json::from_slice::<Marker>(&raw).ok().filter(|m| {
        // Names of directories beside `db`, never paths.
        let plain = |n: &str| !n.is_empty() && !n.contains(['/', '\\', '\0']) && n != "." && n != "..";
        plain(&m.staging)
            && plain(&m.old)
            && m.staging.starts_with(STAGING_PREFIX)
            && (m.old.starts_with(OLD_PREFIX) || m.old.starts_with(UNDO_PREFIX))
    });
    Ok(marker)
}

/// Recovery from an unreadable marker. Markers are written before the first rename, so
/// with `db` in place the store is whole (the old one, or the new one if both renames were
/// done), and leftovers are removed as usual; without it, the one old directory goes back.
fn without_marker(storage_dir: &Path) -> Result<Recovery> {
    let db = db_path(storage_dir);
    tracing::warn!(dir = %storage_dir.display(), "the swap marker is unreadable (a crash while it was written); deciding from the directories");
    if db.exists() {
        return Ok(Recovery::RolledBack);
    }
    let olds: Vec<PathBuf> = fs::read_dir(storage_dir)
        .map_err(io(storage_dir))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(OLD_PREFIX) && e.path().is_dir())
        .map(|e| e.path())
        .collect();
    match olds.as_slice() {
        [old] => {
            fs::rename(old, &db).map_err(io(old))?;
            Ok(Recovery::RolledBack)
        }
        _ => Err(Error::Corrupt {
            key: storage_dir.join(MARKER).display().to_string(),
            reason: format!(
                "an interrupted restore left an unreadable marker and no single store to go back to in {}; inspect it by hand",
                storage_dir.display()
            ),
        }),
    }
}

/// Writes the timeline a swap that a crash interrupted had started, unless it is there.
fn start_timeline_in(db_dir: &Path, next: &Timeline) -> Result<()> {
    if next.check().is_err() {
        return Ok(());
    }
    let config = super::StoreConfig { sync_writes: true, block_cache_mb: 8 };
    let db = open_db(db_dir, &config)?;
    if timeline::read(&db).ok().flatten().is_some_and(|t| t.id == next.id) {
        return Ok(());
    }
    timeline::write(&db, next)?;
    db.flush()?;
    Ok(())
}

/// Finishes or rolls back the swap a readable marker describes.
fn finish(storage_dir: &Path, marker: &Marker) -> Result<Recovery> {
    let db = db_path(storage_dir);
    let marker_path = storage_dir.join(MARKER);
    let staging = storage_dir.join(&marker.staging);
    let old = storage_dir.join(&marker.old);
    let outcome = match (db.exists(), staging.exists(), old.exists()) {
        // Crashed before the first rename: the old store never moved.
        (true, _, false) => Recovery::RolledBack,
        // Between the renames: the verified staged store goes in.
        (false, true, true) => {
            fs::rename(&staging, &db).map_err(io(&staging))?;
            Recovery::RolledForward
        }
        // After both renames.
        (true, false, true) => Recovery::RolledForward,
        // Only the old one is left: put it back.
        (false, false, true) => {
            fs::rename(&old, &db).map_err(io(&old))?;
            Recovery::RolledBack
        }
        (false, _, false) | (true, true, true) => {
            return Err(Error::Corrupt {
                key: marker_path.display().to_string(),
                reason: format!(
                    "an interrupted restore left an unexpected set of directories in {}; inspect it by hand",
                    storage_dir.display()
                ),
            })
        }
    };
    if outcome == Recovery::RolledForward {
        if let Some(next) = &marker.timeline {
            start_timeline_in(&db, next)?;
        }
    }
    // A kept undo point stays: its safety copy is written after startup.
    if outcome == Recovery::RolledForward && old.exists() && !marker.old.starts_with(UNDO_PREFIX) {
        fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(outcome)
}
