//! Rotation: the oldest archives beyond MAX_BACKUPS go after each backup.

use serde_json::json;

use super::{Op, Slot};
use crate::backup::audit::{Action, Actor};
use crate::backup::catalog::{self, Entry, Kind};
use crate::backup::error::Result;
use crate::backup::BackupManager;

/// The archives rotation removes: readable, not kept, beyond the newest `max`.
pub fn beyond(entries: &[Entry], max: usize) -> Vec<String> {
    entries.iter().filter(|e| e.manifest.is_some() && !e.keep).skip(max).map(|e| e.name.clone()).collect()
}

impl BackupManager {
    /// Deletes the oldest archives beyond MAX_BACKUPS (kept archives do not count), never
    /// `just_written`: whatever dates other files in the folder claim, the backup a call has
    /// just taken survives it. Runs inside the backup's turn of the slot.
    pub fn rotate(&self, just_written: &str) -> Result<Vec<String>> {
        // MAX_BACKUPS=0 writes no archives; those written before stay until deleted by hand.
        if !self.config.local_archives() {
            return Ok(Vec::new());
        }
        let mut doomed = beyond(&self.list()?, self.config.max_backups);
        doomed.retain(|name| name != just_written);
        for name in &doomed {
            let op = Op::new(Action::Delete, Kind::Full, name, Actor::System, Slot::Shared)
                .options(json!({"reason": "rotation", "maxBackups": self.config.max_backups}));
            let result = self.runner.run(op, |_| catalog::delete(&self.config.backup_dir, name));
            self.cache.forget(name);
            result?;
        }
        Ok(doomed)
    }
}
