//! The archives in BACKUP_DIR: names, sidecars, listing and rotation.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::archive;
use super::event::{self, EventMetadata, EVENT_SUFFIX};
use super::manifest::{Manifest, Trigger};
use super::{Error, Result};

/// Suffix of archives.
pub const ARCHIVE_SUFFIX: &str = ".tar.gz";
/// Suffix of checksum sidecars (after the archive's name).
pub const SIDECAR_SUFFIX: &str = ".sha256";
/// Prefix of files being written; never listed, removed at startup.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Checks that `name` is the plain file name of an archive.
pub fn check_name(name: &str) -> Result<()> {
    let plain = !name.contains(['/', '\\', '\0']) && !name.contains("..") && !name.starts_with('.');
    if plain && name.len() <= 255 && name.len() > ARCHIVE_SUFFIX.len() && name.ends_with(ARCHIVE_SUFFIX) {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_owned()))
    }
}

/// The two kinds of backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// Checks a backup id: a plain file name, with or without `.tar.gz` / `.json.gz`.
pub fn check_id(id: &str) -> Result<()> {
    let plain = !id.contains(['/', '\\', '\0']) && !id.contains("..") && !id.starts_with('.');
    if plain && !id.is_empty() && id.len() <= 255 && !id.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(Error::InvalidName(id.to_owned()))
    }
}

/// The id of a backup file: its name without the suffix.
pub fn id_of(name: &str) -> &str {
    name.strip_suffix(ARCHIVE_SUFFIX).or_else(|| name.strip_suffix(EVENT_SUFFIX)).unwrap_or(name)
}

