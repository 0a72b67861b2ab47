//! Writing an archive: hashing the store's files, then streaming them through parallel gzip
//! into a temp file that the caller publishes.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::manifest::{FileEntry, Manifest};
use super::pgzip::ParallelGz;
use super::{no_progress, Progress, BUF, DB_PREFIX, MANIFEST_ENTRY, MAX_MANIFEST_BYTES};
use crate::backup::error::{Error, Result};
use crate::backup::files::HashWriter;
use crate::untrusted;

/// Where and what an archive was written.
#[derive(Debug, Clone)]
pub struct Written {
    /// Size of the archive in bytes.
    pub size: u64,
    /// SHA-256 of the archive, hex.
    pub sha256: String,
}

/// A file written with write-behind: every few MiB the kernel is asked to start writing what
/// came before, and to finish the range before that. Dirty pages stay bounded, so writing a
/// multi-gigabyte archive never pushes the system into dirty-page throttling, which would
/// stall the WAL writes of requests, and the final fsync has little left to do.
struct WriteBehind {
    file: File,
    written: u64,
    started: u64,
}

const WRITE_BEHIND: u64 = 8 << 20;

impl WriteBehind {
    fn new(file: File) -> Self {
        WriteBehind { file, written: 0, started: 0 }
    }
}

impl Write for WriteBehind {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITE_BEHIND {
            #[cfg(target_os = "linux")]
            // SAFETY: `file` is open; the ranges lie within what was written. Failures are
            // harmless (the final fsync still makes the file durable), so they are ignored.
            unsafe {
                use std::os::fd::AsRawFd;
                let fd = self.file.as_raw_fd();
                let len = (self.written - self.started) as libc::off64_t;
                libc::sync_file_range(fd, self.started as libc::off64_t, len, libc::SYNC_FILE_RANGE_WRITE);
                if self.started >= WRITE_BEHIND {
                    let before = (self.started - WRITE_BEHIND) as libc::off64_t;
                    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
                    libc::sync_file_range(fd, before, WRITE_BEHIND as libc::off64_t, flags);
                }
            }
            self.started = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A reader that hashes what passes through it and reports progress.
struct HashReader<'p, R> {
    inner: R,
    hasher: Sha256,
    progress: Progress<'p>,
}

impl<R: Read> Read for HashReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        (self.progress)(n as u64);
        Ok(n)
    }
}

/// Lists the files of a RocksDB directory (a checkpoint, or a closed store) with their sizes
/// and SHA-256. RocksDB's lock and info-log files are not part of the data and are skipped.
pub fn describe_files(dir: &Path, progress: Progress<'_>) -> Result<Vec<FileEntry>> {
    describe_files_known(dir, progress, None)
}

/// The checksums of table files hashed before, so that a backup hashes only the tables that
/// are new since the last one. A table is known by its name, inode, size and modification
/// time, never by its name and size alone: after a hot restore RocksDB reuses file numbers
/// for other contents (facebook/rocksdb#8020), and those files are new inodes written at
/// other times. Only `*.sst` files are remembered: RocksDB never changes one once written.
#[derive(Debug, Default)]
pub struct Known(std::sync::Mutex<std::collections::HashMap<FileId, String>>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileId {
    name: String,
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl FileId {
    fn of(path: &Path, name: &str) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        if !name.ends_with(".sst") {
            return None;
        }
        let meta = fs::symlink_metadata(path).ok().filter(|m| m.is_file())?;
        Some(FileId {
            name: name.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        })
    }
}

/// [`describe_files`], taking the checksums of unchanged tables from `known` and leaving in
/// it the tables of `dir` only (so it never outgrows one store).
pub fn describe_files_known(
    dir: &Path,
    progress: Progress<'_>,
    known: Option<&Known>,
) -> Result<Vec<FileEntry>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "LOCK" || name.starts_with("LOG") {
            continue;
        }
        let kind = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
        if !kind.is_file() {
            return Err(Error::io(
                entry.path(),
                io::Error::other("unexpected non-file in a store directory"),
            ));
        }
        names.push(name);
    }
    names.sort();
    // Two threads hash in parallel: on a two-core machine that halves the first pass.
    let chunks: Vec<&[String]> = names.chunks(names.len().div_ceil(2).max(1)).collect();
    let results: Vec<Result<Vec<FileEntry>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || chunk.iter().map(|n| describe_file(dir, n, progress, known)).collect())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::damaged("", "hashing panicked"))))
            .collect()
    });
    let mut files = Vec::with_capacity(names.len());
    for r in results {
        files.extend(r?);
    }
    if let Some(known) = known {
        let mut known = known.0.lock().unwrap_or_else(|e| e.into_inner());
        known.retain(|id, _| files.iter().any(|f| f.name == id.name));
    }
    Ok(files)
}

