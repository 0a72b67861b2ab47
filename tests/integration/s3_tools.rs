//! The S3 server and the independent tools of `tests/common/s3.rs` work end to end, so a
//! backup-repository test that fails points at eventvault, not at its test bench. What these
//! tests found about rclone's S3 server (multipart uploads work; `If-None-Match` is ignored)
//! is summed up at the top of `tests/common/s3.rs`.

use std::process::{Command, Output};

use crate::common::s3::{self, S3Server};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Bytes that differ from one offset to the next, so a misplaced part shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed).collect()
}

#[test]
fn s3_server_keeps_objects_across_a_stop_and_start() {
    let mut s3 = S3Server::start();
    s3.create_bucket("backups");
    assert!(s3.data_dir().join("backups").is_dir(), "a bucket is a top-level folder");

    let upload = tempfile::NamedTempFile::new().unwrap();
    let bytes = pattern(100_000, 7);
    std::fs::write(upload.path(), &bytes).unwrap();
    let out = s3.aws(&[
        "s3",
        "cp",
        "--only-show-errors",
        upload.path().to_str().unwrap(),
        "s3://backups/repo/one.bin",
    ]);
    s3::assert_ok(&out, "aws s3 cp");
    assert_eq!(s3.list("backups", "repo/"), vec![("repo/one.bin".to_owned(), 100_000)]);
    assert_eq!(s3.list("backups", "other/"), vec![]);
    assert_eq!(s3.get("backups", "repo/one.bin"), bytes);
    assert_eq!(std::fs::read(s3.data_dir().join("backups/repo/one.bin")).unwrap(), bytes);

    // The variables handed to eventvault reach the same server with any S3 client.
    let env = s3.env();
    let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(var("S3_ENDPOINT"), format!("http://127.0.0.1:{}", s3.port()));
    assert_eq!(var("S3_ALLOW_HTTP"), "true");
    let out = Command::new(s3::venv_tool("aws"))
        .args(["--endpoint-url", &var("S3_ENDPOINT"), "s3", "ls", "--recursive", "s3://backups/"])
        .env_clear()
        .env("HOME", s3.data_dir())
        .env("AWS_ACCESS_KEY_ID", var("AWS_ACCESS_KEY_ID"))
        .env("AWS_SECRET_ACCESS_KEY", var("AWS_SECRET_ACCESS_KEY"))
        .env("AWS_DEFAULT_REGION", var("S3_REGION"))
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap();
    s3::assert_ok(&out, "aws s3 ls with env()");
    assert!(String::from_utf8_lossy(&out.stdout).contains("100000 repo/one.bin"), "{:?}", out);

    let port = s3.port();
    s3.stop();
    assert!(!s3.is_running());
    let out = s3.aws(&["s3api", "list-objects-v2", "--bucket", "backups"]);
    assert!(!out.status.success(), "a request to a stopped server succeeded: {out:?}");
    assert!(stderr(&out).contains("Could not connect to the endpoint URL"), "{}", stderr(&out));

    s3.start_again();
    assert_eq!(s3.port(), port);
    assert_eq!(s3.list("backups", "repo/"), vec![("repo/one.bin".to_owned(), 100_000)]);
    assert_eq!(s3.get("backups", "repo/one.bin"), bytes);
}

#[test]
fn changes_to_the_served_folder_show_a_second_later() {
    let s3 = S3Server::start();
    s3.create_bucket("backups");
    s3.put("backups", "a/1", b"one");
    s3.put("backups", "a/2", b"two");
    assert_eq!(s3.list("backups", "a/"), vec![("a/1".to_owned(), 3), ("a/2".to_owned(), 3)]);

    // A test corrupts or removes objects on disk; a request once the server's directory
    // cache (1 s) has expired must see it.
    std::fs::remove_file(s3.data_dir().join("backups/a/1")).unwrap();
    std::fs::write(s3.data_dir().join("backups/a/2"), b"changed").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(s3.list("backups", "a/"), vec![("a/2".to_owned(), 7)]);
    assert_eq!(s3.get("backups", "a/2"), b"changed");
    let out = s3.aws(&["s3api", "head-object", "--bucket", "backups", "--key", "a/1"]);
    assert!(!out.status.success(), "a removed object is still served: {out:?}");
}

