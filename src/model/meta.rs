//! The metadata that travels inside a model file (ONNX `metadata_props`
//! under [`METADATA_KEY`]) or in a sidecar `<model>.json`.

use serde::{Deserialize, Serialize};

use crate::window::{MAX_WINDOW_SAMPLES, MAX_WINDOW_VALUES};

pub const METADATA_KEY: &str = "accelwatch";
pub const FORMAT: &str = "accelwatch-model/1";
/// The activity head's output, unless the metadata names another.
pub const ACTIVITY_OUTPUT: &str = "activity_probs";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMetadata {
    /// Always [`FORMAT`].
    pub format: String,
    /// Short identity of this model: the variant and a hash of its weights.
    pub id: String,
    pub variant: String,
    /// Channel names, in the order of the input's last axis.
    pub channels: Vec<String>,
    /// Samples per window (T).
    pub window: usize,
    /// Samples between window starts at training.
    pub hop: usize,
    pub sample_rate_hz: f64,
    /// How the input tensor is laid out.
    pub input_layout: InputLayout,
    /// Size of the latent code; 0 for a model without a latent output.
    pub latent_dim: usize,
    /// The graph input to feed; absent: the graph's only input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The output holding the reconstruction; absent: the output named
    /// `reconstruction`, else the graph's first output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconstruction_output: Option<String>,
    /// The output holding the latent code; absent: the output named
    /// `latent` when there is one, else none (and `latent_dim` 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_output: Option<String>,
    /// Per-channel standardisation applied before the model; absent means
    /// the model sees raw units.
    #[serde(default)]
    pub normalization: Option<Normalization>,
    /// How a window's score is computed from the outputs.
    #[serde(default)]
    pub score: ScoreKind,
    /// Scores above this are anomalous.
    pub threshold: f64,
    /// How the threshold was found.
    #[serde(default)]
    pub calibration: Option<Calibration>,
    /// The variant's hyper-parameters, as trained.
    #[serde(default)]
    pub hyperparameters: serde_json::Value,
    #[serde(default)]
    pub training: Option<TrainingRecord>,
    /// The activity head (`train --label`): an output of class
    /// probabilities per window; absent for a model without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<ActivityHead>,
    /// Features the graph computes from the window and the autoencoder
    /// reconstructs in place of the window itself; absent: the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_end: Option<FrontEnd>,
    /// Weights of the reconstruction error, one per reconstructed value:
    /// the error is Σ w_j (x_j − x̂_j)² rather than the mean of the squares.
    /// Trained with a front end, each feature's weight is one over its
    /// held-out mean squared error (times the block's size), the window's
    /// values share one, so that every feature counts by how surprising its
    /// error is and the two blocks count alike. Absent: the mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_weights: Option<Vec<f32>>,
}

/// The statistics of a spectrum front end's rows, before its DFT bins.
pub const SPECTRUM_STATISTICS: [&str; 4] = ["mean", "std", "min", "max"];

/// Feature rows per channel of a spectrum front end of `bins` DFT bins.
pub const fn spectrum_rows(bins: usize) -> usize {
    SPECTRUM_STATISTICS.len() + bins
}

/// What the autoencoder of a model reconstructs, when not the window: the
/// graph computes it from the window and gives it as the output `output`
/// (`[N, rows · C]`, row r of channel c at `r·C + c`), which the
/// reconstruction output matches in shape and scores are measured against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FrontEnd {
    /// Per channel of the normalised window: mean, standard deviation,
    /// minimum, maximum, then the magnitude of DFT bins 1..=`bins` of the
    /// mean-removed window (log(1 + |X_k|) when `log`); each feature
    /// standardised by the training windows' statistics.
    /// With `window_weight`, the normalised window itself follows the
    /// feature rows, times that weight (so that both parts carry about
    /// the same share of the error): its T rows, time-major as given.
    Spectrum {
        bins: usize,
        log: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window_weight: Option<f32>,
        #[serde(default = "FrontEnd::default_output")]
        output: String,
    },
}

impl FrontEnd {
    pub fn default_output() -> String {
        "features".into()
    }

    /// Feature rows per channel, for windows of `window` samples.
    pub fn rows(&self, window: usize) -> usize {
        match self {
            FrontEnd::Spectrum {
                bins,
                window_weight,
                ..
            } => spectrum_rows(*bins) + window_weight.map_or(0, |_| window),
        }
    }

    /// Each feature row's name, in order (`mean` … `max`, `dft1` …, then
    /// `t0` … for the window's samples).
    pub fn row_names(&self, window: usize) -> Vec<String> {
        match self {
            FrontEnd::Spectrum {
                bins,
                window_weight,
                ..
            } => SPECTRUM_STATISTICS
                .iter()
                .map(|s| s.to_string())
                .chain((1..=*bins).map(|k| format!("dft{k}")))
                .chain((0..window_weight.map_or(0, |_| window)).map(|t| format!("t{t}")))
                .collect(),
        }
    }

    /// The output holding the features the reconstruction is measured against.
    pub fn output(&self) -> &str {
        match self {
            FrontEnd::Spectrum { output, .. } => output,
        }
    }
}

