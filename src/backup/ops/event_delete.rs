//! Event backups: on demand, and before an event is deleted (the delete happens only once
//! its backup is safe, and only if the event did not change meanwhile).

use serde::Serialize;
use serde_json::json;

use super::{Op, Slot};
use crate::backup::archive::Trigger;
use crate::backup::audit::{Action, Actor};
use crate::backup::catalog::{ItemCounts, Kind};
use crate::backup::error::{Error, Result};
use crate::backup::event_backup::{self, EventWritten};
use crate::backup::BackupManager;
use crate::registry;

/// Attempts at backing up and deleting an event that keeps changing.
const DELETE_ATTEMPTS: usize = 5;

/// An event backup that was written, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    pub counts: ItemCounts,
}

impl From<EventWritten> for EventBackup {
    fn from(w: EventWritten) -> Self {
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
            counts: ItemCounts { events: 1, records: w.metadata.counts, bus_messages: None },
        }
    }
}

/// An event deletion, with the backup taken first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletedWithBackup {
    /// What was deleted.
    #[serde(flatten)]
    pub deleted: registry::Deleted,
    /// The backup that holds it.
    pub backup: EventBackup,
}

impl BackupManager {
    /// Writes a backup of one event without changing anything.
    pub fn backup_event(&self, event_id: &str, trigger: Trigger, actor: Actor) -> Result<EventBackup> {
        self.write_event_backup(event_id, trigger, actor).map(EventBackup::from)
    }

    /// An event backup, audited as an operation of its own. It runs beside anything: it reads
    /// a snapshot and writes a new file.
    fn write_event_backup(&self, event_id: &str, trigger: Trigger, actor: Actor) -> Result<EventWritten> {
        let op = Op::new(Action::Create, Kind::Event, &format!("event {event_id}"), actor, Slot::Shared)
            .options(json!({"eventId": event_id, "trigger": trigger}));
        self.runner.run(op, |ctx| {
            let written = self.registry().snapshot_event(event_id, |snap| {
                event_backup::write(&self.config.backup_dir, snap, trigger, self.event_level())
            })?;
            ctx.name(&written.name);
            ctx.bytes(written.size);
            Ok(written)
        })
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
            // Checked before writing a backup, so a wrong If-Match costs nothing.
            let current = registry.get_event(event_id)?;
            if let Some(expected) = if_match {
                let version = current.to_value().ok().and_then(|v| v["version"].as_u64()).unwrap_or(0);
                if version != expected {
                    return Err(registry::Error::VersionMismatch { expected, current: version }.into());
                }
            }
            let written = match self.write_event_backup(event_id, Trigger::PreDelete, actor) {
                Ok(written) => written,
                // The event is gone or the request is wrong: that error as it is.
                Err(Error::Registry(e)) => return Err(Error::Registry(e)),
                Err(e) => {
                    return Err(Error::DeleteBlocked { event_id: event_id.to_owned(), source: Box::new(e) })
                }
            };
            let seq = written.metadata.last_seq;
            match registry.delete_event_unchanged(event_id, if_match, seq) {
                Ok(deleted) => {
                    tracing::info!(event_id, backup = %written.name, "event deleted after its backup");
                    return Ok(DeletedWithBackup { deleted, backup: written.into() });
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
}
