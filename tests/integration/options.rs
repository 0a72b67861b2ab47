//! Options as a user gives them: values out of range and tokens that do not fit together are
//! refused at startup with a message naming the option, whether given as a flag or in the
//! environment; and `populate` opens the store as the server does, migrations included.

use std::path::Path;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{bin, command, data_dir, files_in, Api, Server};

/// Starts `serve` with these environment variables, expects it to exit with an error before
/// listening, and returns what it printed.
fn refused(envs: &[(&str, &str)]) -> String {
    let dir = data_dir();
    let envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    match Server::try_start(dir.path(), 0, &envs) {
        Ok(_) => panic!("serve started with {envs:?}; it must refuse"),
        Err((status, log)) => {
            assert!(status.is_some_and(|s| !s.success()), "{status:?}: {}", log.join("\n"));
            log.join("\n")
        }
    }
}

/// `eventvault serve ARGS` with nothing from the environment: its exit and stderr.
fn serve_with_args(args: &[&str]) -> (bool, String) {
    let dir = data_dir();
    let output = Command::new(bin())
        .arg("serve")
        .args(args)
        .env_clear()
        .env("STORAGE_DIR", dir.path().join("storage"))
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_compression_level_above_9_is_refused_as_flag_and_as_environment() {
    let log = refused(&[("BACKUP_COMPRESSION_LEVEL", "12")]);
    assert!(log.contains("--backup-compression-level") && log.contains("0..=9"), "{log}");
    let (ok, stderr) = serve_with_args(&["--backup-compression-level", "12"]);
    assert!(!ok);
    assert!(stderr.contains("--backup-compression-level") && stderr.contains("0..=9"), "{stderr}");
}

#[test]
fn an_auto_backup_interval_under_a_second_is_refused() {
    let log = refused(&[("AUTO_BACKUP_INTERVAL", "10")]);
    assert!(log.contains("AUTO_BACKUP_INTERVAL") && log.contains("at least 1000"), "{log}");
}

#[test]
fn a_read_token_without_an_admin_token_is_refused() {
    for envs in [&[("READ_TOKEN", "r")][..], &[("READ_TOKEN", "r"), ("ADMIN_TOKEN", "")]] {
        let log = refused(envs);
        assert!(log.contains("READ_TOKEN is set without ADMIN_TOKEN"), "{envs:?}: {log}");
    }
    let (ok, stderr) = serve_with_args(&["--read-token", "r"]);
    assert!(!ok);
    assert!(stderr.contains("READ_TOKEN is set without ADMIN_TOKEN"), "{stderr}");
}

#[test]
fn empty_tokens_count_as_unset() {
    // As docker-compose.yml passes them when they are not set.
    let dir = data_dir();
    let server = Server::start_with(dir.path(), 0, &[("READ_TOKEN", ""), ("ADMIN_TOKEN", "")]);
    drop(server);
    let server = Server::start_with(dir.path(), 0, &[("READ_TOKEN", "")]);
    drop(server);
}

/// `eventvault populate ARGS` on the folders of `dir`, with `envs`.
fn populate(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    command(dir, "populate", args).env("BLOCK_CACHE_MB", "16").envs(envs.iter().copied()).output().unwrap()
}

#[tokio::test]
async fn populate_migrates_an_older_store_first() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    Api::new(&server).seed("old", 2).await;
    server.stop();

    let migration = [("EVENTVAULT_TEST_MIGRATION", "ok")];
    let output = populate(dir.path(), &["--records", "20", "--events", "1"], &migration);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let backups = files_in(&dir.path().join("backups"));
    let pre: Vec<&String> = backups.iter().filter(|f| f.ends_with("_pre-migration.tar.gz")).collect();
    assert_eq!(pre.len(), 1, "populate takes the pre-migration backup: {backups:?}");

    // The old events were migrated; the new one was written at the new format, so a server
    // of the same build finds nothing left to migrate.
    let server = Server::start_with(dir.path(), 0, &migration);
    let api = Api::new(&server);
    let (status, events) = api.get("/api/events?limit=100").await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let events = events["items"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    let migrated: Vec<&Value> = events.iter().filter(|e| e["schemaVersion"] == 2).collect();
    assert_eq!(migrated.len(), 2, "{events:?}");
    assert!(migrated.iter().all(|e| e["name"].as_str().unwrap().starts_with("old-")), "{events:?}");
    let after = files_in(&dir.path().join("backups"));
    let pre_after = after.iter().filter(|f| f.ends_with("_pre-migration.tar.gz")).count();
    assert_eq!(pre_after, 1, "no second migration: {after:?}");
}
