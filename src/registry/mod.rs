//! The event registry: events, and each event's named collections of records.
//!
//! Every change is written in one transaction with its bus message on topic `registry`, so a
//! change and its message land together or not at all. Methods block: call them off the
//! async runtime.

mod doc;
mod error;
mod keys;
mod parse;
mod records;
pub mod replay;
mod transfer;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rocksdb::{Direction, IteratorMode};
use serde::Serialize;
use serde_json::Value;

pub use doc::{check_stored, Doc, MAX_VERSION};
pub use error::{Error, Result};
pub use parse::{parse_records, Fields};
pub use transfer::{Archived, EventAction, EventSnapshot, Merge, RecordIn, Tally};

use doc::{decode, into_object, merge_patch, render, render_fields, Stamp};

use crate::bus::{self, NewMessage, REGISTRY_TOPIC};
use crate::names;
use crate::store::{cf, Cf, Store, Txn, EVENTS_COUNTER, RECORDS_COUNTER_PREFIX};

/// Fields the server sets on every document; clients' values for them are ignored.
pub const SERVER_FIELDS: [&str; 4] = ["id", "createdAt", "updatedAt", "version"];
/// Most records one `_batch` request may hold.
pub const MAX_BATCH: usize = 10_000;
/// Largest stored document. Request bodies are smaller (BODY_LIMIT), but patches can grow a
/// document; the cap keeps every document small enough for event backups to read back.
pub const MAX_DOCUMENT_BYTES: usize = 64 << 20;
/// Largest page size.
pub const MAX_LIMIT: usize = 1000;

/// A page of documents.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// Documents in id order (ids are time-ordered, so this is creation order).
    pub items: Vec<Doc>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl ListPage {
    /// `{"items": [...], "nextCursor": ...}`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.items.iter().map(|d| d.0.len() + 1).sum::<usize>());
        out.extend_from_slice(b"{\"items\":");
        doc::write_array(&mut out, &self.items);
        out.extend_from_slice(b",\"nextCursor\":");
        doc::write_json(&mut out, &self.next_cursor);
        out.push(b'}');
        out
    }
}

/// A record just created.
#[derive(Debug, Clone)]
pub struct Created {
    /// Its server-set id.
    pub id: String,
    /// The document as stored.
    pub doc: Doc,
}

/// The answer to a batch: `{"count": n, "ids": [...]}` in the order of the request, and with
/// `echo` the documents as stored too, `"items": [...]`.
pub fn batch_json(created: &[Created], echo: bool) -> Vec<u8> {
    let ids_len = created.iter().map(|c| c.id.len() + 3).sum::<usize>();
    let docs_len = if echo { created.iter().map(|c| c.doc.0.len() + 1).sum::<usize>() } else { 0 };
    let mut out = Vec::with_capacity(48 + ids_len + docs_len);
    out.extend_from_slice(format!("{{\"count\":{},\"ids\":[", created.len()).as_bytes());
    for (i, c) in created.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        doc::write_json(&mut out, &c.id);
    }
    out.push(b']');
    if echo {
        out.extend_from_slice(b",\"items\":[");
        for (i, c) in created.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(c.doc.as_bytes());
        }
        out.push(b']');
    }
    out.push(b'}');
    out
}

/// Renders a document with server fields set: the id first, the fields in their order.
pub fn render_document(
    id: &str,
    fields: &serde_json::Map<String, Value>,
    created_at: &str,
    updated_at: &str,
    version: u64,
) -> Vec<u8> {
    render(id, fields, created_at, updated_at, version).0
}

/// What a delete removed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    /// Id of the deleted document.
    pub id: String,
    /// Its version when deleted.
    pub version: u64,
    /// For an event: how many records of each collection went with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_deleted: Option<BTreeMap<String, u64>>,
}

/// How an update changes a document.
#[derive(Debug, Clone)]
pub enum Update {
    /// PUT: the body replaces every client field.
    Replace(Value),
    /// PATCH: a JSON merge patch (RFC 7396); `null` removes a field.
    Merge(Value),
}

