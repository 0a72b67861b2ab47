//! Restore drills while backups come and go or break: a backup deleted or pruned while a
//! drill runs is skipped, not failed; a damaged manifest, a damaged backup drilled again, an
//! emptied repository fail the drill (audited, health degraded); a drill dated in the future
//! does not stop the schedule.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::webhook::Receiver;
use crate::common::{data_dir, wait_for, Api, Server};
use crate::drill::{damage, drill, file_repo, health, ids, local_id, newest_drill_entry, scratch_left};
use crate::repo::repo_copy;

/// Starts a drill that waits after each backup it restores (`drill.restored=sleep`), and
/// returns once its scratch directory is there: the older backup is read 1.5 s after the
/// newest is restored, time enough to remove it.
async fn drill_started(api: &Api, dir: &std::path::Path) -> tokio::task::JoinHandle<Value> {
    let running = tokio::spawn({
        let api = api.clone();
        async move { drill(&api).await }
    });
    wait_for(30, "the drill's scratch directory", || async { (!scratch_left(dir).is_empty()).then_some(()) })
        .await;
    running
}

#[tokio::test]
async fn a_backup_deleted_during_a_drill_is_skipped_and_the_next_one_drilled_instead() {
    let dir = data_dir();
    let server = Server::start_with(dir.path(), 0, &[("EVENTVAULT_FAULTS", "drill.restored=sleep")]);
    let api = Api::new(&server);
    api.seed("a", 2).await;
    let one = local_id(&api.backup("one").await);
    let two = local_id(&api.backup("two").await);
    let three = local_id(&api.backup("three").await);

    let running = drill_started(&api, dir.path()).await;
    let (status, body) = api.call(Method::DELETE, &format!("/api/backups/{two}"), None).await;
    assert!(status.is_success(), "{body}");
    let report = running.await.unwrap();
    assert_eq!(report["outcome"], "passed", "a deleted backup is no failed restore: {report}");
    assert_eq!(ids(&report), [three.as_str(), one.as_str()], "the next older one instead: {report}");
    assert_eq!(report["removed"], json!([two]), "{report}");
    let h = health(&api).await;
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["lastDrill"], report, "{h}");
    let entry = newest_drill_entry(&api).await;
    assert_eq!(entry["status"], "success", "{entry}");
    assert_eq!(entry["options"]["removed"], json!([two]), "{entry}");
}

#[tokio::test]
async fn a_backup_pruned_from_the_repository_during_a_drill_is_said_not_failed() {
    let dir = data_dir();
    let (url, _) = file_repo(dir.path());
    let env = [
        ("BACKUP_REPO", url.as_str()),
        ("EVENTVAULT_FAULTS", "drill.restored=sleep"),
        ("RETAIN_LAST", "2"),
        ("RETAIN_HOURLY", "0"),
        ("RETAIN_DAILY", "0"),
        ("RETAIN_WEEKLY", "0"),
        ("RETAIN_MONTHLY", "0"),
        ("RETAIN_YEARLY", "0"),
    ];
    let server = Server::start_with(dir.path(), 0, &env);
    let api = Api::new(&server);
    api.seed("a", 2).await;
    let one = repo_copy(&api.backup("one").await)["id"].as_str().unwrap().to_owned();
    let two = repo_copy(&api.backup("two").await)["id"].as_str().unwrap().to_owned();

    // A backup taken while the newest is drilled prunes the older one (two are retained).
    let running = drill_started(&api, dir.path()).await;
    api.backup("three").await;
    let report = running.await.unwrap();
    assert_eq!(report["outcome"], "passed", "{report}");
    assert_eq!(ids(&report), [two.as_str()], "{report}");
    assert_eq!(report["removed"], json!([one]), "the report says which went: {report}");
    assert_eq!(health(&api).await["status"], "ok");
    assert_eq!(newest_drill_entry(&api).await["status"], "success");
}

#[tokio::test]
async fn a_damaged_manifest_of_the_newest_repository_backup_fails_the_drill() {
    let dir = data_dir();
    let (url, repo_dir) = file_repo(dir.path());
    let mut server = Server::start_with(dir.path(), 0, &[("BACKUP_REPO", url.as_str())]);
    let api = Api::new(&server);
    api.seed("a", 2).await;
    api.backup("one").await;
    let two = repo_copy(&api.backup("two").await)["id"].as_str().unwrap().to_owned();
    let three = repo_copy(&api.backup("three").await)["id"].as_str().unwrap().to_owned();
    std::fs::write(repo_dir.join("backups").join(format!("{three}.json")), "garbage{").unwrap();

    server.restart();
    let api = Api::new(&server);
    let report = drill(&api).await;
    assert_eq!(report["outcome"], "failed", "{report}");
    assert_eq!(ids(&report), [three.as_str(), two.as_str()], "the unreadable one is the newest: {report}");
    assert!(report["error"].as_str().unwrap().contains(&three), "{report}");
    assert!(!report["backups"][0]["error"].is_null(), "{report}");
    assert!(report["backups"][1]["error"].is_null(), "{report}");
    assert_eq!(health(&api).await["status"], "degraded");
    assert_eq!(newest_drill_entry(&api).await["status"], "failed");
}

