//! `accelwatch run` and `accelwatch validate`.

use std::path::Path;

use anyhow::anyhow;

use crate::cmd::exit::{failure, Failure};
use crate::config::Config;
use crate::daemon::Daemon;
use crate::model::LoadedModel;
use crate::problem::Problem;
use crate::EX_CONFIG;

pub async fn run(path: &Path) -> Result<(), Failure> {
    let config = Config::load(path)?;
    let grace = std::time::Duration::from_millis(config.pipeline.shutdown_grace_ms);
    let daemon = Daemon::start(config, Vec::new()).await?;
    daemon.reloader().set_config_path(path);
    tracing::info!(
        "SIGHUP or a changed model file reloads the model, model.path and detector.*; \
         other changes need a restart"
    );
    crate::daemon::service::serve(daemon, grace).await?;
    Ok(())
}

pub fn validate(path: &Path) -> Result<(), Failure> {
    let config = Config::load_unvalidated(path)?;
    for warning in config.warnings() {
        eprintln!("{}: warning: {warning}", path.display());
    }
    let mut problems = config.validate();
    let mut model_line = String::new();
    match LoadedModel::load_with(&config.model.path, &config.model.backend_options()) {
        Ok(model) => {
            problems.extend(config.model_problems(&model.meta));
            let m = &model.meta;
            model_line = format!(
                "model {} ({}, {} channels x {} samples, latent {}, threshold {:.4}, backend {})",
                m.id,
                m.variant,
                m.channels.len(),
                m.window,
                m.latent_dim,
                m.threshold,
                model.runtime.backend().name()
            );
        }
        Err(error) => problems.push(Problem {
            key: "model.path".into(),
            message: error.to_string(),
        }),
    }
    if problems.is_empty() {
        println!("{}: ok; {model_line}", path.display());
        Ok(())
    } else {
        for problem in &problems {
            eprintln!("{}: {problem}", path.display());
        }
        Err(failure(
            EX_CONFIG,
            anyhow!("{} problem(s) in {}", problems.len(), path.display()),
        ))
    }
}
