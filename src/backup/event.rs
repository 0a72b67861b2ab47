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

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use chrono::{SecondsFormat, Utc};
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::archive::{self, HashWriter};
use super::catalog;
use super::manifest::Trigger;
use super::{Error, Result};
use crate::names;
use crate::registry::EventSnapshot;

/// Folder of event backups inside BACKUP_DIR (the seed's name).
pub const EVENT_DIR: &str = "event_deletions";
/// Suffix of event backups.
pub const EVENT_SUFFIX: &str = ".json.gz";
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

/// An event backup that was written.
#[derive(Debug, Clone)]
pub struct EventWritten {
    /// File name.
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file (also in its sidecar).
    pub sha256: String,
    /// Its metadata.
    pub metadata: EventMetadata,
}

/// The folder of event backups.
pub fn dir(backup_dir: &Path) -> PathBuf {
    backup_dir.join(EVENT_DIR)
}

/// Writes a backup of the event in `snap` into `BACKUP_DIR/event_deletions/`, atomically: a
/// temp file, fsync, sidecar, rename, fsync of the folder.
pub fn write(
    backup_dir: &Path,
    snap: &EventSnapshot<'_>,
    trigger: Trigger,
    level: u32,
) -> Result<EventWritten> {
    let folder = dir(backup_dir);
    fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
    let now = Utc::now();
    let claim = Claim::new(&folder, snap.id(), now.timestamp_millis());
    let (name, backup_id) = (claim.name.clone(), claim.backup_id.clone());
    let counts = snap.counts()?.into_iter().map(|(c, (n, _))| (c, n)).collect();
    let event_name = serde_json::from_slice::<serde_json::Value>(snap.document().as_bytes())
        .ok()
        .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(|n| cut(n, MAX_EVENT_NAME_BYTES)));
    let metadata = EventMetadata {
        event_id: snap.id().to_owned(),
        event_name,
        backup_id,
        backup_date: now.to_rfc3339_opts(SecondsFormat::Millis, true),
        version: SEED_VERSION.into(),
        format_version: EVENT_FORMAT,
        trigger,
        counts,
        last_seq: snap.seq(),
        app_version: env!("CARGO_PKG_VERSION").into(),
    };
    let nanos = now.timestamp_nanos_opt().unwrap_or_default();
    let tmp = folder.join(format!("{}{name}.{}.{nanos}", catalog::TEMP_PREFIX, std::process::id()));
    let path = folder.join(&name);
    let written = (|| {
        let (size, sha256) = write_body(&tmp, snap, &metadata, level)?;
        crate::fault::point("event_backup.before_rename")?;
        archive::write_atomic(
            &catalog::sidecar_path(&path),
            catalog::sidecar_line(&sha256, &name).as_bytes(),
        )?;
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        archive::sync_dir(&folder)?;
        Ok::<_, Error>((size, sha256))
    })();
    match written {
        Ok((size, sha256)) => Ok(EventWritten { name, path, size, sha256, metadata }),
        Err(e) => {
            // The name is claimed, so the sidecar, if any, is this writer's.
            let _ = fs::remove_file(&tmp);
            if !path.exists() {
                let _ = fs::remove_file(catalog::sidecar_path(&path));
            }
            Err(e)
        }
    }
}

/// Backups being written by this process: two backups of one event in the same millisecond
/// must not pick the same name (the final name only exists once the file is complete).
static WRITING: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// A file name claimed for one writer until it drops.
struct Claim {
    path: PathBuf,
    name: String,
    backup_id: String,
}

impl Claim {
    fn new(folder: &Path, event_id: &str, millis: i64) -> Claim {
        let mut writing = WRITING.lock().unwrap_or_else(|e| e.into_inner());
        let claim = (millis..)
            .map(|ms| {
                let backup_id = format!("event_{event_id}_backup_{ms}");
                let name = format!("{backup_id}{EVENT_SUFFIX}");
                Claim { path: folder.join(&name), name, backup_id }
            })
            .find(|c| !c.path.exists() && !writing.contains(&c.path))
            .expect("an unused name exists");
        writing.push(claim.path.clone());
        claim
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        WRITING.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| *p != self.path);
    }
}

