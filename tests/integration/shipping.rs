//! Log shipping's own guarantees: small segments are merged into one that restores the same,
//! and an idle server sends nothing.

use serde_json::{json, Value};

use crate::common::{command, data_dir, wait_for, Api, Server};

/// The segment files of the one timeline of a folder repository, as (first, last) seqs.
fn segments(repo: &std::path::Path) -> Vec<(u64, u64)> {
    let mut found = Vec::new();
    for timeline in std::fs::read_dir(repo.join("log")).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(timeline.path()).into_iter().flatten().flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if let Some((first, last)) = name.strip_suffix(".seg").and_then(|n| n.split_once('-')) {
                found.push((first.parse().unwrap(), last.parse().unwrap()));
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn small_segments_are_merged_and_a_restore_reads_the_merged_one() {
    let dir = data_dir();
    let repo = dir.path().join("repo");
    let url = format!("file://{}", repo.display());
    let env = [("BACKUP_REPO", url.as_str()), ("SHIP_INTERVAL_MS", "20")];
    let server = Server::start_with(dir.path(), 0, &env);
    let api = Api::new(&server);
    api.create("/api/events", json!({"name": "base"})).await;
    api.backup("base").await;
    // One write per shipping round: a small segment each.
    for i in 0..40 {
        api.create("/api/events", json!({"name": format!("e{i}")})).await;
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    }
    let last_seq = api.get("/api/health").await.1["store"]["lastSeq"].as_u64().unwrap();
    wait_for(30, "every write shipped", || async {
        let (_, health) = api.get("/api/health").await;
        (health["ship"]["lastShippedSeq"].as_u64() == Some(last_seq)).then_some(())
    })
    .await;
    // 32 small segments in a row became one; what is left covers every seq once.
    let found = wait_for(30, "a merged segment", || async {
        let found = segments(&repo);
        found.iter().any(|(first, last)| last - first + 1 >= 32).then_some(found)
    })
    .await;
    assert!(found.len() < 40, "{found:?}");
    let mut next = 1;
    for (first, last) in &found {
        assert_eq!(*first, next, "segments {found:?} cover every seq once");
        next = last + 1;
    }
    assert_eq!(next, last_seq + 1, "{found:?}");
    let before = api.snapshot().await;
    drop(server);

    // A fresh machine, to the last seq: the same data, messages included.
    let fresh = data_dir();
    let out =
        command(fresh.path(), "restore", &["--from", &url, "--seq", &last_seq.to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["messagesReplayed"], last_seq - 1, "{report}");
    assert_eq!(report["segmentsRead"], found.len(), "the merged segment, not its parts: {report}");
    let server = Server::start(fresh.path());
    assert_eq!(Api::new(&server).snapshot().await, before);
}

#[tokio::test]
async fn an_idle_server_ships_nothing() {
    let dir = data_dir();
    let repo = dir.path().join("repo");
    let url = format!("file://{}", repo.display());
    let server =
        Server::start_with(dir.path(), 0, &[("BACKUP_REPO", url.as_str()), ("SHIP_INTERVAL_MS", "50")]);
    let api = Api::new(&server);
    api.create("/api/events", json!({"name": "one"})).await;
    wait_for(30, "the write shipped", || async {
        let (_, health) = api.get("/api/health").await;
        (health["ship"]["lastShippedSeq"].as_u64() == Some(1)).then_some(())
    })
    .await;
    let shipped = api.get("/api/health").await.1["ship"]["segmentsShipped"].clone();
    let files = segments(&repo);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(api.get("/api/health").await.1["ship"]["segmentsShipped"], shipped);
    assert_eq!(segments(&repo), files);
}
