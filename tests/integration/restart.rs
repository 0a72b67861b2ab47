//! Data survives restarts and crashes; the store refuses what it must.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{data_dir, Api, Server};

#[tokio::test]
async fn data_survives_a_clean_restart_and_a_kill9() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    let event = api.create("/api/events", json!({"name": "durable"})).await;
    let id = event["id"].as_str().unwrap().to_owned();
    let batch: Vec<_> = (0..100).map(|i| json!({"i": i})).collect();
    api.create(&format!("/api/events/{id}/guests/_batch"), json!(batch)).await;
    let before = api.get(&format!("/api/events/{id}/guests?limit=1000")).await.1;
    let messages_before = api.all_messages().await;

    let status = server.stop();
    assert!(status.success(), "SIGTERM exits cleanly: {status}");
    assert!(server.log().contains("store flushed and closed"), "{}", server.log());
    server.restart();
    let api = Api::new(&server);
    assert_eq!(api.get(&format!("/api/events/{id}")).await.1, event);
    assert_eq!(api.get(&format!("/api/events/{id}/guests?limit=1000")).await.1, before);
    assert_eq!(api.all_messages().await, messages_before);

    // Acknowledged writes survive kill -9 (they are in the WAL before the response).
    let late = api.create(&format!("/api/events/{id}/guests"), json!({"late": true})).await;
    server.kill9();
    server.restart();
    let api = Api::new(&server);
    let path = format!("/api/events/{id}/guests/{}", late["id"].as_str().unwrap());
    assert_eq!(api.get(&path).await.1, late);
    let (_, health) = api.get("/api/health").await;
    assert_eq!(health["store"]["lastSeq"], 102);
    assert_eq!(health["store"]["events"], 1);
    assert!(health["store"]["sizeBytes"].as_u64().unwrap() > 0);
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn a_store_held_by_a_live_process_is_refused_with_its_pid() {
    let dir = data_dir();
    let first = Server::start(dir.path());
    let second = Server::try_start(dir.path(), 0, &[]);
    let Err((status, log)) = second else { panic!("a second server on the same store must not start") };
    assert!(!status.expect("exited").success());
    let log = log.join("\n");
    assert!(log.contains(&dir.path().join("storage").display().to_string()), "{log}");
    assert!(log.contains(&format!("pid {}", first.pid())), "{log}");
    // The first one is unharmed.
    let api = Api::new(&first);
    assert_eq!(api.get("/api/events").await.0, StatusCode::OK);
    api.create("/api/events", json!({})).await;
}

#[tokio::test]
async fn a_store_of_a_newer_format_is_refused_untouched() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    Api::new(&server).create("/api/events", json!({"name": "x"})).await;
    server.stop();
    let store = dir.path().join("storage").join("db");
    {
        let mut opts = rocksdb::Options::default();
        opts.create_missing_column_families(true);
        let cfs = rocksdb::DB::list_cf(&opts, &store).unwrap();
        let db = rocksdb::DB::open_cf(&opts, &store, &cfs).unwrap();
        db.put_cf(db.cf_handle("meta").unwrap(), b"format_version", b"99").unwrap();
    }
    let refused = Server::try_start(dir.path(), 0, &[]);
    let Err((status, log)) = refused else { panic!("a newer store must be refused") };
    assert!(!status.expect("exited").success());
    let log = log.join("\n");
    assert!(log.contains("format version 99"), "{log}");
}

#[tokio::test]
async fn sigterm_ends_open_streams_and_exits_cleanly() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    let stream = api.request(reqwest::Method::GET, "/api/bus/stream").send().await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let status = server.stop();
    assert!(status.success(), "{status}");
    drop(stream);
}
