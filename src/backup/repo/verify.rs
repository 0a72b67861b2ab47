//! Verifying the repository: every backup's manifest reads and checks, and every object it
//! names is there with the size it should have; with `read_data`, each object is downloaded
//! and its SHA-256 checked too.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{object_key, Error, Repo};

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
        let mut named: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
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
            for (file, object) in manifest.backup.files.iter().zip(&manifest.objects) {
                match present.get(object) {
                    None => verified
                        .problems
                        .push(format!("backup {id}: object {object} of {} is missing", file.name)),
                    Some(size) if *size != file.size => verified.problems.push(format!(
                        "backup {id}: object {object} of {} is {size} bytes, the manifest says {}",
                        file.name, file.size
                    )),
                    Some(_) => {
                        named.insert(object.clone(), file.size);
                    }
                }
            }
        }
        verified.objects = named.len();
        if read_data {
            for (object, size) in &named {
                // Streamed through the hash: an object is never held in memory whole.
                let mut hasher = Sha256::new();
                self.target().read(&object_key(object), *size, |chunk| {
                    hasher.update(chunk);
                    Ok(())
                })?;
                if hex::encode(hasher.finalize()) != *object {
                    verified.problems.push(format!("object {object} does not match its checksum"));
                }
            }
        }
        Ok(verified)
    }
}
