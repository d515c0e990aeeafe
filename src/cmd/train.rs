//! `accelwatch train`: read, window, train, export, write the report.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};

use crate::cli::{DataArgs, TrainArgs};
use crate::cmd::exit::{failure, Failure, EX_DATAERR};
use crate::cmd::offline::{load_config, read_options};
use crate::config::{Config, ConfigError};
use crate::model::net::Architecture;
use crate::model::train::{self, head, EpochReport, WindowSet};
use crate::problem::Problem;
use crate::recording::{Recording, RecordingError};
use crate::scope::store::write_atomically;
use crate::window::WindowSpec;

pub fn train_command(args: TrainArgs) -> Result<(), Failure> {
    let mut config = load_config(args.config.as_deref())?;
    if let Some(variant) = args.variant {
        config.model.variant = variant;
    }
    if let Some(channels) = args.channels {
        config.input.channels = channels;
    }
    if let Some(latent) = args.latent {
        config.model.latent = latent;
    }
    if let Some(epochs) = args.epochs {
        config.training.epochs = epochs;
    }
    if let Some(seed) = args.seed {
        config.training.seed = seed;
    }
    let problems = config.validate_settings();
    if !problems.is_empty() {
        let path = args
            .config
            .unwrap_or_else(|| PathBuf::from("<command line>"));
        return Err(ConfigError::Invalid { path, problems }.into());
    }
    train_model(
        &config,
        &args.data,
        &args.out,
        true,
        args.report.as_deref(),
        args.label.as_deref(),
    )?;
    Ok(())
}

/// Reads, windows, trains, checks the export and writes the model file
/// atomically. Shared by `train` and `demo`.
pub fn train_model(
    config: &Config,
    data: &DataArgs,
    out: &Path,
    verbose: bool,
    report: Option<&Path>,
    label: Option<&str>,
) -> Result<train::TrainSummary, Failure> {
    let options = read_options(
        data,
        config,
        config.input.channels.clone(),
        config.input.sample_rate_hz,
        label.map(str::to_string).into_iter().collect(),
    );
    let usage = |why: String| {
        let problem = Problem {
            key: "--label".into(),
            message: why,
        };
        let path = PathBuf::from("<command line>");
        Failure::from(ConfigError::Invalid {
            path,
            problems: vec![problem],
        })
    };
    let recording = match Recording::read(&data.data, &options) {
        Err(RecordingError::MissingColumn { column, header, .. }) if Some(&*column) == label => {
            return Err(usage(format!(
                "{} has no column {column:?} (the header has: {header})",
                data.data.display()
            )));
        }
        other => other?,
    };
    let spec = WindowSpec::new(
        &config.window,
        config.input.channels.len(),
        config.input.sample_rate_hz,
    );
    let windows = recording.windows(spec);
    let mut set = WindowSet::new(spec.size * spec.channels);
    for w in &windows {
        set.push(w.stream, &w.window.data);
    }
    if let Some(column) = label {
        let of: Vec<u32> = windows.iter().map(|w| w.kept[0]).collect();
        let (classes, of) = head::classes_of(&recording.levels[0], &of).map_err(|why| {
            usage(format!(
                "column {column:?} of {} {why}",
                data.data.display()
            ))
        })?;
        eprintln!(
            "activity head: {} classes of column {column:?} ({})",
            classes.len(),
            classes.join(", ")
        );
        set.labels = Some(head::Labels {
            column: column.to_string(),
            classes,
            of,
        });
    }
    let arch = Architecture {
        window: spec.size,
        channels: spec.channels,
        model: config.model.clone(),
    };
    eprintln!(
        "training a {} autoencoder ({} inputs{}, latent {}) on {} windows of {} x {} from {} streams ({} rows) of {}",
        arch.model.variant.name(),
        arch.features(),
        match arch.model.input {
            crate::model::config::ModelInput::Raw => String::new(),
            kind => format!(": the {} front end's", kind.name()),
        },
        arch.latent_dim(),
        set.len(),
        spec.size,
        config.input.channels.join(","),
        recording.streams.len(),
        recording.rows(),
        data.data.display()
    );
    let input = config.input_spec();
    let mut progress = Progress::new(config.training.epochs, verbose);
    let mut history = Vec::new();
    let trained = train::train(&arch, &config.training, &input, &set, &mut |r| {
        progress.epoch(r);
        history.push(*r);
    })
    .map_err(|e| failure(EX_DATAERR, e.into()))?;
    progress.finish();
    if let Some(dir) = report {
        write_training_report(dir, &history, &trained.meta)
            .with_context(|| format!("writing the training report into {}", dir.display()))?;
    }
    let check_windows = set.len().min(64);
    let gap = train::export_gap(&trained, &set.data[..check_windows * set.features])
        .map_err(|e| anyhow!("re-reading the exported model: {e}"))?;
    if let Some(problem) = gap.problem() {
        return Err(anyhow!(problem).into());
    }
    write_atomically(out, &trained.onnx).with_context(|| format!("writing {}", out.display()))?;
    if let Some(head) = &trained.meta.activity {
        eprintln!(
            "activity head ({}, {} classes{}{}): held-out accuracy {:.3}",
            head.label,
            head.classes.len(),
            match head.hidden {
                0 => String::new(),
                h => format!(", {h} hidden"),
            },
            match head.front_end_features {
                0 => String::new(),
                n => format!(", reading the code and {n} front-end features"),
            },
            head.validation_accuracy.unwrap_or(f64::NAN)
        );
    }
    let s = &trained.summary;
    let whole = if s.whole_streams > 0 {
        format!(
            " ({} whole streams, their tails too short to hold out)",
            s.whole_streams
        )
    } else {
        String::new()
    };
    eprintln!(
        "trained {} in {:.1?}: {} training and {} held-out windows{whole}, {} epochs (best {}), \
         loss {:.5}, validation loss {:.5}, {}threshold {:.5} (q{}), candle/tract gap {}; wrote {} ({} bytes)",
        trained.meta.id,
        s.elapsed,
        s.train_windows,
        s.validation_windows,
        s.epochs_run,
        s.best_epoch,
        s.train_loss,
        s.validation_loss,
        match trained.meta.score.choice_name() {
            "reconstruction" => String::new(),
            other => format!("{other} score "),
        },
        s.threshold,
        config.training.threshold_quantile,
        gap,
        out.display(),
        trained.onnx.len()
    );
    Ok(trained.summary)
}

