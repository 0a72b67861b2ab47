//! Continuous shipping of the bus log to the backup repository.
//!
//! While the server runs with BACKUP_REPO, committed writes are shipped as log segments (see
//! [`super::repo::log`]) at most SHIP_INTERVAL_MS after they commit, whole writes only, and
//! nothing is sent while nothing changes. RocksDB is the spool: the bus keeps every message,
//! so after a restart (or while the repository is down) shipping resumes from the last seq the
//! repository holds. A seq counts as shipped once its segment is written (and, in a folder,
//! fsynced). Small segments are merged in the background, re-read from the store, so that a
//! restore reads few objects; the small ones are removed once the merged one is written.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;

use super::repo::log::{Header, SegmentKey, CUT_BYTES, SEGMENT_FORMAT};
use super::repo::{self, Repo};
use super::BackupManager;
use crate::bus;

/// A segment whose messages take less than this is merged with its neighbours (half a cut:
/// a restore then reads segments of about [`CUT_BYTES`] each).
const SMALL_BYTES: u64 = (CUT_BYTES / 2) as u64;
/// A listed segment stored in less than this is taken for a small one (its messages' size
/// is not known before it is read; a merge re-reads them, bounded, from the store anyway).
const SMALL_STORED_BYTES: u64 = 64 << 10;
/// Small segments in a row that start a merge, whatever their size (a merge also starts once
/// they add up to a cut).
const MERGE_AT: usize = 32;
/// Longest wait between attempts while the repository fails.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the shipper knows, for itself and for health.
#[derive(Debug, Default)]
pub struct Shipping {
    state: Mutex<State>,
    /// One shipping round at a time (the thread's, a restore's before its swap).
    round: Mutex<()>,
    /// This server as segments name it, once it listens (see [`BackupManager::set_origin`]).
    origin: Mutex<Option<String>>,
}

#[derive(Debug, Default)]
struct State {
    running: bool,
    /// The timeline being shipped, and the last seq the repository holds of it (`None` until
    /// the repository was asked).
    timeline: Option<String>,
    shipped: Option<u64>,
    described: bool,
    /// This timeline's small segments, oldest first, with their sizes.
    small: Vec<(SegmentKey, u64)>,
    last_error: Option<String>,
    /// A segment of this timeline the repository holds past the store's end.
    beyond: Option<String>,
    last_shipped_at: Option<String>,
    failures: u32,
    retry_at: Option<Instant>,
    segments: u64,
    bytes: u64,
}