fn write_body(
    tmp: &Path,
    snap: &EventSnapshot<'_>,
    metadata: &EventMetadata,
    level: u32,
) -> Result<(u64, String)> {
    let io_err = |e| Error::io(tmp, e);
    let file = File::options().write(true).create_new(true).open(tmp).map_err(io_err)?;
    let hashing = HashWriter::new(BufWriter::with_capacity(1 << 20, file));
    let mut out =
        BufWriter::with_capacity(1 << 16, GzEncoder::new(hashing, flate2::Compression::new(level.max(1))));
    check_document_size(tmp, snap.document().as_bytes().len())?;
    let mut head = Vec::with_capacity(512 + snap.document().as_bytes().len());
    head.extend_from_slice(b"{\"metadata\":");
    serde_json::to_writer(&mut head, metadata).expect("metadata serialises");
    head.extend_from_slice(b",\"eventDocument\":");
    head.extend_from_slice(snap.document().as_bytes());
    head.extend_from_slice(b",\"collections\":{");
    out.write_all(&head).map_err(io_err)?;
    let mut current: Option<String> = None;
    snap.records(|collection, doc| {
        check_document_size(tmp, doc.len())?;
        let separator: &[u8] = match &current {
            Some(c) if c == collection => b",",
            Some(_) => b"],",
            None => b"",
        };
        if current.as_deref() != Some(collection) {
            out.write_all(separator).map_err(io_err)?;
            serde_json::to_writer(&mut out, collection).map_err(|e| io_err(e.into()))?;
            out.write_all(b":[").map_err(io_err)?;
            current = Some(collection.to_owned());
        } else {
            out.write_all(separator).map_err(io_err)?;
        }
        out.write_all(doc).map_err(io_err)
    })?;
    out.write_all(if current.is_some() { b"]}}" } else { b"}}" }).map_err(io_err)?;
    let gz = out.into_inner().map_err(|e| io_err(e.into_error()))?;
    let hashing = gz.finish().map_err(io_err)?;
    let file = hashing.inner.into_inner().map_err(|e| io_err(e.into_error()))?;
    crate::fault::io_point("event_backup.write").map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    Ok((hashing.count, hex::encode(hashing.hasher.finalize())))
}

/// A backup that readers would refuse is not written, so the delete it guards does not
/// happen. Only stores written before documents were capped can hold such a document.
fn check_document_size(tmp: &Path, size: usize) -> Result<()> {
    let max = crate::registry::MAX_DOCUMENT_BYTES;
    if size > max {
        let reason = format!("a document of {size} bytes is over the {max} bytes a backup may hold");
        return Err(Error::io(tmp, io::Error::other(reason)));
    }
    Ok(())
}

/// What a reader of an event backup is shown, in file order.
pub trait Visit {
    /// The metadata. Returning `false` stops reading (listing needs nothing else).
    fn metadata(&mut self, metadata: &EventMetadata) -> Result<bool>;
    /// The event document.
    fn event_document(&mut self, doc: &RawValue) -> Result<()>;
    /// One record of a collection, with its id (checked, and in order).
    fn record(&mut self, collection: &str, id: &str, doc: &RawValue) -> Result<()>;
}

/// Reads an event backup, calling `visit` as it goes, with the checks every reader makes: the
/// metadata's format and fields ([`check_metadata`]), the event document's id against the
/// metadata's, every collection name and record id, and at the end the records counted
/// against the metadata's counts. `sha256`, when given, is checked against the whole file.
/// Both ends are only known at the end, so a visitor that changes things must only act after
/// a checked pass. `max_bytes` bounds the decompressed size. Returns the metadata.
pub fn read(
    path: &Path,
    name: &str,
    sha256: Option<&str>,
    max_bytes: u64,
    visit: &mut dyn Visit,
) -> Result<EventMetadata> {
    read_from(&archive::open_input(path, name)?, name, sha256, max_bytes, visit)
}

