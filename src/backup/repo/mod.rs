//! The backup repository: whole-store backups kept off the machine's disk, each file of a
//! store stored once, in a local folder or an S3 bucket (see [`target`]).
//!
//! # Layout
//! Under the repository's prefix:
//! - `objects/ab/abcdef…`: one object per distinct file content, named by the SHA-256 of the
//!   content. RocksDB's table files never change once written, so a backup uploads only the
//!   files that are new since the backups before it. A file is never identified by its name
//!   and size (after a hot restore RocksDB reuses file numbers for other contents,
//!   facebook/rocksdb#8020), only by its content.
//! - `backups/<id>.json`: a backup's manifest, the archive manifest of the store (its files
//!   with their sizes and SHA-256) plus the object of each file. It is written last: a backup
//!   exists once its manifest does, and every object it names was written before.
//! - `log/<timeline>/`: the shipped bus log, in segments (see [`log`]).
//!
//! With `REPO_RECIPIENTS` set, objects and manifests are age files and objects are named by a
//! keyed hash instead (see [`crypt`]).
//!
//! Nothing is ever overwritten: objects are named by their content and manifests by their
//! backup's unique id. Deleting a backup deletes its manifest; objects that no manifest
//! names are swept later ([`retention`] decides which backups go).

pub mod crypt;
pub mod download;
pub mod error;
pub mod location;
pub mod log;
pub mod manifest;
pub mod prune;
pub mod retention;
pub mod target;
pub mod upload;
pub mod verify;

use std::collections::HashMap;

pub use error::Error;
pub use location::{Location, S3Settings, Settings};
pub use manifest::RepoManifest;
pub use target::Target;

/// Folder of objects.
pub const OBJECTS: &str = "objects";
/// Folder of backup manifests.
pub const BACKUPS: &str = "backups";
/// Largest manifest read: 10,000 files take about 2 MiB.
const MAX_MANIFEST_BYTES: u64 = 8 << 20;

/// The key of an object.
pub fn object_key(object: &str) -> String {
    format!("{OBJECTS}/{}/{object}", &object[..2.min(object.len())])
}

/// The second a backup's id names (`backup_YYYY-MM-DD_HHMMSS…`).
fn second_of(id: &str) -> Option<&str> {
    id.strip_prefix("backup_")?.get(..17).filter(|s| s.as_bytes().get(10) == Some(&b'_'))
}

/// The key of a backup's manifest.
pub fn manifest_key(id: &str) -> String {
    format!("{BACKUPS}/{id}.json")
}

/// A repository, opened.
#[derive(Debug)]
pub struct Repo {
    target: Target,
    crypt: crypt::Crypt,
}

impl Repo {
    /// Opens the repository at `location`.
    pub fn open(location: &Location, settings: &Settings) -> Result<Repo, Error> {
        Ok(Repo { target: Target::open(location, settings)?, crypt: crypt::Crypt::open(&settings.crypt)? })
    }

    /// Its encryption.
    pub fn crypt(&self) -> &crypt::Crypt {
        &self.crypt
    }

    /// Its storage.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The objects it holds, with their sizes.
    pub fn objects(&self) -> Result<HashMap<String, u64>, Error> {
        Ok(self
            .target
            .list(OBJECTS)?
            .into_iter()
            .filter_map(|l| l.key.rsplit('/').next().map(|name| (name.to_owned(), l.size)))
            .filter(|(name, _)| manifest::is_object_name(name))
            .collect())
    }

    /// The ids of its backups.
    pub fn backup_ids(&self) -> Result<Vec<String>, Error> {
        let mut ids: Vec<String> = self
            .target
            .list(BACKUPS)?
            .into_iter()
            .filter_map(|l| l.key.strip_prefix(&format!("{BACKUPS}/")).map(str::to_owned))
            .filter_map(|name| name.strip_suffix(".json").map(str::to_owned))
            .filter(|id| crate::backup::files::check_id(id).is_ok())
            .collect();
        ids.sort_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    /// The id of its newest backup. Names sort by the second they were taken in, so the
    /// backups of the newest second are told apart by their manifests' creation time (in
    /// milliseconds) and then their `lastSeq`.
    pub fn newest(&self) -> Result<Option<String>, Error> {
        let ids = self.backup_ids()?;
        let Some(first) = ids.first() else { return Ok(None) };
        let second = second_of(first);
        let same_second: Vec<&String> =
            ids.iter().take_while(|id| second.is_some() && second_of(id) == second).collect();
        if same_second.len() < 2 {
            return Ok(Some(first.clone()));
        }
        let mut best: Option<(chrono::DateTime<chrono::FixedOffset>, u64, &String)> = None;
        for id in same_second {
            let manifest = match self.manifest(id) {
                Ok(m) => m,
                Err(e @ Error::Unavailable(_)) => return Err(e),
                // A manifest that cannot be read is no candidate; restoring it would fail.
                Err(_) => continue,
            };
            let Ok(created) = chrono::DateTime::parse_from_rfc3339(&manifest.backup.created_at) else {
                continue;
            };
            let key = (created, manifest.backup.last_seq, id);
            if best.as_ref().is_none_or(|b| (b.0, b.1, b.2) < (key.0, key.1, key.2)) {
                best = Some(key);
            }
        }
        Ok(Some(best.map_or_else(|| first.clone(), |b| b.2.clone())))
    }

    /// One backup's manifest, decrypted when it is encrypted, checked as hostile input.
    pub fn manifest(&self, id: &str) -> Result<RepoManifest, Error> {
        self.manifest_sealed(id).map(|(manifest, _)| manifest)
    }

    /// [`Self::manifest`], and whether it was encrypted.
    pub fn manifest_sealed(&self, id: &str) -> Result<(RepoManifest, bool), Error> {
        let raw = self.target.get(&manifest_key(id), MAX_MANIFEST_BYTES)?;
        if !crypt::is_sealed(&raw) {
            return RepoManifest::parse(id, &raw).map(|m| (m, false));
        }
        let what = format!("the manifest of backup {id}");
        let mut plain = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(self.crypt.open_sealed(&raw[..], &what)?, MAX_MANIFEST_BYTES + 1),
            &mut plain,
        )
        .map_err(|e| crypt::read_error(&what, e))?;
        if plain.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(Error::Damaged(format!("{what} is more than {MAX_MANIFEST_BYTES} bytes")));
        }
        RepoManifest::parse(id, &plain).map(|m| (m, true))
    }
}

