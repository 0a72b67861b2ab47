//! `eventvault restore --from URL`: a backup from the repository onto this machine's empty
//! store, with the server stopped.

use anyhow::{bail, Context};

use crate::backup::ops::repo_restore::restore_fresh;
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
    let _lock = match store::lock::acquire(&opts.storage_dir) {
        Ok(lock) => lock,
        Err(e @ store::Error::Locked { .. }) => {
            bail!("{e}; a running server restores a repository backup through its API instead")
        }
        Err(e) => return Err(e.into()),
    };
    store::swap::recover(&opts.storage_dir)?;
    let restored =
        restore_fresh(&opts.storage_dir, &location, &opts.repo.settings(None), cmd.backup.as_deref())?;
    println!("{}", serde_json::to_string_pretty(&restored)?);
    Ok(())
}
