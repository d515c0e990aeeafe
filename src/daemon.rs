//! The daemon: a source, then decoding and windowing, then batched scoring
//! and detection, then the sinks; bounded queues between stages.
//!
//! Shutdown runs front to back: the source stops on the shutdown signal (or
//! at the end of a replay) and drops its sender; each stage drains its
//! queue, then drops its own sender; the sinks flush last. Nothing accepted
//! is left half-processed.

use std::net::SocketAddr;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, Problem, TrainingMode};
use crate::model::{LoadedModel, ModelError, ModelMetadata};
use crate::online::control::{Command, Control};
use crate::online::store::{ModelStore, StoreError};
use crate::online::{retrain_due, Drift, OnlineTrainer, State};
use crate::ops::{Health, PendingModel, Pulse, Reloader};
use crate::pipeline::{IngestStage, ScoreStage};
use crate::sink::jsonl::JsonlSink;
use crate::sink::mqtt::MqttSink;
use crate::sink::{Output, Sink, StatusRecord};
use crate::source::{Frame, Source, SourceError};
use crate::telemetry::{self, Metrics};
use crate::window::Window;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("config and model disagree:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Mismatch(Vec<Problem>),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("model.dir: {0}")]
    Store(#[from] StoreError),
    #[error(
        "model.dir {0}: holds no model, and training.mode is \"off\" (train one with \
         `accelwatch train`, or set training.mode = \"online\")"
    )]
    NoModel(std::path::PathBuf),
    #[error("input: {0}")]
    Input(#[from] SourceError),
    #[error("output: {0}")]
    MqttOutput(crate::mqtt::MqttError),
    #[error("output.jsonl: cannot open {path}: {cause}")]
    Output {
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    #[error("telemetry.listen: cannot listen on {addr}: {cause}")]
    Listen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("pipeline stage failed: {0}")]
    Stage(String),
}

impl DaemonError {
    /// 78 (EX_CONFIG) when the configuration or the model is at fault.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Mismatch(_)
            | DaemonError::Model(_)
            | DaemonError::Store(_)
            | DaemonError::NoModel(_)
            | DaemonError::Input(_)
            | DaemonError::MqttOutput(_)
            | DaemonError::Output { .. }
            | DaemonError::Listen { .. } => crate::EX_CONFIG,
            DaemonError::Stage(_) => 1,
        }
    }
}

/// Where the config and the model disagree, with the config key to change.
pub fn model_problems(config: &Config, meta: &ModelMetadata) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut check = |ok: bool, key: &str, message: String| {
        if !ok {
            problems.push(Problem {
                key: key.into(),
                message,
            });
        }
    };
    check(
        config.input.channels == meta.channels,
        "input.channels",
        format!(
            "{:?}, but model {} expects {:?}",
            config.input.channels, meta.id, meta.channels
        ),
    );
    check(
        config.window.size == meta.window,
        "window.size",
        format!(
            "{}, but model {} takes windows of {} samples",
            config.window.size, meta.id, meta.window
        ),
    );
    check(
        (config.input.sample_rate_hz - meta.sample_rate_hz).abs() <= meta.sample_rate_hz * 0.01,
        "input.sample_rate_hz",
        format!(
            "{} Hz, but model {} was trained at {} Hz",
            config.input.sample_rate_hz, meta.id, meta.sample_rate_hz
        ),
    );
    problems
}

/// What a finished run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub frames: u64,
    pub windows: u64,
    pub alerts: u64,
}

/// A started daemon. Dropping it does not stop it: call
/// [`shutdown`](Self::shutdown) or wait for the source to end.
pub struct Daemon {
    shutdown: watch::Sender<bool>,
    telemetry_addr: Option<SocketAddr>,
    telemetry: Option<JoinHandle<()>>,
    stop_telemetry: watch::Sender<bool>,
    source: JoinHandle<u64>,
    ingest: JoinHandle<()>,
    scorer: JoinHandle<Result<(u64, u64), String>>,
    sinks: JoinHandle<()>,
    /// The MQTT output's connection, which sends its final status.
    mqtt_output: Option<JoinHandle<()>>,
    pub metrics: Metrics,
    reloader: Reloader,
    health: Health,
    model_watch: Option<JoinHandle<()>>,
    input_kind: String,
}

