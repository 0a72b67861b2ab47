//! The RocksDB options, chosen in one place.

use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, DBRecoveryMode, Options};

use super::{Cf, StoreConfig};

/// Builds the database options and the column family descriptors.
///
/// Why these choices:
/// - **Compression per level.** Memtable flushes (L0) are compressed with LZ4, which costs
///   little CPU on the write path. Every level written by compaction, where nearly all data of
///   a settled store lives, uses Zstd: it compresses JSON documents several times better.
///   Backups archive these files as they are, so what Zstd saves here is saved again in every
///   archive, and an archiver need not spend CPU recompressing them (it stores them).
/// - **One shared block cache** for all column families, so its size is one knob and the
///   registry and the bus compete for memory fairly. Index and filter blocks live in it too,
///   which keeps memory bounded however large the store grows.
/// - **Bloom filters** on the registry, where point lookups by id dominate.
/// - **WAL always on**, recovered to the last consistent point after a crash; every write is
///   in the WAL before it is acknowledged, so a killed process loses nothing. Atomic flush
///   keeps the column families consistent with each other in every flushed state, which is
///   what a checkpoint copies.
/// - **Bounded WAL and info logs**, so a long-running server does not fill the disk.
/// - **Compactions at low CPU priority**: on a small machine they would otherwise compete
///   with request handling for the same cores.
pub(super) fn build(config: &StoreConfig) -> (Options, Vec<ColumnFamilyDescriptor>) {
    let mut db = Options::default();
    db.create_if_missing(true);
    db.create_missing_column_families(true);
    db.set_atomic_flush(true);
    db.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
    db.set_max_total_wal_size(256 << 20);
    db.increase_parallelism(available_cores());
    db.set_max_background_jobs(available_cores().max(2));
    db.set_bytes_per_sync(1 << 20);
    db.set_keep_log_file_num(3);
    db.set_max_log_file_size(8 << 20);

    // Compactions run at the lowest CPU priority, so they fill idle time instead of delaying
    // requests; flushes keep normal priority, so writes never wait on them.
    if let Ok(mut env) = rocksdb::Env::new() {
        env.lower_thread_pool_cpu_priority();
        db.set_env(&env);
    }

    let cache = Cache::new_lru_cache(config.block_cache_mb.max(1) << 20);
    let descriptors =
        Cf::ALL.iter().map(|&cf| ColumnFamilyDescriptor::new(cf.name(), cf_options(cf, &cache))).collect();
    (db, descriptors)
}

fn cf_options(cf: Cf, cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_cache_index_and_filter_blocks(true);
    // Partitioned indexes and filters: opening a large store loads only their top levels, so
    // the memory an open (or a restore's reopen) costs does not grow with the store.
    table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_partition_filters(true);
    table.set_pin_top_level_index_and_filter(true);
    table.set_block_size(16 << 10);
    if cf == Cf::Registry {
        table.set_bloom_filter(10.0, false);
    }
    let mut opts = Options::default();
    opts.set_block_based_table_factory(&table);
    opts.set_level_compaction_dynamic_level_bytes(true);
    // L0 holds fresh memtable flushes: LZ4 keeps flushing cheap. Every compaction writes Zstd.
    let mut per_level = [DBCompressionType::Zstd; 7];
    per_level[0] = DBCompressionType::Lz4;
    opts.set_compression_per_level(&per_level);
    opts.set_bottommost_compression_type(DBCompressionType::Zstd);
    opts
}

fn available_cores() -> i32 {
    std::thread::available_parallelism().map_or(2, |n| n.get() as i32)
}
