//! A repository backup's manifest: the store's archive manifest (files, sizes, SHA-256,
//! counts) and the object that holds each file. Read as hostile input.

use serde::{Deserialize, Serialize};

use super::Error;
use crate::backup::archive::Manifest;

/// Layout version of repository manifests this build writes; readers dispatch on it.
pub const REPO_FORMAT: u32 = 1;

/// `backups/<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepoManifest {
    /// [`REPO_FORMAT`].
    pub format_version: u32,
    /// What the backup holds, as an archive's manifest says it.
    pub backup: Manifest,
    /// The object of each of `backup.files`, in the same order.
    pub objects: Vec<String>,
}

/// Whether `name` can be an object's name: 64 lowercase hex digits.
pub fn is_object_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl RepoManifest {
    /// Parses and checks the manifest of backup `id`.
    pub fn parse(id: &str, raw: &[u8]) -> Result<RepoManifest, Error> {
        let damaged = |why: String| Error::Damaged(format!("the manifest of backup {id}: {why}"));
        #[derive(Deserialize)]
        struct Version {
            #[serde(rename = "formatVersion")]
            format_version: Option<u64>,
        }
        let version = serde_json::from_slice::<Version>(raw)
            .map_err(|e| damaged(format!("not a JSON object: {e}")))?
            .format_version
            .ok_or_else(|| damaged("no formatVersion".into()))?;
        if version != u64::from(REPO_FORMAT) {
            return Err(damaged(format!(
                "formatVersion {version}; this eventvault reads format {REPO_FORMAT}"
            )));
        }
        let manifest: RepoManifest =
            serde_json::from_slice(raw).map_err(|e| damaged(format!("it does not match format 1: {e}")))?;
        manifest.backup.check().map_err(damaged)?;
        if manifest.objects.len() != manifest.backup.files.len() {
            return Err(damaged("it names an object for each file, and does not".into()));
        }
        if let Some(bad) = manifest.objects.iter().find(|o| !is_object_name(o)) {
            return Err(damaged(format!(
                "{} is not an object name",
                crate::untrusted::quote(bad.as_bytes())
            )));
        }
        if crate::backup::files::id_of(&manifest.backup.name) != id {
            return Err(damaged("it names another backup".into()));
        }
        Ok(manifest)
    }
}
