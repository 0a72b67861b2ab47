//! A warm standby (`eventvault standby --from URL`): it restores the newest backup of the
//! primary's repository (a folder, or a real S3 server: rclone's), follows the log the primary
//! ships there within two seconds, serves reads and refuses writes naming the primary, follows
//! a hot restore that branches where it is and stops at one behind it, and becomes a primary
//! when promoted, through the API or `eventvault promote` (online or offline).

use std::net::TcpListener;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::common::s3::{as_strs, assert_ok, S3Server};
use crate::common::{command, data_dir, wait_for, Api, Server};
use crate::repo::repo_copy;

/// SHIP_INTERVAL_MS of the primary (and of a promoted standby).
const SHIP_MS: &str = "200";
const TOKEN: &str = "standby-admin-token-0123456789";

/// A port that was free a moment ago: the primary's address is known before it starts.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn standby_args(url: &str) -> Vec<String> {
    ["standby", "--from", url].map(String::from).to_vec()
}

/// Asserts that starting a server failed; returns its exit status and log.
fn refused(started: Result<Server, (Option<ExitStatus>, Vec<String>)>) -> (ExitStatus, String) {
    match started {
        Ok(server) => panic!("the server started:\n{}", server.log()),
        Err((status, log)) => (status.expect("exited, not hung"), log.join("\n")),
    }
}

