//! One model scope's part of the scorer: its served model, or its online
//! trainer while it calibrates.

use crate::daemon::error::{CommandRefused, DaemonError};
use crate::evidence::EvidenceIds;
use crate::model::inference::BackendError;

use std::sync::Arc;

use std::path::PathBuf;

use crate::config::{Config, ModelFit};
use crate::control::{ControlCommand, Target};
use crate::detect::DetectorConfig;
use crate::model::config::BackendOptions;
use crate::model::train::config::{ScopeKind, TrainingMode};
use crate::model::LoadedModel;
use crate::online::drift::Drift;
use crate::online::trainer::{retrain_due, OnlineTrainer};
use crate::pipeline::ScoreStage;
use crate::record::{ModelState, Output, StatusRecord};
use crate::scope::dirs;
use crate::scope::rules::FLEET;
use crate::scope::store::ModelStore;
use crate::telemetry::Metrics;
use crate::window::Window;

/// With online training, the serving status (with the drift ratio) is
/// published this often (windows of a scope).
pub(crate) const STATUS_EVERY_WINDOWS: usize = 250;

/// What the scopes take from the config, picked once at the start: where
/// their models are, how one is loaded, checked and served, how many
/// scopes there may be, and the trainers' config.
#[derive(Debug, Clone)]
pub(crate) struct ScopeConfig {
    /// `model.dir`: a directory per scope; without it, `model.path` is the
    /// fleet's one model.
    pub(crate) dir: Option<PathBuf>,
    pub(crate) path: PathBuf,
    pub(crate) backend: BackendOptions,
    pub(crate) fit: ModelFit,
    pub(crate) serving: Serving,
    pub(crate) kind: ScopeKind,
    pub(crate) max_scopes: usize,
    pub(crate) retrain_every_h: f64,
    pub(crate) end_wait_ms: u64,
    /// With a finite input, the windows a scope holds while its first model
    /// trains (`training.max_windows`).
    pub(crate) hold: Option<usize>,
    /// With online training, the trainers' config: a training reads every
    /// section (the network from `model`, the windows from `input` and
    /// `window`, the schedule from `training`).
    pub(crate) trainer: Option<Config>,
}

impl ScopeConfig {
    pub(crate) fn of(config: &Config) -> Self {
        Self {
            dir: config.model.dir.clone(),
            path: config.model.path.clone(),
            backend: config.model.backend_options(),
            fit: config.model_fit(),
            serving: Serving::of(config),
            kind: config.training.scope,
            max_scopes: config.training.max_scopes,
            retrain_every_h: config.training.retrain_every_h,
            end_wait_ms: config.training.end_wait_ms,
            hold: config
                .input
                .is_finite()
                .then(|| config.training.max_windows.max(1)),
            trainer: (config.training.mode == TrainingMode::Online).then(|| config.clone()),
        }
    }

    /// Loads the model at `path` and checks it against the config.
    fn load(&self, path: &std::path::Path) -> Result<LoadedModel, DaemonError> {
        let model = LoadedModel::load_with(path, &self.backend)?;
        let problems = self.fit.problems(&model.meta);
        if !problems.is_empty() {
            return Err(DaemonError::Mismatch(problems));
        }
        Ok(model)
    }
}

/// What serving a model takes from the config (a reload brings its own).
#[derive(Debug, Clone)]
pub(crate) struct Serving {
    pub(crate) detector: DetectorConfig,
    pub(crate) max_devices: usize,
    /// The quantile of a model without a calibration of its own.
    pub(crate) threshold_quantile: f64,
}

impl Serving {
    pub(crate) fn of(config: &Config) -> Self {
        Self {
            detector: config.detector.clone(),
            max_devices: config.window.max_devices,
            threshold_quantile: config.training.threshold_quantile,
        }
    }
}

