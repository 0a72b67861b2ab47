//! Timelines: which history the bus log belongs to.
//!
//! A restore rewinds the log to a backup's `lastSeq`, and later writes reuse sequence numbers
//! with different contents. Each such break starts a new timeline: a durable id in the `meta`
//! column family, stored with every backup and shipped log segment, and shown to consumers,
//! who resync when it changes. A timeline remembers its ancestry (`history`), so a
//! point-in-time restore knows which backups and log segments lead to any of its moments.

use std::path::Path;

use rocksdb::{WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use super::{cf, Cf, Error, Result};

/// Key of the timeline in the `meta` column family.
pub const TIMELINE_KEY: &[u8] = b"timeline";
/// Most ancestors a timeline remembers; older ones are forgotten (a point-in-time restore
/// cannot reach back through more than this many restores).
pub const MAX_HISTORY: usize = 64;
/// Largest stored timeline read (the history is bounded, so a real one is a few KiB).
const MAX_TIMELINE_BYTES: usize = 64 << 10;

/// Why a timeline began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Reason {
    /// A new, empty store.
    Created,
    /// A store older than timelines, first opened by a build that has them.
    Adopted,
    /// A whole-store restore (hot, drop-in, at startup, or onto a fresh machine).
    Restore,
    /// A point-in-time restore.
    PointInTime,
    /// A store format migration.
    Migration,
    /// A standby promoted to primary.
    Promote,
}

/// Where an ancestor timeline was left: its messages up to `endSeq` belong to this history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fork {
    /// The ancestor's id.
    pub timeline: String,
    /// Its last message that this history keeps.
    pub end_seq: u64,
}

/// A timeline, as stored in the store and shipped with the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    /// A ULID: unique across machines, and sorting by when it began.
    pub id: String,
    /// When it began, RFC 3339 UTC.
    pub started_at: String,
    /// Why.
    pub reason: Reason,
    /// The `lastSeq` it began at: its own messages start after it.
    pub start_seq: u64,
    /// Its ancestors, oldest first; the last one is the timeline it branched from.
    #[serde(default)]
    pub history: Vec<Fork>,
}

impl Timeline {
    /// A first timeline, with no ancestors.
    pub fn first(reason: Reason, start_seq: u64) -> Timeline {
        Timeline { id: new_id(), started_at: now(), reason, start_seq, history: Vec::new() }
    }

    /// The timeline that branches from this one after its message `at_seq`.
    pub fn branch(&self, reason: Reason, at_seq: u64) -> Timeline {
        let mut history = self.history.clone();
        history.push(Fork { timeline: self.id.clone(), end_seq: at_seq });
        if history.len() > MAX_HISTORY {
            history.drain(..history.len() - MAX_HISTORY);
        }
        Timeline { id: new_id(), started_at: now(), reason, start_seq: at_seq, history }
    }

    /// Whether message `seq` of timeline `id` belongs to this history: a message of this
    /// timeline, or of an ancestor up to where this history left it.
    pub fn holds(&self, id: &str, seq: u64) -> bool {
        if id == self.id {
            return true;
        }
        // The newest fork from `id` bounds it (a history can pass through a timeline once).
        self.history.iter().rev().find(|f| f.timeline == id).is_some_and(|f| seq <= f.end_seq)
    }

    /// Checks a timeline read from a file or object as hostile input.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !is_id(&self.id) || self.history.iter().any(|f| !is_id(&f.timeline)) {
            return Err("its timeline ids are not ULIDs".into());
        }
        // A store never reaches 2^53: every `+ 1` on a seq read from here is safe.
        let bound = 1u64 << 53;
        if self.start_seq > bound || self.history.iter().any(|f| f.end_seq > bound) {
            return Err("its seqs are beyond what a store can hold (2^53)".into());
        }
        if self.history.len() > MAX_HISTORY {
            return Err(format!("its history holds more than {MAX_HISTORY} timelines"));
        }
        if chrono::DateTime::parse_from_rfc3339(&self.started_at).is_err() || self.started_at.len() > 64 {
            return Err("its startedAt is not an RFC 3339 time".into());
        }
        Ok(())
    }

    /// Parses a stored or shipped timeline.
    pub fn parse(raw: &[u8]) -> std::result::Result<Timeline, String> {
        if raw.len() > MAX_TIMELINE_BYTES {
            return Err(format!("a timeline of {} bytes is more than {MAX_TIMELINE_BYTES}", raw.len()));
        }
        let timeline: Timeline = serde_json::from_slice(raw).map_err(|e| format!("not a timeline: {e}"))?;
        timeline.check()?;
        Ok(timeline)
    }
}

