//! `eventvault drill`: one restore drill, through the running server's API while one holds
//! the store, else offline. Prints the report; exits non-zero when the drill failed.

use anyhow::{bail, Context};
use reqwest::Method;

use super::backup::{access, Access};
use crate::backup::audit::Actor;
use crate::backup::{DrillOutcome, DrillReport};
use crate::config::Options;

/// Runs one drill and prints its report as JSON.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let report: DrillReport = match access(opts)? {
        Access::Offline(manager, _lock) => manager.drill(Actor::Cli)?,
        Access::Server(server) => {
            serde_json::from_value(server.call(Method::POST, "/api/backup/drill", None)?)
                .context("the server's drill report does not read")?
        }
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.outcome == DrillOutcome::Failed {
        let why = report.error.as_deref().unwrap_or("no reason given");
        bail!("the restore drill failed: {}", crate::untrusted::bounded(why));
    }
    Ok(())
}
