//! The repository's storage, local folder or S3 alike, through `object_store` (one code path),
//! behind a blocking interface: backup operations run on blocking threads, so each call runs
//! on the target's own small runtime.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart};

use super::location::{Location, S3Settings};
use super::Error;

/// Parts of a multipart upload; at most [`PARTS_IN_FLIGHT`] are held in memory at a time.
const PART_BYTES: usize = 8 << 20;
/// Parts uploaded at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Objects up to this size go up in one request.
const SINGLE_PUT_BYTES: u64 = 16 << 20;

/// One object of a listing.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its key, relative to the repository.
    pub key: String,
    /// Its size.
    pub size: u64,
    /// When it was written.
    pub modified: DateTime<Utc>,
}

/// Where the repository's objects are.
#[derive(Debug)]
pub struct Target {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    shown: String,
    runtime: Runtime,
    /// The folder of a `file://` repository: what is read from it must be a regular file (a
    /// FIFO put in an object's place would block a read forever).
    folder: Option<std::path::PathBuf>,
}

/// The target's runtime. Dropped without waiting: the manager that owns the target may be
/// dropped on an async thread, where waiting for a runtime to stop panics.
#[derive(Debug)]
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.0.as_ref().expect("the runtime lives as long as its target").block_on(future)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Target {
    /// Opens the storage at `location`. Nothing is read or written yet.
    pub fn open(location: &Location, s3: &S3Settings) -> Result<Target, Error> {
        let shown = location.to_string();
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match location {
            Location::Folder(path) => {
                std::fs::create_dir_all(path)
                    .map_err(|e| Error::Unavailable(format!("{shown}: creating the folder: {e}")))?;
                let store = LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| Error::Unavailable(format!("{shown}: {}", clean(&e))))?;
                (Arc::new(store), String::new())
            }
            Location::S3 { bucket, prefix } => {
                let retry = RetryConfig {
                    max_retries: 3,
                    retry_timeout: Duration::from_secs(30),
                    ..RetryConfig::default()
                };
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(s3.region.clone().unwrap_or_else(|| "us-east-1".into()))
                    .with_allow_http(s3.allow_http)
                    .with_retry(retry);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
                }
                if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
                    builder = builder.with_access_key_id(id).with_secret_access_key(secret);
                }
                let store =
                    builder.build().map_err(|e| Error::Unavailable(format!("{shown}: {}", clean(&e))))?;
                (Arc::new(store), prefix.clone())
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("eventvault-repo")
            .enable_all()
            .build()
            .map_err(|e| Error::Unavailable(format!("starting the repository client: {e}")))?;
        let folder = match location {
            Location::Folder(path) => Some(path.clone()),
            Location::S3 { .. } => None,
        };
        Ok(Target { store, prefix, shown, runtime: Runtime(Some(runtime)), folder })
    }

    /// The repository's URL, without secrets.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn key(&self, key: &str) -> Key {
        match self.prefix.is_empty() {
            true => Key::from(key),
            false => Key::from(format!("{}/{key}", self.prefix)),
        }
    }

    fn failed(&self, what: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::Missing(what.to_owned()),
            e => Error::Unavailable(format!("{}: {what}: {}", self.shown, clean(&e))),
        }
    }

    /// Writes a small object in one request.
    pub fn put(&self, key: &str, body: Vec<u8>) -> Result<(), Error> {
        let location = self.key(key);
        self.runtime
            .block_on(self.store.put(&location, Bytes::from(body).into()))
            .map(|_| ())
            .map_err(|e| self.failed(key, e))
    }

    /// Uploads `size` bytes read from `source`, in parts when it is large, holding at most a
    /// few parts in memory. Returns the bytes sent.
    pub fn upload(&self, key: &str, mut source: impl Read, size: u64) -> Result<u64, Error> {
        if size <= SINGLE_PUT_BYTES {
            let mut body = Vec::with_capacity(size as usize);
            source.read_to_end(&mut body).map_err(|e| Error::Local(format!("reading {key}: {e}")))?;
            let sent = body.len() as u64;
            self.put(key, body)?;
            return Ok(sent);
        }
        let location = self.key(key);
        self.runtime.block_on(async {
            let upload = self.store.put_multipart(&location).await.map_err(|e| self.failed(key, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let mut buf = vec![0u8; 1 << 20];
            let mut sent = 0u64;
            loop {
                let n = match source.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = writer.abort().await;
                        return Err(Error::Local(format!("reading {key}: {e}")));
                    }
                };
                if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    return Err(self.failed(key, e));
                }
                writer.write(&buf[..n]);
                sent += n as u64;
            }
            writer.finish().await.map_err(|e| self.failed(key, e))?;
            Ok(sent)
        })
    }

    /// In a folder repository, refuses to read anything but a regular file.
    fn check_regular(&self, key: &str) -> Result<(), Error> {
        let Some(folder) = &self.folder else { return Ok(()) };
        match std::fs::metadata(folder.join(key)) {
            Ok(meta) if meta.is_file() => Ok(()),
            Ok(_) => Err(Error::Damaged(format!("{key} is not a regular file"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Missing(key.to_owned())),
            Err(e) => Err(Error::Unavailable(format!("{}: {key}: {e}", self.shown))),
        }
    }

    /// Reads a whole object into memory, refusing one larger than `max` bytes (manifests).
    pub fn get(&self, key: &str, max: u64) -> Result<Vec<u8>, Error> {
        let mut body = Vec::new();
        self.read(key, max, |chunk| {
            body.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(body)
    }

    /// Streams an object to `sink` chunk by chunk, refusing more than `max` bytes, whatever
    /// the object's stated size says. Returns its size.
    pub fn read(
        &self,
        key: &str,
        max: u64,
        mut sink: impl FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        self.check_regular(key)?;
        let location = self.key(key);
        self.runtime.block_on(async {
            let got = self.store.get(&location).await.map_err(|e| self.failed(key, e))?;
            if got.meta.size > max {
                return Err(Error::Damaged(format!("{key} is {} bytes, more than {max}", got.meta.size)));
            }
            let mut stream = got.into_stream();
            let mut read = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.failed(key, e))?;
                read += chunk.len() as u64;
                if read > max {
                    return Err(Error::Damaged(format!("{key} is more than {max} bytes")));
                }
                sink(&chunk)?;
            }
            Ok(read)
        })
    }

    /// Every object under `prefix` (relative to the repository).
    pub fn list(&self, prefix: &str) -> Result<Vec<Listed>, Error> {
        let location = self.key(prefix);
        let strip = match self.prefix.is_empty() {
            true => String::new(),
            false => format!("{}/", self.prefix),
        };
        self.runtime.block_on(async {
            let mut listing = self.store.list(Some(&location));
            let mut found = Vec::new();
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(|e| self.failed(prefix, e))?;
                let key = meta.location.to_string();
                let key = key.strip_prefix(&strip).unwrap_or(&key).to_owned();
                found.push(Listed { key, size: meta.size, modified: meta.last_modified });
            }
            Ok(found)
        })
    }

    /// Deletes an object; one that is gone already is not an error.
    pub fn delete(&self, key: &str) -> Result<(), Error> {
        let location = self.key(key);
        match self.runtime.block_on(self.store.delete(&location)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed(key, e)),
        }
    }
}

/// An object_store error as a message: its display, which names the request and the server's
/// answer (an S3 error document says what is wrong) but never the credentials; escaped and
/// bounded, as it quotes what a server sent.
fn clean(e: &dyn std::fmt::Display) -> String {
    crate::untrusted::bounded(&e.to_string())
}
