//! What the offline commands share: config and CSV reading options,
//! and scoring a whole recording through the daemon's own stages.

use std::path::Path;

use anyhow::anyhow;

use crate::cli::DataArgs;
use crate::cmd::exit::Failure;
use crate::config::Config;
use crate::model::LoadedModel;
use crate::pipeline::ScoreStage;
use crate::record::Output;
use crate::recording::{ReadOptions, RecordedWindow, Recording};
use crate::source::replay::config::CsvColumns;
use crate::telemetry::Metrics;
use crate::window::WindowSpec;

pub fn load_config(path: Option<&Path>) -> Result<Config, Failure> {
    match path {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(Config::from_environment()?),
    }
}

pub fn read_options(
    data: &DataArgs,
    config: &Config,
    channels: Vec<String>,
    rate: f64,
    keep: Vec<String>,
) -> ReadOptions {
    let from_config = &config.input.replay.columns;
    ReadOptions {
        columns: CsvColumns {
            device_column: data
                .device_column
                .clone()
                .unwrap_or_else(|| from_config.device_column.clone()),
            time_column: data
                .time_column
                .clone()
                .unwrap_or_else(|| from_config.time_column.clone()),
        },
        channels,
        sample_rate_hz: rate,
        filters: data.filters.clone(),
        keep,
    }
}

/// The windowing a model implies, with the config's gap and device limits.
pub fn model_window_spec(model: &LoadedModel, config: &Config) -> WindowSpec {
    let window = crate::window::WindowConfig {
        size: model.meta.window,
        hop: model.meta.hop,
        // A recording is read whole: no device is evicted.
        max_devices: usize::MAX,
        ..config.window.clone()
    };
    WindowSpec::new(
        &window,
        model.meta.channels.len(),
        model.meta.sample_rate_hz,
    )
}

pub const OFFLINE_BATCH: usize = 64;

/// Scores every window of a recording in order; returns the outputs and,
/// per window, the index of the stream it came from and its kept values.
pub fn score_recording(
    model: LoadedModel,
    config: &Config,
    data: &DataArgs,
    keep: Vec<String>,
    mut each: impl FnMut(&[RecordedWindow], &[Output]) -> Result<(), Failure>,
) -> Result<Recording, Failure> {
    // Offline commands take the model's input settings, but not another score.
    if let Some(problem) = config
        .model_problems(&model.meta)
        .into_iter()
        .find(|p| p.key == "model.score")
    {
        return Err(crate::cmd::exit::failure(
            crate::EX_CONFIG,
            anyhow!("{problem}"),
        ));
    }
    let options = read_options(
        data,
        config,
        model.meta.channels.clone(),
        model.meta.sample_rate_hz,
        keep,
    );
    let recording = Recording::read(&data.data, &options)?;
    let windows = recording.windows(model_window_spec(&model, config));
    let mut stage = ScoreStage::new(
        model,
        &config.detector,
        config.window.max_devices,
        Metrics::new(),
    )
    .quiet();
    for chunk in windows.chunks(OFFLINE_BATCH) {
        let batch: Vec<_> = chunk.iter().map(|w| w.window.clone()).collect();
        let outputs = stage
            .score(&batch)
            .map_err(|e| anyhow!("scoring {}: {e}", data.data.display()))?;
        each(chunk, &outputs)?;
    }
    Ok(recording)
}
