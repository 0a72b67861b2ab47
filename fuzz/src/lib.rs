//! What the fuzz targets share: an allocator that turns an oversized allocation into a
//! crash, and a scratch directory per process.
//!
//! libFuzzer's own `-malloc_limit_mb` needs a sanitizer's allocator, which stable Rust does
//! not have; [`BoundedAlloc`] does the same job from the Rust side. Each target installs it:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: eventvault_fuzz::BoundedAlloc = eventvault_fuzz::BoundedAlloc;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Largest single allocation a target may make: 256 MiB. The readers bound what they take in
/// at 64 MiB (a document, a manifest of 16 MiB, 1 MiB buffers), so anything near this bound
/// is a size taken from the input without a check.
pub const MAX_ALLOCATION: usize = 256 << 20;

/// Largest total of live allocations: 1.5 GiB (libFuzzer's `-rss_limit_mb=2048` is the
/// backstop for memory that does not come through Rust's allocator, such as RocksDB's).
pub const MAX_LIVE: usize = 1536 << 20;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set while a report is being written, so the report's own allocations pass.
    static REPORTING: Cell<bool> = const { Cell::new(false) };
}

/// The system allocator, counting, and aborting (which libFuzzer reports as a crash and saves
/// the input of) on an allocation over [`MAX_ALLOCATION`] or live bytes over [`MAX_LIVE`].
pub struct BoundedAlloc;

impl BoundedAlloc {
    fn check(size: usize) {
        let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        PEAK.fetch_max(live, Ordering::Relaxed);
        if size > MAX_ALLOCATION {
            over_bound(format_args!("an allocation of {size} bytes (bound: {MAX_ALLOCATION})"));
        }
        if live > MAX_LIVE {
            over_bound(format_args!("{live} bytes allocated at once (bound: {MAX_LIVE})"));
        }
    }
}

/// Reports the allocation with a backtrace, then aborts. Allocations made while reporting
/// are let through.
#[cold]
fn over_bound(what: std::fmt::Arguments<'_>) {
    if REPORTING.with(|r| r.replace(true)) {
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "==ALLOCATION BOUND== {what}");
    let _ = writeln!(err, "{}", std::backtrace::Backtrace::force_capture());
    let _ = err.flush();
    std::process::abort();
}

// SAFETY: every call is forwarded to `System` unchanged; the bookkeeping never unwinds.
unsafe impl GlobalAlloc for BoundedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        Self::check(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

/// Most bytes allocated at once so far in this process.
pub fn peak_bytes() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// A scratch directory for this process. `TMPDIR` chooses where: scripts/fuzz points it at a
/// folder of its own on a tmpfs when there is one (the readers fsync every file they write)
/// and removes that folder afterwards, since libFuzzer exits without running destructors.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new().prefix("eventvault-fuzz-").tempdir().expect("a scratch directory")
    })
    .path()
}

/// Writes `data` to `name` in the scratch directory and returns the path.
pub fn input_file(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, data).expect("writing the input file");
    path
}

/// Removes `path` (a file or a directory tree) if it exists.
pub fn remove(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).expect("cleaning the scratch directory"),
        Ok(_) => std::fs::remove_file(path).expect("cleaning the scratch directory"),
        Err(_) => {}
    }
}

/// The file a target reads, made from an input: an input that starts as gzip does (`1f 8b`) is
/// the file itself; any other is what the file holds (a tar stream, JSON), compressed here.
/// Mutations of compressed bytes rarely decompress, let alone into a changed manifest or
/// document; so the corpus holds both forms, and the fuzzer reaches the formats inside the
/// compression as well as the compression itself.
pub fn gzip_file(data: &[u8]) -> Cow<'_, [u8]> {
    if data.starts_with(&[0x1f, 0x8b]) {
        return Cow::Borrowed(data);
    }
    Cow::Owned(gzip(data))
}

/// The archive an input of the `archive` target stands for: as [`gzip_file`], except that an
/// input starting with `TAR\n` is a recipe of the tar stream (see [`tar_recipe`]).
pub fn archive_file(data: &[u8]) -> Cow<'_, [u8]> {
    match data.strip_prefix(b"TAR\n") {
        Some(recipe) => Cow::Owned(gzip(&tar_recipe(recipe))),
        None => gzip_file(data),
    }
}

/// Builds a tar stream from a recipe, so that mutations are not stopped by header checksums
/// and sizes (a changed byte in a header, or a manifest one byte longer, is otherwise just a
/// broken archive). Entries are separated by `\n@`; each starts with a line
/// `PATH [type=C] [size=N] [link=TARGET]`, and the rest is its content:
///
/// ```text
/// TAR
/// @manifest.json
/// {"formatVersion": 1, ...}
/// @db/CURRENT size=16
/// MANIFEST-000005
/// ```
///
/// The header gets the path (its first 100 bytes), the type (`0` when not given), the size
/// (the content's length when not given: a different one makes the stream lie), and a right
/// checksum; the content is padded to 512 bytes and two zero blocks end the stream.
pub fn tar_recipe(recipe: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(recipe.len() * 2 + 1024);
    let body = recipe.strip_prefix(b"@").unwrap_or(recipe);
    for part in split(body, b"\n@") {
        let (line, content) = match part.iter().position(|b| *b == b'\n') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &[][..]),
        };
        let mut words = line.split(|b| *b == b' ');
        let path = words.next().unwrap_or_default();
        let mut header = tar::Header::new_ustar();
        let mut size = content.len() as u64;
        header.set_entry_type(tar::EntryType::Regular);
        for word in words {
            if let Some(t) = word.strip_prefix(b"type=") {
                header.set_entry_type(tar::EntryType::new(t.first().copied().unwrap_or(b'0')));
            } else if let Some(n) = word.strip_prefix(b"size=") {
                size = std::str::from_utf8(n).ok().and_then(|n| n.parse().ok()).unwrap_or(size);
            } else if let Some(target) = word.strip_prefix(b"link=") {
                let link = &mut header.as_old_mut().linkname;
                let n = target.len().min(link.len());
                link[..n].copy_from_slice(&target[..n]);
            }
        }
        let name = &mut header.as_old_mut().name;
        let n = path.len().min(name.len());
        name[..n].copy_from_slice(&path[..n]);
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(content);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn split<'a>(data: &'a [u8], separator: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.windows(separator.len()).position(|w| w == separator) {
            Some(i) => {
                rest = Some(&current[i + separator.len()..]);
                Some(&current[..i])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz =
        flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 2 + 64), flate2::Compression::fast());
    gz.write_all(data).expect("writing to memory");
    gz.finish().expect("writing to memory")
}

/// `FUZZ_VERBOSE=1`: targets print what each input led to (to see what the seeds reach).
pub fn verbose() -> bool {
    static VERBOSE: OnceLock<bool> = OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("FUZZ_VERBOSE").is_some())
}
