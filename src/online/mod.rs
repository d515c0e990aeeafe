//! Online training: the daemon learns "normal" from its own stream.
//!
//! With `training.mode = "online"` and no model in `model.dir`, the scorer
//! collects windows (calibration) until `training.min_windows`, then trains
//! the configured variant on a thread of its own, niced so that ingestion
//! and scoring keep their share of the CPU, and hands the model back to the
//! scorer, which serves it from its next batch. The model is written to the
//! [`store::ModelStore`] first, so a restart serves it.
//!
//! Nothing tells the daemon which collected windows are normal. Training
//! therefore runs twice: the first model scores every collected window, the
//! windows whose error is far above the bulk (median + 6 robust standard
//! deviations, from the median absolute deviation) and the windows
//! overlapping them are excluded, and the second model is trained on the
//! rest. An anomaly that is a minority of the calibration data is thus not
//! learned as normal.

pub mod control;
pub mod scope;
pub mod store;

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::model::net::Architecture;
use crate::model::train::{self, InputSpec, WindowSet};
use crate::model::LoadedModel;
use crate::score::Scorer;
use crate::telemetry::Metrics;
use crate::window::Window;
use control::{Label, Mark};
use store::{ModelStore, StoreError};

/// Robust standard deviations above the median error beyond which a
/// calibration window is excluded from the second training pass.
pub const EXCLUDE_MADS: f32 = 6.0;

/// Where the online trainer stands, for the status topic and /metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Calibrating,
    Training,
    Serving,
}

impl State {
    pub const ALL: [State; 3] = [State::Calibrating, State::Training, State::Serving];
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Calibrating => "calibrating",
            State::Training => "training",
            State::Serving => "serving",
        }
    }
}

/// A model trained online, already stored.
pub struct Learned {
    pub model: LoadedModel,
    pub version: String,
    pub windows: usize,
    pub excluded: usize,
}

/// Collects calibration windows and runs trainings in the background.
pub struct OnlineTrainer {
    /// The scope this trainer collects and trains for (see [`scope`]).
    scope: Arc<str>,
    config: Config,
    store: ModelStore,
    collected: WindowSet,
    streams: HashMap<Arc<str>, usize>,
    next_stream: usize,
    running: Option<mpsc::Receiver<Result<Learned, String>>>,
    metrics: Metrics,
    saved_at: usize,
    normal: NormalWindows,
    /// Device and time span of each collected window (unknown for windows
    /// restored from disk).
    collected_spans: Vec<(Arc<str>, f64, f64)>,
    marks: Vec<Mark>,
    /// When the calibration's first window came (Unix ms).
    calibrating_since: Option<f64>,
}

/// Marks remembered, newest last.
const MAX_MARKS: usize = 1000;

