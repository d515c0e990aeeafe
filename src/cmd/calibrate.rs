//! `accelwatch calibrate`: the sidecar of a model made elsewhere.

use std::path::PathBuf;

use anyhow::{anyhow, Context};

use crate::cli::CalibrateArgs;
use crate::cmd::exit::{failure, Failure, EX_DATAERR};
use crate::cmd::offline::{load_config, score_recording};
use crate::config::ConfigError;
use crate::model::LoadedModel;
use crate::record::Output;
use crate::scope::store::write_atomically;

/// Writes the sidecar of a model made elsewhere: the config's (or the
/// flags') channels, window, hop and rate, no normalisation (the model sees
/// raw units), and a threshold that is the chosen quantile of the model's
/// scores over a recording of normal data.
pub fn calibrate(args: CalibrateArgs) -> Result<(), Failure> {
    let mut config = load_config(args.config.as_deref())?;
    if let Some(channels) = args.channels {
        config.input.channels = channels;
    }
    if let Some(window) = args.window {
        config.window.size = window;
    }
    if let Some(hop) = args.hop {
        config.window.hop = hop;
    }
    if let Some(rate) = args.rate {
        config.input.sample_rate_hz = rate;
    }
    if let Some(q) = args.quantile {
        config.training.threshold_quantile = q;
    }
    let problems = config.validate_settings();
    if !problems.is_empty() {
        let path = args
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from("<command line>"));
        return Err(ConfigError::Invalid { path, problems }.into());
    }
    let quantile = config.training.threshold_quantile;
    let mut meta = serde_json::json!({
        "format": crate::model::meta::FORMAT,
        "variant": "external",
        "channels": config.input.channels,
        "window": config.window.size,
        "hop": config.window.hop,
        "sample_rate_hz": config.input.sample_rate_hz,
        "normalization": null,
        // Replaced below; the model must load before it can be scored.
        "threshold": 0.0,
    });
    for (key, value) in [
        ("input", args.input.map(serde_json::Value::from)),
        (
            "reconstruction_output",
            args.reconstruction_output.map(serde_json::Value::from),
        ),
        (
            "latent_output",
            args.latent_output.map(serde_json::Value::from),
        ),
        ("latent_dim", args.latent_dim.map(serde_json::Value::from)),
    ] {
        if let Some(value) = value {
            meta[key] = value;
        }
    }
    let model =
        LoadedModel::with_given_metadata(&args.model, meta, &config.model.backend_options())?;
    let mut scores = Vec::new();
    score_recording(
        model.clone(),
        &config,
        &args.data,
        Vec::new(),
        |_, outputs| {
            scores.extend(outputs.iter().filter_map(|o| match o {
                Output::Window(w) => Some(w.score),
                Output::Alert(_) | Output::Status(_) => None,
            }));
            Ok(())
        },
    )?;
    if scores.is_empty() {
        return Err(failure(
            EX_DATAERR,
            anyhow!(
                "{} holds no complete window of {} samples",
                args.data.data.display(),
                config.window.size
            ),
        ));
    }
    let windows = scores.len();
    let threshold = crate::score::quantile(&mut scores, quantile) as f64;
    let mut meta = model.meta;
    meta.threshold = threshold;
    meta.calibration = Some(crate::model::meta::Calibration { quantile, windows });
    let mut json = serde_json::to_value(&meta).context("serialising the metadata")?;
    // The id is the file's hash, recomputed at load: a sidecar that kept it
    // would name an older file after the model is replaced.
    if let Some(object) = json.as_object_mut() {
        object.remove("id");
    }
    let out = args
        .out
        .unwrap_or_else(|| crate::model::sidecar_path(&args.model));
    let text = serde_json::to_string_pretty(&json).context("serialising the metadata")? + "\n";
    write_atomically(&out, text.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "calibrated {} ({}) on {windows} windows of {}: threshold {threshold:.6} (q{quantile}); wrote {}",
        args.model.display(),
        meta.id,
        args.data.data.display(),
        out.display()
    );
    Ok(())
}
