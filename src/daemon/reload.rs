//! Model reloads (SIGHUP or a changed model file).
//!
//! A reload re-reads the config file (when the daemon has one) and the
//! model it names, validates the model fully against the *running*
//! pipeline's channels, window and rate, and only then hands it to the
//! scorer, which switches between two batches: every window is scored by
//! one model or the other, none is dropped. A failed reload leaves the
//! running model in place. Only `model.path`, `detector.*` take effect on
//! a reload; any other change needs a restart (logged). With per-device or
//! per-group models, a reload also has every such scope re-read its
//! directory's current version (the scorer does, between two batches).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::model::{LoadedModel, ModelError};
use crate::problem::Problem;
use crate::scope::rules::FLEET;
use crate::scope::store::{ModelStore, StoreError};
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(Box<ConfigError>),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the new model does not fit the running pipeline:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Mismatch(Vec<Problem>),
}

impl From<ConfigError> for ReloadError {
    fn from(error: ConfigError) -> Self {
        Self::Config(Box::new(error))
    }
}

/// A validated model waiting for the scorer's next batch.
pub struct NewModel {
    pub model: LoadedModel,
    pub config: Config,
}

/// Where the reloader leaves a new model for the scorer; the latest wins.
pub type PendingModel = Arc<Mutex<Option<NewModel>>>;

struct ReloaderState {
    config_path: Option<PathBuf>,
    /// The config the pipeline was started with: channels, window and rate
    /// a new model must fit.
    running: Config,
    /// The latest accepted config (its model path, threshold, detector).
    current: Config,
}

/// Reloads the model (and the reloadable part of the config). Cheap to
/// clone; reloads are serialised.
#[derive(Clone)]
pub struct Reloader {
    state: Arc<Mutex<ReloaderState>>,
    pending: PendingModel,
    metrics: Metrics,
    /// Set by a reload when models are per device or group: the scorer
    /// re-reads every scope's current version.
    rescan: Arc<std::sync::atomic::AtomicBool>,
}

impl Reloader {
    pub fn new(config: &Config, pending: PendingModel, metrics: Metrics) -> Self {
        Self {
            state: Arc::new(Mutex::new(ReloaderState {
                config_path: None,
                running: config.clone(),
                current: config.clone(),
            })),
            pending,
            metrics,
            rescan: Arc::default(),
        }
    }

    /// Set when every model scope should re-read its current version.
    pub fn rescan_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.rescan.clone()
    }

    /// From now on, reloads re-read this config file.
    pub fn set_config_path(&self, path: &Path) {
        self.lock().config_path = Some(path.to_path_buf());
    }

    /// The model file currently served (or about to be).
    /// With `model.dir`, its `current` pointer, which changes when a
    /// version is installed or rolled back to.
    pub fn model_path(&self) -> PathBuf {
        let state = self.lock();
        match &state.current.model.dir {
            Some(dir) => dir.join("current"),
            None => state.current.model.path.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReloaderState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads the config file (if any) and the model, validates them and
    /// hands the model to the scorer. Blocking (the model is parsed and
    /// probed here). Logs and counts the result; returns the new model id.
    pub fn reload(&self, why: &str) -> Result<String, ReloadError> {
        let mut state = self.lock();
        let scoped = state.running.training.scope != crate::model::train::config::ScopeKind::Fleet;
        if scoped {
            self.rescan.store(true, Ordering::SeqCst);
        }
        let result = Self::prepare(&state);
        if scoped {
            if let Err(ReloadError::Store(StoreError::Empty { .. })) = &result {
                tracing::info!(why, "no fleet model to reload; the scopes re-read theirs");
                return Ok(String::new());
            }
        }
        match result {
            Ok((config, model)) => {
                let id = model.meta.id.clone();
                let threshold = config.detector.threshold.unwrap_or(model.meta.threshold);
                self.metrics
                    .model_loaded(FLEET, &model.meta.id, &model.meta.variant, threshold);
                self.metrics.reload("ok");
                tracing::info!(model = %id, path = %config.model.path.display(), threshold, why, "model reloaded");
                state.current = config.clone();
                *self.pending.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(NewModel { model, config });
                Ok(id)
            }
            Err(error) => {
                self.metrics.reload("failed");
                tracing::error!(why, "reload refused, the running model stays: {error}");
                Err(error)
            }
        }
    }

    fn prepare(state: &ReloaderState) -> Result<(Config, LoadedModel), ReloadError> {
        let config = match &state.config_path {
            Some(path) => {
                let new = Config::load(path)?;
                let ignored = restart_only_changes(&state.running, &new);
                if !ignored.is_empty() {
                    tracing::warn!(
                        keys = %ignored.join(", "),
                        "config changes that need a restart are ignored until then \
                         (a reload applies model.path and detector.* only)"
                    );
                }
                let mut config = state.running.clone();
                config.model.path = new.model.path;
                config.detector = new.detector;
                config
            }
            None => state.current.clone(),
        };
        let path = match &config.model.dir {
            Some(dir) => {
                ModelStore::open(dir)?
                    .current()?
                    .ok_or_else(|| StoreError::Empty { dir: dir.clone() })?
                    .path
            }
            None => config.model.path.clone(),
        };
        let model = LoadedModel::load_with(&path, &config.model.backend_options())?;
        let problems = state.running.model_problems(&model.meta);
        if !problems.is_empty() {
            return Err(ReloadError::Mismatch(problems));
        }
        Ok((config, model))
    }
}

/// The `section.key` paths that differ between two configs, except the
/// ones a reload applies.
fn restart_only_changes(running: &Config, new: &Config) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(running), serde_json::to_value(new)) else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    diff("", &a, &b, &mut keys);
    keys.retain(|k| k != "model.path" && !k.starts_with("detector."));
    keys
}

fn diff(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut names: Vec<&String> = x.keys().chain(y.keys()).collect();
            names.sort();
            names.dedup();
            for name in names {
                let key = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                match (x.get(name), y.get(name)) {
                    (Some(p), Some(q)) => diff(&key, p, q, out),
                    _ => out.push(key),
                }
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

/// Polls the model file every `interval`; reloads when its modification
/// time or size changes. Replace model files by renaming a complete file
/// over them: a half-written file is refused (and retried on the next
/// change).
pub fn watch_model(
    reloader: Reloader,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> {
    // Taken now, before the daemon's start returns: a file replaced right
    // after the start is a change, not the starting point.
    let mut seen = (reloader.model_path(), fingerprint(&reloader.model_path()));
    async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let path = reloader.model_path();
            let now = (path.clone(), fingerprint(&path));
            if now == seen {
                continue;
            }
            seen = now;
            if seen.1.is_none() {
                tracing::warn!(path = %path.display(), "the model file is gone; the running model stays");
                continue;
            }
            let r = reloader.clone();
            let _ = tokio::task::spawn_blocking(move || r.reload("the model file changed")).await;
            // The reload may have switched paths: start from what is there now.
            let path = reloader.model_path();
            seen = (path.clone(), fingerprint(&path));
        }
    }
}

/// A model file's modification time and size, if it is there.
fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

/// Reloads on every SIGHUP until aborted.
pub async fn reload_on_sighup(reloader: Reloader) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot install the SIGHUP handler: reloads by signal are off");
            return;
        };
        while hangup.recv().await.is_some() {
            let r = reloader.clone();
            let _ = tokio::task::spawn_blocking(move || r.reload("SIGHUP")).await;
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}
