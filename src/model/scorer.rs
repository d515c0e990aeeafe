//! Runs a model on a batch of windows, normalising them as its metadata
//! says, and scores each window.

use super::loaded::LoadedModel;
use super::meta::ScoreKind;
use super::standardise::Standardiser;
use crate::model::inference::BackendError;
use crate::score::{window_errors, LatentCode, PerChannel};

/// The score of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub score: f32,
    pub channel_error: PerChannel,
    pub latent: LatentCode,
    /// The activity head's most probable class (an index into the
    /// metadata's `activity.classes`) and its probability.
    pub activity: Option<(usize, f32)>,
}

/// A loaded model plus the buffers to run it without allocating per window.
pub struct Scorer {
    model: LoadedModel,
    /// The model's normalisation, laid out once.
    standardiser: Option<Standardiser>,
    buffer: Vec<f32>,
    /// The last batch's reconstructions (normalised), kept as the backend
    /// returned them until the next batch: a raised alert's evidence copies
    /// its window's from here, no other window is copied.
    last: Vec<f32>,
    /// The last batch's front-end features, for a model with a front end.
    last_target: Option<Vec<f32>>,
}

impl Scorer {
    pub fn new(model: LoadedModel) -> Self {
        Self {
            standardiser: model.meta.normalization.as_ref().map(|n| n.standardiser()),
            model,
            buffer: Vec::new(),
            last: Vec::new(),
            last_target: None,
        }
    }

    /// The reconstruction of window `i` of the last batch, in the units of
    /// the recording (time-major).
    /// None for a model with a front end, which reconstructs its features.
    pub fn reconstruction(&self, i: usize) -> Option<Vec<f32>> {
        let meta = &self.model.meta;
        if meta.front_end.is_some() {
            return None;
        }
        let features = meta.features();
        let mut r = self.last.get(i * features..(i + 1) * features)?.to_vec();
        if let Some(norm) = &meta.normalization {
            let c = norm.mean.len().max(1);
            for frame in r.chunks_exact_mut(c) {
                for ((v, m), s) in frame.iter_mut().zip(&norm.mean).zip(&norm.std) {
                    *v = *v * s + m;
                }
            }
        }
        Some(r)
    }

    /// For a model with a front end, window `i`'s features of the last
    /// batch and their reconstruction (standardised feature units,
    /// rows interleaved by channel): `(features, reconstruction)`.
    pub fn front_end(&self, i: usize) -> Option<(Vec<f32>, Vec<f32>)> {
        let f = self.model.meta.target_features();
        let target = self.last_target.as_ref()?.get(i * f..(i + 1) * f)?;
        let reconstruction = self.last.get(i * f..(i + 1) * f)?;
        Some((target.to_vec(), reconstruction.to_vec()))
    }

    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    /// Scores raw windows (each `window * channels` values, time-major, in
    /// the units of the recording).
    pub fn score<'a>(
        &mut self,
        windows: impl IntoIterator<Item = &'a [f32]>,
    ) -> Result<Vec<Scored>, BackendError> {
        let meta = &self.model.meta;
        let features = meta.features();
        self.buffer.clear();
        for window in windows {
            assert_eq!(window.len(), features, "window of the model's size");
            match &self.standardiser {
                Some(standardiser) => standardiser.extend(window, &mut self.buffer),
                None => self.buffer.extend_from_slice(window),
            }
        }
        let n = self.buffer.len() / features;
        if n == 0 {
            return Ok(Vec::new());
        }
        let out = self.model.runtime.run(&self.buffer, n)?;
        let channels = meta.channels.len();
        // What the reconstruction is measured against: the front end's
        // features, else the normalised window.
        let (x, target_features) = match &out.target {
            Some(target) => (target.as_slice(), meta.target_features()),
            None => (self.buffer.as_slice(), features),
        };
        let latent_dim = meta.latent_dim;
        let kind = meta.score;
        let classes = meta.activity.as_ref().map_or(0, |h| h.classes.len());
        let scored: Vec<Scored> = x
            .chunks_exact(target_features)
            .zip(out.reconstruction.chunks_exact(target_features))
            .enumerate()
            .map(|(i, (x, r))| {
                // A model without a latent output publishes an empty code.
                let z = out
                    .latent
                    .get(i * latent_dim..(i + 1) * latent_dim)
                    .unwrap_or(&[]);
                let (mse, channel_error) =
                    window_errors(x, r, meta.error_weights.as_deref(), channels);
                let latent_distance = out.latent_score.as_ref().map(|d| d[i]);
                let score = match (kind, &out.kl, latent_distance) {
                    (ScoreKind::NegElbo { beta }, Some(kl), _) => {
                        0.5 * mse * target_features as f32 + beta as f32 * kl[i]
                    }
                    (ScoreKind::Latent { .. }, _, Some(d)) => d,
                    (
                        ScoreKind::Combined {
                            reconstruction,
                            latent,
                            ..
                        },
                        _,
                        Some(d),
                    ) => 0.5 * (reconstruction.standardise(mse) + latent.standardise(d)),
                    _ => mse,
                };
                let activity = out
                    .activity
                    .as_ref()
                    .and_then(|p| p.get(i * classes..(i + 1) * classes))
                    .and_then(most_probable);
                Scored {
                    score,
                    channel_error,
                    latent: LatentCode::from_slice(z),
                    activity,
                }
            })
            .collect();
        self.last = out.reconstruction;
        self.last_target = out.target;
        Ok(scored)
    }
}

/// The index and probability of the largest of `probs` (the first of ties).
pub fn most_probable(probs: &[f32]) -> Option<(usize, f32)> {
    probs
        .iter()
        .copied()
        .enumerate()
        .fold(None, |best: Option<(usize, f32)>, (i, p)| match best {
            Some((_, b)) if b >= p => best,
            _ => Some((i, p)),
        })
}