/// [`read`] from an open file, from where its offset is.
pub fn read_from(
    file: &File,
    name: &str,
    sha256: Option<&str>,
    max_bytes: u64,
    visit: &mut dyn Visit,
) -> Result<EventMetadata> {
    let mut checked = Checked { name, inner: visit, event_id: None, counts: BTreeMap::new() };
    let visit: &mut dyn Visit = &mut checked;
    let mut hashing = HashingReader { inner: BufReader::with_capacity(1 << 20, file), hasher: Sha256::new() };
    let mut gz = MultiGzDecoder::new(&mut hashing);
    let since_document = Rc::new(Cell::new(0));
    let mut bounded =
        Bounded { inner: &mut gz, left: max_bytes, since_document: since_document.clone(), exceeded: None };
    let mut buffered = BufReader::with_capacity(1 << 16, &mut bounded);
    let mut state = ReadState {
        since_document,
        last_collection: None,
        visit,
        failure: None,
        metadata: None,
        stopped: false,
        seen_document: false,
        seen_collections: false,
    };
    let parsed = {
        let mut de = serde_json::Deserializer::from_reader(&mut buffered);
        (&mut state).deserialize(&mut de).and_then(|()| if state.stopped { Ok(()) } else { de.end() })
    };
    if let Some(e) = state.failure.take() {
        return Err(e);
    }
    let metadata = state.metadata.take();
    if state.stopped {
        return metadata.ok_or_else(|| Error::damaged(name, "no metadata"));
    }
    if let Err(e) = parsed {
        drop(buffered);
        return Err(if let Some(reason) = bounded.exceeded {
            Error::damaged(name, reason)
        } else {
            Error::damaged(name, format!("not a readable event backup: {e}"))
        });
    }
    let metadata = metadata.ok_or_else(|| Error::damaged(name, "it has no metadata"))?;
    if !state.seen_document {
        return Err(Error::damaged(name, "it has no eventDocument"));
    }
    drop(state);
    if checked.counts != metadata.counts {
        return Err(Error::damaged(
            name,
            format!("it holds {:?} records, its metadata says {:?}", checked.counts, metadata.counts),
        ));
    }
    if let Some(expected) = sha256 {
        // Read to the end of the gzip stream and the file, so the hash covers all of it.
        io::copy(&mut buffered, &mut io::sink()).map_err(|e| Error::damaged(name, e.to_string()))?;
        drop(buffered);
        drop(gz);
        io::copy(&mut hashing.inner, &mut io::sink()).map_err(|e| Error::damaged(name, e.to_string()))?;
        let actual = hex::encode(hashing.hasher.finalize());
        if actual != expected {
            return Err(Error::damaged(
                name,
                format!("its SHA-256 is {actual}, the sidecar says {expected}"),
            ));
        }
    }
    Ok(metadata)
}

/// Reads an event backup whose sidecar must be there and match: what restores, dry runs and
/// browsing read.
pub fn read_verified(
    path: &Path,
    name: &str,
    max_bytes: u64,
    visit: &mut dyn Visit,
) -> Result<EventMetadata> {
    let sha = catalog::required_sidecar(path, name)?;
    read(path, name, Some(&sha), max_bytes, visit)
}

/// The checks of [`read`], around the caller's visitor.
struct Checked<'a, 'v> {
    name: &'a str,
    inner: &'v mut dyn Visit,
    event_id: Option<String>,
    counts: BTreeMap<String, u64>,
}

impl Visit for Checked<'_, '_> {
    fn metadata(&mut self, metadata: &EventMetadata) -> Result<bool> {
        check_metadata(self.name, metadata)?;
        self.event_id = Some(metadata.event_id.clone());
        self.inner.metadata(metadata)
    }

    fn event_document(&mut self, doc: &RawValue) -> Result<()> {
        crate::registry::check_stored(doc.get().as_bytes()).map_err(|why| Error::damaged(self.name, why))?;
        let id = document_id(doc);
        if id != self.event_id {
            let found = id.as_deref().map_or_else(|| "no valid id".to_owned(), |id| format!("id {id:?}"));
            let named = self.event_id.as_deref().unwrap_or_default();
            return Err(Error::damaged(
                self.name,
                format!("its eventDocument has {found}, its metadata names event {named:?}"),
            ));
        }
        self.inner.event_document(doc)
    }

