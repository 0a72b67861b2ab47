//! The repository's storage, local folder or S3 alike, through `object_store` (one code path),
//! behind a blocking interface: backup operations run on blocking threads, so each call runs
//! on the target's own small runtime.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart};

use super::location::{Location, Settings};
use super::Error;

/// Parts of a multipart upload (S3 wants at least 5 MiB); at most [`PARTS_IN_FLIGHT`] are
/// held in memory at a time, besides the one filling.
const PART_BYTES: usize = 8 << 20;
/// Parts uploaded at once: memory, not bandwidth, is what a backup must keep small.
const PARTS_IN_FLIGHT: usize = 2;
/// Objects up to this size go up in one request.
const SINGLE_PUT_BYTES: u64 = 8 << 20;

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
    /// REPO_MAX_MBPS.
    throttle: Option<Mutex<Throttle>>,
}

/// A bandwidth cap: bytes sent since a moment, and how many a second are allowed.
#[derive(Debug)]
struct Throttle {
    bytes_per_sec: u64,
    since: Instant,
    sent: u64,
}

/// The target's runtime. Dropped without waiting: the manager that owns the target may be
/// dropped on an async thread, where waiting for a runtime to stop panics.
#[derive(Debug)]
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.0.as_ref().expect("the runtime lives as long as its target").block_on(future)
    }

    /// Enters the runtime, for calls that spawn onto it without being futures (a part of a
    /// multipart upload is spawned as it fills).
    fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.0.as_ref().expect("the runtime lives as long as its target").enter()
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
    pub fn open(location: &Location, settings: &Settings) -> Result<Target, Error> {
        let s3 = &settings.s3;
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
        let throttle = settings.max_mbps.map(|mbps| {
            Mutex::new(Throttle {
                bytes_per_sec: u64::from(mbps.max(1)) * 1_000_000,
                since: Instant::now(),
                sent: 0,
            })
        });
        Ok(Target { store, prefix, shown, runtime: Runtime(Some(runtime)), folder, throttle })
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

    /// A writer of a new object: in one request when it is small, in parts when it is large,
    /// holding at most a few parts in memory, at most REPO_MAX_MBPS. Nothing is written
    /// until [`ObjectWriter::finish`]; dropped unfinished, the upload is aborted.
    pub fn writer(&self, key: &str) -> ObjectWriter<'_> {
        ObjectWriter { target: self, key: key.to_owned(), buf: Vec::new(), multipart: None, written: 0 }
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
        let mut reader = self.reader(key, max)?;
        loop {
            let chunk = reader.next_chunk()?;
            if chunk.is_empty() {
                return Ok(reader.read);
            }
            sink(&chunk)?;
        }
    }

    /// A reader of an object that refuses more than `max` bytes, whatever the object's stated
    /// size says. Its errors carry the repository's error (see [`super::error::from_io`]).
    pub fn reader(&self, key: &str, max: u64) -> Result<ObjectReader<'_>, Error> {
        if let Some(folder) = &self.folder {
            // A folder is read directly, in large reads (object_store's reads are of 8 KiB),
            // and only a regular file is read (a FIFO in an object's place would block).
            let path = folder.join(key);
            let file = crate::untrusted::open_regular(&path).map_err(|e| {
                if let Some(found) = crate::untrusted::not_regular(&e) {
                    return Error::Damaged(format!("{key} is {found}, not a regular file"));
                }
                match e.kind() {
                    std::io::ErrorKind::NotFound => Error::Missing(key.to_owned()),
                    _ => Error::Unavailable(format!("{}: {key}: {e}", self.shown)),
                }
            })?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            if size > max {
                return Err(Error::Damaged(format!("{key} is {size} bytes, more than {max}")));
            }
            return Ok(ObjectReader {
                target: self,
                key: key.to_owned(),
                source: Source::File(file),
                chunk: Bytes::new(),
                read: 0,
                max,
            });
        }
        let location = self.key(key);
        let got = self.runtime.block_on(self.store.get(&location)).map_err(|e| self.failed(key, e))?;
        if got.meta.size > max {
            return Err(Error::Damaged(format!("{key} is {} bytes, more than {max}", got.meta.size)));
        }
        Ok(ObjectReader {
            target: self,
            key: key.to_owned(),
            source: Source::Stream(got.into_stream()),
            chunk: Bytes::new(),
            read: 0,
            max,
        })
    }

    /// Makes a written object durable: in a folder, fsyncs its file and its folder
    /// (object_store renames it into place without either); S3 answers once it holds it.
    /// The folders above are made durable by [`Self::sync_folders`], once per backup.
    pub fn sync(&self, key: &str) -> Result<(), Error> {
        let Some(folder) = &self.folder else { return Ok(()) };
        let path = folder.join(key);
        let failed = |e: std::io::Error| Error::Unavailable(format!("{}: {key}: {e}", self.shown));
        std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(failed)?;
        crate::durable::sync_dir(path.parent().unwrap_or(folder)).map_err(failed)
    }

    /// In a folder, fsyncs the folder `key` names and every folder above it up to the
    /// repository's (any of them may be new).
    pub fn sync_folders(&self, key: &str) -> Result<(), Error> {
        let Some(folder) = &self.folder else { return Ok(()) };
        let failed = |e: std::io::Error| Error::Unavailable(format!("{}: {key}: {e}", self.shown));
        let mut dir = Some(folder.join(key));
        while let Some(d) = dir.filter(|d| d.starts_with(folder)) {
            crate::durable::sync_dir(&d).map_err(failed)?;
            dir = d.parent().map(std::path::Path::to_path_buf);
        }
        Ok(())
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

impl Target {
    /// Waits until sending `n` more bytes keeps the uploads within REPO_MAX_MBPS.
    fn throttle(&self, n: usize) {
        let Some(throttle) = &self.throttle else { return };
        let wait = {
            let mut t = throttle.lock().unwrap_or_else(|e| e.into_inner());
            let elapsed = t.since.elapsed();
            // After a pause the budget starts again: idle time is not saved up for a burst.
            if elapsed > Duration::from_secs(1)
                && t.sent * 1000 / t.bytes_per_sec < elapsed.as_millis() as u64
            {
                t.since = Instant::now();
                t.sent = 0;
            }
            t.sent += n as u64;
            let due = Duration::from_secs_f64(t.sent as f64 / t.bytes_per_sec as f64);
            due.saturating_sub(t.since.elapsed())
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// A new object being written (see [`Target::writer`]).
pub struct ObjectWriter<'t> {
    target: &'t Target,
    key: String,
    /// What is written until it outgrows one request.
    buf: Vec<u8>,
    multipart: Option<WriteMultipart>,
    written: u64,
}

impl ObjectWriter<'_> {
    /// Writes the object. Returns its size.
    pub fn finish(mut self) -> Result<u64, Error> {
        let target = self.target;
        match self.multipart.take() {
            None => target.put(&self.key, std::mem::take(&mut self.buf))?,
            Some(multipart) => {
                target.runtime.block_on(multipart.finish()).map_err(|e| target.failed(&self.key, e))?;
            }
        }
        Ok(self.written)
    }
}

impl Write for ObjectWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let target = self.target;
        target.throttle(data.len());
        if self.multipart.is_none() {
            if self.buf.len() + data.len() <= SINGLE_PUT_BYTES as usize {
                self.buf.extend_from_slice(data);
                self.written += data.len() as u64;
                return Ok(data.len());
            }
            let location = target.key(&self.key);
            let upload = target
                .runtime
                .block_on(target.store.put_multipart(&location))
                .map_err(|e| target.failed(&self.key, e).into_io())?;
            let mut multipart = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let _runtime = target.runtime.enter();
            multipart.write(&std::mem::take(&mut self.buf));
            self.multipart = Some(multipart);
        }
        let multipart = self.multipart.as_mut().expect("started above");
        target
            .runtime
            .block_on(multipart.wait_for_capacity(PARTS_IN_FLIGHT))
            .map_err(|e| target.failed(&self.key, e).into_io())?;
        let _runtime = target.runtime.enter();
        multipart.write(data);
        self.written += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ObjectWriter<'_> {
    fn drop(&mut self) {
        // Unfinished: the parts sent so far are abandoned, never completed into an object.
        if let Some(multipart) = self.multipart.take() {
            let _ = self.target.runtime.block_on(multipart.abort());
        }
    }
}

/// An object being read (see [`Target::reader`]).
pub struct ObjectReader<'t> {
    target: &'t Target,
    key: String,
    source: Source,
    chunk: Bytes,
    read: u64,
    max: u64,
}

