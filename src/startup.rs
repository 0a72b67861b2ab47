//! Opening the store: the one startup sequence of every command that opens it (`serve`, an
//! offline `backup` command, `populate`), so that none of them skips a step.

use std::sync::Arc;

use anyhow::Context;

use crate::backup::{self, BackupConfig, BackupManager};
use crate::config::Options;
use crate::store::lock::DirLock;
use crate::store::swap::Recovery;
use crate::store::{self, Store, StoreConfig};

/// Who opens the store. Every purpose runs the same steps but for the differences named here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `eventvault serve`: the only purpose that also restores an archive dropped into
    /// RESTORE_DIR (the server's drop-in watcher takes it up while running, too).
    Serve,
    /// An offline `eventvault backup` command.
    Cli,
    /// `eventvault populate`: bulk writes, without fsyncing the write-ahead log on each one
    /// whatever SYNC_WRITES says (it closes the store, flushed, when it is done).
    Populate,
}

/// The open store and what keeps it to this process.
pub struct Started {
    /// The BackupManager over the open store (its [`BackupManager::store`]).
    pub backups: Arc<BackupManager>,
    /// The storage directory's lock, held until dropped.
    pub lock: DirLock,
}

/// Why startup stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another live process holds the store; the error is [`store::Error::Locked`], with the
    /// holder's pid. An offline CLI command sends itself to that process instead.
    #[error(transparent)]
    Locked(store::Error),
    /// Any other step failed; the message says which and what to do.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Opens the store in `opts.storage_dir` for `purpose`, in this order:
