//! The event bus: a durable, ordered log in the store's `bus` column family.
//!
//! Layout: `m{seq:be64}` → message JSON; `t{topic}\0{seq:be64}` → empty (the topic index);
//! `c{consumer}` → consumer offset JSON. Registry changes append their message in the same
//! transaction as the change (see [`append`]).

mod error;

use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use rocksdb::{Direction, IteratorMode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use error::{Error, Result};

use crate::names;
use crate::store::{self, cf, Cf, Store, Txn, BUS_MESSAGE_PREFIX};

/// The topic of registry changes; clients cannot publish to it.
pub const REGISTRY_TOPIC: &str = "registry";
/// Topic names taken by bus routes.
const RESERVED_TOPICS: [&str; 3] = [REGISTRY_TOPIC, "stream", "consumers"];
/// Most messages one read returns.
pub const MAX_READ: usize = 1000;

const TOPIC_PREFIX: u8 = b't';
// Prefixes of the bus column family: `m` messages, `t` topic index, `c` consumer offsets,
// `e` commit marks (`store::BUS_COMMIT_PREFIX`).
const CONSUMER_PREFIX: u8 = b'c';

/// One message of the log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// Position in the log: gap-free and increasing from 1.
    pub seq: u64,
    /// When it was appended, RFC 3339 UTC.
    pub ts: String,
    /// `registry` for registry changes, or a client's topic.
    pub topic: String,
    /// What happened, e.g. `event.created`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event concerned, for registry changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The collection concerned, for record changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// The record concerned, for record changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
    /// The payload.
    pub data: Value,
}

/// A message to append; the bus sets `seq` and `ts`.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Type.
    pub kind: &'a str,
    /// Event id.
    pub event_id: Option<&'a str>,
    /// Collection.
    pub collection: Option<&'a str>,
    /// Record id.
    pub record_id: Option<&'a str>,
    /// The payload, as JSON.
    pub data: &'a [u8],
}

/// A page of the log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    /// Messages after the requested position, oldest first.
    pub messages: Vec<Message>,
    /// The newest sequence number in the whole log.
    pub last_seq: u64,
    /// The timeline the messages belong to: when it changes, the log was replaced (by a
    /// restore) and sequence numbers after the restored point mean other messages.
    pub timeline: String,
}

/// A durable consumer offset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Consumer {
    /// Consumer name.
    pub name: String,
    /// Sequence number of the last message the consumer handled.
    pub offset: u64,
    /// When the offset was last written.
    pub updated_at: String,
}

/// Current time as the RFC 3339 UTC string used in documents and messages.
pub fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Appends a message to a transaction; returns its seq and ts. The message is written as
/// bytes around the payload, which registry changes have serialised once already.
pub fn append(txn: &mut Txn<'_>, new: NewMessage<'_>) -> (u64, String) {
    let seq = txn.next_seq();
    let ts = txn.next_ts();
    let mut body = Vec::with_capacity(new.data.len() + 160);
    body.extend_from_slice(format!("{{\"seq\":{seq},\"ts\":\"{ts}\",\"topic\":").as_bytes());
    write_json(&mut body, new.topic);
    body.extend_from_slice(b",\"type\":");
    write_json(&mut body, new.kind);
    for (name, value) in
        [("eventId", new.event_id), ("collection", new.collection), ("recordId", new.record_id)]
    {
        if let Some(value) = value {
            body.extend_from_slice(format!(",\"{name}\":").as_bytes());
            write_json(&mut body, value);
        }
    }
    body.extend_from_slice(b",\"data\":");
    body.extend_from_slice(new.data);
    body.push(b'}');
    txn.put(Cf::Bus, &message_key(seq), &body);
    txn.put(Cf::Bus, &topic_key(new.topic, seq), &[]);
    (seq, ts)
}

/// Puts a message exactly as another store held it (a replay of the shipped log): the caller
/// has checked that `seq` is the transaction's next one.
pub fn put_shipped(txn: &mut Txn<'_>, seq: u64, topic: &str, raw: &[u8]) {
    txn.put(Cf::Bus, &message_key(seq), raw);
    txn.put(Cf::Bus, &topic_key(topic, seq), &[]);
}

