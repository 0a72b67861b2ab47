//! Stored documents. A document is kept as the JSON bytes that are stored, so reads hand them
//! out without decoding and a change serialises each document once, for the store, the bus
//! message and the response alike.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::parse::Fields;
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
    stamp_tail(&mut out, created_at, updated_at, version);
    Doc(out)
}

/// The server fields that end a document (`,"createdAt":…,"updatedAt":…,"version":…}`),
/// rendered once for all the documents of a write.
#[derive(Debug, Clone)]
pub struct Stamp(Vec<u8>);

impl Stamp {
    /// The stamp of documents created or updated at these times, at this version.
    pub fn new(created_at: &str, updated_at: &str, version: u64) -> Stamp {
        let mut out = Vec::with_capacity(96);
        stamp_tail(&mut out, created_at, updated_at, version);
        Stamp(out)
    }
}

/// Renders a record from its raw fields (see [`render`]).
pub fn render_fields(id: &str, body: &Fields<'_>, stamp: &Stamp) -> Doc {
    let fields = body.0.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum::<usize>();
    let mut out = Vec::with_capacity(16 + id.len() + fields + stamp.0.len());
    out.extend_from_slice(b"{\"id\":");
    if id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        quote(&mut out, id);
    } else {
        write_json(&mut out, id);
    }
    for (key, value) in &body.0 {
        if !SERVER_FIELDS.contains(&key.as_ref()) {
            out.push(b',');
            match key {
                // A key borrowed from the body had no escape there, and serde_json refuses
                // control characters in strings: it is valid JSON string content as it is.
                Cow::Borrowed(key) => quote(&mut out, key),
                Cow::Owned(key) => write_json(&mut out, key),
            }
            out.push(b':');
            out.extend_from_slice(value.get().as_bytes());
        }
    }
    out.extend_from_slice(&stamp.0);
    Doc(out)
}

