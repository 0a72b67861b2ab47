//! Store format migrations: an ordered list of steps, step N taking a store from format
//! `BASE_FORMAT + N` to the next one, run at startup before the store opens for writing.
//!
//! The caller takes a `pre-migration` backup first. The steps then run on a copy of the store
//! (hard links to the immutable table files, copies of the rest) in a staging directory, and
//! the copy replaces `db/` through the same marker-protected swap as a restore. A failing step
//! leaves the live store exactly as it was; a crash at any point is finished or rolled back at
//! the next startup.

use std::fs;
use std::path::{Path, PathBuf};

use rocksdb::{WriteBatch, WriteOptions, DB};

use super::{cf, check_existing, db_path, open_db, swap, Cf, Error, Result, StoreConfig, FORMAT_KEY};

/// Format of the first eventvault store; a store without migrations is at this format.
pub const BASE_FORMAT: u32 = 1;

/// One migration step.
pub struct Step {
    /// What it does, for logs and errors.
    pub name: &'static str,
    /// Adds the step's changes to the batch, which also moves the format version on, so a
    /// step lands completely or not at all.
    pub run: fn(&DB, &mut WriteBatch) -> Result<()>,
}

/// The steps of this build, in order. Format 1 is the first format, so release builds have
/// none yet; a test build can add one (see [`test_step`]).
pub fn steps() -> Vec<Step> {
    #[allow(unused_mut)]
    let mut steps: Vec<Step> = Vec::new();
    #[cfg(feature = "fault-injection")]
    steps.extend(test_step());
    steps
}

/// The format new stores are written with and migrations lead to.
pub fn target_format() -> u32 {
    BASE_FORMAT + steps().len() as u32
}

/// A store that needs migrating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Its format.
    pub from: u32,
    /// The format this build writes.
    pub to: u32,
}

/// Whether the store in `storage_dir` is at an older format than this build writes.
pub fn pending(storage_dir: &Path) -> Result<Option<Pending>> {
    let path = db_path(storage_dir);
    if !path.join("CURRENT").exists() {
        return Ok(None);
    }
    let found = check_existing(&path)?.unwrap_or_else(target_format);
    let to = target_format();
    Ok((found < to).then_some(Pending { from: found, to }))
}

/// Runs the pending steps on a copy of the store and swaps it in.
pub fn run(storage_dir: &Path, config: &StoreConfig, pending: Pending) -> Result<()> {
    let live = db_path(storage_dir);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let staging = storage_dir.join(format!("{}migrate-{nanos}", swap::STAGING_PREFIX));
    let result = (|| {
        copy_store(&live, &staging)?;
        let db = open_db(&staging, config)?;
        let steps = steps();
        for (i, step) in steps.iter().enumerate() {
            let from = BASE_FORMAT + i as u32;
            if from < pending.from {
                continue;
            }
            tracing::info!(step = step.name, from, to = from + 1, "running a store migration step");
            let mut batch = WriteBatch::default();
            (step.run)(&db, &mut batch).map_err(|e| migration_error(step.name, from, e))?;
            batch.put_cf(cf(&db, Cf::Meta), FORMAT_KEY, (from + 1).to_string());
            let mut opts = WriteOptions::default();
            opts.set_sync(true);
            db.write_opt(batch, &opts)?;
        }
        let last_seq = super::load_write_state(&db)?.last_seq;
        let next = super::timeline::next(&db, super::timeline::Reason::Migration, last_seq)?;
        super::timeline::write(&db, &next)?;
        db.flush()?;
        drop(db);
        swap::swap_closed(storage_dir, &staging)
    })();
    if staging.exists() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

fn migration_error(step: &str, from: u32, e: Error) -> Error {
    Error::Io {
        path: PathBuf::from(format!("migration step {step:?} (format {from} to {})", from + 1)),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Copies a closed store: table and blob files are immutable, so they are hard-linked.
fn copy_store(from: &Path, to: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    fs::create_dir_all(to).map_err(io(to))?;
    for entry in fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let name = entry.file_name();
        let (src, dst) = (entry.path(), to.join(&name));
        if name == "LOCK" || !entry.file_type().map_err(io(&src))?.is_file() {
            continue;
        }
        let immutable = src.extension().is_some_and(|e| e == "sst" || e == "blob");
        if !(immutable && fs::hard_link(&src, &dst).is_ok()) {
            fs::copy(&src, &dst).map_err(io(&src))?;
        }
    }
    Ok(())
}

/// A real step for tests, enabled by `EVENTVAULT_TEST_MIGRATION=ok|fail` (read by
/// [`crate::fault::test_migration`]) in builds with the `fault-injection` feature: it adds
/// `"schemaVersion": 2` to every event document; `fail` makes it fail after changing half of
/// them.
#[cfg(feature = "fault-injection")]
fn test_step() -> Option<Step> {
    fn add_schema_field(db: &DB, batch: &mut WriteBatch) -> Result<()> {
        let fail = crate::fault::test_migration() == Some("fail");
        let registry = cf(db, Cf::Registry);
        type Pair = (Box<[u8]>, Box<[u8]>);
        let events: Vec<Pair> = db
            .prefix_iterator_cf(registry, b"e/")
            .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.starts_with(b"e/")))
            .collect::<std::result::Result<_, _>>()?;
        for (i, (key, value)) in events.iter().enumerate() {
            if fail && i >= events.len() / 2 {
                return Err(crate::fault::Injected("migration step add-schema-field").into());
            }
            let Some(body) = value.strip_suffix(b"}") else { continue };
            let mut doc = body.to_vec();
            doc.extend_from_slice(b",\"schemaVersion\":2}");
            if fail {
                // Written straight into the copy, so the test shows the live store is spared.
                db.put_cf(registry, key, doc)?;
            } else {
                batch.put_cf(registry, key, doc);
            }
        }
        if fail {
            return Err(crate::fault::Injected("migration step add-schema-field").into());
        }
        Ok(())
    }
    match crate::fault::test_migration() {
        Some("ok" | "fail") => Some(Step { name: "add-schema-field", run: add_schema_field }),
        _ => None,
    }
}