#[test]
fn wrong_credentials_are_refused() {
    let s3 = S3Server::start();
    s3.create_bucket("backups");
    let out =
        s3.aws_as(s3::ACCESS_KEY, "not-the-secret", &["s3api", "list-objects-v2", "--bucket", "backups"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("SignatureDoesNotMatch"), "{}", stderr(&out));
    let out = s3.aws_as("someone-else", s3::SECRET_KEY, &["s3api", "list-objects-v2", "--bucket", "backups"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("InvalidAccessKeyId"), "{}", stderr(&out));
    s3::assert_ok(&s3.aws(&["s3api", "list-objects-v2", "--bucket", "backups"]), "list with the right key");
}

/// rclone supports multipart uploads: the object appears only on completion, whole and in
/// part order (object_store uploads large objects this way).
#[test]
fn multipart_uploads_complete_whole() {
    let s3 = S3Server::start();
    s3.create_bucket("backups");
    let part1 = pattern(5 * 1024 * 1024, 1);
    let part2 = pattern(1000, 2);
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (dir.path().join("p1"), dir.path().join("p2"));
    std::fs::write(&p1, &part1).unwrap();
    std::fs::write(&p2, &part2).unwrap();

    let out = s3.aws(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "backups",
        "--key",
        "big",
        "--output",
        "json",
    ]);
    s3::assert_ok(&out, "create-multipart-upload");
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let upload_id = created["UploadId"].as_str().unwrap().to_owned();
    let mut parts = Vec::new();
    // Part 2 first: the server must order by part number, not by arrival.
    for (number, path) in [(2, &p2), (1, &p1)] {
        let out = s3.aws(&[
            "s3api",
            "upload-part",
            "--bucket",
            "backups",
            "--key",
            "big",
            "--upload-id",
            &upload_id,
            "--part-number",
            &number.to_string(),
            "--body",
            path.to_str().unwrap(),
            "--output",
            "json",
        ]);
        s3::assert_ok(&out, "upload-part");
        let etag = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["ETag"].clone();
        parts.push(serde_json::json!({"PartNumber": number, "ETag": etag}));
    }
    assert_eq!(s3.list("backups", ""), vec![], "an unfinished upload is visible");
    parts.reverse();
    let layout = serde_json::json!({ "Parts": parts }).to_string();
    let out = s3.aws(&[
        "s3api",
        "complete-multipart-upload",
        "--bucket",
        "backups",
        "--key",
        "big",
        "--upload-id",
        &upload_id,
        "--multipart-upload",
        &layout,
    ]);
    s3::assert_ok(&out, "complete-multipart-upload");
    let whole = [part1, part2].concat();
    assert_eq!(s3.list("backups", ""), vec![("big".to_owned(), whole.len() as u64)]);
    assert!(s3.get("backups", "big") == whole, "the completed object differs from its parts in order");
}

/// rclone's S3 server accepts `If-None-Match: *` and overwrites anyway: eventvault must never
/// rely on conditional writes for safety (issue 11). Fails the day rclone starts honouring it.
#[test]
fn rclone_ignores_conditional_writes() {
    let s3 = S3Server::start();
    s3.create_bucket("backups");
    s3.put("backups", "manifest", b"first");
    let body = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(body.path(), b"second").unwrap();
    let out = s3.aws(&[
        "s3api",
        "put-object",
        "--bucket",
        "backups",
        "--key",
        "manifest",
        "--body",
        body.path().to_str().unwrap(),
        "--if-none-match",
        "*",
    ]);
    s3::assert_ok(&out, "put-object --if-none-match '*' over an existing object");
    assert_eq!(s3.get("backups", "manifest"), b"second");
}

#[test]
fn age_round_trip_through_the_cli_and_s3() {
    let dir = tempfile::tempdir().unwrap();
    let (identity, public) = s3::age_keygen(dir.path());
    let (other_identity, other_public) = s3::age_keygen(dir.path());
    assert_ne!(identity, other_identity);
    assert_ne!(public, other_public);

    let plain = pattern(300_000, 9);
    let sealed = s3::age_encrypt(&public, &plain);
    assert!(sealed.starts_with(b"age-encryption.org/v1\n"), "not an age file");
    assert!(!sealed.windows(64).any(|w| w == &plain[1000..1064]), "the plaintext shows through");

    let s3 = S3Server::start();
    s3.create_bucket("backups");
    s3.put("backups", "objects/sealed", &sealed);
    let fetched = s3.get("backups", "objects/sealed");
    assert_eq!(s3::age_decrypt(&identity, &fetched), plain);
    let refused =
        s3::try_age_decrypt(&other_identity, &fetched).expect_err("decrypted with the wrong identity");
    assert!(refused.contains("no identity matched"), "{refused}");
}
