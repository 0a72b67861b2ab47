//! `eventvault serve`: the startup sequence, the HTTP server and a clean shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::backup::repo::Location;
use crate::backup::{self, BackupManager};
use crate::config::Options;
use crate::http::{app, AppState, Auth};
use crate::signals::ShutdownSignals;
use crate::startup::{self, Purpose, Started};
use crate::store::lock::DirLock;

/// How often stale backups and shipping are checked for failure notifications.
const CONDITIONS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the server until SIGTERM or SIGINT.
pub async fn serve(opts: Options) -> anyhow::Result<()> {
    if let Some(from) = backup::standby::marked(&opts.storage_dir)? {
        bail!(
            "{} holds a standby of {from}: run `eventvault standby --from {from}` to keep following, \
             or `eventvault promote` to make it a primary",
            opts.storage_dir.display()
        );
    }
    serve_as(opts, None).await
}

/// Runs a warm standby of the primary shipping to `from` until SIGTERM or SIGINT: an empty
/// store is first filled with the newest backup there (as AUTO_RESTORE_FROM does).
pub async fn standby(from: Location, mut opts: Options) -> anyhow::Result<()> {
    let dir = opts.storage_dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let empty = crate::backup::ops::repo_restore::store_is_empty(&dir)?;
    match backup::standby::marked(&dir)? {
        Some(marked) if marked != from.to_string() => bail!(
            "{} holds a standby of {marked}, not of {from}; start it with --from {marked}, or use an empty STORAGE_DIR",
            dir.display()
        ),
        None if !empty => bail!(
            "{} holds data: a standby starts from an empty STORAGE_DIR (it restores the newest backup of {from})",
            dir.display()
        ),
        _ => {}
    }
    if empty {
        let (dir, source, settings) = (dir.clone(), from.clone(), opts.repo.settings(None));
        let restored = tokio::task::spawn_blocking(move || {
            let _lock = crate::store::lock::acquire(&dir)?;
            crate::store::swap::recover(&dir)?;
            crate::backup::ops::repo_restore::restore_fresh_as(&dir, &source, &settings, None, false)
                .map_err(anyhow::Error::from)
        })
        .await?
        .with_context(|| format!("the standby restores the newest backup of {from} first"))?;
        tracing::info!(backup = %restored.backup, last_seq = restored.last_seq, "standby: restored the newest backup; following the log from it");
    }
    if opts.repo.backup_repo.is_none() {
        opts.repo.backup_repo = Some(from.clone());
    }
    backup::standby::mark(&dir, &from.to_string())?;
    serve_as(opts, Some(from)).await
}

async fn serve_as(opts: Options, standby: Option<Location>) -> anyhow::Result<()> {
    check_tokens(&opts)?;
    check_exposure(&opts)?;
    backup::config::webhook(&opts.monitor).map_err(anyhow::Error::msg)?;
    // Before anything runs, so startup's restores and backups are counted.
    crate::observe::install();
    let signals = ShutdownSignals::new().context("installing signal handlers")?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Startup (see `startup::open`) blocks: it runs on the blocking pool.
    let start_opts = opts.clone();
    let (backups, _lock) = tokio::task::spawn_blocking(move || start(&start_opts)).await??;
    let store = backups.store().clone();
    let auth = Auth::new(opts.admin_token.as_deref(), opts.read_token.as_deref())
        .metrics_public(opts.monitor.metrics_public);
    let state = AppState::new(backups.clone(), auth, shutdown_rx.clone());
    // Serve, with the schedule and the drop-in watcher beside.
    let listener = TcpListener::bind(opts.listen_addr)
        .await
        .with_context(|| format!("listening on {}", opts.listen_addr))?;
    let addr = listener.local_addr()?;
    backups.set_origin(addr);
    tracing::info!(%addr, store = %store.path().display(), "listening on http://{addr}");
    let follower = match standby {
        // A standby whose promotion a crash interrupted (its timeline says promoted) is one.
        Some(_) if store.timeline().reason == crate::store::timeline::Reason::Promote => {
            backup::standby::unmark(&opts.storage_dir)?;
            tracing::warn!("this store was promoted already: serving it as a primary");
            None
        }
        Some(from) => Some(backups.start_following(&from, &opts.repo.settings(None), shutdown_rx.clone())?),
        None => None,
    };
    let schedule = tokio::spawn(backup::schedule::run(backups.clone(), shutdown_rx.clone()));
    let drills = tokio::spawn(backup::drill_schedule::run(backups.clone(), shutdown_rx.clone()));
    let shipper = backups.start_shipping(shutdown_rx.clone());
    backups.start_watching_conditions(CONDITIONS_EVERY);
    // A standby takes no drop-in archives: its data is its primary's.
    let dropins = (opts.auto_restore_enabled && follower.is_none())
        .then(|| tokio::spawn(backup::watch::run(backups.clone(), shutdown_rx)));
    axum::serve(listener, app(state, opts.body_limit))
        .with_graceful_shutdown(async move {
            signals.recv().await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = shutdown_tx.send(true);
        })
        .await
        .context("serving HTTP")?;
    // Every request has finished; a running backup finishes too. Then flush and close.
    let _ = schedule.await;
    let _ = drills.await;
    if let Some(dropins) = dropins {
        let _ = dropins.await;
    }
    if let Some(follower) = follower {
        tokio::task::spawn_blocking(move || follower.join()).await?.ok();
    }
    // What is committed is shipped before the store closes.
    if let Some(shipper) = shipper {
        tokio::task::spawn_blocking(move || shipper.join()).await?.ok();
    }
    // A pre-restore backup being written is finished, so its undo point is not left over.
    tokio::task::spawn_blocking(move || backups.wait_for_safety_copies()).await?;
    tokio::task::spawn_blocking(move || store.close()).await?.context("closing the store")?;
    tracing::info!("store flushed and closed");
    Ok(())
}

/// Startup for the server: [`startup::open`] with [`Purpose::Serve`], whose doc numbers the
/// steps. Returns the BackupManager over the open store and the storage directory's lock.
pub fn start(opts: &Options) -> anyhow::Result<(Arc<BackupManager>, DirLock)> {
    let Started { backups, lock } = startup::open(opts, Purpose::Serve)?;
    Ok((backups, lock))
}

/// A read token means "these callers may only read", which holds only when the API is closed
/// to callers without a token, that is, with ADMIN_TOKEN. An empty token counts as unset, as
/// in [`Auth::new`]. (Not clap's `requires`: clap counts `ADMIN_TOKEN=` as given, so it would
/// let `ADMIN_TOKEN= READ_TOKEN=x` through and refuse `READ_TOKEN=` alone.)
fn check_tokens(opts: &Options) -> anyhow::Result<()> {
    let set = |t: &Option<String>| t.as_deref().is_some_and(|t| !t.is_empty());
    // An HTTP header carries visible ASCII only: a token with anything else could never be sent.
    for (name, token) in [("ADMIN_TOKEN", &opts.admin_token), ("READ_TOKEN", &opts.read_token)] {
        if token.as_deref().is_some_and(|t| !t.trim().bytes().all(|b| b.is_ascii_graphic())) {
            bail!("{name} holds characters a client cannot send in a header: use visible ASCII characters only (letters, digits, punctuation), no spaces");
        }
    }
    if set(&opts.read_token) && !set(&opts.admin_token) {
        bail!(
            "READ_TOKEN is set without ADMIN_TOKEN: without ADMIN_TOKEN the API is open to everyone, \
             so the read token would restrict nobody; set ADMIN_TOKEN too, or unset READ_TOKEN"
        );
    }
    Ok(())
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
