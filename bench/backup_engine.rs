//! B7's peer: RocksDB's own `BackupEngine` backing up a stopped eventvault store. It opens the
//! store's database with all its column families (compactions off and no flush at the open, so
//! the open writes no table file), times one `create_new_backup_flush` into `<backup_dir>` (a second run into the
//! same folder is incremental: it copies only the table files the earlier backups lack), and
//! prints `{"seconds", "bytes", "files", "openSeconds", "backups"}`: the backup's wall time,
//! the growth of the backup folder in bytes and in files, the open (not counted) and the
//! backups the folder now holds. The engine keeps its defaults (fsync on, one copy thread).
//!
//! `cargo build --example backup_engine`, then `backup_engine <db_dir> <backup_dir>`.

use std::path::Path;
use std::time::Instant;

use rocksdb::backup::{BackupEngine, BackupEngineOptions};
use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, ColumnFamilyDescriptor, DBCompressionType, Env, Options, DB,
};

/// The bytes and the files under `dir`, recursively (apparent sizes, as `du -sb` counts files).
fn tree_size(dir: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else { return (0, 0) };
    let mut total = (0, 0);
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            let (bytes, files) = tree_size(&entry.path());
            total = (total.0 + bytes, total.1 + files);
        } else {
            total = (total.0 + meta.len(), total.1 + 1);
        }
    }
    total
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(db_dir), Some(backup_dir)) = (args.next(), args.next()) else {
        eprintln!("usage: backup_engine <db_dir> <backup_dir>");
        std::process::exit(2);
    };
    let names = DB::list_cf(&Options::default(), &db_dir).expect("list the column families");
    // The WAL is replayed into the memtables, not flushed at the open: the timed backup's own
    // flush writes it, as eventvault's checkpoint flushes what its memtables hold. (No setter
    // for it in rust-rocksdb; the other options are set after, on the options this returns.)
    let mut opts = Options::default()
        .get_options_from_string("avoid_flush_during_recovery=true")
        .expect("options from a string");
    // Tables written here (the flush of what the WAL holds) are written as eventvault writes
    // them (src/store/options.rs: the table format, LZ4 for flushes and Zstd below, a Bloom
    // filter on the registry), so that both backups copy the same bytes for the same records;
    // atomic flush as eventvault has it.
    opts.set_atomic_flush(true);
    opts.set_disable_auto_compactions(true);
    opts.set_level_compaction_dynamic_level_bytes(true);
    let mut per_level = [DBCompressionType::Zstd; 7];
    per_level[0] = DBCompressionType::Lz4;
    opts.set_compression_per_level(&per_level);
    opts.set_bottommost_compression_type(DBCompressionType::Zstd);
    let table = |bloom: bool| {
        let mut table = BlockBasedOptions::default();
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_block_size(16 << 10);
        if bloom {
            table.set_bloom_filter(10.0, false);
        }
        table
    };
    // `open_cf` would give each column family default options: each gets these instead.
    let families = names.iter().map(|name| {
        let mut cf = opts.clone();
        cf.set_block_based_table_factory(&table(name == "registry"));
        ColumnFamilyDescriptor::new(name, cf)
    });
    let opened = Instant::now();
    let db = DB::open_cf_descriptors(&opts, &db_dir, families).expect("open the store");
    let open_seconds = opened.elapsed().as_secs_f64();

    std::fs::create_dir_all(&backup_dir).expect("create the backup folder");
    let (bytes_before, files_before) = tree_size(Path::new(&backup_dir));
    let env = Env::new().expect("RocksDB's default Env");
    let mut engine =
        BackupEngine::open(&BackupEngineOptions::new(&backup_dir).expect("backup options"), &env)
            .expect("open the backup engine");
    let started = Instant::now();
    engine.create_new_backup_flush(&db, true).expect("create the backup");
    let seconds = started.elapsed().as_secs_f64();
    let backups = engine.get_backup_info().len();
    drop(engine);
    drop(db);
    let (bytes_after, files_after) = tree_size(Path::new(&backup_dir));
    println!(
        "{}",
        serde_json::json!({
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "bytes": bytes_after.saturating_sub(bytes_before),
            "files": files_after.saturating_sub(files_before),
            "openSeconds": (open_seconds * 1000.0).round() / 1000.0,
            "backups": backups,
        })
    );
}
