//! What the BackupManager needs from the options.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{MonitorOptions, Options};

/// The BackupManager's configuration, taken from [`Options`] (which checks the ranges).
#[derive(Debug, Clone)]
pub struct BackupConfig {
    /// STORAGE_DIR (the database lives in its `db/`).
    pub storage_dir: PathBuf,
    /// BACKUP_DIR.
    pub backup_dir: PathBuf,
    /// RESTORE_DIR.
    pub restore_dir: PathBuf,
    /// Take scheduled backups.
    pub auto_backup: bool,
    /// Interval of scheduled backups.
    pub interval: Duration,
    /// Archives kept by rotation (archives with `keep` are not counted); 0: no local archives.
    pub max_backups: usize,
    /// Restore archives dropped into RESTORE_DIR.
    pub auto_restore: bool,
    /// How long a dropped file must stay unchanged before it is read.
    pub settle: Duration,
    /// gzip level of archives, 0 to 9.
    pub compression_level: u32,
    /// Upper bound of what one restore may unpack (0: the free space of STORAGE_DIR).
    pub restore_max_bytes: u64,
    /// Bytes of unpacked archives the browse cache keeps.
    pub browse_cache_bytes: u64,
    /// The backup repository, with the settings to reach it.
    pub repo: Option<(super::repo::location::Location, super::repo::location::Settings)>,
    /// Which repository backups are kept.
    pub retention: super::repo::retention::Policy,
    /// How long an object no backup names stays in the repository.
    pub sweep_grace: Duration,
    /// Log shipping, when BACKUP_REPO is set and SHIP_INTERVAL_MS is not 0.
    pub ship: Option<ShipConfig>,
    /// PITR_WINDOW.
    pub pitr_window: Duration,
    /// WEBHOOK_URL and WEBHOOK_SECRET, when failures are notified.
    pub webhook: Option<WebhookConfig>,
    /// DRILL_INTERVAL; zero: no scheduled restore drills.
    pub drill_interval: Duration,
}

/// How shipping runs.
#[derive(Debug, Clone)]
pub struct ShipConfig {
    /// SHIP_INTERVAL_MS: the most a committed write waits before it is shipped.
    pub interval: Duration,
    /// SHIP_MAX_LAG_SECS: past this lag, health is degraded.
    pub max_lag: Duration,
}

/// WEBHOOK_URL and WEBHOOK_SECRET.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Where notices go (http or https).
    pub url: reqwest::Url,
    /// The HMAC key, when bodies are signed.
    pub secret: Option<String>,
    /// Delivery attempts after the first, and the first wait between them (doubling, at most
    /// a minute): 5 and 1 s, so a receiver that is down for about a minute still gets it.
    pub retries: usize,
    /// The first wait.
    pub first_wait: Duration,
}

impl WebhookConfig {
    /// The receiver as logs show it: scheme, host and port. Hooks often carry their secret in
    /// the path or the query (`/services/T0/B0/XXXX`, `?token=`), which is never shown.
    pub fn shown(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(port) => format!("{}://{host}:{port}/…", self.url.scheme()),
            None => format!("{}://{host}/…", self.url.scheme()),
        }
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.shown())
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// The webhook's configuration, when WEBHOOK_URL is set; an error that does not repeat the
/// URL when it is not one to send to (it may carry credentials).
pub fn webhook(opts: &MonitorOptions) -> Result<Option<WebhookConfig>, String> {
    let Some(raw) = opts.webhook_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let bad = |why: &str| format!("WEBHOOK_URL: {why}");
    let url = reqwest::Url::parse(raw).map_err(|e| bad(&format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("give an http:// or https:// URL, such as https://alerts.example.com/eventvault"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("leave credentials out of the URL; use WEBHOOK_SECRET to sign notifications"));
    }
    Ok(Some(WebhookConfig {
        url,
        secret: opts.webhook_secret.clone().filter(|s| !s.is_empty()),
        retries: 5,
        first_wait: Duration::from_secs(1),
    }))
}

/// This machine's host name, as far as it can be told.
pub(crate) fn host_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host: String = host.trim().chars().filter(|c| !c.is_control()).take(64).collect();
    if host.is_empty() {
        "unknown host".to_owned()
    } else {
        host
    }
}

impl BackupConfig {
    /// The configuration of `opts`.
    pub fn from_options(opts: &Options) -> Self {
        BackupConfig {
            storage_dir: opts.storage_dir.clone(),
            backup_dir: opts.backup_dir.clone(),
            restore_dir: opts.restore_dir.clone(),
            auto_backup: opts.auto_backup_enabled,
            interval: Duration::from_millis(opts.auto_backup_interval),
            max_backups: opts.max_backups,
            auto_restore: opts.auto_restore_enabled,
            settle: Duration::from_millis(opts.restore_settle_ms),
            compression_level: opts.backup_compression_level,
            restore_max_bytes: opts.restore_max_bytes,
            browse_cache_bytes: opts.browse_cache_mb.saturating_mul(1 << 20),
            repo: opts
                .repo
                .backup_repo
                .clone()
                .map(|location| (location, opts.repo.settings(Some(&opts.backup_dir)))),
            retention: opts.repo.retention(),
            sweep_grace: Duration::from_secs(opts.repo.repo_sweep_grace_secs),
            ship: (opts.repo.backup_repo.is_some() && opts.repo.ship_interval_ms > 0).then(|| ShipConfig {
                interval: Duration::from_millis(opts.repo.ship_interval_ms),
                max_lag: Duration::from_secs(opts.repo.ship_max_lag_secs),
            }),
            pitr_window: opts.repo.pitr_window,
            // Checked when the server starts (`webhook`).
            webhook: webhook(&opts.monitor).ok().flatten(),
            drill_interval: opts.drill_interval,
        }
    }

    /// Whether whole-store backups are written as local archives (MAX_BACKUPS is not 0).
    pub fn local_archives(&self) -> bool {
        self.max_backups > 0
    }

    /// The most a restore may unpack: RESTORE_MAX_BYTES, and never more than fits on the disk.
    pub fn unpack_bound(&self) -> u64 {
        let free = super::files::free_space(&self.storage_dir).unwrap_or(u64::MAX);
        match self.restore_max_bytes {
            0 => free,
            max => max.min(free),
        }
    }
}
