//! Putting documents back through the registry: the visitor that applies an event backup
//! (or an archived event) in batches, the one that only checks, and clones' documents.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::Value;

use super::restore_options::{EventReport, RestoreOptions, BATCH};
use crate::backup::error::{Error, Result};
use crate::backup::event_backup::{EventMetadata, Visit};
use crate::backup::BackupManager;
use crate::registry::{self, EventAction, RecordIn, Tally};

/// The events asked for, or every event of the archive.
pub(super) fn chosen_events(
    archived: registry::Archived<'_>,
    asked: Option<&[String]>,
) -> Result<Vec<String>> {
    if let Some(ids) = asked {
        return Ok(ids.to_vec());
    }
    let mut ids = Vec::new();
    archived.events(None, |id, _| {
        ids.push(id.to_owned());
        Ok::<_, Error>(true)
    })?;
    Ok(ids)
}

/// Pass 2: puts an event and its records back, in batches.
pub(super) struct Apply<'m> {
    manager: &'m BackupManager,
    options: &'m RestoreOptions,
    /// The backup read, for errors.
    backup: &'m str,
    source: String,
    target: String,
    event: Option<(bool, EventAction)>,
    pending_event: Option<Vec<u8>>,
    batch: Vec<RecordIn>,
    tallies: BTreeMap<String, Tally>,
}

impl<'m> Apply<'m> {
    pub(super) fn new(
        manager: &'m BackupManager,
        options: &'m RestoreOptions,
        backup: &'m str,
        source: &str,
        target: String,
    ) -> Self {
        Apply {
            manager,
            options,
            backup,
            source: source.to_owned(),
            target,
            event: None,
            pending_event: None,
            batch: Vec::with_capacity(BATCH),
            tallies: BTreeMap::new(),
        }
    }

    pub(super) fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let merge = self.options.merge();
        self.manager.registry().merge_records(&self.target, &self.batch, merge, &mut self.tallies)?;
        self.batch.clear();
        Ok(())
    }

    pub(super) fn totals(&self) -> Tally {
        let mut total = Tally::default();
        for t in self.tallies.values() {
            total.add(*t);
        }
        total
    }

    /// The event document, as stored in the backup.
    pub(super) fn event(&mut self, doc: &[u8]) -> Result<()> {
        // Documents of archives were never checked one by one: what the registry could not
        // update later is refused before it is stored.
        registry::check_stored(doc).map_err(|why| Error::damaged(self.backup, why))?;
        let bytes = if self.target != self.source {
            clone_document(self.backup, doc, &self.target)?
        } else {
            doc.to_vec()
        };
        self.pending_event = Some(bytes);
        // With chosen collections, the event is put back only for a record of one of them:
        // restoring a collection the backup does not hold must not bring a deleted event back.
        if self.options.specific_collections.is_none() {
            self.put_event()?;
        }
        Ok(())
    }

    /// One record, as stored in the backup.
    pub(super) fn add_record(&mut self, collection: &str, id: &str, doc: &[u8]) -> Result<()> {
        if !self.options.wants_collection(collection) {
            return Ok(());
        }
        registry::check_stored(doc).map_err(|why| Error::damaged(self.backup, why))?;
        self.put_event()?;
        self.batch.push((collection.to_owned(), id.to_owned(), doc.to_vec()));
        if self.batch.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Puts the event document back, once, before its first record.
    fn put_event(&mut self) -> Result<()> {
        if let Some(bytes) = self.pending_event.take() {
            let mut merge = self.options.merge();
            // Restoring chosen collections does not touch an existing event's own document.
            merge.overwrite &= self.options.specific_collections.is_none();
            self.event = Some(self.manager.registry().merge_event(&self.target, &bytes, merge)?);
        }
        Ok(())
    }

    pub(super) fn into_report(self) -> Result<EventReport> {
        let (event_exists, event) = match self.event {
            Some(done) => done,
            None => (self.manager.registry().event_exists(&self.target)?, EventAction::Skipped),
        };
        Ok(EventReport {
            event_id: self.target,
            source_event_id: self.source,
            event_exists,
            event,
            collections: self.tallies,
        })
    }
}

impl Visit for Apply<'_> {
    fn metadata(&mut self, _: &EventMetadata) -> Result<bool> {
        Ok(true)
    }

    fn event_document(&mut self, doc: &RawValue) -> Result<()> {
        self.event(doc.get().as_bytes())
    }

    fn record(&mut self, collection: &str, id: &str, doc: &RawValue) -> Result<()> {
        self.add_record(collection, id, doc.get().as_bytes())
    }
}

/// The event document of a clone: the new id, version 1, created now; its fields as they were.
fn clone_document(backup: &str, doc: &[u8], new_id: &str) -> Result<Vec<u8>> {
    let value: Value = serde_json::from_slice(doc).map_err(|e| Error::damaged(backup, e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(Error::damaged(backup, "its event document is not an object"));
    };
    let now = crate::bus::now();
    Ok(registry::render_document(new_id, &fields, &now, &now, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_gets_the_new_id_and_version_1_and_a_damaged_document_is_damaged() {
        let doc = br#"{"id":"old","name":"Conf","version":7,"createdAt":"2020-01-01T00:00:00Z"}"#;
        let cloned: Value = serde_json::from_slice(&clone_document("b", doc, "new").unwrap()).unwrap();
        assert_eq!(
            (&cloned["id"], &cloned["name"], &cloned["version"]),
            (&"new".into(), &"Conf".into(), &1.into())
        );
        for bad in [&b"[1,2]"[..], b"not json"] {
            let e = clone_document("b.json.gz", bad, "new").unwrap_err();
            assert!(matches!(e, Error::Damaged { ref name, .. } if name == "b.json.gz"), "{e:?}");
        }
    }
}
