use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = eventvault::config::Cli::parse();
    match eventvault::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