impl BackupManager {
    /// Starts the shipping thread (when BACKUP_REPO is set and shipping is on). It stops when
    /// `shutdown` turns true, after shipping what is committed.
    pub fn start_shipping(
        self: &Arc<Self>,
        shutdown: watch::Receiver<bool>,
    ) -> Option<std::thread::JoinHandle<()>> {
        let config = self.config.ship.clone()?;
        self.repo.as_ref()?;
        self.shipping.state.lock().unwrap_or_else(|e| e.into_inner()).running = true;
        let me = self.clone();
        let thread = std::thread::Builder::new().name("ship".into()).spawn(move || {
            let mut last_ship = Instant::now() - config.interval;
            loop {
                let stopping = *shutdown.borrow();
                let due = last_ship.elapsed() >= config.interval || stopping;
                if due && me.has_unshipped() && me.retry_due() {
                    last_ship = Instant::now();
                    // Shipping yields to serving, as backups do.
                    super::archive::pgzip::at_low_priority(|| me.ship_now());
                }
                if stopping {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20).min(config.interval));
            }
            me.shipping.state.lock().unwrap_or_else(|e| e.into_inner()).running = false;
        });
        thread.ok()
    }

    /// This server as segments name it: set once it listens, its host name until then.
    fn origin(&self) -> Option<String> {
        let known = self.shipping.origin.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Some(known.unwrap_or_else(super::config::host_name))
    }

    /// Names this server in the segments it ships by the address it listens on.
    pub fn set_origin(&self, addr: std::net::SocketAddr) {
        let host = super::config::host_name();
        let origin = match addr.ip().is_unspecified() {
            true => format!("{host}:{}", addr.port()),
            false => format!("{host} ({addr})"),
        };
        *self.shipping.origin.lock().unwrap_or_else(|e| e.into_inner()) = Some(origin);
    }

    fn has_unshipped(&self) -> bool {
        // A standby ships nothing until it is promoted: the log is the primary's.
        if self.following().is_some() {
            return false;
        }
        let state = self.shipping.state.lock().unwrap_or_else(|e| e.into_inner());
        let timeline = self.store.timeline().id;
        state.timeline.as_deref() != Some(timeline.as_str())
            || state.shipped.is_none_or(|s| s < self.store.head().last_seq)
    }

    fn retry_due(&self) -> bool {
        let state = self.shipping.state.lock().unwrap_or_else(|e| e.into_inner());
        state.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// Ships every committed write not shipped yet; notes how it went.
    pub fn ship_now(&self) {
        let _round = self.shipping.round.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.ship_pending();
        let mut state = self.shipping.state.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) => {
                if state.last_error.take().is_some() {
                    tracing::info!("log shipping resumed");
                }
                state.failures = 0;
                state.retry_at = None;
            }
            Err(e) => {
                let wait = Duration::from_secs(1u64 << state.failures.min(5)).min(MAX_BACKOFF);
                if state.last_error.is_none() {
                    tracing::warn!(error = %e, retry_in_secs = wait.as_secs(), "log shipping failed; the store keeps the messages until it succeeds");
                }
                state.failures += 1;
                state.retry_at = Some(Instant::now() + wait);
                state.last_error = Some(e.to_string());
            }
        }
    }

    fn ship_pending(&self) -> Result<(), repo::Error> {
        let handle = self.repo.as_ref().ok_or_else(|| repo::Error::Config("no BACKUP_REPO".into()))?;
        let repo = handle.repo()?;
        let local = |e: crate::store::Error| repo::Error::Local(e.to_string());
        loop {
            let timeline = self.store.timeline();
            let (shipped, described) = self.resume_point(repo, &timeline)?;
            if !described {
                repo.put_timeline(&timeline)?;
                self.shipping.state.lock().unwrap_or_else(|e| e.into_inner()).described = true;
            }
            let db = self.store.db().map_err(local)?;
            let last_seq = self.store.head().last_seq;
            let writes = bus::committed_after(&db, shipped, last_seq, CUT_BYTES).map_err(local)?;
            let consumers = bus::consumer_offsets(&db).map_err(local)?;
            drop(db);
            // A restore between reading the timeline and the messages: start over.
            if self.store.timeline().id != timeline.id {
                continue;
            }
            let Some(segment) = segment_of(&timeline.id, writes, consumers, self.origin()) else {
                return Ok(());
            };
            let (header, groups) = segment;
            let plain: u64 = groups.iter().map(|g| g.bytes() as u64).sum();
            let stored = repo.put_segment(&header, &groups)?;
            let key =
                SegmentKey { timeline: header.timeline.clone(), first: header.first, last: header.last };
            let mut state = self.shipping.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.timeline.as_deref() == Some(timeline.id.as_str()) {
                state.shipped = Some(header.last);
                state.last_shipped_at = Some(bus::now());
                state.segments += 1;
                state.bytes += stored;
                if plain < SMALL_BYTES {
                    state.small.push((key, plain));
                } else {
                    state.small.clear();
                }
            }
            let pending: u64 = state.small.iter().map(|(_, plain)| plain).sum();
            let merge =
                state.small.len() >= MERGE_AT || (state.small.len() >= 2 && pending >= CUT_BYTES as u64);
            drop(state);
            if merge {
                if let Err(e) = self.merge_small(repo, &timeline.id) {
                    tracing::warn!(error = %e, "merging small log segments failed; they stay as they are");
                }
            }
        }
    }

    /// The last seq the repository holds of `timeline`, asking it once per timeline.
    fn resume_point(
        &self,
        repo: &Repo,
        timeline: &crate::store::Timeline,
    ) -> Result<(u64, bool), repo::Error> {
        {
            let state = self.shipping.state.lock().unwrap_or_else(|e| e.into_inner());
            if let (Some(t), Some(shipped)) = (&state.timeline, state.shipped) {
                if *t == timeline.id {
                    return Ok((shipped, state.described));
                }
            }
        }
        let listing = repo.log_listing()?;
        // A segment past the store's end cannot be ours (a file put there, or a store that
        // lost writes it had shipped): it is not where shipping resumes, and health says so.
        let end = self.store.head().last_seq;
        let beyond: Vec<&SegmentKey> =
            listing.of(&timeline.id).into_iter().filter(|k| k.last > end).collect();
        let beyond = beyond.first().map(|k| {
            tracing::error!(segment = %k.key(), last_seq = end, "the repository holds a log segment of this timeline beyond the store's end; shipping goes on after the store's own");
            format!("the repository holds {} beyond this store's last seq {end}", k.key())
        });
        let shipped = listing
            .of(&timeline.id)
            .into_iter()
            .filter(|k| k.last <= end)
            .map(|k| k.last)
            .max()
            .unwrap_or(0)
            .max(timeline.start_seq);
        let described = listing.timelines.contains(&timeline.id);
        let small: Vec<(SegmentKey, u64)> = listing
            .segments
            .iter()
            .filter(|(k, size, _)| k.timeline == timeline.id && *size < SMALL_STORED_BYTES && k.last <= end)
            // Compressed about tenfold: an estimate of their messages' size, until read.
            .map(|(k, size, _)| (k.clone(), size.saturating_mul(10)))
            .collect();
        let mut state = self.shipping.state.lock().unwrap_or_else(|e| e.into_inner());
        state.timeline = Some(timeline.id.clone());
        state.beyond = beyond;
        state.shipped = Some(shipped);
        state.described = described;
        state.small = small;
        tracing::info!(timeline = %timeline.id, shipped, "log shipping: resuming after what the repository holds");
        Ok((shipped, described))
    }

    /// Replaces a run of small segments with one, re-read from the store (the spool): as many
    /// as fit in [`CUT_BYTES`] of messages, so a merged segment is never larger than a reader
    /// takes, and is read with bounded memory.
    fn merge_small(&self, repo: &Repo, timeline: &str) -> Result<(), repo::Error> {
        let run: Vec<SegmentKey> = {
            let state = self.shipping.state.lock().unwrap_or_else(|e| e.into_inner());
            state.small.iter().map(|(k, _)| k.clone()).collect()
        };
        let (Some(first), Some(last)) = (run.first(), run.last()) else { return Ok(()) };
        let (from, shipped) = (first.first, last.last);
        let local = |e: crate::store::Error| repo::Error::Local(e.to_string());
        let db = self.store.db().map_err(local)?;
        let writes = bus::committed_after(&db, from - 1, shipped, CUT_BYTES).map_err(local)?;
        let consumers = bus::consumer_offsets(&db).map_err(local)?;
        drop(db);
        let Some(to) = writes.last().map(|w| w.1) else { return Ok(()) };
        let covered: Vec<&SegmentKey> = run.iter().filter(|k| k.last <= to).collect();
        if self.store.timeline().id != timeline || covered.len() < 2 {
            // Nothing worth merging: these stay as they are.
            let mut state = self.shipping.state.lock().unwrap_or_else(|e| e.into_inner());
            state.small.retain(|(k, _)| k.last > to);
            return Ok(());
        }
        let Some((header, groups)) = segment_of(timeline, writes, consumers, self.origin()) else {
            return Ok(());
        };
        repo.put_segment(&header, &groups)?;
        for key in &covered {
            repo.target().delete(&key.key())?;
        }
        let mut state = self.shipping.state.lock().unwrap_or_else(|e| e.into_inner());
        state.small.retain(|(k, _)| k.last > to);
        tracing::debug!(from, to, segments = covered.len(), "merged small log segments");
        Ok(())
    }

    /// The `ship` section of health, and whether it makes the service degraded (the lag is
    /// past SHIP_MAX_LAG_SECS). `None` when nothing is shipped.
    pub fn ship_health(&self) -> Option<(Value, bool)> {
        let config = self.config.ship.as_ref()?;
        if self.following().is_some() {
            return None;
        }
        self.repo.as_ref()?;
        let state = self.shipping.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.running {
            return None;
        }
        let last_seq = self.store.head().last_seq;
        let shipped = state.shipped;
        // The lag: how long the oldest message not shipped has waited.
        let lag = match shipped {
            Some(s) if s >= last_seq => 0.0,
            _ => {
                let oldest = shipped.unwrap_or(0).saturating_add(1);
                let ts = self.store.db().ok().and_then(|db| bus::message_ts_ms(&db, oldest));
                ts.map_or(0.0, |ts| ((chrono::Utc::now().timestamp_millis() - ts).max(0) as f64) / 1000.0)
            }
        };
        let degraded = lag > config.max_lag.as_secs_f64() || state.beyond.is_some();
        let section = json!({
            "timeline": state.timeline,
            "lastShippedSeq": shipped,
            "lastSeq": last_seq,
            "lagSeconds": lag,
            "lastShippedAt": state.last_shipped_at,
            "lastError": state.last_error.as_ref().or(state.beyond.as_ref()),
            "segmentsShipped": state.segments,
            "bytesShipped": state.bytes,
            "intervalMs": config.interval.as_millis() as u64,
        });
        Some((section, degraded))
    }
}

/// The segment holding `writes`, or `None` when there are none.
fn segment_of(
    timeline: &str,
    writes: Vec<bus::Write>,
    consumers: std::collections::BTreeMap<String, u64>,
    origin: Option<String>,
) -> Option<(Header, Vec<repo::log::Group>)> {
    let first = writes.first()?;
    let last = writes.last()?;
    let ts = |m: Option<&Vec<u8>>| {
        m.and_then(|m| crate::registry::replay::ts_ms(m))
            .and_then(chrono::DateTime::from_timestamp_millis)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let header = Header {
        format: SEGMENT_FORMAT,
        timeline: timeline.to_owned(),
        first: first.0,
        last: last.1,
        first_ts: ts(first.2.first()),
        last_ts: ts(last.2.last()),
        commits: writes.len() as u64,
        consumers,
        origin,
    };
    let groups = writes
        .into_iter()
        .map(|(first, last, messages)| repo::log::Group { first, last, messages })
        .collect();
    Some((header, groups))
}
