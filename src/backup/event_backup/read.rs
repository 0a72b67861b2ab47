//! Reading an event backup, as hostile input: streamed (a visitor sees each record as the
//! raw JSON that was stored), bounded, and checked against its metadata and sidecar.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use flate2::read::MultiGzDecoder;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::{check_metadata, document_id, EventMetadata, MAX_DOCUMENT_BYTES, MAX_METADATA_BYTES};
use crate::backup::error::{Error, Result};
use crate::backup::files::{open_input, required_sidecar};
use crate::names;

/// What a reader of an event backup is shown, in file order.
/// Each method does nothing by default: a visitor says only what it takes.
pub trait Visit {
    /// The metadata. Returning `false` stops reading (listing needs nothing else).
    fn metadata(&mut self, _metadata: &EventMetadata) -> Result<bool> {
        Ok(true)
    }
    /// The event document.
    fn event_document(&mut self, _doc: &RawValue) -> Result<()> {
        Ok(())
    }
    /// One record of a collection, with its id (checked, and in order).
    fn record(&mut self, _collection: &str, _id: &str, _doc: &RawValue) -> Result<()> {
        Ok(())
    }
}

/// Takes nothing: reading with it makes every check of [`read`] and nothing else (a first
/// pass before changes, a verification).
pub struct CheckOnly;

impl Visit for CheckOnly {}

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
    read_from(&open_input(path, name)?, name, sha256, max_bytes, visit)
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
    let sha = required_sidecar(path, name)?;
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
    }
    // The metadata is a few hundred bytes at the start; a file that says otherwise is damaged.
    read(path, name, None, 16 << 20, &mut MetadataOnly)
}

/// A private copy of an event backup, for readers that read it twice (checks, then changes):
/// a file replaced or rewritten between the passes cannot bring in what the first never
/// checked. The copy has no name, and is gone when the returned file is closed. A file larger
/// than `max_bytes` (the most its reader may decompress; gzip never makes data that much
/// larger) is refused before it takes that much disk.
pub fn private_copy(path: &Path, name: &str, max_bytes: u64) -> Result<File> {
    use std::io::{Seek, SeekFrom};
    let source = open_input(path, name)?;
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
