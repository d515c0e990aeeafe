//! What training gives back, and why it may fail.

use std::time::Duration;

use super::head;
use crate::model::meta::ModelMetadata;
use crate::model::net::Autoencoder;
use crate::model::onnx;
use crate::model::spectrum::FittedFrontEnd;

#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub train_windows: usize,
    pub validation_windows: usize,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub train_loss: f64,
    pub validation_loss: f64,
    pub threshold: f64,
    /// Streams held out whole, being too short to hold out a tail.
    pub whole_streams: usize,
    pub elapsed: Duration,
}

pub struct Trained {
    pub onnx: Vec<u8>,
    pub meta: ModelMetadata,
    pub network: Box<dyn Autoencoder>,
    /// The training codes a latent score measures against (`[M, latent_dim]`).
    pub references: Option<Vec<f32>>,
    /// The activity head, when the windows were labelled.
    pub head: Option<head::Head>,
    /// The front end, with its standardisation, for `model.input = "spectrum"`.
    pub front_end: Option<FittedFrontEnd>,
    pub summary: TrainSummary,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(
        "too few windows: {windows} in all, {train} for training and {validation} held out; \
         record more data or lower window.size"
    )]
    TooFewWindows {
        windows: usize,
        train: usize,
        validation: usize,
    },
    #[error(
        "training diverged at epoch {epoch}: the loss is {loss}; lower training.learning_rate"
    )]
    Diverged { epoch: usize, loss: f64 },
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("export: {0}")]
    Export(#[from] onnx::ExportError),
    #[error("reading the exported model back: {0}")]
    Reload(String),
    #[error("scoring with the exported model: {0}")]
    Score(#[from] crate::model::inference::BackendError),
}

/// The exported graph read back the way the daemon reads a model file.
pub(crate) fn load_exported(onnx: &[u8]) -> Result<crate::model::LoadedModel, TrainError> {
    crate::model::LoadedModel::from_bytes(onnx, std::path::Path::new("<exported>"))
        .map_err(|e| TrainError::Reload(e.to_string()))
}
