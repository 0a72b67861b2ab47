//! `eventvault backup …`: the BackupManager offline, on the same folders as the server.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::backup::audit::{self, Actor};
use crate::backup::browse::{self, DocQuery};
use crate::backup::catalog::{self, Catalog};
use crate::backup::{
    self, BackupConfig, BackupManager, Filter, Item, Kind, PurgeRequest, RestoreOptions, Trigger,
};
use crate::client::{CLI, CLIENT_HEADER};
use crate::config::{BackupAction, KindArg, Options};
use crate::store;

/// Runs one backup subcommand.
pub fn run(action: BackupAction, opts: &Options) -> anyhow::Result<()> {
    let config = BackupConfig::from_options(opts);
    match action {
        BackupAction::Create { label, keep, purge, purge_events } => {
            let purge = purge.map(|collections| PurgeRequest { collections, event_ids: purge_events });
            if let Some(purge) = &purge {
                purge.check()?;
            }
            match access(opts)? {
                Access::Offline(manager, _lock) => {
                    let bar = bar(total_store_bytes(&store::db_path(&opts.storage_dir)) * 2, "backing up");
                    let progress = |n| bar.inc(n);
                    let label = label.as_deref();
                    // The same answer as the server's, so scripts read one shape either way.
                    let value = match &purge {
                        None => manager
                            .create(Trigger::Cli, label, keep, Actor::Cli, &progress)
                            .map(|c| answer(&c)),
                        Some(purge) => manager
                            .create_and_purge(Trigger::Cli, label, purge, Actor::Cli, &progress)
                            .map(|done| {
                                let mut value = answer(&done);
                                value["verified"] = json!(true);
                                value
                            }),
                    };
                    bar.finish_and_clear();
                    print_json(&value?)?;
                }
                Access::Server(server) => {
                    let body = json!({"label": label, "keep": keep, "purge": purge});
                    print_json(&server.call(Method::POST, "/api/backup/create", Some(body))?)?;
                }
            }
        }
        BackupAction::List { kind, event, json } => {
            let kind = kind.map(|k| match k {
                KindArg::Full => Kind::Full,
                KindArg::Event => Kind::Event,
            });
            let filter = Filter { kind, event_id: Filter::check_event_id(event)? };
            let mut items: Vec<Item> = Catalog::default().list_all(&config.backup_dir, &filter)?;
            if let (Some((location, settings)), false) = (&config.repo, filter.kind == Some(Kind::Event)) {
                let handle = backup::repo::Handle::open(location, settings);
                items.extend(backup::repo_items(&handle).into_iter().filter(|i| filter.matches(i)));
                items.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.name.cmp(&a.name)));
            }
            if json {
                print_json(&items)?;
            } else if items.is_empty() {
                println!("no backups in {}", config.backup_dir.display());
            } else {
                println!(
                    "{:<58} {:<6} {:<5} {:>9} {:<24} {:<12} {:>7}  WHAT",
                    "ID", "KIND", "WHERE", "SIZE MB", "CREATED", "TRIGGER", "RECORDS"
                );
                for i in items {
                    let trigger = match (&i.error, i.trigger) {
                        (Some(_), _) | (None, None) => "damaged".to_owned(),
                        (None, Some(t)) => serde_json::to_value(t)?.as_str().unwrap_or_default().to_owned(),
                    };
                    let records =
                        crate::untrusted::sum(i.counts.records.values().copied()).unwrap_or(u64::MAX);
                    let what = match (&i.event_id, &i.event_name) {
                        // The name comes from the file: escaped, so it cannot drive the terminal.
                        (Some(id), Some(name)) => format!("event {id} ({})", crate::untrusted::bounded(name)),
                        (Some(id), None) => format!("event {id}"),
                        (None, _) => {
                            format!("{} events{}", i.counts.events, if i.keep { ", kept" } else { "" })
                        }
                    };
                    println!(
                        "{:<58} {:<6} {:<5} {:>9} {:<24} {:<12} {:>7}  {what}",
                        i.id,
                        i.kind.as_str(),
                        match i.location {
                            backup::catalog::Place::Local => "local",
                            backup::catalog::Place::Repo => "repo",
                        },
                        i.size_mb,
                        i.created,
                        trigger,
                        records
                    );
                }
            }
        }
        BackupAction::Details { id } => print_json(&Catalog::default().details(&config.backup_dir, &id)?)?,
        BackupAction::Verify { repo: true, read_data, .. } => {
            let Some((location, settings)) = &config.repo else {
                bail!("there is no backup repository to verify: set BACKUP_REPO (or --backup-repo)");
            };
            let verified = backup::repo::Repo::open(location, settings)?.verify(read_data)?;
            let what = if read_data {
                "present, of the right size and content"
            } else {
                "present, of the right size"
            };
            if !verified.problems.is_empty() {
                for problem in &verified.problems {
                    eprintln!("{}", crate::untrusted::bounded(problem));
                }
                bail!("{location}: {} problems in {} backups", verified.problems.len(), verified.backups);
            }
            println!(
                "OK {location}: {} backups, every one of their {} objects {what}",
                verified.backups, verified.objects
            );
        }
        BackupAction::Verify { name, .. } => {
            let name = name.unwrap_or_default();
            let (kind, name, path) = catalog::resolve(&config.backup_dir, &name)?;
            if kind == Kind::Event {
                let metadata = backup::verify_event(&config, &name, &path)?;
                let records = crate::untrusted::sum(metadata.counts.values().copied()).unwrap_or(u64::MAX);
                println!(
                    "OK {name}: sidecar matches; event {} and {records} records, every id valid, as the metadata says",
                    metadata.event_id
                );
                return Ok(());
            }
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let bar = bar(size, "verifying");
            let verified = backup::verify(&config, &name, &|n| bar.inc(n));
            bar.finish_and_clear();
            let verified = verified?;
            let sidecar = if verified.sidecar_checked { "sidecar matches" } else { "no sidecar to check" };
            println!(
                "OK {name}: {sidecar}; {} files ({} bytes) match their checksums; the store opens and holds {} events, \
                 {} bus messages, as the manifest says",
                verified.files, verified.bytes, verified.manifest.counts.events, verified.manifest.counts.bus_messages
            );
        }
        BackupAction::Restore { id, dry_run, new_event_id, collections, events, overwrite, yes } => {
            let options = RestoreOptions {
                dry_run,
                specific_collections: collections,
                event_ids: events,
                new_event_id,
                skip_existing_records: overwrite.then_some(false),
            };
            restore(opts, &config, &id, options, yes)?;
        }
        BackupAction::RestoreDry { id } => {
            restore(opts, &config, &id, RestoreOptions { dry_run: true, ..Default::default() }, false)?
        }
        BackupAction::RestoreNew { id, new_event_id } => {
            let options = RestoreOptions { new_event_id: Some(new_event_id), ..Default::default() };
            restore(opts, &config, &id, options, false)?;
        }
        BackupAction::Collections { id } => {
            let cache = LocalCache::new(&config);
            print_json(&browse::collections(&config, &cache.0, &id)?)?;
        }
        BackupAction::Docs { id, collection, event, q, limit, cursor } => {
            if !(1..=browse::MAX_LIMIT).contains(&limit) {
                bail!("--limit must be between 1 and {}, not {limit}", browse::MAX_LIMIT);
            }
            let cache = LocalCache::new(&config);
            let query = DocQuery { event_id: event, q, limit, cursor };
            print_json(&browse::documents(&config, &cache.0, &id, &collection, &query)?)?;
        }
        BackupAction::History { limit } => {
            if !(1..=audit::MAX_ENTRIES).contains(&limit) {
                bail!("--limit must be between 1 and {}, not {limit}", audit::MAX_ENTRIES);
            }
            print_json(&audit::newest(&config.backup_dir.join(audit::AUDIT_FILE), limit)?)?
        }
        BackupAction::Export { id, output } => {
            let (name, mut source) = match catalog::resolve(&config.backup_dir, &id) {
                Ok((Kind::Full, name, path)) => (name, crate::untrusted::open_regular(&path)?),
                Ok((Kind::Event, name, _)) => {
                    bail!("{name} is an event backup: export takes whole-store backups")
                }
                Err(backup::Error::NotFound(_)) if config.repo.is_some() => {
                    let (location, settings) = config.repo.as_ref().expect("checked");
                    let repo = backup::repo::Repo::open(location, settings)?;
                    let bound = config.unpack_bound();
                    backup::ops::repo_export::export(
                        &repo,
                        &id,
                        &config.backup_dir,
                        config.compression_level,
                        bound,
                    )?
                }
                Err(e) => return Err(e.into()),
            };
            // Whole or not at all: a temp file beside the output, renamed once complete.
            let tmp = output.with_file_name(format!(
                ".{}.partial",
                output.file_name().unwrap_or_default().to_string_lossy()
            ));
            let written = (|| {
                let mut out = std::fs::File::create(&tmp)?;
                let bytes = std::io::copy(&mut source, &mut out)?;
                out.sync_all()?;
                std::fs::rename(&tmp, &output)?;
                Ok::<_, std::io::Error>(bytes)
            })();
            let bytes = written
                .inspect_err(|_| {
                    let _ = std::fs::remove_file(&tmp);
                })
                .with_context(|| format!("writing {}", output.display()))?;
            println!("exported {name} to {} ({bytes} bytes)", output.display());
        }
        BackupAction::Prune { dry_run, json } => {
            let Some((location, settings)) = &config.repo else {
                bail!("there is no backup repository to prune: set BACKUP_REPO (or --backup-repo)");
            };
            let handle = backup::repo::Handle::open(location, settings);
            let runner = backup::ops::Runner::new(
                audit::Audit::new(&config.backup_dir),
                backup::notify::Notifier::new(None),
            );
            let pruned = backup::ops::prune::prune(&runner, &handle, &config, dry_run, Actor::Cli)?;
            if json {
                print_json(&pruned)?;
            } else {
                println!("{:<58} {:<7} WHY", "ID", "");
                for b in &pruned.backups {
                    let verdict = if b.keep { "keep" } else { "remove" };
                    println!("{:<58} {verdict:<7} {}", b.id, b.reasons.join(", "));
                }
                let kept = pruned.backups.iter().filter(|b| b.keep).count();
                let done = if dry_run { "would remove" } else { "removed" };
                println!(
                    "{kept} kept, {done} {}; {} objects ({} bytes) swept{}",
                    pruned.backups.len() - kept,
                    pruned.objects_swept,
                    pruned.bytes_swept,
                    pruned
                        .sweep_skipped
                        .as_deref()
                        .map(|why| format!(" (sweep skipped: {why})"))
                        .unwrap_or_default()
                );
            }
        }
        BackupAction::Delete { id } => {
            // Through the manager (or the server that holds the store), so the deletion takes
            // the one-operation slot and the browse cache forgets the backup.
            let name = match access(opts)? {
                Access::Offline(manager, _lock) => manager.delete(&id, Actor::Cli)?,
                Access::Server(server) => {
                    // Resolved here as offline, so the server is asked about that file only.
                    let (_, name, _) = catalog::resolve(&config.backup_dir, &id)?;
                    let path = format!("/api/backups/{}", segment(&name));
                    let answer = server.call(Method::DELETE, &path, None)?;
                    answer["deleted"].as_str().unwrap_or(&name).to_owned()
                }
            };
            println!("deleted {name} and its sidecar");
        }
    }
    Ok(())
}