/// Where an object's bytes come from.
enum Source {
    Stream(futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>),
    File(std::fs::File),
}

impl ObjectReader<'_> {
    /// The next chunk the storage sends; empty at the end.
    fn next_chunk(&mut self) -> Result<Bytes, Error> {
        if !self.chunk.is_empty() {
            return Ok(std::mem::take(&mut self.chunk));
        }
        let target = self.target;
        let next = match &mut self.source {
            Source::Stream(stream) => target.runtime.block_on(stream.next()),
            Source::File(file) => {
                let mut buf = vec![0u8; 1 << 20];
                match file.read(&mut buf) {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some(Ok(Bytes::from(buf)))
                    }
                    Err(e) => return Err(Error::Unavailable(format!("{}: {}: {e}", target.shown, self.key))),
                }
            }
        };
        match next {
            None => Ok(Bytes::new()),
            Some(Err(e)) => Err(target.failed(&self.key, e)),
            Some(Ok(chunk)) => {
                self.read += chunk.len() as u64;
                if self.read > self.max {
                    return Err(Error::Damaged(format!("{} is more than {} bytes", self.key, self.max)));
                }
                Ok(chunk)
            }
        }
    }
}

impl Read for ObjectReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            let chunk = self.next_chunk().map_err(Error::into_io)?;
            if chunk.is_empty() {
                return Ok(0);
            }
            self.chunk = chunk;
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk[..n]);
        bytes::Buf::advance(&mut self.chunk, n);
        Ok(n)
    }
}

/// An object_store error as a message: its display, which names the request and the server's
/// answer (an S3 error document says what is wrong) but never the credentials; escaped and
/// bounded, as it quotes what a server sent.
fn clean(e: &dyn std::fmt::Display) -> String {
    crate::untrusted::bounded(&e.to_string())
}