/// The repository as the BackupManager holds it: opened once, with how its last backup went.
#[derive(Debug)]
pub struct Handle {
    shown: String,
    opened: Result<Repo, String>,
    status: std::sync::Mutex<Status>,
    /// The listing, read at most every [`LISTING_TTL`] (listing costs requests), and the
    /// manifests read so far (a manifest never changes, so it is read once).
    listing: std::sync::Mutex<Listing>,
}

/// How long a listing of the repository is reused.
const LISTING_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// What the catalogue shows of a repository backup: its manifest without the file list
/// (which a listing does not need, and which may be large), and the size of its files.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The manifest, `files` left empty.
    pub manifest: crate::backup::archive::Manifest,
    /// The bytes its files add up to.
    pub size: u64,
}

/// One backup of the repository, as listed: its summary, or why it cannot be read.
pub type Listed = (String, Result<std::sync::Arc<Summary>, String>);

#[derive(Debug, Default)]
struct Listing {
    /// When `last` was read.
    at: Option<std::time::Instant>,
    /// The last listing, or why it failed (kept for the TTL too, so a repository that hangs
    /// costs one caller the wait, not every caller).
    last: Option<Result<Vec<Listed>, String>>,
    /// A listing is being read: others use the last one meanwhile.
    reading: bool,
    /// The summaries read so far: a manifest never changes, so it is read once.
    summaries: HashMap<String, Result<std::sync::Arc<Summary>, String>>,
}

#[derive(Debug, Default)]
struct Status {
    last_backup: Option<(String, upload::Uploaded)>,
    last_error: Option<String>,
    /// Backups, and the bytes the objects take, as the last prune found them.
    backups: Option<usize>,
    stored_bytes: Option<u64>,
}

impl Handle {
    /// Opens the repository; a repository that cannot be opened is an error of every backup
    /// stored in it (and of health), never of startup.
    pub fn open(location: &Location, settings: &Settings) -> Handle {
        let opened = Repo::open(location, settings).map_err(|e| match e {
            Error::Unavailable(message) => message,
            other => other.to_string(),
        });
        if let Err(e) = &opened {
            tracing::error!(repo = %location, error = %e, "the backup repository cannot be opened");
        }
        let status = Status { last_error: opened.as_ref().err().cloned(), ..Status::default() };
        Handle {
            shown: location.to_string(),
            opened,
            status: std::sync::Mutex::new(status),
            listing: std::sync::Mutex::new(Listing::default()),
        }
    }

    /// Its URL, without secrets.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The opened repository.
    pub fn repo(&self) -> Result<&Repo, Error> {
        self.opened.as_ref().map_err(|e| Error::Unavailable(e.clone()))
    }

    /// Stores a backup (see [`Repo::store_backup`]).
    pub fn store_backup(
        &self,
        dir: &std::path::Path,
        manifest: &crate::backup::archive::Manifest,
    ) -> Result<upload::Uploaded, Error> {
        self.repo()?.store_backup(dir, manifest)
    }

