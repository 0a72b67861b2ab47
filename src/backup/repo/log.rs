//! The shipped bus log: `log/<timeline>/` holds the timeline's descriptor (`timeline.json`)
//! and its segments, `<first seq>-<last seq>.seg` (20 digits each, so names sort by seq).
//!
//! # Segment format (version 1)
//! gzip of: a header line (JSON: format, timeline, first and last seq, their times, counts,
//! the consumer offsets when it was cut), then one JSON value per committed write,
//! `{"commit": [first, last], "messages": [...]}` with each message exactly as the store holds
//! it, then a trailer `#sha256:<hex of everything before it>\n`. With encryption the gzip is
//! an age file (to the recipients and the machine's key, like manifests, so that the machine
//! that ships can read back what it merges).
//!
//! A segment starts and ends at commit boundaries. Small segments are merged into larger
//! ones that cover the same range; the small ones are removed after the merged one is
//! written, so a reader may find both, and takes the one reaching furthest.
//!
//! Every segment is hostile input: bounded in size, checked against its trailer, its header
//! and its name, with sequence numbers that run without gaps.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::{crypt, Error, Repo};
use crate::store::timeline::{self, Timeline};

/// Folder of the shipped log.
pub const LOG: &str = "log";
/// Segment format version.
pub const SEGMENT_FORMAT: u32 = 1;
/// Largest segment, compressed or not, a reader takes. The shipper cuts segments at
/// [`CUT_BYTES`], so only a single write larger than this cannot be shipped.
pub const MAX_SEGMENT_BYTES: u64 = 256 << 20;
/// Where the shipper cuts a segment (at the next commit boundary).
pub const CUT_BYTES: usize = 8 << 20;
/// Name of a timeline's descriptor.
const DESCRIPTOR: &str = "timeline.json";
const TRAILER_TAG: &[u8] = b"#sha256:";
const TRAILER_LEN: usize = 8 + 64 + 1;

/// Where a segment is: its timeline and the seqs it covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentKey {
    /// Its timeline.
    pub timeline: String,
    /// Its first message.
    pub first: u64,
    /// Its last message.
    pub last: u64,
}

impl SegmentKey {
    /// Its key in the repository.
    pub fn key(&self) -> String {
        format!("{LOG}/{}/{:020}-{:020}.seg", self.timeline, self.first, self.last)
    }

    /// The segment a repository key names, if it names one.
    pub fn parse(key: &str) -> Option<SegmentKey> {
        let rest = key.strip_prefix(LOG)?.strip_prefix('/')?;
        let (timeline, name) = rest.split_once('/')?;
        let (first, last) = name.strip_suffix(".seg")?.split_once('-')?;
        let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !timeline::is_id(timeline) || !digits(first) || !digits(last) {
            return None;
        }
        let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
        // A store never reaches 2^53 (what every JSON client reads exactly), so every `+ 1`
        // on a seq read from a name is safe.
        let bounded = last <= crate::backup::archive::manifest::MAX_COUNT;
        (first >= 1 && first <= last && bounded).then(|| SegmentKey {
            timeline: timeline.to_owned(),
            first,
            last,
        })
    }
}

/// The key of a timeline's descriptor.
pub fn descriptor_key(timeline: &str) -> String {
    format!("{LOG}/{timeline}/{DESCRIPTOR}")
}

/// A segment's header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Header {
    /// [`SEGMENT_FORMAT`].
    pub format: u32,
    /// The timeline of its messages.
    pub timeline: String,
    /// Its first message's seq.
    pub first: u64,
    /// Its last message's seq.
    pub last: u64,
    /// Its first message's `ts`.
    pub first_ts: String,
    /// Its last message's `ts`.
    pub last_ts: String,
    /// How many writes it holds.
    pub commits: u64,
    /// The consumer offsets when it was cut.
    #[serde(default)]
    pub consumers: BTreeMap<String, u64>,
    /// The server that shipped it (host and listening address), which a standby names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// One committed write: its messages, exactly as the store holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Its first seq.
    pub first: u64,
    /// Its last seq.
    pub last: u64,
    /// Its messages, in order.
    pub messages: Vec<Vec<u8>>,
}

impl Group {
    /// Bytes its messages take.
    pub fn bytes(&self) -> usize {
        self.messages.iter().map(Vec::len).sum()
    }
}

/// A segment read back.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Its header.
    pub header: Header,
    /// Its writes, in order.
    pub groups: Vec<Group>,
}

