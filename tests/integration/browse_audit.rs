//! Issue 5, continued: selective restores from whole-store archives, browsing archives, the audit
//! trail, backup-then-purge, and bad input on every new route.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{data_dir, files_in, wait_for, Api, Server};
use crate::event_backup::{
    assert_same_bytes, event_backup, event_with, ids, last_seq, raw_event, restore, tally,
};

/// The id of a full archive: its file name without `.tar.gz`.
fn full_id(created: &Value) -> String {
    created["name"].as_str().unwrap().strip_suffix(".tar.gz").unwrap().to_owned()
}

/// Percent-encodes everything but ASCII letters and digits.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// How many records an event holds in a collection.
async fn count(api: &Api, event: &str, collection: &str) -> usize {
    let (status, page) = api.get(&format!("/api/events/{event}/{collection}?limit=1000")).await;
    assert_eq!(status, StatusCode::OK, "{event}/{collection}: {page}");
    page["items"].as_array().unwrap().len()
}

/// Archive files (.tar.gz) in BACKUP_DIR.
fn archives(dir: &std::path::Path) -> Vec<String> {
    files_in(&dir.join("backups")).into_iter().filter(|f| f.ends_with(".tar.gz")).collect()
}

#[tokio::test]
async fn selective_restore_from_a_full_archive_merges_without_a_swap() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (a, _, a_records) = event_with(&api, json!({"name": "A"}), &[("guests", 3), ("payments", 1)]).await;
    let (b, _, _) = event_with(&api, json!({"name": "B"}), &[("guests", 2), ("payments", 1)]).await;
    let a_before = raw_event(&api, &a, &["guests", "payments"]).await;
    let b_before = raw_event(&api, &b, &["guests", "payments"]).await;
    let full = api.backup("sel").await;
    let id = full_id(&full);

    // After the archive: A loses its guests and gains a payment, B goes, C comes.
    for (collection, doc) in &a_records {
        if collection == "guests" {
            let path = format!("/api/events/{a}/guests/{}", doc["id"].as_str().unwrap());
            assert_eq!(api.call(Method::DELETE, &path, None).await.0, StatusCode::OK);
        }
    }
    api.create(&format!("/api/events/{a}/payments"), json!({"amount": 99})).await;
    let (status, deleted) = api.call(Method::DELETE, &format!("/api/events/{b}"), None).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    let c = api.create("/api/events", json!({"name": "C"})).await["id"].as_str().unwrap().to_owned();
    let seq = last_seq(&api).await;
    let archives_before = archives(dir.path());

    let report = restore(&api, &id, json!({"eventIds": [a], "specificCollections": ["guests"]})).await;
    assert_eq!(report["kind"], "full", "{report}");
    assert_eq!(report["mode"], "merge", "{report}");
    assert_eq!(report["dryRun"], false, "{report}");
    assert_eq!(
        report["events"],
        json!([{"eventId": a, "sourceEventId": a, "eventExists": true, "event": "skipped",
                "collections": {"guests": tally(3, 0, 0)}}]),
        "{report}"
    );
    assert_eq!(report["totals"], tally(3, 0, 0), "{report}");
    assert_eq!(report["replacedWith"], Value::Null, "{report}");
    assert_eq!(report["preRestoreBackup"], Value::Null, "{report}");
    let unchanged: Vec<_> = a_before.iter().filter(|(p, _)| !p.contains("/payments?")).cloned().collect();
    assert_same_bytes(&api, &unchanged, "A's event and guests").await;
    assert_eq!(count(&api, &a, "payments").await, 2, "the later payment stays");
    assert_eq!(api.get(&format!("/api/events/{c}")).await.0, StatusCode::OK, "written after the archive");
    assert_eq!(api.get(&format!("/api/events/{b}")).await.0, StatusCode::NOT_FOUND, "not asked for");
    let all = api.all_messages().await;
    assert_eq!(all.len() as u64, seq + 3, "the log goes on, three record.created more");
    assert_eq!(all[0]["seq"], 1);
    assert_eq!(archives(dir.path()), archives_before, "no pre-restore backup: nothing was swapped");

    // B, whole.
    let report = restore(&api, &id, json!({"eventIds": [b]})).await;
    assert_eq!(
        report["events"],
        json!([{"eventId": b, "sourceEventId": b, "eventExists": false, "event": "created",
                "collections": {"guests": tally(2, 0, 0), "payments": tally(1, 0, 0)}}]),
        "{report}"
    );
    assert_same_bytes(&api, &b_before, "B").await;
    assert_eq!(api.get(&format!("/api/events/{c}")).await.0, StatusCode::OK);

    // A dry run with options is a merge too, and changes nothing.
    let before = api.snapshot().await;
    let report =
        restore(&api, &id, json!({"eventIds": [a], "skipExistingRecords": false, "dryRun": true})).await;
    assert_eq!(report["mode"], "merge", "{report}");
    assert_eq!(report["dryRun"], true, "{report}");
    assert_eq!(report["events"][0]["collections"]["guests"], tally(0, 3, 0), "{report}");
    assert_eq!(report["events"][0]["collections"]["payments"], tally(0, 1, 0), "{report}");
    assert_eq!(report["totals"], tally(0, 4, 0), "{report}");
    assert_eq!(api.snapshot().await, before);

    // A clone of one archived event.
    let report = restore(&api, &id, json!({"eventIds": [a], "newEventId": "a-copy"})).await;
    assert_eq!(report["events"][0]["eventId"], "a-copy", "{report}");
    assert_eq!(report["events"][0]["sourceEventId"], a.as_str(), "{report}");
    assert_eq!(report["events"][0]["event"], "created", "{report}");
    assert_eq!(report["totals"], tally(4, 0, 0), "{report}");
    assert_eq!((count(&api, "a-copy", "guests").await, count(&api, "a-copy", "payments").await), (3, 1));
    assert_eq!(count(&api, &a, "payments").await, 2);
    let (_, events) = api.get("/api/events").await;
    assert_eq!(events["items"].as_array().unwrap().len(), 4, "A, B, C and the copy: {events}");
}