/// The registry over the shared store.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Arc<Store>,
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Registry { store }
    }

    /// Creates an event with a server-set id.
    pub fn create_event(&self, body: Value) -> Result<Doc> {
        let body = into_object(body, "the event")?;
        let mut txn = self.store.begin()?;
        let now = bus::now();
        let id = new_id();
        let doc = check_size(render(&id, &body, &now, &now, 1))?;
        txn.put(Cf::Registry, &keys::event(&id), doc.as_bytes());
        txn.count(EVENTS_COUNTER, 1);
        append(&mut txn, "event.created", &id, None, None, doc.as_bytes());
        txn.commit()?;
        Ok(doc)
    }

    /// Reads an event.
    pub fn get_event(&self, id: &str) -> Result<Doc> {
        check_id(id)?;
        let db = self.store.db()?;
        let raw = db.get_cf(cf(&db, Cf::Registry), keys::event(id))?;
        raw.map(Doc).ok_or_else(|| Error::EventNotFound(id.into()))
    }

    /// Lists events in creation order.
    pub fn list_events(&self, cursor: Option<&str>, limit: usize) -> Result<ListPage> {
        self.list(keys::EVENTS.to_vec(), cursor, limit)
    }

    /// Replaces or patches an event. `if_match` is the version the caller expects.
    pub fn update_event(&self, id: &str, update: Update, if_match: Option<u64>) -> Result<Doc> {
        check_id(id)?;
        let mut txn = self.store.begin()?;
        let key = keys::event(id);
        let current = read(&txn, &key)?.ok_or_else(|| Error::EventNotFound(id.into()))?;
        let doc = check_size(updated(current, update, if_match, "the event")?)?;
        txn.put(Cf::Registry, &key, doc.as_bytes());
        append(&mut txn, "event.updated", id, None, None, doc.as_bytes());
        txn.commit()?;
        Ok(doc)
    }

    /// Deletes an event and every record of it.
    pub fn delete_event(&self, id: &str, if_match: Option<u64>) -> Result<Deleted> {
        self.delete_event_guarded(id, if_match, None)
    }

    fn delete_event_guarded(
        &self,
        id: &str,
        if_match: Option<u64>,
        unchanged_since: Option<u64>,
    ) -> Result<Deleted> {
        check_id(id)?;
        let mut txn = self.store.begin()?;
        let key = keys::event(id);
        let current = read(&txn, &key)?.ok_or_else(|| Error::EventNotFound(id.into()))?;
        let version = check_version(&current, if_match)?;
        if let Some(seq) = unchanged_since {
            if bus::concerns_event_after(txn.db(), seq, id)? {
                return Err(Error::ChangedSinceBackup(id.into()));
            }
        }
        let prefix = keys::event_records(id);
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        {
            let db = txn.db();
            let iter = db.iterator_cf(cf(db, Cf::Registry), IteratorMode::From(&prefix, Direction::Forward));
            for item in iter {
                let (k, _) = item?;
                let Some((collection, _)) = keys::split_record(&k, &prefix) else { break };
                *counts.entry(collection.to_owned()).or_default() += 1;
            }
        }
        txn.delete_range(Cf::Registry, &prefix, &keys::prefix_end(&prefix));
        txn.delete(Cf::Registry, &key);
        txn.count(EVENTS_COUNTER, -1);
        for (collection, n) in &counts {
            txn.count(&records_counter(collection), -(*n as i64));
        }
        let deleted = Deleted { id: id.into(), version, records_deleted: Some(counts) };
        let data = serde_json::to_vec(&deleted).expect("serialisable");
        append(&mut txn, "event.deleted", id, None, None, &data);
        txn.commit()?;
        Ok(deleted)
    }

    fn list(&self, prefix: Vec<u8>, cursor: Option<&str>, limit: usize) -> Result<ListPage> {
        let limit = limit.clamp(1, MAX_LIMIT);
        let mut start = prefix.clone();
        if let Some(cursor) = cursor {
            start.extend_from_slice(decode_cursor(cursor)?.as_bytes());
            // Ids never contain NUL, so this is the first key after the cursor's.
            start.push(0);
        }
        let db = self.store.db()?;
        let mut items = Vec::new();
        let mut last_id = Vec::new();
        let mut next_cursor = None;
        for item in db.iterator_cf(cf(&db, Cf::Registry), IteratorMode::From(&start, Direction::Forward)) {
            let (key, value) = item?;
            let Some(id) = key.strip_prefix(prefix.as_slice()) else { break };
            if id.contains(&b'/') {
                break;
            }
            if items.len() == limit {
                next_cursor = Some(encode_cursor(&String::from_utf8_lossy(&last_id)));
                break;
            }
            last_id = id.to_vec();
            items.push(Doc(value.into_vec()));
        }
        Ok(ListPage { items, next_cursor })
    }
}

