//! Backup-then-purge: a whole-store archive is written and verified, then the named
//! collections are deleted through the registry, in one turn of the one-operation slot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::apply::chosen_events;
use super::create::Created;
use super::restore_options::BATCH;
use super::{Ctx, Op, Slot};
use crate::backup::archive::{Progress, Trigger};
use crate::backup::audit::{Action, Actor};
use crate::backup::catalog::Kind;
use crate::backup::error::{Error, Result};
use crate::backup::BackupManager;
use crate::names::{check_list, ListOf};

/// `purge` of `POST /api/backup/create`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
        let bad = |m: String| Err(Error::InvalidOptions(m));
        let if_empty = "name the collections to purge";
        check_list("purge.collections", &self.collections, ListOf::Collections, if_empty).or_else(bad)?;
        if let Some(ids) = &self.event_ids {
            check_list("purge.eventIds", ids, ListOf::Ids, "name events, or leave it out").or_else(bad)?;
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
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PurgeReport {
    /// Per event and collection (only where something was deleted).
    pub purged: Vec<Purged>,
    /// Records deleted in all.
    pub purged_total: u64,
    /// Records left because they changed after the archive was taken.
    pub kept_changed: u64,
}

impl PurgeReport {
    fn add(&mut self, event_id: &str, collection: &str, deleted: u64, kept: u64) {
        self.kept_changed += kept;
        self.purged_total += deleted;
        if deleted == 0 {
            return;
        }
        match self.purged.iter_mut().find(|p| p.event_id == event_id && p.collection == collection) {
            Some(p) => p.count += deleted,
            None => self.purged.push(Purged {
                event_id: event_id.to_owned(),
                collection: collection.to_owned(),
                count: deleted,
            }),
        }
    }
}

/// A backup and the purge it made safe.
#[derive(Debug, Clone, Serialize)]
pub struct BackedUpAndPurged {
    /// The archive, which holds everything purged.
    #[serde(flatten)]
    pub created: Created,
    /// What was purged.
    #[serde(flatten)]
    pub report: PurgeReport,
}

impl BackupManager {
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
        progress: Progress<'_>,
    ) -> Result<BackedUpAndPurged> {
        request.check()?;
        self.create_then(trigger, label, true, actor, progress, |created| {
            let op = Op::new(Action::Purge, Kind::Full, &created.name, actor, Slot::Shared)
                .options(serde_json::to_value(request).unwrap_or_default());
            let report = self.runner.run(op, |ctx| self.purge_in_slot(&created.name, request, ctx))?;
            Ok(BackedUpAndPurged { created, report })
        })
    }

    /// The purge itself; the caller holds the slot.
    fn purge_in_slot(
        &self,
        archive_name: &str,
        request: &PurgeRequest,
        ctx: &mut Ctx,
    ) -> Result<PurgeReport> {
        let mut report = PurgeReport::default();
        let result = self.purge_records(archive_name, request, &mut report);
        ctx.option("purged", json!(report.purged_total));
        if report.purged_total > 0 {
            let n = report.purged_total;
            ctx.done(format!(
                "{n} records were purged before it failed; the archive {archive_name} holds them"
            ));
        }
        if report.kept_changed > 0 {
            ctx.left_undone(format!(
                "{} records changed after the backup and were kept",
                report.kept_changed
            ));
        }
        result.map(|()| report)
    }

    fn purge_records(
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
            let flush = |collection: &str, batch: &mut Vec<(String, Vec<u8>)>, report: &mut PurgeReport| {
                let (deleted, kept) = registry.purge_records(event_id, collection, batch)?;
                batch.clear();
                report.add(event_id, collection, deleted, kept);
                Ok::<_, Error>(())
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
