//! What an attack on the hostile-input fixes found: a drop-in restored again and again, the
//! backup just taken rotated out by planted archives, a repeated `metadata`, a file swapped
//! between the two passes of an event restore, documents the registry cannot update, bloated
//! manifests and metadata, oversized audit lines, link loops and forged log lines.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{data_dir, files_in, Api, Server};
use crate::event_backup::{event_dir, sha256_hex};
use crate::restore::{drop_in, wait_file};

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn read_gz(path: &Path) -> String {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
    text
}

/// Writes `text` gzipped as event backup `event_{tag}_backup_1.json.gz` with its sidecar.
fn plant_event(dir: &Path, tag: &str, text: &str) -> String {
    let id = format!("event_{tag}_backup_1");
    let name = format!("{id}.json.gz");
    let bytes = gz(text.as_bytes());
    std::fs::write(event_dir(dir).join(&name), &bytes).unwrap();
    std::fs::write(
        event_dir(dir).join(format!("{name}.sha256")),
        format!("{}  {name}\n", sha256_hex(&bytes)),
    )
    .unwrap();
    id
}

/// An event with two guests, backed up: (event id, backup id, the backup's JSON).
async fn backed_up_event(api: &Api, dir: &Path) -> (String, String, String) {
    let event = api.create("/api/events", json!({"name": "Gala"})).await;
    let id = event["id"].as_str().unwrap().to_owned();
    api.create(&format!("/api/events/{id}/guests/_batch"), json!([{"n": "Ann"}, {"n": "Bob"}])).await;
    let (status, backup) = api.post(&format!("/api/events/{id}/backup"), json!({})).await;
    assert!(status.is_success(), "{backup}");
    let backup_id = backup["backup"]["id"].as_str().or(backup["id"].as_str()).unwrap().to_owned();
    let text = read_gz(&event_dir(dir).join(format!("{backup_id}.json.gz")));
    (id, backup_id, text)
}

async fn restores_from_the_restore_folder(api: &Api) -> usize {
    let (status, history) = api.get("/api/backup/history?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{history}");
    history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "restore" && e["options"]["from"] == "restore folder")
        .count()
}

#[tokio::test]
async fn a_dropped_archive_that_cannot_be_filed_away_is_restored_once() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("drop", 1).await;
    let name = api.backup("src").await["name"].as_str().unwrap().to_owned();
    let bytes = std::fs::read(dir.path().join("backups").join(&name)).unwrap();
    let restore = dir.path().join("restore");
    // `archived` is a file, so a restored archive cannot move there.
    std::fs::write(restore.join("archived"), b"not a folder").unwrap();
    drop_in(&restore, "stuck.tar.gz", &bytes);
    let api2 = Api::new(&server);
    crate::common::wait_for(20, "the restore", || async {
        (restores_from_the_restore_folder(&api2).await == 1).then_some(())
    })
    .await;
    // A write after the restore survives: the archive is not restored over it again.
    let event = api.create("/api/events", json!({"name": "after the restore"})).await;
    let id = event["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(restores_from_the_restore_folder(&api).await, 1, "restored once");
    assert_eq!(api.get(&format!("/api/events/{id}")).await.0, StatusCode::OK);
    let left = files_in(&restore);
    assert!(!left.iter().any(|f| f == "stuck.tar.gz"), "hidden, not left to be taken up: {left:?}");
    let hidden = files_in(&restore.join(".claimed"));
    assert!(hidden.iter().any(|f| f.starts_with(".unfiled-")), "{hidden:?}");

    // Long names are filed under names that fit, twice over (the second gets a stamp).
    std::fs::remove_file(restore.join("archived")).unwrap();
    let long = format!("{}.tar.gz", "K".repeat(238));
    for round in 1..=2 {
        drop_in(&restore, &long, &bytes);
        let api3 = Api::new(&server);
        crate::common::wait_for(20, "the long-named restore", || async {
            (restores_from_the_restore_folder(&api3).await == 1 + round).then_some(())
        })
        .await;
        crate::common::wait_for(10, "the long name filed", || async {
            (!restore.join(&long).exists()).then_some(())
        })
        .await;
    }
    let archived = files_in(&restore.join("archived"));
    assert_eq!(archived.iter().filter(|f| f.ends_with(".tar.gz")).count(), 2, "{archived:?}");
    assert!(archived.iter().all(|f| f.len() <= 255));
}

