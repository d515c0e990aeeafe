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

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, Problem, ScopeKind, TrainingMode};
use crate::logging::RateLimited;
use crate::model::{LoadedModel, ModelError, ModelMetadata};
use crate::online::control::{Command, Control, Target};
use crate::online::scope::{self, FLEET};
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
    #[error(
        "model.dir {dir}: holds models for {found} scopes, more than training.max_scopes \
         ({max}); raise it, or remove the directories of scopes no longer wanted"
    )]
    TooManyScopes {
        dir: std::path::PathBuf,
        found: usize,
        max: usize,
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
            | DaemonError::TooManyScopes { .. }
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
        let metrics = Metrics::new();
        let scopes = open_scopes(&config, &metrics)?;
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
        let (control, commands) = match config.training.mode {
            TrainingMode::Online => {
                let (control, commands) = Control::channel();
                (Some(control), Some(commands))
            }
            TrainingMode::Off => (None, None),
        };
        if let Source::Mqtt(mqtt) = &mut source {
            if let Some(control) = &control {
                mqtt.set_control(control.clone());
            }
            if config.training.scope == ScopeKind::Group {
                mqtt.keep_topics();
            }
        }
        let pending = PendingModel::default();
        let reloader = Reloader::new(&config, pending.clone(), metrics.clone());
        let rescan = reloader.rescan_flag();
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
                    Scoring::new(scopes, commands, stage_config, stage_metrics).rescan_on(rescan),
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
/// published this often (windows of a scope).
const STATUS_EVERY_WINDOWS: usize = 250;

/// Opens the scopes that have a model or collected windows (all of them
/// checked now, so a bad model stops the start, exit 78). With one model
/// for the fleet, that is the fleet scope, which must have a model unless
/// the daemon trains its own.
fn open_scopes(config: &Config, metrics: &Metrics) -> Result<Vec<Scope>, DaemonError> {
    let Some(root) = config
        .model
        .dir
        .as_ref()
        .filter(|_| config.training.scope != ScopeKind::Fleet)
    else {
        return Ok(vec![Scope::open(config, metrics, Arc::from(FLEET))?]);
    };
    let existing = scope::existing(root);
    if existing.len() > config.training.max_scopes {
        return Err(DaemonError::TooManyScopes {
            dir: root.clone(),
            found: existing.len(),
            max: config.training.max_scopes,
        });
    }
    let mut scopes = Vec::new();
    let fleet = ModelStore::open(root)?;
    if fleet.current()?.is_some() || fleet.has_collected() {
        scopes.push(Scope::open(config, metrics, Arc::from(FLEET))?);
    }
    for (name, _) in existing {
        scopes.push(Scope::open(config, metrics, Arc::from(name))?);
    }
    tracing::info!(
        scopes = scopes.len(),
        kind = ?config.training.scope,
        "model scopes found in model.dir"
    );
    Ok(scopes)
}

/// One model scope's part of the scorer: a stage once it has a model;
/// before that (online training), the trainer collecting its windows.
struct Scope {
    name: Arc<str>,
    stage: Option<ScoreStage>,
    online: Option<OnlineTrainer>,
    drift: Option<Drift>,
    /// When the served model came, or a scheduled retraining was last tried.
    last_trained: std::time::Instant,
    windows_since_status: usize,
    /// The last calibration status sent (one per 5% of progress).
    last_status: Option<StatusRecord>,
    /// The version of the scope's directory being served.
    served_version: Option<String>,
}

impl Scope {
    /// The scope's model (from its directory, or `model.path` without
    /// one) and trainer (with online training).
    fn open(config: &Config, metrics: &Metrics, name: Arc<str>) -> Result<Self, DaemonError> {
        let store = match &config.model.dir {
            Some(root) if &*name == FLEET => Some(ModelStore::open(root)?),
            Some(root) => Some(ModelStore::open_scope(root, &name)?),
            None => None,
        };
        let current = match &store {
            Some(store) => store.current()?,
            None => None,
        };
        let model_path = match &store {
            Some(_) => current.as_ref().map(|version| version.path.clone()),
            None => Some(config.model.path.clone()),
        };
        let online = config.training.mode == TrainingMode::Online;
        let model = match model_path {
            Some(path) => Some(LoadedModel::load_with(
                &path,
                &config.model.backend_options(),
            )?),
            None if online => None,
            None => {
                return Err(DaemonError::NoModel(
                    config.model.dir.clone().unwrap_or_default(),
                ))
            }
        };
        if let Some(model) = &model {
            let problems = model_problems(config, &model.meta);
            if !problems.is_empty() {
                return Err(DaemonError::Mismatch(problems));
            }
        }
        let trainer = match (&store, online) {
            (Some(store), true) => Some(OnlineTrainer::new(
                config,
                store.clone(),
                metrics.clone(),
                name.clone(),
            )?),
            _ => None,
        };
        metrics.model_state(
            &name,
            if model.is_some() {
                State::Serving.as_str()
            } else {
                State::Calibrating.as_str()
            },
        );
        let mut scope = Self {
            stage: None,
            online: trainer,
            drift: None,
            last_trained: std::time::Instant::now(),
            windows_since_status: 0,
            last_status: None,
            served_version: current.map(|version| version.name),
            name,
        };
        if let Some(model) = model {
            scope.serve(model, config, metrics);
        }
        Ok(scope)
    }

    /// Serves `model` from now on (a reload or an online training).
    fn serve(&mut self, model: LoadedModel, config: &Config, metrics: &Metrics) {
        let quantile = model
            .meta
            .calibration
            .as_ref()
            .map_or(config.training.threshold_quantile, |c| c.quantile);
        self.drift = Some(Drift::new(quantile));
        self.last_trained = std::time::Instant::now();
        match &mut self.stage {
            Some(stage) => stage.replace_model(model, config),
            None => {
                self.stage = Some(ScoreStage::for_scope(
                    model,
                    config,
                    metrics.clone(),
                    self.name.clone(),
                ))
            }
        }
        metrics.model_state(&self.name, State::Serving.as_str());
    }

    /// Loads, checks and serves a version of the scope's directory.
    fn serve_version(
        &mut self,
        version: crate::online::store::Version,
        config: &Config,
        metrics: &Metrics,
    ) -> Result<(), String> {
        let model = LoadedModel::load_with(&version.path, &config.model.backend_options())
            .map_err(|e| e.to_string())?;
        let problems = model_problems(config, &model.meta);
        if !problems.is_empty() {
            return Err(DaemonError::Mismatch(problems).to_string());
        }
        self.serve(model, config, metrics);
        self.served_version = Some(version.name);
        Ok(())
    }

    /// Serves the directory's current version if it is not the one served
    /// (a reload after `accelwatch models rollback --scope`).
    fn reread(&mut self, config: &Config, metrics: &Metrics) -> Option<StatusRecord> {
        let current = self.online.as_ref()?.store().current();
        let version = match current {
            Ok(Some(version)) if Some(&version.name) != self.served_version.as_ref() => version,
            Ok(_) => return None,
            Err(error) => {
                metrics.reload("failed");
                tracing::error!(scope = %self.name, %error, "reload: cannot read the model directory");
                return None;
            }
        };
        let name = version.name.clone();
        match self.serve_version(version, config, metrics) {
            Ok(()) => {
                metrics.reload("ok");
                tracing::info!(scope = %self.name, version = %name, "model reloaded");
                self.serving_status()
            }
            Err(error) => {
                metrics.reload("failed");
                tracing::error!(
                    scope = %self.name, version = %name,
                    "reload refused, the running model stays: {error}"
                );
                None
            }
        }
    }

    fn serving_status(&self) -> Option<StatusRecord> {
        let stage = self.stage.as_ref()?;
        let drift = self.drift.as_ref().map(Drift::ratio);
        Some(StatusRecord::serving(&stage.model().meta.id, drift).in_scope(&self.name))
    }

    fn run_command(
        &mut self,
        command: &Command,
        config: &Config,
        metrics: &Metrics,
    ) -> Result<Option<StatusRecord>, String> {
        let Some(trainer) = self.online.as_mut() else {
            return Err("training.mode is \"off\"".into());
        };
        tracing::info!(command = command.as_str(), scope = %self.name, "command accepted");
        match command {
            Command::Calibrate(_) => {
                trainer.recalibrate();
                self.stage = None;
                self.drift = None;
                self.last_status = None;
                metrics.model_state(&self.name, State::Calibrating.as_str());
                Ok(Some(
                    StatusRecord::new(State::Calibrating, 0, trainer.target()).in_scope(&self.name),
                ))
            }
            Command::Retrain(_) => {
                let current = self
                    .stage
                    .as_ref()
                    .ok_or("no model is served yet; it is calibrating")?
                    .model()
                    .clone();
                trainer.retrain(current)?;
                let mut status = StatusRecord::new(State::Training, 0, 0);
                status.progress = 1.0;
                Ok(Some(status.in_scope(&self.name)))
            }
            Command::Mark(mark) => {
                let removed = trainer.mark(mark.clone());
                tracing::info!(scope = %self.name, removed, "time range marked");
                Ok(None)
            }
            Command::Rollback(_) => {
                let version = trainer.store().rollback().map_err(|e| e.to_string())?;
                self.serve_version(version, config, metrics)?;
                Ok(self.serving_status())
            }
        }
    }

    /// A scheduled retraining, when one is due.
    fn scheduled(&mut self, config: &Config, metrics: &Metrics) -> Option<StatusRecord> {
        let due = self.stage.is_some()
            && self.online.as_ref().is_some_and(|t| !t.is_training())
            && retrain_due(self.last_trained.elapsed(), config.training.retrain_every_h);
        if !due {
            return None;
        }
        // Tried once per period, whatever the outcome.
        self.last_trained = std::time::Instant::now();
        match self.run_command(&Command::Retrain(Target::all()), config, metrics) {
            Ok(status) => status,
            Err(why) => {
                tracing::warn!(scope = %self.name, %why, "scheduled retraining skipped");
                None
            }
        }
    }

    /// Scores `windows` (or, without a model yet, collects them), and says
    /// how the scope stands when that is news.
    fn process(&mut self, windows: &[Window], metrics: &Metrics) -> Result<Vec<Output>, String> {
        if let Some(stage) = self.stage.as_mut() {
            let mut out = stage.score(windows)?;
            if let Some(status) = self.observe(windows, &out, metrics) {
                out.push(Output::Status(status));
            }
            return Ok(out);
        }
        let trainer = self
            .online
            .as_mut()
            .expect("a scope has a model or a trainer");
        trainer.collect(windows);
        let state = if trainer.is_training() {
            State::Training
        } else {
            State::Calibrating
        };
        metrics.model_state(&self.name, state.as_str());
        let mut status =
            StatusRecord::new(state, trainer.collected(), trainer.target()).in_scope(&self.name);
        // Training means the calibration is complete.
        status.progress = if state == State::Training {
            1.0
        } else {
            trainer.progress()
        };
        // A status per 5% of progress and per change of state.
        let changed = self.last_status.as_ref().is_none_or(|last| {
            last.state != status.state || status.progress >= last.progress + 0.05
        });
        if !changed {
            return Ok(Vec::new());
        }
        self.last_status = Some(status.clone());
        Ok(vec![Output::Status(status)])
    }

    /// Feeds the drift score and the retraining buffer with a scored batch.
    /// With online training, a serving status with the drift ratio every
    /// [`STATUS_EVERY_WINDOWS`] windows.
    fn observe(
        &mut self,
        batch: &[Window],
        out: &[Output],
        metrics: &Metrics,
    ) -> Option<StatusRecord> {
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
            metrics.drift(&self.name, drift.ratio());
            if self.online.is_some() && self.windows_since_status >= STATUS_EVERY_WINDOWS {
                self.windows_since_status = 0;
                status = self.serving_status();
            }
        }
        if let Some(trainer) = self.online.as_mut() {
            trainer.observe(batch, over());
        }
        status
    }

    /// Serves a model the online trainer finished; the status to send.
    fn take_learned(&mut self, config: &Config, metrics: &Metrics) -> Option<StatusRecord> {
        let result = self.online.as_mut().and_then(OnlineTrainer::finished)?;
        match result {
            Ok(learned) => {
                let mut status = StatusRecord::serving(&learned.model.meta.id, None);
                status.collected = learned.windows;
                status.target = learned.windows;
                self.serve(learned.model, config, metrics);
                self.served_version = Some(learned.version);
                Some(status.in_scope(&self.name))
            }
            // A refused retraining: the served model stays.
            Err(_) if self.stage.is_some() => None,
            Err(_) => {
                metrics.model_state(&self.name, State::Calibrating.as_str());
                self.last_status = None;
                Some(
                    StatusRecord::new(State::Calibrating, 0, config.training.min_windows)
                        .in_scope(&self.name),
                )
            }
        }
    }
}

