//! Replaying the shipped log: each committed write of another store (or of this one before a
//! restore) applied again as one atomic write, its messages kept exactly as they were (same
//! seq, `ts` and bytes) and the registry changed as the original write changed it, from the
//! after-images the messages carry.
//!
//! A shipped message is hostile input: every id, collection and document is checked as a
//! request's would be, and a message that does not fit is refused with the write unapplied.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{check_collection, check_id, check_record_path, keys, records_counter, Error, Result};
use crate::bus::{self, REGISTRY_TOPIC};
use crate::store::{Cf, Store, Txn, EVENTS_COUNTER};

/// A shipped message, as replay reads it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Shipped<'a> {
    seq: u64,
    #[serde(borrow)]
    ts: &'a str,
    #[serde(borrow)]
    topic: &'a str,
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    event_id: Option<&'a str>,
    #[serde(default, borrow)]
    collection: Option<&'a str>,
    #[serde(default, borrow)]
    record_id: Option<&'a str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Purged {
    record_ids: Vec<String>,
}

/// How far ahead of this machine's clock a shipped message's `ts` may be (clock skew
/// between machines).
const MAX_CLOCK_AHEAD_MS: i64 = 24 * 3600 * 1000;

fn refuse(seq: u64, why: impl std::fmt::Display) -> Error {
    Error::Unreplayable(format!("message {seq}: {why}"))
}

/// The `ts` of a shipped message, in milliseconds since the epoch.
pub fn ts_ms(raw: &[u8]) -> Option<i64> {
    crate::store::ts_ms_of(raw)
}

/// Applies one committed write whose messages are `first..=first + messages.len() - 1`,
/// which must follow the store's last message. Returns the new last seq.
pub fn apply(store: &Store, first: u64, messages: &[Vec<u8>]) -> Result<u64> {
    apply_writes(store, &[(first, messages)])
}

/// Applies several committed writes, in order, in one atomic write of the store (replaying
/// is then as fast as the disk takes large batches, not one sync per write); each keeps its
/// own commit mark, so the restored log ends its writes where the original did.
pub fn apply_writes(store: &Store, writes: &[(u64, &[Vec<u8>])]) -> Result<u64> {
    let mut txn = store.begin()?;
    // Existence of keys these writes touched, which reads of the committed state do not see.
    let mut touched: HashMap<Vec<u8>, bool> = HashMap::new();
    for (first, messages) in writes {
        if messages.is_empty() {
            return Err(Error::Unreplayable(format!("the write at seq {first} holds no message")));
        }
        apply_one(&mut txn, &mut touched, *first, messages)?;
        txn.mark_write(*first, first + messages.len() as u64 - 1);
    }
    Ok(txn.commit()?)
}

