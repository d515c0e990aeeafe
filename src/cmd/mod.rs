//! The commands behind the CLI. This is the top of the program: errors
//! become messages and exit codes here (anyhow is used from here up only).

pub mod alerts;
pub mod calibrate;
pub mod demo;
#[cfg(feature = "embedded-broker")]
pub mod embedded_broker;
pub mod evaluate;
pub mod exit;
pub mod models;
pub mod offline;
pub mod run;
pub mod score;
pub mod train;

use anyhow::Context;

use crate::cli::Command;
use exit::Failure;

pub fn execute(command: Command) -> Result<(), Failure> {
    match command {
        Command::Run { config: path } => {
            // Read first: the runtime's threads are the config's.
            let config = crate::config::Config::load(&path)?;
            let runtime = runtime_with(config.pipeline.io_threads)?;
            let result = runtime.block_on(run::run(config, &path));
            // Past the shutdown grace a stage may still be busy: do not wait for it.
            runtime.shutdown_timeout(std::time::Duration::from_millis(500));
            result
        }
        Command::Validate { config } => run::validate(&config),
        Command::Train(args) => train::train_command(args),
        Command::Score(args) => score::score(args),
        Command::Evaluate(args) => evaluate::evaluate(args),
        Command::Calibrate(args) => calibrate::calibrate(args),
        Command::Demo(args) => runtime()?.block_on(demo::run(args)),
        Command::Models(command) => models::models(command),
        Command::Alerts(command) => alerts::alerts(command),
    }
}

/// The runtime of `demo`: one worker, as the daemon's default
/// (`pipeline.io_threads`).
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    runtime_with(crate::daemon::config::PipelineConfig::default_io_threads())
}

/// A runtime of `threads` workers (0: one per core) beside the blocking
/// pool, where the scorer runs.
pub fn runtime_with(threads: usize) -> Result<tokio::runtime::Runtime, Failure> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    Ok(builder
        .enable_all()
        .build()
        .context("starting the runtime")?)
}