#[derive(Serialize)]
struct GroupOut<'a> {
    commit: [u64; 2],
    messages: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupIn<'a> {
    commit: [u64; 2],
    #[serde(borrow)]
    messages: Vec<&'a RawValue>,
}

/// The parts of a message a segment checks.
#[derive(Deserialize)]
struct Probe<'a> {
    seq: u64,
    #[serde(borrow)]
    ts: &'a str,
}

/// The plain text of a segment (before compression).
pub fn encode(header: &Header, groups: &[Group]) -> Result<Vec<u8>, Error> {
    let mut plain = serde_json::to_vec(header).expect("a header serialises");
    plain.push(b'\n');
    for group in groups {
        let messages = group
            .messages
            .iter()
            .map(|m| {
                let text = std::str::from_utf8(m).map_err(|_| not_json(group.first))?;
                serde_json::from_str::<&RawValue>(text).map_err(|_| not_json(group.first))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        serde_json::to_writer(&mut plain, &GroupOut { commit: [group.first, group.last], messages })
            .expect("writing to memory");
        plain.push(b'\n');
    }
    let sum = hex::encode(Sha256::digest(&plain));
    plain.extend_from_slice(TRAILER_TAG);
    plain.extend_from_slice(sum.as_bytes());
    plain.push(b'\n');
    Ok(plain)
}

fn not_json(seq: u64) -> Error {
    Error::Local(format!("the bus message of the write at seq {seq} in the store is not JSON"))
}

/// Reads a segment's plain text, checking everything; `expected` is the key it was read from.
pub fn decode(plain: &[u8], expected: &SegmentKey) -> Result<Segment, Error> {
    let what = expected.key();
    let damaged = |why: String| Error::Damaged(format!("log segment {what}: {why}"));
    if plain.len() < TRAILER_LEN {
        return Err(damaged("it is too short to hold a trailer".into()));
    }
    let (body, trailer) = plain.split_at(plain.len() - TRAILER_LEN);
    let sum = hex::encode(Sha256::digest(body));
    if &trailer[..TRAILER_TAG.len()] != TRAILER_TAG
        || &trailer[TRAILER_TAG.len()..TRAILER_LEN - 1] != sum.as_bytes()
    {
        return Err(damaged("its checksum does not match its content".into()));
    }
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<&RawValue>();
    let header: Header = match values.next() {
        Some(Ok(raw)) => serde_json::from_str(raw.get()).map_err(|e| damaged(format!("its header: {e}")))?,
        _ => return Err(damaged("it has no header".into())),
    };
    if header.format != SEGMENT_FORMAT {
        return Err(damaged(format!(
            "format {} is not one this build reads ({SEGMENT_FORMAT})",
            header.format
        )));
    }
    if header.timeline != expected.timeline || header.first != expected.first || header.last != expected.last
    {
        return Err(damaged("its header does not match its name".into()));
    }
    if header.origin.as_ref().is_some_and(|o| o.len() > 255 || o.chars().any(char::is_control)) {
        return Err(damaged("its origin is not a short, plain string".into()));
    }
    if header.consumers.keys().any(|c| !crate::names::is_token(c, 128)) || header.consumers.len() > 10_000 {
        return Err(damaged("it names invalid consumers".into()));
    }
    let mut groups = Vec::new();
    let mut next = header.first;
    for value in values {
        let raw = value.map_err(|e| damaged(format!("a write is not JSON: {e}")))?;
        let group: GroupIn<'_> =
            serde_json::from_str(raw.get()).map_err(|e| damaged(format!("a write: {e}")))?;
        let [first, last] = group.commit;
        if first != next || last < first || last > header.last {
            return Err(damaged(format!("a write covers {first}-{last} where {next} comes next")));
        }
        if group.messages.len() as u64 != last - first + 1 {
            return Err(damaged(format!("the write {first}-{last} holds {} messages", group.messages.len())));
        }
        let mut messages = Vec::with_capacity(group.messages.len());
        for (i, message) in group.messages.into_iter().enumerate() {
            let probe: Probe<'_> = serde_json::from_str(message.get()).map_err(|e| {
                damaged(format!("message {} of the write {first}-{last}: {e}", first + i as u64))
            })?;
            if probe.seq != first + i as u64 || chrono::DateTime::parse_from_rfc3339(probe.ts).is_err() {
                return Err(damaged(format!(
                    "message {} has seq {} or a bad ts",
                    first + i as u64,
                    probe.seq
                )));
            }
            messages.push(message.get().as_bytes().to_vec());
        }
        groups.push(Group { first, last, messages });
        next = last + 1;
    }
    if next != header.last + 1 {
        return Err(damaged(format!("it ends at {} but its header says {}", next - 1, header.last)));
    }
    if groups.len() as u64 != header.commits {
        return Err(damaged("its header counts another number of writes".into()));
    }
    Ok(Segment { header, groups })
}

