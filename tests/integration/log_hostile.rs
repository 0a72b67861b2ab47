//! The shipped log as hostile input, and the defects of the attack review (31d60d4): merges
//! never write a segment larger than a cut of messages; a junk segment past the store's end
//! neither stops shipping nor a restore; prune keeps an idle timeline's log; seqs near 2^64
//! in names and descriptors are refused without a panic; a STANDBY file eventvault did not
//! write is refused; crafted segments with valid checksums are replayed as hostile input; the
//! CLI does not send a restore from another repository to a server; and a hot point-in-time
//! restore follows the server's own timeline.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::common::{command, data_dir, wait_for, Api, Server};

/// Where the shipper cuts a segment (src/backup/ship.rs, CUT_BYTES).
const CUT_BYTES: usize = 8 << 20;
const MAX_SEQ: u64 = u64::MAX;

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn ulid() -> String {
    ulid::Ulid::new().to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A server shipping to a folder repository of its own directory.
struct Primary {
    url: String,
    repo: PathBuf,
    server: Server,
    api: Api,
    dir: TempDir,
}

fn primary(extra: &[(&str, &str)]) -> Primary {
    let dir = data_dir();
    let repo = dir.path().join("repo");
    let url = format!("file://{}", repo.display());
    let mut env = vec![("BACKUP_REPO", url.as_str()), ("SHIP_INTERVAL_MS", "100")];
    env.extend_from_slice(extra);
    let server = Server::start_with(dir.path(), 0, &env);
    let api = Api::new(&server);
    Primary { url, repo, server, api, dir }
}

async fn health(api: &Api) -> Value {
    let (status, health) = api.get("/api/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    health
}

/// Waits until the repository holds every committed write (whatever lastError says).
async fn shipped(api: &Api) -> Value {
    wait_for(60, "every committed write to be shipped", || async {
        let h = health(api).await;
        (h["ship"]["lastShippedSeq"] == h["store"]["lastSeq"]).then_some(h)
    })
    .await
}

/// The segment files of a folder repository, by timeline and name.
fn segment_files(repo: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for timeline in std::fs::read_dir(repo.join("log")).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(timeline.path()).into_iter().flatten().flatten() {
            if file.path().extension().is_some_and(|e| e == "seg") {
                found.push(file.path());
            }
        }
    }
    found.sort();
    found
}

/// The (first, last) seqs a segment's name says it covers.
fn seqs_of(path: &Path) -> (u64, u64) {
    let name = path.file_stem().unwrap().to_str().unwrap();
    let (first, last) = name.split_once('-').unwrap();
    (first.parse().unwrap(), last.parse().unwrap())
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut plain).unwrap();
    plain
}

fn restore(dir: &Path, args: &[&str]) -> Output {
    command(dir, "restore", args).output().expect("run eventvault restore")
}

