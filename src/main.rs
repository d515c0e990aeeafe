use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use accelwatch::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Demo(_)) {
        // The embedded broker logs every connection, and an error for the
        // readiness probe that connects and leaves.
        "warn,rumqttd=off"
    } else {
        "info"
    };
    let filter = match &cli.log {
        Some(directives) => match EnvFilter::try_new(directives) {
            Ok(filter) => filter,
            Err(error) => {
                eprintln!("error: --log {directives:?}: {error}");
                return ExitCode::from(2);
            }
        },
        None => EnvFilter::new(default_level),
    };
    accelwatch::logging::init(cli.log_format, filter);
    match accelwatch::cmd::execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}
