//! The archive format: a tar.gz whose first entry is `manifest.json`, followed by the store's
//! files under `db/`. Writing streams ([`write`]); reading is hostile-input code ([`read`]);
//! [`verify`] unpacks and checks an archive against the store it holds.
//!
//! The gzip stream may consist of several members (readers use a multi-member decoder), so
//! writers are free to compress parts independently ([`pgzip`]); `gzip -t` and `tar -xzf`
//! read either.

pub mod manifest;
pub mod pgzip;
pub mod read;
pub mod verify;
pub mod write;

pub use manifest::{Counts, FileEntry, Manifest, Trigger, CURRENT_FORMAT, MAX_FILES};
pub use read::{read_manifest, unpack, Limits};
pub use verify::{verify, verify_into, Verified};
pub use write::{describe_files, describe_files_known, write, Known, Written};

/// Name of the manifest entry.
pub const MANIFEST_ENTRY: &str = "manifest.json";
/// Directory of the store's files inside an archive.
const DB_PREFIX: &str = "db/";
/// Largest manifest accepted (and written): 10,000 files take about 1.3 MiB.
const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// I/O buffer size: large buffers keep syscalls few when streaming gigabytes.
const BUF: usize = 1 << 20;

/// Called with the number of bytes just processed.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// No progress reporting.
pub fn no_progress(_: u64) {}
