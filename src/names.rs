//! What client-chosen names may look like. Every name that becomes part of a key or a path is
//! checked here, so keys can use `/` as a separator and file names stay plain.

/// Event and record ids: `[A-Za-z0-9_-]{1,64}`.
pub fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Collection names: `[a-z][a-z0-9_-]{0,63}`.
pub fn is_collection(s: &str) -> bool {
    let mut bytes = s.bytes();
    s.len() <= 64
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Collection names that routes take: `/api/events/{id}/backup` writes an event backup.
pub const RESERVED_COLLECTIONS: [&str; 1] = ["backup"];

/// Bus topics: `[a-z][a-z0-9._-]{0,63}`.
pub fn is_topic(s: &str) -> bool {
    let mut bytes = s.bytes();
    s.len() <= 64
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// Message types, consumer names and backup labels: `[A-Za-z0-9._-]{1,max}`.
pub fn is_token(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// What a list of names a request gives holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOf {
    /// Collection names ([`is_collection`]).
    Collections,
    /// Event or record ids ([`is_id`]).
    Ids,
}

/// Checks a list of names a request gives: not empty, each valid, none twice (repeating one
/// would restore, count or purge it twice). `field` names the list in the messages, and
/// `if_empty` says what to do about an empty one.
pub fn check_list(field: &str, list: &[String], of: ListOf, if_empty: &str) -> Result<(), String> {
    if list.is_empty() {
        return Err(format!("{field} is empty: {if_empty}"));
    }
    let (valid, what, rule): (fn(&str) -> bool, &str, &str) = match of {
        ListOf::Collections => (is_collection, "collection name", "names match [a-z][a-z0-9_-]{0,63}"),
        ListOf::Ids => (is_id, "id", "ids match [A-Za-z0-9_-]{1,64}"),
    };
    if let Some(bad) = list.iter().find(|n| !valid(n)) {
        return Err(format!("{field}: invalid {what} {bad:?}: {rule}"));
    }
    match repeated(list) {
        Some(twice) => Err(format!("{field} names {twice:?} twice")),
        None => Ok(()),
    }
}

/// The first name a list holds twice: repeating one would restore, count or purge it twice.
pub fn repeated(list: &[String]) -> Option<&String> {
    list.iter().enumerate().find(|(i, x)| list[..*i].contains(x)).map(|(_, x)| x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_names() {
        assert!(is_collection("registrations"));
        assert!(is_collection("a"));
        assert!(is_collection(&format!("a{}", "b".repeat(63))));
        assert!(!is_collection(&format!("a{}", "b".repeat(64))));
        for bad in ["", "Reg", "1abc", "_x", "a/b", "a.b", "..", "a b", "é"] {
            assert!(!is_collection(bad), "{bad:?} must be refused");
        }
    }

    #[test]
    fn ids_and_topics() {
        assert!(is_id("01JFZ0ABCDEF"));
        assert!(is_id("my-event_2"));
        for bad in ["", "a/b", "..", "a.b", &"x".repeat(65)] {
            assert!(!is_id(bad), "{bad:?} must be refused");
        }
        assert!(is_topic("emails.sent"));
        assert!(!is_topic("Emails"));
        assert!(!is_topic("a/b"));
        assert!(is_token("manual-backup.1", 64));
        assert!(!is_token("a/b", 64));
        assert!(!is_token("", 64));
    }
}
