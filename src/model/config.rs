//! `[model]`: which autoencoder, its shape and variant settings, and the
//! backend that serves it.

use std::path::PathBuf;

pub use crate::model::spectrum::{ModelInput, SpectrumConfig};
use crate::problem::Problems;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// One hidden code layer.
    Basic,
    /// Several encoder and decoder layers, optionally pretrained layer-wise.
    Deep,
    /// The deep network, trained to undo noise added to its input.
    Denoising,
    /// One overcomplete sigmoid code layer with a sparsity penalty.
    Sparse,
    /// Variational: the encoder outputs a Gaussian q(z|x).
    Vae,
    /// 1-D convolutions over time.
    Conv,
}

impl Variant {
    pub const ALL: [Variant; 6] = [
        Variant::Basic,
        Variant::Deep,
        Variant::Denoising,
        Variant::Sparse,
        Variant::Vae,
        Variant::Conv,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Variant::Basic => "basic",
            Variant::Deep => "deep",
            Variant::Denoising => "denoising",
            Variant::Sparse => "sparse",
            Variant::Vae => "vae",
            Variant::Conv => "conv",
        }
    }
}

/// The anomaly score `train` builds a model for (`model.score`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreChoice {
    /// The reconstruction error (or a `vae`'s negative ELBO).
    #[default]
    Reconstruction,
    /// The mean distance of the window's code to its nearest training codes.
    Latent,
    /// Both, each standardised on the held-out training windows, averaged.
    Combined,
}

