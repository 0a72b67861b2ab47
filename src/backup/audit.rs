//! The audit trail: one JSON line per backup operation in `BACKUP_DIR/audit.jsonl`.
//!
//! It lives beside the archives, outside the store, so a restore does not roll it back. Lines
//! are appended with `O_APPEND` in one write each, so the server and the CLI can both append.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::catalog::Kind;
use super::error::{Error, Result};

/// Longest line written or read back. Target and error are bounded at about 1 KiB each;
/// options longer than the rest of the room are left out (the entry says so). A longer line
/// (written by an older version that quoted input whole) is skipped when read back.
const MAX_LINE_BYTES: usize = 16 << 10;
/// File name of the trail inside BACKUP_DIR.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// Most entries one read returns.
pub const MAX_ENTRIES: usize = 1000;

/// Who asked for an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    /// A client with the admin token (or any client when no token is configured).
    Admin,
    /// A client with the read token.
    Read,
    /// `eventvault backup …`, offline or forwarded to the server.
    Cli,
    /// The server itself: the schedule, rotation, the drop-in folder, startup.
    System,
}

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A backup was written.
    Create,
    /// A backup was restored (or a restore was rehearsed with `dryRun`).
    Restore,
    /// A backup was deleted.
    Delete,
    /// Records were purged after a backup.
    Purge,
    /// A standby was promoted to primary.
    Promote,
    /// Backups were restored into a scratch directory and checked (a restore drill).
    Drill,
}

impl Action {
    /// Its name, as the trail writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Restore => "restore",
            Action::Delete => "delete",
            Action::Purge => "purge",
            Action::Promote => "promote",
            Action::Drill => "drill",
        }
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Everything was done.
    Success,
    /// Nothing was done.
    Failed,
    /// Part was done (see the entry's error or options).
    Partial,
}

impl Outcome {
    /// Its name, as the trail writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failed => "failed",
            Outcome::Partial => "partial",
        }
    }
}

/// One line of the trail.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// When it finished, RFC 3339 UTC.
    pub time: String,
    /// What was done.
    pub action: Action,
    /// `full` or `event`.
    pub kind: Kind,
    /// The backup concerned.
    pub target: String,
    /// The options it was asked with.
    pub options: Value,
    /// How it ended.
    pub status: Outcome,
    /// How long it took.
    pub duration_ms: u64,
    /// Why it failed, or what was left undone.
    pub error: Option<String>,
    /// Who asked.
    pub actor: Actor,
}

/// What [`Audit::record`] appends.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// What was done.
    pub action: Action,
    /// To which kind of backup.
    pub kind: Kind,
    /// The backup concerned (its id).
    pub target: &'a str,
    /// The options it was asked with.
    pub options: Value,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took.
    pub duration: Duration,
    /// Why it failed, or what was left undone.
    pub error: Option<String>,
    /// Who asked.
    pub actor: Actor,
}

/// The trail of one BACKUP_DIR.
#[derive(Debug)]
pub struct Audit {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Audit {
    /// The trail in `backup_dir`.
    pub fn new(backup_dir: &Path) -> Self {
        Audit { path: backup_dir.join(AUDIT_FILE), lock: Mutex::new(()) }
    }

    /// Appends an entry. A trail that cannot be written is logged, never fatal: the
    /// operation it records has happened either way.
    pub fn record(&self, record: Record<'_>) {
        let entry = Entry {
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            action: record.action,
            kind: record.kind,
            // Both may quote a file's name or contents: bounded, so one bad file cannot
            // grow the trail by more than a line.
            target: crate::untrusted::bounded(record.target),
            options: record.options,
            status: record.outcome,
            duration_ms: record.duration.as_millis() as u64,
            error: record.error.map(|e| crate::untrusted::bounded(&e)),
            actor: record.actor,
        };
        let mut line = serde_json::to_vec(&entry).expect("an entry serialises");
        if line.len() >= MAX_LINE_BYTES {
            let bytes = serde_json::to_vec(&entry.options).map_or(0, |o| o.len());
            let entry = Entry {
                options: serde_json::json!({"omitted": format!("{bytes} bytes of options")}),
                ..entry
            };
            line = serde_json::to_vec(&entry).expect("an entry serialises");
        }
        line.push(b'\n');
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // Non-blocking, so a FIFO put in its place cannot hang the operation that logs.
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)
            .and_then(|f| match f.metadata()?.is_file() {
                true => Ok(f),
                false => Err(io::Error::other("not a regular file")),
            })
            .and_then(|mut f| f.write_all(&line).and_then(|()| f.sync_data()));
        if let Err(e) = written {
            tracing::error!(path = %self.path.display(), error = %e, "could not append to the audit trail");
        }
    }

    /// The newest `limit` entries, newest first. Reads the file backwards, so a long trail
    /// costs no more than its tail. Lines that do not parse (a torn last write) are skipped.
    pub fn newest(&self, limit: usize) -> Result<Vec<Entry>> {
        newest(&self.path, limit)
    }
}

/// See [`Audit::newest`].
pub fn newest(path: &Path, limit: usize) -> Result<Vec<Entry>> {
    let mut file = match crate::untrusted::open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let io_err = |e| Error::io(path, e);
    let mut end = file.seek(SeekFrom::End(0)).map_err(io_err)?;
    let mut entries = Vec::new();
    // Bytes of a line that started before the block read last.
    let mut carry: Vec<u8> = Vec::new();
    // Inside a line too long to be an entry, which is skipped rather than gathered whole.
    let mut skipping = false;
    const BLOCK: u64 = 64 * 1024;
    while end > 0 && entries.len() < limit {
        let start = end.saturating_sub(BLOCK);
        let mut block = vec![0; (end - start) as usize];
        file.seek(SeekFrom::Start(start)).map_err(io_err)?;
        file.read_exact(&mut block).map_err(io_err)?;
        block.extend_from_slice(&carry);
        let mut lines: Vec<&[u8]> = block.split(|b| *b == b'\n').collect();
        if skipping {
            // The last piece is more of the long line; without a newline, all of it is.
            lines.pop();
            if lines.is_empty() {
                end = start;
                continue;
            }
            skipping = false;
        }
        // The first piece may be the end of a line that starts in an earlier block.
        carry = if start > 0 { lines.remove(0).to_vec() } else { Vec::new() };
        if carry.len() > MAX_LINE_BYTES {
            carry.clear();
            skipping = true;
        }
        for line in lines.into_iter().rev() {
            if entries.len() == limit {
                break;
            }
            if let Ok(entry) = serde_json::from_slice::<Entry>(line) {
                entries.push(entry);
            }
        }
        end = start;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_across_blocks_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::new(dir.path());
        let long = "x".repeat(5000);
        for i in 0..100 {
            let options = serde_json::json!({"i": i, "pad": long});
            audit.record(Record {
                action: Action::Create,
                kind: Kind::Full,
                target: &format!("t{i}"),
                options,
                outcome: Outcome::Success,
                duration: Duration::ZERO,
                error: None,
                actor: Actor::Admin,
            });
        }
        // A torn write at the end is skipped.
        OpenOptions::new()
            .append(true)
            .open(dir.path().join(AUDIT_FILE))
            .unwrap()
            .write_all(b"{\"time\":")
            .unwrap();
        let entries = audit.newest(30).unwrap();
        assert_eq!(entries.len(), 30);
        assert_eq!(entries[0].target, "t99");
        assert_eq!(entries[29].target, "t70");
        let all = audit.newest(1000).unwrap();
        assert_eq!(all.len(), 100);
        assert_eq!(all[99].target, "t0");
    }
}
