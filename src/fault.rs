//! Named fault points that tests inject into a real server process.
//!
//! Built only with the `fault-injection` feature. The points to trigger come from
//! `EVENTVAULT_FAULTS` (`name=error`, `name=crash`, `name=sleep`, and for I/O points
//! `name=enospc`; comma-separated), read
//! once: this is a test hook, not configuration, which is why it is not in `Options`.

/// Fails with an error, or aborts the process, when the named point is armed.
#[cfg(feature = "fault-injection")]
pub fn point(name: &'static str) -> Result<(), crate::store::Error> {
    match armed(name) {
        Some("crash") => {
            eprintln!("fault injection: crashing at {name}");
            std::process::abort()
        }
        Some("sleep") => {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            Ok(())
        }
        Some(_) => Err(crate::store::Error::Fault(name)),
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
pub fn point(_name: &'static str) -> Result<(), crate::store::Error> {
    Ok(())
}

/// Without the `fault-injection` feature every I/O point is a no-op.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn io_point(_name: &'static str) -> std::io::Result<()> {
    Ok(())
}
