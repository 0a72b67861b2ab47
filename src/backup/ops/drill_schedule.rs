//! What restore drills found and when the next one runs: the report a drill makes (and its
//! audit entry keeps), the last one (this server's, else the newest in the audit trail, so it
//! survives a restart and shows drills run offline by the CLI), health's `lastDrill`, and the
//! schedule (DRILL_INTERVAL). The drill itself is [`super::drill`], the backups it chooses
//! from [`super::drill_choice`]'s.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use crate::backup::audit::{Action, Actor, Entry, Outcome as AuditOutcome, AUDIT_FILE, MAX_ENTRIES};
use crate::backup::BackupManager;

/// How often the schedule looks again at the longest (backups appear, a standby is promoted,
/// a drill runs through the API or the CLI).
const RECHECK: Duration = Duration::from_secs(3600);

/// How a drill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DrillOutcome {
    /// Every backup drilled restored and checked out.
    Passed,
    /// At least one did not (see its `error`), or the drill could not run.
    Failed,
}

/// Where a drilled backup is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// The backup repository.
    Repo,
    /// An archive of BACKUP_DIR.
    Local,
}

/// What a drill did and found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillReport {
    /// When it ended, RFC 3339 UTC.
    pub at: String,
    /// Passed or failed.
    pub outcome: DrillOutcome,
    /// The measured restore time of the newest backup, in seconds.
    pub restore_seconds: f64,
    /// The backups drilled, newest first.
    pub backups: Vec<Drilled>,
    /// What failed, when it failed.
    pub error: Option<String>,
    /// Backups removed (deleted, rotated, pruned) while the drill ran, so not drilled: no
    /// failure, another backup was drilled in their place when one was left.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

impl DrillReport {
    /// A drill that failed for `why` before it drilled anything.
    pub(super) fn failed(why: String) -> DrillReport {
        DrillReport {
            at: String::new(),
            outcome: DrillOutcome::Failed,
            restore_seconds: 0.0,
            backups: Vec::new(),
            error: Some(why),
            removed: Vec::new(),
        }
    }
}

/// One backup of a drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Drilled {
    /// The backup's id.
    pub id: String,
    /// Where it is kept.
    pub location: Place,
    /// How long restoring and checking it took, in seconds.
    pub restore_seconds: f64,
    /// Files restored, each checked against its checksum.
    pub files: usize,
    /// Events the restored store holds.
    pub events: u64,
    /// Records it holds (all collections).
    pub records: u64,
    /// Its bus lastSeq.
    pub last_seq: u64,
    /// The log replayed from it to the next backup (with shipping on, for the older backup).
    pub replay: Option<Replay>,
    /// Why it does not restore, or why its replay did not give the next backup.
    pub error: Option<String>,
}

/// The shipped log replayed from a drilled backup up to the backup after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replay {
    /// The backup replayed towards (the next one of the same timeline).
    pub next: Option<String>,
    /// Its lastSeq, where the replay stops.
    pub to_seq: Option<u64>,
    /// Whether the repository's log covers the range (not once it is pruned).
    pub covered: bool,
    /// Messages replayed.
    pub messages_replayed: u64,
    /// Whether the replayed store holds exactly what the next backup holds (every event,
    /// record and bus message); `null` when there was nothing to compare.
    pub matches: Option<bool>,
    /// Why it was not compared, or what differs.
    pub note: Option<String>,
}

/// The drills of one BackupManager: one at a time, and the last one's report.
#[derive(Debug, Default)]
pub struct Drills {
    pub(super) running: AtomicBool,
    pub(super) last: Mutex<Last>,
}

#[derive(Debug, Default)]
pub(super) struct Last {
    /// The size of the audit trail when it was last read (`Some(None)`: there was none).
    read_at: Option<Option<u64>>,
    pub(super) report: Option<DrillReport>,
}

/// A backup that may be drilled.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub(super) id: String,
    /// The archive's file name (local), or the id (repository).
    pub(super) name: String,
    pub(super) place: Place,
    pub(super) created: String,
    pub(super) last_seq: u64,
    pub(super) timeline: Option<String>,
    /// What its restored files take (for a damaged archive, its size on disk).
    pub(super) bytes: u64,
}

