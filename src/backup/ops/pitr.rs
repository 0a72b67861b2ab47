//! Point-in-time restore: the newest repository backup before the target on the target's
//! timeline history, then the shipped log replayed up to the last write that committed at or
//! before the target (never part of a write).
//!
//! Hot through the API (`POST /api/backup/restore {"at"|"seq"}`, swapped in like any restore,
//! undoable), and offline through `eventvault restore --from URL --at|--seq`.

use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::backup::error::{Error, Result};
use crate::backup::repo::log::LogListing;
use crate::backup::repo::{self, Repo};
use crate::backup::{files, BackupManager};
use crate::registry::replay;
use crate::store::timeline::{Reason, Timeline};
use crate::store::{self, Store};

/// Where to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The last write committed at or before this moment.
    At(DateTime<Utc>),
    /// The last write whose messages end at or before this seq.
    Seq(u64),
}

impl Target {
    fn admits(&self, last_seq: u64, last_ts_ms: i64) -> bool {
        match self {
            Target::At(at) => last_ts_ms <= at.timestamp_millis(),
            Target::Seq(seq) => last_seq <= *seq,
        }
    }
}

/// A point-in-time restore, as asked.
#[derive(Debug, Clone)]
pub struct PointInTime {
    /// Where to stop.
    pub target: Target,
    /// The timeline whose history to follow; by default the store's own, or, onto an empty
    /// store, the one live at `at` (for a time) or the newest (for a seq).
    pub timeline: Option<String>,
    /// Plan and read the log, change nothing.
    pub dry_run: bool,
}

/// What a point-in-time restore did (or, dry, would do).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PitrReport {
    /// The repository.
    pub repo: String,
    /// The timeline whose history was followed.
    pub timeline: String,
    /// The backup restored first.
    pub backup: String,
    /// When it was taken.
    pub backup_created_at: String,
    /// Its lastSeq.
    pub backup_last_seq: u64,
    /// Messages replayed after it (or that would be).
    pub messages_replayed: u64,
    /// Writes replayed.
    pub writes_replayed: u64,
    /// Log segments read.
    pub segments_read: usize,
    /// The time of the first and last message replayed.
    pub replayed_from: Option<String>,
    /// The time of the last message replayed: the restored point.
    pub replayed_to: Option<String>,
    /// The lastSeq of the restored store.
    pub last_seq: u64,
    /// A dry run changed nothing.
    pub dry_run: bool,
    /// The backup of the replaced store (hot, or offline onto a store with data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_restore_backup: Option<String>,
    /// The timeline the restored store starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_timeline: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
}

/// What to restore and replay.
struct Plan {
    timeline: Timeline,
    backup: String,
    created_at: String,
    base_seq: u64,
    /// What to replay after the backup, in order: each timeline of the history from the
    /// first seq to take of it to the last (`None`: as far as its log goes).
    ranges: Vec<(String, u64, Option<u64>)>,
    /// What the repository's log held when the plan was made.
    listing: LogListing,
}

/// A segment being read ahead: its timeline, the seq it is read for, and the reading.
type Ahead<'s> = (
    String,
    u64,
    std::thread::ScopedJoinHandle<'s, std::result::Result<Option<repo::log::Segment>, repo::Error>>,
);

/// Writes replayed in one atomic write of the staged store.
const REPLAY_BATCH: usize = 1024;

fn unreachable(why: String) -> Error {
    Error::Unreachable(why)
}

/// The timelines the repository describes.
fn described(repo: &Repo, listing: &LogListing) -> Result<Vec<Timeline>> {
    let mut found = Vec::new();
    for id in &listing.timelines {
        match repo.timeline(id) {
            Ok(t) => found.push(t),
            Err(e @ repo::Error::Unavailable(_)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(timeline = %id, error = %e, "a timeline descriptor is unreadable; skipped")
            }
        }
    }
    Ok(found)
}

