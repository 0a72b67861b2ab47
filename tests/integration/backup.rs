//! Backups and hot restores through the REST API.

use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{data_dir, files_in, Api, Server};

#[tokio::test]
async fn create_change_restore_without_restart() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let pid = server.pid();
    let api = Api::new(&server);
    api.seed("v1", 3).await;
    let before = api.snapshot().await;

    let created = api.backup("before-change").await;
    assert_eq!(created["success"], true);
    let name = created["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("backup_") && name.ends_with("_before-change.tar.gz"), "{name}");
    assert_eq!(created["trigger"], "manual");
    assert_eq!(created["lastSeq"], before["messages"].as_array().unwrap().len());
    assert_eq!(created["counts"]["events"], 3);
    assert_eq!(created["counts"]["records"], json!({"guests": 9, "payments": 3}));
    let archive = dir.path().join("backups").join(&name);
    assert_eq!(created["backupPath"], archive.display().to_string());
    assert_eq!(created["size"], std::fs::metadata(&archive).unwrap().len());

    // Anyone can check an archive with standard tools.
    let backups = dir.path().join("backups");
    for (tool, args) in [("sha256sum", vec!["-c", &format!("{name}.sha256")]), ("gzip", vec!["-t", &name])] {
        let out = Command::new(tool).args(&args).current_dir(&backups).output().unwrap();
        assert!(out.status.success(), "{tool}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let listing = Command::new("tar").args(["-tzf", &name]).current_dir(&backups).output().unwrap();
    assert!(listing.status.success());
    let listing = String::from_utf8(listing.stdout).unwrap();
    let entries: Vec<&str> = listing.lines().collect();
    assert_eq!(entries[0], "manifest.json");
    assert!(entries[1..].iter().all(|e| e.starts_with("db/")), "{entries:?}");
    assert!(entries.iter().any(|e| e.starts_with("db/CURRENT")));

    // Change everything, with an SSE reader open.
    api.seed("v2", 2).await;
    let (_, first) = api.get("/api/events?limit=1").await;
    let first_id = first["items"][0]["id"].as_str().unwrap().to_owned();
    api.call(Method::DELETE, &format!("/api/events/{first_id}"), None).await;
    let changed = api.snapshot().await;
    assert_ne!(changed, before);
    let stream = api.request(Method::GET, "/api/bus/stream?after=999999").send().await.unwrap();

    let (status, restored) = api.post("/api/backup/restore", json!({"backupName": name})).await;
    assert_eq!(status, StatusCode::OK, "{restored}");
    assert_eq!(restored["success"], true);
    assert_eq!(restored["restoredFrom"], name.as_str());
    let pre = restored["preRestoreBackup"].as_str().unwrap().to_owned();
    assert!(pre.contains("pre-restore"), "{pre}");
    assert!(restored["message"].as_str().unwrap().contains("no restart"));

    // Same process, the snapshot's data and bus, and the bus readers were told.
    assert_eq!(server.pid(), pid);
    assert_eq!(api.snapshot().await, before);
    let mut body = stream.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("event: replaced") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("replaced event")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains(&format!("\"lastSeq\":{}", created["lastSeq"])), "{seen}");

    // Writes go on from the restored log.
    let after = api.create("/api/events", json!({"name": "after"})).await;
    let (_, page) = api.get(&format!("/api/bus?after={}", created["lastSeq"])).await;
    assert_eq!(page["messages"][0]["data"], after);

    // The pre-restore backup undoes the restore (its changes, not the write just made). It is
    // written from the replaced store after the restore answered.
    let archive = dir.path().join("backups").join(&pre);
    crate::common::wait_for(60, "the pre-restore backup", || {
        let there = archive.is_file();
        async move { there.then_some(()) }
    })
    .await;
    let (_, list) = api.get("/api/backup/list").await;
    let pre_entry =
        list["backups"].as_array().unwrap().iter().find(|b| b["name"] == pre.as_str()).unwrap().clone();
    assert_eq!(pre_entry["trigger"], "pre-restore");
    let (status, _) = api.post("/api/backup/restore", json!({"backupName": pre})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.snapshot().await, changed);
}

#[tokio::test]
async fn list_show_download_delete_and_export_metadata() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("x", 1).await;
    let a = api.backup("first").await;
    api.seed("y", 1).await;
    let (status, b) = api.post("/api/backup/create", json!({"keep": true})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, plain) = api.call(Method::POST, "/api/backup/create", None).await;
    assert_eq!(status, StatusCode::CREATED, "an empty body is fine: {plain}");

    let (status, list) = api.get("/api/backup/list").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["success"], true);
    let backups = list["backups"].as_array().unwrap();
    let names: Vec<&str> = backups.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [plain["name"].as_str().unwrap(), b["name"].as_str().unwrap(), a["name"].as_str().unwrap()],
        "newest first"
    );
    for field in ["name", "path", "size", "sizeMB", "created", "label", "trigger", "lastSeq", "keep"] {
        assert!(backups[0].get(field).is_some(), "{field} in {}", backups[0]);
    }
    assert_eq!(backups[1]["keep"], true);
    assert_eq!(backups[2]["label"], "first");
    assert!(backups[2]["sizeMB"].as_str().unwrap().contains('.'));

    let (_, meta) = api.get("/api/backup/export-metadata").await;
    assert_eq!(meta["success"], true);
    assert_eq!(meta["metadata"]["backupCount"], 3);
    let total: u64 = backups.iter().map(|b| b["size"].as_u64().unwrap()).sum();
    assert_eq!(meta["metadata"]["totalSize"], total);
    assert_eq!(meta["metadata"]["oldestBackup"], backups[2]["created"]);
    assert_eq!(meta["metadata"]["newestBackup"], backups[0]["created"]);

    let name = a["name"].as_str().unwrap();
    let (status, manifest) = api.get(&format!("/api/backups/{name}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(manifest["formatVersion"], 1);
    assert_eq!(manifest["name"], name);
    assert!(manifest["files"].as_array().unwrap().iter().all(|f| f["sha256"].as_str().unwrap().len() == 64));
    assert!(manifest["rocksdbVersion"].is_string());

    let response = api.request(Method::GET, &format!("/api/backups/{name}/download")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/gzip");
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.as_ref(), std::fs::read(dir.path().join("backups").join(name)).unwrap());

    let (status, deleted) = api.call(Method::DELETE, &format!("/api/backups/{name}"), None).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    let files = files_in(&dir.path().join("backups"));
    assert!(!files.iter().any(|f| f.starts_with(name)), "archive and sidecar gone: {files:?}");
    assert_eq!(api.get(&format!("/api/backups/{name}")).await.0, StatusCode::NOT_FOUND);

    // Names: plain archive file names only.
    for (path, expected) in [
        ("/api/backups/..%2Fetc%2Fpasswd.tar.gz", StatusCode::BAD_REQUEST),
        ("/api/backups/backup.zip", StatusCode::NOT_FOUND),
        ("/api/backups/.hidden", StatusCode::BAD_REQUEST),
        ("/api/backups/..tar.gz", StatusCode::BAD_REQUEST),
        ("/api/backups/nope.tar.gz", StatusCode::NOT_FOUND),
        ("/api/backups/nope.tar.gz/download", StatusCode::NOT_FOUND),
    ] {
        assert_eq!(api.get(path).await.0, expected, "{path}");
    }
    for (body, expected) in [
        (json!({"backupName": "../../x.tar.gz"}), StatusCode::BAD_REQUEST),
        (json!({"backupName": "missing.tar.gz"}), StatusCode::NOT_FOUND),
        (json!({"backupName": 5}), StatusCode::BAD_REQUEST),
        (json!({}), StatusCode::BAD_REQUEST),
    ] {
        let (status, err) = api.post("/api/backup/restore", body.clone()).await;
        assert_eq!(status, expected, "{body}: {err}");
    }
    for body in [json!({"label": "a/b"}), json!({"label": ""}), json!({"label": 3}), json!({"lable": "typo"})]
    {
        let (status, err) = api.post("/api/backup/create", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
    }

    // A damaged archive is a 422 naming what is wrong.
    std::fs::write(dir.path().join("backups/broken.tar.gz"), b"not gzip at all").unwrap();
    let (status, err) = api.get("/api/backups/broken.tar.gz").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("broken.tar.gz"));
    let (status, err) = api.post("/api/backup/restore", json!({"backupName": "broken.tar.gz"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
}

#[tokio::test]
async fn one_backup_at_a_time() {
    let dir = data_dir();
    let server = Server::start_with(dir.path(), 0, &[("EVENTVAULT_FAULTS", "backup.after_checkpoint=sleep")]);
    let api = Api::new(&server);
    api.seed("x", 1).await;
    let slow = {
        let api = api.clone();
        tokio::spawn(async move { api.post("/api/backup/create", json!({"label": "slow"})).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = api.post("/api/backup/create", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("_slow.tar.gz"),
        "names the running backup: {body}"
    );
    let (_, health) = api.get("/api/health").await;
    assert!(health["backup"]["running"].as_str().unwrap().contains("slow"));
    assert_eq!(slow.await.unwrap().0, StatusCode::CREATED);
}

#[tokio::test]
async fn rotation_keeps_max_backups_and_spares_kept_ones() {
    let dir = data_dir();
    let server = Server::start_with(dir.path(), 0, &[("MAX_BACKUPS", "2")]);
    let api = Api::new(&server);
    let mut names = Vec::new();
    let (_, kept) = api.post("/api/backup/create", json!({"label": "kept", "keep": true})).await;
    for i in 0..4 {
        api.seed(&format!("r{i}"), 1).await;
        names.push(api.backup(&format!("n{i}")).await["name"].as_str().unwrap().to_owned());
    }
    let (_, list) = api.get("/api/backup/list").await;
    let listed: Vec<&str> =
        list["backups"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(listed, [names[3].as_str(), names[2].as_str(), kept["name"].as_str().unwrap()]);
    let files = files_in(&dir.path().join("backups"));
    let sidecars = files.iter().filter(|f| f.ends_with(".sha256")).count();
    assert_eq!(sidecars, 3, "sidecars go with their archives: {files:?}");
}

#[tokio::test]
async fn scheduled_backups_skip_when_nothing_changed() {
    let dir = data_dir();
    let server = Server::start_with(
        dir.path(),
        0,
        &[("AUTO_BACKUP_ENABLED", "true"), ("AUTO_BACKUP_INTERVAL", "1000")],
    );
    let api = Api::new(&server);
    api.seed("s", 1).await;
    let first = crate::common::wait_for(15, "a scheduled backup", || async {
        let (_, list) = api.get("/api/backup/list").await;
        list["backups"].as_array().unwrap().first().cloned()
    })
    .await;
    // At startup or on the first tick, depending on how fast the seed landed.
    assert!(first["trigger"] == "scheduled" || first["trigger"] == "startup", "{first}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let count = api.get("/api/backup/list").await.1["backups"].as_array().unwrap().len();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (_, list) = api.get("/api/backup/list").await;
    assert_eq!(list["backups"].as_array().unwrap().len(), count, "nothing changed, nothing taken: {list}");
    assert!(server.log().contains("nothing changed"), "{}", server.log());
    let (_, health) = api.get("/api/health").await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["backup"]["count"], count);
    assert!(health["backup"]["nextScheduled"].is_string());
    assert!(health["backup"]["lastDurationMs"].is_u64());
    assert_eq!(health["backup"]["lastError"], Value::Null);
}

#[tokio::test]
async fn a_restore_past_the_size_bound_is_refused() {
    let dir = data_dir();
    let server = Server::start_with(dir.path(), 0, &[("RESTORE_MAX_BYTES", "1000")]);
    let api = Api::new(&server);
    api.seed("big", 2).await;
    let name = api.backup("big").await["name"].as_str().unwrap().to_owned();
    api.seed("later", 1).await;
    let before = api.snapshot().await;
    let (status, body) = api.post("/api/backup/restore", json!({"backupName": name})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("more than the bound of 1000 bytes"),
        "{body}"
    );
    assert_eq!(api.snapshot().await, before);
    let storage = files_in(&dir.path().join("storage"));
    assert_eq!(storage, ["db", "eventvault.lock"], "no staging left: {storage:?}");
}