/// Opens the scopes that have a model or collected windows (all of them
/// checked now, so a bad model stops the start, exit 78). With one model
/// for the fleet, that is the fleet scope, which must have a model unless
/// the daemon trains its own.
pub(crate) fn open_scopes(
    config: &ScopeConfig,
    metrics: &Metrics,
    evidence: Option<&EvidenceIds>,
) -> Result<Vec<ServedScope>, DaemonError> {
    let Some(root) = config
        .dir
        .as_ref()
        .filter(|_| config.kind != ScopeKind::Fleet)
    else {
        return Ok(vec![ServedScope::open(
            config,
            metrics,
            Arc::from(FLEET),
            evidence,
        )?]);
    };
    let existing = dirs::existing(root);
    if existing.len() > config.max_scopes {
        return Err(DaemonError::TooManyScopes {
            dir: root.clone(),
            found: existing.len(),
            max: config.max_scopes,
        });
    }
    let mut scopes = Vec::new();
    let fleet = ModelStore::open(root)?;
    if fleet.current()?.is_some() || fleet.has_collected() {
        scopes.push(ServedScope::open(
            config,
            metrics,
            Arc::from(FLEET),
            evidence,
        )?);
    }
    for (name, _) in existing {
        scopes.push(ServedScope::open(
            config,
            metrics,
            Arc::from(name),
            evidence,
        )?);
    }
    tracing::info!(
        scopes = scopes.len(),
        kind = ?config.kind,
        "model scopes found in model.dir"
    );
    Ok(scopes)
}

/// One model scope's part of the scorer: a stage once it has a model;
/// before that (online training), the trainer collecting its windows.
pub(crate) struct ServedScope {
    pub(crate) name: Arc<str>,
    pub(crate) stage: Option<ScoreStage>,
    pub(crate) online: Option<OnlineTrainer>,
    pub(crate) drift: Option<Drift>,
    /// When the served model came, or a scheduled retraining was last tried.
    pub(crate) last_trained: std::time::Instant,
    pub(crate) windows_since_status: usize,
    /// The last calibration status sent (one per 5% of progress).
    pub(crate) last_status: Option<StatusRecord>,
    /// The version of the scope's directory being served.
    pub(crate) served_version: Option<String>,
    /// Windows that came while the scope's first model trained, scored
    /// once it is served; kept only for a finite input (a replay), whose
    /// end waits for that training. A live stream's windows are not held:
    /// scored minutes late, they would be stale alerts.
    pub(crate) held: Option<Held>,
    /// Where a raise's evidence gets its id (none kept without).
    evidence: Option<EvidenceIds>,
}

/// Windows held while a first model trains; at most `capacity` (the
/// training's own `max_windows`, which the memory budget already counts
/// twice per scope), the oldest dropped first.
#[derive(Debug, Default)]
pub(crate) struct Held {
    windows: std::collections::VecDeque<Window>,
    capacity: usize,
    dropped: usize,
}

impl Held {
    fn push(&mut self, windows: &[Window]) {
        for window in windows {
            if self.windows.len() >= self.capacity {
                self.windows.pop_front();
                self.dropped += 1;
            }
            self.windows.push_back(window.clone());
        }
    }
}

