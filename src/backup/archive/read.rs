//! Reading archives, as hostile input: the manifest alone ([`read_manifest`]) or every file,
//! checked and unpacked in one pass ([`unpack`]).

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc;

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use super::manifest::{is_plain, FileEntry, Manifest, CURRENT_FORMAT};
use super::{Progress, BUF, DB_PREFIX, MANIFEST_ENTRY, MAX_MANIFEST_BYTES};
use crate::backup::error::{Error, Result};
use crate::backup::files::{open_input, sync_dir, HashWriter};
use crate::untrusted::quote;

/// Bytes of tar padding and trailer accepted after the end-of-archive marker.
const MAX_TRAILER_BYTES: u64 = 1 << 20;
/// What one tar entry adds to its contents at most: a 512-byte header and up to 511 bytes of
/// padding. Archives use plain ustar headers only, so nothing else is read besides contents.
const ENTRY_OVERHEAD: u64 = 1024;
/// Unpacked files waiting for their fsync, each holding a descriptor: a bounded queue keeps
/// the descriptors bounded however many files an archive holds.
const SYNC_QUEUE: usize = 32;

/// How many bytes of the decompressed stream may still be read, headers, padding and trailer
/// included: a small file must not inflate into an unbounded stream whatever its headers say.
#[derive(Debug)]
struct Budget {
    used: Cell<u64>,
    limit: Cell<u64>,
    exceeded: Cell<bool>,
}

impl Budget {
    fn new(limit: u64) -> Rc<Budget> {
        Rc::new(Budget { used: Cell::new(0), limit: Cell::new(limit), exceeded: Cell::new(false) })
    }

    /// From here on, allows `more` bytes past what was read so far.
    fn allow_more(&self, more: u64) {
        self.limit.set(self.used.get().saturating_add(more));
    }
}

/// The decompressed stream, failing once it goes past its [`Budget`].
struct Bounded<R> {
    inner: R,
    budget: Rc<Budget>,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.budget.limit.get().saturating_sub(self.budget.used.get());
        if left == 0 && !buf.is_empty() {
            // One byte more tells a stream that ends exactly at the bound from a longer one.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.budget.exceeded.set(true);
            return Err(io::Error::other("the archive unpacks to more than its bound"));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.budget.used.set(self.budget.used.get() + n as u64);
        Ok(n)
    }
}

/// A tar reader over the decompressed stream of `input`, bounded by `budget`, that returns
/// entries raw: a PAX extended header or a GNU long name is an entry of its own (and refused),
/// not data the tar crate reads into memory and applies behind the reader's back.
fn tar_reader<R: Read>(input: R, budget: &Rc<Budget>) -> tar::Archive<Bounded<MultiGzDecoder<R>>> {
    tar::Archive::new(Bounded { inner: MultiGzDecoder::new(input), budget: budget.clone() })
}

/// The damaged-archive error of a read that failed, naming the bound when that is why.
fn read_error(name: &str, budget: &Budget, what: &str, e: io::Error) -> Error {
    if budget.exceeded.get() {
        Error::damaged(
            name,
            format!(
                "{what}: it unpacks to more than {} bytes, the most its manifest allows",
                budget.limit.get()
            ),
        )
    } else {
        Error::damaged(name, format!("{what}: {e} (truncated or corrupt)"))
    }
}

/// Reads only the manifest of an archive, with the checks of every reader.
pub fn read_manifest(archive: &Path, name: &str) -> Result<Manifest> {
    let file = open_input(archive, name)?;
    let budget = Budget::new(MAX_MANIFEST_BYTES + 2 * ENTRY_OVERHEAD);
    let mut tar = tar_reader(BufReader::new(file), &budget);
    let entries = tar.entries().map_err(|e| read_error(name, &budget, "not a tar.gz archive", e))?;
    let mut entries = entries.raw(true);
    let first = entries.next().ok_or_else(|| Error::damaged(name, "the archive is empty"))?;
    let first = first.map_err(|e| read_error(name, &budget, "unreadable first entry", e))?;
    parse_manifest(first, name, &budget)
}

