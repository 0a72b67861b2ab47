//! Event backups (issue 5): written before an event is deleted and on demand, listed in the
//! catalogue, and restored with options (dry run, clone, some collections, skip or overwrite).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Digest;

use crate::common::{data_dir, files_in, wait_for, Api, Server};

/// Milliseconds since the epoch, by the test's clock.
pub(crate) fn now_millis() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Where event backups live.
pub(crate) fn event_dir(dir: &Path) -> PathBuf {
    dir.join("backups").join("event_deletions")
}

/// A GET whose body is kept as the raw bytes the server sent.
pub(crate) async fn raw(api: &Api, path: &str) -> (StatusCode, Vec<u8>) {
    let response = api.request(Method::GET, path).send().await.unwrap();
    let status = response.status();
    (status, response.bytes().await.unwrap().to_vec())
}

/// The raw bytes of a GET that must succeed.
pub(crate) async fn raw_ok(api: &Api, path: &str) -> Vec<u8> {
    let (status, bytes) = raw(api, path).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {}", String::from_utf8_lossy(&bytes));
    bytes
}

/// The raw bytes of an event, of each page listing its collections and of every record in them,
/// keyed by path.
pub(crate) async fn raw_event(api: &Api, id: &str, collections: &[&str]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let path = format!("/api/events/{id}");
    out.push((path.clone(), raw_ok(api, &path).await));
    for collection in collections {
        let list = format!("/api/events/{id}/{collection}?limit=1000");
        let page = raw_ok(api, &list).await;
        let parsed: Value = serde_json::from_slice(&page).unwrap();
        out.push((list, page));
        for record in parsed["items"].as_array().unwrap() {
            let path = format!("/api/events/{id}/{collection}/{}", record["id"].as_str().unwrap());
            out.push((path.clone(), raw_ok(api, &path).await));
        }
    }
    out
}

/// Asserts that every path answers now with exactly the bytes it answered before.
pub(crate) async fn assert_same_bytes(api: &Api, before: &[(String, Vec<u8>)], what: &str) {
    for (path, bytes) in before {
        let (status, now) = raw(api, path).await;
        assert_eq!(status, StatusCode::OK, "{what}: GET {path}: {}", String::from_utf8_lossy(&now));
        assert_eq!(
            String::from_utf8_lossy(&now),
            String::from_utf8_lossy(bytes),
            "{what}: GET {path} answers other bytes"
        );
    }
}

/// The decompressed text and the parsed JSON of an event backup file.
pub(crate) fn read_event_backup(path: &Path) -> (String, Value) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(file).read_to_string(&mut text).unwrap();
    let doc = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()));
    (text, doc)
}

/// Creates an event and `n` records in each collection; returns the event id, the event and
/// the records (collection, document), in creation order.
pub(crate) async fn event_with(
    api: &Api,
    event: Value,
    collections: &[(&str, usize)],
) -> (String, Value, Vec<(String, Value)>) {
    let event = api.create("/api/events", event).await;
    let id = event["id"].as_str().unwrap().to_owned();
    let mut records = Vec::new();
    for (collection, n) in collections {
        for i in 0..*n {
            let doc = api
                .create(&format!("/api/events/{id}/{collection}"), json!({"n": i, "of": collection}))
                .await;
            records.push((collection.to_string(), doc));
        }
    }
    (id, event, records)
}

/// `POST /api/backups/{id}/restore`, asserting 200 and success.
pub(crate) async fn restore(api: &Api, id: &str, body: Value) -> Value {
    let (status, report) = api.post(&format!("/api/backups/{id}/restore"), body.clone()).await;
    assert_eq!(status, StatusCode::OK, "restore {id} with {body}: {report}");
    assert_eq!(report["success"], true, "{report}");
    report
}

/// One collection's line of a restore report.
pub(crate) fn tally(created: u64, overwritten: u64, skipped: u64) -> Value {
    json!({"created": created, "overwritten": overwritten, "skipped": skipped})
}

/// `POST /api/events/{id}/backup`, asserting 201; returns the catalogue item.
pub(crate) async fn event_backup(api: &Api, id: &str) -> Value {
    let (status, body) = api.call(Method::POST, &format!("/api/events/{id}/backup"), None).await;
    assert_eq!(status, StatusCode::CREATED, "POST /api/events/{id}/backup: {body}");
    body
}

