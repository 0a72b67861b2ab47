//! The files of BACKUP_DIR as files: their names, their `.sha256` sidecars, and the one way a
//! finished backup file is published. A leaf: the archive format, the event-backup format and
//! the catalogue all use it, and it uses none of them.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::{Error, Result};

/// Suffix of whole-store archives.
pub const ARCHIVE_SUFFIX: &str = ".tar.gz";
/// Suffix of event backups.
pub const EVENT_SUFFIX: &str = ".json.gz";
/// Suffix of checksum sidecars (after the backup's name).
pub const SIDECAR_SUFFIX: &str = ".sha256";
/// Prefix of files being written; never listed, removed at startup.
pub const TEMP_PREFIX: &str = ".tmp-";
/// Folder of event backups inside BACKUP_DIR (the seed's name).
pub const EVENT_DIR: &str = "event_deletions";
/// Longest sidecar read: a hash, two spaces, a name of at most 255 bytes and a newline.
const MAX_SIDECAR_BYTES: u64 = 1024;

/// Checks that `name` is the plain file name of an archive.
pub fn check_name(name: &str) -> Result<()> {
    let plain = !name.contains(['/', '\\', '\0']) && !name.contains("..") && !name.starts_with('.');
    if plain && name.len() <= 255 && name.len() > ARCHIVE_SUFFIX.len() && name.ends_with(ARCHIVE_SUFFIX) {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_owned()))
    }
}

/// Checks a backup id: a plain file name, with or without `.tar.gz` / `.json.gz`.
pub fn check_id(id: &str) -> Result<()> {
    let plain = !id.contains(['/', '\\', '\0']) && !id.contains("..") && !id.starts_with('.');
    if plain && !id.is_empty() && id.len() <= 255 && !id.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(Error::InvalidName(id.to_owned()))
    }
}

/// The folder of event backups.
pub fn event_dir(backup_dir: &Path) -> PathBuf {
    backup_dir.join(EVENT_DIR)
}

/// The id of a backup file: its name without the suffix.
pub fn id_of(name: &str) -> &str {
    name.strip_suffix(ARCHIVE_SUFFIX).or_else(|| name.strip_suffix(EVENT_SUFFIX)).unwrap_or(name)
}

/// The sidecar path of a backup file.
pub fn sidecar_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(SIDECAR_SUFFIX);
    file.with_file_name(name)
}

/// The sidecar's contents: `sha256sum` format, naming the file by its bare name.
pub fn sidecar_line(sha256: &str, name: &str) -> String {
    format!("{sha256}  {name}\n")
}

/// Reads the SHA-256 a sidecar states for `name`: `None` when there is no sidecar.
pub fn read_sidecar(file: &Path, name: &str) -> Result<Option<String>> {
    let path = sidecar_path(file);
    let opened = match crate::untrusted::open_regular(&path) {
        Ok(opened) => opened,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if crate::untrusted::not_regular(&e).is_some() => {
            return Err(Error::damaged(name, format!("its .sha256 sidecar: {e}")))
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    // A sidecar is one line; more is not a sidecar of ours.
    let mut raw = Vec::new();
    opened.take(MAX_SIDECAR_BYTES + 1).read_to_end(&mut raw).map_err(|e| Error::io(&path, e))?;
    let text = match String::from_utf8(raw) {
        Ok(text) if (text.len() as u64) <= MAX_SIDECAR_BYTES => text,
        _ => return Err(Error::damaged(name, "its .sha256 sidecar is not in sha256sum format")),
    };
    let mut parts = text.split_whitespace();
    let (Some(hash), Some(named)) = (parts.next(), parts.next()) else {
        return Err(Error::damaged(name, "its .sha256 sidecar is not in sha256sum format"));
    };
    if hash.len() != 64
        || !hash.bytes().all(|b| b.is_ascii_hexdigit())
        || named.trim_start_matches('*') != name
    {
        return Err(Error::damaged(name, "its .sha256 sidecar names another file or holds no SHA-256"));
    }
    Ok(Some(hash.to_ascii_lowercase()))
}

/// The SHA-256 a sidecar states for `name`, which must be there.
pub fn required_sidecar(file: &Path, name: &str) -> Result<String> {
    read_sidecar(file, name)?
        .ok_or_else(|| Error::damaged(name, format!("its sidecar {name}.sha256 is missing")))
}

/// Opens the backup file `name` at `path` for reading: a regular file, else a 404 when it is
/// not there and a 422 (see [`Error::io`]) when it is something else.
pub fn open_input(path: &Path, name: &str) -> Result<File> {
    crate::untrusted::open_regular(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound(name.to_owned()),
        _ => Error::io(path, e),
    })
}

/// Publishes a finished backup file, each step safe to crash in:
/// 1. `fault` (a test's crash or error point);
/// 2. the sidecar is written atomically: a crash after it leaves an orphan sidecar, which
///    startup removes;
/// 3. `tmp` (complete and fsynced by its writer) is renamed to `path` and the folder fsynced:
///    the file appears whole with its sidecar, never partial.
///
/// On error neither the temp file nor a sidecar of a file that is not there is left.
pub fn publish(tmp: &Path, path: &Path, sha256: &str, fault: &'static str) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let published = (|| {
        crate::fault::point(fault)?;
        write_atomic(&sidecar_path(path), sidecar_line(sha256, &name).as_bytes())?;
        fs::rename(tmp, path).map_err(|e| Error::io(path, e))?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    })();
    if published.is_err() {
        let _ = fs::remove_file(tmp);
        if !path.exists() {
            let _ = fs::remove_file(sidecar_path(path));
        }
    }
    published
}

/// fsyncs a directory, so that renames and new files in it survive a power failure.
pub fn sync_dir(dir: &Path) -> Result<()> {
    crate::durable::sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Writes `contents` to `path` atomically (see [`crate::durable::write_atomic`]).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!("{TEMP_PREFIX}{name}.{}", std::process::id()));
    crate::durable::write_atomic(path, &tmp, contents, || Ok(())).map_err(|e| Error::io(path, e))
}

/// Formats bytes as MiB with two decimals.
pub fn mb(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / (1024.0 * 1024.0))
}

/// Bytes available to this user on the filesystem of `path`.
pub fn free_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `stat` a valid out-parameter.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut stat) } == 0)
        .then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// A unique suffix for temp names: the process and the time, so that concurrent writers
/// (the server and the CLI, two dry runs) never share one.
pub fn unique() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// A writer that hashes and counts what passes through it (the SHA-256 of a sidecar).
pub struct HashWriter<W> {
    /// Where the bytes go.
    pub inner: W,
    /// SHA-256 of what went through.
    pub hasher: Sha256,
    /// Bytes that went through.
    pub count: u64,
}

impl<W> HashWriter<W> {
    /// A hashing writer over `inner`.
    pub fn new(inner: W) -> Self {
        HashWriter { inner, hasher: Sha256::new(), count: 0 }
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
