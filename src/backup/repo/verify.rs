//! Verifying the repository: every backup's manifest reads and checks, and every object it
//! names is there with the size it should have; with `read_data`, each object is downloaded
//! and its SHA-256 checked too.

use serde::Serialize;

use super::manifest::RepoManifest;
use super::{Error, Repo};

/// What verifying found.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoVerified {
    /// Backups checked.
    pub backups: usize,
    /// Distinct objects they name.
    pub objects: usize,
    /// Whether each object's content was read and hashed.
    pub read_data: bool,
    /// What is wrong, one line each; empty when everything checks out.
    pub problems: Vec<String>,
}

impl Repo {
    /// Verifies every backup (see the module's doc).
    pub fn verify(&self, read_data: bool) -> Result<RepoVerified, Error> {
        let present = self.objects()?;
        let mut verified = RepoVerified { read_data, ..RepoVerified::default() };
        // Each object once, with a manifest and file that name it, to read it through.
        let mut named: std::collections::HashMap<String, (std::sync::Arc<RepoManifest>, usize)> =
            std::collections::HashMap::new();
        for id in self.backup_ids()? {
            verified.backups += 1;
            let manifest = match self.manifest(&id) {
                Ok(manifest) => manifest,
                Err(e @ Error::Unavailable(_)) => return Err(e),
                Err(e) => {
                    verified.problems.push(e.to_string());
                    continue;
                }
            };
            if read_data && manifest.encryption.is_some() && !self.crypt().can_read_objects() {
                return Err(Error::NoKey(format!(
                    "backup {id} is encrypted: reading its data needs REPO_IDENTITY_FILE, an identity of its recipients"
                )));
            }
            let manifest = std::sync::Arc::new(manifest);
            for (i, (file, object)) in manifest.backup.files.iter().zip(&manifest.objects).enumerate() {
                // An encrypted object stored again (after damage) has another header size
                // than the one an older manifest noted: any size its content fits is right.
                let (min, max) = manifest.size_bounds(i);
                match present.get(object) {
                    None => verified
                        .problems
                        .push(format!("backup {id}: object {object} of {} is missing", file.name)),
                    Some(size) if !(min..=max).contains(size) => verified.problems.push(format!(
                        "backup {id}: object {object} of {} is {size} bytes, the manifest says {}",
                        file.name,
                        if min == max { min.to_string() } else { format!("{min} to {max}") }
                    )),
                    Some(_) => {
                        named.entry(object.clone()).or_insert_with(|| (manifest.clone(), i));
                    }
                }
            }
        }
        verified.objects = named.len();
        if read_data {
            for (object, (manifest, i)) in &named {
                // Streamed through the hash: an object is never held in memory whole.
                let file = &manifest.backup.files[*i];
                let stored = manifest.size_bounds(*i).1;
                match self.read_content(manifest, file, object, stored, |_| Ok(())) {
                    Ok(()) => {}
                    Err(e @ (Error::Unavailable(_) | Error::Local(_))) => return Err(e),
                    Err(e) => verified.problems.push(e.to_string()),
                }
            }
        }
        Ok(verified)
    }
}