/// A classifier of the latent code that travels in the model file: the
/// output `output` gives each window a probability per class, in the order
/// of `classes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityHead {
    /// The CSV column the classes were read from.
    pub label: String,
    /// Class names, in the order of the output's columns.
    pub classes: Vec<String>,
    /// The output of probabilities (`[N, classes]`, rows summing to 1).
    #[serde(default = "ActivityHead::default_output")]
    pub output: String,
    /// Hidden units before the softmax layer (0: the softmax layer alone).
    #[serde(default)]
    pub hidden: usize,
    /// How many of the front end's standardised features (its first
    /// values, see `front_end`) the head reads after the latent code; 0:
    /// the code alone.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub front_end_features: usize,
    /// `frozen`: fitted on the trained encoder's codes; `joint`: trained
    /// with the encoder.
    #[serde(default = "ActivityHead::default_encoder")]
    pub encoder: String,
    /// Accuracy on the held-out training windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_accuracy: Option<f64>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl ActivityHead {
    pub fn default_output() -> String {
        ACTIVITY_OUTPUT.into()
    }

    pub fn default_encoder() -> String {
        "frozen".into()
    }
}

/// The anomaly score of a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScoreKind {
    /// Mean squared error over the window's T·C values (in normalised
    /// units when the model has a normalisation).
    #[default]
    Mse,
    /// ½Σ(x − x̂)² + β·KL, from the reconstruction and the `kl` output.
    NegElbo { beta: f64 },
    /// The `latent_score` output: the mean Euclidean distance of the
    /// window's latent code to its `k` nearest of the `references`
    /// training codes the graph holds.
    Latent { k: usize, references: usize },
    /// ½((mse − μ_r)/σ_r + (d − μ_l)/σ_l): the reconstruction error and the
    /// latent distance, each standardised by its mean and standard
    /// deviation over the held-out training windows.
    Combined {
        k: usize,
        references: usize,
        reconstruction: Moments,
        latent: Moments,
    },
}

impl ScoreKind {
    /// Whether the graph must have a `latent_score` output.
    pub fn needs_latent_score(&self) -> bool {
        matches!(self, ScoreKind::Latent { .. } | ScoreKind::Combined { .. })
    }

    /// The name `model.score` uses for this kind.
    pub fn choice_name(&self) -> &'static str {
        match self {
            ScoreKind::Mse | ScoreKind::NegElbo { .. } => "reconstruction",
            ScoreKind::Latent { .. } => "latent",
            ScoreKind::Combined { .. } => "combined",
        }
    }
}

/// Where a score's distribution lies on held-out normal windows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Moments {
    pub mean: f64,
    pub std: f64,
}

