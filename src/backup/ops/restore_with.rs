//! Restoring with options: an event backup merged back, chosen events or collections of a
//! whole-store archive merged selectively, an event cloned under a new id, dry runs; or, with
//! no option that calls for a merge, the hot swap of [`super::restore`].
//!
//! A merge writes through the registry, so each change is a normal change: it is counted, and
//! its bus message is appended in the same transaction. Records are merged in transactions of
//! [`BATCH`]: a restore interrupted half-way has put back part of the data and is finished by
//! running it again (existing records are skipped by default).

use std::collections::BTreeSet;
use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::time::Instant;

use super::apply::{chosen_events, Apply};
use super::restore_options::{Mode, Report, RestoreOptions};
use super::{Op, Slot};
use crate::backup::archive;
use crate::backup::audit::{Action, Actor};
use crate::backup::catalog::{self, Kind};
use crate::backup::error::{Error, Result};
use crate::backup::event_backup::{self, CheckOnly, EventMetadata};
use crate::backup::{BackupConfig, BackupManager};

impl BackupManager {
    /// Restores a backup of either kind with options (see [`RestoreOptions`]).
    pub fn restore_with(&self, id: &str, options: &RestoreOptions, actor: Actor) -> Result<Report> {
        let started = Instant::now();
        let (kind, name, path) = match catalog::resolve(&self.config.backup_dir, id) {
            Err(Error::NotFound(_)) if self.in_repo(id)? => {
                return self.restore_from_repo(id, options, actor)
            }
            Err(Error::NotFound(_)) if self.pending(id).is_some() => {
                return Err(self.pending(id).expect("checked"))
            }
            resolved => resolved?,
        };
        options.check()?;
        let mode = match (kind, options.is_selective()) {
            (Kind::Full, false) => Mode::Swap,
            (Kind::Full, true) | (Kind::Event, _) => Mode::Merge,
        };
        // Dry runs change nothing, so they may run beside anything.
        let slot = if options.dry_run { Slot::Shared } else { Slot::Exclusive };
        let op = Op::new(Action::Restore, kind, &name, actor, slot)
            .options(serde_json::to_value(options).unwrap_or_default());
        self.runner.run(op, |ctx| {
            let mut report = Report::new(catalog::id_of(&name), kind, mode, options.dry_run);
            let result = match (kind, mode) {
                (Kind::Event, _) => self.merge_event_backup(&name, &path, options, &mut report),
                (Kind::Full, Mode::Merge) => self.merge_archive(&name, &path, options, &mut report),
                (Kind::Full, Mode::Swap) => self.swap_archive(&name, options, &mut report),
            };
            report.duration_ms = started.elapsed().as_millis() as u64;
            report.last_seq = self.store.head().last_seq;
            if result.is_err() && report.changed_anything() {
                ctx.done(part_restored(&report));
            }
            result.map(|()| report)
        })
    }

    fn swap_archive(&self, name: &str, options: &RestoreOptions, report: &mut Report) -> Result<()> {
        if options.dry_run {
            let verified = archive::verify(&self.config, name, &archive::no_progress)?;
            report.replaced_with = Some(verified.manifest.counts);
            return Ok(());
        }
        let path = self.path_of(name)?;
        let source = super::restore::Source::Backups;
        let restored = self.restore_in_slot(&path, name, source, &archive::no_progress)?;
        self.cache.forget(name);
        report.pre_restore_backup = Some(restored.pre_restore_backup);
        report.replaced_with = Some(self.manifest(name)?.counts);
        Ok(())
    }

    fn merge_event_backup(
        &self,
        name: &str,
        path: &Path,
        options: &RestoreOptions,
        report: &mut Report,
    ) -> Result<()> {
        // Pass 1 checks the whole file (checksum, structure, every id and document) before
        // anything changes; pass 2 applies. Both read one private copy.
        let sha = catalog::required_sidecar(path, name)?;
        let bound = self.config.unpack_bound();
        let mut copy = event_backup::private_copy(path, name, bound)?;
        let metadata = event_backup::read_from(&copy, name, Some(&sha), bound, &mut CheckOnly)?;
        copy.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
        crate::fault::point("event_restore.between_passes")?;
        if let Some(ids) = &options.event_ids {
            if !ids.contains(&metadata.event_id) {
                return Err(Error::InvalidOptions(format!(
                    "eventIds: this backup holds only event {:?}",
                    metadata.event_id
                )));
            }
        }
        report.warn_missing_collections(options, metadata.counts.keys());
        let target = self.target_of(&metadata.event_id, options)?;
        let mut apply = Apply::new(self, options, name, &metadata.event_id, target);
        // What was committed before a failure is reported too, so it is audited as partial.
        let applied =
            event_backup::read_from(&copy, name, None, bound, &mut apply).and_then(|_| apply.flush());
        report.totals = apply.totals();
        report.events.push(apply.into_report()?);
        applied
    }

    fn merge_archive(
        &self,
        name: &str,
        path: &Path,
        options: &RestoreOptions,
        report: &mut Report,
    ) -> Result<()> {
        check_clone(options)?;
        let opened = self.cache.open(&self.config, name, path)?;
        self.merge_opened(name, &opened, options, report)
    }

    /// Merges the chosen events and collections of an opened whole-store backup.
    pub(crate) fn merge_opened(
        &self,
        name: &str,
        opened: &crate::backup::browse::Opened,
        options: &RestoreOptions,
        report: &mut Report,
    ) -> Result<()> {
        let archived = opened.registry();
        let event_ids = chosen_events(archived, options.event_ids.as_deref())?;
        if let Some(wanted) = &options.specific_collections {
            let mut present = BTreeSet::new();
            archived.records(None, |_, c, _, _| {
                if wanted.iter().any(|w| w == c) {
                    present.insert(c.to_owned());
                }
                Ok::<_, Error>(present.len() < wanted.len())
            })?;
            report.warn_missing_collections(options, present.iter());
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

    /// The id an event is restored under: its own, or a clone's, which must be free.
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
}

/// A clone from a whole-store backup names the one event it clones.
pub(crate) fn check_clone(options: &RestoreOptions) -> Result<()> {
    if options.new_event_id.is_some() && options.event_ids.as_ref().is_none_or(|ids| ids.len() != 1) {
        return Err(Error::InvalidOptions(
            "newEventId with a whole-store archive needs exactly one event in eventIds: the event to clone"
                .into(),
        ));
    }
    Ok(())
}

/// What a restore that failed had put back already.
pub(crate) fn part_restored(report: &Report) -> String {
    let t = report.totals;
    format!(
        "part was restored: {} records created, {} overwritten, {} skipped; run the restore again to finish it",
        t.created, t.overwritten, t.skipped
    )
}

/// Checks an event backup completely: its sidecar, its SHA-256, its structure, every id and
/// name, and that its records match the metadata's counts (the checks of
/// [`event_backup::read`]).
pub fn verify_event(config: &BackupConfig, name: &str, path: &Path) -> Result<EventMetadata> {
    event_backup::read_verified(path, name, config.unpack_bound(), &mut CheckOnly)
}