/// Every page of a browse, following nextCursor; returns the pages and the totals they gave.
async fn browse(api: &Api, backup: &str, collection: &str, query: &str) -> (Vec<Vec<Value>>, Vec<u64>) {
    let mut pages = Vec::new();
    let mut totals = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params: Vec<String> = query.split('&').filter(|p| !p.is_empty()).map(str::to_owned).collect();
        if let Some(c) = &cursor {
            params.push(format!("cursor={}", enc(c)));
        }
        let mut path = format!("/api/backups/{backup}/collections/{collection}");
        if !params.is_empty() {
            path = format!("{path}?{}", params.join("&"));
        }
        let (status, page) = api.get(&path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {page}");
        pages.push(page["documents"].as_array().unwrap_or_else(|| panic!("documents: {page}")).clone());
        totals.push(page["total"].as_u64().unwrap_or_else(|| panic!("total: {page}")));
        match &page["nextCursor"] {
            Value::Null => return (pages, totals),
            Value::String(c) => cursor = Some(c.clone()),
            other => panic!("nextCursor {other} in {page}"),
        }
        assert!(pages.len() < 20, "pagination ends: {page}");
    }
}

/// `GET /api/backups/{id}/collections`, asserted 200 and a bare array: the body, and
/// (collection, documentCount) pairs.
async fn collections_of(api: &Api, backup: &str) -> (Value, Vec<(String, u64)>) {
    let (status, collections) = api.get(&format!("/api/backups/{backup}/collections")).await;
    assert_eq!(status, StatusCode::OK, "{collections}");
    let listed = collections
        .as_array()
        .unwrap_or_else(|| panic!("a bare array: {collections}"))
        .iter()
        .map(|c| (c["collection"].as_str().unwrap().to_owned(), c["documentCount"].as_u64().unwrap()))
        .collect();
    (collections, listed)
}

