//! Collects calibration windows, runs trainings in the background and
//! hands their models back.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;

use crate::config::Config;
use crate::control::{Label, Mark};
use crate::model::train::WindowSet;
use crate::model::LoadedModel;
use crate::scope::store::{ModelStore, StoreError};
use crate::telemetry::Metrics;
use crate::window::Window;

use super::background::*;
use super::learn::*;
use super::normal::*;

/// Collects calibration windows and runs trainings in the background.
pub struct OnlineTrainer {
    /// The scope this trainer collects and trains for (see [`scope`]).
    scope: Arc<str>,
    config: Config,
    store: ModelStore,
    collected: WindowSet,
    streams: HashMap<Arc<str>, usize>,
    next_stream: usize,
    running: Option<mpsc::Receiver<Result<Learned, LearnError>>>,
    metrics: Metrics,
    saved_at: usize,
    normal: NormalWindows,
    /// Device and time span of each collected window (unknown for windows
    /// restored from disk).
    collected_spans: Vec<(Arc<str>, f64, f64)>,
    pub(crate) marks: Vec<Mark>,
    /// When the calibration's first window came (Unix ms).
    pub(crate) calibrating_since: Option<f64>,
}

/// Marks remembered, newest last.
pub(crate) const MAX_MARKS: usize = 1000;

/// Collected windows are written to the model directory this often, so a
/// restart keeps them.
pub(crate) const SAVE_EVERY: usize = 100;

impl OnlineTrainer {
    /// Picks up the windows and marks a previous run left in `store`.
    pub fn new(
        config: &Config,
        store: ModelStore,
        metrics: Metrics,
        scope: Arc<str>,
    ) -> Result<Self, StoreError> {
        let features = config.window.size * config.input.channels.len();
        let collected = store
            .load_collected(features)?
            .unwrap_or_else(|| WindowSet::new(features));
        if !collected.is_empty() {
            tracing::info!(
                %scope, windows = collected.len(),
                "calibration resumes with the windows collected before the restart"
            );
        }
        let marks = store.load_marks()?;
        let next_stream = collected.streams.iter().max().map_or(0, |m| m + 1);
        let unknown: Arc<str> = Arc::from("");
        let collected_spans = vec![(unknown, f64::NAN, f64::NAN); collected.len()];
        let trainer = Self {
            calibrating_since: store.calibrating_since(),
            scope,
            collected_spans,
            marks,
            next_stream,
            config: config.clone(),
            saved_at: collected.len(),
            collected,
            streams: HashMap::new(),
            store,
            running: None,
            normal: NormalWindows::new(
                config.training.max_windows,
                config.window.size.div_ceil(config.window.hop),
                config.window.max_devices,
            ),
            metrics,
        };
        trainer.report();
        Ok(trainer)
    }

    pub fn store(&self) -> &ModelStore {
        &self.store
    }

    pub fn target(&self) -> usize {
        self.config.training.min_windows
    }

    pub fn collected(&self) -> usize {
        self.collected.len()
    }

    /// How far the calibration is, 0 to 1: the smaller of the windows
    /// collected over min_windows and, with training.min_duration_s, the
    /// time since it began over that.
    pub fn progress(&self) -> f64 {
        let windows = self.collected.len() as f64 / self.target().max(1) as f64;
        let duration = self.config.training.min_duration_s;
        let time = match self.calibrating_since {
            _ if duration <= 0.0 => 1.0,
            Some(since) => (crate::clock::unix_ms() - since) / 1000.0 / duration,
            None => 0.0,
        };
        windows.min(time).clamp(0.0, 1.0)
    }

    pub fn is_training(&self) -> bool {
        self.running.is_some()
    }

    fn report(&self) {
        self.metrics
            .calibration(&self.scope, self.collected.len(), self.target());
    }

