//! The one RocksDB handle of the process, shared by the registry and the bus.
//!
//! Nothing else opens RocksDB. Writes go through [`Txn`], which serialises writers, hands out
//! gap-free bus sequence numbers and commits a document, its bus message and the counters in
//! one `WriteBatch`, so that all of them land or none does.

mod error;
mod inspect;
pub mod lock;
pub mod migrate;
mod options;
pub mod swap;
pub mod timeline;
mod txn;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rocksdb::{ColumnFamily, Direction, IteratorMode, DB};
use tokio::sync::watch;

pub use error::{Error, Result};
pub use inspect::{digest, inspect, open_read_only, Snapshot};
pub use timeline::Timeline;
pub use txn::Txn;

pub use migrate::target_format;

pub(crate) const FORMAT_KEY: &[u8] = b"format_version";
const COUNTER_PREFIX: &[u8] = b"count/";
/// Counter of events; records are counted per collection under `records/{collection}`.
pub const EVENTS_COUNTER: &str = "events";
/// Prefix of the per-collection record counters.
pub const RECORDS_COUNTER_PREFIX: &str = "records/";
/// Prefix of bus message keys in the bus column family (followed by the big-endian seq).
pub const BUS_MESSAGE_PREFIX: u8 = b'm';
/// Prefix of commit marks in the bus column family: `e` + the big-endian seq of the last
/// message of a committed write, whose value is the big-endian seq of its first. A restore to
/// a point in time stops only at a mark, never inside one atomic write.
pub const BUS_COMMIT_PREFIX: u8 = b'e';

/// The key of the commit mark of a write whose last message is `seq`.
pub fn commit_mark_key(seq: u64) -> [u8; 9] {
    let mut key = [BUS_COMMIT_PREFIX; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The database directory inside STORAGE_DIR. The storage directory also holds the lock file
/// and, during backups and restores, checkpoints and staging directories: keeping them on the
/// same filesystem as the database makes checkpoints hard links and swaps atomic renames.
pub const DB_DIR: &str = "db";

/// The database directory of a storage directory.
pub fn db_path(storage_dir: &Path) -> PathBuf {
    storage_dir.join(DB_DIR)
}

/// The column families. Their names are part of the store format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cf {
    /// Events and their records.
    Registry,
    /// The bus log, its topic index and consumer offsets.
    Bus,
    /// Format version and counters.
    Meta,
}

impl Cf {
    /// Every column family, in a fixed order.
    pub const ALL: [Cf; 3] = [Cf::Registry, Cf::Bus, Cf::Meta];

    /// The RocksDB column family name.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Registry => "registry",
            Cf::Bus => "bus",
            Cf::Meta => "meta",
        }
    }
}

/// Tunables of the store, taken from [`crate::config::Options`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// fsync the WAL on every commit.
    pub sync_writes: bool,
    /// Shared block cache size in MiB.
    pub block_cache_mb: usize,
}

/// Where the bus log ends, and how many times it was replaced (by a restore).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    /// Sequence number of the newest message (0 when the log is empty).
    pub last_seq: u64,
    /// Increments each time the whole log is replaced, so readers know to resync.
    pub epoch: u64,
}

/// State owned by the single writer.
#[derive(Debug, Default)]
struct WriteState {
    last_seq: u64,
    /// The `ts` of the newest message, in milliseconds: the next is never earlier, whatever
    /// the wall clock does.
    last_ts_ms: i64,
    counters: BTreeMap<String, u64>,
    /// `None` only for a store older than timelines, opened read-only.
    timeline: Option<Timeline>,
}

/// The shared store handle.
pub struct Store {
    path: PathBuf,
    config: StoreConfig,
    db: RwLock<Option<Arc<DB>>>,
    writer: Mutex<WriteState>,
    head: watch::Sender<Head>,
    /// The timeline of the open store; changes only with the writer lock held.
    timeline: RwLock<Timeline>,
    /// Requests hold a read permit while they run; a store swap takes the write permit, so it
    /// waits for in-flight requests and holds new ones back.
    gate: Arc<tokio::sync::RwLock<()>>,
    /// Set while a restore runs: new writes fail fast with [`Error::Frozen`] instead of
    /// landing in data that is about to be replaced.
    frozen: AtomicBool,
}