fn parse_manifest<R: Read>(mut entry: tar::Entry<'_, R>, name: &str, budget: &Budget) -> Result<Manifest> {
    let path = entry.path_bytes();
    if let Some(why) = refused_kind(entry.header().entry_type()) {
        return Err(Error::damaged(name, format!("the first entry {} is {why}", quote(&path))));
    }
    if *path != *MANIFEST_ENTRY.as_bytes() {
        return Err(Error::damaged(
            name,
            format!("the first entry is {}, not {MANIFEST_ENTRY}", quote(&path)),
        ));
    }
    let size = entry.size();
    if size > MAX_MANIFEST_BYTES {
        return Err(Error::damaged(
            name,
            format!("{MANIFEST_ENTRY} is {size} bytes, more than a manifest can be"),
        ));
    }
    let mut raw = Vec::with_capacity(size as usize);
    (&mut entry)
        .take(size)
        .read_to_end(&mut raw)
        .map_err(|e| read_error(name, budget, &format!("reading {MANIFEST_ENTRY}"), e))?;
    // The version first, skipping everything else without building it in memory (a JSON tree
    // costs tens of times its text); then the manifest of that version, straight into its type.
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(rename = "formatVersion")]
        format_version: Option<u64>,
    }
    let version = serde_json::from_slice::<Version>(&raw)
        .map_err(|e| Error::damaged(name, format!("{MANIFEST_ENTRY} is not a JSON object: {e}")))?
        .format_version
        .ok_or_else(|| Error::damaged(name, "the manifest has no formatVersion"))?;
    let manifest: Manifest = match u32::try_from(version) {
        // The one reader so far; a future format adds its branch here.
        Ok(1) => serde_json::from_slice(&raw)
            .map_err(|e| Error::damaged(name, format!("the manifest does not match format 1: {e}")))?,
        _ if version > u64::from(CURRENT_FORMAT) => {
            return Err(Error::NewerFormat {
                name: name.to_owned(),
                found: u32::try_from(version).unwrap_or(u32::MAX),
                supported: CURRENT_FORMAT,
            })
        }
        _ => return Err(Error::damaged(name, format!("unknown formatVersion {version}"))),
    };
    manifest.check().map_err(|reason| Error::damaged(name, reason))?;
    Ok(manifest)
}

/// Why an entry of this type is refused, if it is.
fn refused_kind(kind: tar::EntryType) -> Option<String> {
    let extension = kind.is_pax_local_extensions()
        || kind.is_pax_global_extensions()
        || kind.is_gnu_longname()
        || kind.is_gnu_longlink();
    if extension {
        Some("an extension header (PAX or GNU long name); archives use plain ustar headers".into())
    } else if kind != tar::EntryType::Regular {
        Some(format!("a {kind:?}, not a regular file; only regular files are allowed"))
    } else {
        None
    }
}

/// Limits of an unpack.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes the files may add up to (RESTORE_MAX_BYTES): more is a 422.
    pub max_bytes: u64,
    /// Free space where they are unpacked: more is a full disk (507), not a damaged archive.
    pub disk_free: u64,
}

/// Verifies and unpacks `archive` into the new directory `staging`, in one pass:
/// - the first entry is a manifest of a format this build reads, listing at most
///   [`super::MAX_FILES`] plain, distinct names whose sizes add up to no more than
///   `limits.max_bytes`;
/// - every other entry is a regular file `db/<plain name>` listed in the manifest, of the
///   listed size and SHA-256, under a plain ustar header; links, devices, extension headers
///   (PAX, GNU long names), absolute paths and `..` are refused;
/// - the decompressed stream as a whole, headers included, is no longer than the manifest
///   allows;
/// - the SHA-256 of the whole archive equals `expected_sha256`, when given (the sidecar).
///
/// Nothing is written outside `staging`; on error the caller removes it.
pub fn unpack(
    archive: &Path,
    name: &str,
    staging: &Path,
    expected_sha256: Option<&str>,
    limits: Limits,
    progress: Progress<'_>,
) -> Result<Manifest> {
    let mut file = open_input(archive, name)?;
    // Three threads share the work: one reads and hashes the archive, this one inflates and
    // checks entries, one fsyncs finished files.
    std::thread::scope(|scope| {
        let (chunks, received) = mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
        let reader = scope.spawn(move || {
            let mut hasher = Sha256::new();
            loop {
                let mut buf = vec![0; BUF];
                match file.read(&mut buf) {
                    Ok(0) => return hex::encode(hasher.finalize()),
                    Ok(n) => {
                        buf.truncate(n);
                        hasher.update(&buf);
                        progress(n as u64);
                        if chunks.send(Ok(buf)).is_err() {
                            return String::new();
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = chunks.send(Err(e));
                        return String::new();
                    }
                }
            }
        });
        let (to_sync, syncing) = mpsc::sync_channel::<(PathBuf, File)>(SYNC_QUEUE);
        let syncer = scope.spawn(move || -> Result<()> {
            for (path, file) in syncing {
                file.sync_all().map_err(|e| Error::io(&path, e))?;
            }
            Ok(())
        });
        let checked = unpack_stream(ChannelReader::new(received), name, staging, limits, &to_sync);
        drop(to_sync);
        let synced = syncer.join().unwrap_or_else(|_| Err(Error::damaged(name, "the fsync thread panicked")));
        let actual = reader.join().unwrap_or_default();
        let manifest = checked?;
        synced?;
        if let Some(expected) = expected_sha256 {
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(Error::damaged(name, "its SHA-256 does not match the .sha256 sidecar"));
            }
        }
        sync_dir(staging)?;
        Ok(manifest)
    })
}

