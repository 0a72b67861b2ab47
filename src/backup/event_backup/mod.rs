//! Event backups: one event and all its records as gzip-compressed JSON, in the structure of
//! the seed's deletion backups:
//!
//! ```text
//! {"metadata": {...}, "eventDocument": {...}, "collections": {"name": [record, ...], ...}}
//! ```
//!
//! Writing streams from a snapshot of the event; reading streams too (a visitor sees each
//! record as the raw JSON that was stored), so neither holds an event in memory. `metadata`
//! comes first so that listing reads only the start of a file. Files are hostile input:
//! every id and collection name is checked before it becomes part of a key.

pub mod read;
pub mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use crate::backup::files::{EVENT_DIR, EVENT_SUFFIX};
pub use read::{private_copy, read, read_from, read_metadata, read_verified, CheckOnly, Visit};
pub use write::{write, EventWritten};

use crate::backup::archive::manifest::{Trigger, MAX_COUNT};
use crate::backup::error::{Error, Result};
use crate::names;

/// Most bytes a reader takes in for one document: the registry's largest document, plus room
/// for the reader's read-ahead and the JSON around it.
pub const MAX_DOCUMENT_BYTES: u64 = crate::registry::MAX_DOCUMENT_BYTES as u64 + (1 << 20);
/// Most bytes the metadata may take (with the reader's read-ahead): it names an event, its
/// counts and a few dates.
const MAX_METADATA_BYTES: u64 = (4 << 20) + (1 << 16);
/// Longest `eventName` kept in the metadata (the event document holds the whole name).
const MAX_EVENT_NAME_BYTES: usize = 4096;
/// Layout version of event backups this build writes; readers dispatch on `formatVersion`.
pub const EVENT_FORMAT: u32 = 1;
/// The seed's `version` field, kept for its users' scripts.
const SEED_VERSION: &str = "1.0";

/// The `metadata` object of an event backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventMetadata {
    /// The event backed up.
    pub event_id: String,
    /// Its `name` field, when it has a string one.
    pub event_name: Option<String>,
    /// File name without `.json.gz`.
    pub backup_id: String,
    /// When, RFC 3339 UTC.
    pub backup_date: String,
    /// The seed's version string.
    pub version: String,
    /// Layout version.
    pub format_version: u32,
    /// Why it was taken.
    pub trigger: Trigger,
    /// Records per collection.
    pub counts: BTreeMap<String, u64>,
    /// Bus lastSeq when the event was read.
    pub last_seq: u64,
    /// eventvault version that wrote it.
    pub app_version: String,
}

/// The folder of event backups.
pub fn dir(backup_dir: &Path) -> PathBuf {
    crate::backup::files::event_dir(backup_dir)
}

/// Checks what a file says about itself before anything acts on it.
pub fn check_metadata(name: &str, m: &EventMetadata) -> Result<()> {
    if m.format_version > EVENT_FORMAT {
        return Err(Error::NewerFormat {
            name: name.to_owned(),
            found: m.format_version,
            supported: EVENT_FORMAT,
        });
    }
    if m.format_version != EVENT_FORMAT {
        return Err(Error::damaged(name, format!("unknown formatVersion {}", m.format_version)));
    }
    if !names::is_id(&m.event_id) {
        let quoted = crate::untrusted::quote(m.event_id.as_bytes());
        return Err(Error::damaged(name, format!("its eventId {quoted} is not a valid id")));
    }
    if m.event_name.as_ref().is_some_and(|n| n.len() > MAX_EVENT_NAME_BYTES) {
        return Err(Error::damaged(name, "its eventName is longer than 4 KiB"));
    }
    let fields = [&m.backup_id, &m.backup_date, &m.version, &m.app_version];
    if fields.iter().any(|f| f.len() > 255 || f.chars().any(char::is_control)) {
        return Err(Error::damaged(name, "its metadata holds a field that is not a short, plain string"));
    }
    if m.last_seq > MAX_COUNT || m.counts.values().any(|n| *n > MAX_COUNT) {
        return Err(Error::damaged(name, "its lastSeq or counts are beyond what a store can hold (2^53)"));
    }
    if let Some(bad) = m.counts.keys().find(|c| !names::is_collection(c)) {
        let quoted = crate::untrusted::quote(bad.as_bytes());
        return Err(Error::damaged(name, format!("its counts name an invalid collection {quoted}")));
    }
    Ok(())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The `id` of a stored document: a JSON object whose `id` is a valid id.
pub fn document_id(doc: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    // serde reads a struct from an array too: only an object is a document.
    if !doc.get().starts_with('{') {
        return None;
    }
    serde_json::from_str::<Id>(doc.get()).ok().map(|d| d.id).filter(|id| names::is_id(id))
}
