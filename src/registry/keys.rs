//! Key layout of the `registry` column family. Ids and collection names never contain `/`
//! (see [`crate::names`]), so `/` separates the parts unambiguously.

/// `e/{eventId}` → event document.
pub fn event(id: &str) -> Vec<u8> {
    format!("e/{id}").into_bytes()
}

/// Prefix of all event keys.
pub const EVENTS: &[u8] = b"e/";

/// `r/{eventId}/{collection}/{recordId}` → record document.
pub fn record(event_id: &str, collection: &str, id: &str) -> Vec<u8> {
    format!("r/{event_id}/{collection}/{id}").into_bytes()
}

/// Prefix of every record key.
pub const RECORDS: &[u8] = b"r/";

/// Splits any record key into (event id, collection, record id).
pub fn split_any_record(key: &[u8]) -> Option<(&str, &str, &str)> {
    let rest = std::str::from_utf8(key.strip_prefix(RECORDS)?).ok()?;
    let (event_id, rest) = rest.split_once('/')?;
    let (collection, id) = rest.split_once('/')?;
    Some((event_id, collection, id))
}

/// Prefix of the records of one collection of one event.
pub fn collection(event_id: &str, collection: &str) -> Vec<u8> {
    format!("r/{event_id}/{collection}/").into_bytes()
}

/// Prefix of all records of one event.
pub fn event_records(event_id: &str) -> Vec<u8> {
    format!("r/{event_id}/").into_bytes()
}

/// The first key after every key that starts with `prefix` (prefixes here end in `/`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Splits a record key of an event into (collection, record id).
pub fn split_record<'a>(key: &'a [u8], event_prefix: &[u8]) -> Option<(&'a str, &'a str)> {
    let rest = std::str::from_utf8(key.strip_prefix(event_prefix)?).ok()?;
    rest.split_once('/')
}