/// 1. create the folders (STORAGE_DIR, BACKUP_DIR, RESTORE_DIR), so a fresh checkout runs as
///    it is. Creating a folder that exists is a no-op, so a crash here is harmless.
/// 2. stale-lock check: take the storage directory's lock, refusing a store a live process
///    holds ([`Error::Locked`]) and taking over locks dead ones left. The lock is a POSIX
///    record lock that the kernel drops when its holder dies, so a crash never leaves it held.
/// 3. finish or roll back a restore (or migration) that a crash interrupted. The swap is
///    marker-protected and recovery only completes what the marker records, so a crash while
///    recovering is recovered again at the next start.
///    Then, for [`Purpose::Serve`] with AUTO_RESTORE_FROM, an empty store is filled with the
///    repository's newest backup, downloaded and checked beside it and renamed into place (a
///    crash leaves a staging folder, removed at the next start, and the store still empty).
/// 4. migrate an older store, after a `pre-migration` backup. The backup is written to a temp
///    file and renamed (step 7 removes a temp a crash left); the steps run on a copy that
///    replaces the store through the marker-protected swap of step 3. A failure stops startup
///    with the store unchanged.
/// 5. open the store. For [`Purpose::Serve`], when it does not open, auto-restore is on and
///    an archive waits in RESTORE_DIR, the broken store is set aside (renamed, never deleted)
///    and a fresh one opened, so that step 8 restores the archive into it. Other purposes
///    restore nothing, so they stop with the error instead of working on an empty store. RocksDB recovers its own write-ahead log
///    on open; the rename is atomic, so a crash leaves the store either in place or aside.
/// 6. build the BackupManager (this writes nothing but clears the browse cache, which is
///    rebuilt on demand).
/// 7. clean the leftovers of interrupted backups: only temp files and orphan sidecars, which
///    nothing reads, so removing them again after a crash is harmless.
/// 8. [`Purpose::Serve`] only, with AUTO_RESTORE_ENABLED: restore the newest archive dropped
///    into RESTORE_DIR. It is claimed (moved aside) before it is read, so a crash never
///    restores it twice, and the restore itself is the swap of step 3. A failure is logged and
///    the existing data is served.
pub fn open(opts: &Options, purpose: Purpose) -> Result<Started, Error> {
    // The keys are checked now: a wrong REPO_IDENTITY_FILE is a startup error, not a
    // surprise at the first restore.
    if opts.repo.backup_repo.is_some() || opts.repo.auto_restore_from.is_some() {
        crate::backup::repo::crypt::Crypt::open(&opts.repo.settings(Some(&opts.backup_dir)).crypt)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if opts.max_backups == 0 && opts.repo.backup_repo.is_none() {
        return Err(anyhow::anyhow!(
            "MAX_BACKUPS=0 turns local archives off, which leaves backups nowhere without BACKUP_REPO: \
             set BACKUP_REPO, or MAX_BACKUPS to 1 or more"
        )
        .into());
    }
    for dir in [&opts.storage_dir, &opts.backup_dir, &opts.restore_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let lock = match store::lock::acquire(&opts.storage_dir) {
        Ok(lock) => lock,
        Err(e @ store::Error::Locked { .. }) => return Err(Error::Locked(e)),
        Err(e) => return Err(anyhow::Error::from(e).into()),
    };
    let backups = open_locked(opts, purpose)?;
    Ok(Started { backups, lock })
}

/// Steps 3 to 8 of [`open`], under the lock.
fn open_locked(opts: &Options, purpose: Purpose) -> anyhow::Result<Arc<BackupManager>> {
    match store::swap::recover(&opts.storage_dir)? {
        Recovery::Nothing => {}
        Recovery::RolledForward => {
            tracing::warn!("finished a restore that a crash interrupted: the restored data is live")
        }
        Recovery::RolledBack => {
            tracing::warn!("rolled back a restore that a crash interrupted: the old data is live")
        }
    }
    if purpose == Purpose::Serve {
        restore_from_repo_if_empty(opts)?;
    }
    let config = BackupConfig::from_options(opts);
    let store_config = StoreConfig {
        sync_writes: opts.sync_writes && purpose != Purpose::Populate,
        block_cache_mb: opts.block_cache_mb,
    };
    backup::migrate_if_needed(&config, &store_config)?;
    let store = open_store(opts, store_config, purpose == Purpose::Serve && opts.auto_restore_enabled)?;
    let backups = BackupManager::new(config, store);
    backups.clean_leftovers()?;
    // Undo points a crash or a stop left behind get their pre-restore backup written: by the
    // server in the background, by an offline command before it goes on.
    match purpose {
        Purpose::Serve => backups.finish_safety_copies(),
        _ => backups.finish_safety_copies_now(),
    }
    if purpose == Purpose::Serve && opts.auto_restore_enabled {
        match backups.restore_dropped_at_startup() {
            None => {}
            Some(Ok(r)) => tracing::info!(from = %r.restored_from, "BackupManager: auto-restore complete"),
            Some(Err(e)) => {
                tracing::error!(error = %e, "BackupManager: auto-restore failed; serving the existing data")
            }
        }
    }
    Ok(backups)
}

/// AUTO_RESTORE_FROM: an empty store is first filled with the repository's newest backup.
/// A store that holds anything is left alone; the log says which happened. A repository that
/// cannot be read stops startup, rather than serving an empty store that should not be.
fn restore_from_repo_if_empty(opts: &Options) -> anyhow::Result<()> {
    use crate::backup::ops::repo_restore::{restore_fresh, store_is_empty};
    let Some(location) = &opts.repo.auto_restore_from else { return Ok(()) };
    if !store_is_empty(&opts.storage_dir)? {
        tracing::info!(repo = %location, "AUTO_RESTORE_FROM: the store is not empty, so nothing is restored");
        return Ok(());
    }
    let restored = match restore_fresh(
        &opts.storage_dir,
        location,
        &opts.repo.settings(Some(&opts.backup_dir)),
        None,
    ) {
        // A first deployment: nothing to restore yet, and the server must start to take one.
        Err(crate::backup::Error::Repo(crate::backup::repo::Error::Empty(_))) => {
            tracing::info!(repo = %location, "AUTO_RESTORE_FROM: the repository holds no backup yet; starting with the empty store");
            return Ok(());
        }
        restored => restored.with_context(|| {
            format!("AUTO_RESTORE_FROM {location}: the store is empty and the restore failed")
        })?,
    };
    tracing::info!(repo = %location, backup = %restored.backup, last_seq = restored.last_seq, "AUTO_RESTORE_FROM: restored the newest backup into the empty store");
    Ok(())
}

/// Opens the store. When it does not open and an archive waits in RESTORE_DIR, the broken
/// store is set aside (never deleted) so that the archive can be restored into a fresh one.
fn open_store(opts: &Options, config: StoreConfig, may_set_aside: bool) -> anyhow::Result<Arc<Store>> {
    let path = store::db_path(&opts.storage_dir);
    match Store::open(&path, config.clone()) {
        Ok(store) => Ok(store),
        Err(e @ (store::Error::Rocks(_) | store::Error::Corrupt { .. }))
            if may_set_aside && !backup::dropin::candidates(&opts.restore_dir).is_empty() =>
        {
            let aside =
                opts.storage_dir.join(format!("db.broken-{}", chrono::Utc::now().format("%Y%m%d%H%M%S")));
            tracing::error!(error = %e, moved_to = %aside.display(), "the store does not open; setting it aside to restore the dropped archive");
            std::fs::rename(&path, &aside).with_context(|| format!("moving {} aside", path.display()))?;
            Ok(Store::open(&path, config)?)
        }
        Err(e) => Err(e.into()),
    }
}