/// Reads the chunks the reader thread sends, as one stream.
struct ChannelReader {
    chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(chunks: mpsc::Receiver<io::Result<Vec<u8>>>) -> Self {
        ChannelReader { chunks, current: Vec::new(), pos: 0 }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.chunks.recv() {
                Ok(chunk) => {
                    self.current = chunk?;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The checks of [`unpack`] on the archive's bytes.
fn unpack_stream(
    stream: ChannelReader,
    name: &str,
    staging: &Path,
    limits: Limits,
    to_sync: &mpsc::SyncSender<(PathBuf, File)>,
) -> Result<Manifest> {
    // Until the manifest is read, only its entry may be; then the files it lists.
    let budget = Budget::new(MAX_MANIFEST_BYTES + 2 * ENTRY_OVERHEAD);
    let mut tar = tar_reader(stream, &budget);
    let entries = tar.entries().map_err(|e| read_error(name, &budget, "reading the archive", e))?;
    let mut entries = entries.raw(true);
    let first = entries.next().ok_or_else(|| Error::damaged(name, "the archive is empty"))?;
    let first = first.map_err(|e| read_error(name, &budget, "reading the first entry", e))?;
    let manifest = parse_manifest(first, name, &budget)?;
    let total = manifest.total_size().ok_or_else(|| Error::damaged(name, "its file sizes overflow"))?;
    if total > limits.max_bytes {
        return Err(Error::damaged(
            name,
            format!("it would unpack to {total} bytes, more than the bound of {} bytes", limits.max_bytes),
        ));
    }
    if total > limits.disk_free {
        let short = format!("it would unpack to {total} bytes, {} bytes are free", limits.disk_free);
        return Err(Error::io(staging, io::Error::new(io::ErrorKind::StorageFull, short)));
    }
    // The files, one header and padding each (plus the `db/` folder's), and the trailer.
    let entries_overhead = (manifest.files.len() as u64 + 2) * ENTRY_OVERHEAD;
    budget.allow_more(total.saturating_add(entries_overhead).saturating_add(MAX_TRAILER_BYTES));
    let mut expected: HashMap<&str, &FileEntry> =
        manifest.files.iter().map(|f| (f.name.as_str(), f)).collect();
    fs::create_dir(staging).map_err(|e| Error::io(staging, e))?;

    let mut seen_folder = false;
    for entry in entries {
        let mut entry = entry.map_err(|e| read_error(name, &budget, "reading an entry", e))?;
        let raw_path = entry.path_bytes().into_owned();
        let path = quote(&raw_path);
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::Directory && (raw_path == b"db/" || raw_path == b"db") && !seen_folder {
            seen_folder = true;
            continue;
        }
        if let Some(why) = refused_kind(kind) {
            return Err(Error::damaged(name, format!("entry {path} is {why}")));
        }
        let file_name = std::str::from_utf8(&raw_path)
            .ok()
            .and_then(|p| p.strip_prefix(DB_PREFIX))
            .filter(|n| is_plain(n))
            .ok_or_else(|| Error::damaged(name, format!("entry {path} is not a plain file under db/")))?;
        let listed = expected.remove(file_name).ok_or_else(|| {
            Error::damaged(name, format!("entry {path} is not in the manifest, or appears twice"))
        })?;
        let size = entry.size();
        if size != listed.size {
            return Err(Error::damaged(
                name,
                format!("{path} is {size} bytes, the manifest says {}", listed.size),
            ));
        }
        let target = staging.join(file_name);
        let out =
            File::options().write(true).create_new(true).open(&target).map_err(|e| Error::io(&target, e))?;
        let mut writer =
            HashWriter { inner: BufWriter::with_capacity(BUF, out), hasher: Sha256::new(), count: 0 };
        let copied = io::copy(&mut (&mut entry).take(size), &mut writer).map_err(|e| match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::WriteZero => Error::io(&target, e),
            _ if e.raw_os_error() == Some(libc::ENOSPC) => Error::io(&target, e),
            _ => read_error(name, &budget, &format!("reading {path}"), e),
        })?;
        if copied != size {
            return Err(Error::damaged(
                name,
                format!("{path} is truncated: it ends after {copied} of {size} bytes"),
            ));
        }
        if hex::encode(writer.hasher.finalize_reset()) != listed.sha256 {
            return Err(Error::damaged(name, format!("{path} does not match its checksum in the manifest")));
        }
        let out = writer.inner.into_inner().map_err(|e| Error::io(&target, e.into_error()))?;
        // Waits while the fsync thread has a full queue, so descriptors stay bounded.
        let _ = to_sync.send((target, out));
    }
    if let Some(missing) = expected.keys().next() {
        return Err(Error::damaged(
            name,
            format!("db/{} is listed in the manifest but missing", quote(missing.as_bytes())),
        ));
    }
    // Read to the end, so the gzip trailers are checked and the hash covers every byte.
    let mut rest = tar.into_inner();
    let trailer = io::copy(&mut (&mut rest).take(MAX_TRAILER_BYTES + 1), &mut io::sink())
        .map_err(|e| read_error(name, &budget, "reading the end of the archive", e))?;
    if trailer > MAX_TRAILER_BYTES {
        return Err(Error::damaged(name, "unexpected data after the end of the archive"));
    }
    Ok(manifest)
}