/// One committed write: its first and last seq, and its messages as stored.
pub type Write = (u64, u64, Vec<Vec<u8>>);

/// The committed writes after `after`, whole, oldest first, until they hold `max_bytes` of
/// messages (at least one write, however large). A message of a store older than commit
/// marks is a write of its own.
pub fn committed_after(
    db: &rocksdb::DB,
    after: u64,
    last_seq: u64,
    max_bytes: usize,
) -> store::Result<Vec<Write>> {
    let bus = cf(db, Cf::Bus);
    let mut writes = Vec::new();
    let (mut next, mut bytes) = (after.saturating_add(1), 0usize);
    while next <= last_seq && (writes.is_empty() || bytes < max_bytes) {
        let mark = store::commit_mark_key(next);
        let end = match db.iterator_cf(bus, IteratorMode::From(&mark, Direction::Forward)).next() {
            Some(item) => {
                let (key, value) = item?;
                match key.first() == Some(&store::BUS_COMMIT_PREFIX) {
                    true if store::decode_seq(&value)? == next => store::decode_seq(&key[1..])?,
                    _ => next,
                }
            }
            None => next,
        };
        if end > last_seq {
            break;
        }
        let mut messages = Vec::with_capacity((end - next + 1) as usize);
        let from = message_key(next);
        for item in db.iterator_cf(bus, IteratorMode::From(&from, Direction::Forward)) {
            let (key, value) = item?;
            if key.first() != Some(&BUS_MESSAGE_PREFIX) || store::decode_seq(&key[1..])? > end {
                break;
            }
            bytes += value.len();
            messages.push(value.to_vec());
        }
        if messages.len() as u64 != end - next + 1 {
            return Err(store::Error::Corrupt {
                key: format!("bus messages {next}-{end}"),
                reason: "the log has a gap".into(),
            });
        }
        writes.push((next, end, messages));
        next = end + 1;
    }
    Ok(writes)
}

/// The `ts` of message `seq`, in milliseconds, if it is there.
pub fn message_ts_ms(db: &rocksdb::DB, seq: u64) -> Option<i64> {
    let raw = db.get_cf(cf(db, Cf::Bus), message_key(seq)).ok()??;
    store::ts_ms_of(&raw)
}

/// Every stored consumer offset.
pub fn consumer_offsets(db: &rocksdb::DB) -> store::Result<std::collections::BTreeMap<String, u64>> {
    let mut offsets = std::collections::BTreeMap::new();
    for item in db.prefix_iterator_cf(cf(db, Cf::Bus), [CONSUMER_PREFIX]) {
        let (key, value) = item?;
        if key.first() != Some(&CONSUMER_PREFIX) {
            break;
        }
        if let Ok(consumer) = serde_json::from_slice::<Consumer>(&value) {
            offsets.insert(consumer.name, consumer.offset);
        }
    }
    Ok(offsets)
}

/// Puts consumer offsets shipped with the log (a replay), as of `at`.
pub fn put_consumers(txn: &mut Txn<'_>, offsets: &std::collections::BTreeMap<String, u64>, at: &str) {
    for (name, offset) in offsets {
        let consumer = Consumer { name: name.clone(), offset: *offset, updated_at: at.to_owned() };
        let body = serde_json::to_vec(&consumer).expect("a consumer always serialises");
        txn.put(Cf::Bus, &consumer_key(name), &body);
    }
}

/// Whether any message after `seq` names `event_id` (used to check that nothing touched an
/// event between its backup and its deletion).
pub fn concerns_event_after(db: &rocksdb::DB, seq: u64, event_id: &str) -> store::Result<bool> {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(rename = "eventId", borrow, default)]
        event_id: Option<std::borrow::Cow<'a, str>>,
    }
    let from = message_key(seq.saturating_add(1));
    for item in db.iterator_cf(cf(db, Cf::Bus), IteratorMode::From(&from, Direction::Forward)) {
        let (key, value) = item?;
        if key.first() != Some(&BUS_MESSAGE_PREFIX) {
            break;
        }
        let probe: Probe<'_> = serde_json::from_slice(&value).map_err(|e| store::Error::Corrupt {
            key: format!("bus message {key:?}"),
            reason: e.to_string(),
        })?;
        if probe.event_id.as_deref() == Some(event_id) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn write_json(out: &mut Vec<u8>, value: &str) {
    serde_json::to_writer(out, value).expect("writing JSON to memory cannot fail");
}

