//! Restore drills: `POST /api/backup/drill`, `eventvault drill` and DRILL_INTERVAL restore the
//! newest backup and an older one into a scratch directory and check them; a backup damaged on
//! purpose (a local archive, a repository object) fails the drill, names itself and degrades
//! health until a drill passes; with shipping on, the log replayed from the older backup gives
//! the next one exactly.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::webhook::Receiver;
use crate::common::{command, data_dir, files_in, wait_for, Api, Server};
use crate::monitoring::{sample, scrape};
use crate::repo::repo_copy;

pub(crate) async fn drill(api: &Api) -> Value {
    let (status, report) = api.post("/api/backup/drill", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    report
}

pub(crate) async fn health(api: &Api) -> Value {
    let (status, health) = api.get("/api/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    health
}

/// `eventvault drill` on the folders of `dir`, reaching a server at `server` when one runs.
fn drill_cli(dir: &Path, server: Option<&Server>, envs: &[(&str, &str)]) -> Output {
    let mut cmd = command(dir, "drill", &[]);
    if let Some(server) = server {
        cmd.env("LISTEN_ADDR", format!("127.0.0.1:{}", server.port));
    }
    cmd.envs(envs.iter().copied());
    cmd.output().expect("eventvault drill runs")
}

fn report_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// What a drill left in BACKUP_DIR: nothing (its scratch directories are `.tmp-drill-…`).
pub(crate) fn scratch_left(dir: &Path) -> Vec<String> {
    files_in(&dir.join("backups")).into_iter().filter(|n| n.contains("drill")).collect()
}

pub(crate) fn ids(report: &Value) -> Vec<&str> {
    report["backups"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect()
}

pub(crate) fn local_id(created: &Value) -> String {
    created["name"].as_str().unwrap().trim_end_matches(".tar.gz").to_owned()
}

pub(crate) async fn newest_drill_entry(api: &Api) -> Value {
    let (_, history) = api.get("/api/backup/history?limit=1000").await;
    history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "drill")
        .cloned()
        .unwrap_or(Value::Null)
}

/// Flips a few bytes in the middle of `path`, keeping its size.
pub(crate) fn damage(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 8] {
        *b ^= 0xa5;
    }
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn drills_of_good_backups_pass_through_the_api_and_the_cli_and_walk_back_through_older_ones() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("a", 3).await;
    let one = local_id(&api.backup("one").await);
    api.seed("b", 2).await;
    let two = local_id(&api.backup("two").await);
    api.seed("c", 1).await;
    let three = api.backup("three").await;
    let three_id = local_id(&three);

    let report = drill(&api).await;
    assert_eq!(report["outcome"], "passed", "{report}");
    assert!(report["error"].is_null(), "{report}");
    assert_eq!(ids(&report), [three_id.as_str(), two.as_str()], "the newest and the one before: {report}");
    let newest = &report["backups"][0];
    assert_eq!(newest["location"], "local");
    assert_eq!(newest["events"], 6, "{report}");
    assert_eq!(newest["records"], 6 * 4, "three guests and a payment per event: {report}");
    assert_eq!(newest["lastSeq"], three["lastSeq"], "{report}");
    assert!(newest["files"].as_u64().unwrap() > 0, "{report}");
    assert!(newest["replay"].is_null(), "no shipping, no replay: {report}");
    assert_eq!(report["restoreSeconds"], newest["restoreSeconds"]);
    assert!(report["restoreSeconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(report["backups"][1]["events"], 5, "{report}");
    assert!(scratch_left(dir.path()).is_empty(), "{:?}", scratch_left(dir.path()));

    let h = health(&api).await;
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["lastDrill"], report, "{h}");
    let entry = newest_drill_entry(&api).await;
    assert_eq!(entry["status"], "success", "{entry}");
    assert_eq!(entry["actor"], "admin", "{entry}");
    assert_eq!(entry["options"]["backups"], report["backups"], "{entry}");

    // The CLI goes through the server; the next drill takes the next older backup.
    let out = drill_cli(dir.path(), Some(&server), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let by_cli = report_of(&out);
    assert_eq!(by_cli["outcome"], "passed", "{by_cli}");
    assert_eq!(ids(&by_cli), [three_id.as_str(), one.as_str()], "{by_cli}");
    assert_eq!(newest_drill_entry(&api).await["actor"], "cli");

    // Offline, with the server stopped; the rotation wraps to the second-newest; the restarted
    // server shows that drill.
    server.stop();
    let out = drill_cli(dir.path(), None, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let offline = report_of(&out);
    assert_eq!(ids(&offline), [three_id.as_str(), two.as_str()], "{offline}");
    assert!(scratch_left(dir.path()).is_empty(), "{:?}", scratch_left(dir.path()));
    server.restart();
    let h = health(&Api::new(&server)).await;
    assert_eq!(h["lastDrill"], offline, "{h}");
    assert_eq!(h["status"], "ok", "{h}");
}

#[tokio::test]
async fn a_drill_of_a_damaged_local_archive_fails_names_it_degrades_health_and_loses_nothing() {
    let receiver = Receiver::start().await;
    let dir = data_dir();
    let mut server = Server::start_with(dir.path(), 0, &[("WEBHOOK_URL", receiver.url.as_str())]);
    let api = Api::new(&server);
    api.seed("a", 3).await;
    api.backup("one").await;
    api.seed("b", 2).await;
    let two = api.backup("two").await;
    let before = api.snapshot().await;
    assert_eq!(drill(&api).await["outcome"], "passed");

    damage(&dir.path().join("backups").join(two["name"].as_str().unwrap()));
    let report = drill(&api).await;
    assert_eq!(report["outcome"], "failed", "{report}");
    let two_id = local_id(&two);
    assert!(report["error"].as_str().unwrap().contains(&two_id), "the error names the archive: {report}");
    assert!(report["backups"][0]["error"].as_str().unwrap().contains("damaged"), "{report}");
    assert!(report["backups"][1]["error"].is_null(), "the older one is fine: {report}");
    assert!(scratch_left(dir.path()).is_empty(), "{:?}", scratch_left(dir.path()));
    let h = health(&api).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["lastDrill"]["outcome"], "failed", "{h}");
    assert_eq!(newest_drill_entry(&api).await["status"], "failed");
    // The failure is notified, and shows in the metrics.
    let notice = receiver.wait_for(30, "failed", "drill").await;
    assert!(notice.json["message"].as_str().unwrap().contains(&two_id), "{}", notice.json);
    assert_eq!(notice.json["details"]["operation"], "drill");
    let metrics = scrape(&api).await;
    assert_eq!(sample(&metrics, "eventvault_drills_total", &[("outcome", "failed")]), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "eventvault_drills_total", &[("outcome", "passed")]), Some(1.0));
    assert_eq!(sample(&metrics, "eventvault_drill_last_success", &[]), Some(0.0));
    assert!(sample(&metrics, "eventvault_drill_restore_seconds", &[]).is_some(), "{metrics}");
    assert_eq!(sample(&metrics, "eventvault_health_degraded", &[]), Some(1.0));

    let out = drill_cli(dir.path(), Some(&server), &[]);
    assert!(!out.status.success(), "a failed drill exits non-zero");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the restore drill failed") && stderr.contains(&two_id), "{stderr}");
    assert_eq!(report_of(&out)["outcome"], "failed");
    assert_eq!(api.snapshot().await, before, "a drill changes no data");

    // Still degraded after a restart; a drill that passes (the damaged archive gone) clears it.
    server.restart();
    let api = Api::new(&server);
    assert_eq!(health(&api).await["status"], "degraded");
    let (status, body) = api.call(reqwest::Method::DELETE, &format!("/api/backups/{two_id}"), None).await;
    assert!(status.is_success(), "{body}");
    let (status, body) = api.post("/api/backup/create", json!({"label": "three"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(drill(&api).await["outcome"], "passed");
    assert_eq!(health(&api).await["status"], "ok");
    assert_eq!(api.snapshot().await, before);
    receiver.wait_for(30, "recovered", "drill").await;
    assert_eq!(sample(&scrape(&api).await, "eventvault_drill_last_success", &[]), Some(1.0));
}

/// A folder repository inside `dir`: its URL and path.
pub(crate) fn file_repo(dir: &Path) -> (String, std::path::PathBuf) {
    let path = dir.join("repo");
    (format!("file://{}", path.display()), path)
}

#[tokio::test]
async fn a_drill_of_a_damaged_repository_object_fails_and_names_the_backup() {
    let dir = data_dir();
    let (url, repo_dir) = file_repo(dir.path());
    let server = Server::start_with(dir.path(), 0, &[("BACKUP_REPO", url.as_str())]);
    let api = Api::new(&server);
    api.seed("a", 3).await;
    api.backup("one").await;
    api.seed("b", 2).await;
    let two = api.backup("two").await;
    let two_id = repo_copy(&two)["id"].as_str().unwrap().to_owned();
    let before = api.snapshot().await;
    let good = drill(&api).await;
    assert_eq!(good["outcome"], "passed", "{good}");
    assert_eq!(good["backups"][0]["location"], "repo", "the repository's backups are drilled: {good}");
    assert_eq!(good["backups"][0]["id"], two_id.as_str());

    // The largest object of the newest backup, damaged in place (same size).
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(repo_dir.join("backups").join(format!("{two_id}.json"))).unwrap(),
    )
    .unwrap();
    let files = manifest["backup"]["files"].as_array().unwrap();
    let (_, object) = files
        .iter()
        .zip(manifest["objects"].as_array().unwrap())
        .max_by_key(|(f, _)| f["size"].as_u64().unwrap())
        .unwrap();
    let object = object.as_str().unwrap();
    damage(&repo_dir.join("objects").join(&object[..2]).join(object));

    let report = drill(&api).await;
    assert_eq!(report["outcome"], "failed", "{report}");
    let error = report["backups"][0]["error"].as_str().unwrap();
    assert!(report["error"].as_str().unwrap().contains(&two_id), "{report}");
    assert!(error.contains(object) || error.contains("SHA-256") || error.contains("sha"), "{report}");
    assert!(scratch_left(dir.path()).is_empty(), "{:?}", scratch_left(dir.path()));
    assert_eq!(health(&api).await["status"], "degraded");
    let out = drill_cli(dir.path(), Some(&server), &[("BACKUP_REPO", url.as_str())]);
    assert!(!out.status.success());
    assert_eq!(api.snapshot().await, before, "a drill changes no data");
}

#[tokio::test]
async fn with_shipping_the_log_replayed_from_the_older_backup_gives_the_next_one() {
    let dir = data_dir();
    let (url, repo_dir) = file_repo(dir.path());
    let server =
        Server::start_with(dir.path(), 0, &[("BACKUP_REPO", url.as_str()), ("SHIP_INTERVAL_MS", "200")]);
    let api = Api::new(&server);
    api.seed("a", 3).await;
    let one = api.backup("one").await;
    api.seed("b", 3).await;
    // A change and a deletion replay too.
    let (_, events) = api.get("/api/events?limit=1000").await;
    let first = events["items"][0]["id"].as_str().unwrap().to_owned();
    api.create(&format!("/api/events/{first}/payments"), json!({"amount": 99})).await;
    let (status, body) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/api/events/{}", events["items"][1]["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert!(status.is_success(), "{body}");
    wait_for(60, "every write shipped", || async {
        let h = health(&api).await;
        (h["ship"]["lastShippedSeq"] == h["store"]["lastSeq"]).then_some(())
    })
    .await;
    let two = api.backup("two").await;
    let (one_id, two_id) = (repo_copy(&one)["id"].as_str().unwrap(), repo_copy(&two)["id"].as_str().unwrap());

    let report = drill(&api).await;
    assert_eq!(report["outcome"], "passed", "{report}");
    assert_eq!(ids(&report), [two_id, one_id], "{report}");
    let replay = &report["backups"][1]["replay"];
    assert_eq!(replay["next"], two_id, "{report}");
    assert_eq!(replay["toSeq"], two["lastSeq"], "{report}");
    assert_eq!(replay["covered"], true, "{report}");
    assert_eq!(replay["matches"], true, "{report}");
    let expected = two["lastSeq"].as_u64().unwrap() - one["lastSeq"].as_u64().unwrap();
    assert_eq!(replay["messagesReplayed"], expected, "{report}");

    // Damaged log segments fail the drill: the log does not lead from one backup to the next.
    let log = repo_dir.join("log");
    let segments: Vec<std::path::PathBuf> = files_in(&log)
        .into_iter()
        .flat_map(|t| files_in(&log.join(&t)).into_iter().map(move |s| (t.clone(), s)))
        .filter(|(_, s)| s.ends_with(".seg"))
        .map(|(t, s)| log.join(t).join(s))
        .collect();
    assert!(!segments.is_empty(), "the log is shipped into {}", log.display());
    for segment in &segments {
        damage(segment);
    }
    let report = drill(&api).await;
    assert_eq!(report["outcome"], "failed", "{report}");
    let replay = &report["backups"][1]["replay"];
    assert_eq!(replay["matches"], false, "{report}");
    assert!(report["error"].as_str().unwrap().contains(one_id), "{report}");
    assert_eq!(health(&api).await["status"], "degraded");

    // The log of that range pruned away: said in the report, not a failure.
    for segment in &segments {
        std::fs::remove_file(segment).unwrap();
    }
    let report = drill(&api).await;
    assert_eq!(report["outcome"], "passed", "{report}");
    let replay = &report["backups"][1]["replay"];
    assert_eq!(replay["covered"], false, "{report}");
    assert!(replay["matches"].is_null(), "{report}");
    assert!(replay["note"].as_str().unwrap().contains("does not cover"), "{report}");
    let h = health(&api).await;
    assert_eq!(h["lastDrill"]["outcome"], "passed", "{h}");
    assert_eq!(h["status"], "ok", "{h}");
    assert!(scratch_left(dir.path()).is_empty(), "{:?}", scratch_left(dir.path()));
}

#[tokio::test]
async fn drill_interval_zero_never_drills_a_due_one_runs_at_startup_and_a_bad_one_is_refused() {
    let dir = data_dir();
    let bad = Server::try_start(dir.path(), 0, &[("DRILL_INTERVAL".into(), "daily".into())]);
    let Err((_, log)) = bad else { panic!("a server started with DRILL_INTERVAL=daily") };
    let log = log.join("\n");
    assert!(log.contains("DRILL_INTERVAL") || log.contains("drill-interval"), "{log}");
    assert!(log.contains("is not a window"), "{log}");

    let mut server = Server::start_with(dir.path(), 0, &[("DRILL_INTERVAL", "0")]);
    let api = Api::new(&server);
    api.seed("a", 2).await;
    api.backup("one").await;
    api.seed("b", 1).await;
    api.backup("two").await;
    // Longer than the interval below, which drills at once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(newest_drill_entry(&api).await.is_null(), "DRILL_INTERVAL=0 drilled");
    assert!(health(&api).await["lastDrill"].is_null());
    server.kill9();

    // The same store with drills every second: the first is due (the oldest backup is older
    // than the interval), at startup, run by the system.
    let server = Server::start_with(dir.path(), 0, &[("DRILL_INTERVAL", "1")]);
    let api = Api::new(&server);
    let last = wait_for(60, "a scheduled drill", || async {
        let h = health(&api).await;
        (!h["lastDrill"].is_null()).then(|| h["lastDrill"].clone())
    })
    .await;
    assert_eq!(last["outcome"], "passed", "{last}");
    let entry = newest_drill_entry(&api).await;
    assert_eq!(entry["actor"], "system", "{entry}");
}

#[tokio::test]
async fn a_drill_runs_beside_backups_one_at_a_time_and_a_crash_leaves_nothing_after_the_next_start() {
    let dir = data_dir();
    // Each backup restored, the drill waits 1.5 s: long enough to act while it runs.
    let faults = [("EVENTVAULT_FAULTS", "drill.restored=sleep")];
    let server = Server::start_with(dir.path(), 0, &faults);
    let api = Api::new(&server);
    api.seed("a", 2).await;
    api.backup("one").await;
    api.backup("two").await;
    let running = tokio::spawn({
        let api = api.clone();
        async move { drill(&api).await }
    });
    wait_for(30, "the drill's scratch directory", || async {
        (!scratch_left(dir.path()).is_empty()).then_some(())
    })
    .await;
    let (status, body) = api.post("/api/backup/drill", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "one drill at a time: {body}");
    let (status, body) = api.post("/api/backup/create", json!({"label": "during"})).await;
    assert_eq!(status, StatusCode::CREATED, "a drill does not hold the backup slot: {body}");
    let report = running.await.unwrap();
    assert_eq!(report["outcome"], "passed", "{report}");
    assert!(scratch_left(dir.path()).is_empty(), "{:?}", scratch_left(dir.path()));
    let (_, history) = api.get("/api/backup/history?limit=100").await;
    let drills = history["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "drill").count();
    assert_eq!(drills, 1, "the refused drill is not a drill that failed: {history}");
    assert_eq!(health(&api).await["status"], "ok");
    drop(server);

    // A crash in the middle of a drill leaves its scratch directory; the next start removes it.
    let crashing = Server::start_with(dir.path(), 0, &[("EVENTVAULT_FAULTS", "drill.restored=crash")]);
    let answer = Api::new(&crashing).request(reqwest::Method::POST, "/api/backup/drill").send().await;
    assert!(answer.is_err(), "the process aborted before it answered: {answer:?}");
    drop(crashing);
    assert!(!scratch_left(dir.path()).is_empty(), "the crash left the scratch directory");
    let server = Server::start(dir.path());
    assert!(scratch_left(dir.path()).is_empty(), "{:?}", scratch_left(dir.path()));
    assert_eq!(Api::new(&server).snapshot().await["events"].as_array().unwrap().len(), 2, "no data lost");
}
