//! Writes that a crash or a power failure leaves whole or not at all: the one temp-file,
//! fsync, rename, fsync-the-folder sequence that the swap marker, archives, event backups,
//! sidecars and drop-in notes all use.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// fsyncs a directory, so that renames and new files in it survive a power failure.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

/// Writes `body` to `tmp`, fsyncs it, renames it to `path` and fsyncs the folder, so that
/// `path` holds either what it held before or all of `body`. `before_sync` runs between the
/// write and the fsync (a fault point in tests). On error the temp file is removed.
pub fn write_atomic(
    path: &Path,
    tmp: &Path,
    body: &[u8],
    before_sync: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    let written = (|| {
        let mut f = File::create(tmp)?;
        f.write_all(body)?;
        before_sync()?;
        f.sync_all()?;
        fs::rename(tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}
