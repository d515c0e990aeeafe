//! What every backend answers for a batch of windows, and why it may not.

/// Why a backend could not load or run a graph, in the backend's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

impl From<String> for BackendError {
    fn from(reason: String) -> Self {
        Self(reason)
    }
}

/// What one batch of windows produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Inference {
    /// `n * features` values, time-major per window.
    pub reconstruction: Vec<f32>,
    /// `n * latent_dim` values (none for a model without a latent output).
    pub latent: Vec<f32>,
    /// `n` values, for models scored by their negative ELBO.
    pub kl: Option<Vec<f32>>,
}