/// Writes `"text"`, for text that needs no escape.
fn quote(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

fn stamp_tail(out: &mut Vec<u8>, created_at: &str, updated_at: &str, version: u64) {
    out.extend_from_slice(b",\"createdAt\":");
    write_json(out, created_at);
    out.extend_from_slice(b",\"updatedAt\":");
    write_json(out, updated_at);
    out.extend_from_slice(b",\"version\":");
    write_json(out, &version);
    out.push(b'}');
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

/// Largest `version` a stored document may carry: 2^53, the largest integer every JSON client
/// reads exactly, far from overflowing when it is incremented.
pub const MAX_VERSION: u64 = 1 << 53;

/// Checks a document that comes from a backup file before it is stored: what the registry
/// would read back when the document is updated (a JSON object within the parser's nesting
/// limit, within the size cap, whose `version`, if any, is a whole number the registry can
/// increment). Returns why it is refused.
pub fn check_stored(raw: &[u8]) -> std::result::Result<(), String> {
    if raw.len() > super::MAX_DOCUMENT_BYTES {
        return Err(format!(
            "a document of {} bytes is over the {} bytes a document may hold",
            raw.len(),
            super::MAX_DOCUMENT_BYTES
        ));
    }
    let value: Value = serde_json::from_slice(raw).map_err(|e| format!("a document does not parse: {e}"))?;
    let Value::Object(map) = value else {
        return Err("a document is not a JSON object".into());
    };
    match map.get("version") {
        None => Ok(()),
        Some(v) if v.as_u64().is_some_and(|v| v <= MAX_VERSION) => Ok(()),
        Some(_) => Err("a document's version is not a whole number up to 2^53".into()),
    }
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
    use super::super::parse::parse_records;
    use super::super::MAX_BATCH;
    use super::*;
    use serde_json::json;
    use serde_json::value::RawValue;

    #[test]
    fn repeated_keys_keep_their_last_value_in_small_and_large_objects() {
        for keys in [3, 1000] {
            let mut body: Vec<String> = (0..keys).map(|i| format!("\"k{i}\":{i}")).collect();
            body.push("\"k1\":\"last\"".into());
            let raw = format!("{{{}}}", body.join(","));
            let raw: &RawValue = serde_json::from_str(&raw).unwrap();
            let fields = Fields::parse(raw, "a record").unwrap();
            assert_eq!(fields.0.len(), keys, "one entry per key");
            assert_eq!(fields.0[1].0, "k1", "in first-seen order");
            assert_eq!(fields.0[1].1.get(), "\"last\"");
            assert_eq!(fields.0[keys - 1].1.get(), (keys - 1).to_string());
        }
    }

    #[test]
    fn merge_patch_follows_rfc7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn raw_fields_render_like_values() {
        let raw = br#"{"id":"x","name":"n","nested":{"a":[1,2]},"name":"last","version":3}"#;
        let fields = parse_records(raw, false).unwrap().pop().unwrap();
        let doc = render_fields("ID", &fields, &Stamp::new("c", "u", 1));
        assert_eq!(
            std::str::from_utf8(doc.as_bytes()).unwrap(),
            r#"{"id":"ID","name":"last","nested":{"a":[1,2]},"createdAt":"c","updatedAt":"u","version":1}"#
        );
        assert!(matches!(parse_records(b"[1]", true), Err(Error::NotAnObject(_))));
        assert!(matches!(parse_records(b"{}", true), Err(Error::NotAnObject(_))));
        assert!(matches!(parse_records(b"{", false), Err(Error::InvalidJson(_))));
    }

    #[test]
    fn batches_are_read_in_one_pass_with_the_same_verdicts() {
        let rendered = |body: &[u8]| -> Vec<String> {
            let records = parse_records(body, true).unwrap();
            records
                .iter()
                .map(|f| String::from_utf8(render_fields("I", f, &Stamp::new("c", "u", 1)).0).unwrap())
                .collect()
        };
        assert_eq!(
            rendered(br#" [ {"a":1,"b":[{"c":"\u00e9"}]} , {"a\"q":null}, {} ] "#),
            [
                r#"{"id":"I","a":1,"b":[{"c":"\u00e9"}],"createdAt":"c","updatedAt":"u","version":1}"#,
                r#"{"id":"I","a\"q":null,"createdAt":"c","updatedAt":"u","version":1}"#,
                r#"{"id":"I","createdAt":"c","updatedAt":"u","version":1}"#,
            ]
        );
        assert!(rendered(b"[]").is_empty());
        // Every kind of non-object element, nested arrays included, is refused as such...
        for body in
            [&b"[{}, 3]"[..], b"[[{}]]", b"[\"x\"]", b"[null]", b"[true]", b"[-1.5e3]", b"[{}, [1, [2]]]"]
        {
            assert!(matches!(parse_records(body, true), Err(Error::NotAnObject("every record"))), "{body:?}");
        }
        // ...but only once the whole body is known to be JSON.
        for body in [&b"[3, {"[..], b"[{}] x", b"[{\"a\":}]", b"[{}, 3,]", b"", b"  ", b"[\"\xff\"]"] {
            assert!(matches!(parse_records(body, true), Err(Error::InvalidJson(_))), "{body:?}");
        }
        assert!(matches!(parse_records(b"{\"a\":\"\xff\"}", false), Err(Error::InvalidJson(_))));
        // Keys are written as they came when they had no escape, through serde_json when they
        // had one: either way as serde_json would write them.
        let fields = parse_records("{\"é\":1,\"\\u00e9\\n\":2}".as_bytes(), false).unwrap().pop().unwrap();
        let doc = render_fields("a b", &fields, &Stamp::new("c", "u", 1));
        let value: Value = serde_json::from_slice(doc.as_bytes()).unwrap();
        assert_eq!(
            doc.as_bytes(),
            serde_json::to_vec(&value).unwrap(),
            "{}",
            String::from_utf8_lossy(&doc.0)
        );
        assert_eq!(value["é"], 1);
        assert_eq!(value["é\n"], 2);
        assert_eq!(value["id"], "a b");
        assert!(matches!(parse_records(b"3", true), Err(Error::NotAnObject(_))));
        assert!(matches!(parse_records(b"[{}]", false), Err(Error::NotAnObject("the record"))));
        assert!(matches!(parse_records(b" {} x", false), Err(Error::InvalidJson(_))));
        let over = format!("[{}{{}}]", "3,".repeat(MAX_BATCH));
        assert!(matches!(
            parse_records(over.as_bytes(), true),
            Err(Error::BatchTooLarge { len, .. }) if len == MAX_BATCH + 1
        ));
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
