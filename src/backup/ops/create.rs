//! Taking a whole-store backup: a RocksDB checkpoint, archived and published.

use std::path::Path;
use std::time::Instant;

use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::json;

use super::{Op, Slot};
use crate::backup::archive::{self, manifest, Counts, Manifest, Progress, Trigger};
use crate::backup::audit::{Action, Actor};
use crate::backup::catalog::{self, Kind};
use crate::backup::config::BackupConfig;
use crate::backup::error::{Error, Result};
use crate::backup::files::{self, TEMP_PREFIX};
use crate::backup::repo::upload::Uploaded;
use crate::backup::BackupManager;
use crate::store::{self, swap::CHECKPOINT_PREFIX};

/// A backup that was written.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    /// Archive file name.
    pub name: String,
    /// Full path (the seed's `backupPath`).
    pub backup_path: String,
    /// Size in bytes.
    pub size: u64,
    /// Size in MiB.
    #[serde(rename = "sizeMB")]
    pub size_mb: String,
    /// When it was taken.
    pub created_at: String,
    /// SHA-256 of the archive (also in its sidecar); none when no local archive was written
    /// (MAX_BACKUPS=0).
    pub sha256: Option<String>,
    /// Why.
    pub trigger: Trigger,
    /// Label.
    pub label: Option<String>,
    /// Exempt from rotation.
    pub keep: bool,
    /// Bus lastSeq in the archive.
    pub last_seq: u64,
    /// What the archive holds.
    pub counts: Counts,
    /// How long it took.
    pub duration_ms: u64,
    /// Archives that rotation removed afterwards.
    pub rotated: Vec<String>,
    /// How storing it in the backup repository went, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<RepoCopy>,
}

/// A backup's copy in the backup repository.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoCopy {
    /// What was stored, when it was.
    #[serde(flatten)]
    pub stored: Option<Uploaded>,
    /// Why it was not (the local archive is there either way).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl BackupManager {
    /// Takes a backup of the live store.
    pub fn create(
        &self,
        trigger: Trigger,
        label: Option<&str>,
        keep: bool,
        actor: Actor,
        progress: Progress<'_>,
    ) -> Result<Created> {
        self.create_then(trigger, label, keep, actor, progress, Ok)
    }

    /// Takes a backup and, in the same turn of the one-operation slot (so no deletion or
    /// restore of that archive can come between), runs `then` on it.
    pub(crate) fn create_then<T>(
        &self,
        trigger: Trigger,
        label: Option<&str>,
        keep: bool,
        actor: Actor,
        progress: Progress<'_>,
        then: impl FnOnce(Created) -> Result<T>,
    ) -> Result<T> {
        if let Some(label) = label {
            catalog::check_label(label)?;
        }
        let name = self.fresh_name(label);
        let op = Op::new(Action::Create, Kind::Full, &name, actor, Slot::Exclusive)
            .options(json!({"trigger": trigger, "label": label, "keep": keep}));
        let inside = Op { slot: Slot::Shared, ..op.clone() };
        self.runner.exclusive(&op, || {
            let created = self.runner.run(inside, |ctx| {
                let created = self.create_in_slot(&name, trigger, label, keep, progress)?;
                ctx.bytes(created.size);
                Ok(created)
            })?;
            then(created)
        })
    }

    /// The steps of a backup, each safe to crash in:
    /// 1. flush and checkpoint into `STORAGE_DIR/checkpoint-<name>` (hard links; writes go on);
    /// 2. read the checkpoint's counts and hash its files;
    /// 3. stream the archive into `BACKUP_DIR/.tmp-<name>` and fsync it;
    /// 4. publish it with its sidecar (see [`files::publish`]): never a partial `*.tar.gz`;
    /// 5. remove the checkpoint and rotate.
    ///
    /// The caller holds the slot.
    pub(crate) fn create_in_slot(
        &self,
        name: &str,
        trigger: Trigger,
        label: Option<&str>,
        keep: bool,
        progress: Progress<'_>,
    ) -> Result<Created> {
        let started = Instant::now();
        std::fs::create_dir_all(&self.config.backup_dir)
            .map_err(|e| Error::io(&self.config.backup_dir, e))?;
        let checkpoint = self.config.storage_dir.join(format!("{CHECKPOINT_PREFIX}{name}"));
        let result = archive::pgzip::at_low_priority(|| {
            self.store.checkpoint(&checkpoint)?;
            crate::fault::point("backup.after_checkpoint")?;
            let manifest =
                describe_dir(&checkpoint, name, trigger, label, keep, progress, Some(&self.known))?;
            if !self.config.local_archives() {
                // The repository is the only copy: the backup is done when it is stored there.
                let handle = self.repo.as_ref().ok_or_else(|| {
                    Error::InvalidOptions(
                        "MAX_BACKUPS=0 turns local archives off, which needs BACKUP_REPO".into(),
                    )
                })?;
                let stored = self.copy_to_repo(&checkpoint, &manifest)?;
                let path = format!("{}/{}", handle.shown(), crate::backup::repo::manifest_key(&stored.id));
                let mut created = Created::of(&manifest, path, stored.bytes_total);
                created.repo = Some(RepoCopy { stored: Some(stored), error: None });
                return Ok(created);
            }
            let mut created = write_local(&self.config, &checkpoint, &manifest, progress)?;
            // A pre-restore backup is taken while writes wait: its copy would hold them up for
            // the whole upload, so it stays local when there is a local archive.
            if trigger != Trigger::PreRestore && self.repo.is_some() {
                created.repo = Some(match self.copy_to_repo(&checkpoint, &manifest) {
                    Ok(stored) => RepoCopy { stored: Some(stored), error: None },
                    Err(e) => RepoCopy { stored: None, error: Some(e.to_string()) },
                });
            }
            Ok::<_, Error>(created)
        });
        let _ = std::fs::remove_dir_all(&checkpoint);
        self.note_result(trigger, result.as_ref().map(|_| ()), started);
        let mut created = result?;
        created.duration_ms = started.elapsed().as_millis() as u64;
        created.rotated = self.rotate(name).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "rotation failed");
            Vec::new()
        });
        // A backup went through, so there is room again: safety copies that failed are retried.
        if trigger != Trigger::PreRestore && self.undo_points().1 {
            self.finish_safety_copies();
        }
        Ok(created)
    }
}