/// The scorer's state: the model scopes, and the commands to them.
struct Scoring {
    scopes: Vec<Scope>,
    by_name: HashMap<Arc<str>, usize>,
    commands: Option<std::sync::mpsc::Receiver<Command>>,
    config: Config,
    metrics: Metrics,
    warned: RateLimited,
    /// Set by a reload: every device or group scope re-reads its current
    /// version.
    rescan: Arc<std::sync::atomic::AtomicBool>,
}

impl Scoring {
    fn new(
        scopes: Vec<Scope>,
        commands: Option<std::sync::mpsc::Receiver<Command>>,
        config: Config,
        metrics: Metrics,
    ) -> Self {
        let by_name = scopes
            .iter()
            .enumerate()
            .map(|(i, scope)| (scope.name.clone(), i))
            .collect();
        Self {
            scopes,
            by_name,
            commands,
            config,
            metrics,
            warned: RateLimited::new(std::time::Duration::from_secs(60)),
            rescan: Arc::default(),
        }
    }

    fn rescan_on(mut self, flag: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.rescan = flag;
        self
    }

    /// After a reload, the device and group scopes serve their directories'
    /// current versions (the fleet's comes through the reloader).
    fn reread_scopes(&mut self) -> Vec<Output> {
        if !self.rescan.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Vec::new();
        }
        let (config, metrics) = (&self.config, &self.metrics);
        self.scopes
            .iter_mut()
            .filter(|scope| &*scope.name != FLEET)
            .filter_map(|scope| scope.reread(config, metrics))
            .map(Output::Status)
            .collect()
    }

    fn trains_online(&self) -> bool {
        self.config.training.mode == TrainingMode::Online
    }

    /// The scope named `name`, opened (and its directory made) when it is
    /// first met; None when it cannot be opened (logged).
    fn scope_index(&mut self, name: &Arc<str>) -> Option<usize> {
        if let Some(&i) = self.by_name.get(name) {
            return Some(i);
        }
        match Scope::open(&self.config, &self.metrics, name.clone()) {
            Ok(scope) => {
                tracing::info!(scope = %name, "a new model scope: calibrating");
                self.scopes.push(scope);
                self.by_name.insert(name.clone(), self.scopes.len() - 1);
                Some(self.scopes.len() - 1)
            }
            Err(error) => {
                if let Some(held_back) = self.warned.check("scope", std::time::Instant::now()) {
                    tracing::error!(
                        scope = %name, %error, held_back,
                        "cannot open a model scope; its windows go to the fleet scope"
                    );
                }
                None
            }
        }
    }

    /// Splits a batch by scope, each part in arrival order. Windows of a
    /// scope beyond `training.max_scopes` (or one that cannot be opened)
    /// go to the fleet scope.
    fn route(&mut self, batch: &mut Vec<Window>) -> Vec<(usize, Vec<Window>)> {
        if self.config.training.scope == ScopeKind::Fleet {
            return vec![(0, std::mem::take(batch))];
        }
        let fleet: Arc<str> = Arc::from(FLEET);
        let mut parts: Vec<(usize, Vec<Window>)> = Vec::new();
        let mut overflow = 0;
        for window in batch.drain(..) {
            let name = window.scope.clone().unwrap_or_else(|| fleet.clone());
            let own = self.by_name.get(&name).copied().or_else(|| {
                let own_scopes = self.scopes.iter().filter(|s| &*s.name != FLEET).count();
                if &*name != FLEET && own_scopes >= self.config.training.max_scopes {
                    return None;
                }
                self.scope_index(&name)
            });
            let index = match own {
                Some(i) => i,
                None => {
                    overflow += 1;
                    match self.scope_index(&fleet) {
                        Some(i) => i,
                        None => continue,
                    }
                }
            };
            match parts.iter_mut().find(|(i, _)| *i == index) {
                Some((_, windows)) => windows.push(window),
                None => parts.push((index, vec![window])),
            }
        }
        if overflow > 0 {
            self.metrics.scope_overflow(overflow);
            if let Some(held_back) = self.warned.check("overflow", std::time::Instant::now()) {
                tracing::warn!(
                    max_scopes = self.config.training.max_scopes,
                    held_back,
                    "more devices or groups than training.max_scopes: the rest are scored \
                     by the fleet model (counted in accelwatch_scope_overflow_windows_total)"
                );
            }
        }
        parts
    }

    /// A reloaded model (SIGHUP, a changed file) is the fleet scope's.
    fn reload(&mut self, model: LoadedModel, config: &Config) {
        match self.by_name.get(FLEET) {
            Some(&i) => self.scopes[i].serve(model, config, &self.metrics),
            None => tracing::warn!("a reloaded model is the fleet's; this daemon serves none"),
        }
    }

    /// Models the online trainers finished, served; their statuses.
    fn take_learned(&mut self) -> Vec<Output> {
        let (config, metrics) = (&self.config, &self.metrics);
        self.scopes
            .iter_mut()
            .filter_map(|scope| scope.take_learned(config, metrics))
            .map(Output::Status)
            .collect()
    }

    /// Carries out the commands that arrived, and scheduled retrainings;
    /// returns status records to publish.
    fn run_commands(&mut self) -> Vec<Output> {
        let (config, metrics) = (&self.config, &self.metrics);
        let mut out: Vec<Output> = self
            .scopes
            .iter_mut()
            .filter_map(|scope| scope.scheduled(config, metrics))
            .map(Output::Status)
            .collect();
        while let Some(command) = self.commands.as_ref().and_then(|rx| rx.try_recv().ok()) {
            let name = command.as_str();
            let result = self.run_command(&command, &mut out);
            let label = if result.is_ok() {
                "accepted"
            } else {
                "refused"
            };
            self.metrics.command(name, label);
            if let Err(why) = result {
                tracing::warn!(command = name, %why, "command refused");
            }
        }
        out
    }

    /// Runs `command` in the scopes it is for; accepted when at least one
    /// of them took it.
    fn run_command(&mut self, command: &Command, out: &mut Vec<Output>) -> Result<(), String> {
        let target = match command {
            Command::Calibrate(t) | Command::Retrain(t) | Command::Rollback(t) => t.clone(),
            Command::Mark(_) => Target::all(),
        };
        if !self.trains_online() {
            return Err("training.mode is \"off\"".into());
        }
        let scoped = self.config.training.scope != ScopeKind::Fleet;
        if scoped && target.scope.is_none() && matches!(command, Command::Rollback(_)) {
            return Err(format!(
                "rollback needs a scope (one of {})",
                self.scope_names()
            ));
        }
        let chosen: Vec<usize> = (0..self.scopes.len())
            .filter(|&i| target.includes(&self.scopes[i].name))
            .collect();
        if chosen.is_empty() {
            return Err(match &target.scope {
                Some(name) => format!("no scope {name:?} (scopes: {})", self.scope_names()),
                None => "no scope has seen a window yet".into(),
            });
        }
        let mut errors = Vec::new();
        for i in chosen.iter().copied() {
            let scope = &mut self.scopes[i];
            match scope.run_command(command, &self.config, &self.metrics) {
                Ok(status) => out.extend(status.map(Output::Status)),
                Err(why) => errors.push(format!("{}: {why}", scope.name)),
            }
        }
        if errors.len() == chosen.len() {
            return Err(errors.join("; "));
        }
        for error in errors {
            tracing::warn!(command = command.as_str(), %error, "command refused in a scope");
        }
        Ok(())
    }

    fn scope_names(&self) -> String {
        let names: Vec<&str> = self.scopes.iter().map(|s| &*s.name).collect();
        if names.is_empty() {
            "none yet".into()
        } else {
            names.join(", ")
        }
    }

    /// Saves what the calibrating scopes collected (at shutdown).
    fn save(&self) {
        for scope in &self.scopes {
            if let (None, Some(trainer)) = (&scope.stage, &scope.online) {
                trainer.save();
            }
        }
    }
}