/// The plan of `request`; with `only`, from that backup (when it is on the history, before
/// the target) rather than the newest that is.
fn plan(repo: &Repo, request: &PointInTime, own: Option<&Timeline>, only: Option<&str>) -> Result<Plan> {
    let listing = repo.log_listing()?;
    let timelines = described(repo, &listing)?;
    let started =
        |t: &Timeline| DateTime::parse_from_rfc3339(&t.started_at).map(|d| d.with_timezone(&Utc)).ok();
    let timeline = match (&request.timeline, request.target) {
        (Some(id), _) => match own.filter(|o| o.id == *id) {
            Some(own) => own.clone(),
            None => timelines
                .iter()
                .find(|t| t.id == *id)
                .cloned()
                .ok_or_else(|| unreachable(format!("the repository holds no log of timeline {id}")))?,
        },
        // A server's own history by default: what it showed at that moment, unless a restore
        // since replaced it (then name the timeline).
        (None, Target::At(_)) if own.is_some() => own.cloned().expect("checked"),
        (None, Target::At(at)) => timelines
            .iter()
            .filter(|t| started(t).is_some_and(|s| s <= at))
            .max_by_key(|t| started(t))
            .cloned()
            .ok_or_else(|| {
                unreachable(format!("no timeline of the repository had begun at {}", at.to_rfc3339()))
            })?,
        (None, Target::Seq(_)) => match own {
            Some(own) => own.clone(),
            None => timelines
                .iter()
                .max_by_key(|t| started(t))
                .cloned()
                .ok_or_else(|| unreachable("the repository holds no shipped log".into()))?,
        },
    };
    // The newest backup on this history at or before the target.
    let mut base: Option<(String, String, u64, String)> = None;
    for id in repo.backup_ids()? {
        if only.is_some_and(|only| only != id) {
            continue;
        }
        let manifest = match repo.manifest(&id) {
            Ok(m) => m.backup,
            Err(e @ repo::Error::Unavailable(_)) => return Err(e.into()),
            Err(_) => continue,
        };
        let Some(on) = manifest.timeline.as_deref() else { continue };
        if !timeline.holds(on, manifest.last_seq) {
            continue;
        }
        let before = match request.target {
            Target::At(at) => DateTime::parse_from_rfc3339(&manifest.created_at).is_ok_and(|c| c <= at),
            Target::Seq(seq) => manifest.last_seq <= seq,
        };
        if before && base.as_ref().is_none_or(|b| manifest.last_seq > b.2) {
            base = Some((id, manifest.created_at, manifest.last_seq, on.to_owned()));
        }
    }
    let (backup, created_at, base_seq, base_timeline) = base.ok_or_else(|| {
        unreachable(format!(
            "no repository backup of timeline {}'s history was taken before the target; the oldest point \
             a restore reaches is the oldest backup",
            timeline.id
        ))
    })?;
    // The history from the backup on: each ancestor up to where it was left, then the timeline.
    let mut ranges: Vec<(String, u64, Option<u64>)> = Vec::new();
    let mut from = base_seq + 1;
    let mut reached = false;
    for fork in &timeline.history {
        if fork.timeline == base_timeline {
            reached = true;
        }
        if reached && fork.end_seq >= from {
            ranges.push((fork.timeline.clone(), from, Some(fork.end_seq)));
            from = fork.end_seq + 1;
        }
    }
    ranges.push((timeline.id.clone(), from, None));
    let ranges = ranges
        .into_iter()
        .map(|(on, from, to)| {
            let to = match (to, request.target) {
                (Some(to), Target::Seq(seq)) => Some(to.min(seq)),
                (None, Target::Seq(seq)) => Some(seq),
                (to, Target::At(_)) => to,
            };
            (on, from, to)
        })
        .filter(|(_, from, to)| to.is_none_or(|to| to >= *from))
        .collect();
    Ok(Plan { timeline, backup, created_at, base_seq, ranges, listing })
}

