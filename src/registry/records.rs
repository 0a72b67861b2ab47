//! The records of an event's collections.

use super::*;

impl Registry {
    /// Creates records in a collection of an event, atomically. Returns them in the order of
    /// `bodies`.
    pub fn create_records(
        &self,
        event_id: &str,
        collection: &str,
        bodies: Vec<Fields<'_>>,
    ) -> Result<Vec<Created>> {
        check_id(event_id)?;
        check_new_collection(collection)?;
        if bodies.len() > MAX_BATCH {
            return Err(Error::BatchTooLarge { len: bodies.len(), max: MAX_BATCH });
        }
        // Documents are rendered before the write lock is taken, so concurrent writers only
        // serialise on the store write itself.
        let now = bus::now();
        let stamp = Stamp::new(&now, &now, 1);
        let docs = bodies
            .into_iter()
            .map(|body| {
                let id = new_id();
                let doc = check_size(render_fields(&id, &body, &stamp))?;
                Ok(Created { id, doc })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut txn = self.store.begin()?;
        if txn.get(Cf::Registry, &keys::event(event_id))?.is_none() {
            return Err(Error::EventNotFound(event_id.into()));
        }
        for Created { id, doc } in &docs {
            txn.put(Cf::Registry, &keys::record(event_id, collection, id), doc.as_bytes());
            append(&mut txn, "record.created", event_id, Some(collection), Some(id), doc.as_bytes());
        }
        txn.count(&records_counter(collection), docs.len() as i64);
        txn.commit()?;
        Ok(docs)
    }

    /// Reads a record.
    pub fn get_record(&self, event_id: &str, collection: &str, id: &str) -> Result<Doc> {
        check_record_path(event_id, collection, id)?;
        let db = self.store.db()?;
        let raw = db.get_cf(cf(&db, Cf::Registry), keys::record(event_id, collection, id))?;
        match raw {
            Some(raw) => Ok(Doc(raw)),
            None => Err(self.record_missing(event_id, collection, id)?),
        }
    }

    /// Lists the records of a collection of an event, in creation order.
    pub fn list_records(
        &self,
        event_id: &str,
        collection: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ListPage> {
        check_id(event_id)?;
        check_collection(collection)?;
        let page = self.list(keys::collection(event_id, collection), cursor, limit)?;
        if page.items.is_empty() && cursor.is_none() {
            // An empty collection of an existing event is an empty list; of a missing one, 404.
            self.get_event(event_id)?;
        }
        Ok(page)
    }

    /// Replaces or patches a record.
    pub fn update_record(
        &self,
        event_id: &str,
        collection: &str,
        id: &str,
        update: Update,
        if_match: Option<u64>,
    ) -> Result<Doc> {
        check_record_path(event_id, collection, id)?;
        let mut txn = self.store.begin()?;
        let key = keys::record(event_id, collection, id);
        let Some(current) = read(&txn, &key)? else {
            drop(txn);
            return Err(self.record_missing(event_id, collection, id)?);
        };
        let doc = check_size(updated(current, update, if_match, "the record")?)?;
        txn.put(Cf::Registry, &key, doc.as_bytes());
        append(&mut txn, "record.updated", event_id, Some(collection), Some(id), doc.as_bytes());
        txn.commit()?;
        Ok(doc)
    }

    /// Deletes a record.
    pub fn delete_record(
        &self,
        event_id: &str,
        collection: &str,
        id: &str,
        if_match: Option<u64>,
    ) -> Result<Deleted> {
        check_record_path(event_id, collection, id)?;
        let mut txn = self.store.begin()?;
        let key = keys::record(event_id, collection, id);
        let Some(current) = read(&txn, &key)? else {
            drop(txn);
            return Err(self.record_missing(event_id, collection, id)?);
        };
        let version = check_version(&current, if_match)?;
        txn.delete(Cf::Registry, &key);
        txn.count(&records_counter(collection), -1);
        let deleted = Deleted { id: id.into(), version, records_deleted: None };
        let data = serde_json::to_vec(&deleted).expect("serialisable");
        append(&mut txn, "record.deleted", event_id, Some(collection), Some(id), &data);
        txn.commit()?;
        Ok(deleted)
    }

    /// The error for a missing record: the event's absence when that is the cause.
    fn record_missing(&self, event_id: &str, collection: &str, id: &str) -> Result<Error> {
        self.get_event(event_id)?;
        Ok(Error::RecordNotFound { event_id: event_id.into(), collection: collection.into(), id: id.into() })
    }
}
