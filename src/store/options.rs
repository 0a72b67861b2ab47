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
/// - **Compactions in `SCHED_IDLE`**: on a small machine they would otherwise compete with
///   request handling for the same cores. A nice value (RocksDB's own
///   `lower_thread_pool_cpu_priority`, nice 19) is not enough: a nice thread still keeps a
///   core for the rest of its scheduler slice when a request thread wakes up, which is what
///   made write latency jump while a backup's flush set compactions off (bench B3).
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

    // Compactions run only on CPU time nothing else wants, so they fill idle time instead of
    // delaying requests; flushes keep normal priority, so writes never wait on them. The
    // thread pools are the process's default Env's, started by `increase_parallelism` above.
    if let Ok(mut env) = rocksdb::Env::new() {
        if !idle_compaction_threads() {
            env.lower_thread_pool_cpu_priority();
        }
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

/// Puts RocksDB's low-priority (compaction) threads in the `SCHED_IDLE` class, found by the
/// name RocksDB gives them (`rocksdb:low`). RocksDB's C API can only lower them to nice 19
/// (`CpuPriority::kIdle` is not exposed), and the pool would set that itself on each thread's
/// first job, replacing `SCHED_IDLE`: so it is not asked to. The pool is sized by
/// `increase_parallelism` just before (to the core count, which is at least the compactions
/// `max_background_jobs` allows, so opening the database adds no thread to it). Idempotent, run
/// on every open. Returns false when no thread could be changed (no `/proc`, not Linux), and
/// the caller falls back to nice 19.
fn idle_compaction_threads() -> bool {
    #[cfg(target_os = "linux")]
    {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return false };
        let mut changed = false;
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<libc::pid_t>().ok()) else {
                continue;
            };
            let is_low = std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|c| c.trim_end() == "rocksdb:low");
            if !is_low {
                continue;
            }
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: a plain syscall on a thread of this process; on failure (the thread ended,
            // or the policy is refused) it keeps its priority.
            if unsafe { libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) } == 0 {
                changed = true;
            }
        }
        changed
    }
    #[cfg(not(target_os = "linux"))]
    false
}

fn available_cores() -> i32 {
    std::thread::available_parallelism().map_or(2, |n| n.get() as i32)
}