/// Scores batches of windows on a blocking thread (inference is CPU work);
/// a batch is whatever is queued, up to `max_batch`, so a lone window
/// waits for nobody. Each window goes to its model scope; a scope without
/// a model yet hands its windows to its online trainer, and status records
/// say how far it is.
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
    loop {
        // With online training, poll: a finished model is served (and its
        // status sent), and a command carried out, without waiting for the
        // next window.
        let first = if scoring.trains_online() {
            match windows.try_recv() {
                Ok(window) => window,
                Err(mpsc::error::TryRecvError::Empty) => {
                    let mut news = scoring.take_learned();
                    news.extend(scoring.reread_scopes());
                    news.extend(scoring.run_commands());
                    if !news.is_empty() && outputs.blocking_send(news).is_err() {
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
            scoring.reload(new.model, &new.config);
        }
        let mut out = scoring.take_learned();
        out.extend(scoring.reread_scopes());
        out.extend(scoring.run_commands());
        for (index, part) in scoring.route(&mut batch) {
            let scope = &mut scoring.scopes[index];
            let scoring_it = scope.stage.is_some();
            let produced = scope.process(&part, &scoring.metrics)?;
            if scoring_it {
                scored += part.len() as u64;
            }
            alerts += produced
                .iter()
                .filter(|o| matches!(o, Output::Alert(_)))
                .count() as u64;
            out.extend(produced);
        }
        Pulse::beat(&pulse.batches);
        if !out.is_empty() && outputs.blocking_send(out).is_err() {
            break;
        }
    }
    scoring.save();
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
