//! Event backups (on demand and before a deletion), restores with options (event backups,
//! selective merges from whole-store archives, clones, dry runs) and backup-then-purge.
//!
//! Everything here writes through the registry, so each change is a normal change: it is
//! counted, and its bus message is appended in the same transaction. Records are merged in
//! transactions of [`BATCH`]: a restore interrupted half-way has put back part of the data
//! and is finished by running it again (existing records are skipped by default).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::audit::{Action, Actor, Outcome};
use super::catalog::{self, Kind};
use super::event::{self, EventMetadata, Visit};
use super::manifest::{Counts, Trigger};
use super::restore::unpack_bound;
use super::{archive, BackupManager, Error, Result};
use crate::names;
use crate::registry::{self, EventAction, Merge, RecordIn, Tally};

/// Records per transaction of a merge.
pub const BATCH: usize = 1000;
/// Attempts at backing up and deleting an event that keeps changing.
const DELETE_ATTEMPTS: usize = 5;

/// `POST /api/backups/{id}/restore` options (the seed's names).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreOptions {
    /// Count only; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Only these collections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specific_collections: Option<Vec<String>>,
    /// Only these events (whole-store archives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_ids: Option<Vec<String>>,
    /// Restore the event as a clone under this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_event_id: Option<String>,
    /// Leave existing documents alone (default) or overwrite them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_existing_records: Option<bool>,
}

impl RestoreOptions {
    /// Whether a whole-store archive is merged selectively rather than swapped in.
    pub fn is_selective(&self) -> bool {
        self.specific_collections.is_some()
            || self.event_ids.is_some()
            || self.new_event_id.is_some()
            || self.skip_existing_records.is_some()
    }

    fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidOptions(m));
        if let Some(collections) = &self.specific_collections {
            if collections.is_empty() {
                return bad(
                    "specificCollections is empty: name at least one collection, or leave it out".into()
                );
            }
            if let Some(c) = collections.iter().find(|c| !names::is_collection(c)) {
                return bad(format!(
                    "specificCollections: invalid collection name {c:?}: names match [a-z][a-z0-9_-]{{0,63}}"
                ));
            }
            if let Some(c) = repeated(collections) {
                return bad(format!("specificCollections names {c:?} twice"));
            }
        }
        if let Some(ids) = &self.event_ids {
            if ids.is_empty() {
                return bad("eventIds is empty: name at least one event, or leave it out".into());
            }
            if let Some(id) = ids.iter().find(|id| !names::is_id(id)) {
                return bad(format!("eventIds: invalid id {id:?}: ids match [A-Za-z0-9_-]{{1,64}}"));
            }
            if let Some(id) = repeated(ids) {
                return bad(format!("eventIds names {id:?} twice"));
            }
        }
        if let Some(id) = &self.new_event_id {
            if !names::is_id(id) {
                return bad(format!("newEventId: invalid id {id:?}: ids match [A-Za-z0-9_-]{{1,64}}"));
            }
        }
        Ok(())
    }

    fn merge(&self) -> Merge {
        Merge { overwrite: !self.skip_existing_records.unwrap_or(true), dry_run: self.dry_run }
    }

    fn wants_collection(&self, collection: &str) -> bool {
        self.specific_collections.as_ref().is_none_or(|cs| cs.iter().any(|c| c == collection))
    }
}

/// What a restore did to one event.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventReport {
    /// The id it was restored under.
    pub event_id: String,
    /// Its id in the backup.
    pub source_event_id: String,
    /// Whether the target existed before the restore.
    pub event_exists: bool,
    /// What happened to the event document.
    pub event: EventAction,
    /// What happened to the records, per collection.
    pub collections: BTreeMap<String, Tally>,
}

/// The answer to every restore, whatever its kind and mode.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Always true in a 200 answer.
    pub success: bool,
    /// The backup.
    pub backup_id: String,
    /// `full` or `event`.
    pub kind: Kind,
    /// `merge` (through the registry) or `swap` (the whole store replaced).
    pub mode: &'static str,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Per event.
    pub events: Vec<EventReport>,
    /// Records over all events.
    pub totals: Tally,
    /// What was asked for but is not in the backup.
    pub warnings: Vec<String>,
    /// For a swap: what the restored store holds.
    pub replaced_with: Option<Counts>,
    /// For a swap: the backup that undoes it.
    pub pre_restore_backup: Option<String>,
    /// Bus lastSeq after the restore.
    pub last_seq: u64,
    /// How long it took.
    pub duration_ms: u64,
}