/// Whether `id` is a timeline id (a ULID in its canonical form).
pub fn is_id(id: &str) -> bool {
    id.len() == 26 && ulid::Ulid::from_string(id).is_ok_and(|u| u.to_string() == id)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn new_id() -> String {
    ulid::Ulid::new().to_string()
}

/// Reads the timeline of an open store (`None` for a store older than timelines).
pub fn read(db: &DB) -> Result<Option<Timeline>> {
    let Some(raw) = db.get_cf(cf(db, Cf::Meta), TIMELINE_KEY)? else { return Ok(None) };
    Timeline::parse(&raw).map(Some).map_err(|reason| Error::Corrupt { key: "timeline".into(), reason })
}

/// Adds the write of `timeline` to a batch.
pub fn put(db: &DB, batch: &mut WriteBatch, timeline: &Timeline) {
    let body = serde_json::to_vec(timeline).expect("a timeline serialises");
    batch.put_cf(cf(db, Cf::Meta), TIMELINE_KEY, body);
}

/// Writes `timeline` into an open store, synced.
pub fn write(db: &DB, timeline: &Timeline) -> Result<()> {
    let mut batch = WriteBatch::default();
    put(db, &mut batch, timeline);
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)?;
    Ok(())
}

/// The timeline that follows the current one of `db` (whose log ends at `last_seq`), or a
/// first one for a store that has none.
pub fn next(db: &DB, reason: Reason, last_seq: u64) -> Result<Timeline> {
    Ok(match read(db)? {
        Some(current) => current.branch(reason, last_seq),
        None => Timeline::first(reason, last_seq),
    })
}

/// Starts a new timeline in the closed store at `dir` (a restored store about to be put in
/// place): opened, stamped, flushed and closed. Returns it.
pub fn stamp_dir(dir: &Path, config: &super::StoreConfig, reason: Reason) -> Result<Timeline> {
    let (opts, descriptors) = super::options::build(config);
    let db = DB::open_cf_descriptors(&opts, dir, descriptors)?;
    let last_seq = super::load_write_state(&db)?.last_seq;
    let timeline = next(&db, reason, last_seq)?;
    write(&db, &timeline)?;
    db.flush()?;
    drop(db);
    Ok(timeline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_holds_its_ancestors_up_to_where_it_left_them() {
        let first = Timeline::first(Reason::Created, 0);
        let second = first.branch(Reason::Restore, 10);
        let third = second.branch(Reason::PointInTime, 25);
        assert_eq!(third.history.last().map(|f| f.timeline.as_str()), Some(second.id.as_str()));
        assert!(third.holds(&first.id, 10) && !third.holds(&first.id, 11));
        assert!(third.holds(&second.id, 25) && !third.holds(&second.id, 26));
        assert!(third.holds(&third.id, 1_000));
        assert!(!third.holds("01ARZ3NDEKTSV4RRFFQ69G5FAV", 1));
        assert_eq!(Timeline::parse(&serde_json::to_vec(&third).unwrap()).unwrap(), third);
        let mut long = first.clone();
        for i in 0..(MAX_HISTORY as u64 + 5) {
            long = long.branch(Reason::Restore, i);
        }
        assert_eq!(long.history.len(), MAX_HISTORY);
    }

    #[test]
    fn hostile_timelines_are_refused() {
        for raw in [
            &b"{}"[..],
            br#"{"id":"x","startedAt":"2026-01-01T00:00:00Z","reason":"restore","startSeq":0}"#,
            br#"{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","startedAt":"yesterday","reason":"restore","startSeq":0}"#,
            br#"{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","startedAt":"2026-01-01T00:00:00Z","reason":"x","startSeq":0}"#,
        ] {
            assert!(Timeline::parse(raw).is_err(), "{}", String::from_utf8_lossy(raw));
        }
        assert!(Timeline::parse(&vec![b' '; MAX_TIMELINE_BYTES + 1]).is_err());
    }
}
