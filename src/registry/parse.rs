//! Client documents as they arrive: a request body parsed into the raw fields of one document
//! or of a batch, checked, without building a JSON tree.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{Error, Result, MAX_BATCH};

/// A client document as it arrives: its top-level fields in order, each value kept as the raw
/// JSON it was sent as. Records are rendered from these without building a JSON tree, which
/// is most of the cost of ingesting them. The fields borrow from the request body: keys and
/// values are not copied until rendered.
#[derive(Debug, Default)]
pub struct Fields<'a>(pub(super) Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Fields<'a> {
    /// Parses a JSON object; anything else is [`Error::NotAnObject`] naming `what`.
    pub fn parse(raw: &'a RawValue, what: &'static str) -> Result<Fields<'a>> {
        if !raw.get().trim_start().starts_with('{') {
            return Err(Error::NotAnObject(what));
        }
        serde_json::from_str(raw.get()).map_err(|e| Error::InvalidJson(e.to_string()))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct FieldsVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for FieldsVisitor<'a> {
            type Value = Fields<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Fields<'a>, A::Error> {
                fields_of(map)
            }
        }
        deserializer.deserialize_map(FieldsVisitor(std::marker::PhantomData))
    }
}

/// Objects with more keys than this are read through an index of their keys.
const INDEXED_FROM: usize = 32;

/// Reads an object's fields, each value kept raw.
fn fields_of<'de: 'a, 'a, A: MapAccess<'de>>(mut map: A) -> std::result::Result<Fields<'a>, A::Error> {
    let mut fields: Vec<(Cow<'a, str>, &'a RawValue)> = Vec::with_capacity(map.size_hint().unwrap_or(16));
    // Keys are looked up to keep a repeated one's last value, as a JSON object would. Small
    // objects (nearly all) are searched in place; past a few dozen keys an index takes over,
    // so a request of a million keys costs a million look-ups, not 10^12 comparisons.
    let mut index: Option<HashMap<Cow<'a, str>, usize>> = None;
    while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
        let value: &'de RawValue = map.next_value()?;
        let found = match &index {
            Some(index) => index.get(&key).copied(),
            None => fields.iter().position(|(k, _)| *k == key),
        };
        match found {
            Some(at) => fields[at].1 = value,
            None => {
                if let Some(index) = &mut index {
                    index.insert(key.clone(), fields.len());
                }
                fields.push((key, value));
                if index.is_none() && fields.len() > INDEXED_FROM {
                    index = Some(fields.iter().enumerate().map(|(at, (k, _))| (k.clone(), at)).collect());
                }
            }
        }
    }
    Ok(Fields(fields))
}

/// The records of a batch, read in one pass over the body: each element is parsed straight
/// into its fields (no first pass to validate the whole body, nor a second to split the
/// array). Elements that are not objects are counted, not kept, so that the whole body is
/// still checked for syntax before any of them is reported.
struct Batch<'a> {
    records: Vec<Fields<'a>>,
    len: usize,
    all_objects: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for Batch<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct BatchVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for BatchVisitor<'a> {
            type Value = Batch<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON array of record objects")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Batch<'a>, A::Error> {
                let mut batch = Batch { records: Vec::new(), len: 0, all_objects: true };
                while let Some(Element(fields)) = seq.next_element::<Element<'a>>()? {
                    batch.len += 1;
                    match fields {
                        // Past the limit, or once a bad element was seen, nothing more is kept.
                        Some(fields) if batch.all_objects && batch.len <= MAX_BATCH => {
                            batch.records.push(fields)
                        }
                        Some(_) => {}
                        None => batch.all_objects = false,
                    }
                }
                Ok(batch)
            }
        }
        deserializer.deserialize_seq(BatchVisitor(std::marker::PhantomData))
    }
}

/// An element of a batch: a record's fields, or `None` for any JSON value but an object.
struct Element<'a>(Option<Fields<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Element<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct ElementVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ElementVisitor<'a> {
            type Value = Element<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Element<'a>, A::Error> {
                fields_of(map).map(|fields| Element(Some(fields)))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Element<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Element(None))
            }

            fn visit_bool<E>(self, _: bool) -> std::result::Result<Element<'a>, E> {
                Ok(Element(None))
            }

            fn visit_i64<E>(self, _: i64) -> std::result::Result<Element<'a>, E> {
                Ok(Element(None))
            }

            fn visit_u64<E>(self, _: u64) -> std::result::Result<Element<'a>, E> {
                Ok(Element(None))
            }

            fn visit_f64<E>(self, _: f64) -> std::result::Result<Element<'a>, E> {
                Ok(Element(None))
            }

            fn visit_str<E>(self, _: &str) -> std::result::Result<Element<'a>, E> {
                Ok(Element(None))
            }

            fn visit_unit<E>(self) -> std::result::Result<Element<'a>, E> {
                Ok(Element(None))
            }
        }
        deserializer.deserialize_any(ElementVisitor(std::marker::PhantomData))
    }
}

/// An object key, borrowed from the input unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Parses a request body of records: one object, or (for `_batch`) an array of them. The
/// body is read in one pass. Malformed JSON anywhere is [`Error::InvalidJson`]; then a batch
/// over [`MAX_BATCH`] is [`Error::BatchTooLarge`]; then a value that is not an object (the
/// body, or an element of a batch) is [`Error::NotAnObject`].
pub fn parse_records(body: &[u8], batch: bool) -> Result<Vec<Fields<'_>>> {
    let invalid = |e: serde_json::Error| Error::InvalidJson(e.to_string());
    let (opening, what) =
        if batch { (b'[', "a batch (a JSON array of record objects)") } else { (b'{', "the record") };
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&opening) {
        serde_json::from_slice::<IgnoredAny>(body).map_err(invalid)?;
        return Err(Error::NotAnObject(what));
    }
    // One UTF-8 check of the whole body: parsing from a `str`, serde_json does not check each
    // key and each raw value again (a fifth of the cost of a batch, one call per string).
    let text = std::str::from_utf8(body)
        .map_err(|e| Error::InvalidJson(format!("the request body is not UTF-8: {e}")))?;
    if !batch {
        return Ok(vec![serde_json::from_str::<Fields<'_>>(text).map_err(invalid)?]);
    }
    let batch: Batch<'_> = serde_json::from_str(text).map_err(invalid)?;
    if batch.len > MAX_BATCH {
        return Err(Error::BatchTooLarge { len: batch.len, max: MAX_BATCH });
    }
    if !batch.all_objects {
        return Err(Error::NotAnObject("every record"));
    }
    Ok(batch.records)
}
