//! Test helpers: a real `eventvault` process on a temp dir, and an HTTP client for it.
#![allow(dead_code)]

pub mod garage;
pub mod s3;
pub mod webhook;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_eventvault")
}

/// `eventvault backup ARGS` on the folders of `dir`, with nothing else from the environment.
pub fn backup_cli(dir: &Path, args: &[&str]) -> Command {
    command(dir, "backup", args)
}

/// `eventvault SUBCOMMAND ARGS` on the folders of `dir`, with nothing else from the
/// environment (logs at warn).
pub fn command(dir: &Path, subcommand: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg(subcommand)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STORAGE_DIR", dir.join("storage"))
        .env("BACKUP_DIR", dir.join("backups"))
        .env("RESTORE_DIR", dir.join("restore"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

/// A data directory (storage, backups, restore) that is removed on drop.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("eventvault-test-").tempdir().expect("temp dir")
}

/// A running server process. Killed on drop.
pub struct Server {
    pub dir: PathBuf,
    pub base: String,
    pub port: u16,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    pub envs: Vec<(String, String)>,
    /// The command line after the binary: `serve`, or e.g. `standby --from URL`.
    pub args: Vec<String>,
}

impl Server {
    /// Starts a server on `dir` on an ephemeral port.
    pub fn start(dir: &Path) -> Server {
        Self::start_with(dir, 0, &[])
    }

    /// Starts a server with extra environment variables, on `port` (0: ephemeral).
    pub fn start_with(dir: &Path, port: u16, envs: &[(&str, &str)]) -> Server {
        let envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        match Self::try_start(dir, port, &envs) {
            Ok(server) => server,
            Err((status, log)) => panic!("server did not start ({status:?}):\n{}", log.join("\n")),
        }
    }

    /// Starts a server, or returns its exit status and log when it exits before listening.
    pub fn try_start(
        dir: &Path,
        port: u16,
        envs: &[(String, String)],
    ) -> Result<Server, (Option<ExitStatus>, Vec<String>)> {
        Self::try_start_args(dir, &["serve".to_owned()], port, envs)
    }

    /// [`Self::try_start`] of another serving command line (`standby --from URL`).
    pub fn try_start_args(
        dir: &Path,
        args: &[String],
        port: u16,
        envs: &[(String, String)],
    ) -> Result<Server, (Option<ExitStatus>, Vec<String>)> {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("STORAGE_DIR", dir.join("storage"))
            .env("BACKUP_DIR", dir.join("backups"))
            .env("RESTORE_DIR", dir.join("restore"))
            .env("BLOCK_CACHE_MB", "16")
            .env("AUTO_BACKUP_ENABLED", "false")
            .env("RESTORE_SETTLE_MS", "700")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn eventvault");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split(|c: char| c.is_whitespace() || c == '"').next().unwrap_or_default();
                    let _ = tx.send(addr.to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(50)) {
                let port = addr.rsplit(':').next().unwrap().parse().unwrap();
                return Ok(Server {
                    dir: dir.to_path_buf(),
                    base: format!("http://{addr}"),
                    port,
                    child: Some(child),
                    log,
                    envs: envs.to_vec(),
                    args: args.to_vec(),
                });
            }
            if let Some(status) = child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                let lines = log.lock().unwrap().clone();
                return Err((Some(status), lines));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err((None, log.lock().unwrap().clone()));
            }
        }
    }

    /// The URL of an API path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// kill -9, and wait for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and wait for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not stop within 30 s of SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same dir, port, command line and environment.
    pub fn restart(&mut self) {
        self.kill9();
        let (args, envs) = (self.args.clone(), self.envs.clone());
        let again = Server::try_start_args(&self.dir, &args, self.port, &envs)
            .unwrap_or_else(|(s, log)| panic!("restart failed ({s:?}):\n{}", log.join("\n")));
        *self = again;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A JSON HTTP client with an optional bearer token.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(server: &Server) -> Api {
        Api { base: server.base.clone(), token: None, http: reqwest::Client::new() }
    }

    pub fn with_token(&self, token: &str) -> Api {
        Api { token: Some(token.into()), ..self.clone() }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends a request with an optional JSON body; returns the status and the JSON body
    /// (`Value::Null` when the body is not JSON).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// POSTs and asserts 201; returns the body.
    pub async fn create(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.post(path, body).await;
        assert_eq!(status, StatusCode::CREATED, "POST {path}: {body}");
        body
    }

    /// Every message of the bus, read page by page.
    pub async fn all_messages(&self) -> Vec<Value> {
        let mut after = 0;
        let mut all = Vec::new();
        loop {
            let (status, page) = self.get(&format!("/api/bus?after={after}&limit=1000")).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let messages = page["messages"].as_array().unwrap().clone();
            if messages.is_empty() {
                return all;
            }
            after = messages.last().unwrap()["seq"].as_u64().unwrap();
            all.extend(messages);
        }
    }
}

/// Polls `f` until it returns `Some`, or panics after `secs`.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Collections the backup tests write to.
pub const COLLECTIONS: [&str; 2] = ["guests", "payments"];

impl Api {
    /// Everything a user can read: events, their records in [`COLLECTIONS`], and the bus.
    pub async fn snapshot(&self) -> Value {
        let (status, events) = self.get("/api/events?limit=1000").await;
        assert_eq!(status, StatusCode::OK, "{events}");
        let mut records = serde_json::Map::new();
        for event in events["items"].as_array().unwrap() {
            let id = event["id"].as_str().unwrap();
            for collection in COLLECTIONS {
                let (_, page) = self.get(&format!("/api/events/{id}/{collection}?limit=1000")).await;
                records.insert(format!("{id}/{collection}"), page["items"].clone());
            }
        }
        serde_json::json!({
            "events": events["items"],
            "records": records,
            "messages": self.all_messages().await,
        })
    }

    /// Writes a recognisable data set: `n` events with guests and a payment each.
    pub async fn seed(&self, tag: &str, n: usize) {
        for i in 0..n {
            let event = self.create("/api/events", serde_json::json!({"name": format!("{tag}-{i}")})).await;
            let id = event["id"].as_str().unwrap();
            let guests: Vec<Value> = (0..3).map(|g| serde_json::json!({"guest": g, "tag": tag})).collect();
            self.create(&format!("/api/events/{id}/guests/_batch"), Value::Array(guests)).await;
            self.create(&format!("/api/events/{id}/payments"), serde_json::json!({"amount": i})).await;
        }
    }

    /// `POST /api/backup/create` with a label; returns the body after asserting 201.
    pub async fn backup(&self, label: &str) -> Value {
        let (status, body) = self.post("/api/backup/create", serde_json::json!({"label": label})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }
}

/// Names of the files in a folder (empty when it does not exist).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}
