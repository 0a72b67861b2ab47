//! Log shipping and point-in-time restore: committed writes reach the repository within
//! SHIP_INTERVAL_MS, and `eventvault restore --at|--seq` (or `POST /api/backup/restore`)
//! rebuilds exactly what the store held at that moment, on any timeline, from a folder or a
//! real S3 server (rclone's), refusing what it cannot reach and damaged segments.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::s3::{as_strs, S3Server};
use crate::common::{command, data_dir, wait_for, Api, Server};
use crate::repo::repo_copy;

/// SHIP_INTERVAL_MS of these tests.
const SHIP_MS: u64 = 200;

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `t` moved by `ms` milliseconds, as RFC 3339 with milliseconds.
fn shifted(t: &str, ms: i64) -> String {
    let t = chrono::DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("{t:?}: {e}"));
    (t + chrono::Duration::milliseconds(ms)).with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A folder repository inside `dir`: its URL and path.
fn file_repo(dir: &Path) -> (String, PathBuf) {
    let path = dir.join("repo");
    (format!("file://{}", path.display()), path)
}

/// A server on `dir` shipping to the repository at `url`.
fn shipping_server(dir: &Path, url: &str) -> Server {
    Server::start_with(dir, 0, &[("BACKUP_REPO", url), ("SHIP_INTERVAL_MS", &SHIP_MS.to_string())])
}