/// The loss curve as SVG and the per-epoch history and model metadata as JSON.
pub fn write_training_report(
    dir: &Path,
    history: &[EpochReport],
    meta: &crate::model::ModelMetadata,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let epochs: Vec<serde_json::Value> = history
        .iter()
        .map(|r| serde_json::json!({"epoch": r.epoch, "loss": r.train_loss, "validation_loss": r.validation_loss}))
        .collect();
    let json = serde_json::json!({ "model": meta, "epochs": epochs });
    std::fs::write(
        dir.join("training.json"),
        serde_json::to_string_pretty(&json).map_err(std::io::Error::other)?,
    )?;
    let train: Vec<f64> = history.iter().map(|r| r.train_loss).collect();
    let validation: Vec<f64> = history.iter().map(|r| r.validation_loss).collect();
    std::fs::write(
        dir.join("loss.svg"),
        crate::eval::plots::loss_curve(&train, &validation),
    )
}

/// Epoch progress: a bar on a terminal, a line every ten epochs otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    verbose: bool,
}

impl Progress {
    fn new(epochs: usize, verbose: bool) -> Self {
        let bar = (verbose && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(epochs as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} epoch {pos}/{len} {msg} [{elapsed}]",
                )
                .expect("valid template"),
            );
            bar
        });
        Self { bar, verbose }
    }

    fn epoch(&mut self, r: &EpochReport) {
        let line = format!(
            "epoch {}/{} loss {:.5} val_loss {:.5}{}",
            r.epoch,
            r.epochs,
            r.train_loss,
            r.validation_loss,
            if r.best { " *" } else { "" }
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(r.epoch as u64);
                bar.set_message(format!(
                    "loss {:.5} val_loss {:.5}",
                    r.train_loss, r.validation_loss
                ));
            }
            None if self.verbose && (r.epoch == 1 || r.epoch.is_multiple_of(10)) => {
                eprintln!("{line}")
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
