//! The worker: a separate process, at-least-once across a server kill -9.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{bin, data_dir, wait_for, Api, Server};

fn handled_seqs(path: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|m| m["seq"].as_u64())
        .collect()
}

#[tokio::test]
async fn worker_is_at_least_once_across_a_server_kill9() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    for i in 0..30 {
        api.create("/api/events", json!({"n": i})).await;
    }
    let out = dir.path().join("handled.jsonl");
    // The handler is slow enough that the kill lands mid-stream.
    let exec = format!("sleep 0.05; cat >> {}", out.display());
    let mut worker = Command::new(bin())
        .args(["worker", "--server", &server.base, "--consumer", "mailer", "--exec", &exec])
        .env("EVENTVAULT_MAX_BACKOFF_MS", "300")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    wait_for(30, "the worker to handle 5 messages", || async {
        (handled_seqs(&out).len() >= 5).then_some(())
    })
    .await;
    server.kill9();
    let handled_before = handled_seqs(&out).len();
    assert!(handled_before < 30, "the kill must land mid-stream (handled {handled_before})");
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.restart();
    let api = Api::new(&server);
    for i in 30..40 {
        api.create("/api/events", json!({"n": i})).await;
    }
    wait_for(60, "the worker to handle every message", || async {
        let seen: BTreeSet<u64> = handled_seqs(&out).into_iter().collect();
        (seen.len() == 40).then_some(())
    })
    .await;
    let seqs = handled_seqs(&out);
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique, (1..=40).collect(), "no message skipped");
    assert!(
        seqs.windows(2).all(|w| w[0] <= w[1]),
        "in order (a redelivery repeats, never reorders): {seqs:?}"
    );

    // The committed offset is on the server.
    let offset = wait_for(10, "the final commit", || async {
        let (status, c) = api.get("/api/bus/consumers/mailer").await;
        (status == StatusCode::OK && c["offset"] == 40).then_some(c)
    })
    .await;
    assert_eq!(offset["offset"], 40);

    // SIGTERM: a clean exit.
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "worker did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "worker exit: {status}");
}

#[tokio::test]
async fn worker_prints_json_lines_by_default_and_retries_failing_handlers() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    api.create("/api/bus/jobs", json!({"type": "job", "data": 1})).await;
    api.create("/api/events", json!({"name": "not a job"})).await;

    // Default handler: one JSON line per message on stdout, filtered by topic.
    let mut child = Command::new(bin())
        .args(["worker", "--server", &server.base, "--consumer", "printer", "--topic", "jobs"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().next().unwrap().unwrap()
    })
    .await
    .unwrap();
    let message: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(message["topic"], "jobs");
    assert_eq!(message["seq"], 1);
    child.kill().unwrap();
    child.wait().unwrap();

    // A handler that fails is retried; the offset does not move until it succeeds.
    let flag = dir.path().join("ok");
    let exec = format!("test -e {}", flag.display());
    let mut child = Command::new(bin())
        .args(["worker", "--server", &server.base, "--consumer", "picky", "--exec", &exec])
        .env("EVENTVAULT_MAX_BACKOFF_MS", "200")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(api.get("/api/bus/consumers/picky").await.0, StatusCode::NOT_FOUND, "nothing committed yet");
    std::fs::write(&flag, "").unwrap();
    wait_for(15, "the retried messages to commit", || async {
        let (_, c) = api.get("/api/bus/consumers/picky").await;
        (c["offset"] == 2).then_some(())
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn worker_resyncs_after_a_restore_replaces_the_log() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    for i in 0..3 {
        api.create("/api/events", json!({"n": i})).await;
    }
    let backup = api.post("/api/backup/create", json!({"label": "three"})).await.1;
    for i in 3..6 {
        api.create("/api/events", json!({"n": i})).await;
    }
    let out = dir.path().join("handled.jsonl");
    let exec = format!("cat >> {}", out.display());
    let mut worker = Command::new(bin())
        .args(["worker", "--server", &server.base, "--consumer", "resync", "--exec", &exec])
        .env("EVENTVAULT_MAX_BACKOFF_MS", "200")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(20, "six messages", || async { (handled_seqs(&out).len() >= 6).then_some(()) }).await;

    let (status, body) = api.post("/api/backup/restore", json!({"backupName": backup["name"]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["lastSeq"], 3);
    // The restored log ends at seq 3; the next message is seq 4 again, with new content.
    let fresh = api.create("/api/events", json!({"n": "after restore"})).await;
    let handled = wait_for(20, "the first message of the restored log", || async {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|m| m["data"]["id"] == fresh["id"])
    })
    .await;
    assert_eq!(handled["seq"], 4);
    worker.kill().unwrap();
    worker.wait().unwrap();
}