    /// Adds calibration windows; starts the training once there are enough.
    pub fn collect(&mut self, windows: &[Window]) {
        if self.running.is_some() {
            return;
        }
        let max = self.config.training.max_windows;
        for window in windows {
            if self.collected.len() >= max {
                break;
            }
            if self.marked(window) == Some(Label::Abnormal) {
                continue;
            }
            self.collected_spans
                .push((window.device.clone(), window.t_start, window.t_end));
            let next = &mut self.next_stream;
            let stream = *self
                .streams
                .entry(window.device.clone())
                .or_insert_with(|| {
                    *next += 1;
                    *next - 1
                });
            self.collected.push(stream, &window.data);
        }
        self.report();
        if self.collected.len() >= self.saved_at + SAVE_EVERY {
            if let Err(error) = self.store.save_collected(&self.collected) {
                tracing::warn!(scope = %self.scope, %error, "cannot save the calibration windows");
            }
            self.saved_at = self.collected.len();
        }
        if self.calibrating_since.is_none() && !self.collected.is_empty() {
            let now = crate::clock::unix_ms();
            self.calibrating_since = Some(now);
            if let Err(error) = self.store.save_calibrating_since(now) {
                tracing::warn!(scope = %self.scope, %error, "cannot save when calibration began");
            }
        }
        if self.progress() >= 1.0 {
            self.start();
        }
    }

    fn start(&mut self) {
        // Kept on disk until a model is stored: a shutdown or crash
        // mid-training trains again from the same windows after a restart.
        if self.saved_at != self.collected.len() {
            if let Err(error) = self.store.save_collected(&self.collected) {
                tracing::warn!(scope = %self.scope, %error, "cannot save the calibration windows");
            }
            self.saved_at = self.collected.len();
        }
        let (tx, rx) = mpsc::channel();
        let features = self.collected.features;
        let set = std::mem::replace(&mut self.collected, WindowSet::new(features));
        self.collected_spans.clear();
        // Stream numbers belong to the set just handed over; a fleet of
        // ever-new device ids would otherwise grow this map for good.
        self.streams.clear();
        self.next_stream = 0;
        self.calibrating_since = None;
        self.saved_at = 0;
        let config = self.config.clone();
        let store = self.store.clone();
        let spawned = std::thread::Builder::new()
            .name("online-training".into())
            .spawn(move || {
                let result = in_background(config.training.cpu_share, |pacer| {
                    learn(&config, &store, &set, pacer)
                });
                let _ = tx.send(
                    result
                        .map_err(|e| LearnError::Thread(e.to_string()))
                        .and_then(|r| r),
                );
            });
        match spawned {
            Ok(_) => {
                tracing::info!(scope = %self.scope, "calibration complete: training in the background");
                self.running = Some(rx);
            }
            Err(error) => {
                tracing::error!(scope = %self.scope, %error, "cannot start the training thread")
            }
        }
    }

    /// A finished training's model, once.
    pub fn finished(&mut self) -> Option<Result<Learned, LearnError>> {
        let result = match self.running.as_ref()?.try_recv() {
            Ok(result) => result,
            Err(mpsc::TryRecvError::Empty) => return None,
            Err(mpsc::TryRecvError::Disconnected) => Err(LearnError::Died),
        };
        self.running = None;
        match &result {
            Ok(learned) => {
                self.metrics.training_run("ok", learned.excluded);
                self.store.clear_collected();
                self.saved_at = 0;
                tracing::info!(
                    scope = %self.scope, version = %learned.version, model = %learned.model.meta.id,
                    windows = learned.windows, excluded = learned.excluded,
                    threshold = learned.model.meta.threshold,
                    "online training done; serving the new model"
                );
            }
            Err(error @ LearnError::Rejected { .. }) => {
                self.metrics.training_run("rejected", 0);
                tracing::warn!(scope = %self.scope, %error, "the retrained model is not used");
            }
            Err(error) => {
                self.metrics.training_run("failed", 0);
                tracing::error!(scope = %self.scope, %error, "online training failed");
                self.report();
            }
        }
        Some(result)
    }

    /// Starts over: the next windows are collected for a new training
    /// (the `calibrate` command).
    pub fn recalibrate(&mut self) {
        self.calibrating_since = None;
        self.collected = WindowSet::new(self.collected.features);
        self.collected_spans.clear();
        self.streams.clear();
        self.next_stream = 0;
        self.saved_at = 0;
        self.store.clear_collected();
        self.report();
    }

    /// The label of the newest mark covering `window`, if any.
    fn marked(&self, window: &Window) -> Option<Label> {
        self.marks
            .iter()
            .rev()
            .find(|m| m.covers(&window.device, window.t_start, window.t_end))
            .map(|m| m.label)
    }

