//! The commands behind the CLI. This is the top of the program: errors
//! become messages and exit codes here (anyhow is used from here up only).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};

use crate::cli::{CalibrateArgs, Command, DataArgs, EvaluateArgs, ScoreArgs, TrainArgs};
use crate::config::{Config, ConfigError, CsvColumns, Problem};
use crate::daemon::{model_problems, Daemon, DaemonError};
use crate::evaluation::{self, LabelledWindows};
use crate::model::net::Architecture;
use crate::model::train::{self, EpochReport, InputSpec};
use crate::model::{LoadedModel, ModelError};
use crate::pipeline::{window_spec, ScoreStage};
use crate::recording::{ReadOptions, RecordedWindow, Recording, RecordingError};
use crate::sink::jsonl::JsonlSink;
use crate::sink::{Output, Sink};
use crate::telemetry::Metrics;
use crate::window::WindowSpec;
use crate::EX_CONFIG;

/// EX_DATAERR: the input data is at fault.
pub const EX_DATAERR: u8 = 65;

/// An error on its way out, with the exit code it deserves.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        let error = error.into();
        let code = if let Some(daemon) = error.downcast_ref::<DaemonError>() {
            daemon.exit_code()
        } else if error.is::<ConfigError>() || error.is::<ModelError>() {
            EX_CONFIG
        } else if error.is::<RecordingError>() {
            EX_DATAERR
        } else {
            1
        };
        Failure { code, error }
    }
}

fn failure(code: u8, error: anyhow::Error) -> Failure {
    Failure { code, error }
}

pub fn execute(command: Command) -> Result<(), Failure> {
    match command {
        Command::Run { config } => {
            let runtime = runtime()?;
            let result = runtime.block_on(run(&config));
            // Past the shutdown grace a stage may still be busy: do not wait for it.
            runtime.shutdown_timeout(std::time::Duration::from_millis(500));
            result
        }
        Command::Validate { config } => validate(&config),
        Command::Train(args) => train_command(args),
        Command::Score(args) => score(args),
        Command::Evaluate(args) => evaluate(args),
        Command::Calibrate(args) => calibrate(args),
        Command::Demo(args) => runtime()?.block_on(crate::demo::run(args)),
        Command::Models(command) => models(command),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?)
}

pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs a daemon until its source ends or a signal arrives, then drains
/// within `grace` (else fails saying what was in flight). SIGHUP reloads;
/// systemd is notified when NOTIFY_SOCKET is set.
pub(crate) async fn serve(daemon: Daemon, grace: std::time::Duration) -> Result<(), Failure> {
    use crate::ops;
    let handle = daemon.shutdown_handle();
    let health = daemon.health();
    let (stopping, mut stop_requested) = tokio::sync::watch::channel(false);
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: stopping the sources and draining");
        ops::notify_stopping();
        let _ = stopping.send(true);
        let _ = handle.send(true);
    });
    let hangups = tokio::spawn(ops::reload_on_sighup(daemon.reloader()));
    let notifier = tokio::spawn(ops::notify_loop(
        daemon.health(),
        daemon.metrics.clone(),
        daemon.input_kind().to_string(),
        std::time::Duration::from_secs(5),
    ));
    ops::notify_ready(daemon.input_kind());
    let wait = daemon.wait();
    tokio::pin!(wait);
    let summary = tokio::select! {
        summary = &mut wait => summary,
        _ = stop_requested.wait_for(|stop| *stop) => {
            match tokio::time::timeout(grace, &mut wait).await {
                Ok(summary) => summary,
                Err(_) => {
                    let in_flight = health.in_flight();
                    tracing::error!("shutdown grace of {} ms is over; exiting with {in_flight}", grace.as_millis());
                    hangups.abort();
                    notifier.abort();
                    return Err(failure(1, anyhow!("did not drain within pipeline.shutdown_grace_ms ({} ms): {in_flight}", grace.as_millis())));
                }
            }
        }
    };
    ops::notify_stopping();
    signals.abort();
    hangups.abort();
    notifier.abort();
    summary?;
    Ok(())
}

async fn run(path: &Path) -> Result<(), Failure> {
    let config = Config::load(path)?;
    let grace = std::time::Duration::from_millis(config.pipeline.shutdown_grace_ms);
    let daemon = Daemon::start(config, Vec::new()).await?;
    daemon.reloader().set_config_path(path);
    tracing::info!(
        "SIGHUP or a changed model file reloads the model, model.path and detector.*; \
         other changes need a restart"
    );
    serve(daemon, grace).await
}