/// Restores onto a fresh directory with the CLI (which must succeed); the report, and a
/// server on the restored store.
fn restore_fresh(args: &[&str]) -> (Value, Server, TempDir) {
    let dir = data_dir();
    let out = restore(dir.path(), args);
    assert!(out.status.success(), "restore {args:?} failed ({}): {}", out.status, stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("restore prints JSON");
    (report, Server::start(dir.path()), dir)
}

/// A CLI run that may fail, but only as a refusal: exit code 1 with a message, never a panic.
fn refusal_or_success(out: &Output, what: &str) -> String {
    let err = stderr(out);
    assert_ne!(out.status.code(), Some(101), "{what} panicked: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    if !out.status.success() {
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(!err.trim().is_empty(), "{what} failed without a message");
    }
    err
}

/// Runs `cmd`, killing it and failing when it does not exit within `secs`.
fn output_within(mut cmd: Command, secs: u64, what: &str) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn eventvault");
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A registry message as the store ships it.
fn message(seq: u64, ts: &str, kind: &str, event: &str, record: Option<(&str, &str)>, data: Value) -> Value {
    let mut m = json!({"seq": seq, "ts": ts, "topic": "registry", "type": kind, "eventId": event});
    if let Some((collection, id)) = record {
        m["collection"] = json!(collection);
        m["recordId"] = json!(id);
    }
    m["data"] = data;
    m
}

/// Writes a segment of `writes` (each a list of messages) into `timeline`'s log, with a
/// header and a checksum that are right: only its content is hostile.
fn craft_segment(repo: &Path, timeline: &str, writes: &[Vec<Value>]) -> PathBuf {
    let seq = |m: &Value| m["seq"].as_u64().unwrap();
    let (head, tail) = (&writes[0][0], writes.last().unwrap().last().unwrap());
    let header = json!({
        "format": 1, "timeline": timeline, "first": seq(head), "last": seq(tail),
        "firstTs": head["ts"], "lastTs": tail["ts"], "commits": writes.len(), "consumers": {},
    });
    let mut plain = serde_json::to_vec(&header).unwrap();
    plain.push(b'\n');
    for write in writes {
        let commit = [seq(&write[0]), seq(write.last().unwrap())];
        plain.extend(serde_json::to_vec(&json!({"commit": commit, "messages": write})).unwrap());
        plain.push(b'\n');
    }
    let sum = hex::encode(Sha256::digest(&plain));
    plain.extend(format!("#sha256:{sum}\n").into_bytes());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let path = repo.join(format!("log/{timeline}/{:020}-{:020}.seg", seq(head), seq(tail)));
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    path
}

/// Events and record counts as a user reads them: {"events": n, "records": {collection: n}}
/// (collections with records only), counted page by page.
async fn counted(api: &Api) -> Value {
    let (status, events) = api.get("/api/events?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let events = events["items"].as_array().unwrap().clone();
    let mut records = serde_json::Map::new();
    for event in &events {
        for collection in crate::common::COLLECTIONS {
            let path = format!("/api/events/{}/{collection}?limit=1000", event["id"].as_str().unwrap());
            let (status, page) = api.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let n = page["items"].as_array().unwrap().len() as u64;
            if n > 0 {
                let total = records.get(collection).and_then(Value::as_u64).unwrap_or(0);
                records.insert(collection.to_owned(), json!(total + n));
            }
        }
    }
    json!({"events": events.len(), "records": records})
}

/// What the store counts (health) and a new backup's manifest say, against what is there.
async fn assert_counts_match_records(api: &Api, what: &str) {
    let actual = counted(api).await;
    assert_eq!(health(api).await["store"]["events"], actual["events"], "{what}");
    let counts = api.backup("counts").await["counts"].clone();
    assert_eq!((&counts["events"], &counts["records"]), (&actual["events"], &actual["records"]), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_of_small_segments_never_holds_more_than_a_cut_of_messages() {
    let p = primary(&[]);
    let id = p.api.create("/api/events", json!({"name": "big"})).await["id"].as_str().unwrap().to_owned();
    p.api.backup("base").await;
    // 34 writes of about 850 KiB of messages each, one per shipping round: each segment is
    // "small" (under 1 MiB of messages), and 32 of them hold over 25 MiB.
    for w in 0..34 {
        let records: Vec<Value> = (0..700)
            .map(|r| {
                let blob: String =
                    (0..14).map(|k| hex::encode(Sha256::digest(format!("{w}/{r}/{k}")))).collect();
                json!({"w": w, "r": r, "blob": blob})
            })
            .collect();
        p.api.create(&format!("/api/events/{id}/guests/_batch"), Value::Array(records)).await;
        shipped(&p.api).await;
    }
    let last = health(&p.api).await["store"]["lastSeq"].as_u64().unwrap();
    let files = wait_for(30, "a merged segment", || async {
        let files = segment_files(&p.repo);
        files.iter().any(|f| seqs_of(f).1 - seqs_of(f).0 > 700).then_some(files)
    })
    .await;
    let (mut next, mut total) = (1, 0);
    for file in &files {
        let (first, to) = seqs_of(file);
        assert_eq!(first, next, "the segments cover every seq once: {files:?}");
        next = to + 1;
        let size = gunzip(file).len();
        total += size;
        eprintln!("{}: {size} bytes unpacked", file.file_name().unwrap().to_string_lossy());
        assert!(
            size <= CUT_BYTES + (1 << 20) + (64 << 10),
            "{} unpacks to {size} bytes: more than 8 MiB of messages and one write",
            file.display()
        );
    }
    assert_eq!(next, last + 1, "{files:?}");
    assert!(total > 3 * CUT_BYTES, "the writes hold {total} bytes: too few to test the bound");

    let live = p.api.snapshot().await;
    let (report, server, _dir) = restore_fresh(&["--from", &p.url, "--seq", &last.to_string()]);
    assert_eq!(report["lastSeq"], last, "{report}");
    assert_eq!(Api::new(&server).snapshot().await, live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_junk_segment_past_the_stores_end_neither_stops_shipping_nor_a_restore() {
    let mut p = primary(&[]);
    p.api.seed("a", 1).await;
    p.api.backup("base").await;
    p.api.seed("b", 1).await;
    let before = shipped(&p.api).await;
    let timeline = before["timeline"]["id"].as_str().unwrap().to_owned();
    let old_last = before["store"]["lastSeq"].as_u64().unwrap();
    let junk = format!("log/{timeline}/00000000000000000001-00000000000000999999.seg");
    std::fs::write(p.repo.join(&junk), b"not a segment: put here by someone else\n").unwrap();
    p.server.restart();

    p.api.seed("c", 1).await;
    let h = wait_for(60, "the writes after the restart to be shipped", || async {
        let h = health(&p.api).await;
        (h["ship"]["lastShippedSeq"] == h["store"]["lastSeq"]).then_some(h)
    })
    .await;
    let last = h["store"]["lastSeq"].as_u64().unwrap();
    assert!(last > old_last, "{h}");
    assert_eq!(h["status"], "degraded", "{h}");
    let error = h["ship"]["lastError"].as_str().unwrap_or_default();
    assert!(error.contains(&junk), "health names the junk segment: {h}");
    let fresh: Vec<(u64, u64)> = segment_files(&p.repo).iter().map(|f| seqs_of(f)).collect();
    assert!(
        fresh.iter().any(|(first, _)| *first == old_last + 1),
        "a segment follows the store's own: {fresh:?}"
    );
    assert!(fresh.iter().any(|(_, to)| *to == last), "{fresh:?}");

    let live = p.api.snapshot().await;
    let (report, server, _dir) = restore_fresh(&["--from", &p.url, "--seq", &last.to_string()]);
    assert_eq!(report["lastSeq"], last, "the damaged segment is passed over: {report}");
    assert_eq!(Api::new(&server).snapshot().await, live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_with_a_short_pitr_window_keeps_the_log_of_an_idle_timeline() {
    let mut p = primary(&[]);
    p.api.seed("a", 1).await;
    let base = p.api.backup("base").await["lastSeq"].as_u64().unwrap();
    p.api.seed("b", 2).await;
    shipped(&p.api).await;
    let live = p.api.snapshot().await;
    p.server.stop();
    let after_base = |repo: &Path| -> Vec<PathBuf> {
        segment_files(repo).into_iter().filter(|f| seqs_of(f).1 > base).collect()
    };
    let segments = after_base(&p.repo);
    assert!(!segments.is_empty());
    // The timeline's last segment is now older than the window.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let out = command(p.dir.path(), "backup", &["prune", "--json"])
        .env("BACKUP_REPO", &p.url)
        .env("PITR_WINDOW", "2s")
        .output()
        .expect("run eventvault backup prune");
    assert!(out.status.success(), "prune: {}", stderr(&out));
    let pruned: Value = serde_json::from_slice(&out.stdout).expect("prune --json prints JSON");
    assert_eq!(after_base(&p.repo), segments, "the log after the backup is kept: {pruned}");

    let (report, server, _dir) = restore_fresh(&["--from", &p.url, "--at", &now()]);
    assert_eq!(Api::new(&server).snapshot().await, live, "every write is restored: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seqs_near_2_pow_64_in_names_and_descriptors_are_refused_without_a_panic() {
    let p = primary(&[]);
    p.api.seed("a", 1).await;
    p.api.backup("base").await;
    p.api.seed("b", 1).await;
    let h = shipped(&p.api).await;
    let (timeline, last) = (h["timeline"].clone(), h["store"]["lastSeq"].as_u64().unwrap());
    let tl = timeline["id"].as_str().unwrap();
    let live = p.api.snapshot().await;

    // A segment reaching u64::MAX on the live timeline, and a timeline continuing it from there.
    let max = format!("{MAX_SEQ:020}");
    std::fs::write(p.repo.join(format!("log/{tl}/00000000000000000001-{max}.seg")), b"junk").unwrap();
    let crafted = ulid();
    let mut descriptor = timeline.clone();
    descriptor["id"] = json!(crafted);
    descriptor["startedAt"] = json!(now());
    descriptor["reason"] = json!("restore");
    descriptor["startSeq"] = json!(MAX_SEQ);
    descriptor["history"] = json!([{"timeline": tl, "endSeq": MAX_SEQ}]);
    std::fs::create_dir_all(p.repo.join(format!("log/{crafted}"))).unwrap();
    std::fs::write(p.repo.join(format!("log/{crafted}/timeline.json")), descriptor.to_string()).unwrap();
    std::fs::write(p.repo.join(format!("log/{crafted}/{max}-{max}.seg")), b"junk").unwrap();

    let (max, at) = (MAX_SEQ.to_string(), now());
    for (args, ok) in [
        (vec!["--seq", &max], false),
        (vec!["--seq", &max, "--dry-run"], false),
        (vec!["--timeline", &crafted, "--at", &at], false),
        (vec!["--timeline", &crafted, "--seq", "3", "--dry-run"], false),
        (vec!["--at", &at, "--dry-run"], true),
    ] {
        let fresh = data_dir();
        let out = restore(fresh.path(), &[&["--from", p.url.as_str()], &args[..]].concat());
        refusal_or_success(&out, &format!("restore {args:?}"));
        assert_eq!(out.status.success(), ok, "restore {args:?}: {}", stderr(&out));
    }
    let (report, server, _dir) = restore_fresh(&["--from", &p.url, "--seq", &last.to_string()]);
    assert_eq!((&report["lastSeq"], &report["timeline"]), (&json!(last), &json!(tl)), "{report}");
    assert_eq!(Api::new(&server).snapshot().await, live);

    for body in [
        json!({"seq": MAX_SEQ}),
        json!({"seq": MAX_SEQ, "dryRun": true}),
        json!({"timeline": crafted, "at": now(), "dryRun": true}),
        json!({"timeline": crafted, "seq": 3}),
    ] {
        let (status, answer) = p.api.post("/api/backup/restore", body.clone()).await;
        assert!(status.is_client_error(), "{body}: {status} {answer}");
        assert!(answer["error"]["message"].is_string(), "{body}: {answer}");
    }
    let (status, report) = p.api.post("/api/backup/restore", json!({"at": now(), "dryRun": true})).await;
    assert_eq!((status, &report["timeline"], &report["lastSeq"]), (StatusCode::OK, &json!(tl), &json!(last)));
    assert_eq!(p.api.snapshot().await, live, "nothing changed");
    assert_eq!(health(&p.api).await["timeline"], timeline);

    let out = command(p.dir.path(), "backup", &["prune", "--dry-run"])
        .env("BACKUP_REPO", &p.url)
        .output()
        .expect("run eventvault backup prune");
    refusal_or_success(&out, "backup prune --dry-run");
    assert!(out.status.success(), "prune --dry-run: {}", stderr(&out));
}

#[test]
fn a_standby_marker_eventvault_did_not_write_is_refused_by_serve_and_promote() {
    let dir = data_dir();
    let storage = dir.path().join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let marker = storage.join("STANDBY");
    std::fs::write(&marker, b"\x00\xffnot a marker\n").unwrap();
    let named = marker.display().to_string();
    for fifo in [false, true] {
        if fifo {
            std::fs::remove_file(&marker).unwrap();
            assert!(Command::new("mkfifo").arg(&marker).status().unwrap().success());
        }
        match Server::try_start(dir.path(), 0, &[]) {
            Ok(server) => panic!("serve started (FIFO: {fifo}):\n{}", server.log()),
            Err((None, log)) => panic!("serve hung (FIFO: {fifo}):\n{}", log.join("\n")),
            Err((Some(status), log)) => {
                let log = log.join("\n");
                assert!(!status.success() && status.code() != Some(101), "{status}: {log}");
                assert!(log.contains(&named) && log.contains("not a standby marker"), "{log}");
                assert!(!fifo || log.contains("FIFO"), "{log}");
            }
        }
        let out = output_within(command(dir.path(), "promote", &[]), 30, "eventvault promote");
        let err = refusal_or_success(&out, "eventvault promote");
        assert!(!out.status.success() && err.contains(&named), "{}: {err}", out.status);
        assert!(!fifo || err.contains("FIFO"), "{err}");
    }
    assert!(!storage.join("db").exists(), "no store was opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_segments_with_valid_checksums_are_replayed_as_hostile_input() {
    let p = primary(&[]);
    p.api.seed("s", 2).await;
    p.api.backup("base").await;
    p.api.create("/api/events", json!({"name": "late"})).await;
    let h = shipped(&p.api).await;
    let (tl, last) =
        (h["timeline"]["id"].as_str().unwrap().to_owned(), h["store"]["lastSeq"].as_u64().unwrap());
    let live = p.api.snapshot().await;
    let ids: Vec<String> =
        live["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    let (next, to) = ((last + 1).to_string(), (last + 2).to_string());
    let doc = |id: &str, ts: &str| json!({"id": id, "name": "crafted", "createdAt": ts, "updatedAt": ts, "version": 1});

    // A write from year 9999, and a record of an event that does not exist: refused, by the
    // CLI and the API, naming the message, with the live data unchanged.
    let future = "9999-12-31T23:59:59.999Z";
    let (ghost, record) = (ulid(), ulid());
    let t = now();
    for (m, why) in [
        (message(last + 1, future, "event.created", &ghost, None, doc(&ghost, future)), "in the future"),
        (
            message(last + 1, &t, "record.created", &ghost, Some(("guests", &record)), doc(&record, &t)),
            "not hold",
        ),
    ] {
        let file = craft_segment(&p.repo, &tl, &[vec![m]]);
        let fresh = data_dir();
        let out = restore(fresh.path(), &["--from", &p.url, "--seq", &next]);
        let err = refusal_or_success(&out, "restore of a crafted segment");
        let named = format!("message {next}");
        assert!(!out.status.success() && err.contains(&named) && err.contains(why), "{}: {err}", out.status);
        let (status, answer) = p.api.post("/api/backup/restore", json!({"seq": last + 1})).await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (StatusCode::UNPROCESSABLE_ENTITY, &json!("unreplayable_log"))
        );
        assert!(answer["error"]["message"].as_str().unwrap().contains(&named), "{answer}");
        assert_eq!(p.api.snapshot().await, live, "a refused restore changes nothing");
        std::fs::remove_file(file).unwrap();
    }

    // An event deletion claiming huge counts of deleted records: the store counts them itself.
    let claims = json!({"guests": 1_000_000, "payments": MAX_SEQ});
    let deleted = |seq, id: &str| {
        let data = json!({"id": id, "version": 1, "recordsDeleted": claims});
        message(seq, &now(), "event.deleted", id, None, data)
    };
    let file = craft_segment(&p.repo, &tl, &[vec![deleted(last + 1, &ids[0])]]);
    let (report, server, _dir) = restore_fresh(&["--from", &p.url, "--seq", &next]);
    assert_eq!(report["lastSeq"], last + 1, "{report}");
    let restored = Api::new(&server);
    assert_eq!(counted(&restored).await, json!({"events": 2, "records": {"guests": 3, "payments": 1}}));
    assert_counts_match_records(&restored, "after a deletion claiming huge counts").await;
    std::fs::remove_file(file).unwrap();

    // Two such deletions in one write (2^64-1 records each), hot: no 500.
    craft_segment(&p.repo, &tl, &[vec![deleted(last + 1, &ids[0]), deleted(last + 2, &ids[1])]]);
    let (status, answer) = p.api.post("/api/backup/restore", json!({"seq": last + 2})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["lastSeq"], last + 2, "{answer}");
    let (status, events) = p.api.get("/api/events").await;
    assert_eq!(status, StatusCode::OK, "{events}");
    assert_eq!(counted(&p.api).await, json!({"events": 1, "records": {}}));
    assert_counts_match_records(&p.api, &format!("after two deletions in one write: {to}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_does_not_send_a_restore_from_another_repository_to_the_server() {
    let p = primary(&[]);
    p.api.seed("a", 1).await;
    p.api.backup("base").await;
    p.api.seed("b", 1).await;
    // A seq the server's own repository reaches: only the repository named differs.
    let last = shipped(&p.api).await["store"]["lastSeq"].to_string();
    let live = p.api.snapshot().await;
    let other = data_dir();
    let other_url = format!("file://{}", other.path().join("repo").display());
    let out = command(p.dir.path(), "restore", &["--from", &other_url, "--seq", &last, "--dry-run"])
        .env("LISTEN_ADDR", format!("127.0.0.1:{}", p.server.port))
        .output()
        .expect("run eventvault restore");
    let err = refusal_or_success(&out, "restore --from another repository");
    assert!(
        !out.status.success(),
        "the server's own repository was used: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.contains("restores from its own repository") && err.contains(&p.url), "{err}");
    assert!(err.contains(&other_url), "{err}");
    assert_eq!(p.api.snapshot().await, live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_restore_to_a_moment_follows_the_servers_own_timeline() {
    let p = primary(&[]);
    p.api.seed("a", 1).await;
    p.api.backup("a").await;
    p.api.seed("a-later", 1).await;
    let own = shipped(&p.api).await;
    // A second server writes its own timeline, begun later, to the same repository.
    let other_dir = data_dir();
    let other = Server::start_with(
        other_dir.path(),
        0,
        &[("BACKUP_REPO", p.url.as_str()), ("SHIP_INTERVAL_MS", "100")],
    );
    let o = Api::new(&other);
    o.seed("o", 2).await;
    o.backup("o").await;
    o.seed("o-later", 1).await;
    let theirs = shipped(&o).await;
    assert_ne!(theirs["timeline"]["id"], own["timeline"]["id"]);

    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, report) = p.api.post("/api/backup/restore", json!({"at": now(), "dryRun": true})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (&report["timeline"], &report["lastSeq"]),
        (&own["timeline"]["id"], &own["store"]["lastSeq"]),
        "the server's own history, not the newest timeline of the repository: {report}"
    );
}