fn describe_file(dir: &Path, name: &str, progress: Progress<'_>, known: Option<&Known>) -> Result<FileEntry> {
    let path = dir.join(name);
    let Some(known) = known else { return hash_file(&path, name, progress) };
    let id = FileId::of(&path, name);
    if let Some(id) = &id {
        if let Some(sha256) = known.0.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            progress(id.size);
            return Ok(FileEntry { name: name.to_owned(), size: id.size, sha256: sha256.clone() });
        }
    }
    let entry = hash_file(&path, name, progress)?;
    // Remembered only when the file is still the one it was before hashing.
    if let Some(id) = id.filter(|id| id.size == entry.size && FileId::of(&path, name).as_ref() == Some(id)) {
        known.0.lock().unwrap_or_else(|e| e.into_inner()).insert(id, entry.sha256.clone());
    }
    Ok(entry)
}

fn hash_file(path: &Path, name: &str, progress: Progress<'_>) -> Result<FileEntry> {
    let mut reader = HashReader {
        inner: untrusted::open_regular(path).map_err(|e| Error::io(path, e))?,
        hasher: Sha256::new(),
        progress,
    };
    let size = io::copy(&mut BufReader::with_capacity(BUF, &mut reader), &mut io::sink())
        .map_err(|e| Error::io(path, e))?;
    Ok(FileEntry { name: name.to_owned(), size, sha256: hex::encode(reader.hasher.finalize()) })
}

/// SHA-256 of a whole file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    Ok(hash_file(path, "", &no_progress)?.sha256)
}

/// Writes the archive of `dir` (whose files `manifest` describes) to `tmp`, fsynced.
pub fn write(
    dir: &Path,
    manifest: &Manifest,
    tmp: &Path,
    level: u32,
    progress: Progress<'_>,
) -> Result<Written> {
    let io_err = |e| Error::io(tmp, e);
    let file = File::options().write(true).create_new(true).open(tmp).map_err(io_err)?;
    let hashing = HashWriter { inner: WriteBehind::new(file), hasher: Sha256::new(), count: 0 };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let gz = ParallelGz::new(hashing, level, threads);
    let mut tar = tar::Builder::new(gz);
    let mtime =
        chrono::DateTime::parse_from_rfc3339(&manifest.created_at).map(|t| t.timestamp()).unwrap_or(0);

    let manifest_bytes = serde_json::to_vec_pretty(manifest).expect("a manifest serialises");
    // An archive that readers would refuse is not written.
    let refused = manifest.check().err().or_else(|| {
        (manifest_bytes.len() as u64 > MAX_MANIFEST_BYTES)
            .then(|| format!("its manifest would be over {MAX_MANIFEST_BYTES} bytes"))
    });
    if let Some(why) = refused {
        let why = format!("the store cannot be archived: {why}");
        return Err(Error::io(tmp, io::Error::other(why)));
    }
    tar.append(&header(MANIFEST_ENTRY, manifest_bytes.len() as u64, mtime), manifest_bytes.as_slice())
        .map_err(io_err)?;
    for entry in &manifest.files {
        let path = dir.join(&entry.name);
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let reader = ProgressReader { inner: file.take(entry.size), progress };
        tar.append(&header(&format!("{DB_PREFIX}{}", entry.name), entry.size, mtime), reader)
            .map_err(io_err)?;
    }
    let gz = tar.into_inner().map_err(io_err)?;
    let hashing = gz.finish().map_err(io_err)?;
    crate::fault::io_point("backup.write").map_err(io_err)?;
    hashing.inner.file.sync_all().map_err(io_err)?;
    Ok(Written { size: hashing.count, sha256: hex::encode(hashing.hasher.finalize()) })
}

struct ProgressReader<'p, R> {
    inner: R,
    progress: Progress<'p>,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

fn header(path: &str, size: u64, mtime: i64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_path(path).expect("archive paths are short and plain");
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(mtime.max(0) as u64);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    header
}