#[tokio::test]
async fn planted_archives_never_rotate_out_the_backup_just_taken() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("rot", 1).await;
    let real = api.backup("real").await["name"].as_str().unwrap().to_owned();
    let (mut manifest, _) = crate::restore::unpack_in_memory(&dir.path().join("backups").join(&real));
    manifest["createdAt"] = json!("9999-12-31T00:00:00.000Z");
    manifest["files"] = json!([]);
    for i in 0..10 {
        let bytes = crate::restore::pack(Some(&manifest), &[], &[]);
        std::fs::write(dir.path().join("backups").join(format!("future{i:02}.tar.gz")), bytes).unwrap();
    }
    // A date that is no date is a damaged manifest, listed with its error.
    manifest["createdAt"] = json!("zzz");
    std::fs::write(
        dir.path().join("backups").join("nodate.tar.gz"),
        crate::restore::pack(Some(&manifest), &[], &[]),
    )
    .unwrap();
    let created = api.backup("important").await;
    let name = created["name"].as_str().unwrap();
    assert!(!created["rotated"].as_array().unwrap().iter().any(|r| r == name), "{created}");
    assert!(dir.path().join("backups").join(name).exists(), "the backup just taken is kept");
    let (_, list) = api.get("/api/backup/list").await;
    let nodate = list["backups"].as_array().unwrap().iter().find(|b| b["name"] == "nodate.tar.gz").unwrap();
    assert!(nodate["error"].as_str().unwrap().contains("createdAt"), "{nodate}");
}

#[tokio::test]
async fn event_backups_with_repeated_parts_or_documents_the_registry_cannot_update_are_refused() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (event, _, text) = backed_up_event(&api, dir.path()).await;
    let other = api.create("/api/events", json!({"name": "Other"})).await["id"].as_str().unwrap().to_owned();
    let metadata_end = text.find(",\"eventDocument\":").unwrap();
    let metadata = &text["{\"metadata\":".len()..metadata_end];
    // The document of one event behind the metadata of another.
    let second =
        metadata.replacen(&format!("\"eventId\":\"{event}\""), &format!("\"eventId\":\"{other}\""), 1);
    let repeated = text.replacen(",\"collections\":", &format!(",\"metadata\":{second},\"collections\":"), 1);
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let cases = [
        ("repeated", repeated, "appears twice"),
        ("version", text.replacen("\"version\":1", "\"version\":18446744073709551615", 1), "version"),
        ("deep", text.replacen("\"n\":\"Ann\"", &format!("\"n\":{deep}"), 1), "does not parse"),
        (
            "name",
            text.replacen("\"eventName\":\"Gala\"", &format!("\"eventName\":\"{}\"", "x".repeat(5000)), 1),
            "eventName",
        ),
    ];
    let before = api.snapshot().await;
    for (tag, crafted, why) in cases {
        assert_ne!(crafted, text, "{tag}: the file was changed");
        let id = plant_event(dir.path(), tag, &crafted);
        for body in [json!({"dryRun": true}), json!({})] {
            let (status, answer) = api.post(&format!("/api/backups/{id}/restore"), body).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{tag}: {answer}");
            assert!(answer["error"]["message"].as_str().unwrap().contains(why), "{tag}: {answer}");
        }
    }
    assert_eq!(api.snapshot().await, before, "nothing changed");
}

#[tokio::test]
async fn a_file_swapped_between_the_passes_of_an_event_restore_is_not_what_is_restored() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    let (event, backup, text) = backed_up_event(&api, dir.path()).await;
    let (status, _) = api.call(reqwest::Method::DELETE, &format!("/api/events/{event}"), None).await;
    assert_eq!(status, StatusCode::OK);
    // The restore sleeps between its checking pass and its applying pass.
    server.stop();
    server.envs.push(("EVENTVAULT_FAULTS".into(), "event_restore.between_passes=sleep".into()));
    server.restart();
    let api = Api::new(&server);
    let path = event_dir(dir.path()).join(format!("{backup}.json.gz"));
    let evil = text.replacen("\"n\":\"Ann\"", "\"n\":\"NEVER VERIFIED\"", 1);
    let swap = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let tmp = path.with_extension("swap");
        std::fs::write(&tmp, gz(evil.as_bytes())).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    });
    let (status, answer) = api.post(&format!("/api/backups/{backup}/restore"), json!({})).await;
    swap.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, guests) = api.get(&format!("/api/events/{event}/guests")).await;
    let names: Vec<&Value> = guests["items"].as_array().unwrap().iter().map(|g| &g["n"]).collect();
    assert_eq!(names, [&json!("Ann"), &json!("Bob")], "what was checked is what was restored");
}

