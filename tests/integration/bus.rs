//! The bus: atomic with registry changes, gap-free, SSE with resume, publish, consumers.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{data_dir, wait_for, Api, Server};

#[tokio::test]
async fn every_change_appends_its_message() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let event = api.create("/api/events", json!({"name": "E"})).await;
    let id = event["id"].as_str().unwrap();
    let record = api.create(&format!("/api/events/{id}/payments"), json!({"amount": 5})).await;
    let rid = record["id"].as_str().unwrap();
    api.call(Method::PATCH, &format!("/api/events/{id}/payments/{rid}"), Some(json!({"amount": 6}))).await;
    api.call(Method::DELETE, &format!("/api/events/{id}/payments/{rid}"), None).await;
    api.call(Method::DELETE, &format!("/api/events/{id}"), None).await;

    let messages = api.all_messages().await;
    let types: Vec<_> = messages.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["event.created", "record.created", "record.updated", "record.deleted", "event.deleted"]
    );
    assert!(messages.iter().all(|m| m["topic"] == "registry" && m["eventId"] == id));
    assert_eq!(messages[0]["data"], event);
    assert_eq!(messages[1]["collection"], "payments");
    assert_eq!(messages[1]["recordId"], rid);
    assert!(messages[0]["ts"].as_str().unwrap().ends_with('Z'));
    let (_, page) = api.get("/api/bus?after=3").await;
    assert_eq!(page["lastSeq"], 5);
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn injected_commit_failure_leaves_neither_change_nor_message() {
    let dir = data_dir();
    let mut server = Server::start_with(dir.path(), 0, &[("EVENTVAULT_FAULTS", "store.before_commit=error")]);
    let api = Api::new(&server);
    let (status, body) = api.post("/api/events", json!({"name": "never"})).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["code"], "internal");
    assert!(!body.to_string().contains("injected"), "5xx details stay in the log: {body}");
    // The log is read by another thread of the test: the line may arrive just after the answer.
    wait_for(5, "the injected fault in the log", || async {
        server.log().contains("injected fault at store.before_commit").then_some(())
    })
    .await;
    // The server still serves, and neither the event nor its message exists.
    let (status, list) = api.get("/api/events").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"], json!([]));
    let (_, page) = api.get("/api/bus").await;
    assert_eq!((&page["messages"], &page["lastSeq"]), (&json!([]), &json!(0)), "{page}");

    // A crash at the same point: after a restart there is neither, and seq starts at 1.
    server.stop();
    let mut crashing =
        Server::start_with(dir.path(), 0, &[("EVENTVAULT_FAULTS", "store.before_commit=crash")]);
    let crash_api = Api::new(&crashing);
    let sent = crash_api.request(Method::POST, "/api/events").json(&json!({"name": "never"})).send().await;
    assert!(sent.is_err(), "the process aborted mid-request");
    crashing.kill9();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    assert_eq!(api.get("/api/events").await.1["items"], json!([]));
    api.create("/api/events", json!({"name": "real"})).await;
    let messages = api.all_messages().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["seq"], 1);
}

#[tokio::test]
async fn seq_is_gap_free_under_32_concurrent_writers() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let event = api.create("/api/events", json!({"name": "load"})).await;
    let id = event["id"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for w in 0..32 {
        let api = api.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..15 {
                if i % 5 == 0 {
                    let (s, _) =
                        api.post(&format!("/api/bus/writer-{w}"), json!({"type": "tick", "data": i})).await;
                    assert_eq!(s, StatusCode::CREATED);
                } else {
                    api.create(&format!("/api/events/{id}/registrations"), json!({"w": w, "i": i})).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let messages = api.all_messages().await;
    let seqs: Vec<u64> = messages.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (1..=1 + 32 * 15).collect();
    assert_eq!(seqs, expected);
    let (_, health) = api.get("/api/health").await;
    assert_eq!(health["store"]["lastSeq"], 1 + 32 * 15);
}

#[tokio::test]
async fn publish_read_by_topic_and_consumer_offsets() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    api.create("/api/events", json!({"name": "E"})).await;
    let published = api.create("/api/bus/emails", json!({"type": "email.sent", "data": {"to": "x"}})).await;
    assert_eq!(published["seq"], 2);
    assert_eq!(published["topic"], "emails");
    api.create("/api/bus/sms", json!({"type": "sms.sent"})).await;
    api.create("/api/bus/emails", json!({"type": "email.sent", "data": 2})).await;

    let (_, emails) = api.get("/api/bus?topic=emails").await;
    let seqs: Vec<_> = emails["messages"].as_array().unwrap().iter().map(|m| m["seq"].clone()).collect();
    assert_eq!(seqs, [json!(2), json!(4)]);
    assert_eq!(emails["lastSeq"], 4);
    let (_, after) = api.get("/api/bus?topic=emails&after=2").await;
    assert_eq!(after["messages"].as_array().unwrap().len(), 1);
    let (_, registry) = api.get("/api/bus?topic=registry&limit=1").await;
    assert_eq!(registry["messages"][0]["type"], "event.created");

    assert_eq!(api.get("/api/bus/consumers/billing").await.0, StatusCode::NOT_FOUND);
    let (status, c) = api.call(Method::PUT, "/api/bus/consumers/billing", Some(json!({"offset": 3}))).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    let (_, c) = api.get("/api/bus/consumers/billing").await;
    assert_eq!(c["offset"], 3);
    assert_eq!(c["name"], "billing");
}

/// Reads SSE events from a response until `n` message events arrived.
async fn read_events(response: reqwest::Response, n: usize) -> Vec<(String, Value)> {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("an SSE event within 10 s")
            .expect("stream open")
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let field = |name: &str| {
                block.lines().find_map(|l| l.strip_prefix(&format!("{name}:")).map(|v| v.trim().to_owned()))
            };
            if let (Some(id), Some(data)) = (field("id"), field("data")) {
                events.push((id, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

#[tokio::test]
async fn sse_resumes_from_last_event_id_and_follows_new_messages() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    for i in 0..5 {
        api.create("/api/events", json!({"n": i})).await;
    }
    let response = api
        .request(Method::GET, "/api/bus/stream?after=1")
        .header("Last-Event-ID", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let writer = api.clone();
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer.create("/api/events", json!({"n": "late"})).await;
    });
    let events = read_events(response, 3).await;
    late.await.unwrap();
    let ids: Vec<_> = events.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["4", "5", "6"], "Last-Event-ID wins over ?after");
    assert_eq!(events[2].1["data"]["n"], "late");

    // Topic-filtered streams skip other topics.
    api.create("/api/bus/alerts", json!({"type": "a"})).await;
    let response = api.request(Method::GET, "/api/bus/stream?topic=alerts").send().await.unwrap();
    let events = read_events(response, 1).await;
    assert_eq!(events[0].0, "7");
}
