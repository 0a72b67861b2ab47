//! A serialised write: everything in one `WriteBatch`.

use std::collections::BTreeMap;
use std::sync::{Arc, MutexGuard};

use rocksdb::{ColumnFamily, WriteBatch, WriteOptions, DB};

use super::{cf, Cf, Result, Store, WriteState, COUNTER_PREFIX};

/// A write in progress. It holds the store's write lock, so reads through [`Txn::get`] see
/// the latest committed state and nothing changes underneath until it commits or drops.
pub struct Txn<'a> {
    store: &'a Store,
    db: Arc<DB>,
    state: MutexGuard<'a, WriteState>,
    batch: WriteBatch,
    last_seq: u64,
    last_ts_ms: i64,
    deltas: BTreeMap<String, i64>,
    /// The writes' commit marks were given (a replay of several writes in one batch).
    marked: bool,
}

impl<'a> Txn<'a> {
    pub(super) fn new(store: &'a Store, db: Arc<DB>, state: MutexGuard<'a, WriteState>) -> Self {
        let (last_seq, last_ts_ms) = (state.last_seq, state.last_ts_ms);
        Txn {
            store,
            db,
            state,
            batch: WriteBatch::default(),
            last_seq,
            last_ts_ms,
            deltas: BTreeMap::new(),
            marked: false,
        }
    }

    /// The database, for reads and iteration.
    pub fn db(&self) -> &DB {
        &self.db
    }

    fn handle(&self, which: Cf) -> &ColumnFamily {
        cf(&self.db, which)
    }

    /// Reads a committed value.
    pub fn get(&self, which: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.handle(which), key)?)
    }

    /// Adds a put to the batch.
    pub fn put(&mut self, which: Cf, key: &[u8], value: &[u8]) {
        let handle = cf(&self.db, which);
        self.batch.put_cf(handle, key, value);
    }

    /// Adds a delete to the batch.
    pub fn delete(&mut self, which: Cf, key: &[u8]) {
        let handle = cf(&self.db, which);
        self.batch.delete_cf(handle, key);
    }

    /// Adds a range delete of `[from, to)` to the batch.
    pub fn delete_range(&mut self, which: Cf, from: &[u8], to: &[u8]) {
        let handle = cf(&self.db, which);
        self.batch.delete_range_cf(handle, from, to);
    }

    /// Reserves the next bus sequence number. Numbers are gap-free because only one
    /// transaction exists at a time and a dropped one hands out nothing.
    pub fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// The `ts` of the next message (RFC 3339, milliseconds, UTC): now, or the previous
    /// message's when the wall clock stepped back, so that `ts` never goes backwards.
    pub fn next_ts(&mut self) -> String {
        let now = chrono::Utc::now().timestamp_millis();
        self.last_ts_ms = self.last_ts_ms.max(now);
        chrono::DateTime::from_timestamp_millis(self.last_ts_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    /// Carries on from a shipped message's `ts` (a replay keeps every message as it was).
    pub fn keep_ts(&mut self, ts_ms: i64) {
        self.last_ts_ms = self.last_ts_ms.max(ts_ms);
    }

    /// Marks where one of several writes replayed in this batch ends (see
    /// [`super::commit_mark_key`]); the batch then carries no mark of its own.
    pub fn mark_write(&mut self, first: u64, last: u64) {
        let handle = cf(&self.db, Cf::Bus);
        self.batch.put_cf(handle, super::commit_mark_key(last), first.to_be_bytes());
        self.marked = true;
    }

    /// Adjusts a counter by `delta`, in the same batch.
    pub fn count(&mut self, name: &str, delta: i64) {
        let total = self.deltas.entry(name.to_owned()).or_default();
        *total = total.saturating_add(delta);
    }

    /// Writes the batch. Returns the bus sequence number of the newest message.
    pub fn commit(mut self) -> Result<u64> {
        let mut updated = Vec::with_capacity(self.deltas.len());
        for (name, delta) in std::mem::take(&mut self.deltas) {
            let current = self.state.counters.get(&name).copied().unwrap_or(0);
            let value = current.saturating_add_signed(delta);
            let key = [COUNTER_PREFIX, name.as_bytes()].concat();
            let handle = cf(&self.db, Cf::Meta);
            self.batch.put_cf(handle, key, value.to_be_bytes());
            updated.push((name, value));
        }
        // The commit mark: where this atomic write's messages end, and where they began.
        if self.last_seq != self.state.last_seq && !self.marked {
            let first = self.state.last_seq + 1;
            let handle = cf(&self.db, Cf::Bus);
            self.batch.put_cf(handle, super::commit_mark_key(self.last_seq), first.to_be_bytes());
        }
        crate::fault::point("store.before_commit")?;
        let mut opts = WriteOptions::default();
        opts.set_sync(self.store.sync_writes());
        let batch = std::mem::take(&mut self.batch);
        self.db.write_opt(batch, &opts)?;
        crate::fault::point("store.after_commit")?;

        let seq_moved = self.last_seq != self.state.last_seq;
        self.state.last_seq = self.last_seq;
        self.state.last_ts_ms = self.last_ts_ms;
        for (name, value) in updated {
            self.state.counters.insert(name, value);
        }
        if seq_moved {
            self.store.publish_head(self.last_seq);
        }
        Ok(self.last_seq)
    }
}