#[tokio::test]
async fn oversized_manifests_audit_lines_link_loops_and_forged_names_are_contained() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("misc", 1).await;
    let backups = dir.path().join("backups");
    let real = api.backup("real").await["name"].as_str().unwrap().to_owned();
    let (mut manifest, files) = crate::restore::unpack_in_memory(&backups.join(&real));

    // A manifest of 5 MiB (a junk field): over the bound, whatever its JSON holds.
    manifest["junk"] = json!("x".repeat(5 << 20));
    let fat = crate::restore::pack(Some(&manifest), &[], &files);
    std::fs::write(backups.join("fat.tar.gz.sha256"), format!("{}  fat.tar.gz\n", sha256_hex(&fat))).unwrap();
    std::fs::write(backups.join("fat.tar.gz"), fat).unwrap();
    let (status, answer) = api.post("/api/backup/restore", json!({"backupName": "fat.tar.gz"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("more than a manifest can be"), "{answer}");

    // A loop of links in place of a sidecar: a 422, not a 500.
    std::fs::copy(backups.join(&real), backups.join("loop.tar.gz")).unwrap();
    std::os::unix::fs::symlink("loop.tar.gz.sha256", backups.join("loop.tar.gz.sha256")).unwrap();
    let (status, answer) = api.post("/api/backup/restore", json!({"backupName": "loop.tar.gz"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");

    // An audit line of 1 MiB (an older version quoted names whole) is skipped.
    let huge = json!({"time": "2024-01-01T00:00:00.000Z", "action": "restore", "kind": "full",
        "target": "x".repeat(1 << 20), "options": null, "status": "failed", "durationMs": 1,
        "error": null, "actor": "system"});
    let mut audit = std::fs::OpenOptions::new().append(true).open(backups.join("audit.jsonl")).unwrap();
    writeln!(audit, "{huge}").unwrap();
    let (status, history) = api.get("/api/backup/history?limit=1000").await;
    assert_eq!(status, StatusCode::OK);
    assert!(history.to_string().len() < 256 << 10, "history answered {} bytes", history.to_string().len());

    // A dropped name that carries a newline cannot forge a line in the log or the note.
    let restore = dir.path().join("restore");
    let forged = "loop\nFORGED LINE.tar.gz";
    std::os::unix::fs::symlink(format!("{forged}.sha256"), restore.join(format!("{forged}.sha256"))).unwrap();
    drop_in(&restore, forged, &std::fs::read(backups.join(&real)).unwrap());
    let note = restore.join("failed").join(format!("{forged}.error.txt"));
    wait_file(note.clone(), 20).await;
    let text = std::fs::read_to_string(&note).unwrap();
    assert!(!text.lines().any(|l| l.starts_with("FORGED")), "{text:?}");
    assert!(!server.log().lines().any(|l| l.starts_with("FORGED")), "the log has a forged line");
}

#[tokio::test]
async fn a_crash_between_a_drop_in_restore_and_its_filing_never_restores_it_again() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("old", 1).await;
    let name = api.backup("src").await["name"].as_str().unwrap().to_owned();
    let bytes = std::fs::read(dir.path().join("backups").join(&name)).unwrap();
    api.seed("new", 1).await;
    server.stop();
    server.envs.push(("EVENTVAULT_FAULTS".into(), "dropin.before_filing=crash".into()));
    server.restart();
    let restore = dir.path().join("restore");
    let sidecar = format!("{}  once.tar.gz\n", sha256_hex(&bytes));
    std::fs::write(restore.join("once.tar.gz.sha256"), sidecar).unwrap();
    drop_in(&restore, "once.tar.gz", &bytes);
    // The server restores it, then dies before filing it.
    for _ in 0..600 {
        if server.log().contains("crashing at dropin.before_filing") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.log().contains("crashing at dropin.before_filing"), "{}", server.log());
    server.envs.clear();
    server.restart();
    let api = Api::new(&server);
    let restored = api.snapshot().await;
    let event = api.create("/api/events", json!({"name": "after"})).await["id"].as_str().unwrap().to_owned();
    let note = std::fs::read_to_string(restore.join("failed").join("once.tar.gz.error.txt")).unwrap();
    assert!(note.contains("not restored again"), "{note}");
    assert!(restore.join("failed").join("once.tar.gz.sha256").exists(), "the sidecar went along");
    // Another restart restores nothing: the write after the first restore stays.
    server.restart();
    let api = Api::new(&server);
    assert_eq!(api.get(&format!("/api/events/{event}")).await.0, StatusCode::OK);
    assert_ne!(api.snapshot().await, restored, "the write is there");
    assert!(files_in(&restore.join(".claimed")).is_empty());
}

#[tokio::test]
async fn an_event_backup_larger_than_a_restore_may_use_is_not_copied_whole() {
    let dir = data_dir();
    let server = Server::start_with(dir.path(), 0, &[("RESTORE_MAX_BYTES", "200000")]);
    let api = Api::new(&server);
    let (_, _, text) = backed_up_event(&api, dir.path()).await;
    // A valid backup followed by 2 MiB of bytes, its sidecar matching the whole file.
    let mut bytes = gz(text.as_bytes());
    bytes.extend(std::iter::repeat_n(0x5a, 2 << 20));
    let name = "event_padded_backup_1.json.gz";
    std::fs::write(event_dir(dir.path()).join(name), &bytes).unwrap();
    std::fs::write(
        event_dir(dir.path()).join(format!("{name}.sha256")),
        format!("{}  {name}\n", sha256_hex(&bytes)),
    )
    .unwrap();
    let (status, answer) = api.post("/api/backups/event_padded_backup_1/restore", json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("larger than the space"), "{answer}");
}