    /// The repository's backups, newest first, each with its summary or why it cannot be
    /// read. Reused for [`LISTING_TTL`] unless this process changed the repository since;
    /// read without holding the lock, so a slow repository never holds up other callers.
    pub fn backups(&self) -> Result<Vec<Listed>, Error> {
        let known = {
            let mut listing = self.listing.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = listing.at.is_some_and(|at| at.elapsed() < LISTING_TTL);
            if let (true, Some(last)) = (fresh || listing.reading, &listing.last) {
                return last.clone().map_err(Error::Unavailable);
            }
            listing.reading = true;
            listing.summaries.clone()
        };
        let read = self.read_listing(known);
        let mut listing = self.listing.lock().unwrap_or_else(|e| e.into_inner());
        listing.reading = false;
        listing.at = Some(std::time::Instant::now());
        match read {
            Ok((backups, summaries)) => {
                listing.summaries = summaries;
                listing.last = Some(Ok(backups.clone()));
                Ok(backups)
            }
            Err(e) => {
                let message = match &e {
                    Error::Unavailable(m) => m.clone(),
                    other => other.to_string(),
                };
                listing.last = Some(Err(message));
                Err(e)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn read_listing(
        &self,
        mut known: HashMap<String, Result<std::sync::Arc<Summary>, String>>,
    ) -> Result<(Vec<Listed>, HashMap<String, Result<std::sync::Arc<Summary>, String>>), Error> {
        let repo = self.repo()?;
        let ids = repo.backup_ids()?;
        known.retain(|id, _| ids.contains(id));
        let mut backups = Vec::with_capacity(ids.len());
        for id in ids {
            let summary = match known.get(&id) {
                Some(summary) => summary.clone(),
                None => {
                    let read = match repo.manifest(&id) {
                        Ok(m) => {
                            let size = m.backup.total_size().unwrap_or_default();
                            let manifest = crate::backup::archive::Manifest { files: Vec::new(), ..m.backup };
                            Ok(std::sync::Arc::new(Summary { manifest, size }))
                        }
                        // Unreachable is not damaged: the listing fails as a whole.
                        Err(e @ Error::Unavailable(_)) => return Err(e),
                        Err(e) => Err(e.to_string()),
                    };
                    known.insert(id.clone(), read.clone());
                    read
                }
            };
            backups.push((id, summary));
        }
        Ok((backups, known))
    }

    /// The creation time (RFC 3339) of the newest backup of the last listing read, without
    /// reading one: for metrics, which never wait for the repository.
    /// With its lastSeq. Backups dated in the future are left out.
    pub fn newest_listed(&self) -> Option<(String, u64)> {
        let listing = self.listing.lock().unwrap_or_else(|e| e.into_inner());
        let Some(Ok(backups)) = &listing.last else { return None };
        let soon = chrono::Utc::now() + chrono::Duration::minutes(1);
        backups
            .iter()
            .filter_map(|(_, s)| s.as_ref().ok())
            .filter(|s| chrono::DateTime::parse_from_rfc3339(&s.manifest.created_at).is_ok_and(|t| t <= soon))
            .max_by(|a, b| a.manifest.created_at.cmp(&b.manifest.created_at))
            .map(|s| (s.manifest.created_at.clone(), s.manifest.last_seq))
    }

    /// When this process last stored a backup here (RFC 3339).
    pub fn last_stored(&self) -> Option<String> {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).last_backup.as_ref().map(|(at, _)| at.clone())
    }

    /// Forgets the listing, after this process changed the repository.
    pub fn forget_listing(&self) {
        self.listing.lock().unwrap_or_else(|e| e.into_inner()).at = None;
    }

    /// Records how storing a backup went, for health.
    pub fn note<E: std::fmt::Display>(&self, result: &Result<upload::Uploaded, E>) {
        self.forget_listing();
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(uploaded) => {
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                status.last_backup = Some((now, uploaded.clone()));
                status.last_error = None;
            }
            Err(e) => status.last_error = Some(e.to_string()),
        }
    }

    /// Records what a prune left, for health.
    pub fn note_pruned(&self, pruned: &prune::Pruned) {
        if pruned.dry_run {
            return;
        }
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.backups = Some(pruned.backups_left);
        status.stored_bytes = pruned.stored_bytes.or(status.stored_bytes);
    }

    /// The `repo` section of health, and whether it makes the service degraded: the last
    /// backup stored in the repository failed. Health never waits for the repository: the
    /// counts are those the last listing or prune of this process found (null before).
    pub fn health(&self) -> (serde_json::Value, bool) {
        // A listing not forgotten since is at least as fresh as the last prune.
        let listed = {
            let listing = self.listing.lock().unwrap_or_else(|e| e.into_inner());
            match (listing.at, &listing.last) {
                (Some(_), Some(Ok(backups))) => Some(backups.len()),
                _ => None,
            }
        };
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let last = status.last_backup.as_ref().map(|(at, uploaded)| {
            let mut last = serde_json::to_value(uploaded).unwrap_or_default();
            last["at"] = serde_json::Value::from(at.as_str());
            last
        });
        let backups = listed.or(status.backups);
        let section = serde_json::json!({
            "url": self.shown,
            "backups": backups,
            "sizeBytes": status.stored_bytes,
            "encrypted": self.opened.as_ref().is_ok_and(|r| r.crypt().encrypting()),
            "lastBackup": last,
            "lastError": status.last_error,
        });
        (section, status.last_error.is_some())
    }
}
