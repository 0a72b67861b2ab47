//! Restore drills: the newest backup and one older one restored into a scratch directory on
//! the backup disk, at low priority, and checked as a restore would check them (every file's
//! checksum against its manifest, the store opened, its counts and lastSeq against the
//! manifest's); with shipping on, the shipped log replayed from the older one up to the
//! backup after it, and the result compared with that backup. The scratch directory is
//! removed on every path (and, after a crash, by startup's leftover cleaning).
//!
//! Which older backup: the one after (older than) the "other" of the previous drill, wrapping
//! to the second-newest: successive drills walk back through every retained backup, two
//! restores (three with a replay towards an older backup) per drill.
//!
//! A drill never takes the one-operation slot (a scheduled backup during a drill still runs);
//! one drill runs at a time. Its audit entry (action `drill`) carries the report; what is
//! read back from it, and the schedule, are [`super::drill_schedule`]'s.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::{SecondsFormat, Utc};
use serde_json::json;

use super::drill_choice::{choose, Plan};
use super::drill_schedule::{Candidate, DrillOutcome, DrillReport, Drilled, Place, Replay};
use super::{Op, Slot};
use crate::backup::archive::{no_progress, verify_into, Counts};
use crate::backup::audit::{Action, Actor};
use crate::backup::catalog::Kind;
use crate::backup::error::{Error, Result};
use crate::backup::files::{self, TEMP_PREFIX};
use crate::backup::BackupManager;
use crate::store;

/// Prefix of a drill's scratch directory in BACKUP_DIR: a temp name, so that listings never
/// show it and startup removes what a crash left.
const SCRATCH_PREFIX: &str = "drill-";

/// Removes the scratch directory however the drill ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.0.display(), error = %e, "could not remove a drill's scratch directory; the next start does");
            }
        }
    }
}