impl Report {
    fn new(backup_id: &str, kind: Kind, mode: &'static str, dry_run: bool) -> Self {
        Report {
            success: true,
            backup_id: backup_id.to_owned(),
            kind,
            mode,
            dry_run,
            events: Vec::new(),
            totals: Tally::default(),
            warnings: Vec::new(),
            replaced_with: None,
            pre_restore_backup: None,
            last_seq: 0,
            duration_ms: 0,
        }
    }

    fn changed_anything(&self) -> bool {
        !self.dry_run
            && (self.totals.created + self.totals.overwritten > 0
                || self.events.iter().any(|e| e.event != EventAction::Skipped))
    }
}

/// An event backup that was written, as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventBackup {
    /// File name without `.json.gz`.
    pub id: String,
    /// `event`.
    pub kind: Kind,
    /// File name.
    pub name: String,
    /// Full path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file.
    pub sha256: String,
    /// The event.
    pub event_id: String,
    /// Its name.
    pub event_name: Option<String>,
    /// When.
    pub created: String,
    /// Why.
    pub trigger: Trigger,
    /// What it holds: one event and its records per collection.
    pub counts: catalog::ItemCounts,
}

/// An event deletion, with the backup taken first.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedWithBackup {
    /// What was deleted.
    #[serde(flatten)]
    pub deleted: registry::Deleted,
    /// The backup that holds it.
    pub backup: EventBackup,
}

/// `purge` of `POST /api/backup/create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PurgeRequest {
    /// Collections whose records are deleted.
    pub collections: Vec<String>,
    /// Only in these events (all events when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_ids: Option<Vec<String>>,
}

impl PurgeRequest {
    /// Checks names before anything is written.
    pub fn check(&self) -> Result<()> {
        if self.collections.is_empty() {
            return Err(Error::InvalidOptions(
                "purge.collections is empty: name the collections to purge".into(),
            ));
        }
        if let Some(c) = self.collections.iter().find(|c| !names::is_collection(c)) {
            return Err(Error::InvalidOptions(format!(
                "purge.collections: invalid collection name {c:?}: names match [a-z][a-z0-9_-]{{0,63}}"
            )));
        }
        if let Some(c) = repeated(&self.collections) {
            return Err(Error::InvalidOptions(format!("purge.collections names {c:?} twice")));
        }
        if let Some(ids) = &self.event_ids {
            if ids.is_empty() {
                return Err(Error::InvalidOptions(
                    "purge.eventIds is empty: name events, or leave it out".into(),
                ));
            }
            if let Some(id) = ids.iter().find(|id| !names::is_id(id)) {
                return Err(Error::InvalidOptions(format!("purge.eventIds: invalid id {id:?}")));
            }
            if let Some(id) = repeated(ids) {
                return Err(Error::InvalidOptions(format!("purge.eventIds names {id:?} twice")));
            }
        }
        Ok(())
    }
}

/// What a purge removed from one collection of one event.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Purged {
    /// The event.
    pub event_id: String,
    /// The collection.
    pub collection: String,
    /// Records deleted.
    pub count: u64,
}

/// The result of a purge.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PurgeReport {
    /// Per event and collection (only where something was deleted).
    pub purged: Vec<Purged>,
    /// Records deleted in all.
    pub purged_total: u64,
    /// Records left because they changed after the archive was taken.
    pub kept_changed: u64,
}

impl BackupManager {
    /// Writes a backup of one event without changing anything.
    pub fn backup_event(&self, event_id: &str, trigger: Trigger, actor: Actor) -> Result<EventBackup> {
        let started = Instant::now();
        let written = self.registry().snapshot_event(event_id, |snap| {
            event::write(&self.config.backup_dir, snap, trigger, self.event_level())
        });
        self.audit_event_backup(&written, event_id, trigger, started, actor);
        let written = written?;
        tracing::info!(event_id, name = %written.name, size = written.size, "event backup written");
        Ok(event_backup(written))
    }

