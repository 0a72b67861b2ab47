//! Command-line and environment configuration: one `Options` struct for everything that
//! opens the store, plus the subcommands that wrap it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::backup::repo::location::{Location, S3Settings, Settings};
use crate::backup::repo::retention::{Limit, Policy};

/// eventvault: an event registry and durable event bus on one RocksDB store.
#[derive(Debug, Parser)]
#[command(name = "eventvault", version, about, propagate_version = true)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// What the binary does.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open the store and serve the REST API.
    Serve(Box<Options>),
    /// Follow the bus over HTTP and hand each message to a command (never opens the store).
    Worker(WorkerOptions),
    /// Exit 0 when the server's health endpoint answers, non-zero otherwise (for Docker).
    Healthcheck(HealthcheckOptions),
    /// Fill a store offline with realistic registration records (for benchmarks and demos).
    Populate(PopulateOptions),
    /// Restore a backup from the backup repository onto this machine's empty store (a fresh
    /// machine): `eventvault restore --from s3://bucket/prefix [--backup ID]`.
    Restore(RestoreFromCommand),
    /// Create, list, verify, restore and delete backups offline (the server must be stopped
    /// for create and restore; while it runs, use its REST API).
    Backup(BackupCommand),
    /// Serve as a warm standby of the primary that backs up and ships its log to a
    /// repository: restore its newest backup into an empty STORAGE_DIR, then follow the log,
    /// serving reads (writes get 503) until promoted.
    Standby(StandbyCommand),
    /// Promote a standby: stop following, start a new timeline, accept writes (through the
    /// running standby's API, or offline on a stopped one).
    Promote(PromoteCommand),
    /// Run one restore drill now: restore the newest backup and one older one into a scratch
    /// directory, check them, and report (through the running server's API while one holds
    /// the store). Exits non-zero when the drill fails.
    Drill(DrillCommand),
}

/// `eventvault drill`.
#[derive(Debug, Parser)]
pub struct DrillCommand {
    /// Where the store and backups are (and, while a server runs, its address and token).
    #[command(flatten)]
    pub options: Box<Options>,
}

/// `eventvault standby --from URL`.
#[derive(Debug, Parser)]
pub struct StandbyCommand {
    /// The primary's repository, `file:///path` or `s3://bucket/prefix`.
    #[arg(long, value_parser = parse_repo)]
    pub from: Location,
    /// Where the store is, how to reach the repository, and how to serve.
    #[command(flatten)]
    pub options: Box<Options>,
}

/// `eventvault promote`.
#[derive(Debug, Parser)]
pub struct PromoteCommand {
    /// Where the standby's store is (and, while it runs, its address and token).
    #[command(flatten)]
    pub options: Box<Options>,
}

/// Options of `eventvault populate`.
#[derive(Debug, Parser)]
pub struct PopulateOptions {
    /// Number of records to write.
    #[arg(long)]
    pub records: u64,
    /// Number of events to spread them over, at least 1.
    #[arg(long, default_value_t = 100, value_parser = at_least(1u64))]
    pub events: u64,
    /// Seed of the generator (the same seed writes the same field values).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where the store is.
    #[command(flatten)]
    pub options: Box<Options>,
}

/// `eventvault restore --from URL`.
#[derive(Debug, Parser)]
pub struct RestoreFromCommand {
    /// The repository, `file:///path` or `s3://bucket/prefix` (default: BACKUP_REPO).
    #[arg(long, value_parser = parse_repo)]
    pub from: Option<Location>,
    /// The backup to restore (default: the newest).
    #[arg(long, conflicts_with_all = ["at", "seq"])]
    pub backup: Option<String>,
    /// Restore to this point in time (RFC 3339, e.g. 2026-11-22T10:15:00Z): the newest backup
    /// before it, then the shipped log up to the last write committed at or before it.
    #[arg(long, conflicts_with = "seq")]
    pub at: Option<String>,
    /// Restore to this bus sequence number (the last write ending at or before it).
    #[arg(long)]
    pub seq: Option<u64>,
    /// The timeline whose history to follow (default: the store's own; onto an empty store,
    /// the one live at --at, or for --seq the newest).
    #[arg(long)]
    pub timeline: Option<String>,
    /// Plan the point-in-time restore and read the log, changing nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace a store that holds data without asking (its data is kept as a pre-restore
    /// backup).
    #[arg(long)]
    pub yes: bool,
    /// Where the store is, and how to reach the repository.
    #[command(flatten)]
    pub options: Box<Options>,
}

