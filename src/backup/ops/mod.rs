//! The operations of the BackupManager, one file each, and the one [`Runner`] every one of
//! them goes through.
//!
//! An operation is its body alone: the runner owns the one-operation slot, the timing, the
//! log line and the audit entry with its outcome. A body reports what it has done with
//! [`Ctx::done`], so that a failure after it is audited as partial and answered as
//! [`Error::Incomplete`]; and what it left undone on purpose with [`Ctx::left_undone`].

pub mod apply;
pub mod create;
pub mod delete;
pub mod drill;
pub mod drill_choice;
pub mod drill_schedule;
pub mod dropin;
pub mod event_delete;
pub mod migrate;
pub mod pitr;
pub mod prune;
pub mod purge;
pub mod repo_export;
pub mod repo_restore;
pub mod restore;
pub mod restore_options;
pub mod restore_with;
pub mod rotate;
pub mod schedule;
pub mod watch;

use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};

use super::audit::{Action, Actor, Audit, Outcome, Record};
use super::catalog::{id_of, Kind};
use super::error::{Error, Result};
use super::notify::{Notifier, Subject};
use crate::observe;

/// Whether an operation takes the one-operation slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Runs alone: a second exclusive operation gets [`Error::Busy`] naming this one.
    Exclusive,
    /// Runs beside anything: it changes nothing a running operation reads (a dry run, an
    /// event backup), or it is a step of an operation that holds the slot already (rotation,
    /// the pre-restore backup).
    Shared,
}

/// An operation, as the slot, the log and the audit trail name it.
#[derive(Debug, Clone)]
pub struct Op {
    /// What it does.
    pub action: Action,
    /// To which kind of backup.
    pub kind: Kind,
    /// The backup's file name; [`Ctx::name`] may set it once it is known.
    pub name: String,
    /// The options it was asked with, as the audit trail records them.
    pub options: Value,
    /// Who asked.
    pub actor: Actor,
    /// Whether it runs alone.
    pub slot: Slot,
}

impl Op {
    /// An operation on the backup `name`.
    pub fn new(action: Action, kind: Kind, name: &str, actor: Actor, slot: Slot) -> Op {
        Op { action, kind, name: name.to_owned(), options: Value::Null, actor, slot }
    }

    /// With the options it was asked with.
    pub fn options(mut self, options: Value) -> Op {
        self.options = options;
        self
    }

    /// What [`Error::Busy`] says is running.
    fn describe(&self) -> String {
        match self.action {
            Action::Create => format!("backup {}", self.name),
            Action::Restore => format!("restore of {}", self.name),
            Action::Delete => format!("deletion of {}", self.name),
            Action::Purge => format!("purge after {}", self.name),
            Action::Promote => "promotion of this standby".to_owned(),
            Action::Drill => "a restore drill".to_owned(),
        }
    }
}

/// What the body of an operation tells the runner as it goes.
#[derive(Debug, Default)]
pub struct Ctx {
    name: Option<String>,
    done: Option<String>,
    left_undone: Option<String>,
    options: serde_json::Map<String, Value>,
    bytes: Option<u64>,
}

impl Ctx {
    /// Names the backup once it is known (an event backup is named as it is written).
    pub fn name(&mut self, name: &str) {
        self.name = Some(name.to_owned());
    }

    /// What has been done so far: a failure from here on is partial, and the error says it.
    pub fn done(&mut self, what: impl Into<String>) {
        self.done = Some(what.into());
    }

    /// Ends in success with part left undone on purpose (the audit entry says why).
    pub fn left_undone(&mut self, why: impl Into<String>) {
        self.left_undone = Some(why.into());
    }

    /// Adds a result to the audit entry's options (say, how many records a purge deleted).
    pub fn option(&mut self, key: &str, value: Value) {
        self.options.insert(key.to_owned(), value);
    }

    /// The size of the backup it wrote, for the metrics.
    pub fn bytes(&mut self, bytes: u64) {
        self.bytes = Some(bytes);
    }
}

/// Runs operations: one slot, one trail, and what every operation reports when it ends
/// (metrics, failure notifications).
#[derive(Debug)]
pub struct Runner {
    busy: Mutex<Option<String>>,
    audit: Audit,
    notifier: Notifier,
}

/// Clears the slot when dropped, however the body ends.
struct Held<'a>(&'a Runner);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl Runner {
    /// A runner whose trail is `audit` and whose failures go to `notifier`.
    pub fn new(audit: Audit, notifier: Notifier) -> Runner {
        Runner { busy: Mutex::new(None), audit, notifier }
    }

