//! A full disk for real (issue 9): BACKUP_DIR or STORAGE_DIR on a small tmpfs that the test
//! mounts, fills with a filler file, frees and unmounts. Where mounting is not allowed (not
//! root, no CAP_SYS_ADMIN), each test prints why it is skipped and passes.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Digest;

use crate::common::{backup_cli, data_dir, files_in, wait_for, Api, Server};
use crate::event_backup::event_dir;

/// The page size of tmpfs: files take whole pages.
const PAGE: u64 = 4096;

/// A tmpfs mounted for one test, unmounted on drop, even when the test fails. The unmount is
/// lazy (`umount -l`) so a file still open in a dying server cannot keep it mounted.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `kib` KiB on `path` (created if missing), or prints why the test is
    /// skipped and returns `None`.
    fn mount(path: &Path, kib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k,mode=0755"), "tmpfs"])
            .arg(path)
            .output();
        let why = match out {
            Ok(out) if out.status.success() => return Some(Tmpfs(path.to_owned())),
            Ok(out) => format!("{} {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
            Err(e) => e.to_string(),
        };
        println!("skipped: cannot mount a tmpfs here: {why}");
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Bytes free on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path and a zeroed out-parameter of the right type.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut stat) }, 0, "statvfs {}", dir.display());
    stat.f_bavail as u64 * stat.f_frsize as u64
}

/// Fills the filesystem of `dir` with `dir/filler`, then gives `leave` bytes (whole pages) of
/// it back, so that exactly `leave` bytes are free. Returns the filler's path.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    assert_eq!(leave % PAGE, 0, "whole pages");
    let path = dir.join("filler");
    let mut file = OpenOptions::new().create(true).append(true).open(&path).unwrap();
    let chunk = vec![0xa5u8; 64 << 10];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("writing {}: {e}", path.display()),
        }
    }
    let len = file.metadata().unwrap().len();
    assert!(len >= leave, "the filler ({len} bytes) cannot give back {leave} bytes");
    file.set_len(len - leave).unwrap();
    drop(file);
    assert_eq!(free_bytes(dir), leave, "free space of {} after filling it", dir.display());
    path
}

/// Text that no compressor shrinks much: hex of a SHA-256 chain seeded by `seed`.
fn noise(seed: &str, len: usize) -> String {
    let mut out = String::with_capacity(len + 64);
    let mut state = sha2::Sha256::digest(seed.as_bytes());
    while out.len() < len {
        out.push_str(&hex::encode(state));
        state = sha2::Sha256::digest(state);
    }
    out.truncate(len);
    out
}

/// An event whose guests hold about `bytes` of incompressible text; returns its id.
async fn bulky_event(api: &Api, name: &str, bytes: usize) -> String {
    let event = api.create("/api/events", json!({"name": name})).await;
    let id = event["id"].as_str().unwrap().to_owned();
    let per_record = 8 << 10;
    let records: Vec<Value> = (0..bytes.div_ceil(per_record))
        .map(|i| json!({"guest": i, "notes": noise(&format!("{name}-{i}"), per_record)}))
        .collect();
    for batch in records.chunks(64) {
        api.create(&format!("/api/events/{id}/guests/_batch"), Value::Array(batch.to_vec())).await;
    }
    id
}

/// The backup files of `dir` (archives, sidecars, temp files), without the audit trail, the
/// event backup folder and the test's filler.
fn backup_files(dir: &Path) -> Vec<String> {
    files_in(dir)
        .into_iter()
        .filter(|f| !["audit.jsonl", "event_deletions", "filler"].contains(&f.as_str()))
        .collect()
}

/// Names of the archives `GET /api/backup/list` shows.
async fn listed(api: &Api) -> Vec<String> {
    let (status, list) = api.get("/api/backup/list").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["backups"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap().to_owned()).collect()
}

