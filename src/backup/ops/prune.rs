//! Pruning the backup repository (see [`crate::backup::repo::prune`]) as an operation: after
//! every backup stored there, and on demand.

use serde_json::json;

use super::{Op, Runner, Slot};
use crate::backup::audit::{Action, Actor};
use crate::backup::catalog::Kind;
use crate::backup::config::BackupConfig;
use crate::backup::error::{Error, Result};
use crate::backup::repo::prune::Pruned;
use crate::backup::repo::Handle;
use crate::backup::BackupManager;

/// The name prunes are audited under.
pub const PRUNE_TARGET: &str = "repository";

impl BackupManager {
    /// Prunes the repository by the retention policy; a dry run changes nothing.
    pub fn prune_repo(&self, dry_run: bool, actor: Actor) -> Result<Pruned> {
        let handle = self.repo.as_ref().ok_or_else(|| {
            Error::InvalidOptions("there is no backup repository to prune: set BACKUP_REPO".into())
        })?;
        prune(&self.runner, handle, self.config(), dry_run, actor)
    }
}

/// Prunes the repository of `handle` through `runner` (the CLI's own, offline).
pub fn prune(
    runner: &Runner,
    handle: &Handle,
    config: &BackupConfig,
    dry_run: bool,
    actor: Actor,
) -> Result<Pruned> {
    let op = Op::new(Action::Delete, Kind::Full, PRUNE_TARGET, actor, Slot::Shared)
        .options(json!({"reason": "retention", "location": "repo", "dryRun": dry_run}));
    let pruned = runner.run(op, |ctx| {
        let pruned =
            handle.repo()?.prune(&config.retention, dry_run, config.sweep_grace, config.pitr_window)?;
        ctx.option("removed", json!(pruned.removed));
        ctx.option("objectsSwept", json!(pruned.objects_swept));
        Ok(pruned)
    });
    handle.forget_listing();
    if let Ok(pruned) = &pruned {
        handle.note_pruned(pruned);
    }
    pruned
}
