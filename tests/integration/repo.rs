//! The backup repository (`BACKUP_REPO`): every backup is stored there too, each file once,
//! in a local folder or on a real S3 server (rclone's, on 127.0.0.1), checked with the
//! independent `aws` client.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::s3::{as_strs, S3Server};
use crate::common::{data_dir, files_in, Api, Server};

/// An event with `n` registrations of about 300 bytes each.
pub(crate) async fn event_with_records(api: &Api, n: usize) -> String {
    let event = api.create("/api/events", json!({"name": "Repo"})).await;
    let id = event["id"].as_str().unwrap().to_owned();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let docs: Vec<Value> = chunk.iter().map(|i| json!({"n": i, "pad": format!("{i:0>280}")})).collect();
        api.create(&format!("/api/events/{id}/guests/_batch"), Value::Array(docs)).await;
    }
    id
}

/// The `repo` part of a backup's answer, which must not be an error.
pub(crate) fn repo_copy(created: &Value) -> &Value {
    let repo = &created["repo"];
    assert!(repo["error"].is_null(), "the repository copy failed: {created}");
    repo
}

#[tokio::test]
async fn backups_go_to_a_folder_repository_and_a_second_one_sends_only_what_changed() {
    let dir = data_dir();
    let repo_dir = dir.path().join("repo");
    let url = format!("file://{}", repo_dir.display());
    let server = Server::start_with(dir.path(), 0, &[("BACKUP_REPO", url.as_str())]);
    let api = Api::new(&server);
    let event = event_with_records(&api, 5000).await;

    let first = api.backup("one").await;
    let one = repo_copy(&first);
    let id = first["name"].as_str().unwrap().trim_end_matches(".tar.gz");
    assert_eq!(one["id"], id, "{first}");
    let (files, sent) = (one["files"].as_u64().unwrap(), one["bytesSent"].as_u64().unwrap());
    assert_eq!(one["objectsSent"], files, "a first backup sends every file: {one}");
    assert_eq!(sent, one["bytesTotal"].as_u64().unwrap(), "{one}");
    assert!(sent > 100_000, "the store's data went up: {one}");
    assert_eq!(files_in(&repo_dir.join("backups")), vec![format!("{id}.json")]);

    // One record more: the second backup sends the new table files and the small files that
    // changed, never what is there already.
    api.create(&format!("/api/events/{event}/guests"), json!({"late": true})).await;
    let second = api.backup("two").await;
    let two = repo_copy(&second);
    let sent_again = two["bytesSent"].as_u64().unwrap();
    assert!(two["objectsSent"].as_u64().unwrap() < two["files"].as_u64().unwrap(), "{two}");
    assert!(sent_again * 20 < sent, "the second backup sent {sent_again} bytes, the first {sent}: {two}");
    assert_eq!(files_in(&repo_dir.join("backups")).len(), 2);

    // Every object a manifest names is there, under the SHA-256 of its content.
    for name in files_in(&repo_dir.join("backups")) {
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(repo_dir.join("backups").join(&name)).unwrap()).unwrap();
        let objects = manifest["objects"].as_array().unwrap();
        assert_eq!(objects.len(), manifest["backup"]["files"].as_array().unwrap().len());
        for (object, file) in objects.iter().zip(manifest["backup"]["files"].as_array().unwrap()) {
            let object = object.as_str().unwrap();
            let path = repo_dir.join("objects").join(&object[..2]).join(object);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(bytes.len() as u64, file["size"].as_u64().unwrap());
            assert_eq!(crate::event_backup::sha256_hex(&bytes), object);
        }
    }

    // The catalogue lists each backup in both places, the CLI's too.
    let (_, listed) = api.get("/api/backups").await;
    let places: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap().to_owned(), i["location"].as_str().unwrap().to_owned()))
        .collect();
    for backup in [id, two["id"].as_str().unwrap()] {
        for place in ["local", "repo"] {
            assert!(places.contains(&(backup.to_owned(), place.to_owned())), "{backup} {place}: {listed}");
        }
    }
    let repo_item =
        listed.as_array().unwrap().iter().find(|i| i["location"] == "repo" && i["id"] == id).unwrap();
    assert_eq!(repo_item["counts"], first["counts"], "{repo_item}");
    assert_eq!(repo_item["label"], "one", "{repo_item}");
    let out =
        crate::common::backup_cli(dir.path(), &["list", "--json"]).env("BACKUP_REPO", &url).output().unwrap();
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli.as_array().unwrap().iter().filter(|i| i["location"] == "repo").count(), 2, "{cli}");

    let (_, health) = api.get("/api/health").await;
    assert_eq!(health["backup"]["repo"]["url"], url, "{health}");
    assert!(health["backup"]["repo"]["lastError"].is_null(), "{health}");
    assert_eq!(health["backup"]["repo"]["lastBackup"]["id"], two["id"], "{health}");
    assert_eq!(health["status"], "ok", "{health}");
}