/// Cursors are opaque to clients: the hex of the last id of the page.
fn encode_cursor(id: &str) -> String {
    hex::encode(id)
}

fn decode_cursor(cursor: &str) -> Result<String> {
    hex::decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|id| names::is_id(id))
        .ok_or(Error::InvalidCursor)
}

fn records_counter(collection: &str) -> String {
    format!("{RECORDS_COUNTER_PREFIX}{collection}")
}

fn new_id() -> String {
    static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);
    let mut generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    // Monotonic ids keep list order equal to creation order within a millisecond too.
    let generator = generator.get_or_insert_with(ulid::Generator::new);
    generator.generate().unwrap_or_else(|_| ulid::Ulid::new()).to_string()
}

fn check_size(doc: Doc) -> Result<Doc> {
    if doc.0.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::DocumentTooLarge { size: doc.0.len(), max: MAX_DOCUMENT_BYTES });
    }
    Ok(doc)
}

fn check_id(id: &str) -> Result<()> {
    if names::is_id(id) {
        Ok(())
    } else {
        Err(Error::InvalidId(id.into()))
    }
}

fn check_collection(name: &str) -> Result<()> {
    if names::is_collection(name) {
        Ok(())
    } else {
        Err(Error::InvalidCollection(name.into()))
    }
}

/// New records may not go into a reserved collection; records a store already holds there
/// (written before the name was reserved) stay readable, deletable and restorable.
fn check_new_collection(name: &str) -> Result<()> {
    check_collection(name)?;
    if names::RESERVED_COLLECTIONS.contains(&name) {
        return Err(Error::ReservedCollection(name.into()));
    }
    Ok(())
}

fn check_record_path(event_id: &str, collection: &str, id: &str) -> Result<()> {
    check_id(event_id)?;
    check_collection(collection)?;
    check_id(id)
}

fn version_of(doc: &Value) -> u64 {
    doc["version"].as_u64().unwrap_or(0)
}

fn check_version(current: &Value, if_match: Option<u64>) -> Result<u64> {
    let version = version_of(current);
    match if_match {
        Some(expected) if expected != version => Err(Error::VersionMismatch { expected, current: version }),
        _ => Ok(version),
    }
}

fn updated(current: Value, update: Update, if_match: Option<u64>, what: &'static str) -> Result<Doc> {
    let version = check_version(&current, if_match)?;
    let id = current["id"].as_str().unwrap_or_default().to_owned();
    let created_at = current["createdAt"].as_str().unwrap_or_default().to_owned();
    let body = match update {
        Update::Replace(body) => into_object(body, what)?,
        Update::Merge(patch) => {
            if !patch.is_object() {
                return Err(Error::NotAnObject("a merge patch"));
            }
            let mut merged = current;
            merge_patch(&mut merged, patch);
            into_object(merged, what)?
        }
    };
    // Saturating: a stored version is a number from a file at worst.
    Ok(render(&id, &body, &created_at, &bus::now(), version.saturating_add(1)))
}

fn read(txn: &Txn<'_>, key: &[u8]) -> Result<Option<Value>> {
    txn.get(Cf::Registry, key)?.map(|raw| decode(&raw)).transpose()
}

fn append(
    txn: &mut Txn<'_>,
    kind: &str,
    event_id: &str,
    collection: Option<&str>,
    record_id: Option<&str>,
    data: &[u8],
) {
    bus::append(
        txn,
        NewMessage { topic: REGISTRY_TOPIC, kind, event_id: Some(event_id), collection, record_id, data },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_garbage() {
        assert_eq!(decode_cursor(&encode_cursor("01ABC")).unwrap(), "01ABC");
        assert!(decode_cursor("zz").is_err());
        assert!(decode_cursor(&hex::encode("a/b")).is_err());
    }
}
