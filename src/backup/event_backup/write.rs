//! Writing an event backup: streamed from a snapshot of the event into a temp file, then
//! published with its sidecar.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{SecondsFormat, Utc};
use flate2::write::GzEncoder;
use sha2::Digest;

use super::{cut, dir, EventMetadata, EVENT_FORMAT, EVENT_SUFFIX, MAX_EVENT_NAME_BYTES, SEED_VERSION};
use crate::backup::archive::manifest::Trigger;
use crate::backup::error::{Error, Result};
use crate::backup::files::{self, HashWriter, TEMP_PREFIX};
use crate::registry::EventSnapshot;

/// An event backup that was written.
#[derive(Debug, Clone)]
pub struct EventWritten {
    /// File name.
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file (also in its sidecar).
    pub sha256: String,
    /// Its metadata.
    pub metadata: EventMetadata,
}

/// Writes a backup of the event in `snap` into `BACKUP_DIR/event_deletions/`, atomically: a
/// temp file, fsync, sidecar, rename, fsync of the folder.
pub fn write(
    backup_dir: &Path,
    snap: &EventSnapshot<'_>,
    trigger: Trigger,
    level: u32,
) -> Result<EventWritten> {
    let folder = dir(backup_dir);
    fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
    let now = Utc::now();
    let claim = Claim::new(&folder, snap.id(), now.timestamp_millis());
    let (name, backup_id) = (claim.name.clone(), claim.backup_id.clone());
    let counts = snap.counts()?.into_iter().map(|(c, (n, _))| (c, n)).collect();
    let event_name = serde_json::from_slice::<serde_json::Value>(snap.document().as_bytes())
        .ok()
        .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(|n| cut(n, MAX_EVENT_NAME_BYTES)));
    let metadata = EventMetadata {
        event_id: snap.id().to_owned(),
        event_name,
        backup_id,
        backup_date: now.to_rfc3339_opts(SecondsFormat::Millis, true),
        version: SEED_VERSION.into(),
        format_version: EVENT_FORMAT,
        trigger,
        counts,
        last_seq: snap.seq(),
        app_version: env!("CARGO_PKG_VERSION").into(),
    };
    let nanos = now.timestamp_nanos_opt().unwrap_or_default();
    let tmp = folder.join(format!("{TEMP_PREFIX}{name}.{}.{nanos}", std::process::id()));
    let path = folder.join(&name);
    // The name is claimed, so the sidecar `publish` may remove on failure is this writer's.
    let (size, sha256) = match write_body(&tmp, snap, &metadata, level) {
        Ok(written) => written,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    files::publish(&tmp, &path, &sha256, "event_backup.before_rename")?;
    Ok(EventWritten { name, path, size, sha256, metadata })
}

/// Backups being written by this process: two backups of one event in the same millisecond
/// must not pick the same name (the final name only exists once the file is complete).
static WRITING: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// A file name claimed for one writer until it drops.
struct Claim {
    path: PathBuf,
    name: String,
    backup_id: String,
}

impl Claim {
    fn new(folder: &Path, event_id: &str, millis: i64) -> Claim {
        let mut writing = WRITING.lock().unwrap_or_else(|e| e.into_inner());
        let claim = (millis..)
            .map(|ms| {
                let backup_id = format!("event_{event_id}_backup_{ms}");
                let name = format!("{backup_id}{EVENT_SUFFIX}");
                Claim { path: folder.join(&name), name, backup_id }
            })
            .find(|c| !c.path.exists() && !writing.contains(&c.path))
            .expect("an unused name exists");
        writing.push(claim.path.clone());
        claim
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        WRITING.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| *p != self.path);
    }
}

fn write_body(
    tmp: &Path,
    snap: &EventSnapshot<'_>,
    metadata: &EventMetadata,
    level: u32,
) -> Result<(u64, String)> {
    let io_err = |e| Error::io(tmp, e);
    let file = File::options().write(true).create_new(true).open(tmp).map_err(io_err)?;
    let hashing = HashWriter::new(BufWriter::with_capacity(1 << 20, file));
    let mut out =
        BufWriter::with_capacity(1 << 16, GzEncoder::new(hashing, flate2::Compression::new(level.max(1))));
    check_document_size(snap.document().as_bytes().len())?;
    let mut head = Vec::with_capacity(512 + snap.document().as_bytes().len());
    head.extend_from_slice(b"{\"metadata\":");
    serde_json::to_writer(&mut head, metadata).expect("metadata serialises");
    head.extend_from_slice(b",\"eventDocument\":");
    head.extend_from_slice(snap.document().as_bytes());
    head.extend_from_slice(b",\"collections\":{");
    out.write_all(&head).map_err(io_err)?;
    let mut current: Option<String> = None;
    snap.records(|collection, doc| {
        check_document_size(doc.len())?;
        let separator: &[u8] = match &current {
            Some(c) if c == collection => b",",
            Some(_) => b"],",
            None => b"",
        };
        if current.as_deref() != Some(collection) {
            out.write_all(separator).map_err(io_err)?;
            serde_json::to_writer(&mut out, collection).map_err(|e| io_err(e.into()))?;
            out.write_all(b":[").map_err(io_err)?;
            current = Some(collection.to_owned());
        } else {
            out.write_all(separator).map_err(io_err)?;
        }
        out.write_all(doc).map_err(io_err)
    })?;
    out.write_all(if current.is_some() { b"]}}" } else { b"}}" }).map_err(io_err)?;
    let gz = out.into_inner().map_err(|e| io_err(e.into_error()))?;
    let hashing = gz.finish().map_err(io_err)?;
    let file = hashing.inner.into_inner().map_err(|e| io_err(e.into_error()))?;
    crate::fault::io_point("event_backup.write").map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    Ok((hashing.count, hex::encode(hashing.hasher.finalize())))
}

/// A backup that readers would refuse is not written, so the delete it guards does not
/// happen. Only stores written before documents were capped can hold such a document.
fn check_document_size(size: usize) -> Result<()> {
    let max = crate::registry::MAX_DOCUMENT_BYTES;
    if size > max {
        return Err(Error::DocumentTooLarge { size, max });
    }
    Ok(())
}
