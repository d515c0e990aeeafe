//! What every backend answers for a batch of windows, and why it may not.

crate::reason::reason_error!(
    /// Why a backend could not load or run a graph, in the backend's words.
    BackendError
);

/// What one batch of windows produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Inference {
    /// `n * target_features` values per window: the window's, time-major,
    /// or the front end's features.
    pub reconstruction: Vec<f32>,
    /// `n * latent_dim` values (none for a model without a latent output).
    pub latent: Vec<f32>,
    /// `n` values, for models scored by their negative ELBO.
    pub kl: Option<Vec<f32>>,
    /// `n` values, for models scored by their latent distance.
    pub latent_score: Option<Vec<f32>>,
    /// `n * classes` probabilities, for models with an activity head.
    pub activity: Option<Vec<f32>>,
    /// `n * target_features` values: the front end's features, which the
    /// reconstruction is measured against (none: the input itself).
    pub target: Option<Vec<f32>>,
}
