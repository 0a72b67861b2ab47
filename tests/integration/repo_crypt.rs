//! An encrypted backup repository (`REPO_RECIPIENTS`): on a real S3 server, read back with the
//! independent `aws` client and decrypted with Debian's `age` CLI.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::s3::{age_decrypt, age_keygen, as_strs, try_age_decrypt, S3Server};
use crate::common::{data_dir, Api, Server};
use crate::event_backup::sha256_hex;

const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

async fn event_with_records(api: &Api, n: usize) -> String {
    let event = api.create("/api/events", json!({"name": "Sealed"})).await;
    let id = event["id"].as_str().unwrap().to_owned();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let docs: Vec<Value> = chunk.iter().map(|i| json!({"n": i, "pad": format!("{i:0>280}")})).collect();
        api.create(&format!("/api/events/{id}/guests/_batch"), Value::Array(docs)).await;
    }
    id
}

fn repo_copy(created: &Value) -> Value {
    let repo = &created["repo"];
    assert!(repo["error"].is_null(), "the repository copy failed: {created}");
    repo.clone()
}

fn tar_list(archive: &[u8]) -> String {
    use std::io::Write;
    let mut tar = std::process::Command::new("tar")
        .args(["-tzf", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tar.stdin.take().unwrap().write_all(archive).unwrap();
    let out = tar.wait_with_output().unwrap();
    assert!(out.status.success(), "tar -tzf failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn an_encrypted_repository_holds_age_files_only_and_restores_with_the_identity() {
    let s3 = S3Server::start();
    s3.create_bucket("vault");
    let keys = tempfile::tempdir().unwrap();
    let (identity, public) = age_keygen(keys.path());
    let (stranger, _) = age_keygen(keys.path());
    let mut env = s3.repo_env("vault", "sealed");
    env.push(("REPO_RECIPIENTS".into(), public.clone()));

    // The machine taking backups holds the public key only.
    let dir = data_dir();
    let mut server = Server::start_with(dir.path(), 0, &as_strs(&env));
    let api = Api::new(&server);
    let event = event_with_records(&api, 3000).await;
    let first = api.backup("one").await;
    let one = repo_copy(&first);
    assert_eq!(one["encrypted"], true, "{one}");
    let id = one["id"].as_str().unwrap().to_owned();
    let key_file = dir.path().join("backups").join("repo-key.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the machine's key is readable by its owner only");

    // Everything on the server is an age file.
    let listed = s3.list("vault", "sealed/");
    assert!(listed.len() > 3, "{listed:?}");
    for (key, _) in &listed {
        assert!(s3.get("vault", key).starts_with(AGE_MAGIC), "{key} is not an age file");
    }

    // The user's identity decrypts the manifest and every object with the age CLI; object
    // names are not the SHA-256 of what they hold; another identity reads nothing.
    let sealed_manifest = s3.get("vault", &format!("sealed/backups/{id}.json"));
    assert!(try_age_decrypt(&stranger, &sealed_manifest).is_err());
    let manifest: Value = serde_json::from_slice(&age_decrypt(&identity, &sealed_manifest)).unwrap();
    let files = manifest["backup"]["files"].as_array().unwrap();
    let objects = manifest["objects"].as_array().unwrap();
    assert_eq!(files.len(), objects.len());
    for (object, file) in objects.iter().zip(files) {
        let object = object.as_str().unwrap();
        let sha = file["sha256"].as_str().unwrap();
        assert_ne!(object, sha, "an object is named by its content's hash");
        assert!(files.iter().all(|f| f["sha256"] != object), "{object} names a content");
        let sealed = s3.get("vault", &format!("sealed/objects/{}/{object}", &object[..2]));
        let plain = age_decrypt(&identity, &sealed);
        assert_eq!(sha256_hex(&plain), sha, "{}", file["name"]);
        assert!(try_age_decrypt(&stranger, &sealed).is_err());
    }

    // Deduplication keeps working under the keyed names.
    api.create(&format!("/api/events/{event}/guests"), json!({"late": true})).await;
    let second = api.backup("two").await;
    let two = repo_copy(&second);
    let (sent, sent_again) = (one["bytesSent"].as_u64().unwrap(), two["bytesSent"].as_u64().unwrap());
    assert!(sent_again * 20 < sent, "the second backup sent {sent_again} bytes, the first {sent}: {two}");
    let before = api.snapshot().await;

    // The machine lists and verifies what it wrote with its own key.
    let (_, listed) = api.get("/api/backups?kind=full").await;
    let item = listed.as_array().unwrap().iter().find(|i| i["location"] == "repo" && i["id"] == id.as_str());
    let item = item.unwrap_or_else(|| panic!("{listed}"));
    assert_eq!((&item["label"], &item["counts"]), (&json!("one"), &first["counts"]), "{item}");
    let verify = |args: &[&str]| {
        crate::common::backup_cli(dir.path(), args).envs(env.iter().map(|(k, v)| (k, v))).output().unwrap()
    };
    let out = verify(&["verify", "--repo"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Reading the data needs the identity: a clear refusal, and nothing changes.
    let out = verify(&["verify", "--repo", "--read-data"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("REPO_IDENTITY_FILE"));
    let name = first["name"].as_str().unwrap();
    let (status, body) = api.call(Method::DELETE, &format!("/api/backups/{name}"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, refused) = api.post(&format!("/api/backups/{id}/restore"), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "identity_required", "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("REPO_IDENTITY_FILE"), "{refused}");
    let response = api.request(Method::GET, &format!("/api/backups/{id}/download")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(api.snapshot().await, before);
    server.stop();

    // A fresh machine: without the identity the restore refuses and says what it needs.
    let fresh = data_dir();
    let restore = |extra: &[(&str, &str)]| {
        crate::common::command(fresh.path(), "restore", &["--from", "s3://vault/sealed"])
            .envs(s3.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().copied())
            .output()
            .unwrap()
    };
    let out = restore(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("REPO_IDENTITY_FILE"));
    let identity_path = identity.to_str().unwrap();
    let out = restore(&[("REPO_IDENTITY_FILE", identity_path)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut fresh_env = env.clone();
    fresh_env.push(("REPO_IDENTITY_FILE".into(), identity_path.into()));
    server = Server::start_with(fresh.path(), 0, &as_strs(&fresh_env));
    let api = Api::new(&server);
    assert_eq!(api.snapshot().await, before, "every event, record and message is back");

    // An export of an encrypted backup is encrypted to the same recipients.
    let response = api.request(Method::GET, &format!("/api/backups/{id}/download")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let disposition = response.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.contains(&format!("{id}.tar.gz.age")), "{disposition}");
    let sealed = response.bytes().await.unwrap();
    assert!(sealed.starts_with(AGE_MAGIC));
    assert!(try_age_decrypt(&stranger, &sealed).is_err());
    let entries = tar_list(&age_decrypt(&identity, &sealed));
    assert!(entries.starts_with("manifest.json\n") && entries.contains("db/CURRENT"), "{entries}");

    // The new machine adopts the name key of the backups it restored: its first backup
    // sends what changed, not the whole store again.
    let third = api.backup("moved").await;
    let moved = repo_copy(&third);
    let (sent, total) = (moved["bytesSent"].as_u64().unwrap(), moved["bytesTotal"].as_u64().unwrap());
    assert!(sent * 4 < total, "the new machine sent {sent} of {total} bytes: {moved}");
}