    fn record(&mut self, collection: &str, id: &str, doc: &RawValue) -> Result<()> {
        crate::registry::check_stored(doc.get().as_bytes()).map_err(|why| Error::damaged(self.name, why))?;
        let count = self.counts.entry(collection.to_owned()).or_default();
        *count = count.saturating_add(1);
        self.inner.record(collection, id, doc)
    }
}

/// Only the metadata (reads the first few kilobytes).
pub fn read_metadata(path: &Path, name: &str) -> Result<EventMetadata> {
    struct MetadataOnly;
    impl Visit for MetadataOnly {
        fn metadata(&mut self, _: &EventMetadata) -> Result<bool> {
            Ok(false)
        }
        fn event_document(&mut self, _: &RawValue) -> Result<()> {
            Ok(())
        }
        fn record(&mut self, _: &str, _: &str, _: &RawValue) -> Result<()> {
            Ok(())
        }
    }
    // The metadata is a few hundred bytes at the start; a file that says otherwise is damaged.
    read(path, name, None, 16 << 20, &mut MetadataOnly)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// A private copy of an event backup, for readers that read it twice (checks, then changes):
/// a file replaced or rewritten between the passes cannot bring in what the first never
/// checked. The copy has no name, and is gone when the returned file is closed. A file larger
/// than `max_bytes` (the most its reader may decompress; gzip never makes data that much
/// larger) is refused before it takes that much disk.
pub fn private_copy(path: &Path, name: &str, max_bytes: u64) -> Result<File> {
    use std::io::{Seek, SeekFrom};
    let source = archive::open_input(path, name)?;
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut copy = tempfile::tempfile_in(folder).map_err(|e| Error::io(folder, e))?;
    let most = max_bytes.saturating_add(1 << 20);
    let copied =
        io::copy(&mut source.take(most.saturating_add(1)), &mut copy).map_err(|e| Error::io(folder, e))?;
    if copied > most {
        return Err(Error::damaged(name, "it is larger than the space a restore may use"));
    }
    copy.seek(SeekFrom::Start(0)).map_err(|e| Error::io(folder, e))?;
    Ok(copy)
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
    if m.last_seq > super::manifest::MAX_COUNT || m.counts.values().any(|n| *n > super::manifest::MAX_COUNT) {
        return Err(Error::damaged(name, "its lastSeq or counts are beyond what a store can hold (2^53)"));
    }
    if let Some(bad) = m.counts.keys().find(|c| !names::is_collection(c)) {
        let quoted = crate::untrusted::quote(bad.as_bytes());
        return Err(Error::damaged(name, format!("its counts name an invalid collection {quoted}")));
    }
    Ok(())
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Fails reads past `left` bytes in all, or past [`MAX_DOCUMENT_BYTES`] since the last
/// document ended: a small file must neither unpack into an unbounded stream nor make the
/// reader hold one enormous document in memory.
struct Bounded<R> {
    inner: R,
    left: u64,
    since_document: Rc<Cell<u64>>,
    exceeded: Option<&'static str>,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)? as u64;
        let since = self.since_document.get() + n;
        self.since_document.set(since);
        if n > self.left {
            self.exceeded = Some("it unpacks to more than the space a restore may use");
        } else if since > MAX_DOCUMENT_BYTES {
            self.exceeded = Some("it holds a document larger than the registry stores (64 MiB)");
        }
        if self.exceeded.is_some() {
            return Err(io::Error::other("size bound exceeded"));
        }
        self.left -= n;
        Ok(n as usize)
    }
}

struct ReadState<'v> {
    /// Bytes read since the last document ended (shared with [`Bounded`]).
    since_document: Rc<Cell<u64>>,
    last_collection: Option<String>,
    visit: &'v mut dyn Visit,
    failure: Option<Error>,
    metadata: Option<EventMetadata>,
    stopped: bool,
    seen_document: bool,
    seen_collections: bool,
}

