//! A repository backup as today's archive format: downloaded and checked into a temporary
//! folder, then archived, so that an export drops into any `restore/` folder or restores with
//! any eventvault. From an encrypted repository the export is encrypted too (`….tar.gz.age`,
//! to the same recipients): `age -d` with an identity gives the archive back, and nothing
//! leaves the repository in the clear.

use std::fs::File;
use std::path::Path;

use crate::backup::archive::{self, no_progress};
use crate::backup::error::{Error, Result};
use crate::backup::files::{self, TEMP_PREFIX};
use crate::backup::repo::{crypt, Repo};
use std::os::unix::fs::DirBuilderExt;

/// Writes backup `id` of `repo` as a tar.gz archive and returns it open, at its start, with
/// its file name. The archive has no name on disk (it is gone once closed); temporary files
/// go under `work_dir` and are removed whatever happens. `max_bytes` bounds what is written.
/// The name ends in `.age` when the export is encrypted.
pub fn export(repo: &Repo, id: &str, work_dir: &Path, level: u32, max_bytes: u64) -> Result<(String, File)> {
    files::check_id(id)?;
    let id = files::id_of(id);
    std::fs::create_dir_all(work_dir).map_err(|e| Error::io(work_dir, e))?;
    // Decrypted files pass through here: a folder only this user can read.
    let private = work_dir.join(format!("{TEMP_PREFIX}export-{}", files::unique()));
    std::fs::DirBuilder::new().mode(0o700).create(&private).map_err(|e| Error::io(&private, e))?;
    let staging = private.join("store");
    let tmp = private.join("archive.tar.gz");
    let sealed = private.join("archive.tar.gz.age");
    let written = (|| {
        let manifest = repo.restore_into(id, &staging, max_bytes)?;
        archive::write(&staging, &manifest.backup, &tmp, level, &no_progress)?;
        let _ = std::fs::remove_dir_all(&staging);
        // Encrypted in the repository, encrypted out of it, to the same recipients.
        let Some(encryption) = &manifest.encryption else {
            let file = crate::untrusted::open_regular(&tmp).map_err(|e| Error::io(&tmp, e))?;
            return Ok::<_, Error>((manifest.backup.name, file));
        };
        let mut plain = crate::untrusted::open_regular(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let out = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&sealed)
            .map_err(|e| Error::io(&sealed, e))?;
        let mut writer = crypt::seal_to(&encryption.recipients, out)?;
        std::io::copy(&mut plain, &mut writer).map_err(|e| Error::io(&sealed, e))?;
        let mut out = writer.finish().map_err(|e| Error::io(&sealed, e))?;
        std::io::Seek::rewind(&mut out).map_err(|e| Error::io(&sealed, e))?;
        Ok((format!("{}.age", manifest.backup.name), out))
    })();
    // The archive stays readable through the open handle; its names go.
    let _ = std::fs::remove_dir_all(&private);
    written
}

impl crate::backup::BackupManager {
    /// Exports a backup that is only in the repository (see [`export`]).
    pub fn export_from_repo(&self, id: &str) -> Result<(String, File)> {
        let handle = self.repo.as_ref().ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let config = self.config();
        export(handle.repo()?, id, &config.backup_dir, config.compression_level, config.unpack_bound())
    }
}
