//! What BACKUP_DIR holds: backups of both kinds by id, their listing (cached, see [`scan`]),
//! the catalogue's filter, new names, deletion and the clean-up of crashed writes.

pub mod scan;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use super::files::{
    check_id, check_name, id_of, mb, read_sidecar, required_sidecar, sidecar_line, sidecar_path,
    ARCHIVE_SUFFIX, EVENT_SUFFIX, SIDECAR_SUFFIX, TEMP_PREFIX,
};
pub use scan::Catalog;

use super::archive::manifest::{Counts, Manifest, Trigger};
use super::error::{Error, Result};
use super::event_backup::EventMetadata;
use super::files::{event_dir, sync_dir};

/// Where a backup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// A file in BACKUP_DIR.
    Local,
    /// A manifest in the backup repository.
    Repo,
}

/// The two kinds of backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A whole-store archive (`*.tar.gz` in BACKUP_DIR).
    Full,
    /// One event (`event_deletions/*.json.gz`).
    Event,
}

impl Kind {
    /// `full` or `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Event => "event",
        }
    }
}

/// Finds the backup an id names: its kind, file name and path.
pub fn resolve(backup_dir: &Path, id: &str) -> Result<(Kind, String, PathBuf)> {
    check_id(id)?;
    let events = event_dir(backup_dir);
    let candidates = if id.ends_with(ARCHIVE_SUFFIX) {
        vec![(Kind::Full, id.to_owned(), backup_dir.join(id))]
    } else if id.ends_with(EVENT_SUFFIX) {
        vec![(Kind::Event, id.to_owned(), events.join(id))]
    } else {
        let (full, ev) = (format!("{id}{ARCHIVE_SUFFIX}"), format!("{id}{EVENT_SUFFIX}"));
        vec![(Kind::Full, full.clone(), backup_dir.join(full)), (Kind::Event, ev.clone(), events.join(ev))]
    };
    candidates.into_iter().find(|(_, _, path)| path.is_file()).ok_or_else(|| Error::NotFound(id.to_owned()))
}

/// Which backups a listing shows: the `kind` and `eventId` of `GET /api/backups`, and the
/// `--kind` and `--event` of `eventvault backup list`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only backups of this kind.
    pub kind: Option<Kind>,
    /// Only the backups of this event.
    pub event_id: Option<String>,
}

impl Filter {
    /// The kind a request names: `full` or `event`; empty or absent is any kind.
    pub fn parse_kind(kind: Option<&str>) -> Result<Option<Kind>> {
        match kind {
            None | Some("") => Ok(None),
            Some("full") => Ok(Some(Kind::Full)),
            Some("event") => Ok(Some(Kind::Event)),
            Some(other) => Err(Error::InvalidOptions(format!("kind must be full or event, not {other:?}"))),
        }
    }

    /// The event a request names, which must be a valid id.
    pub fn check_event_id(event_id: Option<String>) -> Result<Option<String>> {
        match event_id {
            Some(id) if !crate::names::is_id(&id) => {
                Err(Error::InvalidOptions(format!("invalid eventId {id:?}: ids match [A-Za-z0-9_-]{{1,64}}")))
            }
            id => Ok(id),
        }
    }

    /// Whether `item` passes.
    pub fn matches(&self, item: &Item) -> bool {
        self.kind.is_none_or(|k| item.kind == k)
            && (self.event_id.is_none() || item.event_id == self.event_id)
    }
}

/// What a backup holds, in one shape for both kinds.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemCounts {
    /// Events.
    pub events: u64,
    /// Records per collection.
    pub records: std::collections::BTreeMap<String, u64>,
    /// Bus messages (whole-store archives only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus_messages: Option<u64>,
}

impl From<&Counts> for ItemCounts {
    /// What a whole-store backup's manifest counts.
    fn from(counts: &Counts) -> Self {
        ItemCounts {
            events: counts.events,
            records: counts.records.clone(),
            bus_messages: Some(counts.bus_messages),
        }
    }
}

