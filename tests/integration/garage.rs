//! The repository on Garage, a real distributed S3 store (`make test-garage`; `.ci/run` runs
//! it when Garage is built). Ignored by `make test`: Garage takes 10–15 minutes to build once.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::garage::Garage;
use crate::common::s3::{age_decrypt, age_keygen, as_strs};
use crate::common::{data_dir, Api, Server};
use crate::event_backup::sha256_hex;
use crate::repo::event_with_records;

fn stored(created: &Value) -> Value {
    assert!(created["repo"]["error"].is_null(), "the repository copy failed: {created}");
    created["repo"].clone()
}

#[tokio::test]
#[ignore = "needs Garage: make test-garage"]
async fn garage_holds_incremental_backups_that_restore_on_a_fresh_machine() {
    let mut garage = Garage::start();
    let env = garage.repo_env("site");
    let dir = data_dir();
    let mut server = Server::start_with(dir.path(), 0, &as_strs(&env));
    let api = Api::new(&server);
    let event = event_with_records(&api, 4000).await;
    let first = api.backup("one").await;
    let one = stored(&first);

    // What Garage holds, read by the aws CLI: the manifest, and objects named by content.
    let id = one["id"].as_str().unwrap();
    let manifest: Value = serde_json::from_slice(&garage.get(&format!("site/backups/{id}.json"))).unwrap();
    let objects = garage.list("site/objects/");
    assert_eq!(objects.iter().map(|(_, s)| s).sum::<u64>(), one["bytesSent"].as_u64().unwrap());
    let file =
        manifest["backup"]["files"].as_array().unwrap().iter().find(|f| f["name"] == "CURRENT").unwrap();
    let sha = file["sha256"].as_str().unwrap();
    assert_eq!(sha256_hex(&garage.get(&format!("site/objects/{}/{sha}", &sha[..2]))), sha);

    // 1% more: the second backup sends a small part.
    api.create(&format!("/api/events/{event}/guests"), json!({"late": true})).await;
    let two = stored(&api.backup("two").await);
    assert!(two["bytesSent"].as_u64().unwrap() * 20 < one["bytesSent"].as_u64().unwrap(), "{two}");

    // Garage down: the backup fails clearly, the local archive is written, health degraded.
    garage.stop();
    let (status, down) = api.post("/api/backup/create", json!({"label": "down"})).await;
    assert_eq!(status, StatusCode::CREATED, "{down}");
    assert!(down["repo"]["error"].as_str().unwrap_or_default().contains("unavailable"), "{down}");
    let (_, health) = api.get("/api/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
    garage.start_again();
    let back = stored(&api.backup("back").await);
    let before = api.snapshot().await;
    server.stop();

    // verify --repo --read-data, then a fresh machine restores the newest, record for record.
    let out = crate::common::backup_cli(dir.path(), &["verify", "--repo", "--read-data"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fresh = data_dir();
    let out = crate::common::command(fresh.path(), "restore", &["--from", "s3://eventvault/site"])
        .envs(env.iter().filter(|(k, _)| k != "BACKUP_REPO").map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restored: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(restored["backup"], back["id"], "{restored}");
    server = Server::start(fresh.path());
    assert_eq!(Api::new(&server).snapshot().await, before);
}

#[tokio::test]
#[ignore = "needs Garage: make test-garage"]
async fn garage_holds_an_encrypted_repository_that_age_decrypts() {
    let garage = Garage::start();
    let keys = tempfile::tempdir().unwrap();
    let (identity, public) = age_keygen(keys.path());
    let mut env = garage.repo_env("sealed");
    env.push(("REPO_RECIPIENTS".into(), public));
    env.push(("MAX_BACKUPS".into(), "0".into()));
    let dir = data_dir();
    let server = Server::start_with(dir.path(), 0, &as_strs(&env));
    let api = Api::new(&server);
    event_with_records(&api, 2000).await;
    let created = api.backup("sealed").await;
    let id = stored(&created)["id"].as_str().unwrap().to_owned();
    for (key, _) in garage.list("sealed/") {
        assert!(garage.get(&key).starts_with(b"age-encryption.org/v1\n"), "{key}");
    }
    let manifest: Value =
        serde_json::from_slice(&age_decrypt(&identity, &garage.get(&format!("sealed/backups/{id}.json"))))
            .unwrap();
    assert_eq!(manifest["backup"]["counts"], created["counts"], "{manifest}");

    // The server lists it with its own key, and refuses to restore without the identity.
    let (_, listed) = api.get("/api/backups").await;
    assert!(listed.as_array().unwrap().iter().any(|i| i["id"] == id.as_str()), "{listed}");
    let (status, refused) =
        api.call(Method::POST, &format!("/api/backups/{id}/restore"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
}
