//! `accelwatch run` and `accelwatch validate`.

use std::path::Path;

use anyhow::anyhow;

use crate::cmd::exit::{failure, Failure};
use crate::config::Config;
use crate::daemon::served::{open_scopes, ScopeConfig, ServedScope};
use crate::daemon::Daemon;
use crate::model::LoadedModel;
use crate::problem::Problem;
use crate::telemetry::Metrics;
use crate::EX_CONFIG;

/// Runs the daemon of `config`, loaded from `path` (SIGHUP reads it again).
pub async fn run(config: Config, path: &Path) -> Result<(), Failure> {
    let grace = std::time::Duration::from_millis(config.pipeline.shutdown_grace_ms);
    let release_startup_code = config.pipeline.release_startup_code;
    let daemon = Daemon::start(config, Vec::new()).await?;
    if release_startup_code {
        if let Some(bytes) = crate::daemon::startup_code::release() {
            tracing::debug!(
                mapped_mb = bytes >> 20,
                "the start-up code's pages left memory"
            );
        }
    }
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
    let mut served = Vec::new();
    if problems.is_empty() {
        // The models exactly as `run` opens them (model.path, or every
        // scope of model.dir), so that validate refuses what run refuses.
        let model_key = if config.model.dir.is_some() {
            "model.dir"
        } else {
            "model.path"
        };
        match open_scopes(&ScopeConfig::of(&config), &Metrics::new(), None) {
            Ok(scopes) => served = scopes,
            Err(error) => problems.extend(error.problems(model_key)),
        }
    } else if config.model.dir.is_none() {
        // The model is still worth checking against a config that has
        // other problems: every problem at once.
        match LoadedModel::load_with(&config.model.path, &config.model.backend_options()) {
            Ok(model) => problems.extend(config.model_problems(&model.meta)),
            Err(error) => problems.push(Problem {
                key: "model.path".into(),
                message: error.to_string(),
            }),
        }
    }
    if problems.is_empty() {
        let models: Vec<String> = served.iter().map(describe).collect();
        println!("{}: ok; {}", path.display(), models.join("; "));
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

/// A line for one served scope: its model, or that it will calibrate one.
fn describe(scope: &ServedScope) -> String {
    let Some(stage) = &scope.stage else {
        return format!("scope {}: no model yet, calibrates online", scope.name);
    };
    let model = stage.model();
    let m = &model.meta;
    format!(
        "model {} ({}, {} channels x {} samples, latent {}, threshold {:.4}, backend {}){}",
        m.id,
        m.variant,
        m.channels.len(),
        m.window,
        m.latent_dim,
        stage.threshold(),
        model.runtime.backend().name(),
        if &*scope.name == crate::scope::rules::FLEET {
            String::new()
        } else {
            format!(" for scope {}", scope.name)
        }
    )
}