/// Replays the plan's segments into `store` (or only reads them, for a dry run). Returns the
/// report's replay fields and the timeline the replay ended on.
fn replay_into(
    repo: &Repo,
    plan: &Plan,
    request: &PointInTime,
    store: Option<&Store>,
    report: &mut PitrReport,
) -> Result<Option<String>> {
    let mut last_seq = plan.base_seq;
    let mut ended_on = None;
    let mut consumers = None;
    // The next segment is read while one is replayed: a restore then waits on the repository
    // about once, not once a segment.
    std::thread::scope(|scope| {
        let mut ahead: Option<Ahead<'_>> = None;
        'ranges: for (on, _, to) in &plan.ranges {
            loop {
                let next = last_seq + 1;
                if to.is_some_and(|to| next > to) {
                    continue 'ranges;
                }
                let fetched = match ahead.take() {
                    Some((t, n, reading)) if t == *on && n == next => reading
                        .join()
                        .unwrap_or_else(|_| Err(repo::Error::Local("reading a log segment failed".into()))),
                    _ => repo.segment_at(&plan.listing, on, next),
                };
                let Some(segment) = fetched? else {
                    // The end of the log, where a time target may stop; anything else is a gap.
                    if to.is_none() && !plan.listing.goes_on_after(on, next) {
                        break 'ranges;
                    }
                    return Err(unreachable(format!(
                        "the shipped log of timeline {on} has no readable segment holding seq {next}{}",
                        match request.target {
                            Target::Seq(seq)
                                if to.is_some_and(|to| to == seq)
                                    && !plan.listing.goes_on_after(on, next) =>
                                format!(" (seq {seq} is not in the repository yet)"),
                            _ => String::new(),
                        }
                    )));
                };
                report.segments_read += 1;
                let after = segment.header.last + 1;
                if to.is_none_or(|to| after <= to) && !plan.listing.holding(on, after).is_empty() {
                    let (listing, timeline) = (&plan.listing, on.clone());
                    ahead = Some((
                        on.clone(),
                        after,
                        scope.spawn(move || repo.segment_at(listing, &timeline, after)),
                    ));
                }
                // The writes of this segment to replay, applied in batches.
                let mut batch: Vec<(u64, &[Vec<u8>])> = Vec::new();
                let mut next_range = false;
                let mut done = false;
                for group in &segment.groups {
                    if group.last <= last_seq {
                        continue;
                    }
                    if to.is_some_and(|to| group.last > to) {
                        // Past where this history leaves the timeline (or past a seq target).
                        if group.first <= to.unwrap_or(u64::MAX) && !matches!(request.target, Target::Seq(_))
                        {
                            return Err(unreachable(format!(
                                "a write of timeline {on} runs across seq {} where the history leaves it",
                                to.unwrap_or_default()
                            )));
                        }
                        next_range = true;
                        break;
                    }
                    if group.first != last_seq + 1 {
                        return Err(unreachable(format!(
                        "the shipped log of timeline {on} does not follow seq {last_seq} (its write starts at {})",
                        group.first
                    )));
                    }
                    let ts = group.messages.last().and_then(|m| replay::ts_ms(m)).unwrap_or(i64::MAX);
                    if !request.target.admits(group.last, ts) {
                        done = true;
                        break;
                    }
                    batch.push((group.first, &group.messages));
                    if batch.len() >= REPLAY_BATCH {
                        if let Some(store) = store {
                            replay::apply_writes(store, &batch)?;
                        }
                        batch.clear();
                    }
                    if report.replayed_from.is_none() {
                        report.replayed_from =
                            group.messages.first().and_then(|m| replay::ts_ms(m)).map(stamp);
                    }
                    report.replayed_to = Some(stamp(ts));
                    report.messages_replayed += group.messages.len() as u64;
                    report.writes_replayed += 1;
                    last_seq = group.last;
                    ended_on = Some(on.clone());
                    consumers = Some((segment.header.consumers.clone(), segment.header.last_ts.clone()));
                }
                if let (Some(store), false) = (store, batch.is_empty()) {
                    replay::apply_writes(store, &batch)?;
                }
                if done {
                    break 'ranges;
                }
                if next_range {
                    continue 'ranges;
                }
            }
        }
        Ok::<(), Error>(())
    })?;
    if let Target::Seq(seq) = request.target {
        // A seq inside a write stops before it; a seq beyond the log is out of reach.
        if last_seq < seq
            && plan.ranges.last().is_some_and(|(on, _, _)| !plan.listing.goes_on_after(on, last_seq))
        {
            let shipped =
                plan.ranges.last().and_then(|(on, _, _)| plan.listing.shipped(on)).unwrap_or(last_seq);
            if seq > shipped {
                return Err(unreachable(format!(
                    "seq {seq} is not in the repository yet: the log reaches {shipped}"
                )));
            }
        }
    }
    if let (Some(store), Some((offsets, at))) = (store, consumers) {
        replay::put_consumers(store, &offsets, last_seq, &at)?;
    }
    report.last_seq = last_seq;
    Ok(ended_on)
}

