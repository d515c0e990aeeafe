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

pub mod store;

use std::collections::HashMap;
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
    config: Config,
    store: ModelStore,
    collected: WindowSet,
    streams: HashMap<Arc<str>, usize>,
    next_stream: usize,
    running: Option<mpsc::Receiver<Result<Learned, String>>>,
    metrics: Metrics,
    saved_at: usize,
}

/// Collected windows are written to the model directory this often, so a
/// restart keeps them.
const SAVE_EVERY: usize = 100;

impl OnlineTrainer {
    /// Picks up windows a previous run collected.
    pub fn new(config: &Config, store: ModelStore, metrics: Metrics) -> Result<Self, StoreError> {
        let features = config.window.size * config.input.channels.len();
        let collected = store
            .load_collected(features)?
            .unwrap_or_else(|| WindowSet::new(features));
        if !collected.is_empty() {
            tracing::info!(
                windows = collected.len(),
                "calibration resumes with the windows collected before the restart"
            );
        }
        let next_stream = collected.streams.iter().max().map_or(0, |m| m + 1);
        let trainer = Self {
            next_stream,
            config: config.clone(),
            saved_at: collected.len(),
            collected,
            streams: HashMap::new(),
            store,
            running: None,
            metrics,
        };
        trainer.report();
        Ok(trainer)
    }

    pub fn target(&self) -> usize {
        self.config.training.min_windows
    }

    pub fn collected(&self) -> usize {
        self.collected.len()
    }

    pub fn is_training(&self) -> bool {
        self.running.is_some()
    }

    fn report(&self) {
        self.metrics
            .calibration(self.collected.len(), self.target());
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
                tracing::warn!(%error, "cannot save the calibration windows");
            }
            self.saved_at = self.collected.len();
        }
        if self.collected.len() >= self.target() {
            self.start();
        }
    }

    fn start(&mut self) {
        let (tx, rx) = mpsc::channel();
        let features = self.collected.features;
        let set = std::mem::replace(&mut self.collected, WindowSet::new(features));
        let config = self.config.clone();
        let store = self.store.clone();
        let spawned = std::thread::Builder::new()
            .name("online-training".into())
            .spawn(move || {
                lower_priority();
                let _ = tx.send(learn(&config, &store, &set).map_err(|e| e.to_string()));
            });
        match spawned {
            Ok(_) => {
                tracing::info!("calibration complete: training in the background");
                self.running = Some(rx);
            }
            Err(error) => tracing::error!(%error, "cannot start the training thread"),
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
                    version = %learned.version, model = %learned.model.meta.id,
                    windows = learned.windows, excluded = learned.excluded,
                    threshold = learned.model.meta.threshold,
                    "online training done; serving the new model"
                );
            }
            Err(error) => {
                self.metrics.training_run("failed", 0);
                tracing::error!(%error, "online training failed; collecting again");
                self.report();
            }
        }
        Some(result)
    }

    /// Saves what is collected (at shutdown).
    pub fn save(&self) {
        if !self.collected.is_empty() {
            if let Err(error) = self.store.save_collected(&self.collected) {
                tracing::warn!(%error, "cannot save the calibration windows");
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum LearnError {
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
fn learn(config: &Config, store: &ModelStore, set: &WindowSet) -> Result<Learned, LearnError> {
    let set = &grouped_by_stream(set);
    let arch = Architecture {
        window: config.window.size,
        channels: config.input.channels.len(),
        model: config.model.clone(),
    };
    let input = InputSpec {
        channels: config.input.channels.clone(),
        window: config.window.size,
        hop: config.window.hop,
        sample_rate_hz: config.input.sample_rate_hz,
    };
    let first = train::train(&arch, &config.training, &input, set, &mut |_| {})?;
    let load = |onnx: &[u8]| {
        LoadedModel::from_bytes(onnx, std::path::Path::new("<online>"))
            .map_err(|e| LearnError::Load(e.to_string()))
    };
    let mut scorer = Scorer::new(load(&first.onnx)?);
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
        train::train(&arch, &config.training, &input, &kept, &mut |_| {})?
    };
    let hash = Sha256::digest(
        set.data
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    let hash: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    let version = store.install(&trained.onnx, &hash, config.training.keep_versions)?;
    Ok(Learned {
        model: load(&trained.onnx)?,
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

/// Nice the calling thread (Linux: per thread), so the trainer yields to
/// ingestion and scoring when the CPU is short.
fn lower_priority() {
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
