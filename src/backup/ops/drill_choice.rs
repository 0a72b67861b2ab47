//! Which backups a restore drill tries, in which order, and whether one went while it ran:
//! the candidates (the repository's, else BACKUP_DIR's), the plan (or why a drill that should
//! find backups finds none), the order (see [`choose`]), and the "removed since listed" check
//! that tells a deleted, rotated or pruned backup from a damaged one. The drill itself is
//! [`super::drill`].

use super::drill_schedule::{Candidate, DrillReport, Place};
use crate::backup::error::{Error, Result};
use crate::backup::files;
use crate::backup::BackupManager;

/// The backups in the order a drill tries them: the newest, then the "other" one, then the rest
/// (tried only when one before them was removed while the drill ran). The other is a backup
/// the previous drill failed on, while it is still listed: drilled again until it passes, so
/// that a damaged backup keeps the drill failed instead of alternating with a good one; else
/// the one after the previous drill's other in age, wrapping to the second-newest.
pub(super) fn choose<'a>(candidates: &'a [Candidate], previous: Option<&DrillReport>) -> Vec<&'a Candidate> {
    let Some((newest, older)) = candidates.split_first() else { return Vec::new() };
    let position = |id: &str| older.iter().position(|c| c.id == id);
    let failed =
        previous.and_then(|r| r.backups.iter().filter(|b| b.error.is_some()).find_map(|b| position(&b.id)));
    let after = || previous.and_then(|r| r.backups.get(1)).and_then(|b| position(&b.id)).map(|i| i + 1);
    let start = failed.or_else(after).filter(|&i| i < older.len()).unwrap_or(0);
    std::iter::once(newest).chain(&older[start..]).chain(&older[..start]).collect()
}

/// What a drill is given: the backups to try, or why there is none although there should be.
pub(super) type Plan = std::result::Result<Vec<Candidate>, String>;

impl BackupManager {
    /// The backups to drill. A repository that cannot be listed, or that lists nothing while
    /// backups existed (local archives, an earlier drill), is a drill that fails, not "no
    /// backup yet": its backups are what a restore would need, and they are gone or out of
    /// reach. Only a server that never had a backup gets [`Error::InvalidOptions`].
    pub(super) fn plan(&self, drilled_before: bool) -> Result<Plan> {
        let none = || Error::InvalidOptions("there is no backup to drill yet: take a backup first".into());
        let Some(handle) = &self.repo else {
            let all = self.drill_candidates()?;
            return if all.is_empty() { Err(none()) } else { Ok(Ok(all)) };
        };
        let shown = crate::untrusted::bounded(handle.shown());
        match self.drill_candidates() {
            Ok(all) if !all.is_empty() => Ok(Ok(all)),
            Ok(_) => {
                let archives = self.list().is_ok_and(|l| !l.is_empty());
                if !archives && !drilled_before {
                    return Err(none());
                }
                let why =
                    if archives { "BACKUP_DIR holds archives" } else { "an earlier drill drilled backups" };
                Ok(Err(format!(
                    "the backup repository {shown} lists no backup, though {why}: its backups were removed or its backups folder is broken"
                )))
            }
            Err(e) => Ok(Err(format!("the backup repository {shown} cannot be listed: {e}"))),
        }
    }

    /// Whether `backup` is no longer listed (deleted, rotated or pruned since the drill
    /// listed it): then what failed on it is not a failed restore. A backup still listed, or
    /// a listing that fails, is not "removed": its failure stands.
    pub(super) fn removed(&self, backup: &Candidate) -> bool {
        let listed = match backup.place {
            Place::Local => self.list().map(|l| l.iter().any(|e| e.name == backup.name)),
            Place::Repo => match &self.repo {
                Some(handle) => handle
                    .repo()
                    .and_then(|r| r.backup_ids())
                    .map(|ids| ids.contains(&backup.id))
                    .map_err(Error::from),
                None => Ok(false),
            },
        };
        matches!(listed, Ok(false))
    }

