//! Moving whole events in and out of the registry: a consistent read of one event (for event
//! backups), merging documents back (restores and clones), and purging what an archive holds.
//!
//! Merges and purges go through the same transactions and bus messages as every other change,
//! so consumers see a restored record as `record.created` like any other.

use std::collections::BTreeMap;

use rocksdb::{Direction, IteratorMode, ReadOptions, DB};
use serde::Serialize;

use super::{append, check_collection, check_id, keys, records_counter, Doc, Error, Registry, Result};
use crate::store::{cf, Cf, EVENTS_COUNTER};

/// What a restore did, or would do, to the records of one collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Records that did not exist.
    pub created: u64,
    /// Records that existed and were replaced by the backup's copy.
    pub overwritten: u64,
    /// Records that existed and were left as they are.
    pub skipped: u64,
}

impl Tally {
    /// Adds another tally.
    pub fn add(&mut self, other: Tally) {
        self.created += other.created;
        self.overwritten += other.overwritten;
        self.skipped += other.skipped;
    }
}

/// What a restore did to an event document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventAction {
    /// The event did not exist and was put back.
    Created,
    /// The event existed and was replaced by the backup's copy.
    Overwritten,
    /// The event existed and was left as it is.
    Skipped,
}

/// How documents are merged into the live registry.
#[derive(Debug, Clone, Copy)]
pub struct Merge {
    /// Replace documents that exist (otherwise they are skipped).
    pub overwrite: bool,
    /// Count only; change nothing.
    pub dry_run: bool,
}

/// One record to merge: collection, record id, stored document bytes.
pub type RecordIn = (String, String, Vec<u8>);

/// One event read at a single point in time: its document and every record, as stored.
pub struct EventSnapshot<'a> {
    db: &'a DB,
    snapshot: rocksdb::Snapshot<'a>,
    id: String,
    document: Doc,
    seq: u64,
}

impl EventSnapshot<'_> {
    /// The event id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The event document.
    pub fn document(&self) -> &Doc {
        &self.document
    }

    /// Every bus message up to this sequence number had landed when the snapshot was taken.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Records and bytes per collection.
    pub fn counts(&self) -> Result<BTreeMap<String, (u64, u64)>> {
        let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        self.records(|collection, doc| {
            let entry = counts.entry(collection.to_owned()).or_default();
            entry.0 += 1;
            entry.1 += doc.len() as u64;
            Ok::<_, Error>(())
        })?;
        Ok(counts)
    }

    /// Calls `f(collection, document)` for every record, by collection, then record id.
    pub fn records<E: From<Error>>(
        &self,
        mut f: impl FnMut(&str, &[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let prefix = keys::event_records(&self.id);
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self.snapshot);
        opts.set_iterate_upper_bound(keys::prefix_end(&prefix));
        let iter = self.db.iterator_cf_opt(
            cf(self.db, Cf::Registry),
            opts,
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(Error::from)?;
            let Some((collection, _)) = keys::split_record(&key, &prefix) else { break };
            f(collection, &value)?;
        }
        Ok(())
    }
}