fn names(docs: &[Value]) -> Vec<&str> {
    docs.iter().map(|d| d["name"].as_str().unwrap_or_default()).collect()
}

fn sizes(pages: &[Vec<Value>]) -> Vec<usize> {
    pages.iter().map(Vec::len).collect()
}

#[tokio::test]
async fn browsing_collections_and_documents_of_both_kinds() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let e1 = api.create("/api/events", json!({"name": "Alpha Gala"})).await;
    let e1_id = e1["id"].as_str().unwrap().to_owned();
    let mut guests = Vec::new();
    for name in ["Ann Smith", "bob SMITH", "Carl Jones", "Dana smithson", "Eve Brown"] {
        guests.push(api.create(&format!("/api/events/{e1_id}/guests"), json!({"name": name})).await);
    }
    for amount in [10, 20] {
        api.create(&format!("/api/events/{e1_id}/payments"), json!({"amount": amount})).await;
    }
    let e2 = api.create("/api/events", json!({"name": "Beta Lounge"})).await;
    let e2_id = e2["id"].as_str().unwrap().to_owned();
    for name in ["Zed Smith", "Yan Wu"] {
        api.create(&format!("/api/events/{e2_id}/guests"), json!({"name": name})).await;
    }
    let full = full_id(&api.backup("browse").await);
    let eb = event_backup(&api, &e1_id).await["id"].as_str().unwrap().to_owned();

    // An event backup.
    let (collections, listed) = collections_of(&api, &eb).await;
    assert_eq!(
        listed,
        [("_events".into(), 1), ("guests".into(), 5), ("payments".into(), 2)],
        "{collections}"
    );
    assert!(
        collections.as_array().unwrap().iter().all(|c| c["sizeBytes"].as_u64() > Some(0)),
        "{collections}"
    );

    let (pages, totals) = browse(&api, &eb, "guests", "").await;
    assert_eq!(pages, [guests.clone()], "every guest, in key order, as stored");
    assert_eq!(totals, [5]);
    let (pages, totals) = browse(&api, &eb, "guests", "&q=SMITH").await;
    assert_eq!(names(&pages.concat()), ["Ann Smith", "bob SMITH", "Dana smithson"], "case-insensitive");
    assert_eq!(totals, [3]);
    let (pages, totals) = browse(&api, &eb, "guests", "&limit=2").await;
    assert_eq!(sizes(&pages), [2, 2, 1]);
    assert_eq!(totals, [5, 5, 5]);
    assert_eq!(pages.concat(), guests, "each once, in order");
    let (pages, totals) = browse(&api, &eb, "guests", "&q=smith&limit=2").await;
    assert_eq!(sizes(&pages), [2, 1]);
    assert_eq!(totals, [3, 3]);
    assert_eq!(names(&pages.concat()), ["Ann Smith", "bob SMITH", "Dana smithson"]);
    let (pages, _) = browse(&api, &eb, "_events", "").await;
    assert_eq!(pages, [vec![e1.clone()]]);
    let (status, none) = api.get(&format!("/api/backups/{eb}/collections/nothing")).await;
    assert_eq!(status, StatusCode::OK, "{none}");
    assert_eq!(none, json!({"documents": [], "total": 0, "nextCursor": null}));

    // A whole-store archive.
    let (collections, listed) = collections_of(&api, &full).await;
    assert_eq!(
        listed,
        [("_events".into(), 2), ("guests".into(), 7), ("payments".into(), 2)],
        "{collections}"
    );
    assert!(dir.path().join("backups/.browse-cache").is_dir(), "{:?}", files_in(&dir.path().join("backups")));

    let (pages, totals) = browse(&api, &full, "guests", &format!("&eventId={e2_id}")).await;
    assert_eq!(names(&pages.concat()), ["Zed Smith", "Yan Wu"]);
    assert_eq!(totals, [2]);
    let (pages, totals) = browse(&api, &full, "guests", "&q=sMiTh").await;
    assert_eq!(totals, [4]);
    assert_eq!(names(&pages.concat()), ["Ann Smith", "bob SMITH", "Dana smithson", "Zed Smith"]);
    let (pages, totals) = browse(&api, &full, "guests", &format!("&eventId={e1_id}&q=smith&limit=2")).await;
    assert_eq!((sizes(&pages), totals), (vec![2, 1], vec![3, 3]));
    let (pages, totals) = browse(&api, &full, "guests", "&limit=3").await;
    assert_eq!(sizes(&pages), [3, 3, 1]);
    assert_eq!(totals, [7, 7, 7]);
    let mut seen: Vec<String> = pages.concat().iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 7, "each guest once: {pages:?}");
    let (pages, totals) = browse(&api, &full, "_events", "&q=LOUNGE").await;
    assert_eq!((ids(&json!(pages.concat())), totals), (vec![e2_id.clone()], vec![1]));
    assert_eq!(pages.concat()[0], e2);
    let (_, totals) = browse(&api, &full, "payments", &format!("&eventId={e2_id}")).await;
    assert_eq!(totals, [0]);
    let (status, none) = api.get(&format!("/api/backups/{full}/collections/nothing")).await;
    assert_eq!(status, StatusCode::OK, "{none}");
    assert_eq!(none, json!({"documents": [], "total": 0, "nextCursor": null}));

    // The cache is no backup.
    let (_, list) = api.get("/api/backups").await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
}

