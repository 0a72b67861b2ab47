//! Storing a backup in the repository: the objects it lacks, then the manifest.
//!
//! The steps, each safe to crash in:
//! 1. list the objects the repository holds;
//! 2. upload each file of the backup whose content is not among them, as the object named
//!    by its SHA-256 (by a keyed hash of it when encrypting); a crash leaves objects no
//!    manifest names, which prune sweeps;
//! 3. write the manifest, last: only now does the backup exist.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::error::from_io;
use super::manifest::{sealed_bounds, Encryption, RepoManifest, REPO_FORMAT};
use super::{manifest_key, object_key, Error, Repo};
use crate::backup::archive::Manifest;

/// What storing a backup cost.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Uploaded {
    /// The backup's id in the repository.
    pub id: String,
    /// Files the backup lists.
    pub files: usize,
    /// Objects uploaded (the rest were there).
    pub objects_sent: usize,
    /// Bytes uploaded.
    pub bytes_sent: u64,
    /// Bytes the backup's files add up to.
    pub bytes_total: u64,
    /// Whether its objects and manifest are encrypted.
    pub encrypted: bool,
    /// How long it took.
    pub duration_ms: u64,
}

/// How many of the newest backups a machine without a name key looks into for one to adopt.
const ADOPT_FROM: usize = 5;

impl Repo {
    /// Stores the backup of the store in `dir` (a checkpoint or a closed store that nothing
    /// writes to), whose files `manifest` describes.
    pub fn store_backup(&self, dir: &Path, manifest: &Manifest) -> Result<Uploaded, Error> {
        let started = Instant::now();
        let id = crate::backup::files::id_of(&manifest.name).to_owned();
        let encrypting = self.crypt().encrypting();
        let name_key = match encrypting {
            true => Some(self.crypt().name_key(|| self.adoptable_name_key())?),
            false => None,
        };
        let present = self.objects()?;
        let stored_before = match encrypting {
            true => self.newest_stored_sizes(),
            false => std::collections::HashMap::new(),
        };
        let mut uploaded = Uploaded {
            id: id.clone(),
            files: manifest.files.len(),
            encrypted: encrypting,
            ..Uploaded::default()
        };
        let mut sent_now = std::collections::HashMap::new();
        let mut objects = Vec::with_capacity(manifest.files.len());
        let mut stored_sizes = Vec::with_capacity(manifest.files.len());
        for file in &manifest.files {
            uploaded.bytes_total += file.size;
            let object = match &name_key {
                Some(key) => self.crypt().object_name(key, &file.sha256),
                None => file.sha256.clone(),
            };
            // Present only with a size that can hold the content: an object damaged in place
            // (emptied, cut short) is written again, or every later backup would name it.
            // Encrypted, its exact size is known from the newest backup that names it; else
            // only bounds are (an age header varies in size).
            let (min, max) = match (encrypting, stored_before.get(&object)) {
                (false, _) => (file.size, file.size),
                (true, Some(&size)) => (size, size),
                (true, None) => sealed_bounds(file.size)
                    .ok_or_else(|| Error::Local(format!("{} has an impossible size", file.name)))?,
            };
            let known = sent_now.get(&object).or(present.get(&object)).copied();
            if let Some(size) = known.filter(|size| (min..=max).contains(size)) {
                objects.push(object);
                stored_sizes.push(size);
                continue;
            }
            let path = dir.join(&file.name);
            let source = crate::untrusted::open_regular(&path)
                .map_err(|e| Error::Local(format!("{}: {e}", path.display())))?;
            crate::fault::io_point("repo.upload").map_err(|e| Error::Unavailable(e.to_string()))?;
            // The file cannot change (a checkpoint's files are immutable), so its hash holds.
            let (read, stored) = self.upload_file(&object, source.take(file.size))?;
            if read != file.size {
                return Err(Error::Local(format!(
                    "{} ended after {read} of {} bytes",
                    path.display(),
                    file.size
                )));
            }
            uploaded.objects_sent += 1;
            uploaded.bytes_sent += stored;
            sent_now.insert(object.clone(), stored);
            objects.push(object);
            stored_sizes.push(stored);
        }
        // The object folders made since, durable before the manifest that names them.
        if uploaded.objects_sent > 0 {
            self.target().sync_folders(super::OBJECTS)?;
        }
        crate::fault::point("repo.before_manifest").map_err(|e| Error::Unavailable(e.to_string()))?;
        let encryption = name_key.map(|key| Encryption {
            recipients: self.crypt().recipients(),
            name_key: hex::encode(key),
            stored_sizes,
        });
        let repo_manifest =
            RepoManifest { format_version: REPO_FORMAT, backup: manifest.clone(), objects, encryption };
        let mut body = serde_json::to_vec_pretty(&repo_manifest).expect("a manifest serialises");
        if encrypting {
            body = self.crypt().seal_manifest(&body)?;
        }
        self.target().put(&manifest_key(&id), body)?;
        self.target().sync(&manifest_key(&id))?;
        self.target().sync_folders(super::BACKUPS)?;
        uploaded.duration_ms = started.elapsed().as_millis() as u64;
        Ok(uploaded)
    }

    /// Uploads one file's content as `object`, encrypted when the repository is. Returns the
    /// bytes read and the bytes stored.
    fn upload_file(&self, object: &str, mut source: impl Read) -> Result<(u64, u64), Error> {
        let key = object_key(object);
        let mut writer = self.target().writer(&key);
        let failed = |e: std::io::Error| match from_io(e) {
            Ok(e) => e,
            Err(e) => Error::Local(format!("reading the file of {object}: {e}")),
        };
        let read = match self.crypt().encrypting() {
            false => std::io::copy(&mut source, &mut writer).map_err(failed)?,
            true => {
                let mut sealed = self.crypt().seal_object(&mut writer).map_err(failed)?;
                let read = std::io::copy(&mut source, &mut sealed).map_err(failed)?;
                sealed.flush().map_err(failed)?;
                sealed.finish().map_err(failed)?;
                read
            }
        };
        let stored = writer.finish()?;
        self.target().sync(&key)?;
        Ok((read, stored))
    }

    /// The stored size of each encrypted object the newest readable backup names.
    fn newest_stored_sizes(&self) -> std::collections::HashMap<String, u64> {
        let ids = self.backup_ids().unwrap_or_default();
        let newest =
            ids.iter().take(ADOPT_FROM).find_map(|id| self.manifest_sealed(id).ok().filter(|(_, s)| *s));
        match newest {
            Some((manifest, _)) => {
                let sizes = manifest.stored_sizes();
                manifest.objects.into_iter().zip(sizes).collect()
            }
            None => std::collections::HashMap::new(),
        }
    }

    /// The name key of one of the newest backups this machine can read, for a machine that
    /// has none yet: deduplication carries on across a move to a new machine. Only an
    /// encrypted manifest is trusted with it (anyone may write a plain one to the bucket).
    pub(crate) fn adoptable_name_key(&self) -> Option<[u8; 32]> {
        let ids = self.backup_ids().ok()?;
        ids.iter().take(ADOPT_FROM).find_map(|id| {
            let (manifest, sealed) = self.manifest_sealed(id).ok()?;
            if !sealed {
                return None;
            }
            let encryption = manifest.encryption?;
            let key = hex::decode(encryption.name_key).ok()?;
            <[u8; 32]>::try_from(key).ok()
        })
    }
}