/// Frees the one drill's place however it ends.
struct Release<'a>(&'a AtomicBool);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Nice 19 and the idle I/O class for the calling thread, and the threads it starts (which
/// inherit both): a drill yields the CPU and the disk to requests and to backups.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread; failure just leaves the priority as is.
    unsafe {
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_CLASS_IDLE: libc::c_long = 3;
        let tid = libc::syscall(libc::SYS_gettid);
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
        libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid, IOPRIO_CLASS_IDLE << 13);
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn records(counts: &Counts) -> u64 {
    crate::untrusted::sum(counts.records.values().copied()).unwrap_or(u64::MAX)
}

impl BackupManager {
    /// Runs one drill now (see the module's doc) and reports it; a drill that fails is a
    /// report with outcome `failed`, not an error. [`Error::Busy`] while one runs, and
    /// [`Error::InvalidOptions`] when there is no backup to drill (and never was).
    pub fn drill(&self, actor: Actor) -> Result<DrillReport> {
        if self.drills.running.swap(true, Ordering::SeqCst) {
            return Err(Error::Busy("a restore drill".into()));
        }
        let _release = Release(&self.drills.running);
        let previous = self.last_drill();
        let plan = self.plan(previous.is_some())?;
        let order: Vec<Candidate> = match &plan {
            Ok(all) => choose(all, previous.as_ref()).into_iter().cloned().collect(),
            Err(_) => Vec::new(),
        };
        let report = std::thread::scope(|scope| {
            let worker =
                std::thread::Builder::new().name("eventvault-drill".into()).spawn_scoped(scope, || {
                    lower_priority();
                    self.drill_audited(&order, &plan, actor)
                });
            match worker.map_err(|e| Error::Io { path: self.config.backup_dir.clone(), source: e })?.join() {
                Ok(report) => Ok::<_, Error>(report),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })?;
        let mut last = self.drills.last.lock().unwrap_or_else(|e| e.into_inner());
        last.report = Some(report.clone());
        Ok(report)
    }

    /// The drill through the runner: audited with its figures, failed when it failed
    /// (`plan` an error: failed without restoring anything).
    fn drill_audited(&self, order: &[Candidate], plan: &Plan, actor: Actor) -> DrillReport {
        let (place, name) = match (order.first(), &self.repo) {
            (Some(c), _) if c.place == Place::Local => ("local", c.id.clone()),
            (Some(c), _) => ("repo", c.id.clone()),
            (None, Some(_)) => ("repo", super::prune::PRUNE_TARGET.to_owned()),
            (None, None) => ("local", String::new()),
        };
        let op = Op::new(Action::Drill, Kind::Full, &name, actor, Slot::Shared)
            .options(json!({"location": place}));
        let mut report = None;
        let _ = self.runner.run(op, |ctx| {
            let mut done = match plan {
                Ok(all) => self.drill_steps(order, all),
                Err(why) => DrillReport::failed(why.clone()),
            };
            done.at = now();
            ctx.option("at", json!(done.at));
            ctx.option("restoreSeconds", json!(done.restore_seconds));
            ctx.option("backups", json!(done.backups));
            if !done.removed.is_empty() {
                ctx.option("removed", json!(done.removed));
            }
            let failed = done.error.clone();
            report = Some(done);
            match failed {
                None => Ok(()),
                Some(why) => Err(Error::DrillFailed(why)),
            }
        });
        report.expect("the body always runs")
    }

    /// The steps of a drill, on the backups of `order` (see [`choose`]):
    /// 1. check that the first two fit on the backup disk, beside what is there (nothing is
    ///    restored otherwise);
    /// 2. restore the newest backup into the scratch directory and check it;
    /// 3. restore the older one and check it; with shipping on, replay the log from it to the
    ///    next backup and compare;
    /// 4. remove the scratch directory (on every path: [`Scratch`]).
    ///
    /// A backup removed since it was listed (deleted, rotated, pruned) is not a failure: it
    /// is named in `removed` and the next one of `order` takes its place.
    ///
    /// Nothing outside the scratch directory is written (but the audit entry): a crash leaves
    /// only it, which startup removes.
    fn drill_steps(&self, order: &[Candidate], all: &[Candidate]) -> DrillReport {
        let mut report = DrillReport::failed(String::new());
        report.outcome = DrillOutcome::Passed;
        report.error = None;
        let chosen = &order[..order.len().min(2)];
        let replays = self.config.ship.is_some() && chosen.iter().all(|c| c.place == Place::Repo);
        let need: u64 =
            chosen.iter().map(|c| c.bytes).sum::<u64>().saturating_mul(if replays { 2 } else { 1 });
        let need = need.saturating_add(need / 10).saturating_add(1 << 20);
        let backup_dir = &self.config.backup_dir;
        let free = files::free_space(backup_dir).unwrap_or(u64::MAX);
        if free < need {
            return DrillReport::failed(format!(
                "not enough free space in {} for a drill: it needs about {need} bytes, {free} are free; nothing was restored",
                crate::untrusted::bounded(&backup_dir.display().to_string())
            ));
        }
        let scratch = Scratch(backup_dir.join(format!("{TEMP_PREFIX}{SCRATCH_PREFIX}{}", files::unique())));
        if let Err(e) = std::fs::create_dir(&scratch.0) {
            return DrillReport::failed(Error::io(&scratch.0, e).to_string());
        }
        let mut failures = Vec::new();
        let mut newest: Option<(String, PathBuf)> = None;
        for backup in order {
            let i = report.backups.len();
            if i == 2 {
                break;
            }
            let dir = scratch.0.join(format!("store-{i}"));
            let started = Instant::now();
            let restored = self.drill_one(backup, &dir, &scratch.0).and_then(|checked| {
                crate::fault::point("drill.restored")?;
                Ok(checked)
            });
            let seconds = started.elapsed().as_secs_f64();
            if restored.is_err() && self.removed(backup) {
                let _ = std::fs::remove_dir_all(&dir);
                tracing::info!(backup = %backup.id, "restore drill: backup removed while the drill ran, not drilled");
                report.removed.push(backup.id.clone());
                continue;
            }
            let mut drilled = Drilled {
                id: backup.id.clone(),
                location: backup.place,
                restore_seconds: seconds,
                files: 0,
                events: 0,
                records: 0,
                last_seq: 0,
                replay: None,
                error: None,
            };
            match restored {
                Ok((files, counts, last_seq)) => {
                    drilled.files = files;
                    drilled.events = counts.events;
                    drilled.records = records(&counts);
                    drilled.last_seq = last_seq;
                    if i > 0 && replays {
                        let newest = newest.as_ref().map(|(id, dir)| (id.as_str(), dir.as_path()));
                        let replay = self.drill_replay(backup, all, &dir, newest, &scratch.0);
                        if replay.matches == Some(false) {
                            let why = replay.note.clone().unwrap_or_default();
                            drilled.error = Some(why.clone());
                            failures.push(format!("{}: {why}", backup.id));
                        }
                        drilled.replay = Some(replay);
                    }
                }
                Err(e) => {
                    drilled.error = Some(e.to_string());
                    failures.push(format!("{}: {e}", backup.id));
                }
            }
            if i == 0 {
                report.restore_seconds = seconds;
                // Kept while the older backup is replayed: it may be the one replayed towards.
                newest = (drilled.error.is_none() && replays).then(|| (backup.id.clone(), dir.clone()));
            }
            if newest.as_ref().map(|(_, d)| d.as_path()) != Some(dir.as_path()) {
                let _ = std::fs::remove_dir_all(&dir);
            }
            tracing::info!(backup = %backup.id, seconds, error = ?drilled.error, "restore drill: backup checked");
            report.backups.push(drilled);
        }
        if report.backups.is_empty() {
            // Every backup listed went while the drill ran: none is left that a restore could
            // use, which is what a drill is there to find out.
            failures.push(format!(
                "no backup was left to drill: {} removed during the drill",
                report.removed.join(", ")
            ));
        }
        if !failures.is_empty() {
            report.outcome = DrillOutcome::Failed;
            report.error = Some(failures.join("; "));
        }
        report
    }

    /// Restores one backup into `dir` and checks it: every file against its checksum, the
    /// store opened, its counts and lastSeq against the manifest. Returns the files, counts
    /// and lastSeq.
    fn drill_one(&self, backup: &Candidate, dir: &Path, scratch: &Path) -> Result<(usize, Counts, u64)> {
        match backup.place {
            Place::Local => {
                // A link of the archive (and its sidecar) in the scratch directory: rotation
                // may remove the archive meanwhile, its bytes stay until the drill ends.
                let path = self.config.backup_dir.join(&backup.name);
                let linked = scratch.join(&backup.name);
                std::fs::hard_link(&path, &linked).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Error::NotFound(backup.name.clone()),
                    _ => Error::io(&path, e),
                })?;
                let _ = std::fs::hard_link(files::sidecar_path(&path), files::sidecar_path(&linked));
                let verified = verify_into(&self.config, &linked, &backup.name, dir, true, &no_progress)?;
                Ok((verified.files, verified.manifest.counts, verified.manifest.last_seq))
            }
            Place::Repo => {
                let handle = self.repo.as_ref().ok_or_else(|| Error::NotFound(backup.id.clone()))?;
                let bound = self.config.unpack_bound().min(files::free_space(scratch).unwrap_or(u64::MAX));
                let manifest = handle.repo()?.restore_into(&backup.id, dir, bound)?;
                Ok((manifest.backup.files.len(), manifest.backup.counts, manifest.backup.last_seq))
            }
        }
    }

    /// Replays the shipped log onto `dir` (the restored `backup`) up to the next backup of
    /// its timeline, and compares the result with that backup (restored too, unless it is
    /// the newest drilled, restored already in the directory `newest` names). A next backup
    /// removed while the drill ran leaves nothing to compare: said, not failed.
    fn drill_replay(
        &self,
        backup: &Candidate,
        all: &[Candidate],
        dir: &Path,
        newest: Option<(&str, &Path)>,
        scratch: &Path,
    ) -> Replay {
        let mut replay = Replay {
            next: None,
            to_seq: None,
            covered: false,
            messages_replayed: 0,
            matches: None,
            note: None,
        };
        let Some(timeline) = backup.timeline.as_deref() else {
            replay.note = Some("the backup names no timeline: there is no log to replay from it".into());
            return replay;
        };
        let next = all
            .iter()
            .filter(|c| c.timeline.as_deref() == Some(timeline) && c.last_seq > backup.last_seq)
            .min_by(|a, b| a.last_seq.cmp(&b.last_seq).then_with(|| a.created.cmp(&b.created)));
        let Some(next) = next else {
            replay.covered = true;
            replay.note =
                Some("no later backup of its timeline holds more: there is nothing to replay".into());
            return replay;
        };
        replay.next = Some(next.id.clone());
        replay.to_seq = Some(next.last_seq);
        let Some(handle) = &self.repo else { return replay };
        let repo = match handle.repo() {
            Ok(repo) => repo,
            Err(e) => {
                replay.matches = Some(false);
                replay.note = Some(e.to_string());
                return replay;
            }
        };
        match super::pitr::replay_from(repo, &backup.id, timeline, next.last_seq, dir) {
            Ok(done) => {
                replay.covered = true;
                replay.messages_replayed = done.messages_replayed;
            }
            // The log of that range is gone (pruned) or not there yet: said, not failed.
            Err(Error::Unreachable(why)) => {
                replay.note = Some(format!("the shipped log does not cover this range: {why}"));
                return replay;
            }
            Err(e) if self.removed(next) || self.removed(backup) => {
                replay.note = Some(format!("a backup of this replay was removed during the drill: {e}"));
                return replay;
            }
            Err(e) => {
                replay.covered = true;
                replay.matches = Some(false);
                replay.note = Some(format!("replaying the shipped log towards {} failed: {e}", next.id));
                return replay;
            }
        }
        let next_dir = match newest.filter(|(id, _)| *id == next.id) {
            Some((_, dir)) => dir.to_owned(),
            None => {
                let dir = scratch.join("next");
                if let Err(e) = self.drill_one(next, &dir, scratch) {
                    if self.removed(next) {
                        replay.note =
                            Some(format!("the next backup {} was removed during the drill", next.id));
                        return replay;
                    }
                    replay.matches = Some(false);
                    replay.note = Some(format!("the next backup {} does not restore: {e}", next.id));
                    return replay;
                }
                dir
            }
        };
        let compared = (|| {
            let (replayed, expected) = (store::inspect(dir)?, store::inspect(&next_dir)?);
            let same = store::digest(dir)? == store::digest(&next_dir)?;
            Ok::<_, store::Error>((same, replayed, expected))
        })();
        match compared {
            Ok((true, _, _)) => replay.matches = Some(true),
            Ok((false, replayed, expected)) => {
                replay.matches = Some(false);
                replay.note = Some(format!(
                    "the log replayed from {} up to seq {} gives {:?} up to seq {}, backup {} holds {:?} up to seq {}: \
                     their events, records or messages differ",
                    backup.id,
                    next.last_seq,
                    Counts::of(&replayed),
                    replayed.last_seq,
                    next.id,
                    Counts::of(&expected),
                    expected.last_seq
                ));
            }
            Err(e) => {
                replay.matches = Some(false);
                replay.note = Some(format!("comparing the replayed store with {} failed: {e}", next.id));
            }
        }
        replay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_follows_the_content_not_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let config = store::StoreConfig { sync_writes: false, block_cache_mb: 8 };
        let db = dir.path().join("db");
        let live = store::Store::open(&db, config).unwrap();
        let registry = crate::registry::Registry::new(live.clone());
        registry.create_event(json!({"name": "one"})).unwrap();
        live.checkpoint(&dir.path().join("before")).unwrap();
        registry.create_event(json!({"name": "two"})).unwrap();
        live.checkpoint(&dir.path().join("after")).unwrap();
        live.close().unwrap();
        drop((registry, live));
        let digest = |name: &str| store::digest(&dir.path().join(name)).unwrap();
        assert_eq!(digest("after"), digest("db"), "a checkpoint holds the same data");
        assert_ne!(digest("before"), digest("db"), "an event more is another digest");
    }
}