/// `eventvault backup …`.
#[derive(Debug, Parser)]
pub struct BackupCommand {
    /// What to do.
    #[command(subcommand)]
    pub action: BackupAction,
    /// Where the store, backups and drop-in folder are.
    #[command(flatten)]
    pub options: Box<Options>,
}

/// The backup subcommands. Commands that need the store (create, restore) run offline when
/// no server holds it, and are sent to the server's REST API when one does.
#[derive(Debug, Subcommand)]
pub enum BackupAction {
    /// Take a whole-store backup now.
    Create {
        /// Label, `[A-Za-z0-9._-]{1,64}`, appended to the name.
        #[arg(long)]
        label: Option<String>,
        /// Never rotate this archive out.
        #[arg(long)]
        keep: bool,
        /// After the archive is written and verified, delete these collections' records.
        #[arg(long, value_delimiter = ',')]
        purge: Option<Vec<String>>,
        /// Purge only in these events (with --purge).
        #[arg(long, value_delimiter = ',', requires = "purge")]
        purge_events: Option<Vec<String>>,
    },
    /// List backups of both kinds, newest first.
    List {
        /// Only `full` archives or `event` backups.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Only the backups of this event.
        #[arg(long)]
        event: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a backup's details (an archive's manifest, an event backup's metadata).
    #[command(alias = "show")]
    Details {
        /// Backup id or file name.
        id: String,
    },
    /// Check an archive: its sidecar, every file's checksum, that the store opens, and that
    /// its counts match the manifest.
    Verify {
        /// Archive file name (leave out with --repo).
        #[arg(required_unless_present = "repo")]
        name: Option<String>,
        /// Verify the backup repository instead: every backup's objects are there, with their
        /// sizes.
        #[arg(long, conflicts_with = "name")]
        repo: bool,
        /// With --repo: read every object and check its SHA-256 too.
        #[arg(long, requires = "repo")]
        read_data: bool,
    },
    /// Restore a backup. An event backup is merged back through the registry; a whole-store
    /// archive replaces the store, unless options choose events or collections to merge.
    Restore {
        /// Backup id or file name.
        id: String,
        /// Report what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Restore the event as a clone under this id.
        #[arg(long)]
        new_event_id: Option<String>,
        /// Only these collections (comma-separated).
        #[arg(long, value_delimiter = ',')]
        collections: Option<Vec<String>>,
        /// Only these events of a whole-store archive (comma-separated).
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
        /// Overwrite existing records instead of skipping them.
        #[arg(long)]
        overwrite: bool,
        /// Replace the whole store without asking.
        #[arg(long)]
        yes: bool,
    },
    /// `restore ID --dry-run` (the seed's verb).
    RestoreDry {
        /// Backup id or file name.
        id: String,
    },
    /// `restore ID --new-event-id NEW_ID` (the seed's verb).
    RestoreNew {
        /// Backup id or file name.
        id: String,
        /// Id of the clone.
        new_event_id: String,
    },
    /// List the collections a backup holds.
    Collections {
        /// Backup id or file name.
        id: String,
    },
    /// Print the documents of a collection of a backup (`_events` for event documents).
    Docs {
        /// Backup id or file name.
        id: String,
        /// Collection.
        collection: String,
        /// Only this event's documents.
        #[arg(long)]
        event: Option<String>,
        /// Case-insensitive text the document's JSON contains.
        #[arg(long)]
        q: Option<String>,
        /// Page size, 1 to 1000.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// nextCursor of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Print the audit trail, newest first.
    History {
        /// Entries to print.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Write a whole-store backup, local or only in the backup repository, as a tar.gz archive
    /// that any restore/ folder takes.
    Export {
        /// Backup id or file name.
        id: String,
        /// Where to write it.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Apply the retention policy (RETAIN_*) to the backup repository: print each backup with
    /// keep or remove and why, delete the manifests of those removed, then sweep their objects.
    Prune {
        /// Print what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a backup and its sidecar.
    Delete {
        /// Backup id or file name.
        id: String,
    },
}

/// `--kind` of `backup list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Whole-store archives.
    Full,
    /// Event backups.
    Event,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything the server needs. Every option has a flag and an environment variable.
#[derive(Debug, Clone, Parser)]
pub struct Options {
    /// Address the HTTP server listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:5050")]
    pub listen_addr: SocketAddr,

    /// Directory of the RocksDB store.
    #[arg(long, env = "STORAGE_DIR", default_value = "./storage")]
    pub storage_dir: PathBuf,

    /// Directory where backup archives are written.
    #[arg(long, env = "BACKUP_DIR", default_value = "./backups")]
    pub backup_dir: PathBuf,

    /// Drop-in directory: archives placed here are restored.
    #[arg(long, env = "RESTORE_DIR", default_value = "./restore")]
    pub restore_dir: PathBuf,

    /// Bearer token required by every /api route except GET /api/health. Unset: no auth.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Bearer token that allows GET requests only. Requires ADMIN_TOKEN: without it the API is
    /// open to everyone, so `serve` refuses a READ_TOKEN alone.
    #[arg(long, env = "READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,

    /// Serve on a non-loopback address without ADMIN_TOKEN (anyone who can reach it can write).
    #[arg(long, env = "ALLOW_UNAUTHENTICATED", default_value_t = false)]
    pub allow_unauthenticated: bool,

    /// Largest request body accepted, in bytes (at least 1); larger bodies get 413.
    #[arg(long, env = "BODY_LIMIT", default_value_t = 16 * 1024 * 1024, value_parser = at_least(1usize))]
    pub body_limit: usize,

    /// fsync the write-ahead log on every write. Off: a process crash loses nothing, a power
    /// failure may lose the last writes. On: neither does, at a cost in write latency.
    #[arg(long, env = "SYNC_WRITES", default_value_t = false)]
    pub sync_writes: bool,

    /// RocksDB block cache size in MiB (at least 1), shared by all column families.
    #[arg(long, env = "BLOCK_CACHE_MB", default_value_t = 128, value_parser = at_least(1usize))]
    pub block_cache_mb: usize,

    /// Take a backup every AUTO_BACKUP_INTERVAL.
    #[arg(long, env = "AUTO_BACKUP_ENABLED", default_value_t = true, action = ArgAction::Set)]
    pub auto_backup_enabled: bool,

    /// Interval of scheduled backups, in milliseconds (at least 1000).
    #[arg(long, env = "AUTO_BACKUP_INTERVAL", default_value_t = 3_600_000, value_parser = at_least(1000u64))]
    pub auto_backup_interval: u64,

    /// How often a restore drill restores the newest backup and one older one into a scratch
    /// directory and checks them (`1d`, `36h`, `90m`, seconds); `0` turns drills off.
    #[arg(long, env = "DRILL_INTERVAL", default_value = "1d", value_parser = parse_window)]
    pub drill_interval: Duration,

    /// Archives kept by rotation (archives created with `keep` are not counted). 0 turns
    /// local archives off: with BACKUP_REPO, whole-store backups go to the repository only.
    #[arg(long, env = "MAX_BACKUPS", default_value_t = 10)]
    pub max_backups: usize,

    /// Restore archives dropped into RESTORE_DIR, at startup and while running.
    #[arg(long, env = "AUTO_RESTORE_ENABLED", default_value_t = true, action = ArgAction::Set)]
    pub auto_restore_enabled: bool,

    /// How long, in milliseconds, a file dropped into RESTORE_DIR must stay unchanged before it
    /// is read (an atomic rename into the folder is read at once).
    #[arg(long, env = "RESTORE_SETTLE_MS", default_value_t = 2000)]
    pub restore_settle_ms: u64,

    /// gzip level of archives, 0 (store) to 9. The store's files are already compressed, so
    /// higher levels cost time for little gain.
    #[arg(
        long,
        env = "BACKUP_COMPRESSION_LEVEL",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(0..=9)
    )]
    pub backup_compression_level: u32,

    /// Most bytes one restore may unpack; 0 means the free space of STORAGE_DIR.
    #[arg(long, env = "RESTORE_MAX_BYTES", default_value_t = 0)]
    pub restore_max_bytes: u64,

    /// MiB of unpacked archives kept under BACKUP_DIR/.browse-cache for browsing and
    /// selective restores; the least recently used archive goes first.
    #[arg(long, env = "BROWSE_CACHE_MB", default_value_t = 1024)]
    pub browse_cache_mb: u64,

    /// The backup repository.
    #[command(flatten)]
    pub repo: RepoOptions,

    /// Metrics and failure notifications.
    #[command(flatten)]
    pub monitor: MonitorOptions,

    /// Logging.
    #[command(flatten)]
    pub log: LogOptions,
}

/// Who may read `/metrics`, and where failures are notified.
#[derive(Debug, Clone, Args)]
pub struct MonitorOptions {
    /// Serve `/metrics` without a token (for a scraper on a trusted network). Otherwise it
    /// needs the read or the admin token, like the rest of the API.
    #[arg(long, env = "METRICS_PUBLIC", default_value_t = false, action = ArgAction::Set)]
    pub metrics_public: bool,

    /// Receives a JSON POST when a backup, a repository upload, a restore, a drill or
    /// shipping fails, when backups go stale, and when each recovers.
    /// (Checked by `backup::config::webhook`, not clap, whose errors repeat the value: a
    /// URL with credentials would end up in logs.)
    #[arg(long, env = "WEBHOOK_URL", hide_env_values = true)]
    pub webhook_url: Option<String>,

    /// Signs each notification's body with HMAC-SHA256 (header X-Eventvault-Signature).
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true, requires = "webhook_url")]
    pub webhook_secret: Option<String>,
}

/// Where the backup repository is, and how to reach it.
#[derive(Debug, Clone, Args)]
pub struct RepoOptions {
    /// The backup repository, `file:///path` or `s3://bucket/prefix`: every whole-store backup
    /// is stored there too. Unset: backups are local archives only.
    #[arg(long, env = "BACKUP_REPO", value_parser = parse_repo)]
    pub backup_repo: Option<Location>,

