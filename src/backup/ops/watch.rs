//! The watcher of RESTORE_DIR: archives dropped while the server runs are taken up (see
//! [`super::dropin`]) once they are complete.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::watch;

use super::dropin::{candidates, is_candidate};
use crate::backup::BackupManager;

#[derive(Debug)]
struct Pending {
    changed: Instant,
    size: u64,
    modified: Option<SystemTime>,
    /// Renamed into the folder, or closed by its writer: complete, unless it changes again.
    complete: bool,
}

/// Watches RESTORE_DIR and restores archives dropped while the server runs. A file is read
/// once it is complete: at once after an atomic rename into the folder or its writer closing
/// it, else when it has not changed for the settle time.
pub async fn run(manager: Arc<BackupManager>, mut shutdown: watch::Receiver<bool>) {
    // The folder is watched by its resolved path, so that the paths of events (which the
    // watcher may report resolved) compare equal to it even for a relative RESTORE_DIR.
    let configured = &manager.config.restore_dir;
    let dir = fs::canonicalize(configured).unwrap_or_else(|_| configured.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let _ = tx.send(event);
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            return tracing::error!(error = %e, "cannot watch the restore folder; drop-ins need a restart")
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        return tracing::error!(dir = %dir.display(), error = %e, "cannot watch the restore folder");
    }
    tracing::info!(dir = %dir.display(), "BackupManager: watching for dropped archives");
    // What arrived between the startup scan and the watch raised no event: taken up now,
    // except what startup left in place on purpose.
    let left = manager.left_at_startup.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let left: Vec<PathBuf> = left.iter().map(|p| fs::canonicalize(p).unwrap_or_else(|_| p.clone())).collect();
    let settle = manager.config.settle;
    let quick = Duration::from_millis(200).min(settle);
    let mut pending: HashMap<PathBuf, Pending> = HashMap::new();
    // Files taken up already, by size and mtime: reading a file raises events about it, and a
    // file that could be neither filed away nor hidden must not be restored again and again.
    let mut handled: HashMap<PathBuf, (u64, Option<SystemTime>)> = HashMap::new();
    for path in candidates(&dir) {
        if !left.contains(&path) {
            pending
                .insert(path, Pending { changed: Instant::now(), size: 0, modified: None, complete: false });
        }
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            Some(event) = rx.recv() => {
                let complete = matches!(
                    event.kind,
                    EventKind::Modify(ModifyKind::Name(_)) | EventKind::Access(AccessKind::Close(AccessMode::Write))
                );
                for path in event.paths {
                    if path.parent() != Some(dir.as_path()) || !is_candidate(&path) {
                        continue;
                    }
                    let now = fs::metadata(&path).ok().map(|m| (m.len(), m.modified().ok()));
                    if now.is_some() && handled.get(&path) == now.as_ref() {
                        continue;
                    }
                    let entry = pending.entry(path).or_insert(Pending { changed: Instant::now(), size: 0, modified: None, complete });
                    entry.changed = Instant::now();
                    entry.complete = complete;
                }
            }
            _ = tick.tick() => {
                let mut ready = Vec::new();
                pending.retain(|path, p| {
                    let Ok(meta) = fs::metadata(path) else { return false };
                    let modified = meta.modified().ok();
                    if meta.len() != p.size || modified != p.modified {
                        p.size = meta.len();
                        p.modified = modified;
                        p.changed = Instant::now();
                    }
                    let wait = if p.complete { quick } else { settle };
                    if p.changed.elapsed() >= wait {
                        ready.push((path.clone(), p.size, p.modified));
                        return false;
                    }
                    true
                });
                for (path, size, modified) in ready {
                    let m = manager.clone();
                    let p = path.clone();
                    // A file that changed while it was read was still being written: it goes
                    // back to waiting instead of to failed/.
                    let restored = tokio::task::spawn_blocking(move || m.take_up(&p, Some((size, modified)))).await;
                    match restored {
                        Ok(None) => {
                            pending.insert(path, Pending { changed: Instant::now(), size: 0, modified: None, complete: false });
                        }
                        _ => {
                            if let Ok(meta) = fs::metadata(&path) {
                                handled.insert(path, (meta.len(), meta.modified().ok()));
                            }
                        }
                    }
                    handled.retain(|p, _| p.exists());
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(watcher);
}