/// What `log/` holds.
#[derive(Debug, Default, Clone)]
pub struct LogListing {
    /// Every segment, with its stored size and when it was written.
    pub segments: Vec<(SegmentKey, u64, chrono::DateTime<chrono::Utc>)>,
    /// Timelines with a descriptor.
    pub timelines: Vec<String>,
}

impl LogListing {
    /// The segments of one timeline, by first seq.
    pub fn of(&self, timeline: &str) -> Vec<&SegmentKey> {
        let mut found: Vec<&SegmentKey> =
            self.segments.iter().map(|(k, _, _)| k).filter(|k| k.timeline == timeline).collect();
        found.sort();
        found
    }

    /// The highest seq shipped on `timeline`.
    pub fn shipped(&self, timeline: &str) -> Option<u64> {
        self.of(timeline).iter().map(|k| k.last).max()
    }

    /// The segments of `timeline` that hold seq `next`, the one reaching furthest first.
    pub fn holding(&self, timeline: &str, next: u64) -> Vec<SegmentKey> {
        let mut found: Vec<SegmentKey> =
            self.of(timeline).into_iter().filter(|k| k.first <= next && k.last >= next).cloned().collect();
        found.sort_by_key(|k| std::cmp::Reverse(k.last));
        found
    }

    /// Whether `timeline` has a segment starting after `next` (so nothing holding `next` is a
    /// gap, not the end of the log).
    pub fn goes_on_after(&self, timeline: &str, next: u64) -> bool {
        self.of(timeline).iter().any(|k| k.first > next)
    }
}

/// A backup, as log retention sees it.
#[derive(Debug, Clone)]
pub struct BackupPoint {
    /// Its id.
    pub id: String,
    /// Its timeline (`None` for a backup older than timelines).
    pub timeline: Option<String>,
    /// Its lastSeq.
    pub last_seq: u64,
    /// When it was taken.
    pub created: chrono::DateTime<chrono::Utc>,
}

/// What restoring any moment since `window_start` needs, on every timeline still written to
/// since: the backups a restore starts from (the newest on each history taken at or before
/// the window's start), and so the segments that are not needed: those below that backup,
/// those of timelines nobody wrote to since (unless another's history passes through them),
/// and small ones a merged segment covers. Segments of a timeline whose descriptor cannot be
/// read are all kept.
pub fn log_retention(
    listing: &LogListing,
    timelines: &std::collections::HashMap<String, Timeline>,
    backups: &[BackupPoint],
    window_start: chrono::DateTime<chrono::Utc>,
) -> (std::collections::BTreeSet<String>, Vec<SegmentKey>) {
    use std::collections::{BTreeSet, HashMap};
    let mut bases = BTreeSet::new();
    // Needed seq ranges, by timeline (inclusive; `u64::MAX` for open-ended).
    let mut needed: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    let started = |t: &Timeline| {
        chrono::DateTime::parse_from_rfc3339(&t.started_at).ok().map(|d| d.with_timezone(&chrono::Utc))
    };
    // When each timeline was last written to: its newest segment, or when it began.
    let mut last_written: HashMap<&str, chrono::DateTime<chrono::Utc>> = HashMap::new();
    for timeline in timelines.values() {
        if let Some(at) = started(timeline) {
            last_written.insert(timeline.id.as_str(), at);
        }
    }
    for (key, _, modified) in &listing.segments {
        let at = last_written.entry(key.timeline.as_str()).or_insert(*modified);
        *at = (*at).max(*modified);
    }
    for (id, written) in &last_written {
        let Some(timeline) = timelines.get(*id) else {
            needed.entry(id.to_string()).or_default().push((0, u64::MAX));
            continue;
        };
        // A timeline another one replaced before the window began holds no moment of the
        // window; one that is merely idle holds them all (its last state).
        let replaced = timelines
            .values()
            .filter_map(started)
            .filter(|s| s > written)
            .min()
            .is_some_and(|s| s < window_start);
        if replaced {
            continue;
        }
        let base = backups
            .iter()
            .filter(|b| b.created <= window_start)
            .filter(|b| b.timeline.as_deref().is_some_and(|t| timeline.holds(t, b.last_seq)))
            .max_by_key(|b| (b.last_seq, b.created));
        let (mut from, base_timeline) = match base {
            Some(b) => {
                bases.insert(b.id.clone());
                (b.last_seq + 1, b.timeline.clone())
            }
            None => (0, None),
        };
        let mut reached = base_timeline.is_none();
        for fork in &timeline.history {
            if Some(&fork.timeline) == base_timeline.as_ref() {
                reached = true;
            }
            if reached && fork.end_seq >= from {
                needed.entry(fork.timeline.clone()).or_default().push((from, fork.end_seq));
                from = fork.end_seq + 1;
            }
        }
        needed.entry(id.to_string()).or_default().push((from, u64::MAX));
    }
    let mut removable = Vec::new();
    for (key, _, _) in &listing.segments {
        let overlaps = needed
            .get(&key.timeline)
            .is_some_and(|ranges| ranges.iter().any(|(from, to)| key.first <= *to && key.last >= *from));
        let covered = listing.segments.iter().any(|(other, _, _)| {
            other != key
                && other.timeline == key.timeline
                && other.first <= key.first
                && other.last >= key.last
        });
        if !overlaps || covered {
            removable.push(key.clone());
        }
    }
    (bases, removable)
}

