use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use accelwatch::cli::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Demo(_)) {
        "warn"
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    match accelwatch::app::execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}