    fn audit_event_backup(
        &self,
        written: &Result<event::EventWritten>,
        event_id: &str,
        trigger: Trigger,
        started: Instant,
        actor: Actor,
    ) {
        let target = match written {
            Ok(w) => w.metadata.backup_id.clone(),
            Err(_) => format!("event {event_id}"),
        };
        let options = json!({"eventId": event_id, "trigger": trigger});
        self.audit_result(Action::Create, "event", &target, options, written, started, actor);
    }

    /// Deletes an event after writing its backup. The backup holds exactly what is deleted: if
    /// the event changes while the backup is written, the backup is written again.
    pub fn delete_event(
        &self,
        event_id: &str,
        if_match: Option<u64>,
        actor: Actor,
    ) -> Result<DeletedWithBackup> {
        let registry = self.registry();
        for _ in 0..DELETE_ATTEMPTS {
            let started = Instant::now();
            // Checked before writing a backup, so a wrong If-Match costs nothing.
            let current = registry.get_event(event_id)?;
            if let Some(expected) = if_match {
                let version = current.to_value().ok().and_then(|v| v["version"].as_u64()).unwrap_or(0);
                if version != expected {
                    return Err(registry::Error::VersionMismatch { expected, current: version }.into());
                }
            }
            let written = registry.snapshot_event(event_id, |snap| {
                event::write(&self.config.backup_dir, snap, Trigger::PreDelete, self.event_level())
            });
            if let Err(Error::Registry(e)) = written {
                return Err(Error::Registry(e));
            }
            self.audit_event_backup(&written, event_id, Trigger::PreDelete, started, actor);
            let written = written
                .map_err(|e| Error::DeleteBlocked { event_id: event_id.to_owned(), source: Box::new(e) })?;
            let seq = written.metadata.last_seq;
            match registry.delete_event_unchanged(event_id, if_match, seq) {
                Ok(deleted) => {
                    tracing::info!(event_id, backup = %written.name, "event deleted after its backup");
                    return Ok(DeletedWithBackup { deleted, backup: event_backup(written) });
                }
                Err(registry::Error::ChangedSinceBackup(_)) => {
                    // The backup is complete and kept; a newer one is taken for the delete.
                    tracing::info!(event_id, "the event changed during its backup; backing it up again");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(registry::Error::ChangedSinceBackup(event_id.to_owned()).into())
    }

    fn event_level(&self) -> u32 {
        // JSON compresses well and event backups are small next to archives: a middle level.
        self.config.compression_level.max(6)
    }

    /// Restores a backup of either kind with options (see [`RestoreOptions`]).
    pub fn restore_with(&self, id: &str, options: &RestoreOptions, actor: Actor) -> Result<Report> {
        let started = Instant::now();
        let (kind, name, path) = catalog::resolve(&self.config.backup_dir, id)?;
        options.check()?;
        let backup_id = catalog::id_of(&name).to_owned();
        // Dry runs change nothing, so they may run beside anything.
        let _busy = if options.dry_run { None } else { Some(self.begin(format!("restore of {name}"))?) };
        let mut report = match (kind, options.is_selective()) {
            (Kind::Full, false) => Report::new(&backup_id, kind, "swap", options.dry_run),
            _ => Report::new(&backup_id, kind, "merge", options.dry_run),
        };
        let result = match (kind, report.mode) {
            (Kind::Event, _) => self.merge_event_backup(&name, &path, options, &mut report),
            (Kind::Full, "merge") => self.merge_archive(&name, &path, options, &mut report),
            _ => self.swap_archive(&name, options, &mut report),
        };
        report.duration_ms = started.elapsed().as_millis() as u64;
        report.last_seq = self.store.head().last_seq;
        let audit_options = serde_json::to_value(options).unwrap_or(Value::Null);
        match result {
            Ok(()) => {
                self.audit.record(
                    Action::Restore,
                    kind.as_str(),
                    &backup_id,
                    audit_options,
                    Outcome::Success,
                    started,
                    None,
                    actor,
                );
                Ok(report)
            }
            Err(e) => {
                if !report.changed_anything() {
                    let error = Some(e.to_string());
                    let status = Outcome::Failed;
                    self.audit.record(
                        Action::Restore,
                        kind.as_str(),
                        &backup_id,
                        audit_options,
                        status,
                        started,
                        error,
                        actor,
                    );
                    return Err(e);
                }
                let t = report.totals;
                let done = format!(
                    "part was restored: {} records created, {} overwritten, {} skipped; run the restore again to finish it",
                    t.created, t.overwritten, t.skipped
                );
                let error = Some(format!("{e} ({done})"));
                self.audit.record(
                    Action::Restore,
                    kind.as_str(),
                    &backup_id,
                    audit_options,
                    Outcome::Partial,
                    started,
                    error,
                    actor,
                );
                Err(Error::Incomplete { done, source: Box::new(e) })
            }
        }
    }

    fn swap_archive(&self, name: &str, options: &RestoreOptions, report: &mut Report) -> Result<()> {
        if options.dry_run {
            let verified = super::verify(&self.config, name, &archive::no_progress)?;
            report.replaced_with = Some(verified.manifest.counts);
            return Ok(());
        }
        let path = self.path_of(name)?;
        let restored = self.restore_locked(&path, name, true, &archive::no_progress)?;
        self.cache.forget(name);
        report.pre_restore_backup = Some(restored.pre_restore_backup);
        report.replaced_with = Some(self.manifest(name)?.counts);
        Ok(())
    }

    fn merge_event_backup(
        &self,
        name: &str,
        path: &std::path::Path,
        options: &RestoreOptions,
        report: &mut Report,
    ) -> Result<()> {
        // Pass 1 checks the whole file (checksum, structure, every id and document) before
        // anything changes; pass 2 applies. Both read one private copy.
        let sha = catalog::required_sidecar(path, name)?;
        let bound = unpack_bound(&self.config);
        let mut copy = event::private_copy(path, name, bound)?;
        let metadata = event::read_from(&copy, name, Some(&sha), bound, &mut NoVisit)?;
        std::io::Seek::seek(&mut copy, std::io::SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
        crate::fault::point("event_restore.between_passes")?;
        if let Some(ids) = &options.event_ids {
            if !ids.contains(&metadata.event_id) {
                return Err(Error::InvalidOptions(format!(
                    "eventIds: this backup holds only event {:?}",
                    metadata.event_id
                )));
            }
        }
        self.warn_missing_collections(options, metadata.counts.keys(), report);
        let target = self.target_of(&metadata.event_id, options)?;
        // Pass 2 applies.
        let mut apply = Apply::new(self, options, name, &metadata.event_id, target);
        // What was committed before a failure is reported too, so it is audited as partial.
        let applied = event::read_from(&copy, name, None, bound, &mut apply).and_then(|_| apply.flush());
        report.totals = apply.totals();
        report.events.push(apply.into_report()?);
        applied
    }

    fn merge_archive(
        &self,
        name: &str,
        path: &std::path::Path,
        options: &RestoreOptions,
        report: &mut Report,
    ) -> Result<()> {
        if options.new_event_id.is_some() && options.event_ids.as_ref().is_none_or(|ids| ids.len() != 1) {
            return Err(Error::InvalidOptions(
                "newEventId with a whole-store archive needs exactly one event in eventIds: the event to clone".into(),
            ));
        }
        let opened = self.cache.open(&self.config, name, path)?;
        let archived = opened.registry();
        let event_ids = chosen_events(archived, options.event_ids.as_deref())?;
        if let Some(wanted) = &options.specific_collections {
            let mut present = std::collections::BTreeSet::new();
            archived.records(None, |_, c, _, _| {
                if wanted.iter().any(|w| w == c) {
                    present.insert(c.to_owned());
                }
                Ok::<_, Error>(present.len() < wanted.len())
            })?;
            self.warn_missing_collections(options, present.iter(), report);
        }
        for source in &event_ids {
            let Some(doc) = archived.event(source)? else {
                report.warnings.push(format!("event {source:?} is not in the archive"));
                continue;
            };
            let target = self.target_of(source, options)?;
            let mut apply = Apply::new(self, options, name, source, target);
            apply.event(&doc)?;
            let result = archived.records(Some(source), |_, collection, id, doc| {
                apply.add_record(collection, id, doc)?;
                Ok::<_, Error>(true)
            });
            let flushed = result.and_then(|()| apply.flush());
            report.totals.add(apply.totals());
            report.events.push(apply.into_report()?);
            flushed?;
        }
        Ok(())
    }

    fn target_of(&self, source: &str, options: &RestoreOptions) -> Result<String> {
        match &options.new_event_id {
            Some(new) => {
                if self.registry().event_exists(new)? {
                    return Err(Error::EventExists(new.clone()));
                }
                Ok(new.clone())
            }
            None => Ok(source.to_owned()),
        }
    }

    fn warn_missing_collections<'a>(
        &self,
        options: &RestoreOptions,
        present: impl Iterator<Item = &'a String>,
        report: &mut Report,
    ) {
        let present: Vec<&String> = present.collect();
        for wanted in options.specific_collections.iter().flatten() {
            if !present.contains(&wanted) {
                report.warnings.push(format!("collection {wanted:?} is not in the backup"));
            }
        }
    }

    /// Writes a whole-store archive (kept out of rotation: it is the only copy of what is
    /// purged), verifies it, then deletes the named collections through the registry, all in
    /// one turn of the one-operation slot. Only records whose stored bytes equal the archived
    /// copy are deleted, so a record written or changed after the checkpoint is never lost.
    pub fn create_and_purge(
        &self,
        trigger: Trigger,
        label: Option<&str>,
        request: &PurgeRequest,
        actor: Actor,
        progress: archive::Progress<'_>,
    ) -> Result<(super::Created, PurgeReport)> {
        request.check()?;
        self.create_then(trigger, label, true, actor, progress, |created| {
            let report = self.purge_after(&created.name, request, actor)?;
            Ok((created, report))
        })
    }

    /// A backup, with a purge when one is asked for, as the API answers it: the backup's
    /// fields, plus `verified` and the purge report.
    pub fn create_answer(
        &self,
        trigger: Trigger,
        label: Option<&str>,
        keep: bool,
        purge: Option<&PurgeRequest>,
        actor: Actor,
        progress: archive::Progress<'_>,
    ) -> Result<Value> {
        let mut value = match purge {
            None => serde_json::to_value(self.create(trigger, label, keep, actor, progress)?),
            Some(purge) => {
                let (created, report) = self.create_and_purge(trigger, label, purge, actor, progress)?;
                let mut value = serde_json::to_value(created).expect("serialisable");
                value["verified"] = json!(true);
                if let (Value::Object(target), Ok(Value::Object(extra))) =
                    (&mut value, serde_json::to_value(report))
                {
                    target.extend(extra);
                }
                Ok(value)
            }
        }
        .expect("serialisable");
        value["success"] = json!(true);
        Ok(value)
    }

    fn purge_after(&self, archive_name: &str, request: &PurgeRequest, actor: Actor) -> Result<PurgeReport> {
        let started = Instant::now();
        let options = serde_json::to_value(request).unwrap_or(Value::Null);
        let mut report = PurgeReport { purged: Vec::new(), purged_total: 0, kept_changed: 0 };
        let result = self.purge_locked(archive_name, request, &mut report).map(|()| report.clone());
        let backup_id = catalog::id_of(archive_name);
        match &result {
            Ok(r) => {
                let (status, error) = if r.kept_changed > 0 {
                    (
                        Outcome::Partial,
                        Some(format!("{} records changed after the backup and were kept", r.kept_changed)),
                    )
                } else {
                    (Outcome::Success, None)
                };
                let mut options = options;
                options["purged"] = json!(r.purged_total);
                self.audit.record(Action::Purge, "full", backup_id, options, status, started, error, actor);
            }
            Err(e) if report.purged_total > 0 => {
                let done = format!("{} records were purged before it failed", report.purged_total);
                let error = format!("{e} ({done})");
                self.audit.record(
                    Action::Purge,
                    "full",
                    backup_id,
                    options,
                    Outcome::Partial,
                    started,
                    Some(error),
                    actor,
                );
            }
            Err(e) => {
                let error = Some(e.to_string());
                self.audit.record(
                    Action::Purge,
                    "full",
                    backup_id,
                    options,
                    Outcome::Failed,
                    started,
                    error,
                    actor,
                );
            }
        }
        result.map_err(|e| match report.purged_total {
            0 => e,
            n => Error::Incomplete {
                done: format!(
                    "{n} records were purged before it failed; the archive {archive_name} holds them"
                ),
                source: Box::new(e),
            },
        })
    }

    fn purge_locked(
        &self,
        archive_name: &str,
        request: &PurgeRequest,
        report: &mut PurgeReport,
    ) -> Result<()> {
        let path = self.path_of(archive_name)?;
        // Verifying means unpacking: the cache keeps the unpacked copy for browsing.
        let opened = self.cache.open(&self.config, archive_name, &path)?;
        let archived = opened.registry();
        let registry = self.registry();
        let events = chosen_events(archived, request.event_ids.as_deref())?;
        for event_id in &events {
            let mut per: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
            let flush = |collection: &str,
                         batch: &mut Vec<(String, Vec<u8>)>,
                         report: &mut PurgeReport|
             -> Result<()> {
                let (deleted, kept) = registry.purge_records(event_id, collection, batch)?;
                batch.clear();
                report.kept_changed += kept;
                report.purged_total += deleted;
                if deleted > 0 {
                    match report
                        .purged
                        .iter_mut()
                        .find(|p| p.event_id == *event_id && p.collection == collection)
                    {
                        Some(p) => p.count += deleted,
                        None => report.purged.push(Purged {
                            event_id: event_id.clone(),
                            collection: collection.to_owned(),
                            count: deleted,
                        }),
                    }
                }
                Ok(())
            };
            archived.records(Some(event_id), |_, collection, id, doc| {
                if request.collections.iter().any(|c| c == collection) {
                    let batch = per.entry(collection.to_owned()).or_default();
                    batch.push((id.to_owned(), doc.to_vec()));
                    if batch.len() >= BATCH {
                        flush(collection, batch, report)?;
                    }
                }
                Ok::<_, Error>(true)
            })?;
            for (collection, batch) in per.iter_mut() {
                if !batch.is_empty() {
                    flush(collection, batch, report)?;
                }
            }
        }
        Ok(())
    }
}

/// Checks an event backup completely: its sidecar, its SHA-256, its structure, every id and
/// name, and that its records match the metadata's counts (the checks of [`event::read`]).
pub fn verify_event(
    config: &super::BackupConfig,
    name: &str,
    path: &std::path::Path,
) -> Result<EventMetadata> {
    event::read_verified(path, name, unpack_bound(config), &mut NoVisit)
}

/// The first name a list holds twice: repeating one would restore or count it twice.
fn repeated(list: &[String]) -> Option<&String> {
    list.iter().enumerate().find(|(i, x)| list[..*i].contains(x)).map(|(_, x)| x)
}

/// The events asked for, or every event of the archive.
fn chosen_events(archived: registry::Archived<'_>, asked: Option<&[String]>) -> Result<Vec<String>> {
    if let Some(ids) = asked {
        return Ok(ids.to_vec());
    }
    let mut ids = Vec::new();
    archived.events(None, |id, _| {
        ids.push(id.to_owned());
        Ok::<_, Error>(true)
    })?;
    Ok(ids)
}

fn event_backup(w: event::EventWritten) -> EventBackup {
    EventBackup {
        id: w.metadata.backup_id.clone(),
        kind: Kind::Event,
        name: w.name,
        path: w.path.display().to_string(),
        size: w.size,
        sha256: w.sha256,
        event_id: w.metadata.event_id,
        event_name: w.metadata.event_name,
        created: w.metadata.backup_date,
        trigger: w.metadata.trigger,
        counts: catalog::ItemCounts { events: 1, records: w.metadata.counts, bus_messages: None },
    }
}

/// Pass 1 over an event backup: [`event::read`] makes every check itself.
struct NoVisit;

impl Visit for NoVisit {
    fn metadata(&mut self, _: &EventMetadata) -> Result<bool> {
        Ok(true)
    }

    fn event_document(&mut self, _: &RawValue) -> Result<()> {
        Ok(())
    }

    fn record(&mut self, _: &str, _: &str, _: &RawValue) -> Result<()> {
        Ok(())
    }
}

/// Pass 2: puts an event and its records back, in batches.
struct Apply<'m> {
    manager: &'m BackupManager,
    options: &'m RestoreOptions,
    /// The backup read, for errors.
    backup: &'m str,
    source: String,
    target: String,
    event: Option<(bool, EventAction)>,
    pending_event: Option<Vec<u8>>,
    batch: Vec<RecordIn>,
    tallies: BTreeMap<String, Tally>,
}

impl<'m> Apply<'m> {
    fn new(
        manager: &'m BackupManager,
        options: &'m RestoreOptions,
        backup: &'m str,
        source: &str,
        target: String,
    ) -> Self {
        Apply {
            manager,
            options,
            backup,
            source: source.to_owned(),
            target,
            event: None,
            pending_event: None,
            batch: Vec::with_capacity(BATCH),
            tallies: BTreeMap::new(),
        }
    }

    fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let merge = self.options.merge();
        self.manager.registry().merge_records(&self.target, &self.batch, merge, &mut self.tallies)?;
        self.batch.clear();
        Ok(())
    }

    fn totals(&self) -> Tally {
        let mut total = Tally::default();
        for t in self.tallies.values() {
            total.add(*t);
        }
        total
    }

    /// The event document, as stored in the backup.
    fn event(&mut self, doc: &[u8]) -> Result<()> {
        // Documents of archives were never checked one by one: what the registry could not
        // update later is refused before it is stored.
        registry::check_stored(doc).map_err(|why| Error::damaged(self.backup, why))?;
        let bytes =
            if self.target != self.source { clone_document(doc, &self.target)? } else { doc.to_vec() };
        self.pending_event = Some(bytes);
        // With chosen collections, the event is put back only for a record of one of them:
        // restoring a collection the backup does not hold must not bring a deleted event back.
        if self.options.specific_collections.is_none() {
            self.put_event()?;
        }
        Ok(())
    }

    /// One record, as stored in the backup.
    fn add_record(&mut self, collection: &str, id: &str, doc: &[u8]) -> Result<()> {
        if !self.options.wants_collection(collection) {
            return Ok(());
        }
        registry::check_stored(doc).map_err(|why| Error::damaged(self.backup, why))?;
        self.put_event()?;
        self.batch.push((collection.to_owned(), id.to_owned(), doc.to_vec()));
        if self.batch.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Puts the event document back, once, before its first record.
    fn put_event(&mut self) -> Result<()> {
        if let Some(bytes) = self.pending_event.take() {
            let mut merge = self.options.merge();
            // Restoring chosen collections does not touch an existing event's own document.
            merge.overwrite &= self.options.specific_collections.is_none();
            self.event = Some(self.manager.registry().merge_event(&self.target, &bytes, merge)?);
        }
        Ok(())
    }

    fn into_report(self) -> Result<EventReport> {
        let (event_exists, event) = match self.event {
            Some(done) => done,
            None => (self.manager.registry().event_exists(&self.target)?, EventAction::Skipped),
        };
        Ok(EventReport {
            event_id: self.target,
            source_event_id: self.source,
            event_exists,
            event,
            collections: self.tallies,
        })
    }
}

impl Visit for Apply<'_> {
    fn metadata(&mut self, _: &EventMetadata) -> Result<bool> {
        Ok(true)
    }

    fn event_document(&mut self, doc: &RawValue) -> Result<()> {
        self.event(doc.get().as_bytes())
    }

    fn record(&mut self, collection: &str, id: &str, doc: &RawValue) -> Result<()> {
        self.add_record(collection, id, doc.get().as_bytes())
    }
}

/// The event document of a clone: the new id, version 1, created now; its fields as they were.
fn clone_document(doc: &[u8], new_id: &str) -> Result<Vec<u8>> {
    let value: Value = serde_json::from_slice(doc).map_err(|e| Error::InvalidOptions(e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(Error::InvalidOptions("the event document is not an object".into()));
    };
    let now = crate::bus::now();
    Ok(registry::render_document(new_id, &fields, &now, &now, 1))
}