/// The audit trail through the API, asserting 200.
async fn history(api: &Api, query: &str) -> Vec<Value> {
    let (status, body) = api.get(&format!("/api/backup/history{query}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true, "{body}");
    body["entries"].as_array().unwrap_or_else(|| panic!("entries: {body}")).clone()
}

/// Whether an audit entry names a backup by its id or by its file name.
fn targets(entry: &Value, id: &str, name: &str) -> bool {
    entry["target"] == id || entry["target"] == name
}

fn assert_entry(entry: &Value, action: &str, kind: &str, id: &str, name: &str) {
    assert_eq!(entry["action"], action, "{entry}");
    assert_eq!(entry["kind"], kind, "{entry}");
    assert!(targets(entry, id, name), "target {id} or {name}: {entry}");
    assert_eq!(entry["status"], "success", "{entry}");
    assert_eq!(entry["actor"], "admin", "{entry}");
    assert_eq!(entry["error"], Value::Null, "{entry}");
    assert!(entry["durationMs"].is_u64(), "{entry}");
    let time = entry["time"].as_str().unwrap_or_else(|| panic!("time: {entry}"));
    assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{entry}");
}

#[tokio::test]
async fn the_audit_trail_records_each_operation_newest_first() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    assert_eq!(history(&api, "").await, Vec::<Value>::new(), "empty at first");
    let (e, _, _) = event_with(&api, json!({"name": "Aud"}), &[("guests", 2), ("payments", 1)]).await;
    let full = api.backup("audit").await;
    let (full_name, full) = (full["name"].as_str().unwrap().to_owned(), full_id(&full));
    let eb = event_backup(&api, &e).await;
    let (eb_name, eb) = (eb["name"].as_str().unwrap().to_owned(), eb["id"].as_str().unwrap().to_owned());
    restore(&api, &eb, json!({"skipExistingRecords": false})).await;
    let (status, body) = api.call(Method::DELETE, &format!("/api/backups/{full}"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let purge =
        api.create("/api/backup/create", json!({"label": "p", "purge": {"collections": ["payments"]}})).await;
    let (purge_name, purge) = (purge["name"].as_str().unwrap().to_owned(), full_id(&purge));

    let entries = history(&api, "").await;
    assert_entry(&entries[0], "purge", "full", &purge, &purge_name);
    // The purge's archive may have its own "create" line; the rest is exact.
    let rest: Vec<&Value> = entries[1..]
        .iter()
        .filter(|e| !(e["action"] == "create" && targets(e, &purge, &purge_name)))
        .collect();
    assert!(entries.len() - rest.len() <= 2, "{entries:?}");
    assert_eq!(rest.len(), 4, "{entries:#?}");
    assert_entry(rest[0], "delete", "full", &full, &full_name);
    assert_entry(rest[1], "restore", "event", &eb, &eb_name);
    assert_eq!(rest[1]["options"]["skipExistingRecords"], false, "{}", rest[1]);
    assert_entry(rest[2], "create", "event", &eb, &eb_name);
    assert_entry(rest[3], "create", "full", &full, &full_name);
    let times: Vec<&str> = entries.iter().map(|e| e["time"].as_str().unwrap()).collect();
    let parsed: Vec<_> = times.iter().map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");

    assert_eq!(history(&api, "?limit=2").await, entries[..2].to_vec());
    assert_eq!(history(&api, "?limit=1000").await, entries);

    // One JSON object per line in BACKUP_DIR/audit.jsonl, oldest first.
    let text = std::fs::read_to_string(dir.path().join("backups/audit.jsonl")).unwrap();
    let mut lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines.reverse();
    assert_eq!(lines, entries, "{text}");
}

#[tokio::test]
async fn the_audit_trail_survives_a_full_swap_restore() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("s", 1).await;
    let created = api.backup("swap").await;
    let (name, id) = (created["name"].as_str().unwrap().to_owned(), full_id(&created));
    let (later, _, _) = event_with(&api, json!({"name": "later"}), &[("guests", 1)]).await;
    event_backup(&api, &later).await;
    let before = history(&api, "").await;
    assert_eq!(before.len(), 2, "{before:?}");

    let report = restore(&api, &id, json!({})).await;
    assert_eq!(report["kind"], "full", "{report}");
    assert_eq!(report["mode"], "swap", "{report}");
    assert_eq!(report["dryRun"], false, "{report}");
    assert_eq!(report["replacedWith"]["events"], 1, "{report}");
    assert_eq!(report["replacedWith"]["records"], created["counts"]["records"], "{report}");
    assert_eq!(report["replacedWith"]["busMessages"], created["lastSeq"], "{report}");
    let pre = report["preRestoreBackup"].as_str().unwrap_or_else(|| panic!("preRestoreBackup: {report}"));
    assert!(pre.contains("pre-restore"), "{report}");
    assert_eq!(report["lastSeq"], created["lastSeq"], "{report}");
    assert_eq!(api.get(&format!("/api/events/{later}")).await.0, StatusCode::NOT_FOUND, "swapped");

    // The pre-restore backup is written after the restore answered, and audited when done:
    // once it is, the trail stops changing (its entry may come before or after the restore's).
    let storage = dir.path().join("storage");
    wait_for(60, "the pre-restore backup", || {
        let done = !files_in(&storage).iter().any(|f| f.starts_with("undo-"));
        async move { done.then_some(()) }
    })
    .await;
    let after = history(&api, "").await;
    let restored = after.iter().find(|e| e["action"] == "restore").unwrap_or_else(|| panic!("{after:?}"));
    assert_entry(restored, "restore", "full", &id, &name);
    assert!(after.len() > before.len(), "{after:?}");
    assert_eq!(after[after.len() - before.len()..], before[..], "the older entries are all still there");
    server.restart();
    assert_eq!(history(&Api::new(&server), "").await, after, "and after a restart");
}

#[tokio::test]
async fn backup_then_purge_removes_only_what_the_archive_holds() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (a, _, _) = event_with(&api, json!({"name": "A"}), &[("guests", 3), ("payments", 1)]).await;
    let (b, _, _) = event_with(&api, json!({"name": "B"}), &[("guests", 2), ("payments", 1)]).await;
    let (c, _, _) = event_with(&api, json!({"name": "C"}), &[("notes", 2)]).await;

    // Bad purge bodies take no backup.
    for body in [
        json!({"purge": {"collections": []}}),
        json!({"purge": {"collections": ["Bad!"]}}),
        json!({"purge": {}}),
        json!({"purge": {"collections": "guests"}}),
        json!({"purge": {"collections": ["guests"], "eventIds": ["a/b"]}}),
        json!({"purge": {"collections": ["guests"], "bogus": 1}}),
    ] {
        let (status, err) = api.post("/api/backup/create", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert!(err["error"]["code"].is_string(), "{body}: {err}");
    }
    assert_eq!(archives(dir.path()), Vec::<String>::new());

    let (status, created) = api
        .post("/api/backup/create", json!({"label": "purge", "purge": {"collections": ["guests", "notes"]}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["verified"], true, "{created}");
    assert_eq!(created["counts"]["records"], json!({"guests": 5, "notes": 2, "payments": 2}), "{created}");
    let id = full_id(&created);
    assert_eq!(archives(dir.path()), [created["name"].as_str().unwrap()]);
    let mut purged: Vec<(String, String, u64)> = created["purged"]
        .as_array()
        .unwrap_or_else(|| panic!("purged: {created}"))
        .iter()
        .map(|p| {
            (
                p["eventId"].as_str().unwrap().into(),
                p["collection"].as_str().unwrap().into(),
                p["count"].as_u64().unwrap(),
            )
        })
        .filter(|p| p.2 > 0)
        .collect();
    purged.sort();
    let mut expected = vec![
        (a.clone(), "guests".into(), 3),
        (b.clone(), "guests".into(), 2),
        (c.clone(), "notes".into(), 2),
    ];
    expected.sort();
    assert_eq!(purged, expected, "{created}");
    assert_eq!(created["purgedTotal"], 7, "{created}");
    assert!(created["keptChanged"].is_null() || created["keptChanged"] == 0, "{created}");

    assert_eq!((count(&api, &a, "guests").await, count(&api, &b, "guests").await), (0, 0));
    assert_eq!(count(&api, &c, "notes").await, 0);
    assert_eq!((count(&api, &a, "payments").await, count(&api, &b, "payments").await), (1, 1));
    let (_, events) = api.get("/api/events").await;
    assert_eq!(events["items"].as_array().unwrap().len(), 3, "events stay: {events}");

    // The archive holds what was purged, and gives it back.
    let (status, collections) = api.get(&format!("/api/backups/{id}/collections")).await;
    assert_eq!(status, StatusCode::OK, "{collections}");
    let guests = collections.as_array().unwrap().iter().find(|c| c["collection"] == "guests").cloned();
    assert_eq!(guests.map(|g| g["documentCount"].clone()), Some(json!(5)), "{collections}");
    let report = restore(&api, &id, json!({"eventIds": [a], "specificCollections": ["guests"]})).await;
    assert_eq!(report["totals"], tally(3, 0, 0), "{report}");
    assert_eq!(count(&api, &a, "guests").await, 3);

    // Limited to some events.
    let second = api
        .create("/api/backup/create", json!({"purge": {"collections": ["payments"], "eventIds": [a]}}))
        .await;
    let purged: Vec<&Value> =
        second["purged"].as_array().unwrap().iter().filter(|p| p["count"] != 0).collect();
    assert_eq!(purged, [&json!({"eventId": a, "collection": "payments", "count": 1})], "{second}");
    assert_eq!(second["purgedTotal"], 1, "{second}");
    assert_eq!((count(&api, &a, "payments").await, count(&api, &b, "payments").await), (0, 1));
    assert_eq!(count(&api, &a, "guests").await, 3);
}

#[tokio::test]
async fn a_failed_backup_purges_nothing() {
    let dir = data_dir();
    let server = Server::start_with(dir.path(), 0, &[("EVENTVAULT_FAULTS", "backup.before_rename=error")]);
    let api = Api::new(&server);
    let (a, _, _) = event_with(&api, json!({"name": "A"}), &[("guests", 3)]).await;
    let before = api.snapshot().await;
    let (status, body) = api.post("/api/backup/create", json!({"purge": {"collections": ["guests"]}})).await;
    assert!(status.is_server_error(), "{status}: {body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    wait_for(5, "the injected fault in the log", || async {
        server.log().contains("injected fault at backup.before_rename").then_some(())
    })
    .await;
    assert_eq!(count(&api, &a, "guests").await, 3);
    assert_eq!(api.snapshot().await, before, "nothing purged, nothing announced");
    // No archive is published (a hidden temp file of the failed write is not one).
    let published: Vec<String> = archives(dir.path()).into_iter().filter(|f| !f.starts_with('.')).collect();
    assert_eq!(published, Vec::<String>::new());
    assert_eq!(api.get("/api/backups").await.1, json!([]));
    let entries = history(&api, "").await;
    let failed = entries.iter().find(|e| e["status"] == "failed").unwrap_or_else(|| panic!("{entries:?}"));
    assert!(failed["error"].as_str().is_some_and(|e| !e.is_empty()), "{failed}");
    assert!(!entries.iter().any(|e| e["action"] == "purge" && e["status"] == "success"), "{entries:?}");
}

/// (method, path, raw JSON body, expected status, expected error code or "")
type Case = (Method, String, Option<String>, StatusCode, &'static str);

#[tokio::test]
async fn bad_input_on_the_new_routes() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (e, _, _) = event_with(&api, json!({"name": "E"}), &[("guests", 2)]).await;
    let (e2, _, _) = event_with(&api, json!({"name": "E2"}), &[("guests", 1)]).await;
    let eb = event_backup(&api, &e).await["id"].as_str().unwrap().to_owned();
    let full = full_id(&api.backup("bad").await);
    let snapshot = api.snapshot().await;
    let (_, catalogue) = api.get("/api/backups").await;
    let history_before = history(&api, "").await;

    const NF: StatusCode = StatusCode::NOT_FOUND;
    const BAD: StatusCode = StatusCode::BAD_REQUEST;
    let get = |path: String, status, code| -> Case { (Method::GET, path, None, status, code) };
    let post = |path: String, body: &str, status, code| -> Case {
        (Method::POST, path, Some(body.into()), status, code)
    };
    let mut cases: Vec<Case> = vec![
        get("/api/backups/nope".into(), NF, ""),
        get("/api/backups/nope.tar.gz".into(), NF, ""),
        get("/api/backups/event_NOPE_backup_1".into(), NF, ""),
        get("/api/backups/event_NOPE_backup_1.json.gz".into(), NF, ""),
        get("/api/backups/nope/collections".into(), NF, ""),
        get("/api/backups/nope/collections/guests".into(), NF, ""),
        get("/api/backups/nope/download".into(), NF, ""),
        (Method::DELETE, "/api/backups/nope".into(), None, NF, ""),
        post("/api/backups/nope/restore".into(), "{}", NF, ""),
        post("/api/backups/event_NOPE_backup_1/restore".into(), "{}", NF, ""),
        (Method::POST, "/api/events/NOPE/backup".into(), None, NF, ""),
        get("/api/backups?kind=bogus".into(), BAD, ""),
        get("/api/backups?eventId=a%2Fb".into(), BAD, ""),
        get("/api/backup/history?limit=0".into(), BAD, ""),
        get("/api/backup/history?limit=1001".into(), BAD, ""),
        get("/api/backup/history?limit=abc".into(), BAD, ""),
        (Method::POST, "/api/events/bad.id/backup".into(), None, BAD, ""),
        get("/api/events/bad.id/backup".into(), BAD, ""),
        post(
            format!("/api/backups/{eb}/restore"),
            &json!({"newEventId": e}).to_string(),
            StatusCode::CONFLICT,
            "event_exists",
        ),
        post(
            format!("/api/backups/{full}/restore"),
            &json!({"eventIds": [e], "newEventId": e2}).to_string(),
            StatusCode::CONFLICT,
            "event_exists",
        ),
    ];
    for p in ["..%2Fx", ".hidden", "a%5Cb", "a%00b", "..%2F..%2Fbackups%2Faudit.jsonl"] {
        for (method, suffix) in [
            (Method::GET, ""),
            (Method::GET, "/collections"),
            (Method::GET, "/collections/guests"),
            (Method::GET, "/download"),
            (Method::DELETE, ""),
            (Method::POST, "/restore"),
        ] {
            let body = (method == Method::POST).then(|| "{}".to_owned());
            cases.push((method, format!("/api/backups/{p}{suffix}"), body, BAD, "invalid_backup_name"));
        }
    }
    for backup in [&eb, &full] {
        for body in [
            json!({"dryRun": "yes"}).to_string(),
            json!({"specificCollections": "guests"}).to_string(),
            json!({"specificCollections": ["Bad!"]}).to_string(),
            json!({"newEventId": "a/b"}).to_string(),
            json!({"newEventId": ""}).to_string(),
            json!({"newEventId": "x".repeat(65)}).to_string(),
            json!({"eventIds": [1]}).to_string(),
            json!({"eventIds": "x"}).to_string(),
            json!({"eventIds": ["a/b"]}).to_string(),
            json!({"skipExistingRecords": "no"}).to_string(),
            json!({"bogus": 1}).to_string(),
            "not json".to_owned(),
            "{\"dryRun\":".to_owned(),
            "[]".to_owned(),
        ] {
            cases.push((Method::POST, format!("/api/backups/{backup}/restore"), Some(body), BAD, ""));
        }
        for query in ["limit=0", "limit=1001", "limit=abc", "cursor=%21%21%21"] {
            cases.push(get(format!("/api/backups/{backup}/collections/guests?{query}"), BAD, ""));
        }
    }
    // An event backup holds one event; a clone from an archive needs exactly one source.
    cases.push(post(format!("/api/backups/{eb}/restore"), &json!({"eventIds": [e2]}).to_string(), BAD, ""));
    cases.push(post(
        format!("/api/backups/{full}/restore"),
        &json!({"newEventId": "solo"}).to_string(),
        BAD,
        "",
    ));
    cases.push(post(
        format!("/api/backups/{full}/restore"),
        &json!({"eventIds": [e, e2], "newEventId": "pair"}).to_string(),
        BAD,
        "",
    ));

    // Every case runs; the mismatches are reported together at the end.
    let mut wrong = Vec::new();
    for (method, path, body, expected, code) in cases {
        let mut request = api.request(method.clone(), &path);
        let shown = body.clone().unwrap_or_default();
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(!status.is_server_error(), "never a 5xx: {method} {path} {shown}: {status} {text}");
        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let shape = parsed["error"]["code"].is_string() && parsed["error"]["message"].is_string();
        if status != expected || !shape || (!code.is_empty() && parsed["error"]["code"] != code) {
            wrong.push(format!("{method} {path} {shown}: expected {expected} {code}, got {status} {text}"));
        }
    }

    // Odd but harmless input: anything but a 5xx.
    for path in [
        format!("/api/backups/{eb}/collections/Bad%21"),
        format!("/api/backups/{eb}/collections/_events?eventId=a%2Fb"),
        format!("/api/backups/{full}/collections/guests?eventId=NOPE"),
        format!("/api/backups/{full}/collections/guests?q="),
        format!("/api/backups/{full}/collections/guests?q=%00%FF"),
        "/api/backups?eventId=NOPE".to_owned(),
        "/api/backups?kind=".to_owned(),
    ] {
        let (status, body) = api.get(&path).await;
        assert!(!status.is_server_error(), "GET {path}: {status} {body}");
    }

    assert!(
        wrong.is_empty(),
        "{} of the bad requests got another answer:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Nothing changed, nothing was written, and the server still serves.
    assert_eq!(api.snapshot().await, snapshot);
    assert_eq!(api.get("/api/backups").await.1, catalogue);
    let (_, health) = api.get("/api/health").await;
    assert_eq!(health["status"], "ok", "{health}");
    let entries = history(&api, "").await;
    assert!(
        entries.iter().all(|e| e["status"] != "success" || history_before.contains(e)),
        "no new successful operation: {entries:?}"
    );
}
