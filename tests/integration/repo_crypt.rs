//! An encrypted backup repository (`REPO_RECIPIENTS`): on a real S3 server, read back with the
//! independent `aws` client and decrypted with Debian's `age` CLI.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::s3::{age_decrypt, age_keygen, as_strs, try_age_decrypt, S3Server};
use crate::common::{data_dir, Api, Server};
use crate::event_backup::sha256_hex;
use crate::repo::{event_with_records, repo_copy};

const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

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
    let one = repo_copy(&first).clone();
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
    let two = repo_copy(&second).clone();
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
    let moved = repo_copy(&third).clone();
    let (sent, total) = (moved["bytesSent"].as_u64().unwrap(), moved["bytesTotal"].as_u64().unwrap());
    assert!(sent * 4 < total, "the new machine sent {sent} of {total} bytes: {moved}");
}

/// The objects of a folder repository, with their sizes, biggest first.
fn objects_of(repo: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut found = Vec::new();
    for prefix in std::fs::read_dir(repo.join("objects")).unwrap().flatten() {
        for object in std::fs::read_dir(prefix.path()).unwrap().flatten() {
            found.push((object.path(), object.metadata().unwrap().len()));
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.1));
    found
}

#[tokio::test]
async fn a_hostile_encrypted_repository_gets_clear_answers_and_is_mended() {
    let keys = tempfile::tempdir().unwrap();
    let (identity, public) = age_keygen(keys.path());
    let (_, other) = age_keygen(keys.path());
    let dir = data_dir();
    let repo = dir.path().join("repo");
    let url = format!("file://{}", repo.display());
    let identity_path = identity.to_str().unwrap();
    // No local archives: every restore below reads the repository.
    let env = [
        ("BACKUP_REPO", url.as_str()),
        ("REPO_RECIPIENTS", public.as_str()),
        ("REPO_IDENTITY_FILE", identity_path),
        ("MAX_BACKUPS", "0"),
    ];
    let server = Server::start_with(dir.path(), 0, &env);
    let api = Api::new(&server);
    let event = event_with_records(&api, 2000).await;
    let first = api.backup("one").await;
    let id = repo_copy(&first)["id"].as_str().unwrap().to_owned();

    // An object cut short by a few bytes (still within what an age header may vary) is
    // stored again by the next backup, never named as it is.
    let (biggest, size) = objects_of(&repo)[0].clone();
    let cut = std::fs::read(&biggest).unwrap();
    std::fs::write(&biggest, &cut[..cut.len() - 100]).unwrap();
    api.create(&format!("/api/events/{event}/guests"), json!({"late": true})).await;
    let second = api.backup("two").await;
    // (Stored again, its size differs from the first copy's too: an age header varies.)
    assert_ne!(std::fs::metadata(&biggest).unwrap().len(), size - 100, "stored again: {second}");
    let second_id = repo_copy(&second)["id"].as_str().unwrap().to_owned();
    let (status, dry) = api.post(&format!("/api/backups/{second_id}/restore"), json!({"dryRun": true})).await;
    assert_eq!(status, StatusCode::OK, "{dry}");

    // An object encrypted to another key is damage (422), not a missing identity (409).
    let foreign = crate::common::s3::age_encrypt(&other, b"MANIFEST-000005\n");
    let kept: Vec<(std::path::PathBuf, Vec<u8>)> =
        objects_of(&repo).into_iter().map(|(p, _)| (p.clone(), std::fs::read(&p).unwrap())).collect();
    for (path, _) in &kept {
        std::fs::write(path, &foreign).unwrap();
    }
    let (status, damaged) =
        api.post(&format!("/api/backups/{second_id}/restore"), json!({"dryRun": true})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{damaged}");
    for (path, bytes) in &kept {
        std::fs::write(path, bytes).unwrap();
    }

    // A manifest with a header of megabytes, and one whose sizes overflow: listed with an
    // error at once, never a hang or a 500.
    let mut huge = b"age-encryption.org/v1\n".to_vec();
    while huge.len() < 4 << 20 {
        huge.extend_from_slice(b"-> X25519 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n");
    }
    std::fs::write(repo.join("backups/backup_2020-01-01_000000_huge.json"), &huge).unwrap();
    let overflow = json!({
        "formatVersion": 1,
        "backup": {"formatVersion": 1, "appVersion": "0", "name": "backup_2020-01-02_000000_ovf.tar.gz",
                   "label": null, "trigger": "manual", "createdAt": "2020-01-02T00:00:00Z", "keep": false,
                   "lastSeq": 0, "storeFormat": 1, "counts": {"events": 0, "records": {}, "busMessages": 0},
                   "rocksdbVersion": "0", "files": [{"name": "CURRENT", "size": u64::MAX, "sha256": "a".repeat(64)}]},
        "objects": ["b".repeat(64)],
        "encryption": {"recipients": [public], "nameKey": "c".repeat(64), "storedSizes": [1]}
    });
    std::fs::write(repo.join("backups/backup_2020-01-02_000000_ovf.json"), overflow.to_string()).unwrap();
    let started = std::time::Instant::now();
    let out = crate::common::backup_cli(dir.path(), &["list", "--json"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "listing took {:?}", started.elapsed());
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(listed.as_array().unwrap().iter().any(|i| i["id"] == id.as_str()), "{listed}");
    let out = crate::common::backup_cli(dir.path(), &["verify", "--repo"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("huge") && said.contains("header"), "{said}");
    assert!(said.contains("ovf") && said.contains("stored size"), "{said}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "took {:?}", started.elapsed());
}

#[test]
fn a_secret_key_given_where_a_public_key_or_a_path_belongs_is_never_printed() {
    let keys = tempfile::tempdir().unwrap();
    let (identity, public) = age_keygen(keys.path());
    let secret = std::fs::read_to_string(&identity).unwrap();
    let secret = secret.lines().find(|l| l.starts_with("AGE-SECRET-KEY-")).unwrap().to_owned();
    let dir = data_dir();
    for (name, value) in [("REPO_RECIPIENTS", secret.as_str()), ("REPO_IDENTITY_FILE", secret.as_str())] {
        let out = crate::common::command(dir.path(), "backup", &["verify", "--repo"])
            .env("BACKUP_REPO", format!("file://{}", dir.path().join("repo").display()))
            .env("REPO_RECIPIENTS", &public)
            .env(name, value)
            .output()
            .unwrap();
        let said =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{name}: {said}");
        assert!(said.contains(name), "{name}: {said}");
        assert!(!said.contains(&secret[15..]), "{name} printed the secret: {said}");
    }
}