    /// Endpoint of an S3-compatible server (unset: AWS).
    #[arg(long, env = "S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// S3 region.
    #[arg(long, env = "S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// Repository backups kept whatever their times (the newest N).
    #[arg(long, env = "RETAIN_LAST", default_value_t = 10)]
    pub retain_last: u32,

    /// Hours whose newest repository backup is kept.
    #[arg(long, env = "RETAIN_HOURLY", default_value_t = 24)]
    pub retain_hourly: u32,

    /// Days whose newest repository backup is kept.
    #[arg(long, env = "RETAIN_DAILY", default_value_t = 7)]
    pub retain_daily: u32,

    /// ISO weeks whose newest repository backup is kept.
    #[arg(long, env = "RETAIN_WEEKLY", default_value_t = 4)]
    pub retain_weekly: u32,

    /// Months whose newest repository backup is kept.
    #[arg(long, env = "RETAIN_MONTHLY", default_value_t = 12)]
    pub retain_monthly: u32,

    /// Years whose newest repository backup is kept.
    #[arg(long, env = "RETAIN_YEARLY", default_value_t = 7)]
    pub retain_yearly: u32,

    /// Seconds an object no backup names is left in the repository before a prune removes it
    /// (a backup being written has uploaded objects before its manifest).
    #[arg(long, env = "REPO_SWEEP_GRACE_SECS", default_value_t = 3600)]
    pub repo_sweep_grace_secs: u64,