impl ReadState<'_> {
    /// Whether that part of the file was read already.
    fn seen(&self, key: &str) -> bool {
        match key {
            "metadata" => self.metadata.is_some(),
            "eventDocument" => self.seen_document,
            _ => self.seen_collections,
        }
    }

    /// A document was read whole: the next one gets the whole per-document budget.
    fn document_read(&mut self) {
        self.since_document.set(0);
    }

    /// Parks a visitor's error and stops the parser with a marker error.
    fn fail<E: de::Error>(&mut self, e: Error) -> E {
        self.failure = Some(e);
        E::custom("stopped by the reader")
    }
}

impl<'de> DeserializeSeed<'de> for &mut ReadState<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for &mut ReadState<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event backup object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                // Each part once: a second `metadata` could name another event after the
                // document was checked against the first.
                "metadata" | "eventDocument" | "collections" if self.seen(&key) => {
                    return Err(de::Error::custom(format!("{key} appears twice")));
                }
                "metadata" => {
                    let metadata: EventMetadata = map.next_value()?;
                    if self.since_document.get() > MAX_METADATA_BYTES {
                        return Err(de::Error::custom("its metadata is larger than 4 MiB"));
                    }
                    self.document_read();
                    match self.visit.metadata(&metadata) {
                        Ok(true) => {}
                        Ok(false) => {
                            self.metadata = Some(metadata);
                            self.stopped = true;
                            return Err(de::Error::custom("stopped after the metadata"));
                        }
                        Err(e) => return Err(self.fail(e)),
                    }
                    self.metadata = Some(metadata);
                }
                "eventDocument" => {
                    if self.metadata.is_none() {
                        return Err(de::Error::custom("metadata must come before eventDocument"));
                    }
                    let doc: Box<RawValue> = map.next_value()?;
                    self.document_read();
                    if let Err(e) = self.visit.event_document(&doc) {
                        return Err(self.fail(e));
                    }
                    self.seen_document = true;
                }
                "collections" => {
                    if !self.seen_document {
                        return Err(de::Error::custom("eventDocument must come before collections"));
                    }
                    self.seen_collections = true;
                    map.next_value_seed(Collections(&mut *self))?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct Collections<'a, 'v>(&'a mut ReadState<'v>);

impl<'de> DeserializeSeed<'de> for Collections<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Collections<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of collections")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        while let Some(collection) = map.next_key::<String>()? {
            if !names::is_collection(&collection) {
                return Err(de::Error::custom(format!("{collection:?} is not a valid collection name")));
            }
            // Collections come in key order (`name/` compared bytewise), each once, so no
            // record can appear twice.
            let key = format!("{collection}/");
            if self.0.last_collection.as_ref().is_some_and(|last| *last >= key) {
                return Err(de::Error::custom(format!(
                    "collection {collection:?} is out of order or repeated"
                )));
            }
            self.0.last_collection = Some(key);
            map.next_value_seed(Records { state: &mut *self.0, collection: &collection })?;
        }
        Ok(())
    }
}

struct Records<'a, 'v> {
    state: &'a mut ReadState<'v>,
    collection: &'a str,
}

impl<'de> DeserializeSeed<'de> for Records<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Records<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let mut last_id: Option<String> = None;
        while let Some(doc) = seq.next_element::<Box<RawValue>>()? {
            self.state.document_read();
            // Records come in id order, each once: a repeated id would be counted twice.
            let id = document_id(&doc).ok_or_else(|| de::Error::custom("a record has no valid string id"))?;
            if last_id.as_ref().is_some_and(|last| *last >= id) {
                return Err(de::Error::custom(format!(
                    "record {id:?} of {:?} is out of order or repeated",
                    self.collection
                )));
            }
            if let Err(e) = self.state.visit.record(self.collection, &id, &doc) {
                return Err(self.state.fail(e));
            }
            last_id = Some(id);
        }
        Ok(())
    }
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
