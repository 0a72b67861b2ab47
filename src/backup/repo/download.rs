//! Restoring a backup from the repository into a new directory: each file is downloaded from
//! its object (decrypted when it is encrypted), checked against the SHA-256 and size its
//! manifest states, and fsynced; then the store is opened read-only and its counts checked
//! against the manifest, as a restore from an archive is.
//!
//! The repository is read as hostile input: names are the manifest's checked plain names,
//! sizes are bounded by what the manifest states (and the manifest's total by `max_bytes`).

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::manifest::RepoManifest;
use super::{crypt, object_key, Error, Repo};
use crate::backup::archive::{Counts, FileEntry};

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
        if manifest.encryption.is_some() && !self.crypt().can_read_objects() {
            return Err(Error::NoKey(format!(
                "backup {id} is encrypted: restoring it needs REPO_IDENTITY_FILE, an identity of its recipients"
            )));
        }
        std::fs::create_dir(staging).map_err(|e| Error::Local(format!("{}: {e}", staging.display())))?;
        for (i, (file, object)) in manifest.backup.files.iter().zip(&manifest.objects).enumerate() {
            let stored = manifest.size_bounds(i).1;
            let path = staging.join(&file.name);
            let local = |e: std::io::Error| Error::Local(format!("{}: {e}", path.display()));
            let mut out = File::options().write(true).create_new(true).open(&path).map_err(local)?;
            self.read_content(&manifest, file, object, stored, |chunk| out.write_all(chunk).map_err(local))?;
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

    /// Streams the content of `file` of a backup, from `object` (`stored` bytes in the
    /// repository), to `sink`, and checks its size and SHA-256: each byte is read from the
    /// network once, hashed as it passes.
    pub fn read_content(
        &self,
        manifest: &RepoManifest,
        file: &FileEntry,
        object: &str,
        stored: u64,
        mut sink: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut hasher = Sha256::new();
        let got = match &manifest.encryption {
            None => self.target().read(&object_key(object), file.size, |chunk| {
                hasher.update(chunk);
                sink(chunk)
            }),
            Some(_) => (|| {
                let what = format!("object {object} of {}", file.name);
                let reader = self.target().reader(&object_key(object), stored)?;
                // One byte more than the content may be: a longer content is refused, not cut.
                let mut plain = self.crypt().open_sealed(reader, &what)?.take(file.size + 1);
                let mut buf = vec![0u8; 1 << 20];
                let mut got = 0u64;
                loop {
                    let n = match plain.read(&mut buf) {
                        Ok(0) => return Ok(got),
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(crypt::read_error(&what, e)),
                    };
                    got += n as u64;
                    if got > file.size {
                        return Ok(got);
                    }
                    hasher.update(&buf[..n]);
                    sink(&buf[..n])?;
                }
            })(),
        };
        let got = match got {
            Ok(got) => got,
            // The manifest exists and names it: the backup is damaged, not absent.
            Err(Error::Missing(_)) => {
                return Err(Error::Damaged(format!("object {object} of {} is missing", file.name)))
            }
            // This machine holds an identity (checked before), and the object is not
            // encrypted to it: not what the backup's recipients wrote.
            Err(Error::NoKey(_)) => {
                return Err(Error::Damaged(format!(
                    "object {object} of {} is not encrypted to this backup's recipients",
                    file.name
                )))
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
        Ok(())
    }
}