impl Daemon {
    /// Loads and checks everything, then starts every stage. Any problem
    /// with the config, the model, the input or an output is reported here,
    /// before a single sample is read.
    pub async fn start(
        config: Config,
        mut sinks: Vec<Box<dyn Sink>>,
    ) -> Result<Daemon, DaemonError> {
        let store = match &config.model.dir {
            Some(dir) => Some(ModelStore::open(dir)?),
            None => None,
        };
        let model_path = match &store {
            Some(store) => store.current()?.map(|version| version.path),
            None => Some(config.model.path.clone()),
        };
        let model = match model_path {
            Some(path) => Some(LoadedModel::load_with(
                &path,
                &config.model.backend_options(),
            )?),
            None if config.training.mode == TrainingMode::Online => None,
            None => {
                return Err(DaemonError::NoModel(
                    config.model.dir.clone().unwrap_or_default(),
                ))
            }
        };
        if let Some(model) = &model {
            let problems = model_problems(&config, &model.meta);
            if !problems.is_empty() {
                return Err(DaemonError::Mismatch(problems));
            }
        }
        let metrics = Metrics::new();
        let online = match (&store, config.training.mode) {
            (Some(store), TrainingMode::Online) => {
                Some(OnlineTrainer::new(&config, store.clone(), metrics.clone())?)
            }
            _ => None,
        };
        metrics.model_state(if model.is_some() {
            State::Serving.as_str()
        } else {
            State::Calibrating.as_str()
        });
        let mut source = Source::open(&config.input, &metrics)?;
        if config.output.jsonl != "off" {
            let jsonl = JsonlSink::open(&config.output.jsonl)
                .map_err(|(path, cause)| DaemonError::Output { path, cause })?;
            sinks.insert(0, Box::new(jsonl));
        }
        let mqtt_output = match MqttSink::open(&config, metrics.clone()) {
            Ok(Some((sink, task))) => {
                sinks.push(Box::new(sink));
                Some(task)
            }
            Ok(None) => None,
            Err(error) => return Err(DaemonError::MqttOutput(error)),
        };
        let drift = model.as_ref().map(|model| {
            Drift::new(
                model
                    .meta
                    .calibration
                    .as_ref()
                    .map_or(config.training.threshold_quantile, |c| c.quantile),
            )
        });
        let (control, commands) = match online {
            Some(_) => {
                let (control, commands) = Control::channel();
                (Some(control), Some(commands))
            }
            None => (None, None),
        };
        if let (Source::Mqtt(mqtt), Some(control)) = (&mut source, &control) {
            mqtt.set_control(control.clone());
        }
        let score_stage = model.map(|model| ScoreStage::new(model, &config, metrics.clone()));
        let pending = PendingModel::default();
        let reloader = Reloader::new(&config, pending.clone(), metrics.clone());
        let pulse = std::sync::Arc::new(Pulse::default());
        let (stop_telemetry, mut telemetry_stopped) = watch::channel(false);
        let (telemetry_addr, telemetry) = if config.telemetry.enabled {
            let stopped = async move {
                let _ = telemetry_stopped.wait_for(|stop| *stop).await;
            };
            let (addr, task) = telemetry::serve(
                config.telemetry.listen,
                metrics.clone(),
                control.clone(),
                stopped,
            )
            .await
            .map_err(|cause| DaemonError::Listen {
                addr: config.telemetry.listen,
                cause,
            })?;
            tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
            (Some(addr), Some(task))
        } else {
            (None, None)
        };

        let capacity = config.pipeline.queue_capacity;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (frame_tx, frame_rx) = mpsc::channel::<Frame>(capacity);
        let (window_tx, window_rx) = mpsc::channel::<Window>(capacity);
        let (output_tx, output_rx) = mpsc::channel::<Vec<Output>>(capacity);

        let health = Health {
            pulse: pulse.clone(),
            frames: frame_tx.downgrade(),
            windows: window_tx.downgrade(),
            outputs: output_tx.downgrade(),
        };
        let model_watch = (config.model.watch_interval_ms > 0).then(|| {
            let interval = std::time::Duration::from_millis(config.model.watch_interval_ms);
            tokio::spawn(crate::ops::watch_model(
                reloader.clone(),
                interval,
                shutdown_rx.clone(),
            ))
        });
        let source = tokio::spawn(source.run(frame_tx, shutdown_rx));
        let ingest = tokio::spawn(ingest(
            IngestStage::new(&config, metrics.clone()),
            frame_rx,
            window_tx,
            pulse.clone(),
        ));
        let max_batch = config.model.max_batch;
        let scorer = {
            let pulse = pulse.clone();
            let stage_config = config.clone();
            let stage_metrics = metrics.clone();
            tokio::task::spawn_blocking(move || {
                score_loop(
                    Scoring {
                        stage: score_stage,
                        online,
                        commands,
                        drift,
                        last_trained: std::time::Instant::now(),
                        windows_since_status: 0,
                        config: stage_config,
                        metrics: stage_metrics,
                    },
                    max_batch,
                    window_rx,
                    output_tx,
                    &pending,
                    &pulse,
                )
            })
        };
        let sinks = {
            let metrics = metrics.clone();
            tokio::task::spawn_blocking(move || sink_loop(sinks, output_rx, &metrics, &pulse))
        };
        metrics.set_input_kind(config.input.kind.name());
        metrics.set_ready(true);
        tracing::info!(input = ?config.input.kind, "pipeline started");
        Ok(Daemon {
            shutdown,
            telemetry_addr,
            telemetry,
            stop_telemetry,
            source,
            ingest,
            scorer,
            sinks,
            mqtt_output,
            metrics,
            reloader,
            health,
            model_watch,
            input_kind: config.input.kind.name().to_string(),
        })
    }

