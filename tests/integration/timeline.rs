//! Timelines: a whole-store restore starts a new one, which health, the bus, SSE, consumer
//! offsets, the worker and crash recovery all agree on.

use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{bin, data_dir, files_in, wait_for, Api, Server};
use crate::restore::unpack_in_memory;

/// The timeline health shows.
async fn timeline(api: &Api) -> Value {
    let (status, health) = api.get("/api/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    let id = health["timeline"]["id"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 26, "a ULID: {health}");
    health["timeline"].clone()
}

/// Takes a backup; returns its name, its manifest's timeline and its lastSeq.
async fn backup(server: &Server, label: &str) -> (String, String, u64) {
    let name = Api::new(server).backup(label).await["name"].as_str().unwrap().to_owned();
    let (manifest, _) = unpack_in_memory(&server.dir.join("backups").join(&name));
    let id = manifest["timeline"].as_str().unwrap_or_else(|| panic!("no timeline: {manifest}")).to_owned();
    (name, id, manifest["lastSeq"].as_u64().unwrap())
}

async fn restore(api: &Api, name: &str) -> Value {
    let (status, body) = api.post("/api/backup/restore", json!({ "backupName": name })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Waits until no undo point of a restore waits for its safety copy.
async fn undo_points_done(server: &Server) {
    let storage = server.dir.join("storage");
    wait_for(60, "the pre-restore safety copy", || {
        let done = !files_in(&storage).iter().any(|f| f.starts_with("undo-"));
        async move { done.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_hot_restore_starts_a_new_timeline_that_survives_a_restart() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    let first = timeline(&api).await;
    assert_eq!(
        (&first["reason"], &first["startSeq"], &first["history"]),
        (&json!("created"), &json!(0), &json!([]))
    );
    api.seed("old", 2).await;
    let (name, backup_timeline, backup_seq) = backup(&server, "old").await;
    assert_eq!(backup_timeline, first["id"], "the manifest names the store's timeline");
    api.seed("later", 2).await;
    let before_seq = api.get("/api/bus").await.1["lastSeq"].as_u64().unwrap();
    assert!(before_seq > backup_seq);

    let restored = restore(&api, &name).await;
    assert_eq!(restored["lastSeq"], backup_seq);
    let now = timeline(&api).await;
    assert_ne!(now["id"], first["id"], "a new timeline");
    assert_eq!(now["reason"], "restore");
    assert_eq!(now["startSeq"], backup_seq);
    assert_eq!(now["history"], json!([{"timeline": backup_timeline, "endSeq": backup_seq}]), "{now}");
    let (_, page) = api.get("/api/bus").await;
    assert_eq!((&page["timeline"], &page["lastSeq"]), (&now["id"], &json!(backup_seq)), "{page}");

    // New writes reuse the seqs the restore dropped, on the new timeline.
    let event = api.create("/api/events", json!({"name": "after-restore"})).await;
    let (_, page) = api.get(&format!("/api/bus?after={backup_seq}")).await;
    assert_eq!(page["messages"][0]["seq"], backup_seq + 1, "{page}");
    assert_eq!(page["messages"][0]["data"]["id"], event["id"]);
    assert_eq!(page["timeline"], now["id"]);
    // A backup taken now carries the new timeline.
    assert_eq!(backup(&server, "new").await.1, now["id"]);

    undo_points_done(&server).await;
    server.restart();
    let api = Api::new(&server);
    assert_eq!(timeline(&api).await, now, "the timeline is durable");
    assert_eq!(api.get("/api/bus").await.1["timeline"], now["id"]);
    let (_, page) = api.get(&format!("/api/bus?after={backup_seq}")).await;
    assert_eq!(page["messages"][0]["data"]["id"], event["id"]);
}

#[tokio::test]
async fn an_offset_read_on_a_replaced_timeline_is_refused() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("a", 1).await;
    let old = timeline(&api).await["id"].clone();
    let put = |offset: u64, timeline: Option<&Value>| {
        let body = match timeline {
            Some(t) => json!({"offset": offset, "timeline": t}),
            None => json!({"offset": offset}),
        };
        let api = api.clone();
        async move { api.call(Method::PUT, "/api/bus/consumers/mailer", Some(body)).await }
    };
    let (status, body) = put(2, Some(&old)).await;
    assert_eq!(status, StatusCode::OK, "the current timeline: {body}");
    let (name, _, _) = backup(&server, "two").await;
    api.seed("b", 1).await;
    assert_eq!(put(4, Some(&old)).await.0, StatusCode::OK);

    restore(&api, &name).await;
    let new = timeline(&api).await["id"].clone();
    assert_ne!(new, old);
    let offset = || async { api.get("/api/bus/consumers/mailer").await.1["offset"].clone() };
    assert_eq!(offset().await, 2, "the restored store holds the backup's offset");
    let (status, body) = put(3, Some(&old)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "timeline_changed", "{body}");
    assert_eq!(offset().await, 2, "the refused offset was not stored");

    let (status, body) = put(3, Some(&new)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(offset().await, 3);
    let (status, body) = put(1, None).await;
    assert_eq!(status, StatusCode::OK, "without a timeline: {body}");
    assert_eq!(offset().await, 1);
}

/// The next Server-Sent Event (name, data) of a stream, or `None` when it ended.
async fn next_event(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
) -> Option<(String, Value)> {
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let field = |name: &str| {
                block.lines().find_map(|l| l.strip_prefix(&format!("{name}:")).map(|v| v.trim().to_owned()))
            };
            if let Some(data) = field("data") {
                let name = field("event").unwrap_or_else(|| "message".into());
                return Some((name, serde_json::from_str(&data).unwrap()));
            }
        }
        let chunk =
            tokio::time::timeout(Duration::from_secs(30), body.next()).await.expect("an SSE event")?;
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
}

#[tokio::test]
async fn the_stream_names_its_timeline_and_a_restore_replaces_it() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("s", 1).await;
    let (name, _, backup_seq) = backup(&server, "one").await;
    api.seed("t", 1).await;
    let old = timeline(&api).await["id"].clone();
    let response = api.request(Method::GET, "/api/bus/stream?after=1").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (mut body, mut buffer) = (response.bytes_stream(), String::new());
    let (event, data) = next_event(&mut body, &mut buffer).await.unwrap();
    assert_eq!(event, "timeline", "{data}");
    assert_eq!(data["timeline"], old);
    assert_eq!(data["lastSeq"], api.get("/api/bus").await.1["lastSeq"]);
    let (event, data) = next_event(&mut body, &mut buffer).await.unwrap();
    assert_eq!((event.as_str(), &data["seq"]), ("message", &json!(2)), "{data}");

    restore(&api, &name).await;
    let new = timeline(&api).await["id"].clone();
    assert_ne!(new, old);
    let replaced = loop {
        match next_event(&mut body, &mut buffer).await {
            Some((event, data)) if event == "replaced" => break data,
            Some((event, data)) => assert_eq!(event, "message", "{data}"),
            None => panic!("the stream ended without a replaced event"),
        }
    };
    assert_eq!(replaced["timeline"], new, "{replaced}");
    assert_eq!(replaced["lastSeq"], backup_seq, "{replaced}");
    assert!(next_event(&mut body, &mut buffer).await.is_none(), "the stream ends after replaced");

    // A new stream starts on the new timeline.
    let response = api.request(Method::GET, "/api/bus/stream").send().await.unwrap();
    let (mut body, mut buffer) = (response.bytes_stream(), String::new());
    let (event, data) = next_event(&mut body, &mut buffer).await.unwrap();
    assert_eq!((event.as_str(), &data["timeline"]), ("timeline", &new), "{data}");
}

/// Messages the worker handled, in order.
fn handled(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn named(messages: &[Value], name: &str) -> Option<u64> {
    messages.iter().find(|m| m["data"]["name"] == name).and_then(|m| m["seq"].as_u64())
}

#[tokio::test]
async fn the_worker_handles_every_message_of_the_new_timeline() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let (out, gate, held) =
        (dir.path().join("handled.jsonl"), dir.path().join("gate"), dir.path().join("held"));
    // The handler of the message named "hold" waits for the gate: the restore lands while the
    // worker holds a message of the old timeline whose offset it has yet to commit.
    let exec = format!(
        "line=$(cat); case \"$line\" in *'\"hold\"'*) touch {held}; while [ ! -e {gate} ]; do sleep 0.05; done;; esac; \
         printf '%s\\n' \"$line\" >> {out}",
        held = held.display(),
        gate = gate.display(),
        out = out.display()
    );
    let log = dir.path().join("worker.log");
    let mut worker = Command::new(bin())
        .args(["worker", "--server", &server.base, "--consumer", "tl", "--exec", &exec])
        .env("EVENTVAULT_MAX_BACKOFF_MS", "200")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    for i in 0..3 {
        api.create("/api/events", json!({"name": format!("old-{i}")})).await;
    }
    wait_for(60, "the first three handled and committed", || async {
        let (_, c) = api.get("/api/bus/consumers/tl").await;
        (c["offset"] == 3).then_some(())
    })
    .await;
    let (name, _, backup_seq) = backup(&server, "three").await;
    assert_eq!(backup_seq, 3);
    for i in 3..6 {
        api.create("/api/events", json!({"name": format!("old-{i}")})).await;
    }
    api.create("/api/events", json!({"name": "hold"})).await;
    wait_for(60, "the worker to hold seq 7", || async { held.exists().then_some(()) }).await;

    restore(&api, &name).await;
    let new = timeline(&api).await["id"].as_str().unwrap().to_owned();
    // Seqs 4 to 8 again, with other messages; then the held message of the old log is done.
    for i in 0..5 {
        api.create("/api/events", json!({"name": format!("new-{i}")})).await;
    }
    std::fs::write(&gate, "").unwrap();
    let messages = wait_for(60, "every message of the new timeline", || async {
        let messages = handled(&out);
        (0..5).all(|i| named(&messages, &format!("new-{i}")).is_some()).then_some(messages)
    })
    .await;
    for i in 0..5 {
        assert_eq!(named(&messages, &format!("new-{i}")), Some(4 + i), "new-{i}");
    }
    for i in 3..6 {
        assert_eq!(named(&messages, &format!("old-{i}")), Some(1 + i), "old-{i} was handled first");
    }
    wait_for(30, "the final commit", || async {
        (api.get("/api/bus/consumers/tl").await.1["offset"] == 8).then_some(())
    })
    .await;
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("resyncing"), "{log}");
    assert!(log.contains(&new), "the worker followed the new timeline: {log}");
    worker.kill().unwrap();
    worker.wait().unwrap();
}

#[tokio::test]
async fn a_crash_in_the_swap_keeps_the_old_timeline_or_starts_the_marked_one() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("v1", 1).await;
    let (name, backup_timeline, backup_seq) = backup(&server, "v1").await;
    let v1 = api.snapshot().await;
    // A first restore: the live timeline is no longer the backup's.
    restore(&api, &name).await;
    for (i, point) in
        ["swap.after_marker", "swap.after_old_moved", "swap.after_new_in_place"].iter().enumerate()
    {
        let api = Api::new(&server);
        api.seed(&format!("v{}", i + 2), 1).await;
        let before = timeline(&api).await;
        let replaced = api.snapshot().await;
        undo_points_done(&server).await;
        server.kill9();
        let faults = format!("{point}=crash");
        let crashing = Server::start_with(dir.path(), server.port, &[("EVENTVAULT_FAULTS", &faults)]);
        let request = Api::new(&crashing).request(Method::POST, "/api/backup/restore");
        if let Ok(r) = request.json(&json!({ "backupName": name })).send().await {
            panic!("{point}: the process answered {}\n{}", r.status(), crashing.log());
        }
        drop(crashing);
        let marker: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("storage/SWAP")).unwrap()).unwrap();
        let marked = marker["timeline"]["id"].clone();
        server = Server::try_start(dir.path(), server.port, &[])
            .unwrap_or_else(|(s, log)| panic!("{point}: {s:?} {}", log.join("\n")));
        let api = Api::new(&server);
        let now = timeline(&api).await;
        if *point == "swap.after_marker" {
            assert_eq!(api.snapshot().await, replaced, "{point}: rolled back");
            assert_eq!(now, before, "{point}: the old timeline goes on");
            continue;
        }
        assert_eq!(api.snapshot().await, v1, "{point}: the restored data is live");
        assert_eq!(now["id"], marked, "{point}: the timeline named in the marker");
        assert_ne!(now["id"], before["id"], "{point}");
        assert_ne!(now["id"], backup_timeline.as_str(), "{point}");
        assert_eq!(now["reason"], "restore", "{point}");
        assert_eq!(now["startSeq"], backup_seq, "{point}");
        assert_eq!(
            now["history"].as_array().unwrap().last(),
            Some(&json!({"timeline": backup_timeline, "endSeq": backup_seq}))
        );
        server.restart();
        assert_eq!(timeline(&Api::new(&server)).await, now, "{point}: the same after another restart");
    }
}
