//! A warm standby: a server that restored the newest backup of a repository and follows the
//! log its primary ships there, applying each write as it arrives. It serves reads; writes
//! get 503 naming the primary. Promotion stops following, starts a new timeline and accepts
//! writes (and, with a repository, backs up and ships like any primary).
//!
//! A standby follows its timeline, and onto the timeline a restore on the primary starts
//! when that one branches exactly where the standby is. A standby that applied writes the
//! primary's restore discarded stops following and says so (it is rebuilt from a fresh
//! directory).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;

use super::error::{Error, Result};
use super::repo::{self, Location, Repo, Settings};
use super::BackupManager;
use crate::registry::replay;
use crate::store::timeline::{Reason, Timeline};

/// The file in STORAGE_DIR that marks a standby's store, naming what it follows.
pub const MARKER: &str = "STANDBY";
/// How often the repository is asked for new segments.
pub const POLL: Duration = Duration::from_millis(250);

/// What a standby follows, and how far it got.
#[derive(Debug)]
pub struct Follower {
    from: String,
    repo: Repo,
    stop: AtomicBool,
    /// Held while segments are applied, so promotion waits for the write in progress.
    applying: Mutex<()>,
    state: Mutex<FollowState>,
    /// Timeline descriptors read so far (they never change).
    descriptors: Mutex<HashMap<String, Timeline>>,
}

#[derive(Debug, Default)]
struct FollowState {
    /// When the repository last held nothing this standby had not applied.
    caught_up_at: Option<Instant>,
    last_applied_ts_ms: Option<i64>,
    shipped: Option<u64>,
    primary: Option<String>,
    last_error: Option<String>,
    /// Why following stopped for good (the primary's history left this standby's).
    diverged: Option<String>,
}

/// What a standby does about the repository's newest timeline.
enum Step {
    /// Nothing: it is this one, or more of this one is to come.
    Stay,
    /// Go on with this timeline, which branches where the standby is.
    Adopt(Timeline),
    /// The primary went where the standby cannot follow.
    Diverged(String),
}

/// The marker of a standby store: what it follows.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Marker {
    from: String,
}

/// What the standby marker in `storage_dir` names, if there is one. A marker that is not one
/// eventvault wrote is an error, never "no marker": the store could be a standby's, and
/// serving it as a primary would write onto its primary's timeline.
pub fn marked(storage_dir: &Path) -> Result<Option<String>> {
    use std::io::Read;
    let path = storage_dir.join(MARKER);
    let unreadable = |why: String| {
        Error::InvalidOptions(format!(
            "{} is not a standby marker eventvault wrote ({why}); if this store is not a standby's, remove it",
            path.display()
        ))
    };
    let file = match crate::untrusted::open_regular(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e.to_string())),
    };
    let mut raw = Vec::new();
    file.take(4097).read_to_end(&mut raw).map_err(|e| unreadable(e.to_string()))?;
    let marker: Marker = serde_json::from_slice(&raw).map_err(|e| unreadable(e.to_string()))?;
    if Location::parse(&marker.from).is_err() {
        return Err(unreadable("it names no repository".into()));
    }
    Ok(Some(marker.from))
}

/// Marks the store of `storage_dir` as a standby of `from`.
pub fn mark(storage_dir: &Path, from: &str) -> Result<()> {
    let body = serde_json::to_vec(&Marker { from: from.to_owned() }).expect("serialisable");
    super::files::write_atomic(&storage_dir.join(MARKER), &body)
}

/// Removes the standby marker (after a promotion).
pub fn unmark(storage_dir: &Path) -> Result<()> {
    let path = storage_dir.join(MARKER);
    match std::fs::remove_file(&path) {
        Ok(()) => super::files::sync_dir(storage_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&path, e)),
    }
}