fn message_key(seq: u64) -> [u8; 9] {
    let mut key = [BUS_MESSAGE_PREFIX; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn topic_prefix(topic: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(topic.len() + 10);
    key.push(TOPIC_PREFIX);
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key
}

fn topic_key(topic: &str, seq: u64) -> Vec<u8> {
    let mut key = topic_prefix(topic);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn consumer_key(name: &str) -> Vec<u8> {
    [&[CONSUMER_PREFIX][..], name.as_bytes()].concat()
}

/// The bus over the shared store. Its methods block: call them off the async runtime.
#[derive(Debug, Clone)]
pub struct Bus {
    store: Arc<Store>,
}

impl Bus {
    /// A bus over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Bus { store }
    }

    /// Publishes a client message to its own topic.
    pub fn publish(&self, topic: &str, kind: &str, data: Value) -> Result<Message> {
        check_topic(topic)?;
        if RESERVED_TOPICS.contains(&topic) {
            return Err(Error::ReservedTopic(topic.to_owned()));
        }
        if !names::is_token(kind, 128) {
            return Err(Error::InvalidType(kind.to_owned()));
        }
        let payload = serde_json::to_vec(&data).expect("a JSON value serialises");
        let mut txn = self.store.begin()?;
        let new =
            NewMessage { topic, kind, event_id: None, collection: None, record_id: None, data: &payload };
        let (seq, ts) = append(&mut txn, new);
        txn.commit()?;
        Ok(Message {
            seq,
            ts,
            topic: topic.into(),
            kind: kind.into(),
            event_id: None,
            collection: None,
            record_id: None,
            data,
        })
    }

    /// Reads up to `limit` messages after `after`, of one topic or of all.
    pub fn read(&self, after: u64, limit: usize, topic: Option<&str>) -> Result<Page> {
        if let Some(topic) = topic {
            check_topic(topic)?;
        }
        let limit = limit.clamp(1, MAX_READ);
        let db = self.store.db()?;
        let bus = cf(&db, Cf::Bus);
        let start = after.saturating_add(1);
        let mut messages = Vec::new();
        match topic {
            None => {
                let from = message_key(start);
                for item in db.iterator_cf(bus, IteratorMode::From(&from, Direction::Forward)) {
                    let (key, value) = item.map_err(store::Error::from)?;
                    if key.first() != Some(&BUS_MESSAGE_PREFIX) || messages.len() == limit {
                        break;
                    }
                    messages.push(decode(&key, &value)?);
                }
            }
            Some(topic) => {
                let prefix = topic_prefix(topic);
                let from = topic_key(topic, start);
                let mut keys = Vec::new();
                for item in db.iterator_cf(bus, IteratorMode::From(&from, Direction::Forward)) {
                    let (key, _) = item.map_err(store::Error::from)?;
                    if !key.starts_with(&prefix) || keys.len() == limit {
                        break;
                    }
                    keys.push(message_key(store::decode_seq(&key[prefix.len()..])?));
                }
                for (key, value) in keys.iter().zip(db.multi_get_cf(keys.iter().map(|k| (bus, k)))) {
                    let value = value.map_err(store::Error::from)?.ok_or_else(|| store::Error::Corrupt {
                        key: format!("{key:?}"),
                        reason: "topic index points at a missing message".into(),
                    })?;
                    messages.push(decode(key, &value)?);
                }
            }
        }
        let last_seq = self.store.head().last_seq.max(messages.last().map_or(0, |m| m.seq));
        Ok(Page { messages, last_seq, timeline: self.store.timeline().id })
    }

    /// The stored offset of a consumer.
    pub fn consumer(&self, name: &str) -> Result<Consumer> {
        check_consumer(name)?;
        let db = self.store.db()?;
        let raw = db
            .get_cf(cf(&db, Cf::Bus), consumer_key(name))
            .map_err(store::Error::from)?
            .ok_or_else(|| Error::UnknownConsumer(name.to_owned()))?;
        serde_json::from_slice(&raw).map_err(|e| {
            Error::Store(store::Error::Corrupt { key: format!("consumer {name}"), reason: e.to_string() })
        })
    }

    /// Stores a consumer offset. The offset may not be past the end of the log. With
    /// `timeline`, the offset is stored only if the log is still on that timeline: an offset
    /// read on a log that a restore has since replaced would skip the new messages.
    pub fn set_consumer(&self, name: &str, offset: u64, timeline: Option<&str>) -> Result<Consumer> {
        check_consumer(name)?;
        let mut txn = self.store.begin()?;
        let current = self.store.timeline().id;
        if let Some(timeline) = timeline.filter(|t| *t != current) {
            return Err(Error::TimelineChanged { sent: timeline.to_owned(), current });
        }
        let last_seq = self.store.head().last_seq;
        if offset > last_seq {
            return Err(Error::OffsetPastEnd { offset, last_seq });
        }
        let consumer = Consumer { name: name.to_owned(), offset, updated_at: now() };
        let body = serde_json::to_vec(&consumer).expect("a consumer always serialises");
        txn.put(Cf::Bus, &consumer_key(name), &body);
        txn.commit()?;
        Ok(consumer)
    }
}

fn decode(key: &[u8], value: &[u8]) -> Result<Message> {
    serde_json::from_slice(value)
        .map_err(|e| Error::Store(store::Error::Corrupt { key: format!("{key:?}"), reason: e.to_string() }))
}

fn check_topic(topic: &str) -> Result<()> {
    if names::is_topic(topic) {
        Ok(())
    } else {
        Err(Error::InvalidTopic(topic.to_owned()))
    }
}

fn check_consumer(name: &str) -> Result<()> {
    if names::is_token(name, 128) {
        Ok(())
    } else {
        Err(Error::InvalidConsumer(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    fn message(data: &[u8]) -> NewMessage<'_> {
        NewMessage { topic: "t", kind: "k", event_id: None, collection: None, record_id: None, data }
    }

    #[test]
    fn ts_never_goes_back_and_every_write_ends_with_a_commit_mark() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig { sync_writes: false, block_cache_mb: 8 };
        let ahead = "2999-01-01T00:00:00.000Z";
        {
            let store = Store::open(&dir.path().join("db"), config.clone()).unwrap();
            // One write of three messages, then a message stamped in the future, as a clock
            // that was ahead and stepped back would leave it.
            let mut txn = store.begin().unwrap();
            for _ in 0..3 {
                append(&mut txn, message(b"{}"));
            }
            txn.commit().unwrap();
            let mut txn = store.begin().unwrap();
            let seq = txn.next_seq();
            let body =
                format!("{{\"seq\":{seq},\"ts\":\"{ahead}\",\"topic\":\"t\",\"type\":\"k\",\"data\":{{}}}}");
            txn.put(Cf::Bus, &message_key(seq), body.as_bytes());
            txn.commit().unwrap();
            store.close().unwrap();
        }
        // Reopened (the clock "behind" the last message), the next message is not earlier.
        let store = Store::open(&dir.path().join("db"), config).unwrap();
        let mut txn = store.begin().unwrap();
        let (seq, ts) = append(&mut txn, message(b"{}"));
        txn.commit().unwrap();
        assert_eq!((seq, ts.as_str()), (5, ahead));
        // Marks: the first write's last message (3) names its first (1); each later write too.
        let db = store.db().unwrap();
        let marks: Vec<(u64, u64)> = db
            .prefix_iterator_cf(cf(&db, Cf::Bus), [store::BUS_COMMIT_PREFIX])
            .map(|item| item.unwrap())
            .take_while(|(key, _)| key.first() == Some(&store::BUS_COMMIT_PREFIX))
            .map(|(key, value)| (store::decode_seq(&key[1..]).unwrap(), store::decode_seq(&value).unwrap()))
            .collect();
        assert_eq!(marks, vec![(3, 1), (4, 4), (5, 5)]);
    }
}
