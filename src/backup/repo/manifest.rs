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
    /// Present when the objects are age files (see [`super::crypt`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// How a backup's objects are encrypted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Encryption {
    /// The recipients the objects are encrypted to.
    pub recipients: Vec<String>,
    /// The key its objects are named with (hex), which a new machine adopts.
    pub name_key: String,
    /// The size of each object as stored (an age file is larger than its content).
    pub stored_sizes: Vec<u64>,
}

/// The smallest and largest size an age file of `size` bytes of content can have (its header,
/// whose stanzas vary in size, takes at most [`super::crypt::MAX_AGE_HEADER`]); `None` when
/// they overflow (a hostile size).
pub fn sealed_bounds(size: u64) -> Option<(u64, u64)> {
    let chunks = size.div_ceil(64 << 10).max(1);
    // The nonce, the content, a tag per chunk, and at least the version line and MAC line.
    let payload = size.checked_add(16)?.checked_add(chunks.checked_mul(16)?)?;
    Some((payload.checked_add(22 + 48)?, payload.checked_add(super::crypt::MAX_AGE_HEADER as u64)?))
}

impl RepoManifest {
    /// The sizes object `i` may have: its content's size, or, encrypted, any size an age file
    /// of that content can have (checked in [`Self::parse`], so never overflowing).
    pub fn size_bounds(&self, i: usize) -> (u64, u64) {
        let size = self.backup.files[i].size;
        match &self.encryption {
            None => (size, size),
            Some(_) => sealed_bounds(size).unwrap_or((size, size)),
        }
    }

    /// The size of each object as stored.
    pub fn stored_sizes(&self) -> Vec<u64> {
        match &self.encryption {
            Some(e) => e.stored_sizes.clone(),
            None => self.backup.files.iter().map(|f| f.size).collect(),
        }
    }
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
        if let Some(encryption) = &manifest.encryption {
            if encryption.stored_sizes.len() != manifest.objects.len() {
                return Err(damaged("it states a stored size for each object, and does not".into()));
            }
            let sizes = manifest.backup.files.iter().zip(&encryption.stored_sizes);
            if let Some((file, _)) = sizes.clone().find(|(f, stored)| {
                sealed_bounds(f.size).is_none_or(|(min, max)| !(min..=max).contains(*stored))
            }) {
                return Err(damaged(format!("the stored size of {} cannot hold its content", file.name)));
            }
            let key_ok = encryption.name_key.len() == 64 && hex::decode(&encryption.name_key).is_ok();
            if !key_ok
                || encryption.recipients.is_empty()
                || encryption.recipients.len() > super::crypt::MAX_RECIPIENTS
            {
                return Err(damaged("its encryption section is not valid".into()));
            }
        }
        if crate::backup::files::id_of(&manifest.backup.name) != id {
            return Err(damaged("it names another backup".into()));
        }
        Ok(manifest)
    }
}
