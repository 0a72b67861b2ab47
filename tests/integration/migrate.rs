//! Store format migrations at startup: a `pre-migration` backup first, and a failing step
//! leaves the store as it was. The step is a real one that test builds add (see
//! `store::migrate::test_step`): it adds `"schemaVersion": 2` to every event document.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{data_dir, files_in, Api, Server};

fn env(value: &str) -> Vec<(String, String)> {
    vec![("EVENTVAULT_TEST_MIGRATION".to_owned(), value.to_owned())]
}

async fn archives(api: &Api) -> Vec<Value> {
    let (status, list) = api.get("/api/backup/list").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["backups"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_migration_runs_after_a_pre_migration_backup() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("old", 3).await;
    let before = api.snapshot().await;
    server.stop();

    let mut server = Server::try_start(dir.path(), 0, &env("ok"))
        .unwrap_or_else(|(s, log)| panic!("migrating start failed ({s:?}):\n{}", log.join("\n")));
    let api = Api::new(&server);
    let list = archives(&api).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["trigger"], "pre-migration");
    assert_eq!(list[0]["keep"], true, "a pre-migration backup is never rotated out");
    let name = list[0]["name"].as_str().unwrap().to_owned();
    assert!(server.log().contains(&name), "the log names the backup:\n{}", server.log());

    // The step ran on every event, and changed nothing else.
    let after = api.snapshot().await;
    let events = after["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    for (old, new) in before["events"].as_array().unwrap().iter().zip(events) {
        assert_eq!(new["schemaVersion"], 2, "{new}");
        let mut new = new.clone();
        new.as_object_mut().unwrap().remove("schemaVersion");
        assert_eq!(&new, old);
    }
    assert_eq!(after["records"], before["records"]);
    assert_eq!(after["messages"], before["messages"]);

    // The backup holds the store as it was before the step: format 1, the old documents.
    let (_, manifest) = api.get(&format!("/api/backups/{name}")).await;
    assert_eq!(manifest["storeFormat"], 1, "{manifest}");
    let (_, docs) = api.get(&format!("/api/backups/{name}/collections/_events")).await;
    assert_eq!(docs["total"], 3, "{docs}");
    assert!(docs["documents"].as_array().unwrap().iter().all(|d| d.get("schemaVersion").is_none()), "{docs}");

    // A migrated store is not migrated again.
    server.restart();
    let api = Api::new(&server);
    assert_eq!(archives(&api).await.len(), 1);
    assert_eq!(api.snapshot().await, after);
    let leftovers: Vec<String> = files_in(&dir.path().join("storage"))
        .into_iter()
        .filter(|f| f != "db" && f != "eventvault.lock")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn a_failing_migration_leaves_the_store_intact_and_names_the_backup() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("keep", 4).await;
    let before = api.snapshot().await;
    server.stop();

    let (status, log) = match Server::try_start(dir.path(), 0, &env("fail")) {
        Ok(_) => panic!("a failing migration must stop startup"),
        Err(failed) => failed,
    };
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    let log = log.join("\n");
    let backups = files_in(&dir.path().join("backups"));
    let archive = backups
        .iter()
        .find(|f| f.ends_with("_pre-migration.tar.gz"))
        .unwrap_or_else(|| panic!("a pre-migration archive: {backups:?}"));
    assert!(log.contains(archive.as_str()), "the error names the backup:\n{log}");
    assert!(log.contains("unchanged"), "{log}");
    assert!(log.contains("add-schema-field"), "the error names the step:\n{log}");

    // The half-done step touched only a copy: the store is exactly as before.
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    assert_eq!(api.snapshot().await, before);
    let leftovers: Vec<String> = files_in(&dir.path().join("storage"))
        .into_iter()
        .filter(|f| f != "db" && f != "eventvault.lock")
        .collect();
    assert!(leftovers.is_empty(), "no copy is left behind: {leftovers:?}");
}

#[tokio::test]
async fn with_a_repository_the_pre_migration_backup_is_stored_there_too_or_only_there() {
    for max_backups in ["10", "0"] {
        let dir = data_dir();
        let repo = dir.path().join("repo");
        let url = format!("file://{}", repo.display());
        let mut server = Server::start_with(dir.path(), 0, &[("BACKUP_REPO", url.as_str())]);
        let api = Api::new(&server);
        api.seed("old", 2).await;
        let before = api.snapshot().await;
        server.stop();
        let mut envs = env("ok");
        envs.push(("BACKUP_REPO".into(), url.clone()));
        envs.push(("MAX_BACKUPS".into(), max_backups.into()));
        let server = Server::try_start(dir.path(), 0, &envs)
            .unwrap_or_else(|(s, log)| panic!("migrating start failed ({s:?}):\n{}", log.join("\n")));
        let api = Api::new(&server);
        let manifests = files_in(&repo.join("backups"));
        let pre: Vec<&String> = manifests.iter().filter(|m| m.ends_with("_pre-migration.json")).collect();
        assert_eq!(pre.len(), 1, "MAX_BACKUPS={max_backups}: {manifests:?}");
        let local = archives(&api).await;
        assert_eq!(local.len(), usize::from(max_backups != "0"), "MAX_BACKUPS={max_backups}: {local:?}");
        // It restores to the store as it was before the step.
        let id = pre[0].trim_end_matches(".json");
        let (status, report) = api.post(&format!("/api/backups/{id}/restore"), serde_json::json!({})).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(api.snapshot().await, before, "MAX_BACKUPS={max_backups}");
    }
}
