//! Errors of the BackupManager.

use std::path::PathBuf;

/// What can go wrong with backups and restores.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A backup name that is not the plain file name of an archive.
    #[error("invalid backup name {0:?}: give the plain file name of an archive, such as backup_2024-12-27_120000.tar.gz")]
    InvalidName(String),
    /// A label outside `[A-Za-z0-9._-]{1,64}`.
    #[error("invalid label {0:?}: labels match [A-Za-z0-9._-]{{1,64}}")]
    InvalidLabel(String),
    /// No archive of that name.
    #[error("backup {0:?} not found")]
    NotFound(String),
    /// Another backup or restore is running.
    #[error("{0} is running; try again when it has finished")]
    Busy(String),
    /// The archive failed verification or is hostile.
    #[error("archive {name} is damaged or unsafe: {reason}")]
    Damaged {
        /// Archive name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The archive was written by a newer eventvault.
    #[error("archive {name} has format version {found}; this eventvault reads format {supported} at most")]
    NewerFormat {
        /// Archive name.
        name: String,
        /// Its format version.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
    /// The disk is full.
    #[error("not enough disk space at {}: {source}", crate::untrusted::bounded(&path.display().to_string()))]
    DiskFull {
        /// Where the write failed.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A filesystem error, with its path (escaped: file names come from outside).
    #[error("{}: {source}", crate::untrusted::bounded(&path.display().to_string()))]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Restore or purge options that do not fit together or do not fit this backup.
    #[error("{0}")]
    InvalidOptions(String),
    /// A clone's target id is taken.
    #[error("an event with id {0:?} exists already; choose another newEventId")]
    EventExists(String),
    /// The backup an event deletion needs could not be written, so nothing was deleted.
    #[error("event {event_id:?} was not deleted: its backup could not be written: {source}")]
    DeleteBlocked {
        /// The event.
        event_id: String,
        /// Why the backup failed.
        source: Box<Error>,
    },
    /// A document in the store is over the size a backup may hold (only stores written
    /// before documents were capped can hold one), so no backup of it is written.
    #[error("a document of {size} bytes is over the {max} bytes a backup may hold; shrink it first")]
    DocumentTooLarge {
        /// Its size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// An operation failed after part of it was done; `done` says what.
    #[error("{source} ({done})")]
    Incomplete {
        /// What was done before the failure.
        done: String,
        /// The failure.
        source: Box<Error>,
    },
    /// A point-in-time restore's target is out of reach of what the repository holds.
    #[error("{0}")]
    Unreachable(String),
    /// A restore drill found a backup that does not restore (the drill's report says which).
    #[error("restore drill failed: {0}")]
    DrillFailed(String),
    /// The backup repository failed.
    #[error(transparent)]
    Repo(#[from] super::repo::error::Error),
    /// The registry refused a change.
    #[error(transparent)]
    Registry(#[from] crate::registry::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// Result of backup operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An IO error at `path`; a full disk gets its own variant so callers can say so, and
    /// something that is not a regular file where a file was expected is a damaged backup.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if let Some(found) = crate::untrusted::not_regular(&source) {
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            return Error::damaged(
                &name,
                format!("it is {found}, not a regular file; only regular files are read"),
            );
        }
        if source.raw_os_error() == Some(libc::ENOSPC) || source.kind() == std::io::ErrorKind::StorageFull {
            Error::DiskFull { path, source }
        } else {
            Error::Io { path, source }
        }
    }

    /// A damaged-backup error. The reason may quote the file (a parser's message, a name), so
    /// it is escaped and bounded here, once for every caller.
    pub fn damaged(name: &str, reason: impl AsRef<str>) -> Self {
        Error::Damaged {
            name: crate::untrusted::bounded(name),
            reason: crate::untrusted::bounded(reason.as_ref()),
        }
    }
}

impl Error {
    /// Whether the operation was refused rather than failed: the request does not fit
    /// (a name, an option, a backup or event that is not there, something running already).
    /// Nothing is wrong with the service, so no failure is notified.
    pub fn is_refusal(&self) -> bool {
        use super::repo::error::Error as Repo;
        match self {
            Error::InvalidName(_)
            | Error::InvalidLabel(_)
            | Error::NotFound(_)
            | Error::Busy(_)
            | Error::InvalidOptions(_)
            | Error::EventExists(_)
            | Error::Unreachable(_)
            | Error::Repo(Repo::Missing(_) | Repo::Empty(_)) => true,
            Error::Incomplete { .. } | Error::DeleteBlocked { .. } => false,
            Error::Registry(e) => e.is_refusal(),
            Error::Damaged { .. }
            | Error::NewerFormat { .. }
            | Error::DiskFull { .. }
            | Error::Io { .. }
            | Error::DocumentTooLarge { .. }
            | Error::DrillFailed(_)
            | Error::Repo(_)
            | Error::Store(_) => false,
        }
    }
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Store(e.into())
    }
}

impl From<crate::fault::Injected> for Error {
    fn from(e: crate::fault::Injected) -> Self {
        Error::Store(e.into())
    }
}
