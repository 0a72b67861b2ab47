//! Storing a backup in the repository: the objects it lacks, then the manifest.
//!
//! The steps, each safe to crash in:
//! 1. list the objects the repository holds;
//! 2. upload each file of the backup whose content is not among them, as the object named
//!    by its SHA-256 (a crash leaves objects no manifest names, which prune sweeps);
//! 3. write the manifest, last: only now does the backup exist.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::manifest::{RepoManifest, REPO_FORMAT};
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
    /// How long it took.
    pub duration_ms: u64,
}

impl Repo {
    /// Stores the backup of the store in `dir` (a checkpoint or a closed store that nothing
    /// writes to), whose files `manifest` describes.
    pub fn store_backup(&self, dir: &Path, manifest: &Manifest) -> Result<Uploaded, Error> {
        let started = Instant::now();
        let id = crate::backup::files::id_of(&manifest.name).to_owned();
        let present = self.objects()?;
        let mut uploaded = Uploaded { id: id.clone(), files: manifest.files.len(), ..Uploaded::default() };
        let mut sent_now = std::collections::HashSet::new();
        for file in &manifest.files {
            uploaded.bytes_total += file.size;
            let object = &file.sha256;
            // Present only with the right size: an object damaged in place (emptied, cut
            // short) is written again, or every later backup would name a broken object.
            if present.get(object) == Some(&file.size) || sent_now.contains(object) {
                continue;
            }
            let path = dir.join(&file.name);
            let source = crate::untrusted::open_regular(&path)
                .map_err(|e| Error::Local(format!("{}: {e}", path.display())))?;
            crate::fault::io_point("repo.upload").map_err(|e| Error::Unavailable(e.to_string()))?;
            // The file cannot change (a checkpoint's files are immutable), so its hash holds.
            let sent = self.target().upload(
                &object_key(object),
                std::io::Read::take(source, file.size),
                file.size,
            )?;
            if sent != file.size {
                return Err(Error::Local(format!(
                    "{} ended after {sent} of {} bytes",
                    path.display(),
                    file.size
                )));
            }
            uploaded.objects_sent += 1;
            uploaded.bytes_sent += sent;
            sent_now.insert(object.clone());
        }
        crate::fault::point("repo.before_manifest").map_err(|e| Error::Unavailable(e.to_string()))?;
        let objects = manifest.files.iter().map(|f| f.sha256.clone()).collect();
        let repo_manifest = RepoManifest { format_version: REPO_FORMAT, backup: manifest.clone(), objects };
        let body = serde_json::to_vec_pretty(&repo_manifest).expect("a manifest serialises");
        self.target().put(&manifest_key(&id), body)?;
        uploaded.duration_ms = started.elapsed().as_millis() as u64;
        Ok(uploaded)
    }
}
