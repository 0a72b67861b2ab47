//! Listing BACKUP_DIR: every file is read once and cached by (name, size, mtime), so that a
//! listing (and the health check) costs a directory read.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};

use super::{check_id, check_name, mb, resolve, Entry, Filter, Item, Kind};
use crate::backup::archive::{self, manifest::Manifest};
use crate::backup::error::{Error, Result};
use crate::backup::event_backup::{self, EventMetadata, EVENT_SUFFIX};

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
            event_backup::read_metadata(path, name)
                .and_then(|m| event_backup::check_metadata(name, &m).map(|()| m))
        };
        let mut items: Vec<Item> = scan(&event_backup::dir(dir), &self.events, is_event, read)?
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

    /// Backups of both kinds that pass `filter`, newest first.
    pub fn list_all(&self, dir: &Path, filter: &Filter) -> Result<Vec<Item>> {
        let mut items: Vec<Item> = match filter.kind {
            Some(Kind::Event) => Vec::new(),
            Some(Kind::Full) | None => self.list(dir)?.iter().map(Item::full).collect(),
        };
        if filter.kind != Some(Kind::Full) {
            items.extend(self.list_events(dir)?);
        }
        items.retain(|item| filter.matches(item));
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