async fn health(api: &Api) -> Value {
    let (status, health) = api.get("/api/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    health
}

/// Waits until the repository holds every committed write; returns health then.
async fn wait_shipped(api: &Api) -> Value {
    wait_for(120, "every committed write to be shipped", || async {
        let h = health(api).await;
        let last = h["store"]["lastSeq"].as_u64().unwrap();
        (h["ship"]["lastShippedSeq"].as_u64() == Some(last) && h["ship"]["lastError"].is_null()).then_some(h)
    })
    .await
}

/// The repository id of a backup's answer.
fn backup_id(created: &Value) -> String {
    repo_copy(created)["id"].as_str().unwrap().to_owned()
}

/// A moment between writes, with everything a user could read at that moment.
struct Mark {
    at: String,
    seq: u64,
    state: Value,
}

/// Marks the moment after the last acknowledged write: 50 ms either side of it, so that no
/// message shares its millisecond.
async fn mark(api: &Api) -> Mark {
    tokio::time::sleep(Duration::from_millis(50)).await;
    let at = now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let state = api.snapshot().await;
    let seq = state["messages"].as_array().unwrap().last().map_or(0, |m| m["seq"].as_u64().unwrap());
    Mark { at, seq, state }
}

/// Sleeps until the wall clock is in a later second than `t`.
async fn next_second_after(t: &str) {
    let second = chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp();
    while Utc::now().timestamp() <= second {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `eventvault restore ARGS` on the folders of `dir`, with the variables `env`.
fn restore_cli(dir: &Path, env: &[(String, String)], args: &[&str]) -> Output {
    command(dir, "restore", args).envs(env.iter().map(|(k, v)| (k, v))).output().expect("run eventvault")
}

/// A store restored onto a fresh directory, and a server started on it.
struct Restored {
    server: Server,
    _dir: tempfile::TempDir,
}

/// Restores onto a fresh directory with the CLI and starts a server on it; returns the
/// printed report too.
fn restore_fresh_server(env: &[(String, String)], args: &[&str]) -> (Value, Restored) {
    let dir = data_dir();
    let started = Instant::now();
    let out = restore_cli(dir.path(), env, args);
    let took = started.elapsed();
    assert!(out.status.success(), "restore {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    eprintln!(
        "restore {:?}: {} ms wall, {} ms reported, {} writes replayed from {} segments",
        &args[2..],
        took.as_millis(),
        report["durationMs"],
        report["writesReplayed"],
        report["segmentsRead"]
    );
    let server = Server::start(dir.path());
    (report, Restored { server, _dir: dir })
}

/// [`restore_fresh_server`], and everything the server serves.
async fn restore_fresh(env: &[(String, String)], args: &[&str]) -> (Value, Value) {
    let (report, restored) = restore_fresh_server(env, args);
    (report, Api::new(&restored.server).snapshot().await)
}

/// The names of every event, page by page.
async fn all_event_names(api: &Api) -> Vec<String> {
    let (mut names, mut path) = (Vec::new(), "/api/events?limit=1000".to_owned());
    loop {
        let (status, page) = api.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        names.extend(event_names(&json!({"events": page["items"]})));
        match page["nextCursor"].as_str() {
            Some(next) => path = format!("/api/events?limit=1000&cursor={next}"),
            None => return names,
        }
    }
}

/// The names of the events a snapshot holds.
fn event_names(snapshot: &Value) -> Vec<String> {
    snapshot["events"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect()
}

async fn call_ok(api: &Api, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, answer) = api.call(method.clone(), path, body).await;
    assert!(status.is_success(), "{method} {path}: {status} {answer}");
    answer
}

/// Creates events `w-0`, `w-1`, … one after the other until the server stops answering;
/// returns when each was acknowledged.
async fn steady_writer(api: Api) -> Vec<Instant> {
    let mut acked = Vec::new();
    loop {
        let request =
            api.request(Method::POST, "/api/events").json(&json!({"name": format!("w-{}", acked.len())}));
        match request.timeout(Duration::from_secs(10)).send().await {
            Ok(r) if r.status() == StatusCode::CREATED => acked.push(Instant::now()),
            Ok(r) => panic!("a write failed while the server ran: {}", r.status()),
            Err(_) => return acked,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_a_restore_from_s3_loses_at_most_the_last_ship_interval() {
    let s3 = S3Server::start();
    s3.create_bucket("eventvault");
    let mut env = s3.repo_env("eventvault", "rpo");
    env.push(("SHIP_INTERVAL_MS".into(), SHIP_MS.to_string()));
    let dir = data_dir();
    let mut server = Server::start_with(dir.path(), 0, &as_strs(&env));
    let api = Api::new(&server);
    api.seed("base", 2).await;
    let base = backup_id(&api.backup("base").await);

    let writer = tokio::spawn(steady_writer(api.clone()));
    // Eight seconds of writes ship as about 40 small segments: the shipper merges them too.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let killed = Instant::now();
    server.kill9();
    let acked = writer.await.unwrap();
    assert!(acked.len() > 20, "the writer got {} writes through in 8 s", acked.len());

    let (report, restored) =
        restore_fresh_server(&s3.env(), &["--from", "s3://eventvault/rpo", "--at", &now()]);
    assert_eq!(report["backup"], base.as_str(), "{report}");
    let names = all_event_names(&Api::new(&restored.server)).await;
    assert!(names.contains(&"base-0".to_owned()) && names.contains(&"base-1".to_owned()), "{names:?}");
    let mut present: Vec<usize> =
        names.iter().filter_map(|n| n.strip_prefix("w-")).map(|i| i.parse().unwrap()).collect();
    present.sort();
    let n = present.len();
    assert_eq!(present, (0..n).collect::<Vec<_>>(), "the restored writes are the first ones, without a gap");
    // The write in flight at the kill may have committed without its answer arriving.
    assert!(n <= acked.len() + 1, "{n} writes restored, only {} sent", acked.len() + 1);
    for (i, at) in acked.iter().enumerate() {
        let before_kill = killed.duration_since(*at);
        if before_kill > Duration::from_millis(2 * SHIP_MS) {
            assert!(i < n, "w-{i}, acknowledged {before_kill:?} before the kill, was not restored");
        }
    }
    let rpo =
        n.checked_sub(1).and_then(|i| acked.get(i)).map_or(Duration::ZERO, |at| killed.duration_since(*at));
    eprintln!(
        "RPO: {} of {} acknowledged writes restored; the newest restored was acknowledged {} ms before the kill \
         (SHIP_INTERVAL_MS={SHIP_MS})",
        n,
        acked.len(),
        rpo.as_millis()
    );
}

#[tokio::test]
async fn a_restore_to_any_moment_gives_exactly_what_was_there_then() {
    let dir = data_dir();
    let (url, _) = file_repo(dir.path());
    let server = shipping_server(dir.path(), &url);
    let api = Api::new(&server);
    let gala = api.create("/api/events", json!({"name": "gala"})).await["id"].as_str().unwrap().to_owned();
    let ann = api.create(&format!("/api/events/{gala}/guests"), json!({"name": "ann"})).await;
    let first = backup_id(&api.backup("first").await);

    api.create(&format!("/api/events/{gala}/guests"), json!({"name": "bob"})).await;
    call_ok(&api, Method::PATCH, &format!("/api/events/{gala}"), Some(json!({"venue": "hall"}))).await;
    let m1 = mark(&api).await;
    let second = backup_id(&api.backup("second").await);
    api.create(&format!("/api/events/{gala}/payments"), json!({"amount": 10})).await;
    let m2 = mark(&api).await;
    let batch: Vec<Value> = (0..5).map(|i| json!({"name": format!("batch-{i}")})).collect();
    api.create(&format!("/api/events/{gala}/guests/_batch"), Value::Array(batch)).await;
    let m3 = mark(&api).await;
    assert_eq!(m3.seq, m2.seq + 5, "a batch of five records is five messages");
    let ann = ann["id"].as_str().unwrap();
    call_ok(&api, Method::DELETE, &format!("/api/events/{gala}/guests/{ann}"), None).await;
    api.create("/api/events", json!({"name": "other"})).await;
    call_ok(&api, Method::DELETE, &format!("/api/events/{gala}"), None).await;
    let m4 = mark(&api).await;
    assert_eq!(event_names(&m4.state), ["other"], "{}", m4.state);
    wait_shipped(&api).await;

    for (mark, base) in [(&m1, &first), (&m2, &second), (&m3, &second), (&m4, &second)] {
        let (report, restored) = restore_fresh(&[], &["--from", &url, "--at", &mark.at]).await;
        assert_eq!((&report["backup"], &report["lastSeq"]), (&json!(base), &json!(mark.seq)), "{report}");
        assert_eq!(restored, mark.state, "restored to {}: {report}", mark.at);
    }
    // A time is inclusive: the batch's own millisecond restores it, the one before does not.
    let batch_ts =
        m3.state["messages"].as_array().unwrap().last().unwrap()["ts"].as_str().unwrap().to_owned();
    assert_eq!(restore_fresh(&[], &["--from", &url, "--at", &batch_ts]).await.1, m3.state);
    assert_eq!(restore_fresh(&[], &["--from", &url, "--at", &shifted(&batch_ts, -1)]).await.1, m2.state);
    // A seq inside the batch restores none of it; its last seq restores all of it.
    let (report, inside) = restore_fresh(&[], &["--from", &url, "--seq", &(m2.seq + 3).to_string()]).await;
    assert_eq!(report["lastSeq"], m2.seq, "{report}");
    assert_eq!(inside, m2.state, "never part of a write");
    let (_, whole) = restore_fresh(&[], &["--from", &url, "--seq", &m3.seq.to_string()]).await;
    assert_eq!(whole, m3.state);

    // Hot, through the API: the server serves the moment at once, on a new timeline.
    let (status, report) = api.post("/api/backup/restore", json!({"at": m2.at})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!((&report["success"], &report["lastSeq"]), (&json!(true), &json!(m2.seq)), "{report}");
    assert!(report["preRestoreBackup"].is_string(), "{report}");
    assert_eq!(api.snapshot().await, m2.state);
    let h = health(&api).await;
    assert_eq!(
        (&h["timeline"]["reason"], &h["timeline"]["id"]),
        (&json!("pointInTime"), &report["newTimeline"])
    );
}

#[tokio::test]
async fn replaying_the_log_from_one_backup_rebuilds_the_next_one_exactly() {
    let dir = data_dir();
    let (url, repo_dir) = file_repo(dir.path());
    let server = shipping_server(dir.path(), &url);
    let api = Api::new(&server);
    let keep = api.create("/api/events", json!({"name": "keep"})).await["id"].as_str().unwrap().to_owned();
    let gone = api.create("/api/events", json!({"name": "gone"})).await["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for i in 0..3 {
        let g =
            api.create(&format!("/api/events/{keep}/guests"), json!({"name": format!("guest-{i}")})).await;
        ids.push(g["id"].as_str().unwrap().to_owned());
    }
    let pay = api.create(&format!("/api/events/{keep}/payments"), json!({"amount": 5})).await;
    api.create(&format!("/api/events/{gone}/guests"), json!({"name": "lost"})).await;
    let k = backup_id(&api.backup("k").await);

    // Every kind of write: creates, replaces, merges and deletes of events and records, a
    // batch, and a message published on the bus.
    let fresh = api.create("/api/events", json!({"name": "fresh"})).await["id"].as_str().unwrap().to_owned();
    let batch: Vec<Value> = (0..20).map(|i| json!({"n": i})).collect();
    api.create(&format!("/api/events/{fresh}/guests/_batch"), Value::Array(batch)).await;
    call_ok(&api, Method::PATCH, &format!("/api/events/{keep}"), Some(json!({"venue": "dock"}))).await;
    call_ok(&api, Method::PUT, &format!("/api/events/{fresh}"), Some(json!({"name": "fresh", "v": 2}))).await;
    let put = json!({"name": "guest-0", "plusOne": true});
    call_ok(&api, Method::PUT, &format!("/api/events/{keep}/guests/{}", ids[0]), Some(put)).await;
    let pay = pay["id"].as_str().unwrap();
    call_ok(&api, Method::PATCH, &format!("/api/events/{keep}/payments/{pay}"), Some(json!({"paid": true})))
        .await;
    call_ok(&api, Method::DELETE, &format!("/api/events/{keep}/guests/{}", ids[1]), None).await;
    call_ok(&api, Method::DELETE, &format!("/api/events/{gone}"), None).await;
    call_ok(&api, Method::POST, "/api/bus/mail", Some(json!({"type": "sent", "data": {"to": "ann"}}))).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let next = api.backup("k1").await;
    let (k1, k1_seq) = (backup_id(&next), next["lastSeq"].as_u64().unwrap());
    wait_shipped(&api).await;

    let (_, expected) = restore_fresh(&[], &["--from", &url, "--backup", &k1]).await;
    assert_eq!(event_names(&expected).len(), 2, "{expected}");
    // Just before k1 was taken: k1 is not a base yet, so k and the log rebuild it.
    let at = shifted(next["createdAt"].as_str().unwrap(), -1);
    let (report, replayed) = restore_fresh(&[], &["--from", &url, "--at", &at]).await;
    assert_eq!((&report["backup"], &report["lastSeq"]), (&json!(k), &json!(k1_seq)), "{report}");
    assert!(report["writesReplayed"].as_u64().unwrap() >= 9, "{report}");
    assert_eq!(replayed, expected, "events, records and bus messages, replayed from backup {k}");
    // Without k1 in the repository, its seq is reached from k too.
    std::fs::remove_file(repo_dir.join("backups").join(format!("{k1}.json"))).unwrap();
    let (report, by_seq) = restore_fresh(&[], &["--from", &url, "--seq", &k1_seq.to_string()]).await;
    assert_eq!((&report["backup"], &report["lastSeq"]), (&json!(k), &json!(k1_seq)), "{report}");
    assert_eq!(by_seq, expected);
}

#[tokio::test]
async fn each_timeline_restores_to_what_it_held_at_that_time() {
    let dir = data_dir();
    let (url, _) = file_repo(dir.path());
    let server = shipping_server(dir.path(), &url);
    let api = Api::new(&server);
    let old = health(&api).await["timeline"]["id"].as_str().unwrap().to_owned();
    api.seed("a", 1).await;
    let created = api.backup("a").await;
    let name = created["name"].as_str().unwrap().to_owned();
    api.seed("b1", 1).await;
    let t1 = mark(&api).await;
    api.seed("b2", 1).await;
    let before_restore = api.snapshot().await;
    // Two defects, each pinned down by an ignored test below, kept out of the way here: the
    // old timeline's writes not shipped yet when a restore swaps the store are never shipped,
    // and the pre-restore backup is dated to its name's whole second.
    wait_shipped(&api).await;
    next_second_after(&t1.at).await;

    // Back to backup a while running: a new timeline branches from the old one.
    let (status, body) = api.post("/api/backup/restore", json!({"backupName": name})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new = health(&api).await["timeline"].clone();
    assert_ne!(new["id"], old.as_str());
    assert_eq!(new["history"], json!([{"timeline": old, "endSeq": created["lastSeq"]}]), "{new}");
    api.seed("c", 1).await;
    let t2 = mark(&api).await;
    assert_eq!(event_names(&t2.state), ["a-0", "c-0"]);
    wait_shipped(&api).await;

    // At t1 only the old timeline had begun: it is the default.
    let (report, at_t1) = restore_fresh(&[], &["--from", &url, "--at", &t1.at]).await;
    assert_eq!(report["timeline"], old.as_str(), "{report}");
    assert_eq!(at_t1, t1.state, "{report}");
    // The old timeline at t2: everything written on it, up to the restore.
    let (report, old_at_t2) = restore_fresh(&[], &["--from", &url, "--timeline", &old, "--at", &t2.at]).await;
    assert_eq!(report["timeline"], old.as_str(), "{report}");
    assert_eq!(old_at_t2, before_restore, "the old timeline's writes made before the restore: {report}");
    // By default, t2 is on the new timeline.
    let (report, new_at_t2) = restore_fresh(&[], &["--from", &url, "--at", &t2.at]).await;
    assert_eq!(report["timeline"], new["id"], "{report}");
    assert_eq!(new_at_t2, t2.state);
}

#[tokio::test]
async fn while_s3_is_down_writes_go_on_and_shipping_catches_up_when_it_is_back() {
    let mut s3 = S3Server::start();
    s3.create_bucket("eventvault");
    let mut env = s3.repo_env("eventvault", "down");
    env.extend([("SHIP_INTERVAL_MS".into(), SHIP_MS.to_string()), ("SHIP_MAX_LAG_SECS".into(), "2".into())]);
    let dir = data_dir();
    let server = Server::start_with(dir.path(), 0, &as_strs(&env));
    let api = Api::new(&server);
    api.seed("up", 2).await;
    api.backup("up").await;
    assert_eq!(wait_shipped(&api).await["status"], "ok");

    s3.stop();
    for i in 0..5 {
        api.create("/api/events", json!({"name": format!("down-{i}")})).await;
    }
    let degraded = wait_for(60, "health degraded by the shipping lag", || async {
        let h = health(&api).await;
        let lag = h["ship"]["lagSeconds"].as_f64().unwrap();
        (h["status"] == "degraded" && h["ship"]["lastError"].is_string() && lag > 2.0).then_some(h)
    })
    .await;
    for i in 5..10 {
        api.create("/api/events", json!({"name": format!("down-{i}")})).await;
    }
    let lag = degraded["ship"]["lagSeconds"].as_f64().unwrap();
    let grown = wait_for(30, "the lag to grow", || async {
        let h = health(&api).await;
        (h["ship"]["lagSeconds"].as_f64().unwrap() > lag + 1.0).then_some(h)
    })
    .await;
    assert!(grown["ship"]["lastShippedSeq"].as_u64() < grown["store"]["lastSeq"].as_u64(), "{grown}");
    assert_eq!(grown["status"], "degraded");

    s3.start_again();
    let restarted = Instant::now();
    let back = wait_shipped(&api).await;
    eprintln!("shipping caught up {} ms after S3 came back", restarted.elapsed().as_millis());
    assert_eq!(back["status"], "ok", "{back}");
    let live = api.snapshot().await;
    assert_eq!(event_names(&live).len(), 12);
    let (_, restored) = restore_fresh(&s3.env(), &["--from", "s3://eventvault/down", "--at", &now()]).await;
    assert_eq!(restored, live, "every write made while S3 was down is in the repository");
}

/// Flips a byte in the middle of every shipped segment of the repository.
fn damage_segments(repo_dir: &Path) -> usize {
    let mut damaged = 0;
    for timeline in std::fs::read_dir(repo_dir.join("log")).unwrap().flatten() {
        for file in std::fs::read_dir(timeline.path()).unwrap().flatten() {
            if file.path().extension().is_some_and(|e| e == "seg") {
                let mut bytes = std::fs::read(file.path()).unwrap();
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0xff;
                std::fs::write(file.path(), bytes).unwrap();
                damaged += 1;
            }
        }
    }
    damaged
}

#[tokio::test]
async fn invalid_targets_and_damaged_segments_are_refused_and_change_nothing() {
    let dir = data_dir();
    let (url, repo_dir) = file_repo(dir.path());
    let server = shipping_server(dir.path(), &url);
    let api = Api::new(&server);
    api.seed("kept", 2).await;
    api.backup("base").await;
    api.seed("later", 2).await;
    wait_shipped(&api).await;
    let before = api.snapshot().await;
    let timeline = health(&api).await["timeline"].clone();

    let at = now();
    for (body, status, code) in [
        (json!({"at": "yesterday"}), StatusCode::BAD_REQUEST, "invalid_options"),
        (json!({"at": "2026-11-22T10:15:00"}), StatusCode::BAD_REQUEST, "invalid_options"),
        (json!({"at": at, "seq": 3}), StatusCode::BAD_REQUEST, "invalid_options"),
        (json!({"seq": 3, "timeline": "../../etc"}), StatusCode::BAD_REQUEST, "invalid_options"),
        (json!({"seq": 1_000_000_000_000u64}), StatusCode::CONFLICT, "point_unreachable"),
        (json!({"at": "2001-01-01T00:00:00Z"}), StatusCode::CONFLICT, "point_unreachable"),
    ] {
        let (got, answer) = api.post("/api/backup/restore", body.clone()).await;
        assert_eq!((got, &answer["error"]["code"]), (status, &json!(code)), "{body}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }
    let fresh = data_dir();
    let out = restore_cli(fresh.path(), &[], &["--from", &url, "--at", "yesterday"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));

    assert!(damage_segments(&repo_dir) > 0);
    for body in [json!({"at": now()}), json!({"at": now(), "dryRun": true})] {
        let (status, answer) = api.post("/api/backup/restore", body.clone()).await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (StatusCode::UNPROCESSABLE_ENTITY, &json!("damaged_backup")),
            "{body}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(".seg"), "the answer names the damaged segment: {answer}");
    }
    assert_eq!(api.snapshot().await, before, "a failed restore changes nothing");
    assert_eq!(health(&api).await["timeline"], timeline);
    api.create("/api/events", json!({"name": "still-writable"})).await;

    let out = restore_cli(fresh.path(), &[], &["--from", &url, "--at", &now()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(".seg"), "{}: {stderr}", out.status);
    let server = Server::start(fresh.path());
    assert_eq!(
        event_names(&Api::new(&server).snapshot().await),
        Vec::<String>::new(),
        "nothing half-restored"
    );
}

/// Product defect (found by this suite): the repository manifest of a pre-restore backup is
/// dated to its name's whole second (`keep_safe` sets createdAt from `time_of_name`), up to a
/// second before the writes it holds. A point-in-time restore to a moment in that second takes
/// it as its base, and so restores writes committed after the moment.
#[tokio::test]
async fn a_pre_restore_backup_is_never_the_base_of_a_moment_before_its_writes() {
    let dir = data_dir();
    let (url, _) = file_repo(dir.path());
    let server = shipping_server(dir.path(), &url);
    let api = Api::new(&server);
    api.seed("a", 1).await;
    let base = api.backup("a").await["name"].as_str().unwrap().to_owned();
    // Early in a second: the mark, a write after it and the restore all fall in that second.
    while Utc::now().timestamp_subsec_millis() > 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = mark(&api).await;
    api.create("/api/events", json!({"name": "after-the-mark"})).await;
    let (status, body) = api.post("/api/backup/restore", json!({"backupName": base})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pre = body["preRestoreBackup"].as_str().unwrap().trim_end_matches(".tar.gz").to_owned();
    wait_for(60, "the pre-restore backup in the repository", || async {
        dir.path().join("repo/backups").join(format!("{pre}.json")).is_file().then_some(())
    })
    .await;
    wait_shipped(&api).await;
    let (report, restored) = restore_fresh(&[], &["--from", &url, "--at", &t.at]).await;
    assert_eq!(restored, t.state, "a write made after {} is restored: {report}", t.at);
}

/// Product defect (found by this suite): a hot restore swaps the store without shipping what
/// the old timeline committed since the last shipment, and the shipper then only ships the new
/// timeline, so those acknowledged writes never reach the log. A point-in-time restore to a
/// moment after them on the old timeline answers success with a state that lacks them.
#[tokio::test]
async fn writes_acknowledged_before_a_hot_restore_reach_the_log_of_their_timeline() {
    let dir = data_dir();
    let (url, _) = file_repo(dir.path());
    // A long interval: a write made right after a shipment waits for the next one.
    let envs = [("BACKUP_REPO", url.as_str()), ("SHIP_INTERVAL_MS", "5000")];
    let server = Server::start_with(dir.path(), 0, &envs);
    let api = Api::new(&server);
    api.seed("a", 1).await;
    let base = api.backup("a").await["name"].as_str().unwrap().to_owned();
    let old = wait_shipped(&api).await["timeline"]["id"].as_str().unwrap().to_owned();
    api.create("/api/events", json!({"name": "acknowledged"})).await;
    let t = mark(&api).await;
    next_second_after(&t.at).await;
    let (status, body) = api.post("/api/backup/restore", json!({"backupName": base})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    api.create("/api/events", json!({"name": "new-timeline"})).await;
    wait_shipped(&api).await;
    let (report, restored) = restore_fresh(&[], &["--from", &url, "--timeline", &old, "--at", &t.at]).await;
    assert_eq!(restored, t.state, "a write acknowledged before {} is missing: {report}", t.at);
}

#[tokio::test]
async fn a_point_in_time_restore_that_does_not_fit_changes_nothing() {
    let dir = data_dir();
    let (url, _) = file_repo(dir.path());
    let env = [("BACKUP_REPO", url.as_str()), ("SHIP_INTERVAL_MS", "100"), ("RESTORE_MAX_BYTES", "4096")];
    let server = Server::start_with(dir.path(), 0, &env);
    let api = Api::new(&server);
    crate::repo::event_with_records(&api, 500).await;
    api.backup("base").await;
    api.create("/api/events", json!({"name": "after"})).await;
    let h = wait_shipped(&api).await;
    let before = api.snapshot().await;
    let seq = h["store"]["lastSeq"].as_u64().unwrap();

    // The backup to start from is larger than a restore may unpack here: 507, nothing changed.
    let (status, answer) = api.post("/api/backup/restore", json!({"seq": seq})).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{answer}");
    assert_eq!(answer["error"]["code"], "disk_full", "{answer}");
    assert_eq!(api.snapshot().await, before);
    assert_eq!(health(&api).await["timeline"], h["timeline"], "no new timeline");
    let storage = dir.path().join("storage");
    let left: Vec<String> =
        crate::common::files_in(&storage).into_iter().filter(|n| n.starts_with("staging-")).collect();
    assert!(left.is_empty(), "staging left behind: {left:?}");
}
