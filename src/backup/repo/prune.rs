//! Pruning the repository: GFS retention ([`super::retention`]) decides which backups go;
//! their manifests are deleted, then the objects no remaining manifest names are swept.
//!
//! The steps, each safe to crash in:
//! 1. list the backups and read every manifest; a manifest that cannot be read is kept, and
//!    then nothing is swept (its objects are unknown);
//! 2. delete the manifests of the backups retention removes: a crash leaves some deleted and
//!    some not, never a manifest whose objects are gone;
//! 3. sweep objects that no remaining manifest names and that are older than the grace
//!    period: a backup being written uploads its objects before its manifest, so its objects
//!    are unnamed for a while, and the grace keeps them.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::log::{log_retention, BackupPoint};
use super::retention::{decide, Candidate, Policy};
use super::{manifest_key, Error, Repo, OBJECTS};

/// What retention decided for one backup.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneDecision {
    /// The backup.
    pub id: String,
    /// When it was taken.
    pub created_at: Option<String>,
    /// Kept, or removed.
    pub keep: bool,
    /// Why it is kept (`last`, `daily`, `oldest monthly`, `pinned`, `newest`, `unreadable`).
    pub reasons: Vec<String>,
}

/// What a prune did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pruned {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Every backup, newest first.
    pub backups: Vec<PruneDecision>,
    /// Manifests deleted.
    pub removed: Vec<String>,
    /// Objects swept.
    pub objects_swept: usize,
    /// Their bytes.
    pub bytes_swept: u64,
    /// Backups left.
    pub backups_left: usize,
    /// Bytes the repository's objects take after the prune (not known on a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    /// Log segments removed: what no point-in-time restore within PITR_WINDOW needs.
    pub segments_removed: usize,
    /// Why nothing was swept, when nothing could be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep_skipped: Option<String>,
}

impl Repo {
    /// Applies `policy`, keeping what a point-in-time restore to any moment of the last
    /// `window` needs; `dry_run` only reports. Objects younger than `grace` are never swept.
    pub fn prune(
        &self,
        policy: &Policy,
        dry_run: bool,
        grace: Duration,
        window: Duration,
    ) -> Result<Pruned, Error> {
        let mut readable = Vec::new();
        let mut unreadable = Vec::new();
        for id in self.backup_ids()? {
            match self.manifest(&id) {
                Ok(manifest) => match DateTime::parse_from_rfc3339(&manifest.backup.created_at) {
                    Ok(at) => readable.push((id, at.with_timezone(&Utc), manifest)),
                    Err(_) => unreadable.push(id),
                },
                Err(e @ Error::Unavailable(_)) => return Err(e),
                Err(_) => unreadable.push(id),
            }
        }
        let candidates: Vec<Candidate> =
            readable.iter().map(|(_, at, m)| Candidate { time: *at, pinned: m.backup.keep }).collect();
        let decided = decide(policy, &candidates);
        // Point-in-time restores within the window start from these backups.
        let listing = self.log_listing()?;
        let mut timelines = std::collections::HashMap::new();
        for id in &listing.timelines {
            match self.timeline(id) {
                Ok(t) => {
                    timelines.insert(id.clone(), t);
                }
                Err(e @ Error::Unavailable(_)) => return Err(e),
                Err(_) => {}
            }
        }
        let points: Vec<BackupPoint> = readable
            .iter()
            .map(|(id, at, m)| BackupPoint {
                id: id.clone(),
                timeline: m.backup.timeline.clone(),
                last_seq: m.backup.last_seq,
                created: *at,
            })
            .collect();
        let window_start = Utc::now() - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let (bases, removable_segments) = log_retention(&listing, &timelines, &points, window_start);
        let mut pruned = Pruned { dry_run, ..Pruned::default() };
        let mut keep_objects: HashSet<String> = HashSet::new();
        let mut used = vec![false; readable.len()];
        for (candidate, decision) in &decided {
            // Equal times (and pins) are told apart by the first unused backup of that time.
            let index = (0..readable.len())
                .find(|&i| {
                    !used[i]
                        && readable[i].1 == candidate.time
                        && readable[i].2.backup.keep == candidate.pinned
                })
                .expect("every candidate is a backup");
            used[index] = true;
            let (id, _, manifest) = &readable[index];
            let mut reasons: Vec<String> = decision.reasons.iter().map(ToString::to_string).collect();
            if bases.contains(id) {
                reasons.push("pitr window".into());
            }
            let keep = decision.keep || bases.contains(id);
            if keep {
                keep_objects.extend(manifest.objects.iter().cloned());
            }
            pruned.backups.push(PruneDecision {
                id: id.clone(),
                created_at: Some(manifest.backup.created_at.clone()),
                keep,
                reasons,
            });
        }
        for id in &unreadable {
            pruned.backups.push(PruneDecision {
                id: id.clone(),
                created_at: None,
                keep: true,
                reasons: vec!["unreadable".into()],
            });
        }
        pruned.backups_left = pruned.backups.iter().filter(|d| d.keep).count();
        if dry_run {
            pruned.segments_removed = removable_segments.len();
            return Ok(pruned);
        }
        for decision in pruned.backups.iter().filter(|d| !d.keep) {
            self.target().delete(&manifest_key(&decision.id))?;
            pruned.removed.push(decision.id.clone());
            crate::fault::point("prune.after_manifest").map_err(|e| Error::Unavailable(e.to_string()))?;
        }
        // Segments go after the manifests: a segment is removed only below a backup kept.
        for key in &removable_segments {
            self.target().delete(&key.key())?;
            pruned.segments_removed += 1;
        }
        if !unreadable.is_empty() {
            pruned.sweep_skipped =
                Some(format!("{} manifests cannot be read, so their objects are unknown", unreadable.len()));
            pruned.stored_bytes = Some(self.target().list(OBJECTS)?.iter().map(|o| o.size).sum());
            return Ok(pruned);
        }
        let cutoff = Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default();
        let mut stored = 0u64;
        for object in self.target().list(OBJECTS)? {
            let Some(name) = object.key.rsplit('/').next() else { continue };
            if keep_objects.contains(name) || object.modified > cutoff {
                stored += object.size;
                continue;
            }
            self.target().delete(&object.key)?;
            pruned.objects_swept += 1;
            pruned.bytes_swept += object.size;
        }
        pruned.stored_bytes = Some(stored);
        Ok(pruned)
    }
}
