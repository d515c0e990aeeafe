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
        Command::Run { config } => {
            let runtime = runtime()?;
            let result = runtime.block_on(run::run(&config));
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

pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?)
}