/// Bus messages after `seq`.
pub(crate) async fn messages_after(api: &Api, seq: u64) -> Vec<Value> {
    let (status, page) = api.get(&format!("/api/bus?after={seq}&limit=1000")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["messages"].as_array().unwrap().clone()
}

pub(crate) async fn last_seq(api: &Api) -> u64 {
    let (status, page) = api.get("/api/bus?after=0&limit=1").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["lastSeq"].as_u64().unwrap()
}

/// Ids of the items of a bare array.
pub(crate) fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("a bare array: {list}"))
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn deleting_an_event_writes_its_backup_first() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (id, event, records) =
        event_with(&api, json!({"name": "Gala", "city": "Lyon"}), &[("guests", 3), ("payments", 1)]).await;
    let other = api.create("/api/events", json!({"name": "Other"})).await;
    let seq = last_seq(&api).await;
    assert_eq!(seq, 6, "one message per change so far");
    let before = raw_event(&api, &id, &["guests", "payments"]).await;

    let t0 = now_millis();
    let (status, deleted) = api.call(Method::DELETE, &format!("/api/events/{id}"), None).await;
    let t1 = now_millis();
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["id"], id.as_str(), "{deleted}");
    assert_eq!(deleted["version"], 1, "{deleted}");
    assert_eq!(deleted["recordsDeleted"], json!({"guests": 3, "payments": 1}), "{deleted}");

    // The backup's file: name, path, size, checksum and sidecar.
    let backup = &deleted["backup"];
    let name = backup["name"].as_str().unwrap_or_else(|| panic!("backup.name: {deleted}")).to_owned();
    let prefix = format!("event_{id}_backup_");
    let millis = name.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".json.gz"));
    let millis: u128 = millis.and_then(|m| m.parse().ok()).unwrap_or_else(|| panic!("file name {name}"));
    assert!((t0..=t1).contains(&millis), "{name}: unix millis between {t0} and {t1}");
    let backup_id = name.strip_suffix(".json.gz").unwrap().to_owned();
    assert_eq!(backup["id"], backup_id.as_str(), "{deleted}");
    let path = event_dir(dir.path()).join(&name);
    assert_eq!(backup["path"], path.display().to_string(), "{deleted}");
    let bytes = std::fs::read(&path).unwrap();
    let sha = sha256_hex(&bytes);
    assert_eq!(backup["size"], bytes.len(), "{deleted}");
    assert_eq!(backup["sha256"], sha.as_str(), "{deleted}");
    assert_eq!(files_in(&event_dir(dir.path())), [name.clone(), format!("{name}.sha256")]);
    let sidecar = std::fs::read_to_string(event_dir(dir.path()).join(format!("{name}.sha256"))).unwrap();
    assert_eq!(sidecar.trim_end(), format!("{sha}  {name}"));
    let check = Command::new("sha256sum")
        .args(["-c", &format!("{name}.sha256")])
        .current_dir(event_dir(dir.path()))
        .output()
        .unwrap();
    assert!(check.status.success(), "sha256sum -c: {}", String::from_utf8_lossy(&check.stdout));

    // Its contents: metadata, the event document, the records in key order, stored bytes verbatim.
    let (text, doc) = read_event_backup(&path);
    let meta = &doc["metadata"];
    assert_eq!(meta["eventId"], id.as_str(), "{meta}");
    assert_eq!(meta["eventName"], "Gala", "{meta}");
    assert_eq!(meta["backupId"], backup_id.as_str(), "{meta}");
    assert_eq!(meta["version"], "1.0", "{meta}");
    assert_eq!(meta["formatVersion"], 1, "{meta}");
    assert_eq!(meta["trigger"], "pre-delete", "{meta}");
    assert_eq!(meta["counts"], json!({"guests": 3, "payments": 1}), "{meta}");
    assert_eq!(meta["lastSeq"], seq, "{meta}");
    let date = meta["backupDate"].as_str().unwrap_or_else(|| panic!("backupDate: {meta}"));
    let date = chrono::DateTime::parse_from_rfc3339(date).unwrap_or_else(|e| panic!("{date}: {e}"));
    assert!((t0 as i64 - 1000..=t1 as i64 + 1000).contains(&date.timestamp_millis()), "{meta}");
    assert_eq!(doc["eventDocument"], event);
    let guests: Vec<Value> = records.iter().filter(|(c, _)| c == "guests").map(|(_, d)| d.clone()).collect();
    let payments: Vec<Value> =
        records.iter().filter(|(c, _)| c == "payments").map(|(_, d)| d.clone()).collect();
    assert_eq!(doc["collections"], json!({"guests": guests, "payments": payments}), "records in key order");
    let mut sorted = guests.iter().map(|g| g["id"].as_str().unwrap()).collect::<Vec<_>>();
    sorted.sort();
    assert_eq!(ids(&doc["collections"]["guests"]), sorted, "key order");
    for (p, b) in &before {
        if !p.contains('?') {
            let b = String::from_utf8_lossy(b);
            assert!(text.contains(b.as_ref()), "{p}: the stored bytes {b} are embedded verbatim in {text}");
        }
    }

    // The event and its records are gone; the other event is not.
    assert_eq!(api.get(&format!("/api/events/{id}")).await.0, StatusCode::NOT_FOUND);
    let rid = guests[0]["id"].as_str().unwrap();
    assert_eq!(api.get(&format!("/api/events/{id}/guests/{rid}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.get(&format!("/api/events/{}", other["id"].as_str().unwrap())).await.0, StatusCode::OK);
    let tail = messages_after(&api, seq).await;
    let types: Vec<&str> = tail.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["event.deleted"], "{tail:?}");

    // The catalogue lists it under the deleted event's id.
    let (status, list) = api.get(&format!("/api/events/{id}/backup")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(ids(&list), [backup_id.as_str()], "{list}");
    let item = &list[0];
    assert_eq!(item["kind"], "event", "{item}");
    assert_eq!(item["name"], name.as_str(), "{item}");
    assert_eq!(item["eventId"], id.as_str(), "{item}");
    assert_eq!(item["eventName"], "Gala", "{item}");
    assert_eq!(item["trigger"], "pre-delete", "{item}");
    assert_eq!(item["size"], bytes.len(), "{item}");
    assert_eq!(item["counts"]["events"], 1, "{item}");
    assert_eq!(item["counts"]["records"], json!({"guests": 3, "payments": 1}), "{item}");
    let created = item["created"].as_str().unwrap_or_else(|| panic!("created: {item}"));
    assert!(chrono::DateTime::parse_from_rfc3339(created).is_ok(), "{item}");
    let (status, same) = api.get(&format!("/api/backups?eventId={id}")).await;
    assert_eq!(status, StatusCode::OK, "{same}");
    assert_eq!(same, list);
}

#[tokio::test]
async fn on_demand_backups_and_the_catalogue() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (e, _, _) = event_with(&api, json!({"name": "Gala"}), &[("guests", 2), ("payments", 1)]).await;
    let full = api.backup("cat").await;
    let full_name = full["name"].as_str().unwrap().to_owned();
    let full_id = full_name.strip_suffix(".tar.gz").unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let seq = last_seq(&api).await;
    let event_before = raw_ok(&api, &format!("/api/events/{e}")).await;

    let a = event_backup(&api, &e).await;
    assert_eq!(a["success"], true, "{a}");
    assert_eq!(a["kind"], "event", "{a}");
    assert_eq!(a["trigger"], "manual", "{a}");
    assert_eq!(a["eventId"], e.as_str(), "{a}");
    assert_eq!(a["eventName"], "Gala", "{a}");
    let a_name = a["name"].as_str().unwrap().to_owned();
    let a_id = a["id"].as_str().unwrap().to_owned();
    assert_eq!(format!("{a_id}.json.gz"), a_name, "{a}");
    assert!(a_name.starts_with(&format!("event_{e}_backup_")), "{a}");
    let a_path = event_dir(dir.path()).join(&a_name);
    assert_eq!(a["path"], a_path.display().to_string(), "{a}");
    let a_bytes = std::fs::read(&a_path).unwrap();
    assert_eq!(a["size"], a_bytes.len(), "{a}");
    assert_eq!(a["sha256"], sha256_hex(&a_bytes).as_str(), "{a}");
    assert_eq!(read_event_backup(&a_path).1["metadata"]["trigger"], "manual");

    // The event is untouched and "backup" is no collection.
    assert_eq!(raw_ok(&api, &format!("/api/events/{e}")).await, event_before);
    assert!(messages_after(&api, seq).await.iter().all(|m| m["collection"] != "backup"));
    let (status, err) = api.post(&format!("/api/events/{e}/backup/_batch"), json!([{"x": 1}])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a reserved collection: {err}");
    let (status, list) = api.get(&format!("/api/events/{e}/backup")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(ids(&list), [a_id.as_str()], "a catalogue, not records: {list}");

    // A second event, without a name.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let f = api.create("/api/events", json!({"city": "Oslo"})).await["id"].as_str().unwrap().to_owned();
    let b = event_backup(&api, &f).await;
    assert_eq!(b["eventName"], Value::Null, "{b}");
    let b_id = b["id"].as_str().unwrap().to_owned();

    // Listing: newest first, by kind, by event.
    for (query, expected) in [
        (String::new(), vec![b_id.as_str(), a_id.as_str(), full_id.as_str()]),
        ("?kind=event".into(), vec![b_id.as_str(), a_id.as_str()]),
        ("?kind=full".into(), vec![full_id.as_str()]),
        (format!("?eventId={e}"), vec![a_id.as_str()]),
        (format!("?kind=event&eventId={f}"), vec![b_id.as_str()]),
    ] {
        let (status, list) = api.get(&format!("/api/backups{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {list}");
        assert_eq!(ids(&list), expected, "{query}: {list}");
    }
    let (_, list) = api.get("/api/backups").await;
    let full_item = &list[2];
    assert_eq!(full_item["kind"], "full", "{full_item}");
    assert_eq!(full_item["name"], full_name.as_str(), "{full_item}");
    assert_eq!(full_item["label"], "cat", "{full_item}");
    assert_eq!(full_item["trigger"], "manual", "{full_item}");
    assert_eq!(full_item["counts"]["events"], 1, "{full_item}");
    assert_eq!(full_item["counts"]["records"], json!({"guests": 2, "payments": 1}), "{full_item}");
    assert_eq!(list[1]["size"], a_bytes.len(), "{list}");
    assert!(list[1]["sizeMB"].is_string(), "{list}");

    // Details, with or without the suffix.
    let (status, details) = api.get(&format!("/api/backups/{a_id}")).await;
    assert_eq!(status, StatusCode::OK, "{details}");
    assert_eq!(details["id"], a_id.as_str(), "{details}");
    assert_eq!(details["kind"], "event", "{details}");
    assert_eq!(details["name"], a_name.as_str(), "{details}");
    assert_eq!(details["size"], a_bytes.len(), "{details}");
    assert_eq!(details["metadata"]["eventId"], e.as_str(), "{details}");
    assert_eq!(details["metadata"]["backupId"], a_id.as_str(), "{details}");
    assert_eq!(details["metadata"]["counts"], json!({"guests": 2, "payments": 1}), "{details}");
    assert_eq!(details["metadata"]["trigger"], "manual", "{details}");
    let (status, suffixed) = api.get(&format!("/api/backups/{a_name}")).await;
    assert_eq!(status, StatusCode::OK, "{suffixed}");
    assert_eq!(suffixed, details);

    let (status, manifest) = api.get(&format!("/api/backups/{full_id}")).await;
    assert_eq!(status, StatusCode::OK, "{manifest}");
    assert_eq!(manifest["formatVersion"], 1, "{manifest}");
    assert_eq!(manifest["name"], full_name.as_str(), "{manifest}");
    assert!(manifest["files"].as_array().is_some_and(|f| !f.is_empty()), "{manifest}");
    assert!(manifest["rocksdbVersion"].is_string(), "{manifest}");
    assert_eq!(manifest["lastSeq"], full["lastSeq"], "{manifest}");
    assert_eq!(manifest["id"], full_id.as_str(), "{manifest}");
    assert_eq!(manifest["kind"], "full", "{manifest}");
    assert_eq!(manifest["size"], full["size"], "{manifest}");
    assert!(manifest["created"].is_string(), "{manifest}");
    assert_eq!(api.get(&format!("/api/backups/{full_name}")).await.1, manifest);

    let response = api.request(Method::GET, &format!("/api/backups/{a_id}/download")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().as_ref(), a_bytes.as_slice(), "download streams the file");

    // Deleting both kinds.
    let (status, deleted) = api.call(Method::DELETE, &format!("/api/backups/{a_id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted, json!({"success": true, "deleted": a_name}));
    let files = files_in(&event_dir(dir.path()));
    assert!(!files.iter().any(|f| f.starts_with(&a_name)), "file and sidecar gone: {files:?}");
    assert_eq!(api.get(&format!("/api/backups/{a_id}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.get(&format!("/api/events/{e}/backup")).await.1, json!([]));
    let (status, deleted) = api.call(Method::DELETE, &format!("/api/backups/{full_id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted, json!({"success": true, "deleted": full_name}));
    let files = files_in(&dir.path().join("backups"));
    assert!(!files.iter().any(|f| f.starts_with(&full_name)), "archive and sidecar gone: {files:?}");
    assert_eq!(ids(&api.get("/api/backups").await.1), [b_id.as_str()]);

    // Unknown and malformed event ids.
    let (status, body) = api.call(Method::POST, "/api/events/NOSUCHEVENT/backup", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = api.call(Method::POST, "/api/events/bad.id/backup", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(files_in(&event_dir(dir.path())).len(), 2, "no file for either");

    // The 201 body is a catalogue item, counts included (checked last, so that the rest runs).
    assert_eq!(a["counts"], json!({"events": 1, "records": {"guests": 2, "payments": 1}}), "{a}");
    assert_eq!(b["counts"], json!({"events": 1, "records": {}}), "{b}");
}

#[tokio::test]
async fn restore_after_delete_gives_back_the_same_bytes() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    let (id, _, records) = event_with(&api, json!({"name": "Gala"}), &[("guests", 3), ("payments", 2)]).await;
    // Versions past 1, nested values and unicode, so that the bytes are worth comparing.
    let rid = records[0].1["id"].as_str().unwrap();
    let (status, body) = api
        .call(
            Method::PATCH,
            &format!("/api/events/{id}/guests/{rid}"),
            Some(json!({"nested": {"b": [1, 2.5, null], "a": "é ✓"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) =
        api.call(Method::PATCH, &format!("/api/events/{id}"), Some(json!({"city": "Zürich"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before = raw_event(&api, &id, &["guests", "payments"]).await;
    assert_eq!(before.len(), 1 + 2 + 5);

    let (status, deleted) = api.call(Method::DELETE, &format!("/api/events/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    let backup = deleted["backup"]["id"].as_str().unwrap().to_owned();
    assert_eq!(api.get(&format!("/api/events/{id}")).await.0, StatusCode::NOT_FOUND);

    let report = restore(&api, &backup, json!({})).await;
    assert_eq!(report["backupId"], backup.as_str(), "{report}");
    assert_eq!(report["kind"], "event", "{report}");
    assert_eq!(report["mode"], "merge", "{report}");
    assert_eq!(report["dryRun"], false, "{report}");
    assert_eq!(
        report["events"],
        json!([{
            "eventId": id, "sourceEventId": id, "eventExists": false, "event": "created",
            "collections": {"guests": tally(3, 0, 0), "payments": tally(2, 0, 0)},
        }]),
        "{report}"
    );
    assert_eq!(report["totals"], tally(5, 0, 0), "{report}");
    assert_eq!(report["warnings"], json!([]), "{report}");
    assert_eq!(report["replacedWith"], Value::Null, "{report}");
    assert_eq!(report["preRestoreBackup"], Value::Null, "{report}");
    assert_eq!(report["lastSeq"], last_seq(&api).await, "{report}");
    assert!(report["durationMs"].is_u64(), "{report}");

    assert_same_bytes(&api, &before, "after the restore").await;
    server.restart();
    let api = Api::new(&server);
    assert_same_bytes(&api, &before, "after a restart").await;
    let (_, health) = api.get("/api/health").await;
    assert_eq!(health["store"]["events"], 1, "{health}");
}

/// The report without the fields that differ between a dry run and the real thing.
fn outcome(report: &Value) -> Value {
    json!({"events": report["events"], "totals": report["totals"], "warnings": report["warnings"],
           "kind": report["kind"], "mode": report["mode"], "backupId": report["backupId"]})
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_predicts_the_restore() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (id, _, records) = event_with(&api, json!({"name": "Dry"}), &[("guests", 3), ("payments", 1)]).await;
    let backup = event_backup(&api, &id).await["id"].as_str().unwrap().to_owned();
    let g0 = records[0].1["id"].as_str().unwrap();
    let g1 = records[1].1["id"].as_str().unwrap();
    assert_eq!(
        api.call(Method::DELETE, &format!("/api/events/{id}/guests/{g0}"), None).await.0,
        StatusCode::OK
    );
    let (status, body) =
        api.call(Method::PATCH, &format!("/api/events/{id}/guests/{g1}"), Some(json!({"n": 99}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    api.create(&format!("/api/events/{id}/payments"), json!({"amount": 7})).await;
    let files = files_in(&dir.path().join("backups"));

    for (options, event, guests, payments, totals) in [
        (json!({}), "skipped", tally(1, 0, 2), tally(0, 0, 1), tally(1, 0, 3)),
        (json!({"skipExistingRecords": false}), "", tally(0, 3, 0), tally(0, 1, 0), tally(0, 4, 0)),
    ] {
        let before = api.snapshot().await;
        let raw_before = raw_event(&api, &id, &["guests", "payments"]).await;
        let mut dry_options = options.clone();
        dry_options["dryRun"] = json!(true);
        let dry = restore(&api, &backup, dry_options).await;
        assert_eq!(dry["dryRun"], true, "{dry}");
        assert_eq!(dry["events"][0]["eventExists"], true, "{dry}");
        if !event.is_empty() {
            assert_eq!(dry["events"][0]["event"], event, "{options}: {dry}");
        }
        assert_eq!(dry["events"][0]["collections"]["guests"], guests, "{options}: {dry}");
        assert_eq!(dry["events"][0]["collections"]["payments"], payments, "{options}: {dry}");
        assert_eq!(dry["totals"], totals, "{options}: {dry}");
        assert_eq!(api.snapshot().await, before, "{options}: a dry run changes nothing (bus included)");
        assert_same_bytes(&api, &raw_before, "after a dry run").await;
        assert_eq!(files_in(&dir.path().join("backups")), files, "no file either");

        let real = restore(&api, &backup, options.clone()).await;
        assert_eq!(real["dryRun"], false, "{real}");
        assert_eq!(outcome(&real), outcome(&dry), "{options}: the dry run predicted the restore");
        assert_ne!(api.snapshot().await, before, "{options}: the real one changed something");
    }
    // Every record of the backup is back, and the later payment is still there.
    let (_, guests) = api.get(&format!("/api/events/{id}/guests")).await;
    assert_eq!(guests["items"].as_array().unwrap().len(), 3, "{guests}");
    let (_, payments) = api.get(&format!("/api/events/{id}/payments")).await;
    assert_eq!(payments["items"].as_array().unwrap().len(), 2, "{payments}");
}

#[tokio::test]
async fn a_clone_under_a_new_id_leaves_the_original_alone() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (id, event, records) =
        event_with(&api, json!({"name": "Gala"}), &[("guests", 2), ("payments", 1)]).await;
    let backup = event_backup(&api, &id).await["id"].as_str().unwrap().to_owned();
    let original = raw_event(&api, &id, &["guests", "payments"]).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let seq = last_seq(&api).await;

    let report = restore(&api, &backup, json!({"newEventId": "gala-copy"})).await;
    assert_eq!(
        report["events"],
        json!([{
            "eventId": "gala-copy", "sourceEventId": id, "eventExists": false, "event": "created",
            "collections": {"guests": tally(2, 0, 0), "payments": tally(1, 0, 0)},
        }]),
        "{report}"
    );
    assert_eq!(report["totals"], tally(3, 0, 0), "{report}");

    assert_same_bytes(&api, &original, "the original").await;
    let (status, copy) = api.get("/api/events/gala-copy").await;
    assert_eq!(status, StatusCode::OK, "{copy}");
    assert_eq!(copy["id"], "gala-copy", "{copy}");
    assert_eq!(copy["name"], "Gala", "{copy}");
    assert_eq!(copy["version"], 1, "{copy}");
    assert_ne!(copy["createdAt"], event["createdAt"], "fresh timestamps: {copy}");
    assert_eq!(copy["createdAt"], copy["updatedAt"], "{copy}");
    for (collection, doc) in &records {
        let rid = doc["id"].as_str().unwrap();
        let was = original.iter().find(|(p, _)| p.ends_with(&format!("/{collection}/{rid}"))).unwrap();
        let now = raw_ok(&api, &format!("/api/events/gala-copy/{collection}/{rid}")).await;
        assert_eq!(String::from_utf8_lossy(&now), String::from_utf8_lossy(&was.1), "same id, same bytes");
    }
    let (_, list) = api.get("/api/events").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    let tail = messages_after(&api, seq).await;
    assert!(tail.iter().all(|m| m["eventId"] == "gala-copy"), "only the clone changed: {tail:?}");
    assert_eq!(tail.len(), 4, "{tail:?}");

    // The id is now taken.
    let (status, err) =
        api.post(&format!("/api/backups/{backup}/restore"), json!({"newEventId": "gala-copy"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "event_exists", "{err}");
}

#[tokio::test]
async fn specific_collections_restores_only_those() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (id, _, _) =
        event_with(&api, json!({"name": "Some"}), &[("guests", 3), ("notes", 1), ("payments", 2)]).await;
    let before = raw_event(&api, &id, &["guests", "notes", "payments"]).await;
    let (status, deleted) = api.call(Method::DELETE, &format!("/api/events/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    let backup = deleted["backup"]["id"].as_str().unwrap().to_owned();

    let report = restore(&api, &backup, json!({"specificCollections": ["guests"]})).await;
    assert_eq!(
        report["events"],
        json!([{"eventId": id, "sourceEventId": id, "eventExists": false, "event": "created",
                "collections": {"guests": tally(3, 0, 0)}}]),
        "{report}"
    );
    assert_eq!(report["totals"], tally(3, 0, 0), "{report}");
    assert_eq!(report["warnings"], json!([]), "{report}");
    let count = |collection: &'static str| {
        let api = api.clone();
        let id = id.clone();
        async move {
            let (status, page) = api.get(&format!("/api/events/{id}/{collection}")).await;
            assert_eq!(status, StatusCode::OK, "{collection}: {page}");
            page["items"].as_array().unwrap().len()
        }
    };
    assert_eq!((count("guests").await, count("notes").await, count("payments").await), (3, 0, 0));
    let guests_only: Vec<_> =
        before.iter().filter(|(p, _)| !p.contains("/notes") && !p.contains("/payments")).cloned().collect();
    assert_same_bytes(&api, &guests_only, "the event and its guests").await;

    // A collection the backup does not hold is a warning, not an error.
    let report = restore(&api, &backup, json!({"specificCollections": ["payments", "nope"]})).await;
    let event = &report["events"][0];
    assert_eq!(event["eventExists"], true, "{report}");
    assert_eq!(event["event"], "skipped", "{report}");
    assert_eq!(event["collections"], json!({"payments": tally(2, 0, 0)}), "{report}");
    let warnings = report["warnings"].as_array().unwrap();
    assert!(warnings.len() == 1 && warnings[0].as_str().unwrap().contains("nope"), "{report}");
    assert_eq!((count("guests").await, count("notes").await, count("payments").await), (3, 0, 2));
}

#[tokio::test]
async fn existing_records_are_skipped_unless_told_to_overwrite() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (id, _, records) = event_with(&api, json!({"name": "Over"}), &[("guests", 2)]).await;
    let rid = records[0].1["id"].as_str().unwrap().to_owned();
    let path = format!("/api/events/{id}/guests/{rid}");
    let at_backup = raw_ok(&api, &path).await;
    let backup = event_backup(&api, &id).await["id"].as_str().unwrap().to_owned();
    let (status, changed) = api.call(Method::PATCH, &path, Some(json!({"n": "changed"}))).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let changed_bytes = raw_ok(&api, &path).await;

    let report = restore(&api, &backup, json!({})).await;
    assert_eq!(report["events"][0]["collections"], json!({"guests": tally(0, 0, 2)}), "{report}");
    assert_eq!(report["totals"], tally(0, 0, 2), "{report}");
    let (_, now) = api.get(&path).await;
    assert_eq!(now["n"], "changed", "skipped: {now}");
    assert_eq!(now["version"], 2, "{now}");
    assert_eq!(raw_ok(&api, &path).await, changed_bytes);

    let report = restore(&api, &backup, json!({"skipExistingRecords": false})).await;
    assert_eq!(report["events"][0]["collections"], json!({"guests": tally(0, 2, 0)}), "{report}");
    assert_eq!(report["totals"], tally(0, 2, 0), "{report}");
    let now = raw_ok(&api, &path).await;
    assert_eq!(String::from_utf8_lossy(&now), String::from_utf8_lossy(&at_backup), "the backup's bytes");
    let (_, now) = api.get(&path).await;
    assert_eq!(now["n"], 0, "{now}");
}

#[tokio::test]
async fn a_failed_backup_blocks_the_delete() {
    let dir = data_dir();
    let server =
        Server::start_with(dir.path(), 0, &[("EVENTVAULT_FAULTS", "event_backup.before_rename=error")]);
    let api = Api::new(&server);
    let (id, _, _) = event_with(&api, json!({"name": "Keep"}), &[("guests", 2), ("payments", 1)]).await;
    let before = raw_event(&api, &id, &["guests", "payments"]).await;
    let seq = last_seq(&api).await;

    let (status, err) = api.call(Method::DELETE, &format!("/api/events/{id}"), None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{err}");
    assert_eq!(err["error"]["code"], "backup_failed", "{err}");
    assert!(err["error"]["message"].as_str().unwrap_or_default().contains("not deleted"), "{err}");
    wait_for(5, "the injected fault in the log", || async {
        server.log().contains("injected fault at event_backup.before_rename").then_some(())
    })
    .await;

    assert_same_bytes(&api, &before, "after the refused delete").await;
    assert_eq!(messages_after(&api, seq).await, Vec::<Value>::new(), "no event.deleted");
    let files = files_in(&event_dir(dir.path()));
    assert!(
        !files.iter().any(|f| f.starts_with("event_") && (f.ends_with(".json.gz") || f.ends_with(".sha256"))),
        "no event backup: {files:?}"
    );
    let (status, list) = api.get(&format!("/api/events/{id}/backup")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list, json!([]));
    let (_, health) = api.get("/api/health").await;
    assert_eq!(health["store"]["events"], 1, "{health}");
}

#[tokio::test]
async fn a_restore_announces_itself_on_the_bus() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (id, event, records) =
        event_with(&api, json!({"name": "Bus"}), &[("guests", 2), ("payments", 1)]).await;
    let (status, deleted) = api.call(Method::DELETE, &format!("/api/events/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    let backup = deleted["backup"]["id"].as_str().unwrap().to_owned();

    let seq = last_seq(&api).await;
    let report = restore(&api, &backup, json!({})).await;
    let tail = messages_after(&api, seq).await;
    let types: Vec<&str> = tail.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["event.created", "record.created", "record.created", "record.created"], "{tail:?}");
    assert!(tail.iter().all(|m| m["topic"] == "registry" && m["eventId"] == id.as_str()), "{tail:?}");
    assert_eq!(tail[0]["data"], event, "{tail:?}");
    let mut announced: Vec<(Value, Value, Value)> = tail[1..]
        .iter()
        .map(|m| (m["collection"].clone(), m["recordId"].clone(), m["data"].clone()))
        .collect();
    let mut expected: Vec<(Value, Value, Value)> =
        records.iter().map(|(c, d)| (json!(c), d["id"].clone(), d.clone())).collect();
    announced.sort_by_key(|a| a.1.to_string());
    expected.sort_by_key(|a| a.1.to_string());
    assert_eq!(announced, expected);
    assert_eq!(report["lastSeq"], seq + 4, "{report}");

    // Nothing to do: nothing announced.
    let seq = last_seq(&api).await;
    let report = restore(&api, &backup, json!({})).await;
    assert_eq!(report["totals"], tally(0, 0, 3), "{report}");
    assert_eq!(messages_after(&api, seq).await, Vec::<Value>::new());

    // Overwriting announces updates.
    let report = restore(&api, &backup, json!({"skipExistingRecords": false})).await;
    assert_eq!(report["totals"], tally(0, 3, 0), "{report}");
    let tail = messages_after(&api, seq).await;
    let record_types: Vec<&str> =
        tail.iter().map(|m| m["type"].as_str().unwrap()).filter(|t| t.starts_with("record.")).collect();
    assert_eq!(record_types, ["record.updated", "record.updated", "record.updated"], "{tail:?}");
    assert!(tail.iter().all(|m| m["eventId"] == id.as_str()), "{tail:?}");
    assert!(tail.iter().all(|m| m["type"] != "event.created" && m["type"] != "event.deleted"), "{tail:?}");
}
