//! The operator's view: `/metrics` (checked by promtool from Debian's prometheus package) and
//! failure notifications to a webhook receiver started by the test.

use std::path::Path;
use std::process::{Command, Stdio};

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sha2::Sha256;

use crate::common::s3::cache_dir;
use crate::common::webhook::Receiver;
use crate::common::{data_dir, wait_for, Api, Server};

const ADMIN: &str = "admin-token-for-metrics-tests";
const READER: &str = "read-token-for-metrics-tests";
const SECRET: &str = "webhook-secret-for-tests";

fn promtool() -> std::path::PathBuf {
    let path = cache_dir().join("tools/prometheus/usr/bin/promtool");
    assert!(path.is_file(), "{} is missing: run scripts/install-deps", path.display());
    path
}

/// Fetches `/metrics` with `api`'s token, asserts promtool accepts it, and returns it.
pub(crate) async fn scrape(api: &Api) -> String {
    let response = api.request(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = response.text().await.unwrap();
    let mut check = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused /metrics:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The value of the sample `name` whose labels include `labels`.
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        let all = labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        (metric == name && all).then(|| value.parse().ok()).flatten()
    })
}

fn verify(signature: &str, body: &[u8]) {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(signature, expected, "the signature is HMAC-SHA256 of the body with WEBHOOK_SECRET");
}