    /// The audit trail.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Where failures are notified.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// What holds the slot, if anything.
    pub fn running(&self) -> Option<String> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn take(&self, op: &Op) -> Result<Held<'_>> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = busy.as_ref() {
            return Err(Error::Busy(running.clone()));
        }
        *busy = Some(op.describe());
        Ok(Held(self))
    }

    /// Runs `body` as `op`: in the slot when it is exclusive (see [`Runner::exclusive`]),
    /// timed, logged, and audited with its outcome. A failure after [`Ctx::done`] comes back
    /// as [`Error::Incomplete`] saying what was done.
    pub fn run<T>(&self, op: Op, body: impl FnOnce(&mut Ctx) -> Result<T>) -> Result<T> {
        if op.slot == Slot::Exclusive {
            let inside = Op { slot: Slot::Shared, ..op.clone() };
            return self.exclusive(&op, || self.run(inside, body));
        }
        let started = Instant::now();
        let mut ctx = Ctx::default();
        let result = body(&mut ctx);
        let result = match (result, ctx.done.take()) {
            (Err(e), Some(done)) => Err(Error::Incomplete { done, source: Box::new(e) }),
            (result, _) => result,
        };
        self.finish(op, ctx, result.as_ref().map(|_| ()), started);
        result
    }

    /// Runs `f` in the slot, taken for `op`: `f` runs the operations that must follow each
    /// other with nothing between them (a backup, then the purge it makes safe) as
    /// [`Slot::Shared`]. When the slot is taken, `op` is audited as refused.
    pub fn exclusive<T>(&self, op: &Op, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let _held = match self.take(op) {
            Ok(held) => held,
            Err(e) => {
                self.finish(op.clone(), Ctx::default(), Err(&e), started);
                return Err(e);
            }
        };
        f()
    }

    /// The log line and the audit entry of an operation that ended.
    fn finish(&self, op: Op, mut ctx: Ctx, result: std::result::Result<(), &Error>, started: Instant) {
        let (outcome, error) = match result {
            Ok(()) => match ctx.left_undone.take() {
                Some(why) => (Outcome::Partial, Some(why)),
                None => (Outcome::Success, None),
            },
            Err(e @ Error::Incomplete { .. }) => (Outcome::Partial, Some(e.to_string())),
            Err(e) => (Outcome::Failed, Some(e.to_string())),
        };
        let name = ctx.name.as_deref().unwrap_or(&op.name);
        let mut options = op.options;
        if !ctx.options.is_empty() {
            match &mut options {
                Value::Object(fields) => fields.extend(std::mem::take(&mut ctx.options)),
                other => *other = Value::Object(std::mem::take(&mut ctx.options)),
            }
        }
        let duration = started.elapsed();
        let ms = duration.as_millis() as u64;
        let (action, kind, actor) = (op.action, op.kind, op.actor);
        match (result, &error) {
            (Ok(()), None) => {
                tracing::info!(?action, ?kind, backup = name, ?actor, ms, "backup operation done")
            }
            (Err(Error::Busy(running)), _) => {
                tracing::info!(?action, ?kind, backup = name, ?actor, %running, "backup operation refused: busy")
            }
            (_, Some(e)) if outcome == Outcome::Partial => {
                tracing::warn!(?action, ?kind, backup = name, ?actor, ms, error = %e, "backup operation partly done")
            }
            (_, e) => {
                let e = e.as_deref().unwrap_or_default();
                tracing::error!(?action, ?kind, backup = name, ?actor, ms, error = %e, "backup operation failed")
            }
        }
        let ended =
            Ended { action, kind, name, options: &options, outcome, result, duration, bytes: ctx.bytes };
        self.report(&ended);
        self.audit.record(Record {
            action,
            kind,
            target: id_of(name),
            options,
            outcome,
            duration,
            error,
            actor,
        });
    }

    /// The metrics and the notification of an operation that ended.
    fn report(&self, ended: &Ended<'_>) {
        let in_repo = ended.options.get("location").and_then(Value::as_str) == Some("repo");
        let dry_run = ended.options.get("dryRun").and_then(Value::as_bool) == Some(true);
        let (kind, outcome) = (ended.kind.as_str(), ended.outcome.as_str());
        let subject = match ended.action {
            Action::Create => {
                observe::backup_done(kind, in_repo, outcome, ended.duration, ended.bytes);
                Some(if in_repo { Subject::RepoUpload } else { Subject::Backup })
            }
            Action::Restore => {
                observe::restore_done(kind, in_repo, dry_run, outcome, ended.duration);
                Some(Subject::Restore)
            }
            Action::Drill => {
                let passed = ended.outcome == Outcome::Success;
                metrics::counter!(observe::DRILLS, "outcome" => if passed { "passed" } else { "failed" })
                    .increment(1);
                Some(Subject::Drill)
            }
            Action::Delete | Action::Purge | Action::Promote => {
                observe::operation_done(ended.action.as_str(), outcome);
                None
            }
        };
        let Some(subject) = subject else { return };
        // What a success recovers: the same kind of backup, restores of the same backup.
        let scope = match subject {
            Subject::Backup => kind,
            Subject::Restore => ended.name,
            _ => "",
        };
        let details = json!({
            "operation": ended.action.as_str(),
            "kind": kind,
            "location": observe::location(in_repo),
            "backup": ended.name,
            "dryRun": dry_run,
            "outcome": outcome,
            "durationMs": ended.duration.as_millis() as u64,
        });
        match ended.result {
            // A dry run proves nothing about the restores that failed.
            Ok(()) if dry_run => {}
            Ok(()) => self.notifier.succeeded(subject, scope, details),
            // A refusal (busy, not found, bad options) is the caller's to handle, not a failure
            // of the service.
            Err(e) if e.is_refusal() => {}
            // It says what the drill found.
            Err(e @ Error::DrillFailed(_)) => self.notifier.failed(subject, scope, &e.to_string(), details),
            Err(e) => {
                let message = format!("{} failed: {e}", describe(subject, ended.name));
                self.notifier.failed(subject, scope, &message, details);
            }
        }
    }
}

