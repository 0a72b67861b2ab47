//! `eventvault backup …`: the BackupManager offline, on the same folders as the server.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use crate::backup::audit::Actor;
use crate::backup::{self, BackupConfig, BackupManager, Trigger};
use crate::config::{BackupAction, Options};
use crate::store::{self, Store, StoreConfig};

/// Runs one backup subcommand.
pub fn run(action: BackupAction, opts: &Options) -> anyhow::Result<()> {
    let config = BackupConfig::from_options(opts);
    match action {
        BackupAction::Create { label, keep } => {
            let (manager, _lock) = open_offline(opts)?;
            let bar = bar(total_store_bytes(&store::db_path(&opts.storage_dir)) * 2, "backing up");
            let created =
                manager.create(Trigger::Cli, label.as_deref(), keep, Actor::Cli, &|n| bar.inc(n))?;
            bar.finish_and_clear();
            println!("{}", serde_json::to_string_pretty(&created)?);
        }
        BackupAction::List { json } => {
            let entries = backup::catalog::Catalog::default().list(&config.backup_dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else if entries.is_empty() {
                println!("no backups in {}", config.backup_dir.display());
            } else {
                println!(
                    "{:<52} {:>10} {:<24} {:<12} {:>8}  keep",
                    "NAME", "SIZE MB", "CREATED", "TRIGGER", "LASTSEQ"
                );
                for e in entries {
                    let trigger = e
                        .trigger
                        .map(|t| format!("{t:?}").to_lowercase())
                        .unwrap_or_else(|| "damaged".into());
                    let last_seq = e.last_seq.map(|s| s.to_string()).unwrap_or_default();
                    println!(
                        "{:<52} {:>10} {:<24} {:<12} {:>8}  {}",
                        e.name, e.size_mb, e.created, trigger, last_seq, e.keep
                    );
                }
            }
        }
        BackupAction::Show { name } => {
            backup::catalog::check_name(&name)?;
            let path = config.backup_dir.join(&name);
            if !path.is_file() {
                bail!(backup::Error::NotFound(name));
            }
            let manifest = backup::archive::read_manifest(&path, &name)?;
            println!("{}", serde_json::to_string_pretty(&manifest)?);
        }
        BackupAction::Verify { name } => {
            let size = std::fs::metadata(config.backup_dir.join(&name)).map(|m| m.len()).unwrap_or(0);
            let bar = bar(size, "verifying");
            let verified = backup::verify(&config, &name, &|n| bar.inc(n));
            bar.finish_and_clear();
            let verified = verified?;
            let sidecar = if verified.sidecar_checked { "sidecar matches" } else { "no sidecar to check" };
            println!(
                "OK {name}: {sidecar}; {} files ({} bytes) match their checksums; the store opens and holds {} events, \
                 {} bus messages, as the manifest says",
                verified.files, verified.bytes, verified.manifest.counts.events, verified.manifest.counts.bus_messages
            );
        }
        BackupAction::Restore { name, yes } => {
            backup::catalog::check_name(&name)?;
            if !yes
                && !confirm(&format!(
                    "Replace the store in {} with {name}? A pre-restore backup is taken first. [y/N] ",
                    opts.storage_dir.display()
                ))?
            {
                bail!("restore cancelled (pass --yes to restore without a prompt)");
            }
            let (manager, _lock) = open_offline(opts)?;
            let size = std::fs::metadata(config.backup_dir.join(&name)).map(|m| m.len()).unwrap_or(0);
            let bar = bar(size, "restoring");
            let restored = manager.restore(&name, Actor::Cli, &|n| bar.inc(n));
            bar.finish_and_clear();
            println!("{}", serde_json::to_string_pretty(&restored?)?);
        }
        BackupAction::Delete { name } => {
            backup::catalog::delete(&config.backup_dir, &name)?;
            println!("deleted {name} and its sidecar");
        }
    }
    Ok(())
}

/// Takes the storage lock (refusing while a server runs) and opens the store.
fn open_offline(opts: &Options) -> anyhow::Result<(Arc<BackupManager>, store::lock::DirLock)> {
    std::fs::create_dir_all(&opts.storage_dir)
        .with_context(|| format!("creating {}", opts.storage_dir.display()))?;
    std::fs::create_dir_all(&opts.backup_dir)
        .with_context(|| format!("creating {}", opts.backup_dir.display()))?;
    let lock = store::lock::acquire(&opts.storage_dir).map_err(|e| match e {
        store::Error::Locked { pid, .. } => anyhow::anyhow!(
            "the store in {} is held by a running eventvault{}; stop it, or use its REST API \
             (POST /api/backup/create, POST /api/backup/restore)",
            opts.storage_dir.display(),
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        ),
        other => other.into(),
    })?;
    store::swap::recover(&opts.storage_dir)?;
    let config = StoreConfig { sync_writes: opts.sync_writes, block_cache_mb: opts.block_cache_mb };
    backup::migrate_if_needed(&BackupConfig::from_options(opts), &config)?;
    let store = Store::open(&store::db_path(&opts.storage_dir), config)?;
    let manager = BackupManager::new(BackupConfig::from_options(opts), store);
    manager.clean_leftovers()?;
    Ok((manager, lock))
}

fn total_store_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|r| r.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// A progress bar on stderr; hidden when stderr is not a terminal.
fn bar(total: u64, what: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if std::io::stderr().is_terminal() {
        let style = ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what);
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to restore without confirmation: pass --yes");
    }
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