    /// The most a committed write waits before it is shipped to BACKUP_REPO, in
    /// milliseconds; 0 turns log shipping off.
    #[arg(long, env = "SHIP_INTERVAL_MS", default_value_t = 1000)]
    pub ship_interval_ms: u64,

    /// Past this many seconds of shipping lag, health is degraded.
    #[arg(long, env = "SHIP_MAX_LAG_SECS", default_value_t = 60)]
    pub ship_max_lag_secs: u64,

    /// How far back a point-in-time restore can reach: retention keeps the backups and log
    /// segments that restoring any moment in this window needs (`7d`, `36h`, `90m`, seconds).
    #[arg(long, env = "PITR_WINDOW", default_value = "7d", value_parser = parse_window)]
    pub pitr_window: Duration,

    /// At startup, when the store is empty, restore the newest backup of this repository
    /// first (`file:///path` or `s3://bucket/prefix`, reached with the S3 options).
    #[arg(long, env = "AUTO_RESTORE_FROM", value_parser = parse_repo)]
    pub auto_restore_from: Option<Location>,

    /// S3 access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub aws_access_key_id: Option<String>,

    /// S3 secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub aws_secret_access_key: Option<String>,

    /// Allow a plain-HTTP S3_ENDPOINT (a server on 127.0.0.1, say).
    #[arg(long, env = "S3_ALLOW_HTTP", default_value_t = false, action = ArgAction::Set)]
    pub s3_allow_http: bool,

