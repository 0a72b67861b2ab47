//! Locks on the storage directory.
//!
//! Two locks guard a store, both POSIX record locks (`fcntl`), which the kernel drops when the
//! holding process dies, even on kill -9:
//! - `STORAGE_DIR/eventvault.lock`, held by a server for its whole life, including while a
//!   restore has the database closed, and by offline CLI commands;
//! - `STORAGE_DIR/db/LOCK`, RocksDB's own, held while the database is open.
//!
//! So a lock file whose lock no one holds is stale by definition, and `F_GETLK` tells both
//! whether it is held and by which pid. Closing any descriptor of a file drops every POSIX
//! lock the process holds on it, so the probes here open only files this process does not
//! hold locks on.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::{Error, Result};

/// Name of eventvault's own lock file in STORAGE_DIR.
pub const LOCK_FILE: &str = "eventvault.lock";

/// Holds `STORAGE_DIR/eventvault.lock` until dropped. The file holds the holder's pid while
/// it runs and is emptied on a clean exit, so a pid found at startup means a crash.
#[derive(Debug)]
pub struct DirLock {
    file: File,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Truncate rather than unlink: unlinking a lock file lets two processes lock two
        // different inodes of the same name.
        let _ = self.file.set_len(0);
    }
}

/// Takes the storage directory's lock, or fails with [`Error::Locked`] naming the holder.
/// A lock left by a dead process is taken over, RocksDB's lock file with it, and that is
/// logged.
pub fn acquire(storage_dir: &Path) -> Result<DirLock> {
    let path = storage_dir.join(LOCK_FILE);
    let io = |source| Error::Io { path: path.clone(), source };
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(io(std::io::Error::other("the lock file is not a regular file")));
    }
    // Read through the descriptor that will hold the lock (closing another one would drop
    // it), and only as much as a pid takes.
    let mut previous = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::Read::take(&file, 64), &mut previous);
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)).map_err(io)?;
    let mut lock = flock(libc::F_WRLCK);
    // SAFETY: `file` is open and `lock` is a valid `flock`.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) } != 0 {
        let err = std::io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
            return Err(io(err));
        }
        // SAFETY: as above; F_GETLK fills `lock` with the conflicting lock.
        let pid = (unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) } == 0 && lock.l_pid > 0)
            .then_some(lock.l_pid);
        return Err(Error::Locked { path: storage_dir.to_path_buf(), pid });
    }
    let unclean = !previous.trim().is_empty();
    if unclean {
        tracing::warn!(lock = %path.display(), previous_pid = previous.trim(), "cleared a stale lock: its process is gone");
    }
    file.set_len(0).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    let lock = DirLock { file };
    if unclean {
        clear_stale_db_lock(&super::db_path(storage_dir))?;
    }
    Ok(lock)
}

/// Removes RocksDB's `LOCK` file in `db_dir` when no live process holds it, and logs that.
/// Fails with [`Error::Locked`] when one does.
pub fn clear_stale_db_lock(db_dir: &Path) -> Result<()> {
    let path = db_dir.join("LOCK");
    match holder(&path)? {
        None if path.exists() => {
            std::fs::remove_file(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
            tracing::info!(lock = %path.display(), "removed a stale RocksDB lock file: no process held it");
            Ok(())
        }
        None => Ok(()),
        Some(pid) => Err(Error::Locked { path: db_dir.to_path_buf(), pid }),
    }
}

/// `Ok(None)` when no live process holds a lock on `path` (or it does not exist);
/// `Ok(Some(pid))` when one does (`pid` is `None` where the OS does not say).
pub fn holder(path: &Path) -> Result<Option<Option<i32>>> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path: path.to_path_buf(), source }),
    };
    let mut probe = flock(libc::F_WRLCK);
    // SAFETY: `file` is open for the duration of the call and `probe` is a valid `flock`.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut probe) } != 0 {
        return Err(Error::Io { path: path.to_path_buf(), source: std::io::Error::last_os_error() });
    }
    if i32::from(probe.l_type) == libc::F_UNLCK {
        return Ok(None);
    }
    Ok(Some((probe.l_pid > 0).then_some(probe.l_pid)))
}

/// A whole-file lock request of the given type.
fn flock(kind: i32) -> libc::flock {
    // SAFETY: an all-zero `flock` is a valid value; the fields that matter are set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as _;
    lock.l_whence = libc::SEEK_SET as _;
    lock
}
