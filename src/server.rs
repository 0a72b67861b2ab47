//! `eventvault serve`: the startup sequence, the HTTP server and a clean shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::backup::{self, BackupConfig, BackupManager};
use crate::config::Options;
use crate::http::{app, AppState, Auth};
use crate::store::lock::DirLock;
use crate::store::swap::Recovery;
use crate::store::{self, Store, StoreConfig};

/// Runs the server until SIGTERM or SIGINT.
pub async fn serve(opts: Options) -> anyhow::Result<()> {
    check_exposure(&opts)?;
    let signals = ShutdownSignals::new().context("installing signal handlers")?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Steps 1 to 4 of startup (see `start`) block: they run on the blocking pool.
    let start_opts = opts.clone();
    let (backups, _lock) = tokio::task::spawn_blocking(move || start(&start_opts)).await??;
    let store = backups.store().clone();
    let auth = Auth::new(opts.admin_token.as_deref(), opts.read_token.as_deref());
    if !auth.enabled() && opts.read_token.is_some() {
        tracing::warn!("READ_TOKEN is set without ADMIN_TOKEN; the API is open to everyone");
    }
    let state = AppState::new(backups.clone(), auth, shutdown_rx.clone());
    // 5. Serve, with the schedule and the drop-in watcher beside.
    let listener = TcpListener::bind(opts.listen_addr)
        .await
        .with_context(|| format!("listening on {}", opts.listen_addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, store = %store.path().display(), "listening on http://{addr}");
    let schedule = tokio::spawn(backup::schedule::run(backups.clone(), shutdown_rx.clone()));
    let dropins =
        opts.auto_restore_enabled.then(|| tokio::spawn(backup::watch::run(backups.clone(), shutdown_rx)));
    axum::serve(listener, app(state, opts.body_limit))
        .with_graceful_shutdown(async move {
            signals.recv().await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = shutdown_tx.send(true);
        })
        .await
        .context("serving HTTP")?;
    // 6. Every request has finished; a running backup finishes too. Then flush and close.
    let _ = schedule.await;
    if let Some(dropins) = dropins {
        let _ = dropins.await;
    }
    tokio::task::spawn_blocking(move || store.close()).await?.context("closing the store")?;
    tracing::info!("store flushed and closed");
    Ok(())
}

/// Startup, in the seed's order:
/// 1. create the folders, so a fresh checkout runs as it is;
/// 2. stale-lock check: take the storage directory's lock (refusing a store a live process
///    holds, taking over locks dead ones left), and finish or roll back a restore that a
///    crash interrupted;
/// 3. migrate an older store (after a `pre-migration` backup), then open it;
/// 4. auto-restore the newest archive dropped into RESTORE_DIR.
pub fn start(opts: &Options) -> anyhow::Result<(Arc<BackupManager>, DirLock)> {
    for dir in [&opts.storage_dir, &opts.backup_dir, &opts.restore_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let lock = store::lock::acquire(&opts.storage_dir)?;
    match store::swap::recover(&opts.storage_dir)? {
        Recovery::Nothing => {}
        Recovery::RolledForward => {
            tracing::warn!("finished a restore that a crash interrupted: the restored data is live")
        }
        Recovery::RolledBack => {
            tracing::warn!("rolled back a restore that a crash interrupted: the old data is live")
        }
    }
    let config = BackupConfig::from_options(opts);
    // 3. Migrate an older store, after a pre-migration backup; a failure stops startup with
    //    the store unchanged.
    let store_config = StoreConfig { sync_writes: opts.sync_writes, block_cache_mb: opts.block_cache_mb };
    backup::migrate_if_needed(&config, &store_config)?;
    let store = open_store(opts, config.auto_restore)?;
    let backups = BackupManager::new(config, store);
    backups.clean_leftovers()?;
    if opts.auto_restore_enabled {
        match backups.restore_dropped_at_startup() {
            None => {}
            Some(Ok(r)) => tracing::info!(from = %r.restored_from, "BackupManager: auto-restore complete"),
            Some(Err(e)) => {
                tracing::error!(error = %e, "BackupManager: auto-restore failed; serving the existing data")
            }
        }
    }
    Ok((backups, lock))
}

/// Opens the store. When it does not open and an archive waits in RESTORE_DIR, the broken
/// store is set aside (never deleted) so that the archive can be restored into a fresh one.
fn open_store(opts: &Options, may_set_aside: bool) -> anyhow::Result<Arc<Store>> {
    let path = store::db_path(&opts.storage_dir);
    let config = StoreConfig { sync_writes: opts.sync_writes, block_cache_mb: opts.block_cache_mb };
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

/// An open API on an address others can reach must be asked for explicitly.
fn check_exposure(opts: &Options) -> anyhow::Result<()> {
    let has_token = opts.admin_token.as_deref().is_some_and(|t| !t.is_empty());
    if !is_loopback(opts.listen_addr) && !has_token && !opts.allow_unauthenticated {
        bail!(
            "refusing to listen on {} without ADMIN_TOKEN: set ADMIN_TOKEN, listen on 127.0.0.1, \
             or pass --allow-unauthenticated if the network is trusted",
            opts.listen_addr
        );
    }
    Ok(())
}

fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// SIGTERM and SIGINT, caught from the moment this is created: a signal that arrives before
/// the server starts waiting for it is not lost (and does not kill the process).
pub struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers.
    pub fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// Resolves on the first SIGTERM or SIGINT.
    pub async fn recv(mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }
}