    /// Reloads the model (SIGHUP, a changed model file, or a test); see
    /// [`crate::ops`].
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The pipeline's heartbeat and queue depths.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// The input's kind, lower case (`replay`, `mqtt`, ...).
    pub fn input_kind(&self) -> &str {
        &self.input_kind
    }

    pub fn telemetry_addr(&self) -> Option<SocketAddr> {
        self.telemetry_addr
    }

    /// A handle that stops the sources when `true` is sent.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until every stage has drained, then stops the telemetry server.
    pub async fn wait(self) -> Result<RunSummary, DaemonError> {
        let join = |e: tokio::task::JoinError| DaemonError::Stage(e.to_string());
        let frames = self.source.await.map_err(join)?;
        if let Some(task) = self.model_watch {
            task.abort();
        }
        self.ingest.await.map_err(join)?;
        let scored = self.scorer.await.map_err(join)?;
        self.sinks.await.map_err(join)?;
        if let Some(mut task) = self.mqtt_output {
            // The sinks are dropped: the MQTT output is saying goodbye.
            // A broker that is away does not hold the exit for long.
            if tokio::time::timeout(crate::sink::mqtt::GOODBYE_TIMEOUT, &mut task)
                .await
                .is_err()
            {
                tracing::warn!("MQTT output: the offline status could not be sent in time");
                task.abort();
            }
        }
        self.metrics.set_ready(false);
        let _ = self.stop_telemetry.send(true);
        if let Some(task) = self.telemetry {
            let _ = task.await;
        }
        let (windows, alerts) = scored.map_err(DaemonError::Stage)?;
        tracing::info!(frames, windows, alerts, "pipeline drained");
        Ok(RunSummary {
            frames,
            windows,
            alerts,
        })
    }
}

/// Decodes and windows frames until the source is done.
async fn ingest(
    mut stage: IngestStage,
    mut frames: mpsc::Receiver<Frame>,
    windows: mpsc::Sender<Window>,
    pulse: std::sync::Arc<Pulse>,
) {
    let mut completed = Vec::new();
    while let Some(frame) = frames.recv().await {
        stage.ingest(&frame, &mut completed);
        Pulse::beat(&pulse.frames);
        for window in completed.drain(..) {
            if windows.send(window).await.is_err() {
                return;
            }
        }
    }
}

/// With online training, the serving status (with the drift ratio) is
/// published this often.
const STATUS_EVERY_WINDOWS: usize = 250;

/// The scorer's state: a stage once there is a model; before that (online
/// training), the trainer collecting windows.
struct Scoring {
    stage: Option<ScoreStage>,
    online: Option<OnlineTrainer>,
    commands: Option<std::sync::mpsc::Receiver<Command>>,
    drift: Option<Drift>,
    /// When the served model came, or a scheduled retraining was last tried.
    last_trained: std::time::Instant,
    windows_since_status: usize,
    config: Config,
    metrics: Metrics,
}

impl Scoring {
    /// Serves `model` from now on (a reload or an online training).
    fn serve(&mut self, model: LoadedModel, config: &Config) {
        let quantile = model
            .meta
            .calibration
            .as_ref()
            .map_or(config.training.threshold_quantile, |c| c.quantile);
        self.drift = Some(Drift::new(quantile));
        self.last_trained = std::time::Instant::now();
        match &mut self.stage {
            Some(stage) => stage.replace_model(model, config),
            None => self.stage = Some(ScoreStage::new(model, config, self.metrics.clone())),
        }
        self.metrics.model_state(State::Serving.as_str());
    }