#[tokio::test]
async fn a_damaged_older_backup_is_drilled_again_until_it_is_gone_instead_of_flapping() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("a", 2).await;
    let one = local_id(&api.backup("one").await);
    let two = api.backup("two").await;
    let three = local_id(&api.backup("three").await);
    let two_id = local_id(&two);
    damage(&dir.path().join("backups").join(two["name"].as_str().unwrap()));

    for _ in 0..2 {
        let report = drill(&api).await;
        assert_eq!(report["outcome"], "failed", "{report}");
        assert_eq!(ids(&report), [three.as_str(), two_id.as_str()], "{report}");
        assert_eq!(health(&api).await["status"], "degraded");
    }
    let (status, body) = api.call(Method::DELETE, &format!("/api/backups/{two_id}"), None).await;
    assert!(status.is_success(), "{body}");
    let report = drill(&api).await;
    assert_eq!(report["outcome"], "passed", "{report}");
    assert_eq!(ids(&report), [three.as_str(), one.as_str()], "{report}");
    assert_eq!(health(&api).await["status"], "ok");
}

#[tokio::test]
async fn an_emptied_repository_fails_the_drill_while_a_fresh_server_has_nothing_to_drill() {
    let receiver = Receiver::start().await;
    let dir = data_dir();
    let (url, repo_dir) = file_repo(dir.path());
    let env = [("BACKUP_REPO", url.as_str()), ("WEBHOOK_URL", receiver.url.as_str())];
    let mut server = Server::start_with(dir.path(), 0, &env);
    let api = Api::new(&server);
    let (status, body) = api.post("/api/backup/drill", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no backup yet: {body}");
    assert!(newest_drill_entry(&api).await.is_null(), "nothing drilled, nothing audited");

    api.seed("a", 2).await;
    api.backup("one").await;
    assert_eq!(drill(&api).await["outcome"], "passed");
    std::fs::rename(repo_dir.join("backups"), repo_dir.join("backups.x")).unwrap();
    std::fs::write(repo_dir.join("backups"), "junk\n").unwrap();

    server.restart();
    let api = Api::new(&server);
    let report = drill(&api).await;
    assert_eq!(report["outcome"], "failed", "{report}");
    assert!(report["error"].as_str().unwrap().contains("backup repository"), "{report}");
    let h = health(&api).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["lastDrill"], report, "{h}");
    assert_eq!(newest_drill_entry(&api).await["status"], "failed");
    receiver.wait_for(30, "failed", "drill").await;
}

#[tokio::test]
async fn a_drill_dated_in_the_future_does_not_stop_scheduled_drills() {
    let dir = data_dir();
    let mut server = Server::start_with(dir.path(), 0, &[("DRILL_INTERVAL", "0")]);
    let api = Api::new(&server);
    api.seed("a", 2).await;
    api.backup("one").await;
    assert_eq!(drill(&api).await["outcome"], "passed");
    server.stop();
    let audit = dir.path().join("backups").join("audit.jsonl");
    let mut lines: Vec<Value> =
        std::fs::read_to_string(&audit).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let forged = lines.iter_mut().rev().find(|e| e["action"] == "drill").unwrap();
    forged["options"]["at"] = json!("2999-01-01T00:00:00.000Z");
    forged["time"] = json!("2999-01-01T00:00:00.000Z");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&audit, text).unwrap();

    let server = Server::start_with(dir.path(), 0, &[("DRILL_INTERVAL", "1")]);
    let api = Api::new(&server);
    let scheduled = wait_for(60, "a scheduled drill", || async {
        let entry = newest_drill_entry(&api).await;
        (entry["actor"] == "system").then_some(entry)
    })
    .await;
    assert_eq!(scheduled["status"], "success", "{scheduled}");
    let h = health(&api).await;
    assert!(!h["lastDrill"]["at"].as_str().unwrap().starts_with("2999"), "{h}");
}
