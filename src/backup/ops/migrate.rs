//! Migrating an older store at startup, after a `pre-migration` backup of it.

use chrono::Utc;
use serde_json::json;

use super::create::{describe_dir, write_local};
use super::{Op, Runner, Slot};
use crate::backup::archive::{no_progress, Trigger};
use crate::backup::audit::{Action, Actor, Audit};
use crate::backup::catalog::{self, Kind};
use crate::backup::config::BackupConfig;
use crate::backup::error::Error;
use crate::backup::repo::Repo;
use crate::store;

/// Why a migration did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The store's format could not be read.
    #[error("checking whether the store needs migrating: {0}")]
    Check(Box<Error>),
    /// The pre-migration backup failed, so nothing was migrated.
    #[error("the pre-migration backup failed, so the store was not migrated (it is unchanged): {0}")]
    Backup(Box<Error>),
    /// A step failed; the live store is unchanged.
    #[error(
        "migrating the store from format {from} to {to} failed: {source}. The store is unchanged; \
         the backup {backup} taken before the migration holds it as it was"
    )]
    Step {
        /// The pre-migration backup.
        backup: String,
        /// Format of the store.
        from: u32,
        /// Format this build writes.
        to: u32,
        /// What failed.
        source: store::Error,
    },
}

/// Takes the `pre-migration` backup of a closed store that needs migrating, then migrates
/// it. Returns the backup's name when there was anything to migrate. On failure the live
/// store is unchanged and the error names the backup. Runs before the store opens, so before
/// there is a manager: the backup goes through a runner of its own.
pub fn migrate_if_needed(
    config: &BackupConfig,
    store_config: &store::StoreConfig,
) -> Result<Option<String>, MigrationError> {
    let Some(pending) = store::migrate::pending(&config.storage_dir)
        .map_err(|e| MigrationError::Check(Box::new(e.into())))?
    else {
        return Ok(None);
    };
    std::fs::create_dir_all(&config.backup_dir)
        .map_err(|e| MigrationError::Check(Box::new(Error::io(&config.backup_dir, e))))?;
    let label = "pre-migration";
    let name = catalog::new_name(&config.backup_dir, Utc::now(), Some(label));
    let db = store::db_path(&config.storage_dir);
    tracing::info!(from = pending.from, to = pending.to, backup = %name, "the store needs migrating; backing it up first");
    let runner = Runner::new(Audit::new(&config.backup_dir), crate::backup::notify::Notifier::new(None));
    let op = Op::new(Action::Create, Kind::Full, &name, Actor::System, Slot::Shared).options(
        json!({"trigger": Trigger::PreMigration, "fromFormat": pending.from, "toFormat": pending.to}),
    );
    runner
        .run(op, |_| {
            let manifest = describe_dir(&db, &name, Trigger::PreMigration, Some(label), true, &no_progress, None)?;
            if config.local_archives() {
                write_local(config, &db, &manifest, &no_progress)?;
            }
            // Kept in the repository too, whatever retention says of its time (it is pinned).
            if let Some((location, settings)) = &config.repo {
                let stored = Repo::open(location, settings).and_then(|repo| repo.store_backup(&db, &manifest));
                match stored {
                    Ok(_) => {}
                    // The local archive is the undo point; the repository copy is a bonus.
                    Err(e) if config.local_archives() => {
                        tracing::warn!(error = %e, backup = %name, "the pre-migration backup is local only: storing it in the repository failed")
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        })
        .map_err(|e| MigrationError::Backup(Box::new(e)))?;
    store::migrate::run(&config.storage_dir, store_config, pending).map_err(|source| {
        tracing::error!(error = %source, backup = %name, "store migration failed; the store is unchanged");
        MigrationError::Step { backup: name.clone(), from: pending.from, to: pending.to, source }
    })?;
    tracing::info!(from = pending.from, to = pending.to, backup = %name, "store migrated");
    Ok(Some(name))
}
