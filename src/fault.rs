//! Named fault points that tests inject into a real server process.
//!
//! Built only with the `fault-injection` feature. The points to trigger come from
//! `EVENTVAULT_FAULTS` (`name=error`, `name=crash` or `name=sleep`, comma-separated), read
//! once: this is a test hook, not configuration, which is why it is not in `Options`.

/// Fails with an error, or aborts the process, when the named point is armed.
#[cfg(feature = "fault-injection")]
pub fn point(name: &'static str) -> Result<(), crate::store::Error> {
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
    match armed.get(name).map(String::as_str) {
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

/// Without the `fault-injection` feature every point is a no-op.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &'static str) -> Result<(), crate::store::Error> {
    Ok(())
}