/// One backup of either kind, as `GET /api/backups` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    /// File name without its suffix.
    pub id: String,
    /// `full` or `event`.
    pub kind: Kind,
    /// `local` (BACKUP_DIR) or `repo` (the backup repository).
    pub location: Place,
    /// File name.
    pub name: String,
    /// When it was taken.
    pub created: String,
    /// Size in bytes.
    pub size: u64,
    /// Size in MiB.
    #[serde(rename = "sizeMB")]
    pub size_mb: String,
    /// The event of an event backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_name: Option<String>,
    /// Label of an archive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Why it was taken; `null` when it cannot be read.
    pub trigger: Option<Trigger>,
    /// What it holds.
    pub counts: ItemCounts,
    /// Exempt from rotation.
    pub keep: bool,
    /// Why it cannot be read, for a damaged file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    pub(crate) metadata: Option<Arc<EventMetadata>>,
}

impl Item {
    /// The item of a backup in the repository, from its manifest.
    pub fn repo(manifest: &Manifest, size: u64) -> Item {
        Item {
            id: id_of(&manifest.name).to_owned(),
            kind: Kind::Full,
            location: Place::Repo,
            name: manifest.name.clone(),
            created: manifest.created_at.clone(),
            size,
            size_mb: mb(size),
            event_id: None,
            event_name: None,
            label: manifest.label.clone(),
            trigger: Some(manifest.trigger),
            counts: ItemCounts::from(&manifest.counts),
            keep: manifest.keep,
            error: None,
            metadata: None,
        }
    }

    /// The item of a backup in the repository whose manifest cannot be read.
    pub fn repo_damaged(id: &str, error: String) -> Item {
        Item {
            id: id.to_owned(),
            kind: Kind::Full,
            location: Place::Repo,
            name: format!("{id}{ARCHIVE_SUFFIX}"),
            created: String::new(),
            size: 0,
            size_mb: mb(0),
            event_id: None,
            event_name: None,
            label: None,
            trigger: None,
            counts: ItemCounts::default(),
            keep: false,
            error: Some(error),
            metadata: None,
        }
    }

    /// The item of a whole-store archive.
    pub fn full(e: &Entry) -> Item {
        let counts = e.manifest.as_ref().map(|m| ItemCounts::from(&m.counts)).unwrap_or_default();
        Item {
            id: id_of(&e.name).to_owned(),
            kind: Kind::Full,
            location: Place::Local,
            name: e.name.clone(),
            created: e.created.clone(),
            size: e.size,
            size_mb: e.size_mb.clone(),
            event_id: None,
            event_name: None,
            label: e.label.clone(),
            trigger: e.trigger,
            counts,
            keep: e.keep,
            error: e.error.clone(),
            metadata: None,
        }
    }

    fn event(
        name: String,
        size: u64,
        mtime: String,
        metadata: std::result::Result<Arc<EventMetadata>, String>,
    ) -> Item {
        let mut item = Item {
            id: id_of(&name).to_owned(),
            kind: Kind::Event,
            location: Place::Local,
            name,
            created: mtime,
            size,
            size_mb: mb(size),
            event_id: None,
            event_name: None,
            label: None,
            trigger: None,
            counts: ItemCounts::default(),
            keep: false,
            error: None,
            metadata: None,
        };
        match metadata {
            Ok(m) => {
                item.created = m.backup_date.clone();
                item.event_id = Some(m.event_id.clone());
                item.event_name = m.event_name.clone();
                item.trigger = Some(m.trigger);
                item.counts = ItemCounts { events: 1, records: m.counts.clone(), bus_messages: None };
                item.metadata = Some(m);
            }
            Err(e) => item.error = Some(e),
        }
        item
    }
}

/// Checks a label.
pub fn check_label(label: &str) -> Result<()> {
    if crate::names::is_token(label, 64) {
        Ok(())
    } else {
        Err(Error::InvalidLabel(label.to_owned()))
    }
}

