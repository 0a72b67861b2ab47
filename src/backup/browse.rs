//! Looking inside backups without restoring them: the collections a backup holds and their
//! documents, with a substring search and pagination.
//!
//! An event backup is read by streaming its file. A whole-store archive is verified and
//! unpacked once into a cache directory under BACKUP_DIR and opened read-only; the cache is
//! bounded in bytes, drops the least recently used archive first, and is rebuilt on demand
//! (it is removed at startup). Selective restores read archives through the same cache.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use rocksdb::DB;
use serde::Serialize;
use serde_json::value::RawValue;

use super::archive::{no_progress, verify_into};
use super::catalog::{self, Kind};
use super::config::BackupConfig;
use super::error::{Error, Result};
use super::event_backup::{self, EventMetadata, Visit};
use crate::registry::Archived;
use crate::{names, store};

/// Folder of the cache inside BACKUP_DIR.
pub const CACHE_DIR: &str = ".browse-cache";
/// Name of the pseudo-collection that holds event documents.
pub const EVENTS_COLLECTION: &str = "_events";
/// Largest page.
pub const MAX_LIMIT: usize = 1000;

/// One collection of a backup.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectionInfo {
    /// Its name (`_events` for the event documents).
    pub collection: String,
    /// Documents in it, over all events.
    pub document_count: u64,
    /// Bytes of their JSON.
    pub size_bytes: u64,
}

/// A page of documents.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocPage {
    /// The documents, as stored.
    #[schema(value_type = Vec<Object>)]
    pub documents: Vec<Box<RawValue>>,
    /// How many documents match in all.
    pub total: u64,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// What to look for.
#[derive(Debug, Clone, Default)]
pub struct DocQuery {
    /// Only this event's documents.
    pub event_id: Option<String>,
    /// Case-insensitive substring of the document's JSON.
    pub q: Option<String>,
    /// Page size.
    pub limit: usize,
    /// Where the page starts.
    pub cursor: Option<String>,
}

/// An archive unpacked into the cache and opened read-only. Its directory is removed when
/// the last user lets go of it after it left the cache.
pub struct Opened {
    db: Option<DB>,
    dir: PathBuf,
    bytes: u64,
    stamp: (u64, SystemTime),
    last_used: Mutex<Instant>,
    collections: OnceLock<Vec<CollectionInfo>>,
}

impl Opened {
    /// Reads the archived registry.
    pub fn registry(&self) -> Archived<'_> {
        Archived(self.db.as_ref().expect("open until dropped"))
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        drop(self.db.take());
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").field("dir", &self.dir).field("bytes", &self.bytes).finish_non_exhaustive()
    }
}

/// The cache of unpacked archives.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
    entries: Mutex<HashMap<String, Arc<Opened>>>,
    /// One unpack at a time: two requests for the same archive wait for one copy.
    unpacking: Mutex<()>,
}

impl Cache {
    /// A cache in `dir`, emptied now (it is rebuilt on demand).
    pub fn new(dir: PathBuf, max_bytes: u64) -> Self {
        let _ = fs::remove_dir_all(&dir);
        Cache { dir, max_bytes, entries: Mutex::new(HashMap::new()), unpacking: Mutex::new(()) }
    }