impl Follower {
    /// One poll: applies what the repository holds past this store's end.
    fn poll(&self, manager: &BackupManager) -> Result<()> {
        let _applying = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        if self.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let store = manager.store();
        let listed_at = Instant::now();
        let listing = self.repo.log_listing()?;
        let timeline = store.timeline();
        let mut applied = store.head().last_seq;
        let shipped = listing.shipped(&timeline.id).unwrap_or(timeline.start_seq);
        self.state.lock().unwrap_or_else(|e| e.into_inner()).shipped = Some(shipped);
        if shipped > applied {
            while applied < shipped {
                let Some(segment) = self.repo.segment_at(&listing, &timeline.id, applied + 1)? else {
                    if listing.goes_on_after(&timeline.id, applied + 1) {
                        return Err(Error::Unreachable(format!(
                            "the shipped log of timeline {} has no readable segment holding seq {}",
                            timeline.id,
                            applied + 1
                        )));
                    }
                    break;
                };
                let mut consumers = None;
                let mut batch: Vec<(u64, &[Vec<u8>])> = Vec::new();
                let mut next = applied;
                for group in &segment.groups {
                    if group.last <= next {
                        continue;
                    }
                    if group.first != next + 1 {
                        return Err(Error::Unreachable(format!(
                            "the shipped log does not follow seq {next} (a write starts at {})",
                            group.first
                        )));
                    }
                    batch.push((group.first, &group.messages));
                    next = group.last;
                    let ts = group.messages.last().and_then(|m| replay::ts_ms(m));
                    let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                    state.last_applied_ts_ms = ts.or(state.last_applied_ts_ms);
                    state.primary = segment.header.origin.clone().or(state.primary.take());
                    consumers = Some(segment.header.last_ts.clone());
                }
                // A segment's writes in one atomic write of the store (at most a few MiB).
                if !batch.is_empty() {
                    applied = replay::apply_writes(store, &batch)?;
                }
                if let Some(at) = consumers {
                    replay::put_consumers(store, &segment.header.consumers, applied, &at)?;
                }
            }
            // Everything the repository held when it was listed is applied.
            self.state.lock().unwrap_or_else(|e| e.into_inner()).caught_up_at = Some(listed_at);
            return Ok(());
        }
        // Nothing new here: has the primary moved on to a newer timeline?
        match self.next_step(&listing, &timeline, applied)? {
            Step::Stay => {}
            Step::Adopt(child) => {
                tracing::info!(from = %timeline.id, to = %child.id, at = applied, "standby: following the primary onto its new timeline");
                store.adopt_timeline(&child)?;
                return Ok(());
            }
            Step::Diverged(why) => {
                self.state.lock().unwrap_or_else(|e| e.into_inner()).diverged = Some(why.clone());
                return Err(Error::Unreachable(why));
            }
        }
        self.state.lock().unwrap_or_else(|e| e.into_inner()).caught_up_at = Some(listed_at);
        Ok(())
    }

    /// Where the newest timeline of the repository (the primary's, after a restore there)
    /// leaves this standby, which applied `timeline` up to `applied`.
    fn next_step(&self, listing: &repo::log::LogListing, timeline: &Timeline, applied: u64) -> Result<Step> {
        let known = self.descriptors(listing, timeline)?;
        // ULIDs sort by when they began.
        let Some(newest) = known.values().filter(|t| t.id > timeline.id).max_by(|a, b| a.id.cmp(&b.id))
        else {
            return Ok(Step::Stay);
        };
        let Some(at) = newest.history.iter().rposition(|f| f.timeline == timeline.id) else {
            return Ok(Step::Diverged(format!(
                "the primary's newest timeline {} does not continue this standby's timeline {}; \
                 rebuild the standby from an empty STORAGE_DIR",
                newest.id, timeline.id
            )));
        };
        let fork = newest.history[at].end_seq;
        if applied < fork {
            // The rest of this timeline up to the fork is still to come.
            return Ok(Step::Stay);
        }
        if applied > fork {
            return Ok(Step::Diverged(format!(
                "the primary went back to seq {fork} of timeline {} (its newest timeline is {}), after this standby \
                 applied up to {applied}; rebuild the standby from an empty STORAGE_DIR",
                timeline.id, newest.id
            )));
        }
        // The next timeline of that history: one step towards the newest.
        let next = match newest.history.get(at + 1) {
            Some(f) => known.get(&f.timeline).cloned().ok_or_else(|| {
                Error::Unreachable(format!("the repository holds no descriptor of timeline {}", f.timeline))
            })?,
            None => newest.clone(),
        };
        Ok(Step::Adopt(next))
    }

    /// The repository's timeline descriptors (each read once).
    fn descriptors(
        &self,
        listing: &repo::log::LogListing,
        timeline: &Timeline,
    ) -> Result<HashMap<String, Timeline>> {
        let mut known = self.descriptors.lock().unwrap_or_else(|e| e.into_inner());
        for id in &listing.timelines {
            if !known.contains_key(id) && *id != timeline.id {
                match self.repo.timeline(id) {
                    Ok(t) => {
                        known.insert(id.clone(), t);
                    }
                    Err(e @ repo::Error::Unavailable(_)) => return Err(e.into()),
                    Err(e) => {
                        tracing::warn!(timeline = %id, error = %e, "standby: an unreadable timeline descriptor is skipped")
                    }
                }
            }
        }
        Ok(known.clone())
    }
}