    /// Records a labelled time range: windows overlapping an abnormal one
    /// leave the calibration collection and the retraining buffer, and
    /// later ones are not collected; windows overlapping a normal one are
    /// kept for retraining whatever their score. Returns the windows
    /// removed.
    pub fn mark(&mut self, mark: Mark) -> usize {
        let mut removed = 0;
        if mark.label == Label::Abnormal {
            let keep: Vec<bool> = self
                .collected_spans
                .iter()
                .map(|(device, from, to)| !mark.covers(device, *from, *to))
                .collect();
            if keep.contains(&false) {
                let mut kept = WindowSet::new(self.collected.features);
                for (i, keep) in keep.iter().enumerate() {
                    if *keep {
                        kept.push(self.collected.streams[i], self.collected.window(i));
                    }
                }
                removed += self.collected.len() - kept.len();
                self.collected = kept;
                let mut spans = std::mem::take(&mut self.collected_spans).into_iter();
                self.collected_spans = keep
                    .iter()
                    .filter_map(|k| spans.next().filter(|_| *k))
                    .collect();
            }
            removed += self.normal.remove(&mark);
        }
        if self.marks.len() == MAX_MARKS {
            self.marks.remove(0);
        }
        self.marks.push(mark);
        if let Err(error) = self.store.save_marks(&self.marks) {
            tracing::warn!(scope = %self.scope, %error, "cannot save the marks");
        }
        self.report();
        removed
    }

    /// Remembers the scored windows judged normal, for a retraining.
    pub fn observe(&mut self, windows: &[Window], over: impl Iterator<Item = bool>) {
        for (window, over) in windows.iter().zip(over) {
            let over = match self.marked(window) {
                Some(Label::Abnormal) => true,
                Some(Label::Normal) => false,
                None => over,
            };
            self.normal.observe(window, over);
        }
        self.metrics
            .retrain_windows(&self.scope, self.normal.kept.len());
    }

    /// Windows available for a retraining.
    pub fn normal_windows(&self) -> usize {
        self.normal.kept.len()
    }

    /// Trains a successor of `current` from the recent normal windows, in
    /// the background; false (and why) when it cannot start.
    pub fn retrain(&mut self, current: LoadedModel) -> Result<(), LearnError> {
        if self.running.is_some() {
            return Err(LearnError::Busy);
        }
        let needed = retrain_windows_needed(self.config.training.min_windows);
        if self.normal.kept.len() < needed {
            return Err(LearnError::TooFewNormal {
                have: self.normal.kept.len(),
                needed,
            });
        }
        let (train_set, held_back) = self.normal.split(self.collected.features);
        let (tx, rx) = mpsc::channel();
        let config = self.config.clone();
        let store = self.store.clone();
        std::thread::Builder::new()
            .name("online-retraining".into())
            .spawn(move || {
                let result = in_background(config.training.cpu_share, |pacer| {
                    relearn(&config, &store, &train_set, &held_back, current, pacer)
                });
                let _ = tx.send(
                    result
                        .map_err(|e| LearnError::Thread(e.to_string()))
                        .and_then(|r| r),
                );
            })
            .map_err(|e| LearnError::Thread(e.to_string()))?;
        tracing::info!(
            scope = %self.scope, windows = self.normal.kept.len(),
            "retraining in the background"
        );
        self.running = Some(rx);
        Ok(())
    }

    /// Saves what is collected (at shutdown).
    pub fn save(&self) {
        if !self.collected.is_empty() {
            if let Err(error) = self.store.save_collected(&self.collected) {
                tracing::warn!(scope = %self.scope, %error, "cannot save the calibration windows");
            }
        }
    }
}

/// Whether a scheduled retraining is due: `every` has passed since the
/// served model came (or since the last attempt); never when `every` is 0.
pub fn retrain_due(since_last: std::time::Duration, every_h: f64) -> bool {
    every_h > 0.0 && since_last.as_secs_f64() >= every_h * 3600.0
}

/// Fewest normal windows a retraining starts from: half of what the first
/// training waited for.
pub fn retrain_windows_needed(min_windows: usize) -> usize {
    (min_windows / 2).max(20)
}