    /// The archive `name` at `path`, verified, unpacked and opened read-only.
    pub fn open(&self, config: &BackupConfig, name: &str, path: &Path) -> Result<Arc<Opened>> {
        let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let stamp = (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
        self.open_with(name, stamp, |dir| {
            verify_into(config, path, name, dir, true, &no_progress).map(|verified| verified.bytes)
        })
    }

    /// Opens the store that `fill` puts, checked, into the new directory it is given (and
    /// returns the bytes of), cached under `name` while `stamp` stays the same: a backup of
    /// the repository, downloaded, as an archive is unpacked.
    pub fn open_with(
        &self,
        name: &str,
        stamp: (u64, SystemTime),
        fill: impl FnOnce(&Path) -> Result<u64>,
    ) -> Result<Arc<Opened>> {
        let _unpacking = self.unpacking.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = self.lookup(name, stamp) {
            return Ok(hit);
        }
        fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let dir = self.dir.join(format!("{nanos}"));
        let bytes = match fill(&dir) {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let db = match store::open_read_only(&dir, 64) {
            Ok((db, _)) => db,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(Error::damaged(name, format!("the archived store does not open: {e}")));
            }
        };
        let opened = Arc::new(Opened {
            db: Some(db),
            dir,
            bytes,
            stamp,
            last_used: Mutex::new(Instant::now()),
            collections: OnceLock::new(),
        });
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(name.to_owned(), opened.clone());
        // Least recently used first, never the one just opened.
        let mut total: u64 = entries.values().map(|o| o.bytes).sum();
        while total > self.max_bytes {
            let oldest = entries
                .iter()
                .filter(|(n, _)| n.as_str() != name)
                .min_by_key(|(_, o)| *o.last_used.lock().unwrap_or_else(|e| e.into_inner()))
                .map(|(n, _)| n.clone());
            let Some(oldest) = oldest else { break };
            if let Some(gone) = entries.remove(&oldest) {
                total -= gone.bytes;
                tracing::debug!(archive = %oldest, "browse cache: evicted");
            }
        }
        Ok(opened)
    }

    fn lookup(&self, name: &str, stamp: (u64, SystemTime)) -> Option<Arc<Opened>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(name) {
            // A copy whose directory was removed by hand is rebuilt.
            Some(o) if o.stamp == stamp && o.dir.is_dir() => {
                *o.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                Some(o.clone())
            }
            Some(_) => {
                entries.remove(name);
                None
            }
            None => None,
        }
    }

    /// Forgets an archive (deleted or replaced).
    pub fn forget(&self, name: &str) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
    }
}

/// The collections of a backup, by name, `_events` included.
pub fn collections(config: &BackupConfig, cache: &Cache, id: &str) -> Result<Vec<CollectionInfo>> {
    let (kind, name, path) = catalog::resolve(&config.backup_dir, id)?;
    let mut sizes: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut add = |collection: &str, bytes: usize| {
        let entry = sizes.entry(collection.to_owned()).or_default();
        entry.0 += 1;
        entry.1 += bytes as u64;
    };
    match kind {
        Kind::Event => {
            let mut visit = each_doc(|collection: &str, _: Option<&str>, doc: &RawValue| {
                add(collection, doc.get().len());
                Ok(true)
            });
            event_backup::read_verified(&path, &name, config.unpack_bound(), &mut visit)?;
        }
        Kind::Full => {
            let opened = cache.open(config, &name, &path)?;
            if let Some(cached) = opened.collections.get() {
                return Ok(cached.clone());
            }
            let registry = opened.registry();
            registry.events(None, |_, doc| {
                add(EVENTS_COLLECTION, doc.len());
                Ok::<_, Error>(true)
            })?;
            registry.records(None, |_, collection, _, doc| {
                add(collection, doc.len());
                Ok::<_, Error>(true)
            })?;
            let list = to_infos(sizes);
            let _ = opened.collections.set(list.clone());
            return Ok(list);
        }
    }
    Ok(to_infos(sizes))
}

fn to_infos(sizes: BTreeMap<String, (u64, u64)>) -> Vec<CollectionInfo> {
    sizes
        .into_iter()
        .map(|(collection, (document_count, size_bytes))| CollectionInfo {
            collection,
            document_count,
            size_bytes,
        })
        .collect()
}

