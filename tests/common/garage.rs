//! Garage (crates.io `garage`, a real distributed S3 store) on 127.0.0.1, single node, for
//! the longer S3 suite (`make test-garage`). `scripts/install-garage` builds it once per
//! machine into `${EVENTVAULT_CACHE:-~/.cache/eventvault}/tools/bin/garage`.
//!
//! Garage is started with `server --single-node --default-bucket`: it lays out a one-node
//! cluster and creates the bucket [`BUCKET`] with the key pair below, from the environment.
//! Its access keys must look like `GK` and 24 hex digits, its secrets like 64 hex digits;
//! its region is the `s3_region` of its configuration.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::s3::{assert_ok, cache_dir, venv_tool};

pub const ACCESS_KEY: &str = "GK0123456789abcdef01234567";
pub const SECRET_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const REGION: &str = "garage";
pub const BUCKET: &str = "eventvault";

/// The Garage binary; panics when it is not installed.
pub fn garage_bin() -> PathBuf {
    let path = cache_dir().join("tools/bin/garage");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-garage (10–15 minutes, once)",
        path.display()
    );
    path
}

/// A single-node Garage with the bucket [`BUCKET`]. Killed on drop.
pub struct Garage {
    dir: tempfile::TempDir,
    s3_port: u16,
    rpc_port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Garage {
    pub fn start() -> Garage {
        let dir = tempfile::Builder::new().prefix("eventvault-garage-").tempdir().expect("temp dir");
        let mut garage = Garage { dir, s3_port: free_port(), rpc_port: free_port(), child: None };
        let config = format!(
            "metadata_dir = \"{root}/meta\"\ndata_dir = \"{root}/data\"\ndb_engine = \"sqlite\"\n\
             replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_secret = \"{secret}\"\n\n[s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
             root_domain = \".s3.garage.localhost\"\n",
            root = garage.dir.path().display(),
            rpc = garage.rpc_port,
            s3 = garage.s3_port,
            secret = "1799bccfd7411eddcf9ebd316bc1f5287ad12a68094e1c6ac6abde7e6feae1ec",
        );
        std::fs::write(garage.dir.path().join("garage.toml"), config).expect("write garage.toml");
        garage.spawn();
        garage
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("garage.log")).expect("log file");
        let child = Command::new(garage_bin())
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(["server", "--single-node", "--default-bucket"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "garage=info")
            .env("GARAGE_DEFAULT_ACCESS_KEY", ACCESS_KEY)
            .env("GARAGE_DEFAULT_SECRET_KEY", SECRET_KEY)
            .env("GARAGE_DEFAULT_BUCKET", BUCKET)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn garage");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        // Listening is not enough: the bucket exists once the layout is applied.
        loop {
            if TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok()
                && self.aws(&["s3api", "head-bucket", "--bucket", BUCKET]).status.success()
            {
                break;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("garage exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "garage did not serve its bucket within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// kill -9: requests fail until [`Self::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn start_again(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    /// The variables eventvault reads to reach it, with `BACKUP_REPO=s3://eventvault/PREFIX`.
    pub fn repo_env(&self, prefix: &str) -> Vec<(String, String)> {
        [
            ("S3_ENDPOINT", format!("http://127.0.0.1:{}", self.s3_port)),
            ("S3_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("S3_ALLOW_HTTP", "true".to_owned()),
            ("BACKUP_REPO", format!("s3://{BUCKET}/{prefix}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The `aws` CLI against it, with nothing from `~/.aws`; the caller checks the status.
    pub fn aws(&self, args: &[&str]) -> Output {
        Command::new(venv_tool("aws"))
            .args(["--endpoint-url", &format!("http://127.0.0.1:{}", self.s3_port), "--region", REGION])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_MAX_ATTEMPTS", "1")
            .output()
            .expect("run aws")
    }

    /// Keys and sizes under `prefix` of the bucket, listed by `aws s3api list-objects-v2`.
    pub fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        let out = self.aws(&[
            "s3api",
            "list-objects-v2",
            "--bucket",
            BUCKET,
            "--prefix",
            prefix,
            "--output",
            "json",
        ]);
        assert_ok(&out, "list-objects-v2");
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Vec::new();
        }
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("aws prints JSON");
        listed["Contents"]
            .as_array()
            .map(|objects| {
                objects
                    .iter()
                    .map(|o| (o["Key"].as_str().unwrap().to_owned(), o["Size"].as_u64().unwrap()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An object's bytes, downloaded by `aws s3 cp`.
    pub fn get(&self, key: &str) -> Vec<u8> {
        let file = self.dir.path().join("download");
        let out = self.aws(&["s3", "cp", &format!("s3://{BUCKET}/{key}"), file.to_str().unwrap()]);
        assert_ok(&out, &format!("get {key}"));
        std::fs::read(&file).expect("downloaded")
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