fn stamp(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn report_of(location: &str, plan: &Plan, dry_run: bool) -> PitrReport {
    PitrReport {
        repo: location.to_owned(),
        timeline: plan.timeline.id.clone(),
        backup: plan.backup.clone(),
        backup_created_at: plan.created_at.clone(),
        backup_last_seq: plan.base_seq,
        messages_replayed: 0,
        writes_replayed: 0,
        segments_read: 0,
        replayed_from: None,
        replayed_to: None,
        last_seq: plan.base_seq,
        dry_run,
        pre_restore_backup: None,
        new_timeline: None,
        duration_ms: 0,
    }
}

/// Restores the plan's backup into `staging` and replays onto it; the staged store is left
/// closed, on the timeline the replay ended on (so that the restore branches from there).
fn stage(
    repo: &Repo,
    plan: &Plan,
    request: &PointInTime,
    staging: &Path,
    bound: u64,
    report: &mut PitrReport,
) -> Result<()> {
    repo.restore_into(&plan.backup, staging, bound)?;
    replay_staged(repo, plan, request, staging, report)
}

/// Replays the plan onto the restored, closed store in `staging`, and leaves it closed.
fn replay_staged(
    repo: &Repo,
    plan: &Plan,
    request: &PointInTime,
    staging: &Path,
    report: &mut PitrReport,
) -> Result<()> {
    // Not synced write by write: the staged store is flushed and synced when it is closed,
    // and a crash before that leaves only a staging directory, which startup removes.
    let config = store::StoreConfig { sync_writes: false, block_cache_mb: 64 };
    let store = Store::open(staging, config)?;
    let result = (|| {
        let ended_on = replay_into(repo, plan, request, Some(&store), report)?;
        if let Some(id) = ended_on {
            let timeline = if id == plan.timeline.id { plan.timeline.clone() } else { repo.timeline(&id)? };
            store::timeline::write(&*store.db()?, &timeline)?;
        }
        Ok::<_, Error>(())
    })();
    store.close()?;
    drop(store);
    result
}

/// Replays the shipped log onto `dir`, a closed store restored from repository backup `base`,
/// up to the last write that ends at or before `to_seq` on the history of `timeline`: a
/// restore drill's check that the log leads from one backup to the next. The plan's errors
/// ([`Error::Unreachable`]: the log does not cover that range, pruned say) come back as they are.
pub(crate) fn replay_from(
    repo: &Repo,
    base: &str,
    timeline: &str,
    to_seq: u64,
    dir: &Path,
) -> Result<PitrReport> {
    let request =
        PointInTime { target: Target::Seq(to_seq), timeline: Some(timeline.to_owned()), dry_run: false };
    let plan = plan(repo, &request, None, Some(base))?;
    let mut report = report_of("", &plan, false);
    replay_staged(repo, &plan, &request, dir, &mut report)?;
    Ok(report)
}

/// A point-in-time restore onto the empty store of `storage_dir` (offline; the caller holds
/// its lock).
pub fn restore_fresh(
    storage_dir: &Path,
    location: &repo::Location,
    settings: &repo::Settings,
    request: &PointInTime,
) -> Result<PitrReport> {
    let started = Instant::now();
    let repo = Repo::open(location, settings)?;
    let plan = plan(&repo, request, None, None)?;
    let mut report = report_of(&location.to_string(), &plan, request.dry_run);
    if request.dry_run {
        replay_into(&repo, &plan, request, None, &mut report)?;
        report.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }
    let staging = storage_dir.join(format!("{}{}", store::swap::STAGING_PREFIX, files::unique()));
    let free = files::free_space(storage_dir).unwrap_or(u64::MAX);
    let staged = stage(&repo, &plan, request, &staging, free, &mut report).and_then(|()| {
        Ok(store::timeline::stamp_dir(&staging, &super::repo_restore::store_config(), Reason::PointInTime)?)
    });
    let timeline = match staged {
        Ok(t) => t,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    super::repo_restore::put_in_place(storage_dir, &staging)?;
    report.new_timeline = Some(timeline.id);
    report.duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(repo = %location, backup = %report.backup, last_seq = report.last_seq, replayed = report.messages_replayed, "restored to a point in time");
    Ok(report)
}

impl BackupManager {
    /// A point-in-time restore of the live store from BACKUP_REPO: hot, undoable, like any
    /// whole-store restore.
    pub fn restore_point_in_time(
        &self,
        request: &PointInTime,
        actor: crate::backup::audit::Actor,
    ) -> Result<PitrReport> {
        use super::{Op, Slot};
        use crate::backup::audit::Action;
        use crate::backup::catalog::Kind;
        let handle = self.repo.as_ref().ok_or_else(|| {
            Error::InvalidOptions(
                "a point-in-time restore needs BACKUP_REPO, where the log is shipped".into(),
            )
        })?;
        // What is committed here and not shipped yet is shipped first, so "now" means now.
        if self.config.ship.is_some() {
            self.ship_now();
        }
        let started = Instant::now();
        let slot = if request.dry_run { Slot::Shared } else { Slot::Exclusive };
        let options = serde_json::json!({
            "location": "repo",
            "repo": handle.shown(),
            "at": match request.target { Target::At(at) => Some(at.to_rfc3339()), Target::Seq(_) => None },
            "seq": match request.target { Target::Seq(seq) => Some(seq), Target::At(_) => None },
            "timeline": request.timeline,
            "dryRun": request.dry_run,
        });
        let what = match request.target {
            Target::At(at) => format!("point in time {}", at.to_rfc3339()),
            Target::Seq(seq) => format!("seq {seq}"),
        };
        let op = Op::new(Action::Restore, Kind::Full, &what, actor, slot).options(options);
        self.runner.run(op, |_| {
            let repo = handle.repo()?;
            let own = self.store.timeline();
            let plan = plan(repo, request, Some(&own), None)?;
            let mut report = report_of(handle.shown(), &plan, request.dry_run);
            if request.dry_run {
                replay_into(repo, &plan, request, None, &mut report)?;
            } else {
                let bound = self.config.unpack_bound();
                let restored = self.swap_in_staged(&plan.backup, Reason::PointInTime, |staging| {
                    stage(repo, &plan, request, staging, bound, &mut report)?;
                    Ok(plan.backup.clone())
                })?;
                report.pre_restore_backup = Some(restored.pre_restore_backup);
                report.new_timeline = Some(self.store.timeline().id);
            }
            report.duration_ms = started.elapsed().as_millis() as u64;
            Ok(report)
        })
    }
}
