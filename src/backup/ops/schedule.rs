//! The backup schedule: every AUTO_BACKUP_INTERVAL, skipped when nothing changed.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::watch;

use crate::backup::archive::{no_progress, Trigger};
use crate::backup::audit::Actor;
use crate::backup::error::Error;
use crate::backup::BackupManager;

impl BackupManager {
    /// The bus lastSeq of the newest readable archive.
    fn newest_last_seq(&self) -> Option<u64> {
        self.list().ok()?.into_iter().find_map(|e| e.last_seq)
    }

    /// One scheduled run: a backup, unless nothing changed since the newest archive.
    pub fn scheduled_backup(&self, trigger: Trigger) {
        // A standby's backups are its primary's, until it is promoted.
        if self.following().is_some() {
            return;
        }
        let last_seq = self.store.head().last_seq;
        if self.newest_last_seq() == Some(last_seq) {
            tracing::info!(
                last_seq,
                "BackupManager: scheduled backup skipped, nothing changed since the newest archive"
            );
            return;
        }
        if trigger == Trigger::Startup && last_seq == 0 {
            return;
        }
        match self.create(trigger, None, false, Actor::System, &no_progress) {
            Ok(_) => {}
            // The runner has logged why.
            Err(Error::Busy(running)) => {
                tracing::info!(%running, "BackupManager: scheduled backup skipped, busy")
            }
            Err(_) => {}
        }
    }

    /// Whether the newest archive is older than one interval (or there is none).
    pub fn due_at_startup(&self) -> bool {
        let newest = self.list().ok().and_then(|l| l.into_iter().next());
        match newest.and_then(|e| chrono::DateTime::parse_from_rfc3339(&e.created).ok()) {
            Some(created) => {
                (Utc::now() - created.with_timezone(&Utc)).to_std().unwrap_or_default()
                    >= self.config.interval
            }
            None => true,
        }
    }
}

/// Runs the schedule until shutdown. At startup, a backup is taken at once when the newest
/// archive is older than the interval.
pub async fn run(manager: Arc<BackupManager>, mut shutdown: watch::Receiver<bool>) {
    if !manager.config.auto_backup {
        return;
    }
    let interval = manager.config.interval;
    let m = manager.clone();
    if tokio::task::spawn_blocking(move || m.due_at_startup()).await.unwrap_or(false) {
        let m = manager.clone();
        let _ = tokio::task::spawn_blocking(move || m.scheduled_backup(Trigger::Startup)).await;
    }
    loop {
        let next = Utc::now() + chrono::Duration::from_std(interval).unwrap_or_default();
        manager.set_next_scheduled(Some(next));
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => break,
        }
        let m = manager.clone();
        let _ = tokio::task::spawn_blocking(move || m.scheduled_backup(Trigger::Scheduled)).await;
    }
    manager.set_next_scheduled(None);
}