fn validate(path: &Path) -> Result<(), Failure> {
    let config = Config::load_unvalidated(path)?;
    let mut problems = config.validate();
    let mut model_line = String::new();
    match LoadedModel::load_with(&config.model.path, &config.model.backend_options()) {
        Ok(model) => {
            problems.extend(model_problems(&config, &model.meta));
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

fn load_config(path: Option<&Path>) -> Result<Config, Failure> {
    match path {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(Config::default()),
    }
}

fn read_options(
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

fn train_command(args: TrainArgs) -> Result<(), Failure> {
    let mut config = load_config(args.config.as_deref())?;
    if let Some(variant) = args.variant {
        config.model.variant = variant.into();
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
    train_model(&config, &args.data, &args.out, true, args.report.as_deref())?;
    Ok(())
}

/// Reads, windows, trains, checks the export and writes the model file
/// atomically. Shared by `train` and `demo`.
pub(crate) fn train_model(
    config: &Config,
    data: &DataArgs,
    out: &Path,
    verbose: bool,
    report: Option<&Path>,
) -> Result<train::TrainSummary, Failure> {
    let options = read_options(
        data,
        config,
        config.input.channels.clone(),
        config.input.sample_rate_hz,
        Vec::new(),
    );
    let recording = Recording::read(&data.data, &options)?;
    let spec = window_spec(config);
    let set = recording.window_set(spec);
    let arch = Architecture {
        window: spec.size,
        channels: spec.channels,
        model: config.model.clone(),
    };
    eprintln!(
        "training a {} autoencoder ({} inputs, latent {}) on {} windows of {} x {} from {} streams ({} rows) of {}",
        arch.model.variant.name(),
        arch.features(),
        arch.latent_dim(),
        set.len(),
        spec.size,
        config.input.channels.join(","),
        recording.streams.len(),
        recording.rows(),
        data.data.display()
    );
    let input = InputSpec::from_config(config);
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
    if gap > 1e-4 {
        return Err(anyhow!(
            "the exported model differs from the trained one by {gap} (more than 1e-4)"
        )
        .into());
    }
    write_atomically(out, &trained.onnx).with_context(|| format!("writing {}", out.display()))?;
    let s = &trained.summary;
    eprintln!(
        "trained {} in {:.1?}: {} training and {} held-out windows, {} epochs (best {}), \
         loss {:.5}, validation loss {:.5}, threshold {:.5} (q{}), candle/tract gap {:.1e}; wrote {} ({} bytes)",
        trained.meta.id,
        s.elapsed,
        s.train_windows,
        s.validation_windows,
        s.epochs_run,
        s.best_epoch,
        s.train_loss,
        s.validation_loss,
        s.threshold,
        config.training.threshold_quantile,
        gap,
        out.display(),
        trained.onnx.len()
    );
    Ok(trained.summary)
}

/// The loss curve as SVG and the per-epoch history and model metadata as JSON.
fn write_training_report(
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
        crate::report::loss_curve(&train, &validation),
    )
}

/// Writes to a temporary file beside `path`, then renames it into place,
/// so a reader never sees half a model.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Epoch progress: a bar on a terminal, a line every ten epochs otherwise.
struct Progress {
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

/// The windowing a model implies, with the config's gap and device limits.
fn model_window_spec(model: &LoadedModel, config: &Config) -> WindowSpec {
    WindowSpec {
        size: model.meta.window,
        hop: model.meta.hop,
        channels: model.meta.channels.len(),
        max_gap_ms: config.window.max_gap_ms,
        max_devices: usize::MAX,
        interval_ms: 1000.0 / model.meta.sample_rate_hz,
    }
}

const OFFLINE_BATCH: usize = 64;

/// Scores every window of a recording in order; returns the outputs and,
/// per window, the index of the stream it came from and its kept values.
fn score_recording(
    model: LoadedModel,
    config: &Config,
    data: &DataArgs,
    keep: Vec<String>,
    mut each: impl FnMut(&[RecordedWindow], &[Output]) -> Result<(), Failure>,
) -> Result<Recording, Failure> {
    let options = read_options(
        data,
        config,
        model.meta.channels.clone(),
        model.meta.sample_rate_hz,
        keep,
    );
    let recording = Recording::read(&data.data, &options)?;
    let windows = recording.windows(model_window_spec(&model, config));
    let mut stage = ScoreStage::new(model, config, Metrics::new()).quiet();
    for chunk in windows.chunks(OFFLINE_BATCH) {
        let batch: Vec<_> = chunk.iter().map(|w| w.window.clone()).collect();
        let outputs = stage
            .score(&batch)
            .map_err(|e| anyhow!("scoring {}: {e}", data.data.display()))?;
        each(chunk, &outputs)?;
    }
    Ok(recording)
}

fn score(args: ScoreArgs) -> Result<(), Failure> {
    let config = load_config(args.config.as_deref())?;
    let model = LoadedModel::load_with(&args.model, &config.model.backend_options())?;
    let mut sink = match &args.out {
        Some(path) => JsonlSink::new(Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => JsonlSink::new(Box::new(std::io::stdout())),
    };
    let (mut windows, mut over, mut alerts) = (0usize, 0usize, 0usize);
    score_recording(model, &config, &args.data, Vec::new(), |_, outputs| {
        for output in outputs {
            match output {
                Output::Window(w) => {
                    windows += 1;
                    over += w.over_threshold as usize;
                }
                Output::Alert(a) => alerts += (a.event == "raise") as usize,
                Output::Status(_) => {}
            }
            sink.write(output).context("writing scores")?;
        }
        Ok(())
    })?;
    sink.flush().context("writing scores")?;
    eprintln!("scored {windows} windows: {over} over the threshold, {alerts} alerts raised");
    Ok(())
}

fn evaluate(args: EvaluateArgs) -> Result<(), Failure> {
    let config = load_config(args.config.as_deref())?;
    let model = LoadedModel::load_with(&args.model, &config.model.backend_options())?;
    let model_id = model.meta.id.clone();
    let normalization = model.meta.normalization.clone();
    let mut keep = vec![args.label.clone()];
    keep.extend(args.group.clone());
    let mut w = LabelledWindows::default();
    let recording = score_recording(model, &config, &args.data, keep, |windows, outputs| {
        let records = outputs.iter().filter_map(|o| match o {
            Output::Window(record) => Some(record),
            Output::Alert(_) | Output::Status(_) => None,
        });
        for (window, record) in windows.iter().zip(records) {
            w.scores.push(record.score);
            w.over_threshold.push(record.over_threshold);
            w.in_alert.push(record.anomaly);
            w.threshold = record.threshold;
            w.latent.push(record.latent.clone());
            let mut input = window.window.data.clone();
            if let Some(norm) = &normalization {
                norm.apply(&mut input);
            }
            w.input.push(input);
            w.labels.push(window.kept[0]);
            // Without a group column, a device (or recording) is a group.
            w.groups
                .push(window.kept.get(1).copied().unwrap_or(window.stream as u32));
        }
        Ok(())
    })?;
    w.label_names = recording.levels[0].clone();
    for normal in &args.normal {
        if !w.label_names.contains(normal) {
            return Err(failure(
                EX_DATAERR,
                anyhow!(
                    "--normal {normal:?} never appears in column {:?} (values: {})",
                    args.label,
                    w.label_names.join(", ")
                ),
            ));
        }
    }
    let data = args.data.data.display().to_string();
    let grouped_by = match &args.group {
        Some(column) => format!("column {column:?}"),
        None => "device".to_string(),
    };
    let report = evaluation::evaluate(
        &w,
        &evaluation::Subject {
            model: &model_id,
            data: &data,
            label: &args.label,
            normal: &args.normal,
            grouped_by: &grouped_by,
        },
    );
    print!("{}", evaluation::markdown(&report));
    if let Some(dir) = &args.report {
        evaluation::write(dir, &report, &w)
            .with_context(|| format!("writing the report into {}", dir.display()))?;
    }
    Ok(())
}

/// Writes the sidecar of a model made elsewhere: the config's (or the
/// flags') channels, window, hop and rate, no normalisation (the model sees
/// raw units), and a threshold that is the chosen quantile of the model's
/// scores over a recording of normal data.
fn calibrate(args: CalibrateArgs) -> Result<(), Failure> {
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

/// One model directory's versions, the served one marked with `*`.
fn list_versions(
    store: &crate::online::store::ModelStore,
) -> Result<(), crate::online::store::StoreError> {
    let current = store.current()?;
    let versions = store.versions()?;
    if versions.is_empty() {
        println!("{}: no model yet", store.dir().display());
    }
    for version in versions {
        let mark = if Some(&version) == current.as_ref() {
            "*"
        } else {
            " "
        };
        let detail = match LoadedModel::load(&version.path) {
            Ok(model) => format!(
                "{} {}, threshold {:.4}",
                model.meta.id, model.meta.variant, model.meta.threshold
            ),
            Err(error) => format!("unreadable: {error}"),
        };
        println!("{mark} {}  {detail}", version.name);
    }
    Ok(())
}

fn models(command: crate::cli::ModelsCommand) -> Result<(), Failure> {
    use crate::cli::ModelsCommand;
    use crate::online::scope::{self, FLEET};
    use crate::online::store::ModelStore;
    let config_error = |e: crate::online::store::StoreError| failure(EX_CONFIG, e.into());
    match command {
        ModelsCommand::List { dir, scope } => {
            let scopes: Vec<String> = match scope {
                Some(scope) => vec![scope],
                None => std::iter::once(FLEET.to_string())
                    .chain(scope::existing(&dir).into_iter().map(|(name, _)| name))
                    .collect(),
            };
            let headed = scopes.len() > 1;
            for name in scopes {
                let scope_dir = scope::scope_dir(&dir, &name);
                if name != FLEET && !scope_dir.is_dir() {
                    // Listing must not create the directory of a misspelt scope.
                    return Err(failure(
                        EX_CONFIG,
                        anyhow::anyhow!("{}: no scope {name:?} there", dir.display()),
                    ));
                }
                let store = ModelStore::open(&scope_dir).map_err(config_error)?;
                if headed {
                    println!("{name}:");
                }
                list_versions(&store).map_err(config_error)?;
            }
            Ok(())
        }
        ModelsCommand::Rollback { dir, scope, to } => {
            let store = ModelStore::open(&scope::scope_dir(&dir, &scope)).map_err(config_error)?;
            let version = match to {
                Some(name) => {
                    store.set_current(&name).map_err(config_error)?;
                    name
                }
                None => store.rollback().map_err(config_error)?.name,
            };
            println!(
                "{}: serving {version} from the next reload",
                store.dir().display()
            );
            Ok(())
        }
    }
}
