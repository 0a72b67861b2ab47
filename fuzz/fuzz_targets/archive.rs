//! The archive reader: the input is a whole `.tar.gz` file, the tar stream inside one, or a
//! recipe of that stream (see [`archive_file`]). Both readers of the server run on it: the
//! manifest-only one (listing) and the verifying unpack (restores), with a 64 MiB bound. Any
//! error is fine; a panic, a hang or an oversized allocation is a finding.

#![no_main]

use eventvault::backup::archive::{self, no_progress, Limits};
use eventvault_fuzz::{archive_file, input_file, remove, scratch, verbose};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: eventvault_fuzz::BoundedAlloc = eventvault_fuzz::BoundedAlloc;

const NAME: &str = "x.tar.gz";

fuzz_target!(|data: &[u8]| {
    let path = input_file(NAME, &archive_file(data));
    let manifest = archive::read_manifest(&path, NAME);
    // `unpack` creates the staging directory itself and refuses one that exists.
    let staging = scratch().join("staging");
    remove(&staging);
    let unpacked = archive::unpack(
        &path,
        NAME,
        &staging,
        None,
        Limits { max_bytes: 64 << 20, disk_free: u64::MAX },
        &no_progress,
    );
    if verbose() {
        eprintln!(
            "read_manifest: {:?}\nunpack: {:?}",
            manifest.map(|m| m.name),
            unpacked.map(|m| m.files.len())
        );
    }
    remove(&staging);
});