/// A page of the documents of one collection of a backup.
pub fn documents(
    config: &BackupConfig,
    cache: &Cache,
    id: &str,
    collection: &str,
    query: &DocQuery,
) -> Result<DocPage> {
    if collection != EVENTS_COLLECTION && !names::is_collection(collection) {
        return Err(Error::InvalidOptions(format!(
            "invalid collection name {collection:?}: names match [a-z][a-z0-9_-]{{0,63}} (or _events for the event documents)"
        )));
    }
    if let Some(event_id) = &query.event_id {
        if !names::is_id(event_id) {
            return Err(Error::InvalidOptions(format!(
                "invalid eventId {event_id:?}: ids match [A-Za-z0-9_-]{{1,64}}"
            )));
        }
    }
    let skip = match &query.cursor {
        None => 0,
        Some(c) => decode_cursor(c)?,
    };
    let limit = query.limit.clamp(1, MAX_LIMIT);
    let needle = query.q.as_deref().map(str::to_lowercase).filter(|q| !q.is_empty());
    let mut page = Pager { skip, limit, needle, total: 0, documents: Vec::new() };
    let (kind, name, path) = catalog::resolve(&config.backup_dir, id)?;
    let want_event = query.event_id.as_deref();
    match kind {
        Kind::Event => {
            let mut visit = each_doc(|c: &str, event_id: Option<&str>, doc: &RawValue| {
                if c == collection && (want_event.is_none() || want_event == event_id) {
                    page.offer(doc.get().as_bytes());
                }
                Ok(true)
            });
            event_backup::read_verified(&path, &name, config.unpack_bound(), &mut visit)?;
        }
        Kind::Full => {
            let opened = cache.open(config, &name, &path)?;
            let registry = opened.registry();
            if collection == EVENTS_COLLECTION {
                registry.events(want_event, |_, doc| {
                    page.offer(doc);
                    Ok::<_, Error>(true)
                })?;
            } else {
                registry.records(want_event, |_, c, _, doc| {
                    if c == collection {
                        page.offer(doc);
                    }
                    Ok::<_, Error>(true)
                })?;
            }
        }
    }
    let next_cursor = (skip + page.documents.len() < page.total as usize)
        .then(|| encode_cursor(skip + page.documents.len()));
    Ok(DocPage { documents: page.documents, total: page.total, next_cursor })
}

struct Pager {
    skip: usize,
    limit: usize,
    needle: Option<String>,
    total: u64,
    documents: Vec<Box<RawValue>>,
}

impl Pager {
    fn offer(&mut self, doc: &[u8]) {
        if let Some(needle) = &self.needle {
            if !String::from_utf8_lossy(doc).to_lowercase().contains(needle.as_str()) {
                return;
            }
        }
        let index = self.total as usize;
        self.total += 1;
        if index >= self.skip && self.documents.len() < self.limit {
            if let Ok(raw) = RawValue::from_string(String::from_utf8_lossy(doc).into_owned()) {
                self.documents.push(raw);
            }
        }
    }
}

/// Backups never change, so a cursor is the position of the next match.
fn encode_cursor(position: usize) -> String {
    hex::encode(format!("p{position}"))
}

fn decode_cursor(cursor: &str) -> Result<usize> {
    hex::decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix('p').and_then(|n| n.parse().ok()))
        .ok_or_else(|| {
            Error::InvalidOptions("invalid cursor: pass the nextCursor of a previous page unchanged".into())
        })
}

/// A visitor calling `f(collection, event id, document)` for the event document (as
/// `_events`) and every record of an event backup.
struct EachDoc<F> {
    f: F,
    event_id: Option<String>,
}

fn each_doc<F: FnMut(&str, Option<&str>, &RawValue) -> Result<bool>>(f: F) -> EachDoc<F> {
    EachDoc { f, event_id: None }
}

impl<F: FnMut(&str, Option<&str>, &RawValue) -> Result<bool>> Visit for EachDoc<F> {
    fn metadata(&mut self, metadata: &EventMetadata) -> Result<bool> {
        self.event_id = Some(metadata.event_id.clone());
        Ok(true)
    }

    fn event_document(&mut self, doc: &RawValue) -> Result<()> {
        (self.f)(EVENTS_COLLECTION, self.event_id.as_deref(), doc).map(|_| ())
    }

    fn record(&mut self, collection: &str, _: &str, doc: &RawValue) -> Result<()> {
        (self.f)(collection, self.event_id.as_deref(), doc).map(|_| ())
    }
}
