//! The options of a restore and what it answers: one options struct for every kind of
//! restore, and one report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backup::archive::Counts;
use crate::backup::catalog::Kind;
use crate::backup::error::{Error, Result};
use crate::names::{self, check_list, ListOf};
use crate::registry::{EventAction, Merge, Tally};

/// Records per transaction of a merge.
pub const BATCH: usize = 1000;

/// `POST /api/backups/{id}/restore` options (the seed's names).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
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

    /// Checks names before anything is read.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidOptions(m));
        if let Some(collections) = &self.specific_collections {
            let if_empty = "name at least one collection, or leave it out";
            check_list("specificCollections", collections, ListOf::Collections, if_empty).or_else(bad)?;
        }
        if let Some(ids) = &self.event_ids {
            let if_empty = "name at least one event, or leave it out";
            check_list("eventIds", ids, ListOf::Ids, if_empty).or_else(bad)?;
        }
        if let Some(id) = &self.new_event_id {
            if !names::is_id(id) {
                return bad(format!("newEventId: invalid id {id:?}: ids match [A-Za-z0-9_-]{{1,64}}"));
            }
        }
        Ok(())
    }

    pub(super) fn merge(&self) -> Merge {
        Merge { overwrite: !self.skip_existing_records.unwrap_or(true), dry_run: self.dry_run }
    }

    pub(super) fn wants_collection(&self, collection: &str) -> bool {
        self.specific_collections.as_ref().is_none_or(|cs| cs.iter().any(|c| c == collection))
    }
}

/// How a restore puts a backup back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Through the registry, document by document.
    Merge,
    /// The whole store replaced.
    Swap,
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

/// What every restore did, whatever its kind and mode.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The backup.
    pub backup_id: String,
    /// `full` or `event`.
    pub kind: Kind,
    /// `merge` or `swap`.
    pub mode: Mode,
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
    pub(crate) fn new(backup_id: &str, kind: Kind, mode: Mode, dry_run: bool) -> Self {
        Report {
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

    pub(super) fn changed_anything(&self) -> bool {
        !self.dry_run
            && (self.totals.created + self.totals.overwritten > 0
                || self.events.iter().any(|e| e.event != EventAction::Skipped))
    }

    pub(super) fn warn_missing_collections<'a>(
        &mut self,
        options: &RestoreOptions,
        present: impl Iterator<Item = &'a String>,
    ) {
        let present: Vec<&String> = present.collect();
        for wanted in options.specific_collections.iter().flatten() {
            if !present.contains(&wanted) {
                self.warnings.push(format!("collection {wanted:?} is not in the backup"));
            }
        }
    }
}