impl BackupManager {
    /// Stores the backup of `dir` in the repository as an operation of its own: its failure
    /// leaves the local archive in place, and shows in health.
    pub(crate) fn copy_to_repo(&self, dir: &Path, manifest: &Manifest) -> Result<Uploaded> {
        let repo = self.repo.as_ref().ok_or_else(|| Error::NotFound("the backup repository".into()))?;
        let op = Op::new(Action::Create, Kind::Full, &manifest.name, Actor::System, Slot::Shared)
            .options(json!({"location": "repo", "repo": repo.shown()}));
        // Hashing and encrypting yield to serving, as archive compression does.
        let stored = self.runner.run(op, |ctx| {
            let stored = archive::pgzip::at_low_priority(|| repo.store_backup(dir, manifest))?;
            ctx.bytes(stored.bytes_sent);
            Ok(stored)
        });
        repo.note(&stored);
        if stored.is_ok() {
            // Retention after each backup, so the repository never holds more than a backup
            // beyond its policy. A failed prune is retried after the next backup.
            if let Err(e) = self.prune_repo(false, Actor::System) {
                tracing::warn!(error = %e, "pruning the backup repository failed");
            }
        }
        stored
    }
}

/// The manifest of a RocksDB directory that nothing writes to: what it holds and its files'
/// checksums (those of unchanged tables from `known`).
pub(crate) fn describe_dir(
    dir: &Path,
    name: &str,
    trigger: Trigger,
    label: Option<&str>,
    keep: bool,
    progress: Progress<'_>,
    known: Option<&archive::Known>,
) -> Result<Manifest> {
    let snapshot = store::inspect(dir)?;
    let files = archive::describe_files_known(dir, progress, known)?;
    Ok(Manifest {
        format_version: manifest::CURRENT_FORMAT,
        app_version: env!("CARGO_PKG_VERSION").into(),
        name: name.into(),
        label: label.map(Into::into),
        trigger,
        created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        keep,
        last_seq: snapshot.last_seq,
        store_format: snapshot.format,
        counts: Counts::of(&snapshot),
        rocksdb_version: manifest::ROCKSDB_VERSION.into(),
        files,
        timeline: snapshot.timeline.map(|t| t.id),
    })
}

/// Writes and publishes the local archive of `dir`, whose files `manifest` describes.
pub(crate) fn write_local(
    config: &BackupConfig,
    dir: &Path,
    manifest: &Manifest,
    progress: Progress<'_>,
) -> Result<Created> {
    let name = manifest.name.as_str();
    let tmp = config.backup_dir.join(format!("{TEMP_PREFIX}{name}"));
    let path = config.backup_dir.join(name);
    let written = match archive::write(dir, manifest, &tmp, config.compression_level, progress) {
        Ok(written) => written,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    files::publish(&tmp, &path, &written.sha256, "backup.before_rename")?;
    let mut created = Created::of(manifest, path.display().to_string(), written.size);
    created.sha256 = Some(written.sha256);
    Ok(created)
}

impl Created {
    /// A backup as `manifest` describes it, at `backup_path`, `size` bytes.
    pub(crate) fn of(manifest: &Manifest, backup_path: String, size: u64) -> Created {
        Created {
            name: manifest.name.clone(),
            backup_path,
            size,
            size_mb: files::mb(size),
            created_at: manifest.created_at.clone(),
            sha256: None,
            trigger: manifest.trigger,
            label: manifest.label.clone(),
            keep: manifest.keep,
            last_seq: manifest.last_seq,
            counts: manifest.counts.clone(),
            duration_ms: 0,
            rotated: Vec::new(),
            repo: None,
        }
    }
}