impl Repo {
    /// Lists `log/`.
    pub fn log_listing(&self) -> Result<LogListing, Error> {
        let mut listing = LogListing::default();
        for object in self.target().list(LOG)? {
            if let Some(key) = SegmentKey::parse(&object.key) {
                listing.segments.push((key, object.size, object.modified));
            } else if let Some(t) = object
                .key
                .strip_prefix(&format!("{LOG}/"))
                .and_then(|r| r.strip_suffix(&format!("/{DESCRIPTOR}")))
                .filter(|t| timeline::is_id(t))
            {
                listing.timelines.push(t.to_owned());
            }
        }
        listing.segments.sort();
        Ok(listing)
    }

    /// The segment holding seq `next` of `timeline` that reaches furthest and reads back
    /// whole: a damaged one (a file put there, a merge cut short) is passed over for the next.
    /// `None` when no segment holds `next`; the damage when every one that does is damaged.
    pub fn segment_at(
        &self,
        listing: &LogListing,
        timeline: &str,
        next: u64,
    ) -> Result<Option<Segment>, Error> {
        let mut damage = None;
        for key in listing.holding(timeline, next) {
            match self.segment(&key) {
                Ok(segment) => return Ok(Some(segment)),
                Err(e @ (Error::Damaged(_) | Error::Missing(_))) => {
                    tracing::warn!(error = %e, "a log segment is passed over");
                    damage = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        damage.map_or(Ok(None), Err)
    }

    /// Encrypts like a manifest. The machine's key is made as a backup makes it, adopting
    /// the name key of the backups it can read: shipping often writes before the first backup
    /// of a new machine, whose deduplication depends on it.
    fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, Error> {
        self.crypt().name_key(|| self.adoptable_name_key())?;
        self.crypt().seal_manifest(plain)
    }

    /// Writes a segment; returns the bytes stored.
    pub fn put_segment(&self, header: &Header, groups: &[Group]) -> Result<u64, Error> {
        let plain = encode(header, groups)?;
        let mut gz =
            flate2::write::GzEncoder::new(Vec::with_capacity(plain.len() / 4), flate2::Compression::fast());
        gz.write_all(&plain).map_err(|e| Error::Local(e.to_string()))?;
        let packed = gz.finish().map_err(|e| Error::Local(e.to_string()))?;
        let stored = if self.crypt().encrypting() { self.seal(&packed)? } else { packed };
        let key =
            SegmentKey { timeline: header.timeline.clone(), first: header.first, last: header.last }.key();
        let size = stored.len() as u64;
        let mut writer = self.target().writer(&key);
        writer
            .write_all(&stored)
            .map_err(|e| super::error::from_io(e).unwrap_or_else(|e| Error::Local(e.to_string())))?;
        writer.finish()?;
        self.target().sync(&key)?;
        Ok(size)
    }

    /// Reads a segment back, checked.
    pub fn segment(&self, key: &SegmentKey) -> Result<Segment, Error> {
        let what = key.key();
        let raw = self.target().get(&what, MAX_SEGMENT_BYTES)?;
        let packed: Box<dyn Read> = if crypt::is_sealed(&raw) {
            self.crypt().open_sealed(std::io::Cursor::new(raw), &format!("log segment {what}"))?
        } else {
            Box::new(std::io::Cursor::new(raw))
        };
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(packed).take(MAX_SEGMENT_BYTES + 1).read_to_end(&mut plain).map_err(
            |e| match super::error::from_io(e) {
                Ok(e) => e,
                Err(e) => Error::Damaged(format!("log segment {what}: {e}")),
            },
        )?;
        if plain.len() as u64 > MAX_SEGMENT_BYTES {
            return Err(Error::Damaged(format!(
                "log segment {what} unpacks to more than {MAX_SEGMENT_BYTES} bytes"
            )));
        }
        decode(&plain, key)
    }

    /// Writes a timeline's descriptor (once, before its first segment).
    pub fn put_timeline(&self, timeline: &Timeline) -> Result<(), Error> {
        let plain = serde_json::to_vec_pretty(timeline).expect("a timeline serialises");
        let stored = if self.crypt().encrypting() { self.seal(&plain)? } else { plain };
        let key = descriptor_key(&timeline.id);
        self.target().put(&key, stored)?;
        self.target().sync(&key)
    }

    /// Reads a timeline's descriptor, checked.
    pub fn timeline(&self, id: &str) -> Result<Timeline, Error> {
        let key = descriptor_key(id);
        let raw = self.target().get(&key, 1 << 20)?;
        let plain = if crypt::is_sealed(&raw) {
            let mut plain = Vec::new();
            self.crypt()
                .open_sealed(std::io::Cursor::new(raw), &key)?
                .take(1 << 20)
                .read_to_end(&mut plain)
                .map_err(|e| crypt::read_error(&key, e))?;
            plain
        } else {
            raw
        };
        let timeline = Timeline::parse(&plain).map_err(|e| Error::Damaged(format!("{key}: {e}")))?;
        if timeline.id != id {
            return Err(Error::Damaged(format!("{key} describes timeline {}", timeline.id)));
        }
        Ok(timeline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64) -> Vec<u8> {
        format!(
            r#"{{"seq":{seq},"ts":"2026-11-22T10:00:00.000Z","topic":"t","type":"k","data":{{"n":{seq}}}}}"#
        )
        .into_bytes()
    }

    fn sample() -> (Header, Vec<Group>, SegmentKey) {
        let timeline = "01KAB3NDEKTSV4RRFFQ69G5FAV".to_owned();
        let groups = vec![
            Group { first: 5, last: 5, messages: vec![message(5)] },
            Group { first: 6, last: 8, messages: (6..=8).map(message).collect() },
        ];
        let header = Header {
            format: SEGMENT_FORMAT,
            timeline: timeline.clone(),
            first: 5,
            last: 8,
            first_ts: "2026-11-22T10:00:00.000Z".into(),
            last_ts: "2026-11-22T10:00:00.000Z".into(),
            commits: 2,
            consumers: BTreeMap::from([("mail".to_owned(), 6)]),
            origin: Some("primary (127.0.0.1:5050)".into()),
        };
        (header, groups, SegmentKey { timeline, first: 5, last: 8 })
    }

    #[test]
    fn a_segment_reads_back_and_its_name_round_trips() {
        let (header, groups, key) = sample();
        let plain = encode(&header, &groups).unwrap();
        let segment = decode(&plain, &key).unwrap();
        assert_eq!(segment.header, header);
        assert_eq!(segment.groups, groups);
        assert_eq!(SegmentKey::parse(&key.key()), Some(key));
        for bad in
            ["log/x/00000000000000000001-00000000000000000002.seg", "log/01KAB3NDEKTSV4RRFFQ69G5FAV/1-2.seg"]
        {
            assert_eq!(SegmentKey::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn damaged_or_lying_segments_are_refused() {
        let (header, groups, key) = sample();
        let plain = encode(&header, &groups).unwrap();
        // A flipped byte, a cut, another name, a gap, a miscount: each refused.
        let mut flipped = plain.clone();
        flipped[40] ^= 1;
        assert!(decode(&flipped, &key).is_err());
        assert!(decode(&plain[..plain.len() - 5], &key).is_err());
        assert!(decode(&plain, &SegmentKey { last: 9, ..key.clone() }).is_err());
        let gap =
            vec![groups[0].clone(), Group { first: 7, last: 8, messages: (7..=8).map(message).collect() }];
        assert!(decode(&encode(&header, &gap).unwrap(), &key).is_err());
        let wrong_seq = vec![
            groups[0].clone(),
            Group { first: 6, last: 8, messages: vec![message(6), message(6), message(8)] },
        ];
        assert!(decode(&encode(&header, &wrong_seq).unwrap(), &key).is_err());
        assert!(decode(&encode(&Header { commits: 3, ..header.clone() }, &groups).unwrap(), &key).is_err());
        assert!(decode(b"", &key).is_err());
    }

    #[test]
    fn log_retention_keeps_what_the_window_needs() {
        use chrono::{Duration, Utc};
        let now = Utc::now();
        let old = now - Duration::days(10);
        let mut first = Timeline::first(timeline::Reason::Created, 0);
        first.started_at = (old - Duration::days(1)).to_rfc3339();
        // A restore at seq 20 branched `second` from `first`; `first` was not written since.
        let second = first.branch(timeline::Reason::Restore, 20);
        let seg = |t: &Timeline, first, last, at| (SegmentKey { timeline: t.id.clone(), first, last }, 1, at);
        let listing = LogListing {
            segments: vec![
                seg(&first, 1, 10, old),
                seg(&first, 11, 20, old),
                seg(&first, 21, 30, old),
                seg(&second, 21, 25, now),
                seg(&second, 26, 40, now),
                seg(&second, 26, 30, now),
            ],
            timelines: vec![first.id.clone(), second.id.clone()],
        };
        let timelines = [(first.id.clone(), first.clone()), (second.id.clone(), second.clone())].into();
        let point = |id: &str, t: &Timeline, last_seq, created| BackupPoint {
            id: id.into(),
            timeline: Some(t.id.clone()),
            last_seq,
            created,
        };
        let backups = vec![
            point("a", &first, 5, old - Duration::days(1)),
            point("b", &first, 12, old),
            point("c", &second, 30, now),
        ];
        let (bases, removable) = log_retention(&listing, &timelines, &backups, now - Duration::days(7));
        // The newest backup of either history before the window is b (first, at 12): first is
        // needed from 13 on (it was live until second began, within the window, so its last
        // state is a moment of the window), second from 21; first 1-10 and the covered 26-30
        // are not.
        assert_eq!(bases.into_iter().collect::<Vec<_>>(), vec!["b".to_owned()]);
        let removed: Vec<(bool, u64, u64)> =
            removable.iter().map(|k| (k.timeline == first.id, k.first, k.last)).collect();
        assert_eq!(removed, vec![(true, 1, 10), (false, 26, 30)]);
        // Had second begun before the window, first's tail after the fork would hold no moment
        // of the window.
        let mut early = second.clone();
        early.started_at = (now - Duration::days(8)).to_rfc3339();
        let timelines = [(first.id.clone(), first.clone()), (second.id.clone(), early)].into();
        let (_, removable) = log_retention(&listing, &timelines, &backups, now - Duration::days(7));
        let removed: Vec<(bool, u64, u64)> =
            removable.iter().map(|k| (k.timeline == first.id, k.first, k.last)).collect();
        assert_eq!(removed, vec![(true, 1, 10), (true, 21, 30), (false, 26, 30)]);
        // Without a backup old enough, everything of the history is kept.
        let (bases, removable) = log_retention(&listing, &timelines, &backups[2..], now - Duration::days(7));
        assert!(bases.is_empty());
        let removed: Vec<(u64, u64)> = removable.iter().map(|k| (k.first, k.last)).collect();
        assert_eq!(removed, vec![(21, 30), (26, 30)]);
    }

    #[test]
    fn a_reader_prefers_merged_segments_and_tells_a_gap_from_the_end() {
        let t = "01KAB3NDEKTSV4RRFFQ69G5FAV";
        let at = chrono::Utc::now();
        let seg = |first, last| (SegmentKey { timeline: t.into(), first, last }, 1, at);
        let listing = LogListing {
            segments: vec![seg(1, 3), seg(4, 6), seg(1, 6), seg(7, 9), seg(11, 12)],
            timelines: vec![],
        };
        let holding = |next| listing.holding(t, next).iter().map(|k| (k.first, k.last)).collect::<Vec<_>>();
        assert_eq!(holding(2), vec![(1, 6), (1, 3)]);
        assert_eq!(holding(7), vec![(7, 9)]);
        // Nothing holds 10, and 11-12 comes after it: a gap; nothing after 13: the end.
        assert!(holding(10).is_empty() && listing.goes_on_after(t, 10));
        assert!(holding(13).is_empty() && !listing.goes_on_after(t, 13));
        assert_eq!(listing.shipped(t), Some(12));
    }
}