impl Moments {
    /// Mean and (population) standard deviation; a std under 1e-12 becomes 1
    /// so that a constant score stays finite.
    pub fn of(values: &[f32]) -> Self {
        let n = values.len().max(1) as f64;
        let mean = values.iter().map(|v| *v as f64).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|v| (*v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let std = var.sqrt();
        Self {
            mean,
            std: if std < 1e-12 { 1.0 } else { std },
        }
    }

    pub fn standardise(&self, value: f32) -> f32 {
        ((value as f64 - self.mean) / self.std) as f32
    }
}

/// `flat` is `[N, T*C]`, time-major (t0's C values, then t1's...);
/// `ntc` is `[N, T, C]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputLayout {
    Flat,
    Ntc,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// Mean and standard deviation of each channel over time-major data.
    /// A flat channel gets a std of 1 so that it passes through centred.
    pub fn fit(data: &[f32], channels: usize) -> Self {
        let frames = (data.len() / channels).max(1) as f64;
        let mut sum = vec![0f64; channels];
        let mut sq = vec![0f64; channels];
        for frame in data.chunks_exact(channels) {
            for (i, v) in frame.iter().enumerate() {
                sum[i] += *v as f64;
                sq[i] += (*v as f64) * (*v as f64);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / frames).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(sq, m)| {
                let var = (sq / frames - m * m).max(0.0);
                if var.sqrt() < 1e-6 {
                    1.0
                } else {
                    var.sqrt() as f32
                }
            })
            .collect();
        Self {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    pub quantile: f64,
    /// Held-out normal windows the quantile was taken over.
    pub windows: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingRecord {
    pub tool: String,
    pub train_windows: usize,
    pub validation_windows: usize,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub train_loss: f64,
    pub validation_loss: f64,
    pub seed: u64,
    /// SHA-256 of the training windows, as f32 little-endian bytes.
    pub data_sha256: String,
    pub optimizer: String,
    pub learning_rate: f64,
    pub batch_size: usize,
    /// Final loss of each layer's greedy pretraining (empty without it).
    #[serde(default)]
    pub pretrain_losses: Vec<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("model carries no {METADATA_KEY:?} metadata and no sidecar {0} exists")]
    Missing(String),
    #[error("model metadata is not valid JSON for format {FORMAT}: {0}")]
    Invalid(String),
    #[error("model metadata: {0}")]
    Inconsistent(String),
}

impl ModelMetadata {
    pub fn from_value(value: serde_json::Value) -> Result<Self, MetadataError> {
        let meta: ModelMetadata =
            serde_json::from_value(value).map_err(|e| MetadataError::Invalid(e.to_string()))?;
        meta.check()?;
        Ok(meta)
    }

    /// Internal consistency, independent of any config.
    pub fn check(&self) -> Result<(), MetadataError> {
        let bad = |m: String| Err(MetadataError::Inconsistent(m));
        if self.format != FORMAT {
            return bad(format!(
                "format is {:?}, this build reads {FORMAT:?}",
                self.format
            ));
        }
        if self.channels.is_empty() {
            return bad("channels is empty".into());
        }
        if self.window < 2 || self.hop == 0 {
            return bad(format!(
                "window {} / hop {} make no windows",
                self.window, self.hop
            ));
        }
        // Bounded before anything multiplies or allocates by them.
        let values = self.window.checked_mul(self.channels.len());
        if self.window > MAX_WINDOW_SAMPLES || values.is_none_or(|v| v > MAX_WINDOW_VALUES) {
            return bad(format!(
                "window {} of {} channels is over the limits of {MAX_WINDOW_SAMPLES} samples \
                 and {MAX_WINDOW_VALUES} values",
                self.window,
                self.channels.len()
            ));
        }
        if !(self.sample_rate_hz.is_finite() && self.sample_rate_hz > 0.0) {
            return bad(format!(
                "sample_rate_hz {} is not a positive rate",
                self.sample_rate_hz
            ));
        }
        // A combined score is a sum of standardised scores, which may be
        // below zero; every other score is a distance or an error.
        let signed = matches!(self.score, ScoreKind::Combined { .. });
        if !(self.threshold.is_finite() && (signed || self.threshold >= 0.0)) {
            return bad(format!(
                "threshold {} is not a non-negative number",
                self.threshold
            ));
        }
        match self.score {
            ScoreKind::Latent { k, references } | ScoreKind::Combined { k, references, .. }
                if k == 0 || references < k =>
            {
                return bad(format!(
                    "score {}: k {k} must be at least 1 and at most references {references}",
                    self.score.choice_name()
                ));
            }
            ScoreKind::Combined {
                reconstruction,
                latent,
                ..
            } if [reconstruction, latent]
                .iter()
                .any(|m| !(m.mean.is_finite() && m.std.is_finite() && m.std > 0.0)) =>
            {
                return bad(
                    "score combined: a mean or std is not finite, or a std is not positive".into(),
                );
            }
            _ => {}
        }
        if let Some(head) = &self.activity {
            let mut names = head.classes.clone();
            names.sort();
            names.dedup();
            if head.classes.len() < 2 || names.len() != head.classes.len() {
                return bad(format!(
                    "activity.classes must name two or more distinct classes, got {:?}",
                    head.classes
                ));
            }
            if head.classes.iter().any(|c| c.is_empty()) || head.output.is_empty() {
                return bad("activity: a class name or the output name is empty".into());
            }
        }
        if let Some(FrontEnd::Spectrum {
            bins,
            output,
            window_weight,
            ..
        }) = &self.front_end
        {
            if *bins == 0 || *bins > self.window / 2 || output.is_empty() {
                return bad(format!(
                    "front_end: bins {bins} must be 1 to half the window ({}), and output named",
                    self.window / 2
                ));
            }
            if window_weight.is_some_and(|w| !(w.is_finite() && w > 0.0)) {
                return bad("front_end: window_weight must be a positive number".into());
            }
            if self.input_layout != InputLayout::Flat {
                return bad("front_end needs input_layout \"flat\"".into());
            }
        }
        if let Some(weights) = &self.error_weights {
            if weights.len() != self.target_features() {
                return bad(format!(
                    "error_weights has {} values for {} reconstructed values",
                    weights.len(),
                    self.target_features()
                ));
            }
            if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
                return bad("error_weights must be finite and not negative".into());
            }
            if matches!(self.score, ScoreKind::NegElbo { .. }) {
                return bad("error_weights do not go with score neg_elbo (an ELBO)".into());
            }
        }
        if let Some(norm) = &self.normalization {
            let c = self.channels.len();
            if norm.mean.len() != c || norm.std.len() != c {
                return bad(format!(
                    "normalization has {} means and {} stds for {c} channels",
                    norm.mean.len(),
                    norm.std.len()
                ));
            }
            if norm.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
                || norm.mean.iter().any(|m| !m.is_finite())
            {
                return bad(
                    "normalization has a non-finite mean or a std that is not positive".into(),
                );
            }
        }
        Ok(())
    }

    /// Values per window of the input: T·C.
    pub fn features(&self) -> usize {
        self.window * self.channels.len()
    }

    /// Values per window of what the autoencoder reconstructs: the front
    /// end's features, else the window's T·C.
    pub fn target_features(&self) -> usize {
        match &self.front_end {
            Some(front_end) => front_end.rows(self.window) * self.channels.len(),
            None => self.features(),
        }
    }
}
