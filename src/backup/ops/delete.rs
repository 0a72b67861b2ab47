//! Deleting a backup of either kind, with its sidecar.

use super::{Op, Slot};
use crate::backup::audit::{Action, Actor};
use crate::backup::catalog;
use crate::backup::error::{Error, Result};
use crate::backup::BackupManager;

impl BackupManager {
    /// Deletes a backup and its sidecar, in the slot (so nothing restores it meanwhile), and
    /// forgets its unpacked copy in the browse cache. Returns its file name.
    pub fn delete(&self, id: &str, actor: Actor) -> Result<String> {
        let (kind, name, path) = catalog::resolve(&self.config.backup_dir, id).map_err(|e| {
            if matches!(e, Error::NotFound(_)) {
                self.pending(id).unwrap_or(e)
            } else {
                e
            }
        })?;
        let op = Op::new(Action::Delete, kind, &name, actor, Slot::Exclusive);
        let result = self.runner.run(op, |_| {
            let dir = path.parent().unwrap_or(&self.config.backup_dir);
            catalog::delete(dir, &name)
        });
        self.cache.forget(&name);
        result.map(|()| name)
    }
}