impl BackupManager {
    /// The follower, while this server is a standby that follows.
    pub fn following(&self) -> Option<Arc<Follower>> {
        self.standby.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Starts following the log shipped to `location` (this server is a standby).
    pub fn start_following(
        self: &Arc<Self>,
        location: &Location,
        settings: &Settings,
        shutdown: watch::Receiver<bool>,
    ) -> Result<std::thread::JoinHandle<()>> {
        let follower = Arc::new(Follower {
            from: location.to_string(),
            repo: Repo::open(location, settings)?,
            stop: AtomicBool::new(false),
            applying: Mutex::new(()),
            state: Mutex::new(FollowState::default()),
            descriptors: Mutex::new(HashMap::new()),
        });
        *self.standby.lock().unwrap_or_else(|e| e.into_inner()) = Some(follower.clone());
        let me = self.clone();
        let thread = std::thread::Builder::new()
            .name("standby".into())
            .spawn(move || {
                tracing::info!(from = %follower.from, "standby: following the shipped log");
                while !*shutdown.borrow() && !follower.stop.load(Ordering::SeqCst) {
                    let diverged =
                        follower.state.lock().unwrap_or_else(|e| e.into_inner()).diverged.is_some();
                    if !diverged {
                        // A panic here would end following for good while health said all is
                        // well: it is an error of this round instead.
                        let result =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| follower.poll(&me)))
                                .unwrap_or_else(|_| {
                                    Err(Error::Unreachable(
                                        "following failed unexpectedly; see the log".into(),
                                    ))
                                });
                        let mut state = follower.state.lock().unwrap_or_else(|e| e.into_inner());
                        match result {
                            Ok(()) => state.last_error = None,
                            Err(e) => {
                                if state.last_error.is_none() {
                                    tracing::warn!(error = %e, "standby: following failed; retrying");
                                }
                                state.last_error = Some(e.to_string());
                            }
                        }
                    }
                    std::thread::sleep(POLL);
                }
            })
            .map_err(|e| Error::io(Path::new("standby thread"), e))?;
        Ok(thread)
    }

    /// Promotes this standby: applies what is shipped (best effort), stops following,
    /// starts a new timeline and accepts writes.
    pub fn promote(&self, actor: super::audit::Actor) -> Result<Value> {
        use super::ops::{Op, Slot};
        let Some(follower) = self.following() else {
            return Err(Error::InvalidOptions(
                "this server is not a standby; there is nothing to promote".into(),
            ));
        };
        let op = Op::new(
            super::audit::Action::Promote,
            super::catalog::Kind::Full,
            "standby",
            actor,
            Slot::Exclusive,
        )
        .options(json!({"following": follower.from}));
        self.runner.run(op, |_| {
            if let Err(e) = follower.poll(self) {
                tracing::warn!(error = %e, "promote: the last catch-up failed; promoting with what is applied");
            }
            follower.stop.store(true, Ordering::SeqCst);
            let _applying = follower.applying.lock().unwrap_or_else(|e| e.into_inner());
            // The new timeline first: a crash before the marker goes leaves a store that says
            // it was promoted, which the next start finishes.
            let timeline = self.store.start_timeline(Reason::Promote)?;
            unmark(&self.config.storage_dir)?;
            *self.standby.lock().unwrap_or_else(|e| e.into_inner()) = None;
            let last_seq = self.store.head().last_seq;
            tracing::info!(timeline = %timeline.id, last_seq, from = %follower.from, "promoted: this server accepts writes");
            Ok(json!({"promoted": true, "timeline": timeline, "lastSeq": last_seq, "followed": follower.from}))
        })
    }

    /// The message of the 503 a standby answers writes with.
    pub fn standby_refusal(&self) -> Option<String> {
        let follower = self.following()?;
        let primary = follower.state.lock().unwrap_or_else(|e| e.into_inner()).primary.clone();
        Some(format!(
            "this server is a standby following {} (primary: {}); send writes to the primary, or promote this standby (POST /api/standby/promote)",
            follower.from,
            primary.as_deref().unwrap_or("not known yet")
        ))
    }

    /// The `standby` section of health, and whether it makes the service degraded.
    pub fn standby_health(&self) -> Option<(Value, bool)> {
        let follower = self.following()?;
        let state = follower.state.lock().unwrap_or_else(|e| e.into_inner());
        let applied = self.store.head().last_seq;
        // Caught up at the last poll: as far behind as the time since; else, the age of the
        // newest write applied.
        let lag = match (state.shipped, state.caught_up_at) {
            (Some(shipped), Some(at)) if shipped <= applied => at.elapsed().as_secs_f64(),
            _ => state
                .last_applied_ts_ms
                .map_or(0.0, |ts| ((chrono::Utc::now().timestamp_millis() - ts).max(0) as f64) / 1000.0),
        };
        let max_lag = self.config.ship.as_ref().map_or(60.0, |c| c.max_lag.as_secs_f64());
        let degraded = state.last_error.is_some() || state.diverged.is_some() || lag > max_lag;
        let section = json!({
            "following": follower.from,
            "primary": state.primary,
            "timeline": self.store.timeline().id,
            "appliedSeq": applied,
            "shippedSeq": state.shipped,
            "lagSeconds": lag,
            "lastError": state.last_error,
            "diverged": state.diverged,
        });
        Some((section, degraded))
    }
}