fn restore(
    opts: &Options,
    config: &BackupConfig,
    id: &str,
    options: RestoreOptions,
    yes: bool,
) -> anyhow::Result<()> {
    let (kind, name, path) = catalog::resolve(&config.backup_dir, id)?;
    let swap = kind == Kind::Full && !options.is_selective() && !options.dry_run;
    if swap
        && !yes
        && !confirm(&format!(
            "Replace the whole store in {} with {name}? The data it replaces is kept as a pre-restore backup. [y/N] ",
            opts.storage_dir.display()
        ))?
    {
        bail!("restore cancelled (pass --yes to restore without a prompt)");
    }
    let report = match access(opts)? {
        Access::Offline(manager, _lock) => {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let bar = bar(if swap { size } else { 0 }, "restoring");
            let report = manager.restore_with(&name, &options, Actor::Cli);
            bar.finish_and_clear();
            safety_copy_written(&manager, opts, report.is_ok())?;
            answer(&report?)
        }
        Access::Server(server) => {
            let path = format!("/api/backups/{}/restore", segment(&name));
            server.call(Method::POST, &path, Some(serde_json::to_value(&options)?))?
        }
    };
    print_json(&report)
}

/// Waits for the pre-restore backup of an offline restore (written before the command exits),
/// and, after a restore that `succeeded`, fails when it could not be written.
fn safety_copy_written(manager: &BackupManager, opts: &Options, succeeded: bool) -> anyhow::Result<()> {
    manager.wait_for_safety_copies();
    let (pending, _) = manager.undo_points();
    if succeeded && !pending.is_empty() {
        bail!(
            "the restore is done, but its pre-restore backup {} could not be written (see the log); \
             the replaced data is kept in {} and the next command or server start writes it",
            pending.join(", "),
            opts.storage_dir.display()
        );
    }
    Ok(())
}