    /// Encrypt the repository to these age X25519 public keys (`age1…`, separated by commas
    /// or spaces): every object and manifest is an age file. Unset: not encrypted.
    #[arg(long, env = "REPO_RECIPIENTS", value_parser = RecipientsParser)]
    pub repo_recipients: Option<Recipients>,

    /// An age identity file (as `age-keygen` writes it) to read encrypted repository backups:
    /// restoring them needs it, taking backups does not.
    #[arg(long, env = "REPO_IDENTITY_FILE")]
    pub repo_identity_file: Option<PathBuf>,

    /// The most repository uploads send, in megabytes (10^6 bytes) a second. Unset: no cap.
    #[arg(long, env = "REPO_MAX_MBPS", value_parser = clap::value_parser!(u32).range(1..))]
    pub repo_max_mbps: Option<u32>,
}

/// A window: a whole number with `d`, `h`, `m` or `s` (seconds without one).
fn parse_window(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (digits, unit) = match raw.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&raw[..i], c),
        _ => (raw, 's'),
    };
    let n: u64 =
        digits.parse().map_err(|_| format!("{raw:?} is not a window such as 7d, 36h, 90m or 3600"))?;
    let secs = match unit {
        'd' => n.checked_mul(86_400),
        'h' => n.checked_mul(3_600),
        'm' => n.checked_mul(60),
        's' => Some(n),
        _ => None,
    };
    match secs {
        Some(secs) if secs <= 100 * 365 * 86_400 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{raw:?} is not a window such as 7d, 36h, 90m or 3600 (at most 100 years)")),
    }
}

/// REPO_RECIPIENTS, checked.
#[derive(Debug, Clone)]
pub struct Recipients(pub Vec<String>);

/// Parses REPO_RECIPIENTS with an error of its own: clap's usual error repeats the value, and
/// a secret key pasted there must never be printed.
#[derive(Debug, Clone, Copy)]
struct RecipientsParser;

impl clap::builder::TypedValueParser for RecipientsParser {
    type Value = Recipients;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Recipients, clap::Error> {
        let invalid = |message: String| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{message}\n"))
        };
        let raw = value.to_str().ok_or_else(|| invalid("REPO_RECIPIENTS is not UTF-8".into()))?;
        crate::backup::repo::crypt::parse_recipients(raw).map(Recipients).map_err(invalid)
    }
}

