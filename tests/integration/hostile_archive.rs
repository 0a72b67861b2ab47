//! Hostile archives, one class each: overflowing sizes, FIFOs and folders in place of files,
//! sizes the tar reader and the checks read differently, header bombs, archives of tens of
//! thousands of entries, and binary garbage quoted in messages. Each is refused with a 422
//! (or filed under `failed/`) quickly, with a short message, and changes nothing.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::{data_dir, files_in, Api, Server};
use crate::restore::{drop_in, unpack_in_memory, wait_file};

/// The longest message an answer, a note or an audit entry may carry about a bad file.
const SHORT: usize = 2048;

/// One tar entry: a ustar header with `name` set raw, then `data` padded to 512 bytes.
fn entry(name: &[u8], kind: tar::EntryType, data: &[u8]) -> Vec<u8> {
    entry_sized(name, kind, data, data.len() as u64)
}

/// An entry whose header states `size`, whatever `data` holds.
fn entry_sized(name: &[u8], kind: tar::EntryType, data: &[u8], size: u64) -> Vec<u8> {
    let mut header = tar::Header::new_ustar();
    header.as_ustar_mut().unwrap().name[..name.len()].copy_from_slice(name);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(kind);
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// A PAX extended header holding one record.
fn pax(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = key.len() + value.len() + 3; // " ", "=", "\n"
    let mut len = body_len + 1;
    while len != body_len + len.to_string().len() {
        len = body_len + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    entry(b"././@PaxHeader", tar::EntryType::XHeader, &record)
}

/// Ends a tar stream and gzips it.
fn gzip_tar(mut tar: Vec<u8>) -> Vec<u8> {
    tar.extend_from_slice(&[0; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

fn manifest_entry(manifest: &Value) -> Vec<u8> {
    entry(b"manifest.json", tar::EntryType::Regular, &serde_json::to_vec(manifest).unwrap())
}

fn file_entries(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    files.iter().flat_map(|(path, data)| entry(path.as_bytes(), tar::EntryType::Regular, data)).collect()
}

/// Puts an archive into BACKUP_DIR with a matching sidecar.
fn place(backups: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(backups.join(name), bytes).unwrap();
    let sha = hex::encode(Sha256::digest(bytes));
    std::fs::write(backups.join(format!("{name}.sha256")), format!("{sha}  {name}\n")).unwrap();
}

/// A server with some data, and the manifest and files of a real archive of it.
async fn server_with_archive(dir: &Path) -> (Server, Api, Value, Vec<(String, Vec<u8>)>) {
    let server = Server::start(dir);
    let api = Api::new(&server);
    api.seed("hostile", 3).await;
    let created = api.backup("real").await;
    let name = created["name"].as_str().unwrap();
    let (manifest, files) = unpack_in_memory(&dir.join("backups").join(name));
    (server, api, manifest, files)
}

/// Every reader refuses the archive `name` in BACKUP_DIR with a short 422 naming `why`, the
/// listing shows it as damaged, and the live data is what it was.
async fn refused_everywhere(api: &Api, name: &str, why: &str) {
    refused_by_readers(api, name, why).await;
    let id = name.trim_end_matches(".tar.gz");
    let (status, body) = api.get(&format!("/api/backups/{id}")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "details of {name}: {body}");
    let (status, list) = api.get("/api/backup/list").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let listed = list["backups"].as_array().unwrap().iter().find(|b| b["name"] == name).cloned();
    let error = listed.as_ref().and_then(|b| b["error"].as_str()).unwrap_or_default().to_owned();
    assert!(error.contains(why), "the listing marks {name} as damaged: {listed:?}");
    assert!(error.len() < SHORT);
}

/// Restores, dry runs, selective restores and browsing refuse the archive `name` with a short
/// 422 naming `why`, and the live data is what it was.
async fn refused_by_readers(api: &Api, name: &str, why: &str) {
    let before = api.snapshot().await;
    let id = name.trim_end_matches(".tar.gz");
    let selective = json!({"specificCollections": ["guests"]});
    let attempts = [
        ("restore", api.post("/api/backup/restore", json!({"backupName": name})).await),
        ("dry run", api.post(&format!("/api/backups/{id}/restore"), json!({"dryRun": true})).await),
        ("selective", api.post(&format!("/api/backups/{id}/restore"), selective).await),
        ("browse", api.get(&format!("/api/backups/{id}/collections")).await),
    ];
    for (what, (status, body)) in attempts {
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what} of {name}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{what} of {name}: {message}");
        assert!(body.to_string().len() < SHORT, "{what} of {name}: a long answer");
    }
    assert_eq!(api.snapshot().await, before, "{name} changed the live data");
}

/// The server still takes backups (no operation slot is held) and serves writes.
async fn still_serving(api: &Api) {
    api.backup("after").await;
    let event = api.create("/api/events", json!({"name": "still here"})).await;
    assert!(event["id"].is_string());
}

fn no_staging_left(dir: &Path) {
    let leftovers: Vec<String> = files_in(&dir.join("storage"))
        .into_iter()
        .chain(files_in(&dir.join("backups")))
        .filter(|f| f.starts_with("staging-") || f.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "left over: {leftovers:?}");
}

#[tokio::test]
async fn sizes_that_overflow_are_refused_by_every_reader_and_at_startup() {
    let dir = data_dir();
    let (mut server, api, mut manifest, files) = server_with_archive(dir.path()).await;
    manifest["files"][0]["size"] = json!(u64::MAX);
    manifest["files"][1]["size"] = json!(2);
    let mut tar = manifest_entry(&manifest);
    tar.extend(file_entries(&files));
    let bytes = gzip_tar(tar);
    place(&dir.path().join("backups"), "overflow.tar.gz", &bytes);
    refused_everywhere(&api, "overflow.tar.gz", "add up past").await;
    still_serving(&api).await;

    // Dropped in while running: filed under failed/ with a note.
    let restore = dir.path().join("restore");
    drop_in(&restore, "overflow-live.tar.gz", &bytes);
    wait_file(restore.join("failed").join("overflow-live.tar.gz.error.txt"), 20).await;

    // Dropped in before a start: the server starts, serves the old data, files it away.
    let before = api.snapshot().await;
    server.stop();
    drop_in(&restore, "overflow-start.tar.gz", &bytes);
    server.restart();
    let api = Api::new(&server);
    assert_eq!(api.snapshot().await, before);
    assert!(restore.join("failed").join("overflow-start.tar.gz").exists());
    let note =
        std::fs::read_to_string(restore.join("failed").join("overflow-start.tar.gz.error.txt")).unwrap();
    assert!(note.contains("add up past"), "{note}");
    no_staging_left(dir.path());
}

#[tokio::test]
async fn a_fifo_or_a_folder_in_place_of_a_file_is_refused_without_waiting() {
    let dir = data_dir();
    let (server, api, _, _) = server_with_archive(dir.path()).await;
    let backups = dir.path().join("backups");
    let real = files_in(&backups).into_iter().find(|f| f.ends_with(".tar.gz")).unwrap();
    let bytes = std::fs::read(backups.join(&real)).unwrap();

    // A FIFO as the sidecar of an archive in BACKUP_DIR.
    std::fs::write(backups.join("fifo.tar.gz"), &bytes).unwrap();
    mkfifo(&backups.join("fifo.tar.gz.sha256"));
    // A reader that opened the FIFO would wait for a writer forever.
    tokio::time::timeout(Duration::from_secs(60), refused_by_readers(&api, "fifo.tar.gz", "FIFO"))
        .await
        .expect("answered without waiting for a writer");

    // A folder as the sidecar.
    std::fs::write(backups.join("folder.tar.gz"), &bytes).unwrap();
    std::fs::create_dir(backups.join("folder.tar.gz.sha256")).unwrap();
    refused_by_readers(&api, "folder.tar.gz", "folder").await;

    // A FIFO as the sidecar of a dropped archive: filed away, and the slot is free after.
    let restore = dir.path().join("restore");
    mkfifo(&restore.join("dropped.tar.gz.sha256"));
    drop_in(&restore, "dropped.tar.gz", &bytes);
    wait_file(restore.join("failed").join("dropped.tar.gz.error.txt"), 20).await;
    let note = std::fs::read_to_string(restore.join("failed").join("dropped.tar.gz.error.txt")).unwrap();
    assert!(note.contains("FIFO"), "{note}");
    tokio::time::timeout(Duration::from_secs(60), still_serving(&api))
        .await
        .expect("the operation slot is free");

    // A FIFO named like an archive is not one: neither listed as readable nor downloadable.
    mkfifo(&backups.join("pipe.tar.gz"));
    let (status, _) = api.get("/api/backups/pipe/download").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, list) = api.get("/api/backup/list").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    drop(server);
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {}", path.display());
}

#[tokio::test]
async fn extension_headers_and_size_records_are_refused() {
    let dir = data_dir();
    let (_server, api, manifest, files) = server_with_archive(dir.path()).await;
    let backups = dir.path().join("backups");
    let manifest_json = serde_json::to_vec(&manifest).unwrap();

    // A PAX `size` record that makes the manifest entry 20 MiB of JSON and spaces, behind a
    // ustar header that says a few hundred bytes.
    let pax_size = 20 << 20;
    let mut padded = manifest_json.clone();
    padded.resize(pax_size, b' ');
    let mut tar = pax("size", pax_size.to_string().as_bytes());
    tar.extend(entry_sized(b"manifest.json", tar::EntryType::Regular, &padded, 600));
    tar.extend(file_entries(&files));
    place(&backups, "paxsize.tar.gz", &gzip_tar(tar));
    refused_everywhere(&api, "paxsize.tar.gz", "extension header").await;

    // A PAX header of 30 MiB, and a GNU long name of 30 MiB, each before the manifest and
    // after it.
    let huge = vec![b'a'; 30 << 20];
    let bombs = [
        ("paxbomb", pax("path", &huge)),
        ("longname", entry(b"././@LongLink", tar::EntryType::GNULongName, &huge)),
    ];
    for (label, bomb) in &bombs {
        let mut first = bomb.clone();
        first.extend(manifest_entry(&manifest));
        first.extend(file_entries(&files));
        place(&backups, &format!("{label}-first.tar.gz"), &gzip_tar(first));
        refused_everywhere(&api, &format!("{label}-first.tar.gz"), "extension header").await;
    }
    let audit_before = std::fs::metadata(backups.join("audit.jsonl")).unwrap().len();
    for (label, bomb) in bombs {
        let mut later = manifest_entry(&manifest);
        later.extend(bomb);
        later.extend(file_entries(&files));
        let name = format!("{label}-later.tar.gz");
        place(&backups, &name, &gzip_tar(later));
        let (status, body) = api.post("/api/backup/restore", json!({"backupName": name})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body.to_string().len() < SHORT, "{name}: a long answer");
        assert!(body["error"]["message"].as_str().unwrap().contains("extension header"), "{body}");
    }
    // Each refusal adds one short line to the audit trail, not the name it quotes.
    let audit_after = std::fs::metadata(backups.join("audit.jsonl")).unwrap().len();
    assert!(audit_after - audit_before < 4 * SHORT as u64, "audit grew by {}", audit_after - audit_before);

    // A name of 30 MiB dropped in: the note in failed/ is short too.
    let restore = dir.path().join("restore");
    let mut dropped = entry(b"././@LongLink", tar::EntryType::GNULongName, &huge);
    dropped.extend(manifest_entry(&manifest));
    drop_in(&restore, "bomb.tar.gz", &gzip_tar(dropped));
    let note_path = restore.join("failed").join("bomb.tar.gz.error.txt");
    wait_file(note_path.clone(), 20).await;
    assert!(std::fs::metadata(&note_path).unwrap().len() < SHORT as u64);
    no_staging_left(dir.path());
}

#[tokio::test]
async fn a_stream_longer_than_its_manifest_allows_is_cut_off() {
    let dir = data_dir();
    let (_server, api, manifest, files) = server_with_archive(dir.path()).await;
    // The `db/` folder entry is skipped by the reader, but not its 64 MiB of data.
    let mut tar = manifest_entry(&manifest);
    tar.extend(entry(b"db/", tar::EntryType::Directory, &vec![0; 64 << 20]));
    tar.extend(file_entries(&files));
    place(&dir.path().join("backups"), "long.tar.gz", &gzip_tar(tar));
    let (status, body) = api.post("/api/backup/restore", json!({"backupName": "long.tar.gz"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("unpacks to more than"), "{body}");
    no_staging_left(dir.path());
}

#[tokio::test]
async fn archives_of_tens_of_thousands_of_entries_are_refused_quickly() {
    let dir = data_dir();
    let (_server, api, manifest, _) = server_with_archive(dir.path()).await;
    // Every file listed with its true checksum: 12,000 files are more than a store has, and
    // 50,000 more than a manifest can list.
    for (count, why) in [(12_000, "more than the 10000"), (50_000, "more than a manifest can be")] {
        let files: Vec<(String, Vec<u8>)> =
            (0..count).map(|i| (format!("db/{i:06}.sst"), vec![b'x'])).collect();
        let sha = hex::encode(Sha256::digest(b"x"));
        let mut manifest = manifest.clone();
        manifest["files"] = files
            .iter()
            .map(|(path, _)| json!({"name": path.trim_start_matches("db/"), "size": 1, "sha256": sha}))
            .collect();
        let mut tar = manifest_entry(&manifest);
        tar.extend(file_entries(&files));
        let bytes = gzip_tar(tar);
        let name = format!("many{count}.tar.gz");
        place(&dir.path().join("backups"), &name, &bytes);
        refused_everywhere(&api, &name, why).await;
        drop_in(&dir.path().join("restore"), &name, &bytes);
        wait_file(dir.path().join("restore").join("failed").join(format!("{name}.error.txt")), 20).await;
    }
    still_serving(&api).await;
    no_staging_left(dir.path());
}

#[tokio::test]
async fn binary_garbage_is_never_quoted_raw() {
    let dir = data_dir();
    let (_server, api, _, _) = server_with_archive(dir.path()).await;
    // Random bytes, gzipped: the tar reader sees garbage headers.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let random: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&random).unwrap();
    let bytes = gz.finish().unwrap();
    // And a tar whose manifest name is binary.
    let binary_name = entry(b"\x01\x02\xff\xfe\x1b[31m", tar::EntryType::Regular, b"{}");
    let cases = [("random.tar.gz", bytes), ("binary-name.tar.gz", gzip_tar(binary_name))];
    for (name, bytes) in &cases {
        place(&dir.path().join("backups"), name, bytes);
        let (status, body) = api.post("/api/backup/restore", json!({"backupName": name})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.chars().all(|c| !c.is_control() && c != '\u{fffd}'), "{name}: {message:?}");
    }
    let restore = dir.path().join("restore");
    drop_in(&restore, "binary-name.tar.gz", &cases[1].1);
    let note_path = restore.join("failed").join("binary-name.tar.gz.error.txt");
    wait_file(note_path.clone(), 20).await;
    let note = std::fs::read(&note_path).unwrap();
    let note = String::from_utf8(note).expect("the note is text");
    assert!(note.trim_end().chars().all(|c| c == '\n' || !c.is_control()), "{note:?}");
}

#[tokio::test]
async fn a_torn_or_empty_swap_marker_never_blocks_startup() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("marker", 2).await;
    let before = api.snapshot().await;
    let storage = dir.path().join("storage");
    // Each a state that a crash of a version writing the marker in place could leave, with
    // and without a staging directory beside it.
    let markers: [&[u8]; 3] = [b"", b"{\"staging\":\"staging-1-2", b"\0\0\0\0"];
    for marker in markers {
        server.stop();
        std::fs::write(storage.join("SWAP"), marker).unwrap();
        std::fs::create_dir_all(storage.join("staging-1-2")).unwrap();
        server.restart();
        let api = Api::new(&server);
        assert_eq!(api.snapshot().await, before, "marker {marker:?}");
        let left = files_in(&storage);
        assert!(!left.iter().any(|f| f == "SWAP" || f.starts_with("staging-")), "{left:?}");
    }
    // A crash after the first rename, with an unreadable marker: the old store goes back.
    server.stop();
    std::fs::rename(storage.join("db"), storage.join("db.old-20240101000000000")).unwrap();
    std::fs::write(storage.join("SWAP"), b"").unwrap();
    server.restart();
    assert_eq!(Api::new(&server).snapshot().await, before);
}

#[tokio::test]
async fn a_crash_while_the_marker_is_written_leaves_a_startable_store() {
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("old", 2).await;
    let name = api.backup("target").await["name"].as_str().unwrap().to_owned();
    api.seed("new", 1).await;
    let before = api.snapshot().await;
    let api = crate::restore::crash_during(
        &mut server,
        "swap.marker_written",
        reqwest::Method::POST,
        "/api/backup/restore",
        json!({"backupName": name}),
    )
    .await;
    assert_eq!(api.snapshot().await, before, "the restore never happened");
    let left = files_in(&dir.path().join("storage"));
    assert!(!left.iter().any(|f| f.contains("SWAP") || f.starts_with("staging-")), "{left:?}");
    // And the same restore goes through afterwards.
    let (status, body) = api.post("/api/backup/restore", json!({"backupName": name})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