impl ServedScope {
    /// The scope's model (from its directory, or `model.path` without
    /// one) and trainer (with online training).
    pub(crate) fn open(
        config: &ScopeConfig,
        metrics: &Metrics,
        name: Arc<str>,
        evidence: Option<&EvidenceIds>,
    ) -> Result<Self, DaemonError> {
        let store = match &config.dir {
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
            None => Some(config.path.clone()),
        };
        let model = match model_path {
            Some(path) => Some(config.load(&path)?),
            None if config.trainer.is_some() => None,
            None => return Err(DaemonError::NoModel(config.dir.clone().unwrap_or_default())),
        };
        let trainer = match (&store, &config.trainer) {
            (Some(store), Some(trainer_config)) => Some(OnlineTrainer::new(
                trainer_config,
                store.clone(),
                metrics.clone(),
                name.clone(),
            )?),
            _ => None,
        };
        metrics.model_state(
            &name,
            if model.is_some() {
                ModelState::Serving.as_str()
            } else {
                ModelState::Calibrating.as_str()
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
            held: config.hold.map(|capacity| Held {
                capacity,
                ..Held::default()
            }),
            name,
            evidence: evidence.cloned(),
        };
        if let Some(model) = model {
            scope.serve(model, &config.serving, metrics);
        }
        Ok(scope)
    }

    /// Serves `model` from now on (a reload or an online training).
    pub(crate) fn serve(&mut self, model: LoadedModel, serving: &Serving, metrics: &Metrics) {
        let quantile = model
            .meta
            .calibration
            .as_ref()
            .map_or(serving.threshold_quantile, |c| c.quantile);
        self.drift = Some(Drift::new(quantile));
        self.last_trained = std::time::Instant::now();
        match &mut self.stage {
            Some(stage) => stage.replace_model(model, &serving.detector),
            None => {
                self.stage = Some(
                    ScoreStage::for_scope(
                        model,
                        &serving.detector,
                        serving.max_devices,
                        metrics.clone(),
                        self.name.clone(),
                    )
                    .with_evidence(self.evidence.clone()),
                )
            }
        }
        metrics.model_state(&self.name, ModelState::Serving.as_str());
    }

    /// Loads, checks and serves a version of the scope's directory.
    pub(crate) fn serve_version(
        &mut self,
        version: crate::scope::store::Version,
        config: &ScopeConfig,
        metrics: &Metrics,
    ) -> Result<(), CommandRefused> {
        let model = config.load(&version.path).map_err(|e| e.to_string())?;
        self.serve(model, &config.serving, metrics);
        self.served_version = Some(version.name);
        Ok(())
    }

    /// Serves the directory's current version if it is not the one served
    /// (a reload after `accelwatch models rollback --scope`).
    pub(crate) fn reread(
        &mut self,
        config: &ScopeConfig,
        metrics: &Metrics,
    ) -> Option<StatusRecord> {
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

    pub(crate) fn serving_status(&self) -> Option<StatusRecord> {
        let stage = self.stage.as_ref()?;
        let drift = self.drift.as_ref().map(Drift::ratio);
        Some(StatusRecord::serving(&stage.model().meta.id, drift).in_scope(&self.name))
    }

    pub(crate) fn run_command(
        &mut self,
        command: &ControlCommand,
        config: &ScopeConfig,
        metrics: &Metrics,
    ) -> Result<Option<StatusRecord>, CommandRefused> {
        let Some(trainer) = self.online.as_mut() else {
            return Err("training.mode is \"off\"".into());
        };
        tracing::info!(command = command.as_str(), scope = %self.name, "command accepted");
        match command {
            ControlCommand::Calibrate(_) => {
                trainer.recalibrate();
                self.stage = None;
                self.drift = None;
                self.last_status = None;
                metrics.model_state(&self.name, ModelState::Calibrating.as_str());
                Ok(Some(
                    StatusRecord::new(ModelState::Calibrating, 0, trainer.target())
                        .in_scope(&self.name),
                ))
            }
            ControlCommand::Retrain(_) => {
                let current = self
                    .stage
                    .as_ref()
                    .ok_or("no model is served yet; it is calibrating")?
                    .model()
                    .clone();
                trainer
                    .retrain(current)
                    .map_err(|e| CommandRefused(e.to_string()))?;
                let mut status = StatusRecord::new(ModelState::Training, 0, 0);
                status.progress = 1.0;
                Ok(Some(status.in_scope(&self.name)))
            }
            ControlCommand::Mark(mark) => {
                let removed = trainer.mark(mark.clone());
                tracing::info!(scope = %self.name, removed, "time range marked");
                Ok(None)
            }
            ControlCommand::Rollback(_) => {
                let version = trainer.store().rollback().map_err(|e| e.to_string())?;
                self.serve_version(version, config, metrics)?;
                Ok(self.serving_status())
            }
        }
    }

    /// A scheduled retraining, when one is due.
    pub(crate) fn scheduled(
        &mut self,
        config: &ScopeConfig,
        metrics: &Metrics,
    ) -> Option<StatusRecord> {
        let due = self.stage.is_some()
            && self.online.as_ref().is_some_and(|t| !t.is_training())
            && retrain_due(self.last_trained.elapsed(), config.retrain_every_h);
        if !due {
            return None;
        }
        // Tried once per period, whatever the outcome.
        self.last_trained = std::time::Instant::now();
        match self.run_command(&ControlCommand::Retrain(Target::all()), config, metrics) {
            Ok(status) => status,
            Err(why) => {
                tracing::warn!(scope = %self.name, %why, "scheduled retraining skipped");
                None
            }
        }
    }

    /// Scores `windows` (or, without a model yet, collects them), and says
    /// how the scope stands when that is news.
    pub(crate) fn process(
        &mut self,
        windows: &[Window],
        metrics: &Metrics,
    ) -> Result<Vec<Output>, BackendError> {
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
        match self.held.as_mut() {
            Some(held) if trainer.is_training() => held.push(windows),
            _ => trainer.collect(windows),
        }
        let state = if trainer.is_training() {
            ModelState::Training
        } else {
            ModelState::Calibrating
        };
        metrics.model_state(&self.name, state.as_str());
        let mut status =
            StatusRecord::new(state, trainer.collected(), trainer.target()).in_scope(&self.name);
        // Training means the calibration is complete.
        status.progress = if state == ModelState::Training {
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
    pub(crate) fn observe(
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

    /// Serves a model the online trainer finished: its status, then the
    /// scores of the windows held while it trained.
    pub(crate) fn take_learned(
        &mut self,
        serving: &Serving,
        metrics: &Metrics,
    ) -> Result<Vec<Output>, BackendError> {
        let Some(result) = self.online.as_mut().and_then(OnlineTrainer::finished) else {
            return Ok(Vec::new());
        };
        match result {
            Ok(learned) => {
                let mut status = StatusRecord::serving(&learned.model.meta.id, None);
                status.collected = learned.windows;
                status.target = learned.windows;
                self.serve(learned.model, serving, metrics);
                self.served_version = Some(learned.version);
                let mut out = vec![Output::Status(status.in_scope(&self.name))];
                out.extend(self.score_held(metrics)?);
                Ok(out)
            }
            // A refused retraining: the served model stays.
            Err(_) if self.stage.is_some() => Ok(Vec::new()),
            Err(_) => {
                metrics.model_state(&self.name, ModelState::Calibrating.as_str());
                self.last_status = None;
                let Some(trainer) = self.online.as_mut() else {
                    unreachable!("a training's result comes from the scope's trainer");
                };
                // What was held calibrates the next try.
                if let Some(held) = self.held.as_mut() {
                    let windows: Vec<Window> = held.windows.drain(..).collect();
                    trainer.collect(&windows);
                }
                // The trainer's target is training.min_windows.
                Ok(vec![Output::Status(
                    StatusRecord::new(ModelState::Calibrating, 0, trainer.target())
                        .in_scope(&self.name),
                )])
            }
        }
    }

    /// Scores the windows held while the first model trained.
    fn score_held(&mut self, metrics: &Metrics) -> Result<Vec<Output>, BackendError> {
        let Some(held) = self.held.as_mut() else {
            return Ok(Vec::new());
        };
        if held.dropped > 0 {
            tracing::warn!(
                scope = %self.name, dropped = held.dropped, kept = held.capacity,
                "more windows came while the first model trained than training.max_windows: \
                 the oldest were not scored"
            );
            held.dropped = 0;
        }
        if held.windows.is_empty() {
            return Ok(Vec::new());
        }
        let windows: Vec<Window> = held.windows.drain(..).collect();
        tracing::info!(scope = %self.name, windows = windows.len(), "scoring the windows held while the model trained");
        self.process(&windows, metrics)
    }

    /// A first training still running (what the end of a finite input
    /// waits for).
    pub(crate) fn first_training(&self) -> bool {
        self.stage.is_none() && self.online.as_ref().is_some_and(OnlineTrainer::is_training)
    }
}