/// The time a name of [`new_name`] was made at (to the second), when it is one.
pub fn time_of_name(name: &str) -> Option<DateTime<Utc>> {
    let stamp = name.strip_prefix("backup_")?.get(..17)?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d_%H%M%S").ok().map(|t| t.and_utc())
}

/// A fresh archive name: `backup_YYYY-MM-DD_HHMMSS[_label].tar.gz` in UTC, with `-N` after the
/// time when that name (or a backup being written under it) exists already.
pub fn new_name(dir: &Path, now: DateTime<Utc>, label: Option<&str>) -> String {
    let stamp = now.format("%Y-%m-%d_%H%M%S").to_string();
    let label = label.map(|l| format!("_{l}")).unwrap_or_default();
    (1..)
        .map(|n| match n {
            1 => format!("backup_{stamp}{label}{ARCHIVE_SUFFIX}"),
            n => format!("backup_{stamp}-{n}{label}{ARCHIVE_SUFFIX}"),
        })
        .find(|name| !dir.join(name).exists() && !dir.join(format!("{TEMP_PREFIX}{name}")).exists())
        .expect("an unused name exists")
}

/// One archive in BACKUP_DIR, as the list routes show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// File name.
    pub name: String,
    /// Full path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Size in MiB, two decimals (a string, as the seed's API has it).
    #[serde(rename = "sizeMB")]
    pub size_mb: String,
    /// When it was created (the manifest's `createdAt`, else the file's mtime).
    pub created: String,
    /// Label.
    pub label: Option<String>,
    /// Why it was taken; `null` when the manifest cannot be read.
    pub trigger: Option<Trigger>,
    /// Bus lastSeq of the archived store.
    pub last_seq: Option<u64>,
    /// Exempt from rotation.
    pub keep: bool,
    /// Why the manifest could not be read, for a damaged archive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    pub(crate) manifest: Option<Arc<Manifest>>,
}

/// Deletes an archive and its sidecar.
pub fn delete(dir: &Path, name: &str) -> Result<()> {
    check_id(name)?;
    let path = dir.join(name);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound(name.to_owned())),
        Err(e) => return Err(Error::io(&path, e)),
    }
    let sidecar = sidecar_path(&path);
    match fs::remove_file(&sidecar) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&sidecar, e)),
    }
    sync_dir(dir)
}

/// Removes leftovers of backups that crashed: temp files and sidecars without an archive.
pub fn clean_leftovers(dir: &Path) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let Ok(read) = fs::read_dir(dir) else { return Ok(removed) };
    for item in read.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        let orphan_sidecar = name.strip_suffix(SIDECAR_SUFFIX).is_some_and(|file| {
            (file.ends_with(ARCHIVE_SUFFIX) || file.ends_with(EVENT_SUFFIX)) && !dir.join(file).exists()
        });
        if name.starts_with(TEMP_PREFIX) || orphan_sidecar {
            let path = item.path();
            let removed_ok = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
            removed_ok.map_err(|e| Error::io(&path, e))?;
            removed.push(name);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("backup_2024-12-27_120000.tar.gz").is_ok());
        assert!(check_name("anything.tar.gz").is_ok());
        for bad in ["../x.tar.gz", "a/b.tar.gz", "x.zip", ".tar.gz", ".tmp-x.tar.gz", "..tar.gz", "x.tar.gz/"]
        {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unique_names_in_the_same_second() {
        let dir = tempfile::tempdir().unwrap();
        let now = DateTime::parse_from_rfc3339("2024-12-27T12:00:00Z").unwrap().with_timezone(&Utc);
        let first = new_name(dir.path(), now, Some("nightly"));
        assert_eq!(first, "backup_2024-12-27_120000_nightly.tar.gz");
        fs::write(dir.path().join(&first), "").unwrap();
        assert_eq!(new_name(dir.path(), now, Some("nightly")), "backup_2024-12-27_120000-2_nightly.tar.gz");
        assert_eq!(new_name(dir.path(), now, None), "backup_2024-12-27_120000.tar.gz");
    }
}