#[tokio::test]
async fn backups_go_to_s3_and_survive_the_server_being_down() {
    let mut s3 = S3Server::start();
    s3.create_bucket("eventvault");
    let env = s3.repo_env("eventvault", "site-a");
    let dir = data_dir();
    let server = Server::start_with(dir.path(), 0, &as_strs(&env));
    let api = Api::new(&server);
    let event = event_with_records(&api, 3000).await;

    let first = api.backup("one").await;
    let one = repo_copy(&first).clone();
    let listed = s3.list("eventvault", "site-a/");
    let manifests: Vec<&String> =
        listed.iter().map(|(k, _)| k).filter(|k| k.starts_with("site-a/backups/")).collect();
    assert_eq!(
        manifests,
        vec![&format!("site-a/backups/{}.json", one["id"].as_str().unwrap())],
        "{listed:?}"
    );
    let stored: u64 = listed.iter().filter(|(k, _)| k.starts_with("site-a/objects/")).map(|(_, s)| s).sum();
    assert_eq!(stored, one["bytesSent"].as_u64().unwrap(), "what the server holds is what was sent");

    // Down: the backup is still written locally, says why its copy failed, and health shows it.
    s3.stop();
    api.create(&format!("/api/events/{event}/guests"), json!({"while": "down"})).await;
    let (status, down) = api.post("/api/backup/create", json!({"label": "down"})).await;
    assert_eq!(status, StatusCode::CREATED, "{down}");
    let error = down["repo"]["error"].as_str().unwrap_or_else(|| panic!("no error: {down}"));
    assert!(error.contains("unavailable"), "{down}");
    assert!(dir.path().join("backups").join(down["name"].as_str().unwrap()).is_file());
    let (_, health) = api.get("/api/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(health["backup"]["repo"]["lastError"].is_string(), "{health}");

    // Back: the next backup goes through, sending what the last one could not.
    s3.start_again();
    let back = api.backup("back").await;
    let back_copy = repo_copy(&back);
    assert!(back_copy["bytesSent"].as_u64().unwrap() < one["bytesSent"].as_u64().unwrap(), "{back}");
    let (_, health) = api.get("/api/health").await;
    assert_eq!(health["status"], "ok", "{health}");
    let manifests = s3.list("eventvault", "site-a/backups/").len();
    assert_eq!(manifests, 2, "the backup taken while S3 was down is not in the repository");

    // The secret never shows: not in answers, health, the log or the audit trail.
    let secret = env.iter().find(|(k, _)| k == "AWS_SECRET_ACCESS_KEY").unwrap().1.clone();
    let audit = std::fs::read_to_string(dir.path().join("backups/audit.jsonl")).unwrap();
    for (what, text) in [
        ("answer", down.to_string()),
        ("health", health.to_string()),
        ("log", server.log()),
        ("audit", audit),
    ] {
        assert!(!text.contains(&secret), "the secret shows in the {what}");
    }
}

/// `eventvault restore ARGS` on the folders of `dir`, with the S3 variables `env`.
fn restore_cli(dir: &std::path::Path, env: &[(String, String)], args: &[&str]) -> std::process::Output {
    crate::common::command(dir, "restore", args).envs(env.iter().map(|(k, v)| (k, v))).output().unwrap()
}

#[tokio::test]
async fn a_fresh_machine_restores_from_s3_in_one_command_or_at_startup() {
    let s3 = S3Server::start();
    s3.create_bucket("eventvault");
    let env = s3.repo_env("eventvault", "prod");
    let old = data_dir();
    let mut server = Server::start_with(old.path(), 0, &as_strs(&env));
    let api = Api::new(&server);
    api.seed("fresh", 5).await;
    event_with_records(&api, 2000).await;
    // Two backups in one second, the later one with the name that sorts first: the newest
    // is told by its manifest, not its name.
    for _ in 0..5 {
        let early = api.backup("zzz").await["name"].as_str().unwrap().to_owned();
        let late = api.backup("last").await["name"].as_str().unwrap().to_owned();
        if early[..24] == late[..24] {
            break;
        }
    }
    let before = api.snapshot().await;
    server.stop();
    drop(old);

    // A new machine: an empty directory, the repository's URL, one command.
    let fresh = data_dir();
    let url = "s3://eventvault/prod";
    let out = restore_cli(fresh.path(), &s3.env(), &["--from", url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restored: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(restored["repo"], url, "{restored}");
    assert!(restored["backup"].as_str().unwrap().ends_with("_last"), "{restored}");
    let server = Server::start(fresh.path());
    assert_eq!(Api::new(&server).snapshot().await, before, "every event, record and message is back");

    // Onto a store that holds data, the command refuses and changes nothing.
    drop(server);
    let out = restore_cli(fresh.path(), &s3.env(), &["--from", url]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = restore_cli(fresh.path(), &s3.env(), &["--from", "s3://eventvault/nothing-here"]);
    assert!(!out.status.success(), "an empty repository is an error");

    // AUTO_RESTORE_FROM: an empty store is filled at startup; a store with data is left alone.
    let other = data_dir();
    let mut auto_env = s3.env();
    auto_env.push(("AUTO_RESTORE_FROM".into(), url.into()));
    let mut server = Server::start_with(other.path(), 0, &as_strs(&auto_env));
    assert_eq!(Api::new(&server).snapshot().await, before);
    assert!(server.log().contains("restored the newest backup into the empty store"), "{}", server.log());
    let api = Api::new(&server);
    api.create("/api/events", json!({"name": "after"})).await;
    let grown = api.snapshot().await;
    server.restart();
    assert_eq!(Api::new(&server).snapshot().await, grown, "nothing restored over data");
    assert!(server.log().contains("the store is not empty, so nothing is restored"), "{}", server.log());
}

#[tokio::test]
async fn a_backup_only_in_the_repository_restores_hot() {
    let dir = data_dir();
    let repo_dir = dir.path().join("repo");
    let url = format!("file://{}", repo_dir.display());
    let server = Server::start_with(dir.path(), 0, &[("BACKUP_REPO", url.as_str())]);
    let api = Api::new(&server);
    let event = event_with_records(&api, 1500).await;
    let created = api.backup("hot").await;
    let name = created["name"].as_str().unwrap().to_owned();
    let id = name.trim_end_matches(".tar.gz").to_owned();
    let at_backup = api.snapshot().await;

    // The local archive goes; the repository keeps its copy.
    let (status, body) = api.call(reqwest::Method::DELETE, &format!("/api/backups/{name}"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    api.create(&format!("/api/events/{event}/guests"), json!({"after": "backup"})).await;
    let changed = api.snapshot().await;
    assert_ne!(changed, at_backup);

    let (_, listed) = api.get("/api/backups?kind=full").await;
    let mine: Vec<&Value> = listed.as_array().unwrap().iter().filter(|i| i["id"] == id.as_str()).collect();
    assert_eq!(mine.len(), 1, "{listed}");
    assert_eq!(mine[0]["location"], "repo", "{listed}");

    let (status, dry) = api.post(&format!("/api/backups/{id}/restore"), json!({"dryRun": true})).await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!((&dry["mode"], &dry["dryRun"]), (&json!("swap"), &json!(true)), "{dry}");
    assert_eq!(dry["replacedWith"], created["counts"], "{dry}");
    assert_eq!(api.snapshot().await, changed, "a dry run changes nothing");

    let (status, report) = api.post(&format!("/api/backups/{id}/restore"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["success"], true, "{report}");
    assert!(report["preRestoreBackup"].as_str().unwrap().contains("pre-restore"), "{report}");
    assert_eq!(api.snapshot().await, at_backup, "the store is what the backup held");

    // Every option of a local archive works with a repository backup: a rehearsal of one
    // event's registrations, then a clone of that event under a new id.
    let guests = 1500;
    let (status, dry) = api
        .post(
            &format!("/api/backups/{id}/restore"),
            json!({"eventIds": [event], "specificCollections": ["guests"], "dryRun": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!((&dry["mode"], &dry["dryRun"]), (&json!("merge"), &json!(true)), "{dry}");
    assert_eq!(dry["totals"]["skipped"], guests, "every record is there already: {dry}");
    let (status, cloned) = api
        .post(&format!("/api/backups/{id}/restore"), json!({"eventIds": [event], "newEventId": "repo-clone"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{cloned}");
    assert_eq!(cloned["totals"]["created"], guests, "{cloned}");
    let (status, clone) = api.get("/api/events/repo-clone/guests?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{clone}");
    assert_eq!(clone["items"].as_array().unwrap().len(), 1000, "the clone holds the records");
    let (status, refused) =
        api.post(&format!("/api/backups/{id}/restore"), json!({"newEventId": "two-events-unnamed"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (status, _) = api.post("/api/backups/backup_1999-01-01_000000/restore", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn retention_prunes_the_repository_after_each_backup_and_sweeps_what_no_backup_names() {
    let dir = data_dir();
    let repo_dir = dir.path().join("repo");
    let url = format!("file://{}", repo_dir.display());
    let env = [
        ("BACKUP_REPO", url.as_str()),
        ("RETAIN_LAST", "2"),
        ("RETAIN_HOURLY", "0"),
        ("RETAIN_DAILY", "0"),
        ("RETAIN_WEEKLY", "0"),
        ("RETAIN_MONTHLY", "0"),
        ("RETAIN_YEARLY", "0"),
        ("REPO_SWEEP_GRACE_SECS", "0"),
    ];
    let server = Server::start_with(dir.path(), 0, &env);
    let api = Api::new(&server);
    let event = event_with_records(&api, 500).await;
    let (status, pinned) = api.post("/api/backup/create", json!({"label": "pinned", "keep": true})).await;
    assert_eq!(status, StatusCode::CREATED, "{pinned}");
    let mut ids = Vec::new();
    for i in 0..4 {
        api.create(&format!("/api/events/{event}/guests"), json!({"round": i})).await;
        ids.push(repo_copy(&api.backup(&format!("r{i}")).await)["id"].as_str().unwrap().to_owned());
    }
    let pinned_id = pinned["repo"]["id"].as_str().unwrap().to_owned();
    let mut expected =
        vec![format!("{pinned_id}.json"), format!("{}.json", ids[2]), format!("{}.json", ids[3])];
    expected.sort();
    assert_eq!(files_in(&repo_dir.join("backups")), expected, "the last two and the pinned one");

    // Every object left is named by a backup that is left, and every one they name is there.
    let mut named = std::collections::BTreeSet::new();
    for name in files_in(&repo_dir.join("backups")) {
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(repo_dir.join("backups").join(name)).unwrap()).unwrap();
        named.extend(manifest["objects"].as_array().unwrap().iter().map(|o| o.as_str().unwrap().to_owned()));
    }
    let mut stored = std::collections::BTreeSet::new();
    for folder in files_in(&repo_dir.join("objects")) {
        stored.extend(files_in(&repo_dir.join("objects").join(folder)));
    }
    assert_eq!(stored, named, "nothing unnamed is kept, nothing named is gone");

    // The dry run says why each backup stays.
    let out = crate::common::backup_cli(dir.path(), &["prune", "--dry-run", "--json"])
        .env("BACKUP_REPO", &url)
        .env("RETAIN_LAST", "1")
        .env("RETAIN_HOURLY", "0")
        .env("RETAIN_DAILY", "0")
        .env("RETAIN_WEEKLY", "0")
        .env("RETAIN_MONTHLY", "0")
        .env("RETAIN_YEARLY", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let verdicts: Vec<(String, bool, Value)> = plan["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_str().unwrap().to_owned(), b["keep"].as_bool().unwrap(), b["reasons"].clone()))
        .collect();
    assert_eq!(
        verdicts,
        vec![
            (ids[3].clone(), true, json!(["last", "newest"])),
            (ids[2].clone(), false, json!([])),
            (pinned_id.clone(), true, json!(["pinned"])),
        ],
        "{plan}"
    );
    assert_eq!(files_in(&repo_dir.join("backups")).len(), 3, "a dry run removes nothing");

    // What is left restores.
    let (status, report) =
        api.post(&format!("/api/backups/{}/restore", ids[2]), json!({"dryRun": true})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
}

/// Runs `cmd`, killing it after `secs`: a command that hangs fails the test instead of it.
fn output_within(mut cmd: std::process::Command, secs: u64) -> std::process::Output {
    use std::io::Read;
    let mut child =
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the command hung for {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    child.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_end(&mut stderr).unwrap();
    std::process::Output { status, stdout, stderr }
}

#[tokio::test]
async fn a_hostile_or_damaged_repository_never_costs_data_nor_hangs() {
    let dir = data_dir();
    let repo_dir = dir.path().join("repo");
    let url = format!("file://{}", repo_dir.display());
    let mut server = Server::start_with(dir.path(), 0, &[("BACKUP_REPO", url.as_str())]);
    let api = Api::new(&server);
    let event = event_with_records(&api, 800).await;
    let first = api.backup("first").await;
    let manifest_path =
        repo_dir.join("backups").join(format!("{}.json", repo_copy(&first)["id"].as_str().unwrap()));
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let objects: Vec<String> =
        manifest["objects"].as_array().unwrap().iter().map(|o| o.as_str().unwrap().to_owned()).collect();
    let object_path = |o: &str| repo_dir.join("objects").join(&o[..2]).join(o);
    let biggest = manifest["backup"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&objects)
        .max_by_key(|(f, _)| f["size"].as_u64().unwrap())
        .map(|(_, o)| o.clone())
        .unwrap();

    // An object emptied in place is written again by the next backup, which then restores.
    std::fs::write(object_path(&biggest), b"").unwrap();
    api.create(&format!("/api/events/{event}/guests"), json!({"n": "more"})).await;
    let second = api.backup("second").await;
    assert!(repo_copy(&second)["objectsSent"].as_u64().unwrap() >= 1);
    assert!(std::fs::metadata(object_path(&biggest)).unwrap().len() > 0, "the damaged object was replaced");
    let expected = api.snapshot().await;
    server.stop();
    let fresh = data_dir();
    let out = restore_cli(fresh.path(), &[], &["--from", &url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let check = Server::start(fresh.path());
    assert_eq!(Api::new(&check).snapshot().await, expected);
    drop(check);

    // A store that does not open is not "empty": never replaced, its files kept.
    let broken = data_dir();
    let db = broken.path().join("storage/db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("000123.sst"), b"precious, if damaged").unwrap();
    let out = restore_cli(broken.path(), &[], &["--from", &url]);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(db.join("000123.sst")).unwrap(), b"precious, if damaged");

    // Verification finds what is wrong: content changed in place (with --read-data), then a
    // size that does not match; each time naming the object and exiting non-zero.
    let size = std::fs::metadata(object_path(&biggest)).unwrap().len() as usize;
    std::fs::write(object_path(&biggest), vec![b'x'; size]).unwrap();
    backup_cli_ok(dir.path(), &url, &["verify", "--repo"]);
    let verify = |args: &[&str]| {
        crate::common::backup_cli(dir.path(), args).env("BACKUP_REPO", &url).output().unwrap()
    };
    let out = verify(&["verify", "--repo", "--read-data"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(said.contains(&biggest) && said.contains("does not match its checksum"), "{said}");
    std::fs::write(object_path(&biggest), b"short").unwrap();
    let out = verify(&["verify", "--repo"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(said.contains(&biggest) && said.contains("the manifest says"), "{said}");

    // A manifest that does not read is listed with its error, kept by prune, and stops the
    // sweep (the objects it names are unknown).
    let junk = repo_dir.join("backups/backup_2000-01-01_000000.json");
    std::fs::write(&junk, b"{not json").unwrap();
    let listed: Value = serde_json::from_str(&backup_cli_ok(dir.path(), &url, &["list", "--json"])).unwrap();
    let item = listed.as_array().unwrap().iter().find(|i| i["id"] == "backup_2000-01-01_000000").unwrap();
    assert_eq!(item["location"], "repo", "{item}");
    assert!(item["error"].as_str().unwrap().contains("not a JSON object"), "{item}");
    let pruned: Value = serde_json::from_str(&backup_cli_ok(dir.path(), &url, &["prune", "--json"])).unwrap();
    let kept =
        pruned["backups"].as_array().unwrap().iter().find(|b| b["id"] == "backup_2000-01-01_000000").unwrap();
    assert_eq!((&kept["keep"], &kept["reasons"]), (&json!(true), &json!(["unreadable"])), "{pruned}");
    assert!(pruned["sweepSkipped"].is_string(), "{pruned}");
    assert!(junk.exists());
    std::fs::remove_file(&junk).unwrap();

    // A FIFO in an object's place is refused at once, never waited on.
    let fifo_target = object_path(&biggest);
    std::fs::remove_file(&fifo_target).unwrap();
    let c = std::ffi::CString::new(fifo_target.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let empty = data_dir();
    let out = output_within(crate::common::command(empty.path(), "restore", &["--from", &url]), 20);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a regular file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!empty.path().join("storage/db").exists(), "nothing restored");

    // A prefix that clients would encode differently from what is listed is refused up front.
    let out = crate::common::backup_cli(dir.path(), &["prune", "--dry-run"])
        .env("BACKUP_REPO", "s3://bucket/50%")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("plain folder names"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn auto_restore_from_an_empty_repository_starts_the_server_to_take_the_first_backup() {
    let dir = data_dir();
    let repo_dir = dir.path().join("repo");
    let url = format!("file://{}", repo_dir.display());
    std::fs::create_dir_all(&repo_dir).unwrap();
    let server = Server::start_with(
        dir.path(),
        0,
        &[("BACKUP_REPO", url.as_str()), ("AUTO_RESTORE_FROM", url.as_str())],
    );
    assert!(server.log().contains("holds no backup yet"), "{}", server.log());
    let api = Api::new(&server);
    api.create("/api/events", json!({"name": "first"})).await;
    repo_copy(&api.backup("first").await);
}

/// `eventvault backup ARGS` with `BACKUP_REPO=url`, asserting success; returns stdout.
fn backup_cli_ok(dir: &std::path::Path, url: &str, args: &[&str]) -> String {
    let out = crate::common::backup_cli(dir, args).env("BACKUP_REPO", url).output().unwrap();
    assert!(
        out.status.success(),
        "backup {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Restores backup `id` from `url` on a fresh directory and returns what it serves.
async fn restored_snapshot(url: &str, id: &str) -> Value {
    let fresh = data_dir();
    let out = restore_cli(fresh.path(), &[], &["--from", url, "--backup", id]);
    assert!(out.status.success(), "{id}: {}", String::from_utf8_lossy(&out.stderr));
    let server = Server::start(fresh.path());
    Api::new(&server).snapshot().await
}

#[tokio::test]
async fn after_a_hot_restore_reused_file_numbers_never_mix_backups_up() {
    // facebook/rocksdb#8020: after a hot restore of an older store, RocksDB numbers new table
    // files as it did before, so the same name and size can hold other contents.
    let dir = data_dir();
    let repo_dir = dir.path().join("repo");
    let url = format!("file://{}", repo_dir.display());
    let server = Server::start_with(dir.path(), 0, &[("BACKUP_REPO", url.as_str())]);
    let api = Api::new(&server);
    let event = event_with_records(&api, 300).await;
    let a = api.backup("a").await;
    let state_a = api.snapshot().await;
    for i in 0..50 {
        api.create(&format!("/api/events/{event}/guests"), json!({"b": i, "pad": "x".repeat(200)})).await;
    }
    let b = api.backup("b").await;
    let state_b = api.snapshot().await;
    let (status, report) =
        api.post(&format!("/api/backups/{}/restore", a["name"].as_str().unwrap()), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    for i in 0..50 {
        api.create(&format!("/api/events/{event}/guests"), json!({"c": i, "pad": "y".repeat(200)})).await;
    }
    let c = api.backup("c").await;
    let state_c = api.snapshot().await;
    assert_ne!(state_b, state_c);
    for (backup, state) in [(&a, &state_a), (&b, &state_b), (&c, &state_c)] {
        let id = repo_copy(backup)["id"].as_str().unwrap();
        assert_eq!(&restored_snapshot(&url, id).await, state, "backup {id} restores what it held");
    }
    let verified = backup_cli_ok(dir.path(), &url, &["verify", "--repo", "--read-data"]);
    assert!(verified.starts_with("OK "), "{verified}");
}

#[tokio::test]
async fn a_crash_while_storing_or_pruning_leaves_a_repository_that_verifies_and_restores() {
    let dir = data_dir();
    let repo_dir = dir.path().join("repo");
    let url = format!("file://{}", repo_dir.display());
    let env = vec![
        ("BACKUP_REPO".to_owned(), url.clone()),
        ("RETAIN_LAST".to_owned(), "1".to_owned()),
        ("RETAIN_HOURLY".to_owned(), "0".to_owned()),
        ("RETAIN_DAILY".to_owned(), "0".to_owned()),
        ("RETAIN_WEEKLY".to_owned(), "0".to_owned()),
        ("RETAIN_MONTHLY".to_owned(), "0".to_owned()),
        ("RETAIN_YEARLY".to_owned(), "0".to_owned()),
        ("REPO_SWEEP_GRACE_SECS".to_owned(), "0".to_owned()),
    ];
    let mut server =
        Server::try_start(dir.path(), 0, &env).unwrap_or_else(|(_, log)| panic!("{}", log.join("\n")));
    let api = Api::new(&server);
    let event = event_with_records(&api, 300).await;
    let first = api.backup("first").await;
    let first_id = repo_copy(&first)["id"].as_str().unwrap().to_owned();
    let first_state = api.snapshot().await;
    let port = server.port;

    for point in ["repo.before_manifest", "prune.after_manifest"] {
        server.kill9();
        let mut faulty = env.clone();
        faulty.push(("EVENTVAULT_FAULTS".to_owned(), format!("{point}=crash")));
        let mut crashing = Server::try_start(dir.path(), port, &faulty)
            .unwrap_or_else(|(_, log)| panic!("{}", log.join("\n")));
        let crash_api = Api::new(&crashing);
        crash_api.create(&format!("/api/events/{event}/guests"), json!({"before": point})).await;
        let sent =
            crash_api.request(reqwest::Method::POST, "/api/backup/create").json(&json!({})).send().await;
        assert!(sent.is_err(), "{point}: the process died mid-backup");
        crashing.kill9();
        server =
            Server::try_start(dir.path(), port, &env).unwrap_or_else(|(_, log)| panic!("{}", log.join("\n")));

        // Whatever the crash left, the repository verifies and every backup it lists restores.
        let verified = backup_cli_ok(dir.path(), &url, &["verify", "--repo", "--read-data"]);
        assert!(verified.starts_with("OK "), "{point}: {verified}");
        let ids: Vec<String> = files_in(&repo_dir.join("backups"))
            .iter()
            .map(|n| n.trim_end_matches(".json").to_owned())
            .collect();
        assert!(!ids.is_empty(), "{point}: no backup left");
        for id in &ids {
            let state = restored_snapshot(&url, id).await;
            if *id == first_id {
                assert_eq!(state, first_state, "{point}");
            }
        }
    }
    // The next backup goes through, and the repository is pruned to it.
    let api = Api::new(&server);
    let last = api.backup("last").await;
    let last_id = repo_copy(&last)["id"].as_str().unwrap().to_owned();
    assert_eq!(files_in(&repo_dir.join("backups")), vec![format!("{last_id}.json")]);
    let verified = backup_cli_ok(dir.path(), &url, &["verify", "--repo", "--read-data"]);
    assert!(verified.starts_with("OK "), "{verified}");
}

#[tokio::test]
async fn a_backup_only_in_the_repository_exports_as_an_archive_that_any_restore_folder_takes() {
    let dir = data_dir();
    let repo_dir = dir.path().join("repo");
    let url = format!("file://{}", repo_dir.display());
    let server = Server::start_with(dir.path(), 0, &[("BACKUP_REPO", url.as_str())]);
    let api = Api::new(&server);
    event_with_records(&api, 400).await;
    let created = api.backup("export").await;
    let name = created["name"].as_str().unwrap().to_owned();
    let expected = api.snapshot().await;
    let (status, body) = api.call(reqwest::Method::DELETE, &format!("/api/backups/{name}"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Through the API: the archive format, named as the backup.
    let response =
        api.request(reqwest::Method::GET, &format!("/api/backups/{name}/download")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let disposition = response.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.contains(&name), "{disposition}");
    let bytes = response.bytes().await.unwrap();
    let listing = std::process::Command::new("tar")
        .args(["-tzf", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut tar| {
            use std::io::Write;
            tar.stdin.take().unwrap().write_all(&bytes)?;
            tar.wait_with_output()
        })
        .unwrap();
    let entries = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(entries.starts_with("manifest.json\n") && entries.contains("db/CURRENT"), "{entries}");
    drop(server);

    // Through the CLI, into a fresh machine's restore folder: it restores at startup.
    let out = dir.path().join("exported.tar.gz");
    let id = name.trim_end_matches(".tar.gz");
    backup_cli_ok(dir.path(), &url, &["export", id, "-o", out.to_str().unwrap()]);
    let fresh = data_dir();
    std::fs::create_dir_all(fresh.path().join("restore")).unwrap();
    std::fs::copy(&out, fresh.path().join("restore").join(&name)).unwrap();
    let server = Server::start(fresh.path());
    assert_eq!(Api::new(&server).snapshot().await, expected);
}

#[tokio::test]
async fn with_max_backups_0_every_backup_lives_in_the_repository_only() {
    // Without a repository, there would be no backups at all: refused at startup.
    let dir = data_dir();
    let refused = Server::try_start(dir.path(), 0, &[("MAX_BACKUPS".into(), "0".into())]);
    let (_, log) = refused.err().expect("MAX_BACKUPS=0 without BACKUP_REPO must not start");
    assert!(log.join("\n").contains("BACKUP_REPO"), "{log:?}");

    let repo_dir = dir.path().join("repo");
    let url = format!("file://{}", repo_dir.display());
    let env = [("BACKUP_REPO", url.as_str()), ("MAX_BACKUPS", "0")];
    let server = Server::start_with(dir.path(), 0, &env);
    let api = Api::new(&server);
    let event = event_with_records(&api, 1500).await;
    let created = api.backup("only-there").await;
    let id = created["repo"]["id"].as_str().unwrap_or_else(|| panic!("{created}")).to_owned();
    assert!(created["sha256"].is_null(), "no local archive: {created}");
    assert!(created["backupPath"].as_str().unwrap().starts_with(&url), "{created}");
    let archives: Vec<String> =
        files_in(&dir.path().join("backups")).into_iter().filter(|f| f.ends_with(".tar.gz")).collect();
    assert!(archives.is_empty(), "no archive is written: {archives:?}");
    let at_backup = api.snapshot().await;

    // Health counts the repository's backups and the bytes they take.
    let (_, health) = api.get("/api/health").await;
    let repo = &health["backup"]["repo"];
    assert_eq!(repo["backups"], 1, "{health}");
    let stored = repo["sizeBytes"].as_u64().unwrap_or_else(|| panic!("{health}"));
    assert_eq!(stored, created["repo"]["bytesSent"].as_u64().unwrap(), "{health}");

    // A restore takes its undo point in the repository too, and is undone from there.
    api.create(&format!("/api/events/{event}/guests"), json!({"after": "backup"})).await;
    let changed = api.snapshot().await;
    let (status, report) = api.post(&format!("/api/backups/{id}/restore"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(api.snapshot().await, at_backup);
    let pre = report["preRestoreBackup"].as_str().unwrap().trim_end_matches(".tar.gz").to_owned();
    // Written after the restore answered, from the replaced store.
    let manifests = repo_dir.join("backups");
    crate::common::wait_for(60, "the pre-restore backup in the repository", || {
        let there = files_in(&manifests).contains(&format!("{pre}.json"));
        async move { there.then_some(()) }
    })
    .await;
    // The manifest lands before the copy's thread ends: until then the undo point is pending
    // (a restore of it would be busy).
    crate::common::wait_for(60, "the pre-restore backup finished", || async {
        let (_, health) = api.get("/api/health").await;
        let done = health["backup"]["undoPending"].as_array().is_some_and(|p| p.is_empty())
            && health["backup"]["running"].is_null();
        done.then_some(())
    })
    .await;
    let (status, undone) = api.post(&format!("/api/backups/{pre}/restore"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{undone}");
    assert_eq!(api.snapshot().await, changed, "the undo point holds the data the restore replaced");
    let archives: Vec<String> =
        files_in(&dir.path().join("backups")).into_iter().filter(|f| f.ends_with(".tar.gz")).collect();
    assert!(archives.is_empty(), "{archives:?}");
}

#[tokio::test]
async fn repo_max_mbps_caps_what_a_backup_sends() {
    let dir = data_dir();
    let repo_dir = dir.path().join("repo");
    let url = format!("file://{}", repo_dir.display());
    let server = Server::start_with(dir.path(), 0, &[("BACKUP_REPO", url.as_str()), ("REPO_MAX_MBPS", "1")]);
    let api = Api::new(&server);
    // Records that do not compress: about 2.4 MB of tables.
    incompressible_records(&api, 8, 320).await;
    let created = api.backup("capped").await;
    let copy = repo_copy(&created);
    let (sent, took) = (copy["bytesSent"].as_u64().unwrap(), copy["durationMs"].as_u64().unwrap());
    assert!(sent > 1_500_000, "enough to measure: {copy}");
    // A lower bound only: a slow machine can take longer, never less.
    assert!(took * 1000 >= sent * 8 / 10, "{sent} bytes at 1 MB/s took {took} ms: {copy}");
    let (status, _) = api.get("/api/health").await;
    assert_eq!(status, StatusCode::OK);
}

/// `batches` of 1000 records of `bytes` random hex digits each, in a new event.
async fn incompressible_records(api: &Api, batches: usize, bytes: usize) {
    let event = api.create("/api/events", json!({"name": "Noise"})).await;
    let path = format!("/api/events/{}/guests/_batch", event["id"].as_str().unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..batches {
        let docs: Vec<Value> = (0..1000)
            .map(|_| {
                let pad: String = (0..bytes.div_ceil(16))
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        format!("{x:016x}")
                    })
                    .collect();
                json!({ "pad": pad })
            })
            .collect();
        api.create(&path, Value::Array(docs)).await;
    }
}

#[tokio::test]
async fn a_table_file_larger_than_one_request_goes_up_in_parts() {
    let dir = data_dir();
    let repo_dir = dir.path().join("repo");
    let url = format!("file://{}", repo_dir.display());
    let server = Server::start_with(dir.path(), 0, &[("BACKUP_REPO", url.as_str())]);
    let api = Api::new(&server);
    // About 24 MB of tables that LZ4 cannot shrink: a table file larger than what goes up
    // in one request.
    incompressible_records(&api, 3, 8000).await;
    let created = api.backup("big").await;
    let copy = repo_copy(&created);
    assert_eq!(copy["objectsSent"], copy["files"], "{copy}");
    let objects = repo_dir.join("objects");
    let mut biggest = 0;
    for prefix in files_in(&objects) {
        for object in files_in(&objects.join(&prefix)) {
            biggest = biggest.max(std::fs::metadata(objects.join(&prefix).join(object)).unwrap().len());
        }
    }
    assert!(biggest > 8 << 20, "the biggest object is {biggest} bytes");
    let verified = backup_cli_ok(dir.path(), &url, &["verify", "--repo", "--read-data"]);
    assert!(verified.contains("1 backup"), "{verified}");
}