/// What [`Runner::report`] needs of an operation that ended.
struct Ended<'a> {
    action: Action,
    kind: Kind,
    name: &'a str,
    options: &'a Value,
    outcome: Outcome,
    result: std::result::Result<(), &'a Error>,
    duration: std::time::Duration,
    bytes: Option<u64>,
}

/// A failed operation, as its notice names it.
fn describe(subject: Subject, name: &str) -> String {
    match subject {
        Subject::Backup => format!("backup {name}"),
        Subject::RepoUpload => format!("storing backup {name} in the repository"),
        Subject::Restore => format!("restore of {name}"),
        Subject::Drill => format!("restore drill of {name}"),
        Subject::Shipping | Subject::StaleBackups => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner() -> (tempfile::TempDir, Runner) {
        let dir = tempfile::tempdir().unwrap();
        let runner = Runner::new(Audit::new(dir.path()), Notifier::new(None));
        (dir, runner)
    }

    fn op(slot: Slot) -> Op {
        Op::new(Action::Create, Kind::Full, "backup_x.tar.gz", Actor::Admin, slot)
    }

    #[test]
    fn one_exclusive_operation_at_a_time_and_the_refusal_is_audited() {
        let (_dir, runner) = runner();
        let inner = runner.run(op(Slot::Exclusive), |_| {
            assert_eq!(runner.running().as_deref(), Some("backup backup_x.tar.gz"));
            let refused = runner.run(op(Slot::Exclusive), |_| Ok(()));
            assert!(matches!(&refused, Err(Error::Busy(r)) if r == "backup backup_x.tar.gz"), "{refused:?}");
            // A shared operation runs beside it.
            runner.run(op(Slot::Shared), |_| Ok(7))
        });
        assert_eq!(inner.unwrap(), 7);
        assert_eq!(runner.running(), None, "the slot is free again");
        let entries = runner.audit().newest(10).unwrap();
        let outcomes: Vec<Outcome> = entries.iter().map(|e| e.status).collect();
        assert_eq!(outcomes, [Outcome::Success, Outcome::Success, Outcome::Failed]);
        assert!(entries[2].error.as_deref().unwrap().contains("is running"), "{:?}", entries[2]);
        assert_eq!(entries[0].target, "backup_x", "the id, without the suffix");
    }

    #[test]
    fn a_failure_after_work_was_done_is_partial_and_says_what_was_done() {
        let (_dir, runner) = runner();
        let result: Result<()> = runner.run(op(Slot::Exclusive), |ctx| {
            ctx.done("3 records were purged");
            Err(Error::InvalidOptions("boom".into()))
        });
        let e = result.unwrap_err();
        assert!(matches!(e, Error::Incomplete { .. }), "{e:?}");
        assert_eq!(e.to_string(), "boom (3 records were purged)");
        let entry = &runner.audit().newest(1).unwrap()[0];
        assert_eq!(entry.status, Outcome::Partial);
        assert_eq!(entry.error.as_deref(), Some("boom (3 records were purged)"));
        assert_eq!(runner.running(), None, "a failure frees the slot");
    }

    #[test]
    fn success_with_work_left_undone_is_partial_and_results_join_the_options() {
        let (_dir, runner) = runner();
        let op = op(Slot::Shared).options(serde_json::json!({"keep": true}));
        runner
            .run(op, |ctx| {
                ctx.done("ignored on success");
                ctx.left_undone("2 records changed and were kept");
                ctx.option("purged", serde_json::json!(5));
                ctx.name("backup_y.tar.gz");
                Ok(())
            })
            .unwrap();
        let entry = &runner.audit().newest(1).unwrap()[0];
        assert_eq!(entry.status, Outcome::Partial);
        assert_eq!(entry.error.as_deref(), Some("2 records changed and were kept"));
        assert_eq!(entry.options, serde_json::json!({"keep": true, "purged": 5}));
        assert_eq!(entry.target, "backup_y");
    }
}
