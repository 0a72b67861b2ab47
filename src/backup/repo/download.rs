//! Restoring a backup from the repository into a new directory: each file is downloaded from
//! its object, checked against the SHA-256 and size its manifest states, and fsynced; then
//! the store is opened read-only and its counts checked against the manifest, as a restore
//! from an archive is.
//!
//! The repository is read as hostile input: names are the manifest's checked plain names,
//! sizes are bounded by what the manifest states (and the manifest's total by `max_bytes`).

use std::fs::File;
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::manifest::RepoManifest;
use super::{object_key, Error, Repo};
use crate::backup::archive::Counts;

impl Repo {
    /// Downloads backup `id` into the new directory `staging` (the caller removes it on
    /// error) and checks it. `max_bytes` bounds what it may write.
    pub fn restore_into(&self, id: &str, staging: &Path, max_bytes: u64) -> Result<RepoManifest, Error> {
        let manifest = self.manifest(id)?;
        let total = manifest
            .backup
            .total_size()
            .ok_or_else(|| Error::Damaged(format!("the sizes of backup {id} overflow")))?;
        if total > max_bytes {
            return Err(Error::NoRoom(format!(
                "backup {id} holds {total} bytes, more than the {max_bytes} bytes a restore may write here"
            )));
        }
        std::fs::create_dir(staging).map_err(|e| Error::Local(format!("{}: {e}", staging.display())))?;
        for (file, object) in manifest.backup.files.iter().zip(&manifest.objects) {
            let path = staging.join(&file.name);
            let local = |e: std::io::Error| Error::Local(format!("{}: {e}", path.display()));
            let mut out = File::options().write(true).create_new(true).open(&path).map_err(local)?;
            // Hashed as it is written: each byte is read from the network once, never again.
            let mut hasher = Sha256::new();
            let got = self.target().read(&object_key(object), file.size, |chunk| {
                hasher.update(chunk);
                out.write_all(chunk).map_err(local)
            });
            let got = match got {
                Ok(got) => got,
                // The manifest exists and names it: the backup is damaged, not absent.
                Err(Error::Missing(_)) => {
                    return Err(Error::Damaged(format!("object {object} of {} is missing", file.name)))
                }
                Err(e) => return Err(e),
            };
            if got != file.size {
                return Err(Error::Damaged(format!(
                    "object {object} of {} is {got} bytes, the manifest says {}",
                    file.name, file.size
                )));
            }
            if hex::encode(hasher.finalize()) != file.sha256 {
                return Err(Error::Damaged(format!(
                    "object {object} of {} does not match its checksum",
                    file.name
                )));
            }
            out.sync_all().map_err(local)?;
        }
        crate::durable::sync_dir(staging).map_err(|e| Error::Local(format!("{}: {e}", staging.display())))?;
        let snapshot = crate::store::inspect(staging)
            .map_err(|e| Error::Damaged(format!("backup {id} does not open as a store: {e}")))?;
        let counts = Counts::of(&snapshot);
        if snapshot.last_seq != manifest.backup.last_seq || counts != manifest.backup.counts {
            return Err(Error::Damaged(format!(
                "backup {id} holds {counts:?} up to seq {}, its manifest says {:?} up to seq {}",
                snapshot.last_seq, manifest.backup.counts, manifest.backup.last_seq
            )));
        }
        Ok(manifest)
    }
}
