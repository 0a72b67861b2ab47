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
    let mut gz =
        flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 2 + 64), flate2::Compression::fast());
    gz.write_all(data).expect("writing to memory");
    Cow::Owned(gz.finish().expect("writing to memory"))
}