/// Keeps writes frozen until dropped (see [`Store::freeze`]).
#[derive(Debug)]
pub struct Frozen<'a>(&'a Store);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        self.0.frozen.store(false, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store at `path`. Refuses stores of a newer format and RocksDB
    /// directories that are not eventvault stores, without modifying them.
    pub fn open(path: &Path, config: StoreConfig) -> Result<Arc<Store>> {
        let db = open_db(path, &config)?;
        let mut state = load_write_state(&db)?;
        let timeline = ensure_timeline(&db, &mut state)?;
        let (head, _) = watch::channel(Head { last_seq: state.last_seq, epoch: 0 });
        Ok(Arc::new(Store {
            path: path.to_path_buf(),
            config,
            db: RwLock::new(Some(Arc::new(db))),
            writer: Mutex::new(state),
            head,
            timeline: RwLock::new(timeline),
            gate: Arc::new(tokio::sync::RwLock::new(())),
            frozen: AtomicBool::new(false),
        }))
    }

    /// Directory of the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The live RocksDB handle, or [`Error::Closed`] while none is open.
    pub fn db(&self) -> Result<Arc<DB>> {
        self.db.read().unwrap_or_else(|e| e.into_inner()).clone().ok_or(Error::Closed)
    }

    /// Starts a write. Writers are serialised: the returned transaction holds the write lock
    /// until it is committed or dropped.
    pub fn begin(&self) -> Result<Txn<'_>> {
        let state = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if self.frozen.load(Ordering::SeqCst) {
            return Err(Error::Frozen);
        }
        let db = self.db()?;
        Ok(Txn::new(self, db, state))
    }

    /// Freezes writes: new transactions fail with [`Error::Frozen`] until the guard drops.
    /// Returns once the transaction in progress, if any, has finished.
    pub fn freeze(&self) -> Frozen<'_> {
        self.frozen.store(true, Ordering::SeqCst);
        drop(self.writer.lock().unwrap_or_else(|e| e.into_inner()));
        Frozen(self)
    }

    /// Flushes the memtables and waits until RocksDB has no compaction left to do, so the
    /// store is in the settled state a long-running server reaches (used by `populate`).
    pub fn settle(&self) -> Result<()> {
        let db = self.db()?;
        db.flush()?;
        loop {
            let mut busy = 0;
            for &c in &Cf::ALL {
                let handle = cf(&db, c);
                busy += db.property_int_value_cf(handle, "rocksdb.compaction-pending")?.unwrap_or(0);
                busy += db.property_int_value_cf(handle, "rocksdb.num-running-compactions")?.unwrap_or(0);
            }
            if busy == 0 {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Flushes the memtables (so every acknowledged write is in table files) and writes a
    /// checkpoint of every column family into the new directory `dir`: hard links to the
    /// immutable table files, copies of the rest.
    pub fn checkpoint(&self, dir: &Path) -> Result<()> {
        let db = self.db()?;
        db.flush()?;
        rocksdb::checkpoint::Checkpoint::new(&db)?.create_checkpoint(dir)?;
        Ok(())
    }

    /// Subscribes to changes of the bus head.
    pub fn watch_head(&self) -> watch::Receiver<Head> {
        self.head.subscribe()
    }

    /// The current bus head.
    pub fn head(&self) -> Head {
        *self.head.borrow()
    }

    /// The gate that requests pass through (see [`Store`]).
    pub fn gate(&self) -> Arc<tokio::sync::RwLock<()>> {
        self.gate.clone()
    }

    /// The current timeline.
    pub fn timeline(&self) -> Timeline {
        self.timeline.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Starts a new timeline branching from the current one at the end of the log (a promoted
    /// standby). Waits for the write in progress.
    pub fn start_timeline(&self, reason: timeline::Reason) -> Result<Timeline> {
        let mut state = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let db = self.db()?;
        let next = self.timeline().branch(reason, state.last_seq);
        timeline::write(&db, &next)?;
        state.timeline = Some(next.clone());
        *self.timeline.write().unwrap_or_else(|e| e.into_inner()) = next.clone();
        self.head.send_modify(|h| h.epoch += 1);
        Ok(next)
    }

    /// Makes `next` the current timeline: a standby following its primary onto the timeline
    /// a restore there started, which branches from this one at the end of this log.
    pub fn adopt_timeline(&self, next: &Timeline) -> Result<()> {
        let mut state = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let db = self.db()?;
        timeline::write(&db, next)?;
        state.timeline = Some(next.clone());
        *self.timeline.write().unwrap_or_else(|e| e.into_inner()) = next.clone();
        self.head.send_modify(|h| h.epoch += 1);
        Ok(())
    }

    /// Current value of a counter.
    pub fn counter(&self, name: &str) -> u64 {
        let state = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        state.counters.get(name).copied().unwrap_or(0)
    }

    /// The sum of the counters whose names start with `prefix` (all records: every event's
    /// `records/…` counter).
    pub fn counter_sum(&self, prefix: &str) -> u64 {
        let state = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        state
            .counters
            .range(prefix.to_owned()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Total size in bytes of the files in the store directory.
    pub fn size_on_disk(&self) -> Result<u64> {
        dir_size(&self.path)
    }

    /// Flushes memtables and the WAL and closes the handle. Later calls get [`Error::Closed`].
    pub fn close(&self) -> Result<()> {
        let taken = self.db.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(db) = taken {
            db.flush_wal(true)?;
            db.flush()?;
            // Other clones (a request finishing) close it when they drop; normally this is the
            // last one because the HTTP server has drained.
            drop(db);
        }
        Ok(())
    }

    pub(crate) fn sync_writes(&self) -> bool {
        self.config.sync_writes
    }

    fn publish_head(&self, last_seq: u64) {
        self.head.send_modify(|h| h.last_seq = last_seq);
    }
}

/// The handle of a column family of an open database.
pub fn cf(db: &DB, cf: Cf) -> &ColumnFamily {
    // Every column family is opened with the database, so the handle always exists.
    db.cf_handle(cf.name()).expect("column family opened with the database")
}

fn open_db(path: &Path, config: &StoreConfig) -> Result<DB> {
    if let Some(pid) = lock::holder(&path.join("LOCK"))? {
        return Err(Error::Locked { path: path.to_path_buf(), pid });
    }
    let existing = path.join("CURRENT").exists();
    if existing {
        check_existing(path)?;
    } else {
        std::fs::create_dir_all(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    }
    let (db_opts, descriptors) = options::build(config);
    let db = DB::open_cf_descriptors(&db_opts, path, descriptors)?;
    let meta = cf(&db, Cf::Meta);
    if db.get_cf(meta, FORMAT_KEY)?.is_none() {
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        db.put_cf_opt(meta, FORMAT_KEY, target_format().to_string(), &opts)?;
    }
    Ok(db)
}

/// Checks an existing store's column families and format version through a read-only open,
/// so that a store we refuse is left exactly as it was.
fn check_existing(path: &Path) -> Result<Option<u32>> {
    let opts = rocksdb::Options::default();
    let names = DB::list_cf(&opts, path)?;
    let known = |n: &String| n == "default" || Cf::ALL.iter().any(|c| c.name() == n);
    if let Some(unknown) = names.iter().find(|n| !known(n)) {
        return Err(Error::Foreign {
            path: path.to_path_buf(),
            reason: format!("unknown column family {unknown:?}"),
        });
    }
    if !names.iter().any(|n| n == Cf::Meta.name()) {
        return Ok(None);
    }
    let db = DB::open_cf_for_read_only(&opts, path, &names, false)?;
    let found = read_format(&db, path)?;
    if let Some(found) = found.filter(|v| *v > target_format()) {
        return Err(Error::NewerFormat { path: path.to_path_buf(), found, supported: target_format() });
    }
    Ok(found)
}

/// Reads the format version of an open store (`None` for a store that has none yet).
pub fn read_format(db: &DB, path: &Path) -> Result<Option<u32>> {
    let Some(raw) = db.get_cf(cf(db, Cf::Meta), FORMAT_KEY)? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&raw);
    text.trim().parse().map(Some).map_err(|_| Error::Foreign {
        path: path.to_path_buf(),
        reason: format!("format version {text:?} is not a number"),
    })
}

fn load_write_state(db: &DB) -> Result<WriteState> {
    let bus = cf(db, Cf::Bus);
    let mut last_seq = 0;
    let mut last_ts_ms = 0;
    let upper = [BUS_MESSAGE_PREFIX + 1];
    let mut it = db.iterator_cf(bus, IteratorMode::From(&upper, Direction::Reverse));
    if let Some(item) = it.next() {
        let (key, value) = item?;
        if key.first() == Some(&BUS_MESSAGE_PREFIX) {
            last_seq = decode_seq(&key[1..])?;
            last_ts_ms = ts_ms_of(&value).unwrap_or(0);
        }
    }
    let counters = read_counters(db)?;
    let timeline = timeline::read(db)?;
    Ok(WriteState { last_seq, last_ts_ms, counters, timeline })
}

/// The timeline of a store opened for writing; one older than timelines is given its first.
fn ensure_timeline(db: &DB, state: &mut WriteState) -> Result<Timeline> {
    if let Some(timeline) = &state.timeline {
        return Ok(timeline.clone());
    }
    let reason = if state.last_seq == 0 { timeline::Reason::Created } else { timeline::Reason::Adopted };
    let first = Timeline::first(reason, state.last_seq);
    timeline::write(db, &first)?;
    state.timeline = Some(first.clone());
    Ok(first)
}

/// The `ts` of a stored message, in milliseconds.
pub fn ts_ms_of(message: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Ts<'a> {
        #[serde(borrow)]
        ts: &'a str,
    }
    let ts = serde_json::from_slice::<Ts<'_>>(message).ok()?.ts;
    chrono::DateTime::parse_from_rfc3339(ts).ok().map(|t| t.timestamp_millis())
}

/// Reads every counter of an open store (used at open, and on checkpoints for manifests).
pub fn read_counters(db: &DB) -> Result<BTreeMap<String, u64>> {
    let meta = cf(db, Cf::Meta);
    let mut counters = BTreeMap::new();
    for item in db.prefix_iterator_cf(meta, COUNTER_PREFIX) {
        let (key, value) = item?;
        if !key.starts_with(COUNTER_PREFIX) {
            break;
        }
        let name = String::from_utf8_lossy(&key[COUNTER_PREFIX.len()..]).into_owned();
        counters.insert(name, decode_seq(&value)?);
    }
    Ok(counters)
}

/// Decodes an 8-byte big-endian number (bus sequence numbers and counters).
pub fn decode_seq(raw: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = raw.try_into().map_err(|_| Error::Corrupt {
        key: String::from_utf8_lossy(raw).into_owned(),
        reason: format!("expected 8 bytes, found {}", raw.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Bytes under `path`. RocksDB deletes obsolete files at any moment, so a file listed and gone
/// before its size is read counted for nothing, not as an error.
fn dir_size(path: &Path) -> Result<u64> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let listing = match std::fs::read_dir(path) {
        Ok(listing) => listing,
        Err(e) if gone(&e) => return Ok(0),
        Err(e) => return Err(io(e)),
    };
    let mut total: u64 = 0;
    for entry in listing {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(io(e)),
        };
        let size = match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path())?,
            Ok(meta) => meta.len(),
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(io(e)),
        };
        total = total.saturating_add(size);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RocksDB removes obsolete files while health walks the folder; files that vanish
    /// between the listing and the size never make the walk fail.
    #[test]
    fn the_size_walk_ignores_files_that_vanish() {
        use std::sync::atomic::AtomicUsize;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let rounds = std::sync::Arc::new(AtomicUsize::new(0));
        let churn = {
            let (root, rounds) = (root.clone(), rounds.clone());
            std::thread::spawn(move || {
                while rounds.load(Ordering::Relaxed) < 50 {
                    for i in 0..200 {
                        let _ = std::fs::write(root.join(format!("{i}.sst")), b"x");
                    }
                    for i in 0..200 {
                        let _ = std::fs::remove_file(root.join(format!("{i}.sst")));
                    }
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        // Walks for as long as files come and go.
        let mut failures = Vec::new();
        while rounds.load(Ordering::Relaxed) < 50 {
            if let Err(e) = dir_size(&root) {
                failures.push(e.to_string());
            }
        }
        churn.join().unwrap();
        assert!(failures.is_empty(), "{} walks failed, first: {:?}", failures.len(), failures.first());
        assert_eq!(dir_size(&root.join("gone")).unwrap(), 0);
    }
}