impl Registry {
    /// Runs `f` on a consistent snapshot of one event.
    pub fn snapshot_event<T, E: From<Error>>(
        &self,
        id: &str,
        f: impl FnOnce(&EventSnapshot<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        check_id(id)?;
        let db = self.store.db().map_err(Error::from)?;
        // The head is read before the snapshot: every message up to it is in the snapshot, and
        // anything later is looked at again before a delete (see `delete_event_unchanged`).
        let seq = self.store.head().last_seq;
        let snapshot = db.snapshot();
        let document = snapshot
            .get_cf(cf(&db, Cf::Registry), keys::event(id))
            .map_err(Error::from)?
            .map(Doc)
            .ok_or_else(|| Error::EventNotFound(id.into()))?;
        let view = EventSnapshot { db: &db, snapshot, id: id.to_owned(), document, seq };
        f(&view)
    }

    /// Whether an event exists.
    pub fn event_exists(&self, id: &str) -> Result<bool> {
        check_id(id)?;
        let db = self.store.db()?;
        let found = db.get_pinned_cf(cf(&db, Cf::Registry), keys::event(id))?.is_some();
        Ok(found)
    }

    /// Puts an event document back under `id`: created when missing; when it exists,
    /// overwritten if `merge.overwrite`, else skipped. Returns whether it existed.
    pub fn merge_event(&self, id: &str, doc: &[u8], merge: Merge) -> Result<(bool, EventAction)> {
        check_id(id)?;
        if merge.dry_run {
            let existed = self.event_exists(id)?;
            return Ok((existed, event_action(existed, merge.overwrite)));
        }
        let mut txn = self.store.begin()?;
        let key = keys::event(id);
        let existed = txn.get(Cf::Registry, &key)?.is_some();
        let action = event_action(existed, merge.overwrite);
        let kind = match action {
            EventAction::Skipped => return Ok((existed, action)),
            EventAction::Created => {
                txn.count(EVENTS_COUNTER, 1);
                "event.created"
            }
            EventAction::Overwritten => "event.updated",
        };
        txn.put(Cf::Registry, &key, doc);
        append(&mut txn, kind, id, None, None, doc);
        txn.commit()?;
        Ok((existed, action))
    }

    /// Merges records into an existing event in one transaction, adding to `tallies`.
    pub fn merge_records(
        &self,
        event_id: &str,
        records: &[RecordIn],
        merge: Merge,
        tallies: &mut BTreeMap<String, Tally>,
    ) -> Result<()> {
        check_id(event_id)?;
        for (collection, id, _) in records {
            check_collection(collection)?;
            check_id(id)?;
        }
        if merge.dry_run {
            let db = self.store.db()?;
            let handle = cf(&db, Cf::Registry);
            let keys: Vec<Vec<u8>> = records.iter().map(|(c, id, _)| keys::record(event_id, c, id)).collect();
            for ((collection, _, _), found) in
                records.iter().zip(db.multi_get_cf(keys.iter().map(|k| (handle, k))))
            {
                tally(tallies, collection, found?.is_some(), merge.overwrite);
            }
            return Ok(());
        }
        let mut txn = self.store.begin()?;
        if txn.get(Cf::Registry, &keys::event(event_id))?.is_none() {
            return Err(Error::EventNotFound(event_id.into()));
        }
        let mut batch_tallies: BTreeMap<String, Tally> = BTreeMap::new();
        for (collection, id, doc) in records {
            let key = keys::record(event_id, collection, id);
            let existed = txn.get(Cf::Registry, &key)?.is_some();
            let kind = match (existed, merge.overwrite) {
                (false, _) => "record.created",
                (true, true) => "record.updated",
                (true, false) => {
                    tally(&mut batch_tallies, collection, true, false);
                    continue;
                }
            };
            tally(&mut batch_tallies, collection, existed, merge.overwrite);
            txn.put(Cf::Registry, &key, doc);
            append(&mut txn, kind, event_id, Some(collection), Some(id), doc);
        }
        for (collection, t) in &batch_tallies {
            if t.created > 0 {
                txn.count(&records_counter(collection), t.created as i64);
            }
        }
        txn.commit()?;
        for (collection, t) in batch_tallies {
            tallies.entry(collection).or_default().add(t);
        }
        Ok(())
    }

    /// Deletes the records of one collection of an event whose stored bytes still equal the
    /// archived copy; records changed or created since the archive are kept. Returns
    /// (deleted, kept because changed).
    pub fn purge_records(
        &self,
        event_id: &str,
        collection: &str,
        archived: &[(String, Vec<u8>)],
    ) -> Result<(u64, u64)> {
        check_id(event_id)?;
        check_collection(collection)?;
        let mut txn = self.store.begin()?;
        let (mut deleted, mut kept) = (0u64, 0u64);
        // Which records went: a replay of the log deletes exactly these.
        let mut ids = Vec::new();
        for (id, doc) in archived {
            check_id(id)?;
            let key = keys::record(event_id, collection, id);
            match txn.get(Cf::Registry, &key)? {
                Some(current) if current == *doc => {
                    txn.delete(Cf::Registry, &key);
                    deleted += 1;
                    ids.push(id.as_str());
                }
                Some(_) => kept += 1,
                None => {}
            }
        }
        if deleted > 0 {
            txn.count(&records_counter(collection), -(deleted as i64));
            let data = serde_json::json!({"collection": collection, "deleted": deleted, "recordIds": ids});
            let data = serde_json::to_vec(&data).expect("serialisable");
            append(&mut txn, "collection.purged", event_id, Some(collection), None, &data);
            txn.commit()?;
        }
        Ok((deleted, kept))
    }

    /// Deletes an event if no bus message after `seq` concerns it (so that a backup taken at
    /// `seq` holds exactly what is deleted); otherwise [`Error::ChangedSinceBackup`].
    pub fn delete_event_unchanged(
        &self,
        id: &str,
        if_match: Option<u64>,
        seq: u64,
    ) -> Result<super::Deleted> {
        self.delete_event_guarded(id, if_match, Some(seq))
    }
}

fn event_action(existed: bool, overwrite: bool) -> EventAction {
    match (existed, overwrite) {
        (false, _) => EventAction::Created,
        (true, true) => EventAction::Overwritten,
        (true, false) => EventAction::Skipped,
    }
}

fn tally(tallies: &mut BTreeMap<String, Tally>, collection: &str, existed: bool, overwrite: bool) {
    let t = tallies.entry(collection.to_owned()).or_default();
    match (existed, overwrite) {
        (false, _) => t.created += 1,
        (true, true) => t.overwritten += 1,
        (true, false) => t.skipped += 1,
    }
}

/// Reads the registry of a store opened read-only (an unpacked archive), in key order.
#[derive(Clone, Copy)]
pub struct Archived<'a>(pub &'a DB);

