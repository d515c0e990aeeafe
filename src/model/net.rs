//! The autoencoder networks, as candle modules that can also write
//! themselves out as ONNX graphs.

use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use rand_chacha::ChaCha8Rng;

use super::onnx::{ExportError, GraphBuilder, INPUT};
use crate::config::Variant;

/// Architecture choices for a variant.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    pub variant: Variant,
    /// Values per window (T·C).
    pub features: usize,
    pub latent: usize,
}

pub trait Autoencoder: Send {
    /// The deterministic pass a served model runs: `(reconstruction, latent)`.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)>;

    /// The training objective for a batch. `rng` drives whatever is
    /// stochastic at training time only.
    fn loss(&self, x: &Tensor, _rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let (reconstruction, _) = self.forward(x)?;
        mse(&reconstruction, x)
    }

    /// Writes the same computation as [`forward`](Self::forward) as ONNX
    /// nodes reading the graph input; returns the names of the
    /// reconstruction and latent values.
    fn export(
        &self,
        graph: &mut GraphBuilder,
    ) -> std::result::Result<(String, String), ExportError>;

    fn hyperparameters(&self) -> serde_json::Value;
}

pub fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (a - b)?.sqr()?.mean_all()
}

pub fn build(arch: &Architecture, vb: VarBuilder) -> Result<Box<dyn Autoencoder>> {
    match arch.variant {
        Variant::Basic => Ok(Box::new(Basic::new(arch.features, arch.latent, vb)?)),
    }
}

/// One hidden code layer: `z = tanh(W₁x + b₁)`, `x̂ = W₂z + b₂`.
pub struct Basic {
    encoder: Linear,
    decoder: Linear,
    features: usize,
    latent: usize,
}

impl Basic {
    pub fn new(features: usize, latent: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            encoder: candle_nn::linear(features, latent, vb.pp("encoder"))?,
            decoder: candle_nn::linear(latent, features, vb.pp("decoder"))?,
            features,
            latent,
        })
    }
}

impl Autoencoder for Basic {
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let latent = self.encoder.forward(x)?.tanh()?;
        let reconstruction = self.decoder.forward(&latent)?;
        Ok((reconstruction, latent))
    }

    fn export(
        &self,
        graph: &mut GraphBuilder,
    ) -> std::result::Result<(String, String), ExportError> {
        let pre = graph.linear(INPUT, &self.encoder)?;
        let latent = graph.node("Tanh", &[&pre], vec![]);
        let reconstruction = graph.linear(&latent, &self.decoder)?;
        Ok((reconstruction, latent))
    }

    fn hyperparameters(&self) -> serde_json::Value {
        serde_json::json!({
            "layers": [self.features, self.latent, self.features],
            "code_activation": "tanh",
            "output_activation": "linear",
        })
    }
}
