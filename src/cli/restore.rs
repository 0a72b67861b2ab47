//! `eventvault restore --from URL`: a backup from the repository onto this machine's empty
//! store, with the server stopped; with `--at` or `--seq`, a point-in-time restore (onto an
//! empty store, or onto one with data, whose data is kept as a pre-restore backup).

use anyhow::{bail, Context};

use crate::backup::ops::pitr::{self, PointInTime, Target};
use crate::backup::ops::repo_restore::{restore_fresh, store_is_empty};
use crate::config::RestoreFromCommand;
use crate::store;

/// Restores, and prints what was restored as JSON.
pub fn run(cmd: &RestoreFromCommand) -> anyhow::Result<()> {
    let opts = &cmd.options;
    let Some(location) = cmd.from.clone().or_else(|| opts.repo.backup_repo.clone()) else {
        bail!("name the repository to restore from: --from s3://bucket/prefix (or file:///path), or set BACKUP_REPO");
    };
    std::fs::create_dir_all(&opts.storage_dir)
        .with_context(|| format!("creating {}", opts.storage_dir.display()))?;
    let request = point_in_time(cmd)?;
    if request.is_none() && (cmd.timeline.is_some() || cmd.dry_run) {
        bail!("--timeline and --dry-run go with --at or --seq");
    }
    let lock = match store::lock::acquire(&opts.storage_dir) {
        Ok(lock) => Some(lock),
        Err(store::Error::Locked { .. }) if request.is_some() => None,
        Err(e @ store::Error::Locked { .. }) => {
            bail!("{e}; a running server restores a repository backup through its API instead")
        }
        Err(e) => return Err(e.into()),
    };
    if lock.is_some() {
        store::swap::recover(&opts.storage_dir)?;
    }
    let settings = opts.repo.settings(None);
    let report = match request {
        None => serde_json::to_value(restore_fresh(
            &opts.storage_dir,
            &location,
            &settings,
            cmd.backup.as_deref(),
        )?)?,
        Some(request) if lock.is_some() && store_is_empty(&opts.storage_dir)? => {
            serde_json::to_value(pitr::restore_fresh(&opts.storage_dir, &location, &settings, &request)?)?
        }
        Some(request) => {
            // A store with data (or a server holding it): through the BackupManager, with a
            // pre-restore backup, from this repository.
            drop(lock);
            let mut opts = (**opts).clone();
            opts.repo.backup_repo = Some(location);
            crate::cli::backup::restore_point_in_time(&opts, &request, cmd.yes)?
        }
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn point_in_time(cmd: &RestoreFromCommand) -> anyhow::Result<Option<PointInTime>> {
    let target = match (&cmd.at, cmd.seq) {
        (Some(at), _) => Target::At(
            chrono::DateTime::parse_from_rfc3339(at)
                .with_context(|| format!("--at {at:?} is not an RFC 3339 time such as 2026-11-22T10:15:00Z"))?
                .with_timezone(&chrono::Utc),
        ),
        (None, Some(seq)) => Target::Seq(seq),
        (None, None) => return Ok(None),
    };
    if let Some(t) = cmd.timeline.as_deref().filter(|t| !store::timeline::is_id(t)) {
        bail!("--timeline {t:?} is not a timeline id (26 characters, as health shows it)");
    }
    Ok(Some(PointInTime { target, timeline: cmd.timeline.clone(), dry_run: cmd.dry_run }))
}