impl Archived<'_> {
    /// An event document.
    pub fn event(&self, id: &str) -> Result<Option<Vec<u8>>> {
        check_id(id)?;
        Ok(self.0.get_cf(cf(self.0, Cf::Registry), keys::event(id))?)
    }

    /// Calls `f(id, document)` for each event, or for `only`; `f` returns `false` to stop.
    pub fn events<E: From<Error>>(
        &self,
        only: Option<&str>,
        mut f: impl FnMut(&str, &[u8]) -> std::result::Result<bool, E>,
    ) -> std::result::Result<(), E> {
        if let Some(id) = only {
            if let Some(doc) = self.event(id)? {
                f(id, &doc)?;
            }
            return Ok(());
        }
        let iter = self
            .0
            .iterator_cf(cf(self.0, Cf::Registry), IteratorMode::From(keys::EVENTS, Direction::Forward));
        for item in iter {
            let (key, value) = item.map_err(Error::from)?;
            let Some(id) = key.strip_prefix(keys::EVENTS) else { break };
            if !f(&String::from_utf8_lossy(id), &value)? {
                break;
            }
        }
        Ok(())
    }

    /// Calls `f(event id, collection, record id, document)` for each record of one event or of all;
    /// `f` returns `false` to stop.
    pub fn records<E: From<Error>>(
        &self,
        event: Option<&str>,
        mut f: impl FnMut(&str, &str, &str, &[u8]) -> std::result::Result<bool, E>,
    ) -> std::result::Result<(), E> {
        let prefix = match event {
            Some(id) => {
                check_id(id)?;
                keys::event_records(id)
            }
            None => keys::RECORDS.to_vec(),
        };
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(keys::prefix_end(&prefix));
        let iter = self.0.iterator_cf_opt(
            cf(self.0, Cf::Registry),
            opts,
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(Error::from)?;
            let Some((event_id, collection, id)) = keys::split_any_record(&key) else { break };
            if !f(event_id, collection, id, &value)? {
                break;
            }
        }
        Ok(())
    }
}