/// `GET /api/health`.
async fn health(api: &Api) -> Value {
    let (status, health) = api.get("/api/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    health
}

/// Asserts a 507 with the API's error shape and `code`.
fn assert_disk_full(status: StatusCode, answer: &Value, code: &str, what: &str) {
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{what}: {answer}");
    assert_eq!(answer["error"]["code"], code, "{what}: {answer}");
    assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {answer}");
}

/// `eventvault backup verify NAME` succeeds.
fn assert_verifies(dir: &Path, name: &str) {
    let out = backup_cli(dir, &["verify", name]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("OK"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_full_backup_disk_answers_507_and_the_next_backup_succeeds_once_space_is_freed() {
    let dir = data_dir();
    let backups = dir.path().join("backups");
    let Some(_mount) = Tmpfs::mount(&backups, 8 << 10) else { return };
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("small", 2).await;
    let bulky = bulky_event(&api, "bulky", 600 << 10).await;
    let first = api.backup("first").await["name"].as_str().unwrap().to_owned();
    let first_files = vec![first.clone(), format!("{first}.sha256")];
    assert_eq!(health(&api).await["status"], "ok");

    // Leave 64 KiB: the audit trail still fits, an archive of this store does not.
    let filler = fill(&backups, 64 << 10);
    let before = api.snapshot().await;

    // A backup meets the full disk while it writes the archive.
    let (status, answer) = api.post("/api/backup/create", json!({"label": "no-room"})).await;
    assert_disk_full(status, &answer, "disk_full", "POST /api/backup/create");
    assert_eq!(answer["error"]["message"], "not enough disk space; the live data is unchanged");
    assert_eq!(backup_files(&backups), first_files, "no temp file, half archive or orphan sidecar");
    assert_eq!(listed(&api).await, [first.as_str()]);

    // An event whose backup does not fit is not deleted; an on-demand backup fails alike.
    let (status, answer) = api.call(Method::DELETE, &format!("/api/events/{bulky}"), None).await;
    assert_disk_full(status, &answer, "backup_failed", "DELETE the event");
    assert!(answer["error"]["message"].as_str().unwrap().contains("not deleted"), "{answer}");
    let (status, answer) = api.call(Method::POST, &format!("/api/events/{bulky}/backup"), None).await;
    assert_disk_full(status, &answer, "disk_full", "POST /api/events/{id}/backup");
    assert_eq!(files_in(&event_dir(dir.path())), Vec::<String>::new(), "no event backup, whole or partial");

    // A restore unpacks into STORAGE_DIR, which has room, but its pre-restore backup does not fit.
    let (status, answer) = api.post("/api/backup/restore", json!({"backupName": first})).await;
    assert_disk_full(status, &answer, "disk_full", "a restore whose pre-restore backup does not fit");
    assert_eq!(backup_files(&backups), first_files, "no pre-restore archive, whole or partial");
    assert_eq!(files_in(&dir.path().join("storage")), ["db", "eventvault.lock"], "no staging left");

    // Nothing changed, reads and writes go on, and the health check says what is wrong.
    assert_eq!(api.snapshot().await, before);
    let written = api.create("/api/events", json!({"name": "written on a full backup disk"})).await;
    let (status, _) = api.get(&format!("/api/events/{}", written["id"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK);
    let sick = health(&api).await;
    assert_eq!(sick["status"], "degraded", "{sick}");
    assert_eq!(sick["backup"]["lowSpace"], true, "{sick}");
    assert!(
        sick["backup"]["lastError"].as_str().unwrap_or_default().contains("not enough disk space"),
        "{sick}"
    );

    // Space is freed: the next backup, and the deletion, go through.
    std::fs::remove_file(&filler).unwrap();
    let second = api.backup("second").await["name"].as_str().unwrap().to_owned();
    assert_eq!(listed(&api).await, [second.as_str(), first.as_str()]);
    assert_verifies(dir.path(), &second);
    let (status, deleted) = api.call(Method::DELETE, &format!("/api/events/{bulky}"), None).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    let event_backup = format!("{}.json.gz", deleted["backup"]["id"].as_str().unwrap());
    assert_eq!(files_in(&event_dir(dir.path())), [event_backup.clone(), format!("{event_backup}.sha256")]);
    let well = health(&api).await;
    assert_eq!(well["status"], "ok", "{well}");
    assert_eq!(well["backup"]["lastError"], Value::Null, "{well}");
}

/// Size of a STORAGE_DIR tmpfs: 70 MiB. Once a write has failed for want of space, RocksDB
/// accepts writes again only when one write buffer (64 MiB) is free, and the health check
/// wants as much. Below 70.4 MiB, RocksDB's preallocation of its write-ahead log (1.1 write
/// buffers) fails, so the log grows page by page and a full disk stops the next write.
const STORAGE_KIB: u64 = 70 << 10;

/// Sizes of the files an archive unpacks, from its manifest.
async fn archived_sizes(api: &Api, name: &str) -> Vec<u64> {
    let (status, manifest) = api.get(&format!("/api/backups/{name}")).await;
    assert_eq!(status, StatusCode::OK, "{manifest}");
    manifest["files"].as_array().unwrap().iter().map(|f| f["size"].as_u64().unwrap()).collect()
}

/// What STORAGE_DIR holds besides the store: nothing of a restore may be left there.
fn storage_extras(storage: &Path) -> Vec<String> {
    files_in(storage)
        .into_iter()
        .filter(|f| !["db", "eventvault.lock", "filler"].contains(&f.as_str()))
        .collect()
}

#[tokio::test]
async fn a_restore_that_does_not_fit_in_storage_changes_nothing_and_succeeds_once_space_is_freed() {
    let dir = data_dir();
    let storage = dir.path().join("storage");
    let Some(_mount) = Tmpfs::mount(&storage, STORAGE_KIB) else { return };

    // The archive holds a bigger store, written by another server on an ordinary disk.
    let source_dir = data_dir();
    let (archive, restored) = {
        let source = Server::start(source_dir.path());
        let api = Api::new(&source);
        api.seed("archived", 2).await;
        bulky_event(&api, "archived-bulk", 768 << 10).await;
        let name = api.backup("bigger").await["name"].as_str().unwrap().to_owned();
        (name, api.snapshot().await)
    };
    let backups = dir.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    for file in [archive.clone(), format!("{archive}.sha256")] {
        std::fs::copy(source_dir.path().join("backups").join(&file), backups.join(&file)).unwrap();
    }

    let server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("live", 2).await;
    let before = api.snapshot().await;
    let sizes = archived_sizes(&api, &archive).await;
    let bytes: u64 = sizes.iter().sum();
    let pages: u64 = sizes.iter().map(|s| s.div_ceil(PAGE) * PAGE).sum();
    let restore = || api.post("/api/backup/restore", json!({"backupName": archive}));

    // 1. Less room than the files add up to: a full disk, before anything is unpacked.
    let filler = fill(&storage, (bytes - 1) / PAGE * PAGE);
    let (status, answer) = restore().await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{answer}");
    assert_eq!(answer["error"]["code"], "disk_full", "{answer}");
    assert_eq!(storage_extras(&storage), Vec::<String>::new(), "nothing staged");
    assert_eq!(api.snapshot().await, before);

    // 2. Room for the bytes but not for the pages they take: the unpack meets the full disk.
    std::fs::remove_file(&filler).unwrap();
    let room = bytes.div_ceil(PAGE) * PAGE;
    assert!(
        room < pages,
        "the archive's files waste less than a page in all ({bytes} B in {pages} B of pages)"
    );
    let filler = fill(&storage, room);
    let (status, answer) = restore().await;
    assert_disk_full(status, &answer, "disk_full", "a restore whose unpack meets a full disk");
    assert_eq!(storage_extras(&storage), Vec::<String>::new(), "no staging left");
    assert_eq!(api.snapshot().await, before);
    let sick = health(&api).await;
    assert_eq!(sick["status"], "degraded", "{sick}");
    assert_eq!(sick["store"]["lowSpace"], true, "{sick}");

    // 3. Room for the staged store and nothing more: the restore needs no checkpoint of the
    // live store (the replaced store is its undo point), so it goes through, and the
    // pre-restore backup is written from the undo point into BACKUP_DIR, which has room.
    std::fs::remove_file(&filler).unwrap();
    let filler = fill(&storage, pages);
    let (status, done) = restore().await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(api.snapshot().await, restored);
    let pre = done["preRestoreBackup"].as_str().unwrap().to_owned();
    wait_for(60, "the pre-restore backup, and its undo point gone", || {
        let done = storage_extras(&storage).is_empty() && dir.path().join("backups").join(&pre).is_file();
        async move { done.then_some(()) }
    })
    .await;
    assert_verifies(dir.path(), &pre);
    std::fs::remove_file(&filler).unwrap();
    wait_for(60, "health to be ok again", || async {
        let (_, health) = api.get("/api/health").await;
        (health["status"] == "ok").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_write_on_a_full_storage_disk_is_refused_and_nothing_acknowledged_is_lost() {
    let dir = data_dir();
    let storage = dir.path().join("storage");
    let Some(_mount) = Tmpfs::mount(&storage, STORAGE_KIB) else { return };
    let mut server = Server::start(dir.path());
    let api = Api::new(&server);
    api.seed("kept", 2).await;
    let before = api.snapshot().await;
    let event = before["events"][0]["id"].as_str().unwrap().to_owned();

    // A batch far bigger than what is left of the WAL's last page.
    let filler = fill(&storage, 0);
    let batch: Vec<Value> = (0..32).map(|i| json!({"notes": noise(&format!("lost-{i}"), 8 << 10)})).collect();
    let (status, answer) = api.post(&format!("/api/events/{event}/guests/_batch"), Value::Array(batch)).await;
    assert_disk_full(status, &answer, "disk_full", "a write on a full STORAGE_DIR");

    // Reads go on, unchanged, and the health check says what is wrong.
    assert_eq!(api.snapshot().await, before);
    let sick = health(&api).await;
    assert_eq!(sick["status"], "degraded", "{sick}");
    assert_eq!(sick["store"]["lowSpace"], true, "{sick}");

    // Space is freed: writes resume without a restart, the refused batch is not there, and a
    // kill -9 loses nothing that was acknowledged.
    std::fs::remove_file(&filler).unwrap();
    let later = wait_for(60, "writes to be accepted again", || async {
        let (status, body) = api.post("/api/events", json!({"name": "after the full disk"})).await;
        (status == StatusCode::CREATED).then_some(body)
    })
    .await;
    assert_eq!(health(&api).await["status"], "ok");
    let expected = api.snapshot().await;
    let mut events = before["events"].as_array().unwrap().clone();
    events.push(later);
    assert_eq!(expected["events"], Value::Array(events));
    let guests = format!("{event}/guests");
    assert_eq!(expected["records"][&guests], before["records"][&guests]);
    assert_eq!(
        expected["messages"].as_array().unwrap().len(),
        before["messages"].as_array().unwrap().len() + 1
    );
    server.restart();
    assert_eq!(Api::new(&server).snapshot().await, expected);
}