/// Collected windows are written to the model directory this often, so a
/// restart keeps them.
const SAVE_EVERY: usize = 100;

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
            Some(since) => (crate::source::unix_ms() - since) / 1000.0 / duration,
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
            let now = crate::source::unix_ms();
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
        self.calibrating_since = None;
        self.saved_at = 0;
        let config = self.config.clone();
        let store = self.store.clone();
        let spawned = std::thread::Builder::new()
            .name("online-training".into())
            .spawn(move || {
                let result = in_background(config.training.cpu_share, |pacer| {
                    learn(&config, &store, &set, pacer).map_err(|e| e.to_string())
                });
                let _ = tx.send(result.and_then(|r| r));
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
    pub fn finished(&mut self) -> Option<Result<Learned, String>> {
        let result = match self.running.as_ref()?.try_recv() {
            Ok(result) => result,
            Err(mpsc::TryRecvError::Empty) => return None,
            Err(mpsc::TryRecvError::Disconnected) => Err("the training thread died".into()),
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
            Err(error) if error.starts_with(REJECTED) => {
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
    pub fn retrain(&mut self, current: LoadedModel) -> Result<(), String> {
        if self.running.is_some() {
            return Err("a training is already running".into());
        }
        let needed = retrain_windows_needed(self.config.training.min_windows);
        if self.normal.kept.len() < needed {
            return Err(format!(
                "{} normal windows collected since the model was served, {needed} needed",
                self.normal.kept.len()
            ));
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
                        .map_err(|e| e.to_string())
                });
                let _ = tx.send(result.and_then(|r| r));
            })
            .map_err(|e| format!("cannot start the training thread: {e}"))?;
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

/// Share of recent normal windows held back to compare a retrained model
/// with the served one.
pub const HELD_BACK_FRACTION: f64 = 0.2;

/// How much more of the held-back normal windows a retrained model may put
/// over its threshold than the served model does over its own.
pub const NOT_WORSE_MARGIN: f64 = 0.01;

const REJECTED: &str = "rejected";

/// Recent windows the served model judged normal. A window is kept only
/// once the `margin` windows after it on its device were normal too, and
/// the `margin` windows after an over-threshold one are dropped, so the
/// surroundings of an anomaly are not learned as normal either.
struct NormalWindows {
    capacity: usize,
    margin: usize,
    pending: HashMap<Arc<str>, (VecDeque<Kept>, usize)>,
    streams: HashMap<Arc<str>, usize>,
    kept: VecDeque<Kept>,
}

/// A window kept for retraining: its stream, values and span.
struct Kept {
    stream: usize,
    data: Vec<f32>,
    device: Arc<str>,
    t_start: f64,
    t_end: f64,
}

impl NormalWindows {
    fn new(capacity: usize, margin: usize) -> Self {
        Self {
            capacity,
            margin,
            pending: HashMap::new(),
            streams: HashMap::new(),
            kept: VecDeque::new(),
        }
    }

    fn observe(&mut self, window: &Window, over: bool) {
        let next = self.streams.len();
        let stream = *self.streams.entry(window.device.clone()).or_insert(next);
        let (queue, cooldown) = self.pending.entry(window.device.clone()).or_default();
        if over {
            queue.clear();
            *cooldown = self.margin;
            return;
        }
        if *cooldown > 0 {
            *cooldown -= 1;
            return;
        }
        queue.push_back(Kept {
            stream,
            data: window.data.clone(),
            device: window.device.clone(),
            t_start: window.t_start,
            t_end: window.t_end,
        });
        if queue.len() > self.margin {
            let confirmed = queue.pop_front().expect("longer than the margin");
            if self.kept.len() == self.capacity {
                self.kept.pop_front();
            }
            self.kept.push_back(confirmed);
        }
    }

    /// Forgets the windows `mark` covers, kept or pending; returns how many.
    fn remove(&mut self, mark: &Mark) -> usize {
        let before = self.kept.len();
        self.kept
            .retain(|k| !mark.covers(&k.device, k.t_start, k.t_end));
        let mut removed = before - self.kept.len();
        for (queue, _) in self.pending.values_mut() {
            let before = queue.len();
            queue.retain(|k| !mark.covers(&k.device, k.t_start, k.t_end));
            removed += before - queue.len();
        }
        removed
    }

    /// The older windows to train on and the newest ones held back, each
    /// grouped by device in time order.
    fn split(&self, features: usize) -> (WindowSet, WindowSet) {
        let held = ((self.kept.len() as f64) * HELD_BACK_FRACTION).ceil() as usize;
        let cut = self.kept.len() - held;
        let mut train_set = WindowSet::new(features);
        let mut held_back = WindowSet::new(features);
        // The windows just before the cut overlap the held-back ones.
        for (i, kept) in self.kept.iter().enumerate() {
            if i < cut.saturating_sub(self.margin) {
                train_set.push(kept.stream, &kept.data);
            } else if i >= cut {
                held_back.push(kept.stream, &kept.data);
            }
        }
        (grouped_by_stream(&train_set), held_back)
    }
}

/// Share of `set`'s windows a model puts over its threshold.
fn alarm_rate(model: LoadedModel, set: &WindowSet) -> Result<f64, LearnError> {
    let threshold = model.meta.threshold;
    let mut scorer = Scorer::new(model);
    let scores = scorer
        .score((0..set.len()).map(|i| set.window(i)))
        .map_err(LearnError::Score)?;
    let over = scores.iter().filter(|s| s.score as f64 > threshold).count();
    Ok(over as f64 / set.len().max(1) as f64)
}

/// Trains on `train_set`; keeps the model only if its alarm rate on the
/// held-back normal windows is not worse than the served model's.
fn relearn(
    config: &Config,
    store: &ModelStore,
    train_set: &WindowSet,
    held_back: &WindowSet,
    current: LoadedModel,
    pacer: &mut CpuPacer,
) -> Result<Learned, LearnError> {
    let candidate = train_model(config, train_set, pacer)?;
    let model = load_online(&candidate.onnx)?;
    let new_rate = alarm_rate(model.clone(), held_back)?;
    let old_rate = alarm_rate(current, held_back)?;
    if new_rate > old_rate + NOT_WORSE_MARGIN {
        return Err(LearnError::Rejected { new_rate, old_rate });
    }
    let version = store.install(
        &candidate.onnx,
        &data_hash(train_set),
        config.training.keep_versions,
    )?;
    Ok(Learned {
        model,
        version: version.name,
        windows: train_set.len(),
        excluded: 0,
    })
}

fn train_model(
    config: &Config,
    set: &WindowSet,
    pacer: &mut CpuPacer,
) -> Result<train::Trained, LearnError> {
    let arch = Architecture::from_config(config);
    let input = InputSpec::from_config(config);
    Ok(train::train_paced(
        &arch,
        &config.training,
        &input,
        set,
        &mut |_| {},
        &mut || pacer.pace(),
    )?)
}

fn load_online(onnx: &[u8]) -> Result<LoadedModel, LearnError> {
    LoadedModel::from_bytes(onnx, std::path::Path::new("<online>"))
        .map_err(|e| LearnError::Load(e.to_string()))
}

fn data_hash(set: &WindowSet) -> String {
    let hash = Sha256::digest(
        set.data
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    hash[..6].iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, thiserror::Error)]
enum LearnError {
    #[error(
        "rejected: it puts {:.1}% of the held-back normal windows over its threshold, the \
         served model {:.1}%", new_rate * 100.0, old_rate * 100.0
    )]
    Rejected { new_rate: f64, old_rate: f64 },
    #[error(transparent)]
    Train(#[from] train::TrainError),
    #[error("the trained model does not load: {0}")]
    Load(String),
    #[error("scoring the calibration windows: {0}")]
    Score(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Trains, excludes outlying windows, trains again, stores the model.
fn learn(
    config: &Config,
    store: &ModelStore,
    set: &WindowSet,
    pacer: &mut CpuPacer,
) -> Result<Learned, LearnError> {
    let set = &grouped_by_stream(set);
    let first = train_model(config, set, pacer)?;
    let mut scorer = Scorer::new(load_online(&first.onnx)?);
    let errors: Vec<f32> = scorer
        .score((0..set.len()).map(|i| set.window(i)))
        .map_err(LearnError::Score)?
        .into_iter()
        .map(|s| s.score)
        .collect();
    let overlap = config.window.size.div_ceil(config.window.hop);
    let keep = inliers(&errors, &set.streams, overlap);
    let excluded = set.len() - keep.len();
    let trained = if excluded == 0 {
        first
    } else {
        let mut kept = WindowSet::new(set.features);
        for &i in &keep {
            kept.push(set.streams[i], set.window(i));
        }
        train_model(config, &kept, pacer)?
    };
    let version = store.install(
        &trained.onnx,
        &data_hash(set),
        config.training.keep_versions,
    )?;
    Ok(Learned {
        model: load_online(&trained.onnx)?,
        version: version.name,
        windows: set.len(),
        excluded,
    })
}

/// The windows arrive interleaved across devices; training holds out the
/// tail of each stream, so it wants each stream's windows together (in
/// their time order).
fn grouped_by_stream(set: &WindowSet) -> WindowSet {
    let mut order: Vec<usize> = (0..set.len()).collect();
    order.sort_by_key(|&i| set.streams[i]);
    let mut grouped = WindowSet::new(set.features);
    for i in order {
        grouped.push(set.streams[i], set.window(i));
    }
    grouped
}

/// Indices of the windows to keep: those not far above the bulk of the
/// errors, and not within `overlap` windows of one that is (same stream).
pub fn inliers(errors: &[f32], streams: &[usize], overlap: usize) -> Vec<usize> {
    let median = |values: &mut Vec<f32>| {
        values.sort_by(f32::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    let m = median(&mut errors.to_vec());
    let mad = median(&mut errors.iter().map(|e| (e - m).abs()).collect()) * 1.4826;
    let cutoff = m + EXCLUDE_MADS * mad.max(f32::EPSILON);
    let outlying: Vec<bool> = errors.iter().map(|e| *e > cutoff).collect();
    (0..errors.len())
        .filter(|&i| {
            let lo = i.saturating_sub(overlap);
            let hi = (i + overlap).min(errors.len() - 1);
            !(lo..=hi).any(|j| outlying[j] && streams[j] == streams[i])
        })
        .collect()
}

/// Recent alarm rate against the calibrated one: the share of the last
/// [`Drift::WINDOWS`] windows over the threshold, divided by the share a
/// model calibrated at quantile q expects of normal data (1 − q). About 1
/// while the data looks like the training data; a lasting rise means drift
/// (or a lasting anomaly), and a retraining may be due.
pub struct Drift {
    recent: VecDeque<bool>,
    over: usize,
    expected: f64,
}

impl Drift {
    pub const WINDOWS: usize = 1000;

    pub fn new(quantile: f64) -> Self {
        Self {
            recent: VecDeque::with_capacity(Self::WINDOWS),
            over: 0,
            expected: (1.0 - quantile).max(1e-6),
        }
    }

    pub fn observe(&mut self, over: bool) {
        if self.recent.len() == Self::WINDOWS && self.recent.pop_front() == Some(true) {
            self.over -= 1;
        }
        self.recent.push_back(over);
        self.over += over as usize;
    }

    pub fn ratio(&self) -> f64 {
        if self.recent.is_empty() {
            return 0.0;
        }
        (self.over as f64 / self.recent.len() as f64) / self.expected
    }
}

/// Runs `work` on a pool of one niced thread: candle hands its matrix
/// products to the current rayon pool, so they stay on that one thread
/// (otherwise they would spread over every core at normal priority), and
/// the pacer, which reads that thread's CPU time, sees all of the work.
pub fn in_background<T: Send>(
    cpu_share: f64,
    work: impl FnOnce(&mut CpuPacer) -> T + Send,
) -> Result<T, String> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(|_| "online-training".into())
        .start_handler(|_| lower_priority())
        .build()
        .map_err(|e| format!("cannot start the training thread: {e}"))?;
    Ok(pool.install(|| {
        let mut pacer = CpuPacer::new(cpu_share);
        let result = work(&mut pacer);
        tracing::debug!(
            cpu_share = pacer.measured(),
            seconds = pacer.started.elapsed().as_secs_f64(),
            "training thread's share of a core"
        );
        result
    }))
}

/// Keeps the calling thread's CPU time at most `share` of the wall time
/// since the pacer was made, by sleeping when it is ahead.
pub struct CpuPacer {
    share: f64,
    started: std::time::Instant,
    cpu_at_start: std::time::Duration,
}

impl CpuPacer {
    pub fn new(share: f64) -> Self {
        Self {
            share,
            started: std::time::Instant::now(),
            cpu_at_start: thread_cpu_time(),
        }
    }

    /// Sleeps until the CPU time used is within the share.
    pub fn pace(&mut self) {
        if self.share >= 1.0 {
            return;
        }
        let used = thread_cpu_time().saturating_sub(self.cpu_at_start);
        let due = used.div_f64(self.share);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }

    /// CPU time used over wall time since the pacer was made.
    pub fn measured(&self) -> f64 {
        let used = thread_cpu_time().saturating_sub(self.cpu_at_start);
        used.as_secs_f64() / self.started.elapsed().as_secs_f64().max(1e-9)
    }
}

/// The calling thread's CPU time.
pub fn thread_cpu_time() -> std::time::Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `now` is.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0;
    if !ok {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Nices the calling thread (Linux: per thread), so a trainer yields to
/// ingestion and scoring when the CPU is short.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on the calling thread's id only changes its nice
    // value; a failure is harmless and ignored.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(device: &str, value: f32) -> Window {
        Window {
            device: Arc::from(device),
            seq: 0,
            t_start: 0.0,
            t_end: 0.0,
            data: vec![value; 2],
            scope: None,
        }
    }

    #[test]
    fn only_windows_well_clear_of_an_anomaly_count_as_normal() {
        let mut normal = NormalWindows::new(100, 1);
        let flags = [false, false, false, true, false, false, false, false];
        for (i, over) in flags.iter().enumerate() {
            normal.observe(&window("a", i as f32), *over);
        }
        // 0 and 1 are confirmed; 2 is dropped with the anomaly at 3; 4 is
        // the cool-down; 5 and 6 are confirmed by their successors; 7 waits.
        let kept: Vec<f32> = normal.kept.iter().map(|k| k.data[0]).collect();
        assert_eq!(kept, vec![0.0, 1.0, 5.0, 6.0]);
        let (train_set, held_back) = normal.split(2);
        assert_eq!(held_back.len(), 1);
        assert_eq!(train_set.len(), 2, "the window before the cut overlaps it");
    }

    fn timed(device: &str, i: usize) -> Window {
        Window {
            device: Arc::from(device),
            seq: i as u64,
            t_start: i as f64 * 1000.0,
            t_end: i as f64 * 1000.0 + 2540.0,
            data: vec![i as f32; 128 * 3],
            scope: None,
        }
    }

    #[test]
    fn marked_ranges_are_not_learned_or_are_learned_whatever_the_score() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::open(dir.path()).unwrap();
        let mut trainer = OnlineTrainer::new(
            &Config::default(),
            store.clone(),
            Metrics::new(),
            Arc::from("fleet"),
        )
        .unwrap();
        let a: Vec<Window> = (0..10).map(|i| timed("a", i)).collect();
        trainer.collect(&a);
        assert_eq!(trainer.collected(), 10);
        let abnormal = |device: Option<&str>| Mark {
            label: Label::Abnormal,
            from_ms: 3000.0,
            to_ms: 5000.0,
            device: device.map(String::from),
        };
        // Windows 1 to 5 overlap 3000..5000.
        assert_eq!(trainer.mark(abnormal(Some("a"))), 5);
        assert_eq!(trainer.collected(), 5);
        trainer.collect(&[timed("a", 4), timed("b", 4)]);
        assert_eq!(trainer.collected(), 6, "a's window is marked, b's is not");

        // Retraining buffer: over-threshold windows in a normal range count.
        trainer.mark(Mark {
            label: Label::Normal,
            from_ms: 20_000.0,
            to_ms: 40_000.0,
            device: None,
        });
        let c: Vec<Window> = (20..30).map(|i| timed("c", i)).collect();
        trainer.observe(&c, std::iter::repeat(true));
        assert_eq!(
            trainer.normal_windows(),
            10 - 2,
            "all but the last two (the margin)"
        );
        trainer.mark(Mark {
            label: Label::Abnormal,
            from_ms: 25_000.0,
            to_ms: 25_000.0,
            device: Some("c".into()),
        });
        assert_eq!(
            trainer.normal_windows(),
            8 - 3,
            "windows 23, 24, 25 overlap 25 s"
        );

        // A restart keeps the marks: a's marked range is still not learned.
        drop(trainer);
        let mut restarted = OnlineTrainer::new(
            &Config::default(),
            store,
            Metrics::new(),
            Arc::from("fleet"),
        )
        .unwrap();
        assert_eq!(restarted.marks.len(), 3);
        restarted.collect(&[timed("a", 4), timed("a", 9)]);
        assert_eq!(
            restarted.collected(),
            1,
            "window 4 is in the abnormal range"
        );
    }

    #[test]
    fn a_calibration_can_also_wait_for_a_duration() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::open(dir.path()).unwrap();
        let mut config = Config::default();
        config.training.min_windows = 20;
        config.training.min_duration_s = 3600.0;
        let trainer = |store: &ModelStore| {
            OnlineTrainer::new(&config, store.clone(), Metrics::new(), Arc::from("fleet")).unwrap()
        };
        let mut first = trainer(&store);
        assert_eq!(first.progress(), 0.0);
        first.collect(&(0..30).map(|i| timed("a", i)).collect::<Vec<_>>());
        assert!(!first.is_training(), "enough windows, not yet an hour");
        assert!(first.progress() < 0.01);
        // A restart keeps the start; an hour later the training begins.
        let since = store.calibrating_since().expect("saved");
        drop(first);
        let mut restarted = trainer(&store);
        assert_eq!(restarted.calibrating_since, Some(since));
        restarted.calibrating_since = Some(since - 3_600_000.0);
        assert_eq!(restarted.progress(), 0.0, "the windows were not saved yet");
        restarted.collect(&(0..20).map(|i| timed("b", i)).collect::<Vec<_>>());
        assert!(restarted.is_training());
        assert_eq!(
            store.load_collected(128 * 3).unwrap().map(|set| set.len()),
            Some(20),
            "the windows being trained on are on disk until a model is stored"
        );
    }

    #[test]
    fn the_pacer_keeps_a_thread_to_its_share() {
        let share = in_background(0.25, |pacer| {
            let started = std::time::Instant::now();
            let mut x = 0u64;
            while started.elapsed() < std::time::Duration::from_millis(400) {
                for i in 0..10_000u64 {
                    x = x.wrapping_mul(31).wrapping_add(i);
                }
                std::hint::black_box(x);
                pacer.pace();
            }
            pacer.measured()
        })
        .unwrap();
        // Sleeping can only lower the share; 0.3 leaves room for the last
        // slice of work after the final pace.
        assert!(share <= 0.3, "measured share {share}");
        assert!(share > 0.0, "the work ran");
    }

    #[test]
    fn scheduled_retraining() {
        let hours = |h: f64| std::time::Duration::from_secs_f64(h * 3600.0);
        assert!(!retrain_due(hours(1000.0), 0.0), "0 is off");
        assert!(!retrain_due(hours(23.9), 24.0));
        assert!(retrain_due(hours(24.0), 24.0));
    }

    #[test]
    fn drift_is_the_alarm_rate_over_the_calibrated_one() {
        let mut drift = Drift::new(0.99);
        for i in 0..Drift::WINDOWS {
            drift.observe(i % 100 == 0);
        }
        assert!((drift.ratio() - 1.0).abs() < 1e-9);
        for i in 0..Drift::WINDOWS {
            drift.observe(i % 10 == 0);
        }
        assert!((drift.ratio() - 10.0).abs() < 1e-6);
    }

    #[test]
    fn outlying_windows_and_their_neighbours_are_excluded() {
        let mut errors = vec![1.0f32; 20];
        for (i, e) in errors.iter_mut().enumerate() {
            *e += (i % 3) as f32 * 0.05;
        }
        errors[10] = 9.0;
        let streams = vec![0; 20];
        let keep = inliers(&errors, &streams, 1);
        assert_eq!(keep.len(), 17);
        assert!(!keep.contains(&9) && !keep.contains(&10) && !keep.contains(&11));
        // Neighbours in another stream stay.
        let mut streams = vec![0; 20];
        streams[11..].iter_mut().for_each(|s| *s = 1);
        assert!(inliers(&errors, &streams, 1).contains(&11));
        assert_eq!(
            inliers(&[1.0; 5], &[0; 5], 1).len(),
            5,
            "all alike: none excluded"
        );
    }
}