async fn health(api: &Api) -> Value {
    let (status, health) = api.get("/api/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    health
}

/// Waits until the primary shipped every write; returns its lastSeq.
async fn shipped(primary: &Api) -> u64 {
    wait_for(60, "the primary to ship every write", || async {
        let h = health(primary).await;
        let last = h["store"]["lastSeq"].as_u64().unwrap();
        (h["ship"]["lastShippedSeq"].as_u64() == Some(last) && h["ship"]["timeline"] == h["timeline"]["id"])
            .then_some(last)
    })
    .await
}

/// A primary shipping to a repository, and a standby following it.
struct Pair {
    url: String,
    /// How the repository is reached (S3 variables; nothing for a folder).
    access: Vec<(String, String)>,
    primary: Server,
    standby: Server,
    p: Api,
    s: Api,
    _dirs: (TempDir, TempDir),
    _s3: Option<S3Server>,
}

impl Pair {
    /// A primary on a known port shipping to S3 or a folder, with two events and a backup,
    /// and a standby of it (with `standby_env` too, and the token of its ADMIN_TOKEN) that
    /// caught up.
    async fn start(s3: bool, standby_env: &[(&str, &str)]) -> Pair {
        let (pdir, sdir) = (data_dir(), data_dir());
        let (url, access, s3) = match s3 {
            true => {
                let s3 = S3Server::start();
                s3.create_bucket("eventvault");
                ("s3://eventvault/standby".to_owned(), s3.env(), Some(s3))
            }
            false => (format!("file://{}", pdir.path().join("repo").display()), Vec::new(), None),
        };
        let mut env = access.clone();
        env.extend(owned(&[("BACKUP_REPO", &url), ("SHIP_INTERVAL_MS", SHIP_MS)]));
        let primary = Server::start_with(pdir.path(), free_port(), &as_strs(&env));
        let p = Api::new(&primary);
        p.seed("base", 2).await;
        repo_copy(&p.backup("base").await);
        let mut env = access.clone();
        env.extend(owned(&[("SHIP_INTERVAL_MS", SHIP_MS)]));
        env.extend(owned(standby_env));
        let standby = Server::try_start_args(sdir.path(), &standby_args(&url), 0, &env)
            .unwrap_or_else(|(s, log)| panic!("the standby did not start ({s:?}):\n{}", log.join("\n")));
        let s = match standby_env.iter().find(|(k, _)| *k == "ADMIN_TOKEN") {
            Some((_, token)) => Api::new(&standby).with_token(token),
            None => Api::new(&standby),
        };
        let pair = Pair { url, access, primary, standby, p, s, _dirs: (pdir, sdir), _s3: s3 };
        pair.caught_up().await;
        pair
    }

    /// Waits until the standby applied every write of the primary; returns the seq.
    async fn caught_up(&self) -> u64 {
        let seq = shipped(&self.p).await;
        wait_for(60, "the standby to apply every shipped write", || async {
            let h = health(&self.s).await;
            (h["standby"]["appliedSeq"].as_u64() == Some(seq)).then_some(())
        })
        .await;
        seq
    }

    fn marker(&self) -> std::path::PathBuf {
        self.standby.dir.join("storage/STANDBY")
    }

    /// The primary's listening address, as a standby names it.
    fn primary_addr(&self) -> String {
        format!("127.0.0.1:{}", self.primary.port)
    }

    /// Checks a promotion's answer and what follows it: a "promote" timeline, no standby
    /// section, no marker, writes accepted, and the old primary's writes not applied.
    async fn check_promoted(&self, answer: &Value, applied: u64) {
        assert_eq!(answer["promoted"], true, "{answer}");
        assert_eq!(
            (&answer["followed"], &answer["lastSeq"]),
            (&json!(self.url), &json!(applied)),
            "{answer}"
        );
        assert_eq!(answer["timeline"]["reason"], "promote", "{answer}");
        let h = health(&self.s).await;
        assert_eq!(h["timeline"], answer["timeline"], "{h}");
        assert_eq!(h["timeline"]["startSeq"], applied, "{h}");
        assert!(h["standby"].is_null(), "{h}");
        assert!(!self.marker().exists(), "the STANDBY marker is removed");
        self.s.create("/api/events", json!({"name": "written-after-promotion"})).await;
        let promoted = health(&self.s).await;
        assert_eq!(promoted["status"], "ok", "{promoted}");
        assert_eq!(promoted["store"]["lastSeq"].as_u64(), Some(applied + 1), "{promoted}");

        // The old primary goes on shipping to the same repository; none of it is applied.
        let old = self.p.create("/api/events", json!({"name": "old-primary-after-promotion"})).await;
        shipped(&self.p).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (status, body) = self.s.get(&format!("/api/events/{}", old["id"].as_str().unwrap())).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(health(&self.s).await["store"]["lastSeq"], applied + 1);
    }
}

/// Polls the standby for `path` from the moment the primary acknowledged its write; returns
/// how long after that acknowledgment it was readable.
async fn readable_after(standby: Api, path: String, acked: Instant) -> Duration {
    loop {
        let (status, body) = standby.get(&path).await;
        if status == StatusCode::OK {
            return acked.elapsed();
        }
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(acked.elapsed() < Duration::from_secs(60), "{path} never reached the standby");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes events, each with a registration, steadily to the primary for `secs` seconds;
/// every third write is timed until the standby reads it. Returns the lags.
async fn write_steadily(primary: &Api, standby: &Api, secs: u64) -> Vec<Duration> {
    let (mut probes, mut writes) = (Vec::new(), 0);
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        let event = primary.create("/api/events", json!({"name": format!("load-{writes}")})).await;
        let id = event["id"].as_str().unwrap();
        let mut paths = vec![(format!("/api/events/{id}"), Instant::now())];
        let record = primary.create(&format!("/api/events/{id}/guests"), json!({"n": writes})).await;
        paths.push((format!("/api/events/{id}/guests/{}", record["id"].as_str().unwrap()), Instant::now()));
        for (path, acked) in paths {
            writes += 1;
            if writes % 3 == 0 {
                probes.push(tokio::spawn(readable_after(standby.clone(), path, acked)));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut lags = Vec::new();
    for probe in probes {
        lags.push(probe.await.unwrap());
    }
    eprintln!("{writes} writes in {secs} s, {} of them timed", lags.len());
    lags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_follows_a_primary_on_s3_under_load_within_two_seconds() {
    let pair = Pair::start(true, &[]).await;
    let (h, primary) = (health(&pair.s).await, health(&pair.p).await);
    assert_eq!(h["status"], "ok", "{h}");
    assert!(h["ship"].is_null(), "a standby ships nothing: {h}");
    let section = &h["standby"];
    assert_eq!(section["following"], pair.url.as_str(), "{h}");
    assert_eq!(section["timeline"], primary["timeline"]["id"], "the primary's timeline: {h}");
    assert_eq!(h["timeline"]["id"], primary["timeline"]["id"], "{h}");
    assert!(section["lastError"].is_null() && section["diverged"].is_null(), "{h}");

    // What health says meanwhile: the standby is current, so its lag stays small.
    let sampler = {
        let standby = pair.s.clone();
        tokio::spawn(async move {
            let mut said = Vec::new();
            let until = std::time::Instant::now() + Duration::from_secs(6);
            while std::time::Instant::now() < until {
                let h = health(&standby).await;
                said.push((h["standby"]["lagSeconds"].as_f64().unwrap_or(f64::MAX), h["status"].clone()));
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            said
        })
    };
    let mut lags = write_steadily(&pair.p, &pair.s, 6).await;
    let said = sampler.await.unwrap();
    assert!(said.iter().all(|(lag, status)| *lag < 2.0 && status == "ok"), "health under load: {said:?}");
    assert!(lags.len() >= 20, "only {} writes were timed", lags.len());
    lags.sort();
    let ms = |d: &Duration| d.as_millis();
    let max = *lags.last().unwrap();
    eprintln!(
        "standby lag over {} writes (ack on the primary to readable on the standby): min {} ms, \
         median {} ms, p95 {} ms, max {} ms",
        lags.len(),
        ms(&lags[0]),
        ms(&lags[lags.len() / 2]),
        ms(&lags[lags.len() * 95 / 100]),
        ms(&max)
    );
    assert!(max < Duration::from_secs(2), "the standby lagged {max:?} behind the primary");

    let seq = pair.caught_up().await;
    let h = health(&pair.s).await;
    assert_eq!(h["standby"]["appliedSeq"], health(&pair.p).await["store"]["lastSeq"], "{h}");
    assert_eq!((&h["standby"]["shippedSeq"], &h["store"]["lastSeq"]), (&json!(seq), &json!(seq)), "{h}");
    assert_eq!(h["status"], "ok", "{h}");
    assert!(h["standby"]["primary"].as_str().unwrap().contains(&pair.primary_addr()), "{h}");
    assert_eq!(pair.s.snapshot().await, pair.p.snapshot().await, "the standby holds the primary's data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_refuses_writes_naming_its_primary_until_promoted_through_the_api() {
    let mut pair = Pair::start(false, &[]).await;
    // The standby learns the primary's name from the segments it applies.
    pair.p.seed("shipped", 1).await;
    let applied = pair.caught_up().await;
    let before = pair.s.snapshot().await;
    let id = before["events"][0]["id"].as_str().unwrap().to_owned();
    let (event, record) = (format!("/api/events/{id}"), format!("/api/events/{id}/guests"));
    let writes = [
        (Method::POST, "/api/events".to_owned(), Some(json!({"name": "refused"}))),
        (Method::PUT, event.clone(), Some(json!({"name": "refused"}))),
        (Method::PATCH, event.clone(), Some(json!({"name": "refused"}))),
        (Method::DELETE, event, None),
        (Method::POST, record.clone(), Some(json!({"n": 1}))),
        (Method::POST, format!("{record}/_batch"), Some(json!([{"n": 1}]))),
        (Method::PUT, "/api/bus/consumers/mailer".to_owned(), Some(json!({"offset": 1}))),
        (Method::POST, "/api/backup/create".to_owned(), Some(json!({"label": "refused"}))),
    ];
    for (method, path, body) in writes {
        let (status, answer) = pair.s.call(method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], "standby", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(&pair.primary_addr()), "{method} {path}: {message}");
        assert!(message.contains(&pair.url), "{message}");
    }
    assert_eq!(pair.s.snapshot().await, before, "the refused writes changed nothing");
    assert_eq!(health(&pair.s).await["standby"]["appliedSeq"], applied);

    // Promotion is for standbys only.
    let (status, answer) = pair.p.post("/api/standby/promote", json!({})).await;
    assert_eq!((status, &answer["error"]["code"]), (StatusCode::BAD_REQUEST, &json!("invalid_options")));

    let (status, answer) = pair.s.post("/api/standby/promote", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    pair.check_promoted(&answer, applied).await;
    let (status, again) = pair.s.post("/api/standby/promote", json!({})).await;
    assert_eq!((status, &again["error"]["code"]), (StatusCode::BAD_REQUEST, &json!("invalid_options")));

    // The promoted server ships its own timeline to the repository it followed, and backs up.
    let timeline = answer["timeline"]["id"].clone();
    let shipped_seq = shipped(&pair.s).await;
    assert_eq!(health(&pair.s).await["ship"]["timeline"], timeline);
    let backup = pair.s.backup("promoted").await;
    repo_copy(&backup);

    // A restart as a plain server: the data and the timeline are there, writes are accepted.
    let data = pair.s.snapshot().await;
    pair.standby.stop();
    let mut env = pair.access.clone();
    env.extend(owned(&[("BACKUP_REPO", &pair.url), ("SHIP_INTERVAL_MS", SHIP_MS)]));
    let server = Server::start_with(&pair.standby.dir, 0, &as_strs(&env));
    let api = Api::new(&server);
    assert_eq!(api.snapshot().await, data);
    let h = health(&api).await;
    assert_eq!((&h["timeline"]["id"], &h["store"]["lastSeq"]), (&timeline, &json!(shipped_seq)), "{h}");
    api.create("/api/events", json!({"name": "after-restart"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventvault_promote_promotes_the_running_standby_through_its_api() {
    let pair = Pair::start(false, &[("ADMIN_TOKEN", TOKEN)]).await;
    pair.p.seed("shipped", 1).await;
    let applied = pair.caught_up().await;
    let out = command(&pair.standby.dir, "promote", &[])
        .env("LISTEN_ADDR", format!("127.0.0.1:{}", pair.standby.port))
        .env("ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run eventvault promote");
    assert_ok(&out, "eventvault promote");
    let answer: Value = serde_json::from_slice(&out.stdout).expect("promote prints JSON");
    pair.check_promoted(&answer, applied).await;
}

/// A stopped standby: what may start on its store, and what may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_store_needs_standby_to_resume_and_promote_to_serve() {
    let mut pair = Pair::start(false, &[]).await;
    assert!(pair.marker().is_file());
    pair.standby.stop();
    pair.p.seed("while-down", 2).await;
    let dir = pair.standby.dir.clone();

    let (status, log) = refused(Server::try_start(&dir, 0, &[]));
    assert!(!status.success(), "{log}");
    let resume = format!("eventvault standby --from {}", pair.url);
    assert!(log.contains(&resume) && log.contains("eventvault promote"), "{log}");
    let other = format!("file://{}", dir.join("other-repo").display());
    let (status, log) = refused(Server::try_start_args(&dir, &standby_args(&other), 0, &[]));
    assert!(!status.success() && log.contains(&format!("holds a standby of {}", pair.url)), "{log}");

    // A store with data of its own is no standby.
    let plain_dir = data_dir();
    let mut plain = Server::start(plain_dir.path());
    Api::new(&plain).seed("own", 1).await;
    plain.stop();
    let (status, log) = refused(Server::try_start_args(plain_dir.path(), &standby_args(&pair.url), 0, &[]));
    assert!(!status.success() && log.contains("holds data"), "{log}");
    assert!(!plain_dir.path().join("storage/STANDBY").exists());

    // Restarted as a standby, it applies what the primary wrote meanwhile.
    pair.standby.restart();
    let applied = pair.caught_up().await;
    assert_eq!(pair.s.snapshot().await, pair.p.snapshot().await);

    // `eventvault promote` on the stopped standby promotes it offline; then it serves.
    pair.standby.stop();
    let out = command(&dir, "promote", &[]).output().expect("run eventvault promote");
    assert_ok(&out, "eventvault promote (offline)");
    let answer: Value = serde_json::from_slice(&out.stdout).expect("promote prints JSON");
    assert_eq!((&answer["promoted"], &answer["lastSeq"]), (&json!(true), &json!(applied)), "{answer}");
    assert!(!pair.marker().exists());
    let server = Server::start(&dir);
    let api = Api::new(&server);
    assert_eq!(health(&api).await["timeline"], answer["timeline"]);
    assert_eq!(answer["timeline"]["reason"], "promote");
    api.create("/api/events", json!({"name": "after-offline-promotion"})).await;
}

async fn hot_restore(api: &Api, name: &str) -> Value {
    let (status, body) = api.post("/api/backup/restore", json!({ "backupName": name })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    health(api).await["timeline"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_follows_a_restore_branching_where_it_is_and_stops_at_one_behind_it() {
    let pair = Pair::start(false, &[]).await;
    let first = health(&pair.p).await["timeline"]["id"].clone();

    // The primary restores the backup the standby is exactly at: it follows onto the new timeline.
    pair.p.seed("b", 1).await;
    let exact = pair.p.backup("exact").await["name"].as_str().unwrap().to_owned();
    let at = pair.caught_up().await;
    let second = hot_restore(&pair.p, &exact).await;
    assert_eq!(second["history"], json!([{"timeline": first, "endSeq": at}]), "{second}");
    wait_for(60, "the standby to follow onto the new timeline", || async {
        (health(&pair.s).await["standby"]["timeline"] == second["id"]).then_some(())
    })
    .await;
    pair.p.seed("on-second", 1).await;
    pair.caught_up().await;
    let h = health(&pair.s).await;
    assert_eq!((&h["timeline"]["id"], &h["status"]), (&second["id"], &json!("ok")), "{h}");
    assert_eq!(pair.s.snapshot().await, pair.p.snapshot().await);

    // The primary restores behind the standby: it stops following, and says so.
    let older = pair.p.backup("older").await["name"].as_str().unwrap().to_owned();
    pair.p.seed("discarded", 1).await;
    let applied = pair.caught_up().await;
    let kept = pair.s.snapshot().await;
    let third = hot_restore(&pair.p, &older).await;
    let h = wait_for(60, "the standby to notice the divergence", || async {
        let h = health(&pair.s).await;
        h["standby"]["diverged"].is_string().then_some(h)
    })
    .await;
    assert_eq!(h["status"], "degraded", "{h}");
    let diverged = h["standby"]["diverged"].as_str().unwrap();
    assert!(diverged.contains(third["id"].as_str().unwrap()), "{diverged}");

    pair.p.seed("on-third", 1).await;
    shipped(&pair.p).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let h = health(&pair.s).await;
    assert_eq!((&h["standby"]["appliedSeq"], &h["timeline"]["id"]), (&json!(applied), &second["id"]), "{h}");
    assert_eq!(pair.s.snapshot().await, kept, "nothing of the new timeline is applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_notices_a_restore_of_a_backup_from_an_earlier_timeline() {
    let pair = Pair::start(false, &[]).await;
    pair.p.seed("base", 1).await;
    let base = pair.p.backup("base").await["name"].as_str().unwrap().to_owned();
    pair.p.seed("b", 1).await;
    let exact = pair.p.backup("exact").await["name"].as_str().unwrap().to_owned();
    pair.caught_up().await;
    let second = hot_restore(&pair.p, &exact).await;
    wait_for(60, "the standby to follow onto the second timeline", || async {
        (health(&pair.s).await["standby"]["timeline"] == second["id"]).then_some(())
    })
    .await;
    // Back to a backup of the first timeline: the third does not continue the second.
    let third = hot_restore(&pair.p, &base).await;
    pair.p.seed("on-third", 1).await;
    let h = wait_for(60, "the standby to notice the divergence", || async {
        let h = health(&pair.s).await;
        h["standby"]["diverged"].is_string().then_some(h)
    })
    .await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["standby"]["diverged"].as_str().unwrap().contains(third["id"].as_str().unwrap()), "{h}");
    assert_eq!(h["timeline"]["id"], second["id"], "{h}");
}