impl RepoOptions {
    /// The GFS retention of repository backups.
    pub fn retention(&self) -> Policy {
        Policy {
            last: Limit::Count(self.retain_last),
            hourly: Limit::Count(self.retain_hourly),
            daily: Limit::Count(self.retain_daily),
            weekly: Limit::Count(self.retain_weekly),
            monthly: Limit::Count(self.retain_monthly),
            yearly: Limit::Count(self.retain_yearly),
        }
    }

    /// How the repository is reached and read; this machine's repository key lives in
    /// `key_dir` (BACKUP_DIR), or nowhere for a command that only reads.
    pub fn settings(&self, key_dir: Option<&Path>) -> Settings {
        Settings {
            s3: self.s3(),
            crypt: crate::backup::repo::crypt::Settings {
                recipients: self.repo_recipients.clone().map(|r| r.0).unwrap_or_default(),
                identity_file: self.repo_identity_file.clone(),
                key_file: key_dir.map(|dir| dir.join(crate::backup::repo::crypt::KEY_FILE)),
            },
            max_mbps: self.repo_max_mbps,
        }
    }

    /// The S3 settings.
    fn s3(&self) -> S3Settings {
        S3Settings {
            endpoint: self.s3_endpoint.clone(),
            region: Some(self.s3_region.clone()),
            access_key_id: self.aws_access_key_id.clone(),
            secret_access_key: self.aws_secret_access_key.clone(),
            allow_http: self.s3_allow_http,
        }
    }
}

fn parse_repo(raw: &str) -> Result<Location, String> {
    Location::parse(raw)
}

/// Where logs go and how much: shared by every command that logs.
#[derive(Debug, Clone, Args)]
pub struct LogOptions {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `info,eventvault=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}

/// Options of `eventvault worker`.
#[derive(Debug, Clone, Parser)]
pub struct WorkerOptions {
    /// Base URL of the eventvault server.
    #[arg(long, env = "EVENTVAULT_SERVER", default_value = "http://127.0.0.1:5050")]
    pub server: String,

    /// Durable consumer name; its offset is stored on the server.
    #[arg(long, env = "EVENTVAULT_CONSUMER")]
    pub consumer: String,

    /// Only handle messages of this topic.
    #[arg(long, env = "EVENTVAULT_TOPIC")]
    pub topic: Option<String>,

    /// Shell command run once per message, with the message as JSON on stdin. A non-zero exit
    /// is retried with backoff. Without it, each message is printed as one JSON line.
    #[arg(long, env = "EVENTVAULT_EXEC")]
    pub exec: Option<String>,

    /// Bearer token (ADMIN_TOKEN of the server, needed to commit offsets).
    #[arg(long, env = "EVENTVAULT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Longest wait between reconnect attempts, in milliseconds (at least 1).
    #[arg(long, env = "EVENTVAULT_MAX_BACKOFF_MS", default_value_t = 10_000, value_parser = at_least(1u64))]
    pub max_backoff_ms: u64,

    /// Logging.
    #[command(flatten)]
    pub log: LogOptions,
}

/// Options of `eventvault healthcheck`.
#[derive(Debug, Clone, Parser)]
pub struct HealthcheckOptions {
    /// Address of the server to check (a wildcard address is checked on loopback).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:5050")]
    pub listen_addr: SocketAddr,

    /// Seconds to wait for an answer, at least 1.
    #[arg(long, default_value_t = 5, value_parser = at_least(1u64))]
    pub timeout_secs: u64,
}

/// A parser of whole numbers of at least `min`, refusing smaller ones with a message that
/// names the minimum (clap's own `range(min..)` would print the upper bound as u64::MAX).
/// A value that is out of range is refused rather than clamped, so nobody runs with a setting
/// other than the one they wrote.
fn at_least<T>(min: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy + Send + Sync + 'static,
    T::Err: std::fmt::Display,
{
    move |raw| match raw.parse::<T>() {
        Ok(value) if value >= min => Ok(value),
        Ok(_) => Err(format!("must be at least {min}")),
        Err(e) => Err(e.to_string()),
    }
}
