//! Event backups are files users copy around: damaged or crafted ones are refused before
//! anything changes, and what the review of issue 5 found stays fixed.

use std::io::{Read, Write};
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{data_dir, files_in, Api, Server};
use crate::event_backup::{event_dir, sha256_hex};

/// An event with two guests and a payment, deleted: returns (event id, backup id).
async fn deleted_event(api: &Api) -> (String, String) {
    let event = api.create("/api/events", json!({"name": "Gala"})).await;
    let id = event["id"].as_str().unwrap().to_owned();
    api.create(&format!("/api/events/{id}/guests/_batch"), json!([{"n": "Ann"}, {"n": "Bob"}])).await;
    api.create(&format!("/api/events/{id}/payments"), json!({"amount": 5})).await;
    let (status, deleted) = api.call(Method::DELETE, &format!("/api/events/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    (id, deleted["backup"]["id"].as_str().unwrap().to_owned())
}

fn read_gz(path: &Path) -> String {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
    text
}

/// Writes `text` gzipped as a new event backup `event_{tag}_backup_1.json.gz` with a matching
/// sidecar, so only its contents can be wrong. Returns its id.
fn plant(dir: &Path, tag: &str, text: &str) -> String {
    let id = format!("event_{tag}_backup_1");
    let name = format!("{id}.json.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    let bytes = gz.finish().unwrap();
    std::fs::write(event_dir(dir).join(&name), &bytes).unwrap();
    std::fs::write(
        event_dir(dir).join(format!("{name}.sha256")),
        format!("{}  {name}\n", sha256_hex(&bytes)),
    )
    .unwrap();
    id
}

#[tokio::test]
async fn crafted_event_backups_are_refused_before_anything_changes() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (event, backup) = deleted_event(&api).await;
    let original = read_gz(&event_dir(dir.path()).join(format!("{backup}.json.gz")));
    let last_seq = api.get("/api/bus?after=0&limit=1").await.1["lastSeq"].clone();

    // A record repeated (the counts adjusted to match) would be counted twice.
    let guests_at = original.find("\"guests\":[").unwrap() + "\"guests\":[".len();
    let first_guest_end = original[guests_at..].find("},").unwrap() + guests_at + 1;
    let first_guest = &original[guests_at..first_guest_end];
    let repeated = original.replacen(first_guest, &format!("{first_guest},{first_guest}"), 1).replacen(
        "\"guests\":2",
        "\"guests\":3",
        1,
    );
    let repeated = plant(dir.path(), "repeated", &repeated);
    // One enormous document in a small file.
    let huge = original.replacen("\"n\":\"Ann\"", &format!("\"n\":\"{}\"", "a".repeat(70 << 20)), 1);
    let huge = plant(dir.path(), "huge", &huge);
    // Not JSON at all, and a collection name that would break the key layout.
    let garbage = plant(dir.path(), "garbage", "{\"metadata\": nope");
    let slash = plant(dir.path(), "slash", &original.replacen("\"guests\":[", "\"../x\":[", 1));

    for id in [&repeated, &huge, &garbage, &slash] {
        for dry_run in [true, false] {
            let body = json!({"dryRun": dry_run, "newEventId": "clone-1"});
            let (status, answer) = api.post(&format!("/api/backups/{id}/restore"), body).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{id}: {answer}");
            assert_eq!(answer["error"]["code"], "damaged_archive", "{id}: {answer}");
        }
        let (status, answer) = api.get(&format!("/api/backups/{id}/collections")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{id}: {answer}");
    }
    let (_, answer) = api.post(&format!("/api/backups/{huge}/restore"), json!({})).await;
    assert!(answer["error"]["message"].as_str().unwrap().contains("64 MiB"), "{answer}");
    let (_, answer) = api.post(&format!("/api/backups/{repeated}/restore"), json!({})).await;
    assert!(answer["error"]["message"].as_str().unwrap().contains("repeated"), "{answer}");

    // Nothing was written: no clone, no event, no bus message.
    assert_eq!(api.get("/api/events/clone-1").await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.get(&format!("/api/events/{event}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/api/bus?after=0&limit=1").await.1["lastSeq"], last_seq);
}

#[tokio::test]
async fn records_of_a_collection_named_backup_are_restored() {
    // Before `backup` was reserved, stores could hold such records; their backups restore.
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (event, backup) = deleted_event(&api).await;
    let original = read_gz(&event_dir(dir.path()).join(format!("{backup}.json.gz")));
    let legacy = plant(dir.path(), "legacy", &original.replacen("\"guests\"", "\"backup\"", 2));
    let (status, report) = api.post(&format!("/api/backups/{legacy}/restore"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["events"][0]["collections"]["backup"]["created"], 2, "{report}");
    assert_eq!(api.get(&format!("/api/events/{event}")).await.0, StatusCode::OK);
    // New records cannot go there.
    let (status, answer) = api.post(&format!("/api/events/{event}/backup/_batch"), json!([{"n": 1}])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "reserved_collection");
}

#[tokio::test]
async fn selective_restores_do_not_bring_back_events_they_restore_nothing_into() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (event, backup) = deleted_event(&api).await;
    let archive = api.backup("full").await["name"].as_str().unwrap().to_owned();

    for id in [backup.as_str(), archive.as_str()] {
        for dry_run in [true, false] {
            let body = json!({"dryRun": dry_run, "specificCollections": ["nothere"]});
            let (status, report) = api.post(&format!("/api/backups/{id}/restore"), body).await;
            assert_eq!(status, StatusCode::OK, "{report}");
            assert_eq!(report["totals"], json!({"created": 0, "overwritten": 0, "skipped": 0}), "{report}");
            assert!(report["warnings"][0].as_str().unwrap().contains("nothere"), "{report}");
            if id == backup {
                assert_eq!(report["events"][0]["event"], "skipped", "{report}");
                assert_eq!(report["events"][0]["eventExists"], false, "{report}");
            }
            assert_eq!(api.get(&format!("/api/events/{event}")).await.0, StatusCode::NOT_FOUND, "{report}");
        }
    }
    // Repeating an entry is refused rather than counted twice.
    for body in [json!({"eventIds": [event, event]}), json!({"specificCollections": ["guests", "guests"]})] {
        let (status, answer) = api.post(&format!("/api/backups/{archive}/restore"), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains("twice"), "{answer}");
    }
    let body = json!({"purge": {"collections": ["guests", "guests"]}});
    let (status, answer) = api.post("/api/backup/create", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
}

#[tokio::test]
async fn simultaneous_backups_of_one_event_all_land() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let event = api.create("/api/events", json!({"name": "busy"})).await;
    let id = event["id"].as_str().unwrap().to_owned();
    api.create(&format!("/api/events/{id}/guests"), json!({"n": 1})).await;
    let calls = (0..12).map(|_| {
        let (api, id) = (api.clone(), id.clone());
        tokio::spawn(async move { api.post(&format!("/api/events/{id}/backup"), json!({})).await })
    });
    let mut names = Vec::new();
    for call in calls {
        let (status, written) = call.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{written}");
        names.push(written["name"].as_str().unwrap().to_owned());
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 12, "{names:?}");
    let files = files_in(&event_dir(dir.path()));
    assert_eq!(files.len(), 24, "12 backups and their sidecars, nothing else: {files:?}");
    for name in names {
        let (status, listed) = api.get(&format!("/api/backups/{name}")).await;
        assert_eq!(status, StatusCode::OK, "{listed}");
        assert_eq!(listed["counts"]["records"]["guests"], 1);
    }
}

#[tokio::test]
async fn the_archive_a_purge_depends_on_is_kept_out_of_rotation() {
    let dir = data_dir();
    let server = Server::start_with(dir.path(), 0, &[("MAX_BACKUPS", "1")]);
    let api = Api::new(&server);
    api.seed("p", 1).await;
    let body = json!({"label": "purge", "purge": {"collections": ["payments"]}});
    let (status, purged) = api.post("/api/backup/create", body).await;
    assert_eq!(status, StatusCode::CREATED, "{purged}");
    assert_eq!(purged["keep"], true, "{purged}");
    assert_eq!(purged["purgedTotal"], 1, "{purged}");
    let name = purged["name"].as_str().unwrap().to_owned();
    for label in ["a", "b"] {
        api.backup(label).await;
    }
    let (_, list) = api.get("/api/backup/list").await;
    let names: Vec<&str> =
        list["backups"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert!(names.contains(&name.as_str()), "{names:?}");
    assert_eq!(names.len(), 2, "one rotated archive plus the kept one: {names:?}");
}

#[tokio::test]
async fn the_browse_cache_keeps_within_its_bound_and_rebuilds_on_demand() {
    let dir = data_dir();
    // A bound of 0 MiB keeps only the archive in use.
    let server = Server::start_with(dir.path(), 0, &[("BROWSE_CACHE_MB", "0")]);
    let api = Api::new(&server);
    api.seed("a", 1).await;
    let first = api.backup("first").await["name"].as_str().unwrap().to_owned();
    api.seed("b", 1).await;
    let second = api.backup("second").await["name"].as_str().unwrap().to_owned();
    let cache = dir.path().join("backups/.browse-cache");
    let browse = |name: String, events: u64| {
        let api = api.clone();
        async move {
            let (status, list) = api.get(&format!("/api/backups/{name}/collections")).await;
            assert_eq!(status, StatusCode::OK, "{list}");
            assert_eq!(
                list[0],
                json!({"collection": "_events", "documentCount": events, "sizeBytes": list[0]["sizeBytes"]})
            );
        }
    };
    browse(first.clone(), 1).await;
    assert_eq!(files_in(&cache).len(), 1);
    browse(second.clone(), 2).await;
    assert_eq!(files_in(&cache).len(), 1, "the least recently used copy went");
    browse(first.clone(), 1).await;
    assert_eq!(files_in(&cache).len(), 1);
    // Removed by hand: rebuilt on the next request.
    std::fs::remove_dir_all(&cache).unwrap();
    let (status, docs) = api.get(&format!("/api/backups/{first}/collections/guests?limit=2")).await;
    assert_eq!(status, StatusCode::OK, "{docs}");
    assert_eq!(docs["total"], 3, "{docs}");
    assert_eq!(files_in(&cache).len(), 1);
}

#[tokio::test]
async fn a_crash_while_deleting_or_restoring_an_event_loses_nothing() {
    use crate::restore::crash_during;
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("crash", 2).await;
    let before = api.snapshot().await;
    let event = before["events"][0]["id"].as_str().unwrap().to_owned();

    // Killed while the backup is written, or just before the deletion commits: the event and
    // every record are there, and no partial backup is left once the server is back.
    for point in ["event_backup.before_rename", "store.before_commit"] {
        let path = format!("/api/events/{event}");
        let api = crash_during(&mut server, point, Method::DELETE, &path, json!(null)).await;
        assert_eq!(api.snapshot().await, before, "{point}");
        let files = files_in(&event_dir(dir.path()));
        assert!(files.iter().all(|f| !f.starts_with('.')), "{point}: {files:?}");
        assert_eq!(files.len() % 2, 0, "{point}: whole backups with their sidecars only: {files:?}");
    }

    // Killed in the middle of a restore: running it again finishes it.
    let (status, deleted) = api.call(Method::DELETE, &format!("/api/events/{event}"), None).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    let backup = deleted["backup"]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/backups/{backup}/restore");
    let api = crash_during(&mut server, "store.after_commit", Method::POST, &path, json!({})).await;
    let (status, report) = api.post(&path, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let after = api.snapshot().await;
    assert_eq!(after["events"], before["events"]);
    assert_eq!(after["records"], before["records"]);
    let (_, history) = api.get("/api/backup/history?limit=1").await;
    assert_eq!(history["entries"][0]["status"], "success", "{history}");
}

#[tokio::test]
async fn documents_stay_small_enough_for_their_backups_to_be_read_back() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let event = api.create("/api/events", json!({"name": "growing"})).await;
    let id = event["id"].as_str().unwrap().to_owned();
    // Each patch is within BODY_LIMIT (16 MiB); together they would pass 64 MiB.
    let chunk = "x".repeat(15 << 20);
    let mut refused = None;
    for i in 0..6 {
        let (status, answer) = api
            .call(Method::PATCH, &format!("/api/events/{id}"), Some(json!({format!("f{i}"): chunk})))
            .await;
        if status != StatusCode::OK {
            refused = Some((i, status, answer));
            break;
        }
    }
    let (i, status, answer) = refused.expect("a patch past 64 MiB is refused");
    assert_eq!((i, status), (4, StatusCode::PAYLOAD_TOO_LARGE), "{answer}");
    assert_eq!(answer["error"]["code"], "document_too_large", "{answer}");
    // The event as it stands is backed up before deletion and restores.
    let (status, deleted) = api.call(Method::DELETE, &format!("/api/events/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    let backup = deleted["backup"]["id"].as_str().unwrap();
    let (status, report) = api.post(&format!("/api/backups/{backup}/restore"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let (status, restored) = api.get(&format!("/api/events/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(restored["f3"].as_str().map(str::len), Some(15 << 20));
    assert!(restored.get("f4").is_none());
}

#[tokio::test]
async fn a_full_disk_stops_backups_and_what_waits_for_them() {
    let dir = data_dir();
    let faults = "event_backup.write=enospc,backup.write=enospc";
    let server = Server::start_with(dir.path(), 0, &[("EVENTVAULT_FAULTS", faults)]);
    let api = Api::new(&server);
    api.seed("full", 1).await;
    let before = api.snapshot().await;
    let event = before["events"][0]["id"].as_str().unwrap().to_owned();

    let (status, answer) = api.call(Method::DELETE, &format!("/api/events/{event}"), None).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{answer}");
    assert_eq!(answer["error"]["code"], "backup_failed", "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("not deleted"), "{answer}");

    let (status, answer) = api.post("/api/backup/create", json!({})).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{answer}");
    assert_eq!(answer["error"]["code"], "disk_full", "{answer}");
    let body = json!({"purge": {"collections": ["guests", "payments"]}});
    let (status, answer) = api.post("/api/backup/create", body).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{answer}");

    // Nothing was deleted or purged, and no partial file is left.
    assert_eq!(api.snapshot().await, before);
    assert_eq!(files_in(&event_dir(dir.path())), Vec::<String>::new());
    let backups: Vec<String> = files_in(&dir.path().join("backups"))
        .into_iter()
        .filter(|f| f != "audit.jsonl" && f != "event_deletions")
        .collect();
    assert_eq!(backups, Vec::<String>::new());
    let (_, history) = api.get("/api/backup/history?limit=10").await;
    let statuses: Vec<&str> =
        history["entries"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["failed", "failed", "failed"], "{history}");
}

#[tokio::test]
async fn browsing_makes_the_checks_a_restore_makes() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (event, backup) = deleted_event(&api).await;
    let original = read_gz(&event_dir(dir.path()).join(format!("{backup}.json.gz")));
    let crafted = [
        (
            "path",
            original.replacen(&format!("\"eventId\":\"{event}\""), "\"eventId\":\"../../x\"", 1),
            "eventId",
        ),
        (
            "other",
            original.replacen(&format!("\"id\":\"{event}\""), "\"id\":\"someone-else\"", 1),
            "eventDocument",
        ),
        ("counts", original.replacen("\"guests\":2", "\"guests\":5", 1), "records"),
        ("future", original.replacen("\"formatVersion\":1", "\"formatVersion\":99", 1), "format"),
    ];
    for (tag, text, why) in crafted {
        assert_ne!(text, original, "{tag}: the file was changed");
        let id = plant(dir.path(), tag, &text);
        let routes = [
            ("collections", api.get(&format!("/api/backups/{id}/collections")).await),
            ("documents", api.get(&format!("/api/backups/{id}/collections/guests")).await),
            ("events", api.get(&format!("/api/backups/{id}/collections/_events")).await),
            ("dry run", api.post(&format!("/api/backups/{id}/restore"), json!({"dryRun": true})).await),
        ];
        for (route, (status, answer)) in routes {
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{tag} {route}: {answer}");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(message.contains(why), "{tag} {route}: {message}");
        }
    }
    // The same backup as written browses fine.
    let (status, answer) = api.get(&format!("/api/backups/{backup}/collections")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // A FIFO in place of its sidecar is refused at once, not waited on.
    let name = format!("{backup}.json.gz");
    let sidecar = event_dir(dir.path()).join(format!("{name}.sha256"));
    std::fs::remove_file(&sidecar).unwrap();
    let c = std::ffi::CString::new(sidecar.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let (status, answer) = api.get(&format!("/api/backups/{backup}/collections")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("FIFO"), "{answer}");
    let (status, answer) = api.post(&format!("/api/backups/{backup}/restore"), json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
}
