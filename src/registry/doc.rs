//! Stored documents. A document is kept as the JSON bytes that are stored, so reads hand them
//! out without decoding and a change serialises each document once, for the store, the bus
//! message and the response alike.

use serde_json::{Map, Value};

use super::{Error, Result, SERVER_FIELDS};

/// A document's JSON, exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc(pub Vec<u8>);

impl Doc {
    /// Decodes the document.
    pub fn to_value(&self) -> Result<Value> {
        decode(&self.0)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Renders a document: the id first, the client's fields in their order, then the server's.
/// Client values for server fields are dropped.
pub fn render(id: &str, body: &Map<String, Value>, created_at: &str, updated_at: &str, version: u64) -> Doc {
    let mut out = Vec::with_capacity(128 + body.len() * 24);
    out.extend_from_slice(b"{\"id\":");
    write_json(&mut out, id);
    for (key, value) in body {
        if !SERVER_FIELDS.contains(&key.as_str()) {
            out.push(b',');
            write_json(&mut out, key);
            out.push(b':');
            write_json(&mut out, value);
        }
    }
    out.extend_from_slice(b",\"createdAt\":");
    write_json(&mut out, created_at);
    out.extend_from_slice(b",\"updatedAt\":");
    write_json(&mut out, updated_at);
    out.extend_from_slice(b",\"version\":");
    write_json(&mut out, &version);
    out.push(b'}');
    Doc(out)
}

/// Serialises into a byte buffer, which cannot fail for these types.
pub fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(out, value).expect("writing JSON to memory cannot fail");
}

/// Decodes stored JSON.
pub fn decode(raw: &[u8]) -> Result<Value> {
    serde_json::from_slice(raw).map_err(|e| {
        Error::Store(crate::store::Error::Corrupt { key: "registry document".into(), reason: e.to_string() })
    })
}

/// The object inside a JSON value, or the error naming what had to be one.
pub fn into_object(value: Value, what: &'static str) -> Result<Map<String, Value>> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(Error::NotAnObject(what)),
    }
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else { return };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(&key);
        } else {
            merge_patch(map.entry(key).or_insert(Value::Null), value);
        }
    }
}

/// Writes `[a,b,…]` of documents into `out`.
pub fn write_array(out: &mut Vec<u8>, docs: &[Doc]) {
    out.push(b'[');
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(doc.as_bytes());
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn render_orders_fields_and_ignores_client_server_fields() {
        let body = into_object(json!({"id": "x", "name": "n", "version": 99, "q": "a\"b"}), "t").unwrap();
        let doc = render("ID", &body, "c", "u", 1);
        assert_eq!(
            std::str::from_utf8(doc.as_bytes()).unwrap(),
            r#"{"id":"ID","name":"n","q":"a\"b","createdAt":"c","updatedAt":"u","version":1}"#
        );
        assert_eq!(doc.to_value().unwrap()["q"], "a\"b");
    }
}