/// Finds the backup an id names: its kind, file name and path.
pub fn resolve(backup_dir: &Path, id: &str) -> Result<(Kind, String, PathBuf)> {
    check_id(id)?;
    let events = event::dir(backup_dir);
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

/// What a backup holds, in one shape for both kinds.
#[derive(Debug, Clone, Default, Serialize)]
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

/// One backup of either kind, as `GET /api/backups` lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    /// File name without its suffix.
    pub id: String,
    /// `full` or `event`.
    pub kind: Kind,
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
    /// The item of a whole-store archive.
    pub fn full(e: &Entry) -> Item {
        let counts = e
            .manifest
            .as_ref()
            .map(|m| ItemCounts {
                events: m.counts.events,
                records: m.counts.records.clone(),
                bus_messages: Some(m.counts.bus_messages),
            })
            .unwrap_or_default();
        Item {
            id: id_of(&e.name).to_owned(),
            kind: Kind::Full,
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

/// The sidecar path of an archive.
pub fn sidecar_path(archive: &Path) -> PathBuf {
    let mut name = archive.file_name().unwrap_or_default().to_os_string();
    name.push(SIDECAR_SUFFIX);
    archive.with_file_name(name)
}

/// The sidecar's contents: `sha256sum` format, naming the archive by its bare file name.
pub fn sidecar_line(sha256: &str, name: &str) -> String {
    format!("{sha256}  {name}\n")
}

/// Longest sidecar read: a hash, two spaces, a name of at most 255 bytes and a newline.
const MAX_SIDECAR_BYTES: u64 = 1024;

/// Reads the SHA-256 a sidecar states for `name`: `None` when there is no sidecar.
pub fn read_sidecar(archive: &Path, name: &str) -> Result<Option<String>> {
    let path = sidecar_path(archive);
    let file = match crate::untrusted::open_regular(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if crate::untrusted::not_regular(&e).is_some() => {
            return Err(Error::damaged(name, format!("its .sha256 sidecar: {e}")))
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    // A sidecar is one line; more is not a sidecar of ours.
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_SIDECAR_BYTES + 1), &mut raw)
        .map_err(|e| Error::io(&path, e))?;
    let text = match String::from_utf8(raw) {
        Ok(text) if (text.len() as u64) <= MAX_SIDECAR_BYTES => text,
        _ => return Err(Error::damaged(name, "its .sha256 sidecar is not in sha256sum format")),
    };
    let mut parts = text.split_whitespace();
    let (Some(hash), Some(file)) = (parts.next(), parts.next()) else {
        return Err(Error::damaged(name, "its .sha256 sidecar is not in sha256sum format"));
    };
    if hash.len() != 64
        || !hash.bytes().all(|b| b.is_ascii_hexdigit())
        || file.trim_start_matches('*') != name
    {
        return Err(Error::damaged(name, "its .sha256 sidecar names another file or holds no SHA-256"));
    }
    Ok(Some(hash.to_ascii_lowercase()))
}

/// The SHA-256 a sidecar states for `name`, which must be there.
pub fn required_sidecar(archive: &Path, name: &str) -> Result<String> {
    read_sidecar(archive, name)?
        .ok_or_else(|| Error::damaged(name, format!("its sidecar {name}.sha256 is missing")))
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

/// Formats bytes as MiB with two decimals.
pub fn mb(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / (1024.0 * 1024.0))
}

/// What was read from a file earlier, valid while its size and mtime are unchanged.
type Cached<T> = (u64, SystemTime, Result<Arc<T>, String>);

/// A file of a backup folder and what was read from it.
struct Scanned<T> {
    path: PathBuf,
    name: String,
    size: u64,
    modified: SystemTime,
    parsed: Result<Arc<T>, String>,
}

/// Lists the files of `dir` that `wanted` accepts, reading each with `read` unless `cache`
/// holds it already for the same size and mtime. Forgets files that are gone.
fn scan<T>(
    dir: &Path,
    cache: &Mutex<HashMap<String, Cached<T>>>,
    wanted: impl Fn(&str) -> bool,
    read: impl Fn(&Path, &str) -> Result<T>,
) -> Result<Vec<Scanned<T>>> {
    let mut found = Vec::new();
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(Error::io(dir, e)),
    };
    // The lock is held for look-ups only, never while a file is read: a slow or large file
    // must not hold up listings (and the health check) that need only what is cached.
    let lock = || cache.lock().unwrap_or_else(|e| e.into_inner());
    for item in listing {
        let item = item.map_err(|e| Error::io(dir, e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if !wanted(&name) {
            continue;
        }
        let Ok(meta) = item.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let cached = lock()
            .get(&name)
            .filter(|(size, mtime, _)| *size == meta.len() && *mtime == modified)
            .map(|(_, _, parsed)| parsed.clone());
        let parsed = match cached {
            Some(parsed) => parsed,
            None => {
                let parsed = read(&item.path(), &name).map(Arc::new).map_err(|e| match e {
                    // The listing names the file already: the reason alone.
                    Error::Damaged { reason, .. } => reason,
                    other => other.to_string(),
                });
                lock().insert(name.clone(), (meta.len(), modified, parsed.clone()));
                parsed
            }
        };
        found.push(Scanned { path: item.path(), name, size: meta.len(), modified, parsed });
    }
    lock().retain(|name, _| found.iter().any(|f| f.name == *name));
    Ok(found)
}

/// Lists BACKUP_DIR, caching manifests by (name, size, mtime) so that listing stays cheap.
#[derive(Debug, Default)]
pub struct Catalog {
    cache: Mutex<HashMap<String, Cached<Manifest>>>,
    events: Mutex<HashMap<String, Cached<EventMetadata>>>,
}

impl Catalog {
    /// Every archive in `dir`, newest first.
    pub fn list(&self, dir: &Path) -> Result<Vec<Entry>> {
        let is_archive = |name: &str| check_name(name).is_ok();
        let read = |path: &Path, name: &str| archive::read_manifest(path, name);
        let mut entries: Vec<Entry> = scan(dir, &self.cache, is_archive, read)?
            .into_iter()
            .map(|f| entry(&f.path, f.name, f.size, f.modified, f.parsed))
            .collect();
        entries.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.name.cmp(&a.name)));
        Ok(entries)
    }

    /// Every event backup in `dir/event_deletions`, newest first.
    pub fn list_events(&self, dir: &Path) -> Result<Vec<Item>> {
        let is_event = |name: &str| check_id(name).is_ok() && name.ends_with(EVENT_SUFFIX);
        let read = |path: &Path, name: &str| {
            event::read_metadata(path, name).and_then(|m| event::check_metadata(name, &m).map(|()| m))
        };
        let mut items: Vec<Item> = scan(&event::dir(dir), &self.events, is_event, read)?
            .into_iter()
            .map(|f| {
                let mtime = DateTime::<Utc>::from(f.modified).to_rfc3339_opts(SecondsFormat::Millis, true);
                Item::event(f.name, f.size, mtime, f.parsed)
            })
            .collect();
        items.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.name.cmp(&a.name)));
        Ok(items)
    }

    /// The details of a backup of either kind: for an archive its manifest, for an event
    /// backup its metadata, beside the catalogue's fields.
    pub fn details(&self, dir: &Path, id: &str) -> Result<serde_json::Value> {
        let (kind, name, _) = resolve(dir, id)?;
        let (item, manifest) = match kind {
            Kind::Full => {
                let entry = self.get(dir, &name)?;
                (Item::full(&entry), entry.manifest)
            }
            Kind::Event => {
                let items = self.list_events(dir)?;
                let item = items.into_iter().find(|i| i.name == name);
                (item.ok_or_else(|| Error::NotFound(id.to_owned()))?, None)
            }
        };
        if let Some(error) = &item.error {
            return Err(Error::damaged(&name, error.clone()));
        }
        let mut value = match manifest {
            Some(manifest) => serde_json::to_value(&*manifest).expect("serialisable"),
            None => serde_json::json!({"metadata": item.metadata.as_deref()}),
        };
        let item = serde_json::to_value(&item).expect("serialisable");
        for (k, v) in item.as_object().into_iter().flatten() {
            value[k] = v.clone();
        }
        Ok(value)
    }

    /// Backups of both kinds, newest first.
    pub fn list_all(&self, dir: &Path) -> Result<Vec<Item>> {
        let mut items: Vec<Item> = self.list(dir)?.iter().map(Item::full).collect();
        items.extend(self.list_events(dir)?);
        items.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.name.cmp(&a.name)));
        Ok(items)
    }

    /// The archive named `name` in `dir`.
    pub fn get(&self, dir: &Path, name: &str) -> Result<Entry> {
        check_name(name)?;
        self.list(dir)?.into_iter().find(|e| e.name == name).ok_or_else(|| Error::NotFound(name.to_owned()))
    }
}

fn entry(
    path: &Path,
    name: String,
    size: u64,
    modified: SystemTime,
    manifest: Result<Arc<Manifest>, String>,
) -> Entry {
    let mtime = DateTime::<Utc>::from(modified).to_rfc3339_opts(SecondsFormat::Millis, true);
    match manifest {
        Ok(m) => Entry {
            name,
            path: path.display().to_string(),
            size,
            size_mb: mb(size),
            created: m.created_at.clone(),
            label: m.label.clone(),
            trigger: Some(m.trigger),
            last_seq: Some(m.last_seq),
            keep: m.keep,
            error: None,
            manifest: Some(m),
        },
        Err(error) => Entry {
            name,
            path: path.display().to_string(),
            size,
            size_mb: mb(size),
            created: mtime,
            label: None,
            trigger: None,
            last_seq: None,
            keep: false,
            error: Some(error),
            manifest: None,
        },
    }
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
    archive::sync_dir(dir)
}

/// The archives rotation removes: readable, not kept, beyond the newest `max`.
pub fn beyond(entries: &[Entry], max: usize) -> Vec<String> {
    entries.iter().filter(|e| e.manifest.is_some() && !e.keep).skip(max).map(|e| e.name.clone()).collect()
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