    /// Carries out the commands that arrived; returns status records to
    /// publish.
    fn run_commands(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        let scheduled = self.stage.is_some()
            && self.online.as_ref().is_some_and(|t| !t.is_training())
            && retrain_due(
                self.last_trained.elapsed(),
                self.config.training.retrain_every_h,
            );
        if scheduled {
            // Tried once per period, whatever the outcome.
            self.last_trained = std::time::Instant::now();
            match self.run_command(Command::Retrain) {
                Ok(Some(status)) => out.push(Output::Status(status)),
                Ok(None) => {}
                Err(why) => tracing::warn!(%why, "scheduled retraining skipped"),
            }
        }
        while let Some(command) = self.commands.as_ref().and_then(|rx| rx.try_recv().ok()) {
            let name = command.as_str();
            let result = self.run_command(command);
            let label = if result.is_ok() {
                "accepted"
            } else {
                "refused"
            };
            self.metrics.command(name, label);
            match result {
                Ok(Some(status)) => out.push(Output::Status(status)),
                Ok(None) => {}
                Err(why) => tracing::warn!(command = name, %why, "command refused"),
            }
        }
        out
    }

    fn run_command(&mut self, command: Command) -> Result<Option<StatusRecord>, String> {
        let Some(trainer) = self.online.as_mut() else {
            return Err("training.mode is \"off\"".into());
        };
        tracing::info!(command = command.as_str(), "command accepted");
        match command {
            Command::Calibrate => {
                trainer.recalibrate();
                self.stage = None;
                self.drift = None;
                self.metrics.model_state(State::Calibrating.as_str());
                Ok(Some(StatusRecord::new(
                    State::Calibrating,
                    0,
                    trainer.target(),
                )))
            }
            Command::Retrain => {
                let current = self
                    .stage
                    .as_ref()
                    .ok_or("no model is served yet; it is calibrating")?
                    .model()
                    .clone();
                trainer.retrain(current)?;
                let mut status = StatusRecord::new(State::Training, 0, 0);
                status.progress = 1.0;
                Ok(Some(status))
            }
            Command::Mark(mark) => {
                let removed = trainer.mark(mark);
                tracing::info!(removed, "time range marked");
                Ok(None)
            }
            Command::Rollback => {
                let version = trainer.store().rollback().map_err(|e| e.to_string())?;
                let model =
                    LoadedModel::load_with(&version.path, &self.config.model.backend_options())
                        .map_err(|e| e.to_string())?;
                let problems = model_problems(&self.config, &model.meta);
                if !problems.is_empty() {
                    return Err(DaemonError::Mismatch(problems).to_string());
                }
                let mut status = StatusRecord::new(State::Serving, 0, 0);
                status.progress = 1.0;
                status.model = Some(model.meta.id.as_str().into());
                let config = self.config.clone();
                self.serve(model, &config);
                Ok(Some(status))
            }
        }
    }

    /// Feeds the drift score and the retraining buffer with a scored batch.
    /// With online training, a serving status with the drift ratio every
    /// [`STATUS_EVERY_WINDOWS`] windows.
    fn observe(&mut self, batch: &[Window], out: &[Output]) -> Option<StatusRecord> {
        let over = || {
            out.iter().filter_map(|o| match o {
                Output::Window(w) => Some(w.over_threshold || w.anomaly),
                _ => None,
            })
        };
        let mut status = None;
        if let Some(drift) = self.drift.as_mut() {
            for o in over() {
                drift.observe(o);
                self.windows_since_status += 1;
            }
            self.metrics.drift(drift.ratio());
            if self.online.is_some() && self.windows_since_status >= STATUS_EVERY_WINDOWS {
                self.windows_since_status = 0;
                let mut record = StatusRecord::new(State::Serving, 0, 0);
                record.progress = 1.0;
                record.model = self
                    .stage
                    .as_ref()
                    .map(|s| s.model().meta.id.as_str().into());
                record.drift = Some(drift.ratio());
                status = Some(record);
            }
        }
        if let Some(trainer) = self.online.as_mut() {
            trainer.observe(batch, over());
        }
        status
    }

    /// Serves a model the online trainer finished, and says so; false when
    /// the outputs are gone.
    fn take_learned(&mut self, outputs: &mpsc::Sender<Vec<Output>>) -> bool {
        let Some(result) = self.online.as_mut().and_then(OnlineTrainer::finished) else {
            return true;
        };
        let status = match result {
            Ok(learned) => {
                let mut status =
                    StatusRecord::new(State::Serving, learned.windows, learned.windows);
                status.model = Some(learned.model.meta.id.as_str().into());
                let config = self.config.clone();
                self.serve(learned.model, &config);
                status
            }
            // A refused retraining: the served model stays.
            Err(_) if self.stage.is_some() => return true,
            Err(_) => {
                self.metrics.model_state(State::Calibrating.as_str());
                StatusRecord::new(State::Calibrating, 0, self.config.training.min_windows)
            }
        };
        outputs.blocking_send(vec![Output::Status(status)]).is_ok()
    }
}

