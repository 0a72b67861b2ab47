//! `eventvault backup …` from the command line: forwarded to the server that holds the store,
//! refused when that server cannot be reached, run offline on the store when no server runs, and
//! bad input refused.

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{backup_cli, data_dir, files_in, Api, Server};
use crate::event_backup::{event_dir, tally};

/// What one run of the CLI did.
struct Run {
    args: String,
    success: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts success and parses stdout as JSON.
    fn json(&self) -> Value {
        assert!(
            self.success,
            "`backup {}` failed:\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("`backup {}`: stdout is not JSON ({e}): {}", self.args, self.stdout))
    }

    /// Asserts success and returns stdout.
    fn text(&self) -> &str {
        assert!(
            self.success,
            "`backup {}` failed:\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Asserts failure with stderr containing every piece; returns stderr.
    fn fails_with(&self, pieces: &[&str]) -> &str {
        assert!(!self.success, "`backup {}` succeeded, it must fail:\nstdout: {}", self.args, self.stdout);
        for piece in pieces {
            assert!(
                self.stderr.contains(piece),
                "`backup {}`: stderr lacks {piece:?}:\n{}",
                self.args,
                self.stderr
            );
        }
        self.stderr.as_str()
    }

    /// Asserts that the command went to the server's REST API.
    fn forwarded(&self, port: u16) -> &Self {
        let to = format!("held by the server at http://127.0.0.1:{port}");
        assert!(self.stderr.contains(&to), "`backup {}` was not forwarded: {}", self.args, self.stderr);
        self
    }
}

/// `eventvault backup ARGS` on the folders of `dir`, with LISTEN_ADDR = `listen`.
fn cli(dir: &Path, listen: &str, args: &[&str]) -> Run {
    let output =
        backup_cli(dir, args).env("LISTEN_ADDR", listen).env("BLOCK_CACHE_MB", "16").output().unwrap();
    Run {
        args: args.join(" "),
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The CLI pointed at a running server.
fn at(server: &Server, args: &[&str]) -> Run {
    cli(&server.dir, &format!("127.0.0.1:{}", server.port), args)
}

/// The CLI with LISTEN_ADDR where nothing listens.
fn offline(dir: &Path, args: &[&str]) -> Run {
    cli(dir, "127.0.0.1:1", args)
}

/// Creates an event named `name` with guests of these names and `payments` payments; returns its
/// id, its guests and its payments as the server stored them.
async fn event(api: &Api, name: &str, guests: &[&str], payments: u64) -> (String, Vec<Value>, Vec<Value>) {
    let id = api.create("/api/events", json!({"name": name})).await["id"].as_str().unwrap().to_owned();
    let mut g = Vec::new();
    for guest in guests {
        g.push(api.create(&format!("/api/events/{id}/guests"), json!({"name": guest})).await);
    }
    let mut p = Vec::new();
    for amount in 0..payments {
        p.push(api.create(&format!("/api/events/{id}/payments"), json!({"amount": amount})).await);
    }
    (id, g, p)
}

/// `DELETE /api/events/{id}`, asserting 200; returns the id of the event backup it wrote.
async fn delete_event(api: &Api, id: &str) -> String {
    let (status, deleted) = api.call(Method::DELETE, &format!("/api/events/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "DELETE /api/events/{id}: {deleted}");
    deleted["backup"]["id"].as_str().unwrap_or_else(|| panic!("backup.id: {deleted}")).to_owned()
}

/// The records of an event's collection, sorted by id.
async fn records(api: &Api, event: &str, collection: &str) -> Vec<Value> {
    let (status, page) = api.get(&format!("/api/events/{event}/{collection}?limit=1000")).await;
    assert_eq!(status, StatusCode::OK, "{event}/{collection}: {page}");
    sorted(page["items"].as_array().unwrap().clone())
}

fn sorted(mut docs: Vec<Value>) -> Vec<Value> {
    docs.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    docs
}

async fn status_of(api: &Api, path: &str) -> StatusCode {
    api.get(path).await.0
}

/// The audit trail through the API.
async fn history(api: &Api) -> Vec<Value> {
    let (status, body) = api.get("/api/backup/history").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["entries"].as_array().unwrap_or_else(|| panic!("entries: {body}")).clone()
}

/// The (action, status, actor) of audit entries.
fn summary(entries: &[Value]) -> Vec<(String, String, String)> {
    entries
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_else(|| panic!("{k}: {e}")).to_owned();
            (s("action"), s("status"), s("actor"))
        })
        .collect()
}

fn entry(action: &str, status: &str, actor: &str) -> (String, String, String) {
    (action.to_owned(), status.to_owned(), actor.to_owned())
}

/// (collection, documentCount) of a `collections` answer.
fn counts(collections: &Value) -> Vec<(String, u64)> {
    collections
        .as_array()
        .unwrap_or_else(|| panic!("a bare array: {collections}"))
        .iter()
        .map(|c| (c["collection"].as_str().unwrap().to_owned(), c["documentCount"].as_u64().unwrap()))
        .collect()
}

fn names(docs: &Value) -> Vec<&str> {
    docs.as_array()
        .unwrap_or_else(|| panic!("an array: {docs}"))
        .iter()
        .map(|d| d["name"].as_str().unwrap_or_else(|| panic!("name: {d}")))
        .collect()
}

/// The only event of a restore report.
fn only_event(report: &Value) -> &Value {
    let events = report["events"].as_array().unwrap_or_else(|| panic!("events: {report}"));
    assert_eq!(events.len(), 1, "{report}");
    &events[0]
}

#[tokio::test]
async fn cli_commands_are_forwarded_to_the_running_server() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (id, guests, payments) = event(&api, "Gala", &["Ann Smith", "Bob SMITH", "Carl Jones"], 2).await;
    let (other, _, _) = event(&api, "Other", &["Zed"], 0).await;
    let backup = delete_event(&api, &id).await;
    assert_eq!(status_of(&api, &format!("/api/events/{id}")).await, StatusCode::NOT_FOUND);

    // The catalogue, as JSON and as a table.
    let listed = at(&server, &["list", "--kind", "event", "--json"]).json();
    let listed = listed.as_array().unwrap_or_else(|| panic!("a bare array: {listed}"));
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], backup.as_str(), "{listed:?}");
    assert_eq!(listed[0]["kind"], "event", "{listed:?}");
    assert_eq!(listed[0]["eventId"], id.as_str(), "{listed:?}");
    assert_eq!(listed[0]["counts"]["records"], json!({"guests": 3, "payments": 2}), "{listed:?}");
    assert_eq!(at(&server, &["list", "--kind", "full", "--json"]).json(), json!([]));
    assert_eq!(at(&server, &["list", "--event", &other, "--json"]).json(), json!([]));
    let table = at(&server, &["list", "--kind", "event"]).text().to_owned();
    assert!(table.contains(&backup), "{table}");
    assert!(table.contains(&format!("event {id} (Gala)")), "{table}");

    let details = at(&server, &["details", &backup]).json();
    assert_eq!(details["metadata"]["eventId"], id.as_str(), "{details}");
    assert_eq!(details["metadata"]["eventName"], "Gala", "{details}");
    assert_eq!(details["metadata"]["counts"], json!({"guests": 3, "payments": 2}), "{details}");
    assert_eq!(at(&server, &["show", &format!("{backup}.json.gz")]).json(), details, "alias and file name");

    // A dry run reports what a restore would do and changes nothing.
    let dry = at(&server, &["restore-dry", &backup]);
    let report = dry.forwarded(server.port).json();
    assert_eq!(report["dryRun"], true, "{report}");
    assert_eq!(report["kind"], "event", "{report}");
    assert_eq!(report["mode"], "merge", "{report}");
    assert_eq!(report["backupId"], backup.as_str(), "{report}");
    assert_eq!(report["totals"], tally(5, 0, 0), "{report}");
    let ev = only_event(&report);
    assert_eq!(ev["eventId"], id.as_str(), "{report}");
    assert_eq!(ev["eventExists"], false, "{report}");
    assert_eq!(ev["event"], "created", "{report}");
    assert_eq!(ev["collections"], json!({"guests": tally(3, 0, 0), "payments": tally(2, 0, 0)}), "{report}");
    assert_eq!(status_of(&api, &format!("/api/events/{id}")).await, StatusCode::NOT_FOUND, "dry run");

    // The restore brings the event back with its records.
    let report = at(&server, &["restore", &backup]).forwarded(server.port).json();
    assert_eq!(report["dryRun"], false, "{report}");
    assert_eq!(report["totals"], tally(5, 0, 0), "{report}");
    let (status, back) = api.get(&format!("/api/events/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(back["name"], "Gala", "{back}");
    assert_eq!(records(&api, &id, "guests").await, sorted(guests.clone()));
    assert_eq!(records(&api, &id, "payments").await, sorted(payments.clone()));

    // A clone under a new id, once.
    let report = at(&server, &["restore-new", &backup, "clone-1"]).forwarded(server.port).json();
    assert_eq!(report["totals"], tally(5, 0, 0), "{report}");
    let ev = only_event(&report);
    assert_eq!((&ev["eventId"], &ev["sourceEventId"]), (&json!("clone-1"), &json!(id)), "{report}");
    let (status, clone) = api.get("/api/events/clone-1").await;
    assert_eq!(status, StatusCode::OK, "{clone}");
    assert_eq!((&clone["name"], &clone["version"]), (&json!("Gala"), &json!(1)), "{clone}");
    let strip = |docs: Vec<Value>| -> Vec<Value> {
        docs.into_iter()
            .map(|mut d| {
                d.as_object_mut().unwrap().remove("eventId");
                d
            })
            .collect()
    };
    assert_eq!(strip(records(&api, "clone-1", "guests").await), strip(sorted(guests.clone())));
    assert_eq!(strip(records(&api, "clone-1", "payments").await), strip(sorted(payments.clone())));
    assert_eq!(records(&api, &id, "guests").await, sorted(guests.clone()), "the original is untouched");
    at(&server, &["restore-new", &backup, "clone-1"]).fails_with(&["409", "exists"]);
    assert_eq!(records(&api, "clone-1", "guests").await.len(), 3);

    // Only guests, overwritten.
    let report = at(&server, &["restore", &backup, "--collections", "guests", "--overwrite"]).json();
    assert_eq!(report["totals"], tally(0, 3, 0), "{report}");
    let ev = only_event(&report);
    assert_eq!(ev["collections"], json!({"guests": tally(0, 3, 0)}), "{report}");
    assert_eq!(records(&api, &id, "guests").await, sorted(guests.clone()));

    // The audit trail names the CLI: the CLI's own history and the API's agree.
    let entries = at(&server, &["history", "--limit", "5"]).json();
    let entries = entries.as_array().unwrap_or_else(|| panic!("a bare array: {entries}")).clone();
    let restores = vec![
        entry("restore", "success", "cli"),
        entry("restore", "failed", "cli"),
        entry("restore", "success", "cli"),
        entry("restore", "success", "cli"),
        entry("restore", "success", "cli"),
    ];
    assert_eq!(summary(&entries), restores, "{entries:?}");
    assert!(entries.iter().all(|e| e["target"] == backup.as_str() && e["kind"] == "event"), "{entries:?}");
    assert_eq!(entries[4]["options"]["dryRun"], true, "the oldest is the dry run: {entries:?}");
    assert_eq!(history(&api).await[..5].to_vec(), entries);
    let two = at(&server, &["history", "--limit", "2"]).json();
    assert_eq!(two, json!(entries[..2]));

    // Browsing the backup.
    let collections = at(&server, &["collections", &backup]).json();
    let expected = [("_events", 1), ("guests", 3), ("payments", 2)].map(|(c, n)| (c.to_owned(), n));
    assert_eq!(counts(&collections), expected, "{collections}");
    let page = at(&server, &["docs", &backup, "guests", "--q", "smith", "--limit", "1"]).json();
    assert_eq!(names(&page["documents"]), ["Ann Smith"], "{page}");
    assert_eq!(page["documents"][0], guests[0], "as stored: {page}");
    assert_eq!(page["total"], 2, "{page}");
    let cursor = page["nextCursor"].as_str().unwrap_or_else(|| panic!("nextCursor: {page}")).to_owned();
    let page =
        at(&server, &["docs", &backup, "guests", "--q", "smith", "--limit", "1", "--cursor", &cursor]).json();
    assert_eq!(names(&page["documents"]), ["Bob SMITH"], "{page}");
    assert_eq!((&page["total"], &page["nextCursor"]), (&json!(2), &Value::Null), "{page}");
    let events = at(&server, &["docs", &backup, "_events"]).json();
    assert_eq!(events["total"], 1, "{events}");
    assert_eq!(events["documents"][0]["id"], id.as_str(), "{events}");

    // A whole-store backup, taken by the server.
    let created = at(&server, &["create", "--label", "fwd"]).forwarded(server.port).json();
    let name = created["name"].as_str().unwrap_or_else(|| panic!("name: {created}")).to_owned();
    assert!(name.ends_with("fwd.tar.gz"), "{created}");
    assert!(dir.path().join("backups").join(&name).is_file(), "{:?}", files_in(&dir.path().join("backups")));
    assert!(dir.path().join("backups").join(format!("{name}.sha256")).is_file());
    let newest = &history(&api).await[0];
    assert_eq!((&newest["action"], &newest["actor"]), (&json!("create"), &json!("cli")), "{newest}");
    let full = at(&server, &["list", "--kind", "full", "--json"]).json();
    assert_eq!(full.as_array().map(|a| a.len()), Some(1), "{full}");
    assert_eq!(full[0]["name"], name.as_str(), "{full}");

    // Replacing the whole store needs --yes when there is no terminal to ask on.
    let seq = crate::event_backup::last_seq(&api).await;
    let prompt = at(&server, &["restore", &name]);
    prompt.fails_with(&["--yes"]);
    assert!(prompt.stdout.is_empty(), "{}", prompt.stdout);
    assert_eq!(crate::event_backup::last_seq(&api).await, seq, "nothing changed");
    assert_eq!(status_of(&api, "/api/events/clone-1").await, StatusCode::OK);

    // Bad options are refused by the server, with its message.
    at(&server, &["restore-new", &backup, "a/b"]).fails_with(&["400", "newEventId"]);
    at(&server, &["restore", &backup, "--events", "nope"]).fails_with(&["400"]);
}

#[tokio::test]
async fn store_commands_are_refused_when_the_server_holding_the_store_does_not_answer() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (id, _, _) = event(&api, "Gala", &["Ann"], 1).await;
    let backup = delete_event(&api, &id).await;
    let pid = format!("pid {}", server.pid());

    offline(dir.path(), &["create"]).fails_with(&["running eventvault", &pid]);
    offline(dir.path(), &["restore", &backup]).fails_with(&["running eventvault", &pid]);
    offline(dir.path(), &["restore-new", &backup, "clone-1"]).fails_with(&["running eventvault", &pid]);
    assert_eq!(files_in(&dir.path().join("backups")).iter().filter(|f| f.ends_with(".tar.gz")).count(), 0);
    assert_eq!(status_of(&api, &format!("/api/events/{id}")).await, StatusCode::NOT_FOUND);
    assert_eq!(status_of(&api, "/api/events/clone-1").await, StatusCode::NOT_FOUND);

    // Another server answering at LISTEN_ADDR is not the one holding the store.
    let elsewhere = data_dir();
    let stranger = Server::start(elsewhere.path());
    let wrong = cli(dir.path(), &format!("127.0.0.1:{}", stranger.port), &["restore", &backup]);
    wrong.fails_with(&[&pid, &format!("is pid {}", stranger.pid())]);
    assert_eq!(status_of(&api, &format!("/api/events/{id}")).await, StatusCode::NOT_FOUND);
    assert_eq!(status_of(&Api::new(&stranger), &format!("/api/events/{id}")).await, StatusCode::NOT_FOUND);

    // Commands that only read files work beside the server.
    let listed = offline(dir.path(), &["list", "--json"]).json();
    assert_eq!(listed.as_array().map(|a| a.len()), Some(1), "{listed}");
    assert_eq!(offline(dir.path(), &["details", &backup]).json()["metadata"]["eventId"], id.as_str());
}

#[tokio::test]
async fn cli_restores_and_deletes_offline() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    let (a, a_guests, a_payments) = event(&api, "Alpha", &["Ann", "Bob", "Cy"], 2).await;
    let (b, b_guests, _) = event(&api, "Beta", &["Dee", "Eve"], 1).await;
    let full = api.backup("both").await["name"].as_str().unwrap().to_owned();
    let backup = delete_event(&api, &a).await;
    delete_event(&api, &b).await;
    server.stop();

    let dry = offline(dir.path(), &["restore-dry", &backup]);
    assert!(!dry.stderr.contains("sending the command"), "{}", dry.stderr);
    let report = dry.json();
    assert_eq!((&report["dryRun"], &report["totals"]), (&json!(true), &tally(5, 0, 0)), "{report}");
    assert_eq!(only_event(&report)["event"], "created", "{report}");
    // A second dry run sees the same: the first changed nothing.
    assert_eq!(offline(dir.path(), &["restore-dry", &backup]).json()["totals"], tally(5, 0, 0));

    let report = offline(dir.path(), &["restore", &backup]).json();
    assert_eq!((&report["dryRun"], &report["totals"]), (&json!(false), &tally(5, 0, 0)), "{report}");
    let report = offline(dir.path(), &["restore", &backup]).json();
    assert_eq!(report["totals"], tally(0, 0, 5), "a second restore skips what is there: {report}");
    let report = offline(dir.path(), &["restore-new", &backup, "alpha-2"]).json();
    assert_eq!(report["totals"], tally(5, 0, 0), "{report}");
    assert_eq!(only_event(&report)["eventId"], "alpha-2", "{report}");
    offline(dir.path(), &["restore-new", &backup, "alpha-2"]).fails_with(&["exists"]);

    // A selective restore from the whole-store archive: one event, one collection.
    let report = offline(dir.path(), &["restore", &full, "--events", &b, "--collections", "guests"]).json();
    assert_eq!((&report["kind"], &report["mode"]), (&json!("full"), &json!("merge")), "{report}");
    assert_eq!(report["totals"], tally(2, 0, 0), "{report}");
    let ev = only_event(&report);
    assert_eq!(ev["eventId"], b.as_str(), "{report}");
    assert_eq!(ev["collections"], json!({"guests": tally(2, 0, 0)}), "{report}");

    // Deleting the event backup removes it and its sidecar.
    let name = format!("{backup}.json.gz");
    assert!(files_in(&event_dir(dir.path())).contains(&format!("{name}.sha256")));
    let deleted = offline(dir.path(), &["delete", &backup]);
    assert!(deleted.text().contains(&name), "{}", deleted.stdout);
    let left = files_in(&event_dir(dir.path()));
    assert!(!left.iter().any(|f| f.starts_with(&backup)), "{left:?}");
    assert_eq!(left.len(), 2, "the other event backup and its sidecar: {left:?}");
    offline(dir.path(), &["details", &backup]).fails_with(&["not found"]);

    // The server finds it all.
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (status, alpha) = api.get(&format!("/api/events/{a}")).await;
    assert_eq!((status, &alpha["name"]), (StatusCode::OK, &json!("Alpha")), "{alpha}");
    assert_eq!(records(&api, &a, "guests").await, sorted(a_guests.clone()));
    assert_eq!(records(&api, &a, "payments").await, sorted(a_payments.clone()));
    let (status, clone) = api.get("/api/events/alpha-2").await;
    assert_eq!((status, &clone["name"]), (StatusCode::OK, &json!("Alpha")), "{clone}");
    assert_eq!(records(&api, "alpha-2", "guests").await.len(), 3);
    assert_eq!(records(&api, "alpha-2", "payments").await.len(), 2);
    let (status, beta) = api.get(&format!("/api/events/{b}")).await;
    assert_eq!((status, &beta["name"]), (StatusCode::OK, &json!("Beta")), "{beta}");
    assert_eq!(records(&api, &b, "guests").await, sorted(b_guests));
    assert_eq!(records(&api, &b, "payments").await, Vec::<Value>::new(), "only guests were restored");

    // The audit trail: the CLI's restores and delete, newest first.
    let entries = history(&api).await;
    let cli_entries: Vec<Value> = entries.iter().filter(|e| e["actor"] == "cli").cloned().collect();
    assert_eq!(
        summary(&cli_entries),
        vec![
            entry("delete", "success", "cli"),
            entry("restore", "success", "cli"),
            entry("restore", "failed", "cli"),
            entry("restore", "success", "cli"),
            entry("restore", "success", "cli"),
            entry("restore", "success", "cli"),
            entry("restore", "success", "cli"),
            entry("restore", "success", "cli"),
        ],
        "{entries:?}"
    );
    assert_eq!(cli_entries[0]["kind"], "event", "{entries:?}");
    assert!(
        cli_entries[0]["target"] == backup.as_str() || cli_entries[0]["target"] == name.as_str(),
        "{entries:?}"
    );
    assert_eq!(cli_entries[1]["kind"], "full", "{entries:?}");
    assert_eq!(entries[0], cli_entries[0], "the delete is the newest entry");
}

#[tokio::test]
async fn cli_refuses_bad_input() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    let (id, _, _) = event(&api, "Gala", &["Ann"], 1).await;
    let backup = delete_event(&api, &id).await;
    server.stop();
    let files = files_in(&event_dir(dir.path()));

    for args in [
        &["details", "../x"][..],
        &["show", "..x"],
        &["restore", "../x"],
        &["restore-dry", "a/b"],
        &["collections", "../x"],
        &["docs", "../x", "guests"],
        &["delete", "../x"],
    ] {
        offline(dir.path(), args).fails_with(&["invalid backup name"]);
    }
    offline(dir.path(), &["restore-new", &backup, "a/b"]).fails_with(&["newEventId"]);
    offline(dir.path(), &["restore", &backup, "--collections", "Bad!"]).fails_with(&["specificCollections"]);
    offline(dir.path(), &["docs", &backup, "guests", "--limit", "0"]).fails_with(&["--limit"]);
    offline(dir.path(), &["docs", &backup, "guests", "--limit", "1001"]).fails_with(&["--limit"]);
    offline(dir.path(), &["docs", &backup, "guests", "--cursor", "not-a-cursor"]).fails_with(&["cursor"]);
    for args in [
        &["details", "nope"][..],
        &["restore", "nope"],
        &["restore-new", "nope", "clone-1"],
        &["collections", "nope"],
        &["delete", "event_x_backup_1"],
    ] {
        offline(dir.path(), args).fails_with(&["not found"]);
    }
    assert_eq!(files_in(&event_dir(dir.path())), files, "nothing deleted");

    // Nothing was restored.
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    assert_eq!(status_of(&api, &format!("/api/events/{id}")).await, StatusCode::NOT_FOUND);
    assert_eq!(status_of(&api, "/api/events/clone-1").await, StatusCode::NOT_FOUND);
    let (_, events) = api.get("/api/events").await;
    assert_eq!(events["items"], json!([]), "{events}");
}

#[tokio::test]
async fn forwarded_and_offline_commands_answer_alike_and_name_only_the_backup_asked_for() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    event(&api, "Alike", &["ada"], 1).await;
    let first = at(&server, &["create", "--label", "one"]).forwarded(server.port).json();
    let second = at(&server, &["create", "--label", "two"]).forwarded(server.port).json();
    let (first, second) = (first["name"].as_str().unwrap().to_owned(), second["name"].as_str().unwrap());
    assert_eq!(at(&server, &["create", "--label", "x"]).json()["success"], true);

    // What follows a `?`, `#` or `%` in an id is part of the id, never of the request.
    for id in [format!("{second}?junk"), format!("{second}#x"), format!("{second}%3Fx")] {
        at(&server, &["delete", &id]).fails_with(&["not found"]);
    }
    assert!(dir.path().join("backups").join(second).is_file(), "{second} is still there");
    let deleted = at(&server, &["delete", second]);
    assert!(deleted.forwarded(server.port).text().contains(second), "{}", deleted.text());
    assert!(!dir.path().join("backups").join(second).exists());

    let forwarded = at(&server, &["restore", &first, "--dry-run"]).forwarded(server.port).json();
    server.stop();
    let offline_report = offline(dir.path(), &["restore", &first, "--dry-run"]).json();
    for report in [&forwarded, &offline_report] {
        assert_eq!(report["success"], true, "{report}");
        assert_eq!(report["mode"], "swap", "{report}");
        assert_eq!(report["dryRun"], true, "{report}");
    }
    let created = offline(dir.path(), &["create", "--label", "offline"]).json();
    assert_eq!(created["success"], true, "{created}");
    assert_eq!(created["trigger"], "cli", "{created}");
}
