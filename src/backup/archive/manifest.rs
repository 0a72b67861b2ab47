//! `manifest.json`, the first entry of every archive.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::{self, EVENTS_COUNTER, RECORDS_COUNTER_PREFIX};

/// Archive format written by this build. Readers dispatch on `formatVersion`; bump it (and add
/// a reader branch) when the layout of archives changes.
pub const CURRENT_FORMAT: u32 = 1;

/// Version of the RocksDB library linked in (the `+` suffix of librocksdb-sys's version; a
/// unit test keeps the two equal).
pub const ROCKSDB_VERSION: &str = "11.8.1";

/// Why a backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// The timeline of the archived store (absent in archives older than timelines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<String>,
}

/// Most files an archive may list. A store has hundreds of files (at 64 MiB per table file,
/// 10,000 files hold over 600 GiB); an archive of tens of thousands is refused at its manifest,
/// before anything is written.
pub const MAX_FILES: usize = 10_000;
/// Longest string a manifest field may hold (names, versions, dates).
const MAX_FIELD_BYTES: usize = 255;
/// Largest sequence number or count a manifest may state: 2^53, the largest integer every
/// JSON client reads exactly.
pub const MAX_COUNT: u64 = 1 << 53;

impl Manifest {
    /// Total size of the archived files; `None` when the sizes a (hostile) manifest states
    /// add up past `u64::MAX`.
    pub fn total_size(&self) -> Option<u64> {
        crate::untrusted::sum(self.files.iter().map(|f| f.size))
    }

    /// What every reader checks before it trusts a manifest: at most
    /// [`MAX_FILES`] files with plain, distinct names and SHA-256
    /// sums, sizes that add up, and short, plain strings (they are shown in listings, answers
    /// and the audit trail). Returns why it is refused.
    pub fn check(&self) -> Result<(), String> {
        let files = self.files.len();
        if files > MAX_FILES {
            return Err(format!("it lists {files} files, more than the {} a store has", MAX_FILES));
        }
        if self.total_size().is_none() {
            return Err("the file sizes it lists add up past 2^64 bytes".into());
        }
        let mut names = std::collections::HashSet::with_capacity(files);
        for f in &self.files {
            if !is_plain(&f.name) || !names.insert(f.name.as_str()) {
                return Err(format!(
                    "the manifest lists an unsafe or repeated file name {}",
                    crate::untrusted::quote(f.name.as_bytes())
                ));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("the checksum of {} is not a SHA-256", f.name));
            }
        }
        let fields = [
            ("name", Some(&self.name)),
            ("appVersion", Some(&self.app_version)),
            ("createdAt", Some(&self.created_at)),
            ("rocksdbVersion", Some(&self.rocksdb_version)),
            ("label", self.label.as_ref()),
        ];
        for (field, value) in fields {
            if let Some(value) = value {
                if value.len() > MAX_FIELD_BYTES || value.chars().any(char::is_control) {
                    return Err(format!("its {field} is not a short, plain string"));
                }
            }
        }
        // Sequence numbers and counts past 2^53 cannot come from a real store; refusing them
        // keeps every later `+ 1` on a restored store from overflowing.
        let numbers = [self.last_seq, self.counts.events, self.counts.bus_messages];
        if numbers.into_iter().chain(self.counts.records.values().copied()).any(|n| n > MAX_COUNT) {
            return Err("its lastSeq or counts are beyond what a store can hold (2^53)".into());
        }
        if self.timeline.as_deref().is_some_and(|t| !store::timeline::is_id(t)) {
            return Err("its timeline is not a timeline id".into());
        }
        // Listings and rotation order archives by it.
        if chrono::DateTime::parse_from_rfc3339(&self.created_at).is_err() {
            return Err("its createdAt is not an RFC 3339 time".into());
        }
        if let Some(bad) = self.counts.records.keys().find(|c| !crate::names::is_collection(c)) {
            return Err(format!(
                "its counts name an invalid collection {}",
                crate::untrusted::quote(bad.as_bytes())
            ));
        }
        Ok(())
    }
}

impl Counts {
    /// What a store snapshot holds, as a manifest counts it.
    pub fn of(snapshot: &store::Snapshot) -> Counts {
        Counts {
            events: snapshot.counters.get(EVENTS_COUNTER).copied().unwrap_or(0),
            records: snapshot
                .counters
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(RECORDS_COUNTER_PREFIX).map(|c| (c.to_owned(), *v)))
                .filter(|(_, v)| *v > 0)
                .collect(),
            bus_messages: snapshot.last_seq,
        }
    }
}

/// Whether a name is a plain file name: no separators, no `..`, nothing hidden or empty.
pub(crate) fn is_plain(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocksdb_version_matches_the_linked_library() {
        let lock = include_str!("../../../Cargo.lock");
        let version = lock
            .split("name = \"librocksdb-sys\"\nversion = \"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("librocksdb-sys in Cargo.lock");
        assert_eq!(version.split('+').nth(1), Some(ROCKSDB_VERSION), "update ROCKSDB_VERSION");
    }

    #[test]
    fn plain_names() {
        for ok in ["000012.sst", "CURRENT", "MANIFEST-000005", "OPTIONS-000007"] {
            assert!(is_plain(ok));
        }
        for bad in ["", ".", "..", "a/b", "../x", "/etc/passwd", "a\\b"] {
            assert!(!is_plain(bad), "{bad:?}");
        }
    }
}
