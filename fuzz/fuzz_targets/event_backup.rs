//! The event-backup reader: the input is a whole `.json.gz` file, or the JSON inside one (see
//! [`gzip_file`]). It is read three ways: the streaming reader with a visitor that takes
//! everything (restores), the metadata-only reader (listing), and the full verification with a
//! sidecar that matches the input (so the checks after the hash run too). Any error is fine; a
//! panic, a hang or an oversized allocation is a finding.

#![no_main]

use std::time::Duration;

use eventvault::backup::event_backup::{self as event, EventMetadata, Visit};
use eventvault::backup::{catalog, verify_event, BackupConfig, Result};
use eventvault_fuzz::{gzip_file, input_file, scratch, verbose};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

#[global_allocator]
static ALLOC: eventvault_fuzz::BoundedAlloc = eventvault_fuzz::BoundedAlloc;

const NAME: &str = "event_x_backup_1.json.gz";

/// Takes everything, as a restore would, and checks what a restore checks first.
struct TakeAll;

impl Visit for TakeAll {
    fn metadata(&mut self, metadata: &EventMetadata) -> Result<bool> {
        event::check_metadata(NAME, metadata)?;
        Ok(true)
    }

    fn event_document(&mut self, doc: &RawValue) -> Result<()> {
        let _ = event::document_id(doc);
        Ok(())
    }

    fn record(&mut self, _collection: &str, _id: &str, _doc: &RawValue) -> Result<()> {
        Ok(())
    }
}

fn config() -> BackupConfig {
    let dir = scratch();
    BackupConfig {
        storage_dir: dir.to_path_buf(),
        backup_dir: dir.to_path_buf(),
        restore_dir: dir.to_path_buf(),
        auto_backup: false,
        interval: Duration::from_secs(3600),
        max_backups: 10,
        auto_restore: false,
        settle: Duration::from_secs(2),
        compression_level: 1,
        restore_max_bytes: 64 << 20,
        browse_cache_bytes: 0,
        repo: None,
        retention: Default::default(),
        sweep_grace: Duration::from_secs(3600),
        ship: None,
        pitr_window: Duration::from_secs(7 * 86_400),
        webhook: None,
        drill_interval: Duration::ZERO,
    }
}

fuzz_target!(|data: &[u8]| {
    let file = gzip_file(data);
    let path = input_file(NAME, &file);
    let read = event::read(&path, NAME, None, 64 << 20, &mut TakeAll);
    let metadata = event::read_metadata(&path, NAME);
    let sha256 = hex::encode(Sha256::digest(&file));
    input_file(&format!("{NAME}.sha256"), catalog::sidecar_line(&sha256, NAME).as_bytes());
    let verified = verify_event(&config(), NAME, &path);
    if verbose() {
        let id =
            |r: &Result<EventMetadata>| r.as_ref().map(|m| m.event_id.clone()).map_err(|e| e.to_string());
        eprintln!(
            "read: {:?}\nread_metadata: {:?}\nverify_event: {:?}",
            id(&read),
            id(&metadata),
            id(&verified)
        );
    }
});
