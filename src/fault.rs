//! Named fault points that tests inject into a real server process, and the other switches
//! that only tests set.
//!
//! Built only with the `fault-injection` feature. The points to trigger come from
//! `EVENTVAULT_FAULTS` (`name=error`, `name=crash`, `name=sleep`, and for I/O points
//! `name=enospc`; comma-separated), read once: this is a test hook, not configuration, which
//! is why it is not in `Options`, and why this is the one module that reads the environment
//! itself.
//!
//! This module is a leaf: it imports nothing from the crate, so the store, the backups and
//! the server can all call it without an import cycle. Callers turn [`Injected`] into their
//! own error type.

/// The error of an armed fault point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("injected fault at {0}")]
pub struct Injected(pub &'static str);

/// Fails with an error, or aborts the process, when the named point is armed.
#[cfg(feature = "fault-injection")]
pub fn point(name: &'static str) -> Result<(), Injected> {
    match armed(name) {
        Some("crash") => {
            eprintln!("fault injection: crashing at {name}");
            std::process::abort()
        }
        Some("sleep") => {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            Ok(())
        }
        Some(_) => Err(Injected(name)),
        None => Ok(()),
    }
}

/// An I/O point: `name=enospc` fails it as a full disk does, so the path a full disk takes
/// (its own error and status, the clean-up) can be tested; other modes act as in [`point`].
#[cfg(feature = "fault-injection")]
pub fn io_point(name: &'static str) -> std::io::Result<()> {
    match armed(name) {
        Some("enospc") => Err(std::io::Error::from_raw_os_error(libc::ENOSPC)),
        _ => point(name).map_err(std::io::Error::other),
    }
}

/// The test migration step to add (`EVENTVAULT_TEST_MIGRATION`): `ok` adds a step that
/// succeeds, `fail` one that fails halfway; anything else, or unset, adds none. Read once,
/// like `EVENTVAULT_FAULTS`, so every caller in a process sees the same steps.
#[cfg(feature = "fault-injection")]
pub fn test_migration() -> Option<&'static str> {
    use std::sync::OnceLock;
    static MODE: OnceLock<Option<String>> = OnceLock::new();
    MODE.get_or_init(|| std::env::var("EVENTVAULT_TEST_MIGRATION").ok()).as_deref()
}

#[cfg(feature = "fault-injection")]
fn armed(name: &str) -> Option<&'static str> {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static ARMED: OnceLock<HashMap<String, String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        std::env::var("EVENTVAULT_FAULTS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect()
    });
    armed.get(name).map(String::as_str)
}

/// Without the `fault-injection` feature every point is a no-op.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &'static str) -> Result<(), Injected> {
    Ok(())
}

/// Without the `fault-injection` feature every I/O point is a no-op.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn io_point(_name: &'static str) -> std::io::Result<()> {
    Ok(())
}
