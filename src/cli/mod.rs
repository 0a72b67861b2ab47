//! The subcommands: each parses nothing itself, sets up logging and calls into the library.

mod backup;
mod drill;
mod populate;
mod restore;
mod standby;

use std::time::Duration;

use anyhow::{bail, Context};

use crate::config::{Cli, Command, HealthcheckOptions, LogFormat, LogOptions};

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve(opts) => {
            init_logging(&opts.log)?;
            runtime.block_on(crate::server::serve(*opts))
        }
        Command::Worker(opts) => {
            init_logging(&opts.log)?;
            runtime.block_on(crate::worker::run(opts))
        }
        Command::Healthcheck(opts) => runtime.block_on(healthcheck(opts)),
        Command::Populate(cmd) => {
            init_logging(&cmd.options.log)?;
            populate::run(&cmd.options, cmd.records, cmd.events, cmd.seed)
        }
        Command::Restore(cmd) => {
            init_logging(&cmd.options.log)?;
            restore::run(&cmd)
        }
        Command::Backup(cmd) => {
            init_logging(&cmd.options.log)?;
            backup::run(cmd.action, &cmd.options)
        }
        Command::Standby(cmd) => {
            init_logging(&cmd.options.log)?;
            runtime.block_on(crate::server::standby(cmd.from, *cmd.options))
        }
        Command::Promote(cmd) => {
            init_logging(&cmd.options.log)?;
            standby::promote(&cmd.options)
        }
        Command::Drill(cmd) => {
            init_logging(&cmd.options.log)?;
            drill::run(&cmd.options)
        }
    }
}

/// Logs go to stderr, so that stdout stays free for data (the worker's JSON lines).
fn init_logging(log: &LogOptions) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.log_filter)
        .with_context(|| format!("RUST_LOG {:?} is not a valid log filter", log.log_filter))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match log.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

async fn healthcheck(opts: HealthcheckOptions) -> anyhow::Result<()> {
    let mut addr = opts.listen_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}/api/health");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(opts.timeout_secs)).build()?;
    let response = client.get(&url).send().await.with_context(|| format!("no answer from {url}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    println!("{body}");
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    Ok(())
}