/// Flips bytes in the middle of a file.
fn damage(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn metrics_need_a_token_promtool_accepts_them_and_the_counters_move() {
    let receiver = Receiver::start().await;
    let dir = data_dir();
    let repo = format!("file://{}", dir.path().join("repo").display());
    let env = [
        ("ADMIN_TOKEN", ADMIN),
        ("READ_TOKEN", READER),
        ("BACKUP_REPO", repo.as_str()),
        ("WEBHOOK_URL", receiver.url.as_str()),
        ("WEBHOOK_SECRET", SECRET),
    ];
    let server = Server::start_with(dir.path(), 0, &env);
    let (admin, reader) = (Api::new(&server).with_token(ADMIN), Api::new(&server).with_token(READER));

    let (status, body) = Api::new(&server).get("/metrics").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let before = scrape(&reader).await;
    assert_eq!(sample(&before, "eventvault_backups_total", &[]), None, "no backup yet");
    assert_eq!(sample(&before, "eventvault_up", &[("status", "ok")]), Some(1.0));
    assert_eq!(sample(&before, "eventvault_events", &[]), Some(0.0));

    let event = admin.create("/api/events", json!({"name": "gala"})).await;
    let id = event["id"].as_str().unwrap().to_owned();
    for i in 0..3 {
        admin.create(&format!("/api/events/{id}/guests"), json!({"n": i})).await;
    }
    let first = admin.backup("first").await;
    let first_name = first["name"].as_str().unwrap().to_owned();
    let first_id = first_name.trim_end_matches(".tar.gz").to_owned();
    let after = scrape(&reader).await;
    let ok_local = [("kind", "full"), ("location", "local"), ("outcome", "success")];
    let ok_repo = [("kind", "full"), ("location", "repo"), ("outcome", "success")];
    assert_eq!(sample(&after, "eventvault_backups_total", &ok_local), Some(1.0), "{after}");
    assert_eq!(sample(&after, "eventvault_backups_total", &ok_repo), Some(1.0), "{after}");
    assert_eq!(
        sample(&after, "eventvault_backup_size_bytes_sum", &[("location", "local")]),
        Some(first["size"].as_f64().unwrap())
    );
    assert_eq!(
        sample(&after, "eventvault_backup_duration_seconds_count", &[("location", "local")]),
        Some(1.0)
    );
    assert_eq!(sample(&after, "eventvault_events", &[]), Some(1.0));
    assert_eq!(sample(&after, "eventvault_records", &[]), Some(3.0));
    assert_eq!(sample(&after, "eventvault_stored_backups", &[("location", "local")]), Some(1.0));
    assert!(
        sample(&after, "eventvault_backup_last_success_timestamp_seconds", &[("location", "local")]).unwrap()
            > 1.7e9
    );
    assert!(sample(&after, "eventvault_bus_last_seq", &[]).unwrap() >= 4.0);
    let created = [("method", "POST"), ("route", "/api/backup/create"), ("status", "201")];
    assert_eq!(sample(&after, "eventvault_http_requests_total", &created), Some(1.0));
    let refused = [("method", "GET"), ("route", "/metrics"), ("status", "401")];
    assert_eq!(sample(&after, "eventvault_http_requests_total", &refused), Some(1.0), "refusals count too");

    // A dry run, then a restore of a damaged archive: a failure, notified (the first delivery
    // is refused, so it is retried) and signed.
    let (status, body) =
        admin.post(&format!("/api/backups/{first_id}/restore"), json!({"dryRun": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = admin.backup("second").await;
    let second_name = second["name"].as_str().unwrap().to_owned();
    let second_path = dir.path().join("backups").join(&second_name);
    let intact = std::fs::read(&second_path).unwrap();
    damage(&second_path);
    receiver.refuse_next(1);
    let (status, body) = admin.post("/api/backup/restore", json!({"backupName": second_name})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let failed = receiver.wait_for(30, "failed", "restore").await;
    verify(failed.signature.as_deref().expect("a signature header"), &failed.body);
    assert_eq!(failed.json["details"]["backup"], second_name.as_str());
    assert_eq!(failed.json["details"]["operation"], "restore");
    assert!(failed.json["message"].as_str().unwrap().contains("damaged"), "{}", failed.json);
    for secret in [ADMIN, READER, SECRET] {
        let text = String::from_utf8_lossy(&failed.body);
        assert!(!text.contains(secret), "a notice never carries a token or the secret: {text}");
    }
    let failing = scrape(&reader).await;
    let failed_restore =
        [("kind", "full"), ("location", "local"), ("dry_run", "false"), ("outcome", "failed")];
    let dry = [("dry_run", "true"), ("outcome", "success")];
    assert_eq!(sample(&failing, "eventvault_restores_total", &failed_restore), Some(1.0), "{failing}");
    assert_eq!(sample(&failing, "eventvault_restores_total", &dry), Some(1.0));
    // Refusals are not failures of the service: nothing is notified for them.
    let (status, _) = admin.post("/api/backup/restore", json!({"backupName": "backup_nope.tar.gz"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Neither a dry run nor a restore of another backup says the failed one recovered; a
    // restore of it, repaired, does.
    let (status, body) =
        admin.post(&format!("/api/backups/{first_id}/restore"), json!({"dryRun": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = admin.post("/api/backup/restore", json!({"backupName": first_name})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    std::fs::write(&second_path, &intact).unwrap();
    let (status, body) = admin.post("/api/backup/restore", json!({"backupName": second_name})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let recovered = receiver.wait_for(30, "recovered", "restore").await;
    assert_eq!(recovered.json["details"]["backup"], second_name.as_str());
    verify(recovered.signature.as_deref().unwrap(), &recovered.body);
    let subjects: Vec<String> =
        receiver.received().iter().map(|r| format!("{} {}", r.json["event"], r.json["subject"])).collect();
    assert_eq!(
        subjects,
        ["\"failed\" \"restore\"", "\"recovered\" \"restore\""],
        "one notice each, in order"
    );
    let end = scrape(&admin).await;
    let ok_restore = [("kind", "full"), ("location", "local"), ("dry_run", "false"), ("outcome", "success")];
    assert_eq!(sample(&end, "eventvault_restores_total", &ok_restore), Some(2.0), "{end}");
    assert_eq!(
        sample(&end, "eventvault_webhook_notifications_total", &[("outcome", "delivered")]),
        Some(2.0)
    );
    assert_eq!(sample(&end, "eventvault_restore_duration_seconds_count", &[("dry_run", "false")]), Some(3.0));
}

#[tokio::test]
async fn metrics_public_opens_metrics_only_and_a_dead_receiver_blocks_nothing() {
    // A receiver that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/services/T0/B0/pathSECRET?token=querySECRET", silent.local_addr().unwrap());
    let dir = data_dir();
    // A file that claims to be a backup of 2099: it counts as no backup at all.
    std::fs::create_dir_all(dir.path().join("backups")).unwrap();
    std::fs::write(dir.path().join("backups/backup_2099-01-01_000000.tar.gz"), b"junk").unwrap();
    let env = [("ADMIN_TOKEN", ADMIN), ("METRICS_PUBLIC", "true"), ("WEBHOOK_URL", url.as_str())];
    let server = Server::start_with(dir.path(), 0, &env);
    let (open, admin) = (Api::new(&server), Api::new(&server).with_token(ADMIN));
    let text = scrape(&open).await;
    let never = [("location", "local")];
    assert_eq!(
        sample(&text, "eventvault_backup_last_success_timestamp_seconds", &never),
        Some(0.0),
        "{text}"
    );
    let (status, _) = open.get("/api/backups").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the API still needs a token");

    admin.create("/api/events", json!({"name": "x"})).await;
    let backup = admin.backup("b").await;
    let name = backup["name"].as_str().unwrap().to_owned();
    damage(&dir.path().join("backups").join(&name));
    for _ in 0..3 {
        let (status, body) = admin.post("/api/backup/restore", json!({"backupName": name})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "the failure is answered at once: {body}");
    }
    let (status, health) = open.get("/api/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    let text = scrape(&open).await;
    let failed = [("dry_run", "false"), ("outcome", "failed")];
    assert_eq!(sample(&text, "eventvault_restores_total", &failed), Some(3.0));
    let created = backup["createdAt"].as_str().unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(created).unwrap().timestamp_millis() as f64 / 1000.0;
    assert_eq!(sample(&text, "eventvault_backup_last_success_timestamp_seconds", &never), Some(at), "{text}");
    // The receiver's address shows in logs, never its path or query (where hooks keep secrets).
    wait_for(30, "a delivery retried", || async {
        server.log().contains("webhook delivery failed").then_some(())
    })
    .await;
    assert!(!server.log().contains("SECRET"), "{}", server.log());
    drop(silent);
}

#[tokio::test]
async fn shipping_that_fails_is_notified_once_and_so_is_its_recovery() {
    let receiver = Receiver::start().await;
    let dir = data_dir();
    let repo_dir = dir.path().join("repo");
    let repo = format!("file://{}", repo_dir.display());
    let env = [
        ("BACKUP_REPO", repo.as_str()),
        ("SHIP_INTERVAL_MS", "100"),
        ("SHIP_MAX_LAG_SECS", "1"),
        ("WEBHOOK_URL", receiver.url.as_str()),
    ];
    let server = Server::start_with(dir.path(), 0, &env);
    let api = Api::new(&server);
    api.create("/api/events", json!({"name": "first"})).await;
    wait_for(30, "the first write shipped", || async {
        let (_, health) = api.get("/api/health").await;
        (health["ship"]["lastShippedSeq"] == health["store"]["lastSeq"]).then_some(())
    })
    .await;
    // The log folder becomes a file: every segment fails to land.
    let log = repo_dir.join("log");
    std::fs::rename(&log, repo_dir.join("log.away")).unwrap();
    std::fs::write(&log, b"in the way").unwrap();
    api.create("/api/events", json!({"name": "second"})).await;
    let failed = receiver.wait_for(60, "failed", "shipping").await;
    assert!(failed.json["message"].as_str().unwrap().contains("shipping"), "{}", failed.json);
    assert_eq!(failed.signature, None, "no WEBHOOK_SECRET, no signature");
    let (_, health) = api.get("/api/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
    let text = scrape(&api).await;
    assert!(sample(&text, "eventvault_ship_lag_seconds", &[]).unwrap() > 1.0, "{text}");

    std::fs::remove_file(&log).unwrap();
    std::fs::rename(repo_dir.join("log.away"), &log).unwrap();
    receiver.wait_for(60, "recovered", "shipping").await;
    let shipping: Vec<String> = receiver
        .received()
        .iter()
        .filter(|r| r.json["subject"] == "shipping")
        .map(|r| r.json["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        shipping,
        ["failed", "recovered"],
        "a condition is notified when it starts and ends, not per check"
    );
    let (_, health) = api.get("/api/health").await;
    assert_eq!(health["status"], "ok", "{health}");
}

#[tokio::test]
async fn without_local_archives_backups_in_the_repository_keep_them_from_going_stale() {
    let receiver = Receiver::start().await;
    let dir = data_dir();
    let repo = format!("file://{}", dir.path().join("repo").display());
    let env = [
        ("BACKUP_REPO", repo.as_str()),
        ("MAX_BACKUPS", "0"),
        ("AUTO_BACKUP_ENABLED", "true"),
        ("AUTO_BACKUP_INTERVAL", "1000"),
        ("WEBHOOK_URL", receiver.url.as_str()),
    ];
    let server = Server::start_with(dir.path(), 0, &env);
    let api = Api::new(&server);
    // Writes for 6 s: three times twice the interval, with a backup every second.
    for i in 0..20 {
        api.create("/api/events", json!({"name": format!("e{i}")})).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let (_, health) = api.get("/api/health").await;
    assert_eq!(health["backup"]["stale"], false, "{health}");
    let text = scrape(&api).await;
    assert_eq!(sample(&text, "eventvault_backup_stale", &[]), Some(0.0));
    let repo_success = [("location", "repo")];
    assert!(
        sample(&text, "eventvault_backup_last_success_timestamp_seconds", &repo_success).unwrap() > 1.7e9
    );
    let stale: Vec<_> =
        receiver.received().into_iter().filter(|r| r.json["subject"] == "stale_backups").collect();
    assert!(stale.is_empty(), "{stale:?}");
}

#[tokio::test]
async fn a_webhook_url_that_is_not_http_or_carries_credentials_is_refused_at_startup() {
    let dir = data_dir();
    for (url, says) in [
        ("ftp://alerts.example.com/x", "http:// or https://"),
        ("https://user:pw@alerts.example.com/x", "credentials"),
        ("not a url", "not a URL"),
    ] {
        let env = vec![("WEBHOOK_URL".to_owned(), url.to_owned())];
        let Err((status, log)) = Server::try_start(dir.path(), 0, &env) else { panic!("{url} was accepted") };
        assert!(status.is_some_and(|s| !s.success()), "{url}");
        let log = log.join("\n");
        assert!(log.contains(says), "{url}: {log}");
        assert!(!log.contains("pw@"), "the refusal does not repeat credentials: {log}");
    }
    let env = vec![("WEBHOOK_SECRET".to_owned(), "s".to_owned())];
    let Err((_, log)) = Server::try_start(dir.path(), 0, &env) else {
        panic!("a secret without a URL was accepted")
    };
    assert!(log.join("\n").contains("WEBHOOK_URL"), "{log:?}");
}

#[tokio::test]
async fn a_receiver_that_refuses_a_notice_is_not_retried_and_its_url_is_not_logged() {
    let receiver = Receiver::start().await;
    let url = format!("{}?token=querySECRET", receiver.url);
    let dir = data_dir();
    let server = Server::start_with(dir.path(), 0, &[("WEBHOOK_URL", url.as_str())]);
    let api = Api::new(&server);
    api.create("/api/events", json!({"name": "x"})).await;
    let backup = api.backup("b").await;
    damage(&dir.path().join("backups").join(backup["name"].as_str().unwrap()));
    receiver.refuse_next_with(1, StatusCode::GONE);
    let (status, _) = api.post("/api/backup/restore", json!({"backupName": backup["name"]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    wait_for(30, "the undelivered notice logged", || async {
        server.log().contains("could not be delivered").then_some(())
    })
    .await;
    let log = server.log();
    assert!(log.contains("the receiver answered 410"), "{log}");
    assert!(!log.contains("SECRET") && !log.contains("/hook"), "only scheme, host and port are shown: {log}");
    let text = scrape(&api).await;
    assert_eq!(sample(&text, "eventvault_webhook_notifications_total", &[("outcome", "failed")]), Some(1.0));
    assert!(receiver.received().is_empty(), "a 410 is not retried");
}
