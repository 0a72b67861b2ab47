//! The archive reader: the input is a whole `.tar.gz` file, or the tar stream inside one (see
//! [`gzip_file`]). Both readers of the server run on it, the manifest-only one (listing) and the verifying unpack (restores), with a 64 MiB
//! bound. Any error is fine; a panic, a hang or an oversized allocation is a finding.

#![no_main]

use eventvault::backup::archive::{self, no_progress, Limits};
use eventvault_fuzz::{gzip_file, input_file, remove, scratch};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: eventvault_fuzz::BoundedAlloc = eventvault_fuzz::BoundedAlloc;

const NAME: &str = "x.tar.gz";

fuzz_target!(|data: &[u8]| {
    let path = input_file(NAME, &gzip_file(data));
    let _ = archive::read_manifest(&path, NAME);
    // `unpack` creates the staging directory itself and refuses one that exists.
    let staging = scratch().join("staging");
    remove(&staging);
    let _ = archive::unpack(
        &path,
        NAME,
        &staging,
        None,
        Limits { max_bytes: 64 << 20, disk_free: u64::MAX },
        &no_progress,
    );
    remove(&staging);
});
