//! `manifest.json`, the first entry of every archive.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Archive format written by this build. Readers dispatch on `formatVersion`; bump it (and add
/// a reader branch) when the layout of archives changes.
pub const CURRENT_FORMAT: u32 = 1;

/// Version of the RocksDB library linked in (the `+` suffix of librocksdb-sys's version; a
/// unit test keeps the two equal).
pub const ROCKSDB_VERSION: &str = "11.8.1";

/// Why a backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// `POST /api/backup/create`.
    Manual,
    /// The hourly schedule.
    Scheduled,
    /// Taken automatically before a restore, so that it can be undone.
    PreRestore,
    /// Taken at startup when the newest archive was older than the interval.
    Startup,
    /// `eventvault backup create`.
    Cli,
    /// Taken at startup before the store's format is migrated.
    PreMigration,
    /// An event backup taken before the event was deleted.
    PreDelete,
}

/// One file of the archived checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Plain file name; stored in the archive as `db/<name>`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the contents, hex.
    pub sha256: String,
}

/// What the archived store holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Number of events.
    pub events: u64,
    /// Records per collection (over all events).
    pub records: BTreeMap<String, u64>,
    /// Number of bus messages.
    pub bus_messages: u64,
}

/// The manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Archive format version.
    pub format_version: u32,
    /// eventvault version that wrote it.
    pub app_version: String,
    /// Archive file name.
    pub name: String,
    /// Optional label.
    pub label: Option<String>,
    /// Why it was taken.
    pub trigger: Trigger,
    /// When, RFC 3339 UTC.
    pub created_at: String,
    /// Exempt from rotation.
    #[serde(default)]
    pub keep: bool,
    /// Bus sequence number of the newest message in the archive.
    pub last_seq: u64,
    /// Store format version of the archived store.
    pub store_format: u32,
    /// Counts of what the store holds.
    pub counts: Counts,
    /// RocksDB version that wrote the files.
    pub rocksdb_version: String,
    /// Every file, with its size and checksum.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Total size of the archived files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocksdb_version_matches_the_linked_library() {
        let lock = include_str!("../../Cargo.lock");
        let version = lock
            .split("name = \"librocksdb-sys\"\nversion = \"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("librocksdb-sys in Cargo.lock");
        assert_eq!(version.split('+').nth(1), Some(ROCKSDB_VERSION), "update ROCKSDB_VERSION");
    }
}