/// The report a drill's audit entry holds.
fn from_entry(entry: &Entry) -> DrillReport {
    let options = &entry.options;
    let error =
        entry.error.as_deref().map(|e| e.strip_prefix("restore drill failed: ").unwrap_or(e).to_owned());
    // A time ahead of now (clock skew, an entry written by hand) would put the next drill
    // off until then and keep that entry the last drill: it counts as now.
    let at = options["at"].as_str().unwrap_or(&entry.time);
    let now = Utc::now();
    let at = match DateTime::parse_from_rfc3339(at) {
        Ok(t) if t.with_timezone(&Utc) <= now => at.to_owned(),
        _ => now.to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    DrillReport {
        at,
        outcome: match entry.status {
            AuditOutcome::Success => DrillOutcome::Passed,
            AuditOutcome::Failed | AuditOutcome::Partial => DrillOutcome::Failed,
        },
        restore_seconds: options["restoreSeconds"].as_f64().unwrap_or_default(),
        backups: serde_json::from_value(options["backups"].clone()).unwrap_or_default(),
        error,
        removed: serde_json::from_value(options["removed"].clone()).unwrap_or_default(),
    }
}

impl BackupManager {
    /// The last drill's report: this server's, else the newest drill entry of the audit
    /// trail (read again only when the trail changed).
    pub fn last_drill(&self) -> Option<DrillReport> {
        let size = std::fs::metadata(self.config.backup_dir.join(AUDIT_FILE)).map(|m| m.len()).ok();
        let mut last = self.drills.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.read_at != Some(size) {
            let newest = self.audit().newest(MAX_ENTRIES).unwrap_or_default();
            // Beyond the entries read, the one known already is still the newest.
            if let Some(entry) = newest.iter().find(|e| e.action == Action::Drill) {
                last.report = Some(from_entry(entry));
            }
            last.read_at = Some(size);
        }
        last.report.clone()
    }

    /// The `lastDrill` of health, and whether it makes the service degraded (it failed).
    pub fn drill_health(&self) -> (Value, bool) {
        let last = self.last_drill();
        let failed = last.as_ref().is_some_and(|r| r.outcome == DrillOutcome::Failed);
        (serde_json::to_value(last).unwrap_or_default(), failed)
    }

    /// How long until the next scheduled drill: one DRILL_INTERVAL after the last drill, or,
    /// before the first, after the oldest backup. `None`: no drill to schedule (drills off,
    /// a standby, whose backups are its primary's to drill, or no backup).
    pub fn drill_due_in(&self) -> Option<Duration> {
        let interval = self.config.drill_interval;
        if interval.is_zero() || self.following().is_some() {
            return None;
        }
        let since = match self.last_drill() {
            Some(report) => report.at,
            None => self.drill_candidates().ok()?.last()?.created.clone(),
        };
        let since = DateTime::parse_from_rfc3339(&since)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|_| Utc::now());
        let due = since + chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
        Some((due - Utc::now()).to_std().unwrap_or_default())
    }
}

/// Runs the drill schedule until shutdown: a drill when one is due (see
/// [`BackupManager::drill_due_in`]); none at startup unless one is.
pub async fn run(manager: Arc<BackupManager>, mut shutdown: watch::Receiver<bool>) {
    if manager.config.drill_interval.is_zero() {
        return;
    }
    let due_in = |m: Arc<BackupManager>| async move {
        tokio::task::spawn_blocking(move || m.drill_due_in()).await.ok().flatten()
    };
    loop {
        let mut due = due_in(manager.clone()).await;
        if due == Some(Duration::ZERO) {
            let m = manager.clone();
            match tokio::task::spawn_blocking(move || m.drill(Actor::System)).await {
                Ok(Ok(report)) if report.outcome == DrillOutcome::Passed => {}
                Ok(Ok(report)) => tracing::error!(error = ?report.error, "scheduled restore drill failed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "scheduled restore drill did not run"),
                Err(e) => tracing::error!(error = %e, "scheduled restore drill panicked"),
            }
            due = due_in(manager.clone()).await;
        }
        // Not due again at once (a drill was refused as busy): looked at again later.
        let wait = due.filter(|d| !d.is_zero()).unwrap_or(RECHECK).min(RECHECK);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => break,
        }
    }
}