    /// The backups a drill chooses from, newest first: the repository's, else BACKUP_DIR's.
    /// A listed backup whose manifest does not read is one (its restore fails and names why),
    /// placed by the time its id was made at: skipping it would let a damaged newest backup
    /// pass the drill on the older ones.
    pub(super) fn drill_candidates(&self) -> Result<Vec<Candidate>> {
        let mut found = Vec::new();
        if let Some(handle) = &self.repo {
            for (id, summary) in handle.backups()? {
                let Ok(summary) = summary else {
                    // The id tells the second only: the end of it, so that a backup of the
                    // same second as a readable one counts as the newer (and fails the drill).
                    let created = crate::backup::catalog::time_of_name(&id)
                        .map(|t| t.format("%Y-%m-%dT%H:%M:%S.999Z").to_string())
                        .unwrap_or_default();
                    found.push(Candidate {
                        name: id.clone(),
                        id,
                        place: Place::Repo,
                        created,
                        last_seq: 0,
                        timeline: None,
                        bytes: 0,
                    });
                    continue;
                };
                let m = &summary.manifest;
                found.push(Candidate {
                    name: id.clone(),
                    id,
                    place: Place::Repo,
                    created: m.created_at.clone(),
                    last_seq: m.last_seq,
                    timeline: m.timeline.clone(),
                    bytes: summary.size,
                });
            }
        } else {
            for entry in self.list()? {
                let manifest = entry.manifest.as_deref();
                found.push(Candidate {
                    id: files::id_of(&entry.name).to_owned(),
                    place: Place::Local,
                    created: entry.created.clone(),
                    last_seq: entry.last_seq.unwrap_or_default(),
                    timeline: manifest.and_then(|m| m.timeline.clone()),
                    bytes: manifest.and_then(|m| m.total_size()).unwrap_or(entry.size),
                    name: entry.name,
                });
            }
        }
        found.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::ops::drill_schedule::Drilled;

    fn candidate(id: &str) -> Candidate {
        Candidate {
            id: id.into(),
            name: id.into(),
            place: Place::Repo,
            created: String::new(),
            last_seq: 0,
            timeline: None,
            bytes: 0,
        }
    }

    /// A drill's report that drilled `newest` and `other`, `failed` among them.
    fn drilled(newest: &str, other: &str, failed: &[&str]) -> DrillReport {
        let mut report = DrillReport::failed(String::new());
        report.backups = [newest, other]
            .into_iter()
            .map(|id| Drilled {
                id: id.into(),
                location: Place::Repo,
                restore_seconds: 0.0,
                files: 0,
                events: 0,
                records: 0,
                last_seq: 0,
                replay: None,
                error: failed.contains(&id).then(|| "damaged".into()),
            })
            .collect();
        report
    }

    #[test]
    fn successive_drills_walk_back_through_the_older_backups_and_wrap() {
        let all: Vec<Candidate> = ["d", "c", "b", "a"].into_iter().map(candidate).collect();
        let ids = |previous: Option<DrillReport>| -> Vec<String> {
            choose(&all, previous.as_ref()).into_iter().map(|c| c.id.clone()).collect()
        };
        assert_eq!(ids(None), ["d", "c", "b", "a"]);
        assert_eq!(ids(Some(drilled("d", "c", &[]))), ["d", "b", "a", "c"]);
        assert_eq!(ids(Some(drilled("d", "b", &[]))), ["d", "a", "c", "b"]);
        assert_eq!(ids(Some(drilled("d", "a", &[])))[..2], ["d", "c"], "wraps to the second-newest");
        assert_eq!(ids(Some(drilled("d", "rotated-away", &[])))[..2], ["d", "c"]);
        assert_eq!(choose(&all[..1], None).len(), 1, "one backup: the newest alone");
        assert!(choose(&[], None).is_empty());
    }

    #[test]
    fn a_backup_that_failed_the_last_drill_is_drilled_again_until_it_passes_or_goes() {
        let all: Vec<Candidate> = ["d", "c", "b", "a"].into_iter().map(candidate).collect();
        let ids = |previous: DrillReport| -> Vec<String> {
            choose(&all, Some(&previous)).into_iter().take(2).map(|c| c.id.clone()).collect()
        };
        assert_eq!(ids(drilled("d", "c", &["c"])), ["d", "c"], "not d and b: the drill would pass");
        assert_eq!(ids(drilled("e", "b", &["e"])), ["d", "a"], "the failed newest is gone: rotation");
        assert_eq!(ids(drilled("c", "a", &["c"])), ["d", "c"], "the failed newest, older now");
        assert_eq!(ids(drilled("d", "x", &["x"])), ["d", "c"], "a failed backup no longer listed");
    }
}
