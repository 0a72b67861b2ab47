//! `eventvault serve`: the startup sequence, the HTTP server and a clean shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Options;
use crate::http::{app, AppState, Auth};
use crate::store::{Store, StoreConfig};

/// Runs the server until SIGTERM or SIGINT.
pub async fn serve(opts: Options) -> anyhow::Result<()> {
    check_exposure(&opts)?;
    // 1. Create the folders, so a fresh checkout runs as it is.
    for dir in [&opts.storage_dir, &opts.backup_dir, &opts.restore_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // 2. Stale-lock check: take the storage directory's lock, refusing a store that a live
    //    process holds and taking over locks that dead ones left.
    let _lock = crate::store::lock::acquire(&opts.storage_dir)?;
    // 3. Open the one store of the process.
    let store = open_store(&opts).await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let auth = Auth::new(opts.admin_token.as_deref(), opts.read_token.as_deref());
    if !auth.enabled() && opts.read_token.is_some() {
        tracing::warn!("READ_TOKEN is set without ADMIN_TOKEN; the API is open to everyone");
    }
    let state = AppState::new(store.clone(), auth, shutdown_rx);
    // 4. Serve.
    let listener = TcpListener::bind(opts.listen_addr)
        .await
        .with_context(|| format!("listening on {}", opts.listen_addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, store = %opts.storage_dir.display(), "listening on http://{addr}");
    axum::serve(listener, app(state, opts.body_limit))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = shutdown_tx.send(true);
        })
        .await
        .context("serving HTTP")?;
    // 5. Every request has finished: flush and close the store.
    tokio::task::spawn_blocking(move || store.close()).await?.context("closing the store")?;
    tracing::info!("store flushed and closed");
    Ok(())
}

/// Opens the store off the async runtime.
pub async fn open_store(opts: &Options) -> anyhow::Result<Arc<Store>> {
    let path = crate::store::db_path(&opts.storage_dir);
    let config = StoreConfig { sync_writes: opts.sync_writes, block_cache_mb: opts.block_cache_mb };
    let store = tokio::task::spawn_blocking(move || Store::open(&path, config)).await??;
    Ok(store)
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

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