impl ScoreChoice {
    pub const fn name(self) -> &'static str {
        match self {
            ScoreChoice::Reconstruction => "reconstruction",
            ScoreChoice::Latent => "latent",
            ScoreChoice::Combined => "combined",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    Tanh,
    Sigmoid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Noise {
    /// x̃ = x + N(0, σ²).
    Gaussian,
    /// x̃ = x with a fraction of values set to 0.
    Mask,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenoisingConfig {
    #[serde(default = "DenoisingConfig::default_noise")]
    pub noise: Noise,
    /// Standard deviation of Gaussian noise, in normalised units.
    #[serde(default = "DenoisingConfig::default_sigma")]
    pub sigma: f64,
    /// Fraction of values zeroed by masking noise.
    #[serde(default = "DenoisingConfig::default_mask_fraction")]
    pub mask_fraction: f64,
}

impl DenoisingConfig {
    const fn default_noise() -> Noise {
        Noise::Gaussian
    }
    /// Measured best with the default `mix` input (docs/measured.md, the
    /// front end in accelwatch); the raw-window tables were made at 0.3.
    const fn default_sigma() -> f64 {
        0.7
    }
    const fn default_mask_fraction() -> f64 {
        0.25
    }
}

impl Default for DenoisingConfig {
    fn default() -> Self {
        Self {
            noise: Self::default_noise(),
            sigma: Self::default_sigma(),
            mask_fraction: Self::default_mask_fraction(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SparsityPenalty {
    /// β·Σ KL(ρ ‖ ρ̂ⱼ) on the mean activation ρ̂ⱼ of each code unit.
    Kl,
    /// λ·mean Σ|hⱼ| on the code activations.
    L1,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseConfig {
    /// Code units; must exceed the input size (T·C). Absent: 1.25 times the input size.
    #[serde(default)]
    pub units: Option<usize>,
    #[serde(default = "SparseConfig::default_penalty")]
    pub penalty: SparsityPenalty,
    /// Target mean activation ρ of the KL penalty.
    #[serde(default = "SparseConfig::default_rho")]
    pub rho: f64,
    /// Weight β of the KL penalty.
    #[serde(default = "SparseConfig::default_beta")]
    pub beta: f64,
    /// Weight λ of the L1 penalty.
    #[serde(default = "SparseConfig::default_l1")]
    pub l1: f64,
}

impl SparseConfig {
    const fn default_penalty() -> SparsityPenalty {
        SparsityPenalty::Kl
    }
    const fn default_rho() -> f64 {
        0.05
    }
    const fn default_beta() -> f64 {
        3.0
    }
    const fn default_l1() -> f64 {
        1e-3
    }
}

impl Default for SparseConfig {
    fn default() -> Self {
        Self {
            units: None,
            penalty: Self::default_penalty(),
            rho: Self::default_rho(),
            beta: Self::default_beta(),
            l1: Self::default_l1(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VaeScore {
    /// Mean squared error of the reconstruction of the mean code μ.
    Reconstruction,
    /// Negative ELBO estimate at μ: ½Σ(x − x̂)² + β·KL(q(z|x) ‖ N(0, I)).
    NegElbo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeConfig {
    /// Weight β of the KL term.
    #[serde(default = "VaeConfig::default_beta")]
    pub beta: f64,
    #[serde(default = "VaeConfig::default_score")]
    pub score: VaeScore,
}

impl VaeConfig {
    const fn default_beta() -> f64 {
        1.0
    }
    const fn default_score() -> VaeScore {
        VaeScore::Reconstruction
    }
}

impl Default for VaeConfig {
    fn default() -> Self {
        Self {
            beta: Self::default_beta(),
            score: Self::default_score(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvConfig {
    /// Filters of each stride-2 convolution; the window size must be
    /// divisible by 2 to the number of stages.
    #[serde(default = "ConvConfig::default_filters")]
    pub filters: Vec<usize>,
    /// Kernel size (odd).
    #[serde(default = "ConvConfig::default_kernel")]
    pub kernel: usize,
}

impl ConvConfig {
    fn default_filters() -> Vec<usize> {
        vec![16, 32]
    }
    const fn default_kernel() -> usize {
        5
    }
}

impl Default for ConvConfig {
    fn default() -> Self {
        Self {
            filters: Self::default_filters(),
            kernel: Self::default_kernel(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default = "ModelConfig::default_path")]
    pub path: PathBuf,
    /// A directory of model versions (online training writes here); when
    /// set, its current version is served and `path` is not used.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// The inference engine: tract (built in) or ort (ONNX Runtime).
    #[serde(default)]
    pub backend: BackendKind,
    /// The ONNX Runtime shared library for `backend = "ort"`; when absent,
    /// the `ORT_DYLIB_PATH` environment variable names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ort_library: Option<PathBuf>,
    #[serde(default = "ModelConfig::default_variant")]
    pub variant: Variant,
    /// What `train` feeds the autoencoder: the window, or its spectral
    /// features (computed inside the model file's graph).
    #[serde(default)]
    pub input: ModelInput,
    #[serde(default)]
    pub spectrum: SpectrumConfig,
    /// Size of the latent code published per window.
    #[serde(default = "ModelConfig::default_latent")]
    pub latent: usize,
    /// The anomaly score `train` calibrates the model for (absent:
    /// [`ModelConfig::DEFAULT_SCORE`]); when serving, absent means the
    /// model file's own score, and a value must be the file's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<ScoreChoice>,
    /// k of the latent score: nearest training codes averaged over.
    #[serde(default = "ModelConfig::default_neighbors")]
    pub neighbors: usize,
    /// Most training codes kept in the model file for the latent score
    /// (evenly thinned beyond it; each costs latent values of time per window).
    #[serde(default = "ModelConfig::default_references")]
    pub references: usize,
    /// Windows scored in one inference call, batched across devices.
    #[serde(default = "ModelConfig::default_max_batch")]
    pub max_batch: usize,
    /// How often the daemon polls the model file (mtime, size) and reloads
    /// it when it changed; 0 turns the watch off.
    #[serde(default = "ModelConfig::default_watch_interval_ms")]
    pub watch_interval_ms: u64,
    /// Hidden layer sizes between the input and the code (deep, denoising, vae).
    #[serde(default = "ModelConfig::default_hidden")]
    pub hidden: Vec<usize>,
    /// Activation of hidden layers (deep, denoising, vae).
    #[serde(default = "ModelConfig::default_activation")]
    pub activation: Activation,
    #[serde(default)]
    pub denoising: DenoisingConfig,
    #[serde(default)]
    pub sparse: SparseConfig,
    #[serde(default)]
    pub vae: VaeConfig,
    #[serde(default)]
    pub conv: ConvConfig,
}

impl ModelConfig {
    /// The backend to load `path` with.
    pub fn backend_options(&self) -> BackendOptions {
        BackendOptions {
            kind: self.backend,
            ort_library: self.ort_library.clone(),
        }
    }

    /// The score `train` builds when `model.score` is absent: the best
    /// measured (docs/measured.md).
    pub const DEFAULT_SCORE: ScoreChoice = ScoreChoice::Reconstruction;

    /// The score a model trained with this config is calibrated for.
    pub fn score_to_train(&self) -> ScoreChoice {
        self.score.unwrap_or(Self::DEFAULT_SCORE)
    }

    fn default_path() -> PathBuf {
        PathBuf::from("models/demo.onnx")
    }
    /// The best of the family on the measured tasks (README: Measured).
    const fn default_variant() -> Variant {
        Variant::Denoising
    }
    const fn default_latent() -> usize {
        16
    }
    const fn default_max_batch() -> usize {
        32
    }
    const fn default_neighbors() -> usize {
        5
    }
    const fn default_references() -> usize {
        1024
    }
    const fn default_watch_interval_ms() -> u64 {
        2000
    }
    fn default_hidden() -> Vec<usize> {
        vec![128, 64]
    }
    const fn default_activation() -> Activation {
        Activation::Relu
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            path: Self::default_path(),
            dir: None,
            backend: BackendKind::default(),
            ort_library: None,
            variant: Self::default_variant(),
            input: ModelInput::default(),
            spectrum: SpectrumConfig::default(),
            latent: Self::default_latent(),
            score: None,
            neighbors: Self::default_neighbors(),
            references: Self::default_references(),
            max_batch: Self::default_max_batch(),
            watch_interval_ms: Self::default_watch_interval_ms(),
            hidden: Self::default_hidden(),
            activation: Self::default_activation(),
            denoising: DenoisingConfig::default(),
            sparse: SparseConfig::default(),
            vae: VaeConfig::default(),
            conv: ConvConfig::default(),
        }
    }
}

impl ModelConfig {
    /// The problems of `[model]`, for windows of `window_size` samples of
    /// `features` values.
    pub fn problems(&self, features: usize, window_size: usize, problems: &mut Problems) {
        let mut check = |ok: bool, key: &str, message: String| problems.check(ok, key, message);
        check(
            self.latent >= 1,
            "model.latent",
            "must be at least 1".into(),
        );
        check(
            self.max_batch >= 1,
            "model.max_batch",
            "must be at least 1".into(),
        );
        check(
            self.neighbors >= 1,
            "model.neighbors",
            "must be at least 1".into(),
        );
        check(
            self.references >= self.neighbors,
            "model.references",
            format!(
                "must be at least model.neighbors ({}), got {}",
                self.neighbors, self.references
            ),
        );
        if self.score_to_train() != ScoreChoice::Reconstruction {
            check(
                !(self.variant == Variant::Vae && self.vae.score == VaeScore::NegElbo),
                "model.score",
                format!(
                    "{:?} uses the reconstruction error; it cannot be combined with \
                     model.vae.score = \"neg_elbo\"",
                    self.score_to_train().name()
                ),
            );
        }
        check(
            self.backend.available(),
            "model.backend",
            format!(
                "{:?}: this build has no such backend (build with the cargo feature `ort`)",
                self.backend.name()
            ),
        );
        check(
            self.spectrum.bins >= 1,
            "model.spectrum.bins",
            "must be at least 1".into(),
        );
        let bins = self.spectrum.bins_for(window_size);
        // What the network itself reads: rows of `channels` values.
        let channels = features / window_size.max(1);
        let (rows, what) = match self.input {
            ModelInput::Raw => (window_size, "window.size"),
            ModelInput::Spectrum => (
                crate::model::meta::spectrum_rows(bins),
                "the spectrum's rows (4 + model.spectrum.bins)",
            ),
            ModelInput::Mix => (
                crate::model::meta::spectrum_rows(bins).saturating_add(window_size),
                "the mix's rows (4 + model.spectrum.bins + window.size)",
            ),
        };
        let features = rows.saturating_mul(channels);
        check(
            self.hidden.iter().all(|h| *h >= 1),
            "model.hidden",
            format!("every layer needs at least one unit, got {:?}", self.hidden),
        );
        let denoising = &self.denoising;
        check(
            denoising.sigma.is_finite() && denoising.sigma >= 0.0,
            "model.denoising.sigma",
            format!("must be 0 or positive, got {}", denoising.sigma),
        );
        check(
            (0.0..1.0).contains(&denoising.mask_fraction),
            "model.denoising.mask_fraction",
            format!("must be in [0, 1), got {}", denoising.mask_fraction),
        );
        let sparse = &self.sparse;
        if let (Variant::Sparse, Some(units)) = (self.variant, sparse.units) {
            check(
                units > features,
                "model.sparse.units",
                format!(
                    "must exceed the input size {features} ({what} x channels) to be overcomplete, got {units}"
                ),
            );
        }
        check(
            sparse.rho > 0.0 && sparse.rho < 1.0,
            "model.sparse.rho",
            format!("must be strictly between 0 and 1, got {}", sparse.rho),
        );
        check(
            sparse.beta.is_finite() && sparse.beta >= 0.0,
            "model.sparse.beta",
            "must be 0 or positive".into(),
        );
        check(
            sparse.l1.is_finite() && sparse.l1 >= 0.0,
            "model.sparse.l1",
            "must be 0 or positive".into(),
        );
        check(
            self.vae.beta.is_finite() && self.vae.beta >= 0.0,
            "model.vae.beta",
            "must be 0 or positive".into(),
        );
        let conv = &self.conv;
        check(
            !conv.filters.is_empty() && conv.filters.iter().all(|f| *f >= 1),
            "model.conv.filters",
            format!(
                "needs at least one stage of at least one filter, got {:?}",
                conv.filters
            ),
        );
        check(
            conv.kernel % 2 == 1,
            "model.conv.kernel",
            format!(
                "must be odd (so that padding keeps lengths), got {}",
                conv.kernel
            ),
        );
        if self.variant == Variant::Conv {
            let divisor = 1usize << conv.filters.len().min(16);
            check(
                rows.is_multiple_of(divisor),
                match self.input {
                    ModelInput::Raw => "window.size",
                    ModelInput::Spectrum | ModelInput::Mix => "model.spectrum.bins",
                },
                format!(
                    "a conv model with {} stride-2 stages needs {what} to be a multiple of \
                     {divisor}, got {rows}",
                    conv.filters.len(),
                ),
            );
        }
    }
}

/// The inference engine that serves a model (`model.backend`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Pure Rust, always built in.
    #[default]
    Tract,
    /// ONNX Runtime, opened at run time (cargo feature `ort`).
    Ort,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract",
            BackendKind::Ort => "ort",
        }
    }

    /// Whether this build can serve with it.
    pub fn available(self) -> bool {
        match self {
            BackendKind::Tract => true,
            BackendKind::Ort => cfg!(feature = "ort"),
        }
    }
}

/// Which backend to load a model with, and where ONNX Runtime lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendOptions {
    pub kind: BackendKind,
    /// `model.ort_library`; `ORT_DYLIB_PATH` when absent.
    pub ort_library: Option<PathBuf>,
}

impl BackendOptions {
    pub fn tract() -> Self {
        Self::default()
    }

    pub fn ort(library: Option<PathBuf>) -> Self {
        Self {
            kind: BackendKind::Ort,
            ort_library: library,
        }
    }
}