/// A point-in-time restore onto the store of `opts`, which holds data: offline with a
/// pre-restore backup, or through the API of the server that holds it. Returns the report.
pub(crate) fn restore_point_in_time(
    opts: &Options,
    request: &crate::backup::ops::pitr::PointInTime,
    yes: bool,
) -> anyhow::Result<Value> {
    use crate::backup::ops::pitr::Target;
    if !request.dry_run
        && !yes
        && !confirm(&format!(
            "Replace the whole store in {} with its state at the point asked for? The data it replaces is kept as a pre-restore backup. [y/N] ",
            opts.storage_dir.display()
        ))?
    {
        bail!("restore cancelled (pass --yes to restore without a prompt)");
    }
    match access(opts)? {
        Access::Offline(manager, _lock) => {
            let report = manager.restore_point_in_time(request, Actor::Cli);
            safety_copy_written(&manager, opts, report.is_ok())?;
            Ok(answer(&report?))
        }
        Access::Server(server) => {
            // The server restores from its own repository: only when that is the one named.
            let health = server.call(Method::GET, "/api/health", None)?;
            let theirs = health["backup"]["repo"]["url"].as_str().map(str::to_owned);
            let ours = opts.repo.backup_repo.as_ref().map(ToString::to_string);
            if theirs != ours {
                bail!(
                    "the server holding the store restores from its own repository ({}), not from {}; \
                     stop it to restore from another, or send the restore to its API",
                    theirs.as_deref().unwrap_or("none: it has no BACKUP_REPO"),
                    ours.as_deref().unwrap_or("none")
                );
            }
            let mut body = json!({"timeline": request.timeline, "dryRun": request.dry_run});
            match request.target {
                Target::At(at) => body["at"] = json!(at.to_rfc3339()),
                Target::Seq(seq) => body["seq"] = json!(seq),
            }
            server.call(Method::POST, "/api/backup/restore", Some(body))
        }
    }
}

