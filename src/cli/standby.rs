//! `eventvault promote`: a standby becomes a primary.

use anyhow::bail;
use reqwest::Method;

use crate::backup::standby;
use crate::config::Options;
use crate::store::{self, timeline::Reason, Store};

/// Promotes the standby whose store is in STORAGE_DIR: through its API while it runs, or
/// offline. Prints what was done as JSON.
pub fn promote(opts: &Options) -> anyhow::Result<()> {
    let dir = &opts.storage_dir;
    let answer = match store::lock::acquire(dir) {
        Ok(_lock) => {
            let Some(from) = standby::marked(dir)? else {
                bail!(
                    "{} holds no standby (no {} file): there is nothing to promote",
                    dir.display(),
                    standby::MARKER
                );
            };
            store::swap::recover(dir)?;
            let config = store::StoreConfig { sync_writes: true, block_cache_mb: 8 };
            let store = Store::open(&store::db_path(dir), config)?;
            let timeline = store.start_timeline(Reason::Promote)?;
            let last_seq = store.head().last_seq;
            store.close()?;
            standby::unmark(dir)?;
            serde_json::json!({"promoted": true, "timeline": timeline, "lastSeq": last_seq, "followed": from})
        }
        Err(store::Error::Locked { pid, .. }) => {
            crate::cli::backup::call_server(opts, pid, Method::POST, "/api/standby/promote")?
        }
        Err(e) => return Err(e.into()),
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
