//! Errors of the store.

use std::path::PathBuf;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RocksDB reported an error.
    #[error("RocksDB: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// The store was written by a newer eventvault.
    #[error(
        "the store at {path} has format version {found}, but this eventvault supports format \
         {supported} at most; run a newer eventvault on it"
    )]
    NewerFormat {
        /// Store directory.
        path: PathBuf,
        /// Version found in the store.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
    /// The directory holds a RocksDB store that is not eventvault's.
    #[error("the directory {path} holds a RocksDB store that is not eventvault's: {reason}")]
    Foreign {
        /// Store directory.
        path: PathBuf,
        /// What did not match.
        reason: String,
    },
    /// The store is closed (shutting down, or swapped during a restore).
    #[error("the store is closed")]
    Closed,
    /// A stored value could not be decoded.
    #[error("corrupt value under key {key}: {reason}")]
    Corrupt {
        /// The key, lossily printed.
        key: String,
        /// Why it did not decode.
        reason: String,
    },
    /// Another live process holds the store.
    #[error(
        "the store at {} is in use by another process{}; stop it first (or point STORAGE_DIR elsewhere)",
        path.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked {
        /// Store directory.
        path: PathBuf,
        /// The holder's pid, where the OS tells it.
        pid: Option<i32>,
    },
    /// Writes are paused while a restore replaces the store.
    #[error("writes are paused while a restore replaces the store; retry shortly")]
    Frozen,
    /// A fault injected by a test.
    #[error(transparent)]
    Fault(#[from] crate::fault::Injected),
    /// A filesystem error, with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
