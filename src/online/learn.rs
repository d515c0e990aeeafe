//! The learning passes: train, exclude outlying windows, train again;
//! and a retraining that must not be worse than the served model.

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::model::scorer::Scorer;
use crate::model::train::{self, WindowSet};
use crate::model::LoadedModel;
use crate::scope::store::{ModelStore, StoreError};
use crate::score::quantile;

use super::background::*;

/// A model trained online, already stored.
pub struct Learned {
    pub model: LoadedModel,
    pub version: String,
    pub windows: usize,
    pub excluded: usize,
}

/// Share of recent normal windows held back to compare a retrained model
/// with the served one.
pub const HELD_BACK_FRACTION: f64 = 0.2;

/// How much more of the held-back normal windows a retrained model may put
/// over its threshold than the served model does over its own.
pub const NOT_WORSE_MARGIN: f64 = 0.01;

/// Robust standard deviations above the median error beyond which a
/// calibration window is excluded from the second training pass.
pub const EXCLUDE_MADS: f32 = 6.0;

/// Share of `set`'s windows a model puts over its threshold.
pub(crate) fn alarm_rate(model: LoadedModel, set: &WindowSet) -> Result<f64, LearnError> {
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
pub(crate) fn relearn(
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

pub(crate) fn train_model(
    config: &Config,
    set: &WindowSet,
    pacer: &mut CpuPacer,
) -> Result<train::Trained, LearnError> {
    let arch = config.architecture();
    let input = config.input_spec();
    Ok(train::train_paced(
        &arch,
        &config.training,
        &input,
        set,
        &mut |_| {},
        &mut || pacer.pace(),
    )?)
}

pub(crate) fn load_online(onnx: &[u8]) -> Result<LoadedModel, LearnError> {
    LoadedModel::from_bytes(onnx, std::path::Path::new("<online>"))
        .map_err(|e| LearnError::Load(e.to_string()))
}

pub(crate) fn data_hash(set: &WindowSet) -> String {
    let hash = Sha256::digest(
        set.data
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    format!("{hash:x}")[..12].to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum LearnError {
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
    Score(crate::model::inference::BackendError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the training thread: {0}")]
    Thread(String),
    #[error("the training thread died")]
    Died,
    #[error("a training is already running")]
    Busy,
    #[error("{have} normal windows collected since the model was served, {needed} needed")]
    TooFewNormal { have: usize, needed: usize },
}

/// Trains, excludes outlying windows, trains again, stores the model.
pub(crate) fn learn(
    config: &Config,
    store: &ModelStore,
    set: &WindowSet,
    pacer: &mut CpuPacer,
) -> Result<Learned, LearnError> {
    let set = &grouped_by_stream(set);
    let errors = held_out_errors(config, set, pacer)?;
    let overlap = config.window.size.div_ceil(config.window.hop);
    let keep = inliers(&errors, &set.streams, overlap);
    let excluded = set.len() - keep.len();
    let trained = train_model(config, &subset(set, &keep), pacer)?;
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

/// Each window's error under a model that did not learn from it. A model
/// scoring its own training windows fits an unmarked stretch of another
/// motion as well as the rest (how well depends on rounding, seeds and
/// epochs), so the windows are split in two folds and each fold is scored
/// by the model of the other. With a fold too small to train on, the
/// windows are scored by a model of them all.
fn held_out_errors(
    config: &Config,
    set: &WindowSet,
    pacer: &mut CpuPacer,
) -> Result<Vec<f32>, LearnError> {
    let folds = two_folds(&set.streams);
    let mut errors = vec![0.0f32; set.len()];
    for fold in [false, true] {
        let learn_from: Vec<usize> = (0..set.len()).filter(|&i| folds[i] != fold).collect();
        let scored: Vec<usize> = (0..set.len()).filter(|&i| folds[i] == fold).collect();
        let model = match train_model(config, &subset(set, &learn_from), pacer) {
            Ok(model) => model,
            Err(LearnError::Train(_)) => return errors_of(&train_model(config, set, pacer)?, set),
            Err(other) => return Err(other),
        };
        for (i, e) in scored.iter().zip(errors_of(&model, &subset(set, &scored))?) {
            errors[*i] = e;
        }
    }
    Ok(errors)
}

/// `set`'s scores as multiples of the model's threshold: the two folds'
/// models put their scores on scales of their own.
fn errors_of(trained: &train::Trained, set: &WindowSet) -> Result<Vec<f32>, LearnError> {
    let model = load_online(&trained.onnx)?;
    let threshold = model.meta.threshold as f32;
    let unit = if threshold > 0.0 { threshold } else { 1.0 };
    let mut scorer = Scorer::new(model);
    Ok(scorer
        .score((0..set.len()).map(|i| set.window(i)))
        .map_err(LearnError::Score)?
        .into_iter()
        .map(|s| s.score / unit)
        .collect())
}

fn subset(set: &WindowSet, indices: &[usize]) -> WindowSet {
    let mut out = WindowSet::new(set.features);
    for &i in indices {
        out.push(set.streams[i], set.window(i));
    }
    out
}

/// The fold of each window (`streams` grouped, in time order within each):
/// whole streams when they balance (the smaller fold at least a third of
/// the windows), so a stream of another motion is never learnt by the model
/// that scores it; otherwise alternate quarters of each stream.
pub fn two_folds(streams: &[usize]) -> Vec<bool> {
    let mut sizes: std::collections::BTreeMap<usize, usize> = Default::default();
    for &s in streams {
        *sizes.entry(s).or_default() += 1;
    }
    let mut by_size: Vec<(usize, usize)> = sizes.into_iter().collect();
    by_size.sort_by_key(|&(stream, n)| (std::cmp::Reverse(n), stream));
    let mut totals = [0usize; 2];
    let mut fold_of = std::collections::BTreeMap::new();
    for (stream, n) in by_size {
        let lighter = usize::from(totals[1] < totals[0]);
        totals[lighter] += n;
        fold_of.insert(stream, lighter == 1);
    }
    if totals[0].min(totals[1]) * 3 >= streams.len() {
        return streams.iter().map(|s| fold_of[s]).collect();
    }
    let mut folds = Vec::with_capacity(streams.len());
    let mut start = 0;
    while start < streams.len() {
        let n = streams[start..]
            .iter()
            .take_while(|&&s| s == streams[start])
            .count();
        folds.extend((0..n).map(|p| (4 * p / n) % 2 == 1));
        start += n;
    }
    folds
}

/// The windows arrive interleaved across devices; training holds out the
/// tail of each stream, so it wants each stream's windows together (in
/// their time order).
pub(crate) fn grouped_by_stream(set: &WindowSet) -> WindowSet {
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
    if errors.is_empty() {
        return Vec::new();
    }
    let m = quantile(&mut errors.to_vec(), 0.5);
    let mut deviations: Vec<f32> = errors.iter().map(|e| (e - m).abs()).collect();
    let mad = quantile(&mut deviations, 0.5) * 1.4826;
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
