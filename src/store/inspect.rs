//! Reading a store that is not open for writing (a checkpoint, an unpacked archive, a closed
//! store), without changing it.

use std::collections::BTreeMap;
use std::path::Path;

use rocksdb::DB;

use super::{load_write_state, read_format, target_format, Cf, Error, Result};

/// What a closed or checkpointed store holds, read without opening it for writing.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Store format version.
    pub format: u32,
    /// Newest bus sequence number.
    pub last_seq: u64,
    /// Counters (`events`, `records/{collection}`).
    pub counters: BTreeMap<String, u64>,
    /// Its timeline (`None` for a store older than timelines).
    pub timeline: Option<super::Timeline>,
    /// The `ts` of its newest message, in milliseconds (0 without messages).
    pub last_ts_ms: i64,
}

/// Opens an eventvault store read-only (a checkpoint or an unpacked archive) and returns its
/// format version. Refuses stores that are not eventvault's or are of a newer format.
pub fn open_read_only(path: &Path, max_open_files: i32) -> Result<(DB, u32)> {
    // Table files are opened lazily and per-file statistics skipped, so that a
    // multi-gigabyte store costs little memory to open.
    let mut opts = rocksdb::Options::default();
    opts.set_max_open_files(max_open_files);
    opts.set_skip_stats_update_on_db_open(true);
    let names = DB::list_cf(&opts, path)?;
    let known = |n: &String| n == "default" || Cf::ALL.iter().any(|c| c.name() == n);
    if names.iter().any(|n| !known(n)) || !Cf::ALL.iter().all(|c| names.iter().any(|n| n == c.name())) {
        return Err(Error::Foreign {
            path: path.to_path_buf(),
            reason: format!("column families {names:?}"),
        });
    }
    let db = DB::open_cf_for_read_only(&opts, path, &names, false)?;
    let format = read_format(&db, path)?
        .ok_or_else(|| Error::Foreign { path: path.to_path_buf(), reason: "no format version".into() })?;
    if format > target_format() {
        return Err(Error::NewerFormat {
            path: path.to_path_buf(),
            found: format,
            supported: target_format(),
        });
    }
    Ok((db, format))
}

/// Opens the store at `path` read-only and reads what it holds. Refuses stores that are not
/// eventvault's or are of a newer format.
pub fn inspect(path: &Path) -> Result<Snapshot> {
    let (db, format) = open_read_only(path, 16)?;
    let state = load_write_state(&db)?;
    Ok(Snapshot {
        format,
        last_seq: state.last_seq,
        counters: state.counters,
        timeline: state.timeline,
        last_ts_ms: state.last_ts_ms,
    })
}

/// A SHA-256 over what a closed store holds for its users: every event and record (the
/// registry, whole) and every bus message, keys and values, in key order. Two stores with the
/// same digest hold the same data, whatever their files, timelines or consumer offsets.
pub fn digest(path: &Path) -> Result<String> {
    use rocksdb::{Direction, IteratorMode};
    use sha2::{Digest, Sha256};
    let (db, _) = open_read_only(path, 16)?;
    let mut hasher = Sha256::new();
    let parts = [(Cf::Registry, None), (Cf::Bus, Some(super::BUS_MESSAGE_PREFIX))];
    for (which, prefix) in parts {
        let handle = super::cf(&db, which);
        let from = prefix.map(|p| vec![p]).unwrap_or_default();
        for item in db.iterator_cf(handle, IteratorMode::From(&from, Direction::Forward)) {
            let (key, value) = item?;
            if prefix.is_some_and(|p| key.first() != Some(&p)) {
                break;
            }
            // Lengths first, so that no two sequences of entries hash the same bytes.
            for part in [&key, &value] {
                hasher.update((part.len() as u64).to_le_bytes());
                hasher.update(part);
            }
        }
        hasher.update(b"\xff");
    }
    Ok(hex::encode(hasher.finalize()))
}