/// Sends one request to the server that holds the store (pid `holder`).
pub(crate) fn call_server(
    opts: &Options,
    holder: Option<i32>,
    method: Method,
    path: &str,
) -> anyhow::Result<Value> {
    Remote::connect(opts, holder)?.call(method, path, None)
}

/// Where a command that needs the store runs.
pub(crate) enum Access {
    /// No server holds the store: it is opened here.
    Offline(Arc<BackupManager>, store::lock::DirLock),
    /// A server holds it: the command goes to its REST API.
    Server(Remote),
}

/// Opens the store here through the same startup as the server, or, when a live process
/// holds it, reaches that process's REST API.
pub(crate) fn access(opts: &Options) -> anyhow::Result<Access> {
    use crate::startup::{self, Purpose, Started};
    match startup::open(opts, Purpose::Cli) {
        Ok(Started { backups, lock }) => Ok(Access::Offline(backups, lock)),
        Err(startup::Error::Locked(store::Error::Locked { pid, .. })) => {
            Ok(Access::Server(Remote::connect(opts, pid)?))
        }
        Err(e) => Err(e.into()),
    }
}

/// The REST API of the server that holds the store.
pub(crate) struct Remote {
    base: String,
    token: Option<String>,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Remote {
    /// Reaches the server at LISTEN_ADDR and checks that it is the process holding the store.
    fn connect(opts: &Options, holder: Option<i32>) -> anyhow::Result<Remote> {
        let mut addr = opts.listen_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let remote = Remote {
            base: format!("http://{addr}"),
            token: opts.admin_token.clone().filter(|t| !t.is_empty()),
            runtime: tokio::runtime::Builder::new_current_thread().enable_all().build()?,
            client: reqwest::Client::builder().timeout(Duration::from_secs(3600)).build()?,
        };
        let held_by = holder.map(|p| format!(" (pid {p})")).unwrap_or_default();
        let store = opts.storage_dir.display();
        let health = remote.call(Method::GET, "/api/health", None).with_context(|| {
            format!(
                "the store in {store} is held by a running eventvault{held_by}, and no server answered at {}; \
                 set LISTEN_ADDR (and ADMIN_TOKEN) to its address, or stop it to work offline",
                remote.base
            )
        })?;
        let pid = health["pid"].as_i64();
        if let (Some(holder), Some(pid)) = (holder, pid) {
            if i64::from(holder) != pid {
                bail!(
                    "the store in {store} is held by a running eventvault{held_by}, but the server at {} is pid {pid}; \
                     set LISTEN_ADDR to the address of pid {holder}",
                    remote.base
                );
            }
        }
        eprintln!("the store is held by the server at {}{held_by}: sending the command to it", remote.base);
        Ok(remote)
    }

    pub(crate) fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request =
            self.client.request(method, format!("{}{path}", self.base)).header(CLIENT_HEADER, CLI);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.runtime.block_on(async {
            let response = request.send().await?;
            let status = response.status();
            let value: Value = response.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                let message = value["error"]["message"].as_str().unwrap_or("no error message");
                bail!("the server answered {status}: {message}");
            }
            Ok(value)
        })
    }
}

/// A browse cache of this command only, removed when it ends.
struct LocalCache(browse::Cache, std::path::PathBuf);

impl LocalCache {
    fn new(config: &BackupConfig) -> Self {
        let dir = config.backup_dir.join(format!("{}browse-{}", catalog::TEMP_PREFIX, std::process::id()));
        LocalCache(browse::Cache::new(dir.clone(), u64::MAX), dir)
    }
}

impl Drop for LocalCache {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// What the server answers for a command that succeeded: the result and `"success": true`.
fn answer<T: serde::Serialize>(result: &T) -> Value {
    let mut value = serde_json::to_value(result).unwrap_or_default();
    if let Value::Object(fields) = &mut value {
        fields.insert("success".into(), json!(true));
    }
    value
}

/// A backup's name as one URL path segment: everything but unreserved characters is
/// percent-encoded, so a `?`, `#` or `%` in a name cannot change what the server is asked.
fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn total_store_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|r| r.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// A progress bar on stderr; hidden when stderr is not a terminal.
fn bar(total: u64, what: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if std::io::stderr().is_terminal() {
        let style = ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what);
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to restore without confirmation: pass --yes");
    }
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
