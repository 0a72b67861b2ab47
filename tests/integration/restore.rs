//! Restores from the drop-in folder, hostile archives, crashes, locks and the CLI.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{backup_cli, data_dir, files_in, wait_for, Api, Server};

/// The manifest and files of a valid archive.
pub(crate) fn unpack_in_memory(archive: &Path) -> (Value, Vec<(String, Vec<u8>)>) {
    let file = std::fs::File::open(archive).unwrap();
    let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(file));
    let mut manifest = Value::Null;
    let mut files = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if path == "manifest.json" {
            manifest = serde_json::from_slice(&data).unwrap();
        } else {
            files.push((path, data));
        }
    }
    (manifest, files)
}

/// A tar header whose name (and link name) bytes are set raw, so that hostile paths the tar
/// crate refuses to write can be built.
pub(crate) fn raw_header(path: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    if let Some(link) = link {
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(kind);
    header.set_cksum();
    header
}

/// Packs a tar.gz from a manifest, hostile extras (written first) and files.
pub(crate) fn pack(
    manifest: Option<&Value>,
    extras: &[(tar::Header, Vec<u8>)],
    files: &[(String, Vec<u8>)],
) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    if let Some(manifest) = manifest {
        let data = serde_json::to_vec(manifest).unwrap();
        builder
            .append(
                &raw_header("manifest.json", tar::EntryType::Regular, data.len() as u64, None),
                data.as_slice(),
            )
            .unwrap();
    }
    for (header, data) in extras {
        builder.append(header, data.as_slice()).unwrap();
    }
    for (path, data) in files {
        builder
            .append(&raw_header(path, tar::EntryType::Regular, data.len() as u64, None), data.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Drops bytes into the restore folder atomically (write a hidden file, rename it in).
pub(crate) fn drop_in(restore: &Path, name: &str, bytes: &[u8]) {
    let hidden = restore.join(format!(".{name}.part"));
    std::fs::write(&hidden, bytes).unwrap();
    std::fs::rename(&hidden, restore.join(name)).unwrap();
}

pub(crate) async fn wait_file(path: PathBuf, secs: u64) {
    let what = format!("{}", path.display());
    wait_for(secs, &what, || {
        let exists = path.exists();
        async move { exists.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn hostile_and_damaged_archives_go_to_failed_and_change_nothing() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("live", 2).await;
    let backup = api.backup("source").await;
    let valid_path = dir.path().join("backups").join(backup["name"].as_str().unwrap());
    let valid = std::fs::read(&valid_path).unwrap();
    let (manifest, files) = unpack_in_memory(&valid_path);
    api.seed("more", 1).await;
    let before = api.snapshot().await;

    let evil_abs = format!("/tmp/eventvault-evil-{}.txt", std::process::id());
    let payload = b"pwned".to_vec();
    let mut future = manifest.clone();
    future["formatVersion"] = json!(99);
    let mut flipped = valid.clone();
    let at = flipped.len() * 2 / 3;
    flipped[at] ^= 0x01;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated.tar.gz", valid[..valid.len() / 2].to_vec()),
        ("flipped.tar.gz", flipped),
        ("wrongsum.tar.gz", valid.clone()),
        (
            "dotdot.tar.gz",
            pack(
                Some(&manifest),
                &[(raw_header("db/../../evil.txt", tar::EntryType::Regular, 5, None), payload.clone())],
                &files,
            ),
        ),
        (
            "absolute.tar.gz",
            pack(
                Some(&manifest),
                &[(raw_header(&evil_abs, tar::EntryType::Regular, 5, None), payload.clone())],
                &files,
            ),
        ),
        (
            "symlink.tar.gz",
            pack(
                Some(&manifest),
                &[(raw_header("db/link", tar::EntryType::Symlink, 0, Some("/etc/passwd")), vec![])],
                &files,
            ),
        ),
        (
            "hardlink.tar.gz",
            pack(
                Some(&manifest),
                &[(raw_header("db/hard", tar::EntryType::Link, 0, Some("/etc/passwd")), vec![])],
                &files,
            ),
        ),
        ("nomanifest.tar.gz", pack(None, &[], &files)),
        ("future.tar.gz", pack(Some(&future), &[], &files)),
    ];
    let restore = dir.path().join("restore");
    let failed = restore.join("failed");
    for (name, bytes) in &cases {
        if *name == "wrongsum.tar.gz" {
            std::fs::write(restore.join(format!("{name}.sha256")), format!("{}  {name}\n", "0".repeat(64)))
                .unwrap();
        }
        drop_in(&restore, name, bytes);
        wait_file(failed.join(format!("{name}.error.txt")), 20).await;
        let error = std::fs::read_to_string(failed.join(format!("{name}.error.txt"))).unwrap();
        assert!(failed.join(name).exists(), "{name} moved to failed/");
        assert!(!restore.join(name).exists());
        let expected = match *name {
            "truncated.tar.gz" => "truncated",
            "wrongsum.tar.gz" => "sidecar",
            "dotdot.tar.gz" | "absolute.tar.gz" => "not a plain file under db/",
            "symlink.tar.gz" => "Symlink",
            "hardlink.tar.gz" => "Link",
            "nomanifest.tar.gz" => "not manifest.json",
            "future.tar.gz" => "format version 99",
            _ => "",
        };
        assert!(error.contains(expected), "{name}: {error}");
    }
    assert!(failed.join("wrongsum.tar.gz.sha256").exists(), "the sidecar moves along");
    assert_eq!(api.snapshot().await, before, "the live data is unchanged");
    assert!(!Path::new(&evil_abs).exists());
    assert!(!dir.path().join("evil.txt").exists() && !dir.path().join("storage/evil.txt").exists());
    assert!(files_in(&restore.join("archived")).is_empty());
    let storage = files_in(&dir.path().join("storage"));
    assert!(storage.iter().all(|f| !f.starts_with("staging-")), "staging cleaned: {storage:?}");
    let (_, health) = api.get("/api/health").await;
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn auto_restore_at_startup_restores_the_newest_and_archives_it() {
    let source = data_dir();
    let mut origin = Server::start(source.path());
    let api = Api::new(&origin);
    api.seed("old", 1).await;
    let older = api.backup("older").await;
    api.seed("new", 2).await;
    let newer = api.backup("newer").await;
    let expected = api.snapshot().await;
    origin.stop();

    let target = data_dir();
    let restore = target.path().join("restore");
    std::fs::create_dir_all(&restore).unwrap();
    let older_name = older["name"].as_str().unwrap();
    let newer_name = newer["name"].as_str().unwrap();
    std::fs::copy(source.path().join("backups").join(older_name), restore.join(older_name)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::copy(source.path().join("backups").join(newer_name), restore.join(newer_name)).unwrap();
    let server = Server::start(target.path());
    let api = Api::new(&server);
    assert_eq!(api.snapshot().await, expected);
    assert_eq!(files_in(&restore.join("archived")), [newer_name]);
    assert!(restore.join(older_name).exists(), "the older drop-in is left in place");
    assert!(server.log().contains("only the newest dropped archive is restored"));
}

#[tokio::test]
async fn drop_in_while_running_waits_for_a_slow_copy() {
    let source = data_dir();
    let origin = Server::start(source.path());
    let api = Api::new(&origin);
    api.seed("dropped", 2).await;
    let backup = api.backup("drop").await;
    let expected = api.snapshot().await;
    let name = backup["name"].as_str().unwrap().to_owned();
    let bytes = std::fs::read(source.path().join("backups").join(&name)).unwrap();

    let target = data_dir();
    let server = Server::start(target.path());
    let api = Api::new(&server);
    api.seed("replaced", 1).await;
    let restore = target.path().join("restore");
    // A slow copy: chunks with pauses shorter than the settle time (700 ms in tests).
    let path = restore.join(&name);
    let chunk = bytes.len().div_ceil(6);
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&path).unwrap();
        for part in bytes.chunks(chunk) {
            file.write_all(part).unwrap();
            file.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }
    wait_file(restore.join("archived").join(&name), 30).await;
    assert!(files_in(&restore.join("failed")).is_empty(), "the partial file was never read");
    assert_eq!(api.snapshot().await, expected);

    // Hidden files are ignored.
    std::fs::write(restore.join(".hidden.tar.gz"), &bytes).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(restore.join(".hidden.tar.gz").exists(), "a hidden file is left alone");
    assert_eq!(files_in(&restore.join("archived")), [name.as_str()]);

    // The fast path: an atomic rename into the folder.
    api.seed("again", 1).await;
    let second = format!("second-{name}");
    drop_in(&restore, &second, &bytes);
    wait_file(restore.join("archived").join(&second), 10).await;
    assert_eq!(api.snapshot().await, expected);
}

/// Restarts with a fault armed, makes the request that crashes, and restarts clean.
pub(crate) async fn crash_during(
    server: &mut Server,
    point: &str,
    method: Method,
    path: &str,
    body: Value,
) -> Api {
    server.kill9();
    let dir = server.dir.clone();
    let mut crashing =
        Server::start_with(&dir, server.port, &[("EVENTVAULT_FAULTS", &format!("{point}=crash"))]);
    let api = Api::new(&crashing);
    let sent = api.request(method, path).json(&body).send().await;
    if let Ok(r) = &sent {
        panic!("{point}: the process answered {} {:?}\n{}", r.status(), r.headers(), crashing.log());
    }
    crashing.kill9();
    *server = Server::try_start(&dir, server.port, &[])
        .unwrap_or_else(|(s, log)| panic!("{point}: {s:?} {}", log.join("\n")));
    Api::new(server)
}

#[tokio::test]
async fn a_crash_at_any_step_leaves_the_old_or_the_new_data() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("v1", 2).await;
    let backup = api.backup("v1").await;
    let name = backup["name"].as_str().unwrap().to_owned();
    let v1 = api.snapshot().await;
    api.seed("v2", 1).await;
    let v2 = api.snapshot().await;

    // A crash during a backup: no partial archive, the data is intact.
    for point in ["backup.after_checkpoint", "backup.before_rename"] {
        let api = crash_during(&mut server, point, Method::POST, "/api/backup/create", json!({})).await;
        assert_eq!(api.snapshot().await, v2, "{point}");
        let files: Vec<String> =
            files_in(&dir.path().join("backups")).into_iter().filter(|f| f != "audit.jsonl").collect();
        assert_eq!(files.len(), 2, "{point}: only the whole archive and its sidecar: {files:?}");
        assert!(!files_in(&dir.path().join("storage")).iter().any(|f| f.starts_with("checkpoint-")));
    }

    // A crash during a restore: before the swap the old data, from the marker on the new.
    for (point, expected) in [
        ("restore.after_staging", &v2),
        ("swap.after_marker", &v2),
        ("swap.after_old_moved", &v1),
        ("swap.after_new_in_place", &v1),
    ] {
        let api = crash_during(
            &mut server,
            point,
            Method::POST,
            "/api/backup/restore",
            json!({"backupName": name}),
        )
        .await;
        let now = api.snapshot().await;
        assert!(
            now == *expected,
            "{point}: expected the {} data",
            if expected == &v1 { "new" } else { "old" }
        );
        // The replaced store is kept as the undo point until startup has copied it.
        let storage_dir = dir.path().join("storage");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while files_in(&storage_dir) != ["db", "eventvault.lock"] && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let storage = files_in(&storage_dir);
        if storage != ["db", "eventvault.lock"] {
            panic!("{point}: {storage:?}\n{}", server.log());
        }
        assert_eq!(storage, ["db", "eventvault.lock"], "{point}: nothing left over: {storage:?}");
        if now == v1 {
            // Put v2 back for the next point, through the pre-restore backup the crash left.
            let (_, list) = api.get("/api/backup/list").await;
            let pre =
                list["backups"].as_array().unwrap().iter().find(|b| b["trigger"] == "pre-restore").unwrap()
                    ["name"]
                    .clone();
            let (status, body) = api.post("/api/backup/restore", json!({"backupName": pre})).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(api.snapshot().await, v2, "{point}: the pre-restore backup undoes it");
            // That restore's own pre-restore backup is written in the background: once it is,
            // every backup but the first goes, so the next point finds only its own.
            let storage_dir = dir.path().join("storage");
            wait_for(60, "the undo restore's safety copy", || {
                let done = !files_in(&storage_dir).iter().any(|f| f.starts_with("undo-"));
                async move { done.then_some(()) }
            })
            .await;
            let (_, list) = api.get("/api/backup/list").await;
            for b in list["backups"].as_array().unwrap().iter().filter(|b| b["name"] != name.as_str()) {
                api.call(Method::DELETE, &format!("/api/backups/{}", b["name"].as_str().unwrap()), None)
                    .await;
            }
        }
    }
}

#[tokio::test]
async fn stale_locks_are_cleared_and_logged() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    Api::new(&server).seed("x", 1).await;
    server.kill9();
    // kill -9 leaves both lock files behind, held by no one.
    assert!(dir.path().join("storage/db/LOCK").exists());
    assert!(dir.path().join("storage/eventvault.lock").exists());
    server.restart();
    let log = server.log();
    assert!(log.contains("cleared a stale lock"), "{log}");
    assert!(log.contains("removed a stale RocksDB lock file"), "{log}");
    assert_eq!(Api::new(&server).get("/api/events").await.1["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn writes_during_a_backup_succeed_and_acknowledged_ones_are_in_it() {
    let dir = data_dir();
    let server = Server::start_with(dir.path(), 0, &[("EVENTVAULT_FAULTS", "backup.after_checkpoint=sleep")]);
    let api = Api::new(&server);
    let event = api.create("/api/events", json!({"name": "busy"})).await;
    let id = event["id"].as_str().unwrap().to_owned();
    let writer = {
        let api = api.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..150 {
                let (status, body) = api.post(&format!("/api/events/{id}/guests"), json!({"i": i})).await;
                assert_eq!(status, StatusCode::CREATED, "write {i} during a backup: {body}");
                acked.push((std::time::Instant::now(), body["id"].as_str().unwrap().to_owned()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let began = std::time::Instant::now();
    let backup = api.backup("busy").await;
    let acked = writer.await.unwrap();
    let before: Vec<&String> = acked.iter().filter(|(t, _)| *t < began).map(|(_, id)| id).collect();
    assert!(!before.is_empty() && before.len() < acked.len(), "writes straddle the backup");

    // Restore the archive elsewhere and look for every write acknowledged before it began.
    let other = data_dir();
    let restore = other.path().join("restore");
    std::fs::create_dir_all(&restore).unwrap();
    let name = backup["name"].as_str().unwrap();
    std::fs::copy(dir.path().join("backups").join(name), restore.join(name)).unwrap();
    let copy = Server::start(other.path());
    let (_, page) = Api::new(&copy).get(&format!("/api/events/{id}/guests?limit=1000")).await;
    let restored: Vec<&str> =
        page["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    for id in before {
        assert!(restored.contains(&id.as_str()), "acknowledged write {id} is in the backup");
    }
}

fn cli(dir: &Path, args: &[&str]) -> std::process::Output {
    backup_cli(dir, args).output().unwrap()
}

#[tokio::test]
async fn cli_works_offline_and_refuses_while_a_server_runs() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("cli", 2).await;
    let expected = api.snapshot().await;

    let refused = cli(dir.path(), &["create"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("running eventvault") && stderr.contains(&format!("pid {}", server.pid())),
        "{stderr}"
    );
    // Read-only commands work beside a running server.
    assert!(cli(dir.path(), &["list"]).status.success());
    server.stop();

    let created = cli(dir.path(), &["create", "--label", "offline", "--keep"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(created["trigger"], "cli");
    assert_eq!(created["keep"], true);
    let name = created["name"].as_str().unwrap().to_owned();

    let listed = cli(dir.path(), &["list", "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["name"], name.as_str());
    let table = String::from_utf8(cli(dir.path(), &["list"]).stdout).unwrap();
    assert!(table.contains(name.trim_end_matches(".tar.gz")), "{table}");

    let shown: Value = serde_json::from_slice(&cli(dir.path(), &["show", &name]).stdout).unwrap();
    assert_eq!(shown["label"], "offline");
    let verified = cli(dir.path(), &["verify", &name]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    assert!(String::from_utf8_lossy(&verified.stdout).starts_with("OK"));

    // Change the data offline, then restore the archive with the CLI.
    let mut server = Server::start(dir.path());
    Api::new(&server).seed("later", 1).await;
    server.stop();
    let no_yes = cli(dir.path(), &["restore", &name]);
    assert!(!no_yes.status.success(), "without a terminal, --yes is required");
    assert!(String::from_utf8_lossy(&no_yes.stderr).contains("--yes"));
    let restored = cli(dir.path(), &["restore", &name, "--yes"]);
    assert!(restored.status.success(), "{}", String::from_utf8_lossy(&restored.stderr));
    let server = Server::start(dir.path());
    assert_eq!(Api::new(&server).snapshot().await, expected);

    // verify catches a flipped bit; bad names are refused.
    let path = dir.path().join("backups").join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();
    let damaged = cli(dir.path(), &["verify", &name]);
    assert!(!damaged.status.success());
    assert!(
        String::from_utf8_lossy(&damaged.stderr).contains("damaged"),
        "{}",
        String::from_utf8_lossy(&damaged.stderr)
    );
    let bad = cli(dir.path(), &["show", "../etc/passwd"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid backup name"));
}

#[tokio::test]
async fn a_restore_answers_before_its_safety_copy_and_a_crash_never_loses_the_undo_point() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("old", 2).await;
    let backup = api.backup("old").await;
    let name = backup["name"].as_str().unwrap().to_owned();
    let old = api.snapshot().await;
    api.seed("new", 2).await;
    let replaced = api.snapshot().await;
    server.stop();

    // The process dies after the swap, before the pre-restore backup is written.
    let crashing = Server::start_with(
        dir.path(),
        server.port,
        &[("EVENTVAULT_FAULTS", "restore.before_safety_copy=crash")],
    );
    // The answer may or may not come before the copy's thread crashes the process.
    let sent = Api::new(&crashing)
        .request(Method::POST, "/api/backup/restore")
        .json(&json!({"backupName": name}))
        .send()
        .await;
    let answer = match sent {
        Ok(response) => response.json::<Value>().await.unwrap_or_default(),
        Err(_) => Value::Null,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut crashing = crashing;
    while crashing.is_running() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let pre = answer["preRestoreBackup"].as_str().map(str::to_owned);
    crashing.kill9();
    let storage = files_in(&dir.path().join("storage"));
    let undo: Vec<&String> = storage.iter().filter(|f| f.starts_with("undo-")).collect();
    assert_eq!(undo.len(), 1, "the replaced store is kept: {storage:?}");
    if let Some(pre) = &pre {
        assert_eq!(undo[0], &format!("undo-{pre}"), "the answer names the backup to come");
    }

    // The next start writes the copy; restoring it gives back what the restore replaced.
    server = Server::start(dir.path());
    let api = Api::new(&server);
    assert_eq!(api.snapshot().await, old, "the restore itself went through");
    let pre = undo[0].trim_start_matches("undo-").to_owned();
    let archive = dir.path().join("backups").join(&pre);
    wait_for(60, "the pre-restore backup", || {
        let done = archive.is_file() && !dir.path().join("storage").join(format!("undo-{pre}")).exists();
        async move { done.then_some(()) }
    })
    .await;
    let (status, body) = api.post("/api/backup/restore", json!({"backupName": pre})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(api.snapshot().await, replaced, "the undo point held every write it replaced");
}

#[tokio::test]
async fn an_undo_point_whose_copy_fails_shows_in_health_and_its_name_is_never_reused() {
    let dir = data_dir();
    let server =
        Server::start_with(dir.path(), 0, &[("EVENTVAULT_FAULTS", "restore.before_safety_copy=error")]);
    let api = Api::new(&server);
    api.seed("old", 1).await;
    let name = api.backup("old").await["name"].as_str().unwrap().to_owned();
    api.seed("new", 1).await;
    let (status, restored) = api.post("/api/backup/restore", json!({"backupName": name})).await;
    assert_eq!(status, StatusCode::OK, "{restored}");
    let pre = restored["preRestoreBackup"].as_str().unwrap().to_owned();

    // The copy failed: health says which undo point waits, and the name answers 409, not 404.
    let health = wait_for(30, "health to show the undo point", || async {
        let (_, health) = api.get("/api/health").await;
        (health["status"] == "degraded").then_some(health)
    })
    .await;
    assert_eq!(health["backup"]["undoPending"], json!([pre]), "{health}");
    let (status, busy) = api.post("/api/backup/restore", json!({"backupName": pre})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{busy}");
    assert!(busy["error"]["message"].as_str().unwrap().contains("writing the pre-restore backup"), "{busy}");

    // A backup labelled like it, and a second restore in the same second, get other names.
    let manual = api.backup("pre-restore").await["name"].as_str().unwrap().to_owned();
    assert_ne!(manual, pre);
    let (_, again) = api.post("/api/backup/restore", json!({"backupName": name})).await;
    let second = again["preRestoreBackup"].as_str().unwrap().to_owned();
    assert_ne!(second, pre);
    assert_ne!(second, manual);
    let undo: Vec<String> =
        files_in(&dir.path().join("storage")).into_iter().filter(|f| f.starts_with("undo-")).collect();
    assert_eq!(undo, vec![format!("undo-{pre}"), format!("undo-{second}")], "both undo points are kept");
}

#[tokio::test]
async fn an_entry_named_like_an_undo_point_that_is_not_one_is_left_alone() {
    let dir = data_dir();
    let storage = dir.path().join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let file = storage.join("undo-backup_2020-01-01_000000_pre-restore.tar.gz");
    std::fs::write(&file, b"not a store").unwrap();
    std::fs::create_dir(storage.join("undo-not-a-backup-name")).unwrap();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (_, health) = api.get("/api/health").await;
    assert_eq!(health["backup"]["undoPending"], json!([]), "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a store", "left as it was");
    assert!(storage.join("undo-not-a-backup-name").is_dir());
    assert!(server.log().contains("left alone"), "{}", server.log());
}
