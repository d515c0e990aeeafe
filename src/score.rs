//! Scoring maths: reconstruction error per window and per channel, the
//! calibration quantile, and the [`Scorer`] that runs a model on a batch of
//! windows (normalising them as its metadata says).

use crate::model::meta::ScoreKind;
use crate::model::{LoadedModel, ModelMetadata};

/// Mean of squared differences over all values.
pub fn mean_squared_error(input: &[f32], reconstruction: &[f32]) -> f32 {
    debug_assert_eq!(input.len(), reconstruction.len());
    let sum: f32 = input
        .iter()
        .zip(reconstruction)
        .map(|(x, r)| (x - r) * (x - r))
        .sum();
    sum / input.len().max(1) as f32
}

/// Mean squared error of each channel of a time-major window.
pub fn channel_errors(input: &[f32], reconstruction: &[f32], channels: usize) -> Vec<f32> {
    let mut sums = vec![0f32; channels];
    for (x, r) in input
        .chunks_exact(channels)
        .zip(reconstruction.chunks_exact(channels))
    {
        for c in 0..channels {
            sums[c] += (x[c] - r[c]) * (x[c] - r[c]);
        }
    }
    let frames = (input.len() / channels).max(1) as f32;
    sums.iter().map(|s| s / frames).collect()
}

/// The `q` quantile with linear interpolation between order statistics
/// (NumPy's default). Sorts `values`. Empty input gives NaN.
pub fn quantile(values: &mut [f32], q: f64) -> f32 {
    if values.is_empty() {
        return f32::NAN;
    }
    values.sort_by(f32::total_cmp);
    let position = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let fraction = (position - below as f64) as f32;
    values[below] + (values[above] - values[below]) * fraction
}

/// The score of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub score: f32,
    pub channel_error: Vec<f32>,
    pub latent: Vec<f32>,
}

/// A loaded model plus the buffers to run it without allocating per window.
pub struct Scorer {
    model: LoadedModel,
    buffer: Vec<f32>,
}

impl Scorer {
    pub fn new(model: LoadedModel) -> Self {
        Self {
            model,
            buffer: Vec::new(),
        }
    }

    pub fn meta(&self) -> &ModelMetadata {
        &self.model.meta
    }

    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    /// Scores raw windows (each `window * channels` values, time-major, in
    /// the units of the recording).
    pub fn score<'a>(
        &mut self,
        windows: impl IntoIterator<Item = &'a [f32]>,
    ) -> Result<Vec<Scored>, String> {
        let meta = &self.model.meta;
        let features = meta.features();
        self.buffer.clear();
        for window in windows {
            assert_eq!(window.len(), features, "window of the model's size");
            let start = self.buffer.len();
            self.buffer.extend_from_slice(window);
            if let Some(norm) = &meta.normalization {
                norm.apply(&mut self.buffer[start..]);
            }
        }
        let n = self.buffer.len() / features;
        if n == 0 {
            return Ok(Vec::new());
        }
        let out = self.model.runtime.run(&self.buffer, n)?;
        let channels = meta.channels.len();
        let latent_dim = meta.latent_dim;
        let kind = meta.score;
        Ok(self
            .buffer
            .chunks_exact(features)
            .zip(out.reconstruction.chunks_exact(features))
            .enumerate()
            .map(|(i, (x, r))| {
                // A model without a latent output publishes an empty code.
                let z = out
                    .latent
                    .get(i * latent_dim..(i + 1) * latent_dim)
                    .unwrap_or(&[]);
                let mse = mean_squared_error(x, r);
                let score = match (kind, &out.kl) {
                    (ScoreKind::NegElbo { beta }, Some(kl)) => {
                        0.5 * mse * features as f32 + beta as f32 * kl[i]
                    }
                    _ => mse,
                };
                Scored {
                    score,
                    channel_error: channel_errors(x, r, channels),
                    latent: z.to_vec(),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_per_window_and_channel() {
        let x = [1.0, 0.0, 1.0, 0.0];
        let r = [0.0, 0.0, 1.0, 2.0];
        assert_eq!(mean_squared_error(&x, &r), 5.0 / 4.0);
        assert_eq!(channel_errors(&x, &r, 2), vec![0.5, 2.0]);
    }

    #[test]
    fn quantile_interpolates_like_numpy() {
        let mut v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&mut v, 0.5), 2.5);
        assert_eq!(quantile(&mut v, 0.0), 1.0);
        assert_eq!(quantile(&mut v, 1.0), 4.0);
        let mut v: Vec<f32> = (0..=100).map(|i| i as f32).collect();
        assert!((quantile(&mut v, 0.99) - 99.0).abs() < 1e-4);
        assert!(quantile(&mut [], 0.5).is_nan());
    }
}
