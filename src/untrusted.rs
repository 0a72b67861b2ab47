//! Files that reach us from outside (archives, sidecars, event backups, drop-ins, markers) are
//! written by whoever could write their folder, so they are read as an attacker wrote them.
//! This leaf holds the rules every reader shares: open only regular files, check every sum
//! of sizes a file states, and quote input only as a short, escaped prefix.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Most bytes of a piece of input that a message quotes.
pub const QUOTE_BYTES: usize = 200;
/// Most bytes of a message built from input (an error reason, a note in `failed/`).
pub const MESSAGE_BYTES: usize = 1024;

/// The payload of the error [`open_regular`] returns for anything but a regular file.
#[derive(Debug)]
pub struct NotRegular {
    /// What was found instead: `a FIFO`, `a folder`, …
    pub found: &'static str,
}

impl fmt::Display for NotRegular {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "it is {}, not a regular file; only regular files are read", self.found)
    }
}

impl std::error::Error for NotRegular {}

/// Opens `path` for reading only if it is a regular file (symbolic links are followed).
///
/// The open itself is non-blocking: opening a FIFO for reading blocks until a writer comes,
/// which would hold whatever lock the caller holds forever. The type is then checked on the
/// open descriptor, so a file swapped between a check and the open cannot slip through.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = File::options().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        // SAFETY: `file` is an open descriptor; clearing O_NONBLOCK only changes how later
        // reads wait, which for a regular file they never do anyway.
        unsafe {
            use std::os::fd::AsRawFd;
            let fd = file.as_raw_fd();
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
            }
        }
        return Ok(file);
    }
    let found = if kind.is_dir() {
        "a folder"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else {
        "not a file"
    };
    Err(io::Error::new(io::ErrorKind::InvalidInput, NotRegular { found }))
}

/// What [`open_regular`] found instead of a regular file, when that is why `e` failed. A
/// folder opened as a file (`EISDIR`), a loop of links and a name too long count too: all of
/// them are a property of the file, not a failure of the server.
pub fn not_regular(e: &io::Error) -> Option<&'static str> {
    match e.raw_os_error() {
        Some(libc::EISDIR) => return Some("a folder"),
        Some(libc::ELOOP) => return Some("a loop of symbolic links"),
        Some(libc::ENAMETOOLONG) => return Some("a name too long to open"),
        _ => {}
    }
    e.get_ref().and_then(|inner| inner.downcast_ref::<NotRegular>()).map(|n| n.found)
}

/// Sum of sizes that a file states; `None` when they overflow.
pub fn sum(sizes: impl IntoIterator<Item = u64>) -> Option<u64> {
    sizes.into_iter().try_fold(0u64, u64::checked_add)
}

/// A short, escaped quotation of input: at most [`QUOTE_BYTES`] of it, control characters
/// and invalid UTF-8 escaped, with the full length named when it is cut.
pub fn quote(input: &[u8]) -> String {
    let cut = input.len() > QUOTE_BYTES;
    let shown = &input[..input.len().min(QUOTE_BYTES)];
    let mut out = String::with_capacity(shown.len() + 32);
    out.push('"');
    out.push_str(&escape(&String::from_utf8_lossy(shown)));
    out.push('"');
    if cut {
        out.push_str(&format!("… ({} bytes)", input.len()));
    }
    out
}

/// A message that may carry input (a parser's error, a quoted name): control characters
/// escaped and at most [`MESSAGE_BYTES`] kept, so that it can go into a JSON answer, a
/// note, the audit trail and the log without carrying a flood or raw bytes along.
pub fn bounded(message: &str) -> String {
    let escaped = escape(message);
    if escaped.len() <= MESSAGE_BYTES {
        return escaped;
    }
    let mut end = MESSAGE_BYTES;
    while !escaped.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut at {MESSAGE_BYTES} bytes)", &escaped[..end])
}

/// Escapes control characters and the replacement character of invalid UTF-8.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{FFFD}' => out.push_str("\\u{fffd}"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_overflow_to_none() {
        assert_eq!(sum([1, 2, 3]), Some(6));
        assert_eq!(sum([u64::MAX, 2]), None);
        assert_eq!(sum([]), Some(0));
    }

    #[test]
    fn quotes_are_short_and_escaped() {
        let long = vec![b'a'; 10_000];
        let q = quote(&long);
        assert!(q.len() < QUOTE_BYTES + 40, "{q}");
        assert!(q.ends_with("(10000 bytes)"));
        let binary = quote(&[0x1f, 0x8b, 0xff, b'\n', b'x']);
        assert!(!binary.contains('\n') && !binary.contains('\u{1f}'), "{binary}");
        assert!(binary.contains("\\u{fffd}"), "{binary}");
    }

    #[test]
    fn messages_are_bounded() {
        let flood = format!("bad name {:?}", "x".repeat(1 << 20));
        assert!(bounded(&flood).len() < MESSAGE_BYTES + 40);
        assert_eq!(bounded("short\tone"), "short\\tone");
        let multibyte = "é".repeat(MESSAGE_BYTES);
        assert!(bounded(&multibyte).len() < MESSAGE_BYTES + 40);
    }

    #[test]
    fn only_regular_files_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(open_regular(&file).is_ok());
        let e = open_regular(dir.path()).unwrap_err();
        assert_eq!(not_regular(&e), Some("a folder"));
        let fifo = dir.path().join("p");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        // Returns at once (a blocking open would hang this test).
        let e = open_regular(&fifo).unwrap_err();
        assert_eq!(not_regular(&e), Some("a FIFO"));
    }
}