/// Scores batches of windows on a blocking thread (inference is CPU work);
/// a batch is whatever is queued, up to `max_batch`, so a lone window
/// waits for nobody. Without a model yet, windows go to the online trainer,
/// and status records say how far it is.
fn score_loop(
    mut scoring: Scoring,
    max_batch: usize,
    mut windows: mpsc::Receiver<Window>,
    outputs: mpsc::Sender<Vec<Output>>,
    pending: &PendingModel,
    pulse: &Pulse,
) -> Result<(u64, u64), String> {
    let (mut scored, mut alerts) = (0u64, 0u64);
    let mut batch = Vec::with_capacity(max_batch);
    let mut last_status: Option<StatusRecord> = None;
    loop {
        // With online training, poll: a finished model is served (and its
        // status sent), and a command carried out, without waiting for the
        // next window.
        let first = if scoring.online.is_some() {
            match windows.try_recv() {
                Ok(window) => window,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if !scoring.take_learned(&outputs) {
                        break;
                    }
                    let commanded = scoring.run_commands();
                    if !commanded.is_empty() && outputs.blocking_send(commanded).is_err() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        } else {
            match windows.blocking_recv() {
                Some(window) => window,
                None => break,
            }
        };
        batch.clear();
        batch.push(first);
        while batch.len() < max_batch {
            match windows.try_recv() {
                Ok(window) => batch.push(window),
                Err(_) => break,
            }
        }
        // A reloaded model takes over between two batches.
        if let Some(new) = pending.lock().unwrap_or_else(|e| e.into_inner()).take() {
            scoring.serve(new.model, &new.config);
        }
        if !scoring.take_learned(&outputs) {
            break;
        }
        let commanded = scoring.run_commands();
        if !commanded.is_empty() && outputs.blocking_send(commanded).is_err() {
            break;
        }
        let out = match scoring.stage.as_mut() {
            Some(stage) => {
                let mut out = stage.score(&batch)?;
                if let Some(status) = scoring.observe(&batch, &out) {
                    out.push(Output::Status(status));
                }
                out
            }
            None => {
                let trainer = scoring
                    .online
                    .as_mut()
                    .expect("no model only with online training");
                trainer.collect(&batch);
                let state = if trainer.is_training() {
                    State::Training
                } else {
                    State::Calibrating
                };
                scoring.metrics.model_state(state.as_str());
                let status = StatusRecord::new(state, trainer.collected(), trainer.target());
                // A status per 5% of progress and per change of state.
                let changed = last_status.as_ref().is_none_or(|last| {
                    last.state != status.state || status.progress >= last.progress + 0.05
                });
                if changed {
                    last_status = Some(status.clone());
                    vec![Output::Status(status)]
                } else {
                    Vec::new()
                }
            }
        };
        Pulse::beat(&pulse.batches);
        if scoring.stage.is_some() {
            scored += batch.len() as u64;
        }
        alerts += out.iter().filter(|o| matches!(o, Output::Alert(_))).count() as u64;
        if !out.is_empty() && outputs.blocking_send(out).is_err() {
            break;
        }
    }
    if let (None, Some(trainer)) = (&scoring.stage, &scoring.online) {
        trainer.save();
    }
    Ok((scored, alerts))
}

/// Writes every batch to every sink. A failing sink is counted and logged
/// once per failure streak; the others go on.
fn sink_loop(
    mut sinks: Vec<Box<dyn Sink>>,
    mut outputs: mpsc::Receiver<Vec<Output>>,
    metrics: &Metrics,
    pulse: &Pulse,
) {
    let mut failing = vec![false; sinks.len()];
    while let Some(batch) = outputs.blocking_recv() {
        Pulse::beat(&pulse.written);
        for (sink, failing) in sinks.iter_mut().zip(failing.iter_mut()) {
            let result = batch
                .iter()
                .try_for_each(|output| sink.write(output))
                .and_then(|_| sink.flush());
            match result {
                Ok(()) => *failing = false,
                Err(error) => {
                    metrics.output_error(sink.name());
                    if !*failing {
                        tracing::error!(sink = sink.name(), %error, "output failed");
                    }
                    *failing = true;
                }
            }
        }
    }
    for sink in &mut sinks {
        if let Err(error) = sink.flush() {
            tracing::error!(sink = sink.name(), %error, "final flush failed");
        }
    }
}