fn apply_one(
    txn: &mut Txn<'_>,
    touched: &mut HashMap<Vec<u8>, bool>,
    first: u64,
    messages: &[Vec<u8>],
) -> Result<()> {
    for (i, raw) in messages.iter().enumerate() {
        let expected = first + i as u64;
        let m: Shipped<'_> = serde_json::from_slice(raw).map_err(|e| refuse(expected, e))?;
        let seq = txn.next_seq();
        if m.seq != expected || seq != expected {
            return Err(refuse(
                expected,
                format!(
                    "it has seq {} where the store's next is {seq}: the log does not follow the store",
                    m.seq
                ),
            ));
        }
        let ts = chrono::DateTime::parse_from_rfc3339(m.ts).map_err(|e| refuse(seq, e))?;
        // Every later write of the store would carry a time from the future (`ts` never goes
        // back): a clock a day ahead is not a clock, it is a forged message.
        if ts.timestamp_millis() > chrono::Utc::now().timestamp_millis() + MAX_CLOCK_AHEAD_MS {
            return Err(refuse(seq, format!("its ts {} is in the future", m.ts)));
        }
        txn.keep_ts(ts.timestamp_millis());
        if !crate::names::is_topic(m.topic) || !crate::names::is_token(m.kind, 128) {
            return Err(refuse(seq, "its topic or type is invalid"));
        }
        bus::put_shipped(txn, seq, m.topic, raw);
        if m.topic != REGISTRY_TOPIC {
            continue;
        }
        let event_id = m.event_id.ok_or_else(|| refuse(seq, "a registry change names no event"))?;
        check_id(event_id)?;
        let exists = |txn: &crate::store::Txn<'_>, touched: &HashMap<Vec<u8>, bool>, key: &[u8]| match touched
            .get(key)
        {
            Some(known) => Ok::<bool, Error>(*known),
            None => Ok(txn.get(Cf::Registry, key)?.is_some()),
        };
        let doc = || -> Result<&[u8]> {
            let bytes = m.data.get().as_bytes();
            super::check_stored(bytes).map_err(|why| refuse(seq, why))?;
            Ok(bytes)
        };
        match (m.kind, m.collection, m.record_id) {
            ("event.created" | "event.updated", None, None) => {
                let key = keys::event(event_id);
                if !exists(txn, touched, &key)? {
                    txn.count(EVENTS_COUNTER, 1);
                }
                txn.put(Cf::Registry, &key, doc()?);
                touched.insert(key, true);
            }
            ("event.deleted", None, None) => {
                let key = keys::event(event_id);
                if !exists(txn, touched, &key)? {
                    return Err(refuse(
                        seq,
                        format!("it deletes event {event_id}, which the store does not hold"),
                    ));
                }
                // What goes with it is counted here, as the deletion did, not taken from the
                // message.
                let prefix = keys::event_records(event_id);
                let mut counts: BTreeMap<String, i64> = BTreeMap::new();
                {
                    let db = txn.db();
                    let from = rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward);
                    for item in db.iterator_cf(crate::store::cf(db, Cf::Registry), from) {
                        let (k, _) = item.map_err(crate::store::Error::from)?;
                        let Some((collection, _)) = keys::split_record(&k, &prefix) else { break };
                        if touched.get(&*k) != Some(&false) {
                            *counts.entry(collection.to_owned()).or_default() += 1;
                        }
                    }
                }
                for (k, present) in touched.iter() {
                    if *present && k.starts_with(&prefix) && txn.get(Cf::Registry, k)?.is_none() {
                        if let Some((collection, _)) = keys::split_record(k, &prefix) {
                            *counts.entry(collection.to_owned()).or_default() += 1;
                        }
                    }
                }
                txn.delete_range(Cf::Registry, &prefix, &keys::prefix_end(&prefix));
                txn.delete(Cf::Registry, &key);
                touched.insert(key, false);
                touched.retain(|k, _| !k.starts_with(&prefix));
                txn.count(EVENTS_COUNTER, -1);
                for (collection, n) in counts {
                    txn.count(&records_counter(&collection), -n);
                }
            }
            ("record.created" | "record.updated", Some(collection), Some(id)) => {
                check_record_path(event_id, collection, id)?;
                if !exists(txn, touched, &keys::event(event_id))? {
                    return Err(refuse(
                        seq,
                        format!("it writes a record of event {event_id}, which the store does not hold"),
                    ));
                }
                let key = keys::record(event_id, collection, id);
                if !exists(txn, touched, &key)? {
                    txn.count(&records_counter(collection), 1);
                }
                txn.put(Cf::Registry, &key, doc()?);
                touched.insert(key, true);
            }
            ("record.deleted", Some(collection), Some(id)) => {
                check_record_path(event_id, collection, id)?;
                let key = keys::record(event_id, collection, id);
                if exists(txn, touched, &key)? {
                    txn.delete(Cf::Registry, &key);
                    txn.count(&records_counter(collection), -1);
                    touched.insert(key, false);
                }
            }
            ("collection.purged", Some(collection), None) => {
                check_collection(collection)?;
                let purged: Purged = serde_json::from_str(m.data.get()).map_err(|_| {
                    refuse(seq, "a collection.purged written before eventvault named the purged records")
                })?;
                let mut gone = 0i64;
                for id in &purged.record_ids {
                    check_record_path(event_id, collection, id)?;
                    let key = keys::record(event_id, collection, id);
                    if exists(txn, touched, &key)? {
                        txn.delete(Cf::Registry, &key);
                        touched.insert(key, false);
                        gone += 1;
                    }
                }
                txn.count(&records_counter(collection), -gone);
            }
            (kind, _, _) => {
                return Err(refuse(seq, format!("{kind:?} is not a registry change replay knows")))
            }
        }
    }
    Ok(())
}

/// Stores the consumer offsets shipped with the log, none past `last_seq`.
pub fn put_consumers(store: &Store, offsets: &BTreeMap<String, u64>, last_seq: u64, at: &str) -> Result<()> {
    let clamped: BTreeMap<String, u64> = offsets
        .iter()
        .filter(|(name, _)| crate::names::is_token(name, 128))
        .map(|(name, offset)| (name.clone(), (*offset).min(last_seq)))
        .collect();
    let mut txn = store.begin()?;
    bus::put_consumers(&mut txn, &clamped, at);
    txn.commit()?;
    Ok(())
}
