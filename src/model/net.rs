//! What every autoencoder of the family shares, as candle modules that can
//! also write themselves out as ONNX graphs. Each variant is its own network:
//!
//! - [`Basic`](crate::model::dense::Basic): one tanh code layer, linear decoder.
//! - [`Deep`](crate::model::dense::Deep): stacked dense layers, optionally pretrained greedily layer by
//!   layer as shallow autoencoders, then fine-tuned whole.
//! - [`Denoising`](crate::model::dense::Denoising): the deep network trained on corrupted inputs against
//!   the clean ones.
//! - [`Sparse`](crate::model::dense::Sparse): one overcomplete sigmoid code layer under a KL (or L1)
//!   sparsity penalty.
//! - [`Vae`](crate::model::vae::Vae): a variational autoencoder; served deterministically on μ.
//! - [`Conv`](crate::model::conv::Conv): strided 1-D convolutions over time, decoded by nearest
//!   upsampling and convolutions (candle has no backward for transposed
//!   convolutions; this pair exports to ONNX Resize + Conv).

use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::meta::ScoreKind;
use super::onnx::{ExportError, Exported, GraphBuilder, INPUT};
use crate::model::config::{Activation, ModelConfig, ModelInput, Variant};

/// What to build: the input's shape and the model section of the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    /// Samples per window (T).
    pub window: usize,
    /// Channels per sample (C).
    pub channels: usize,
    pub model: ModelConfig,
}

impl Architecture {
    /// The same shapes for another variant.
    pub fn with_variant(mut self, variant: crate::model::config::Variant) -> Self {
        self.model.variant = variant;
        self
    }

    /// Rows of `channels` values the network reads: the window's samples,
    /// or the front end's feature rows.
    pub fn rows(&self) -> usize {
        match self.front_end() {
            Some(front_end) => front_end.rows(self.window),
            None => self.window,
        }
    }

    /// Values per window the network reads and reconstructs.
    pub fn features(&self) -> usize {
        self.rows() * self.channels
    }

    /// The front end a model of this architecture carries, if any.
    pub fn front_end(&self) -> Option<super::meta::FrontEnd> {
        let spectrum = &self.model.spectrum;
        match self.model.input {
            ModelInput::Raw => None,
            ModelInput::Spectrum => Some(spectrum.front_end(self.window, false)),
            ModelInput::Mix => Some(spectrum.front_end(self.window, true)),
        }
    }

    /// The size of the published latent code.
    pub fn latent_dim(&self) -> usize {
        match self.model.variant {
            Variant::Sparse => self
                .model
                .sparse
                .units
                .unwrap_or(self.features() + self.features().div_ceil(4)),
            _ => self.model.latent,
        }
    }
}

/// Settings of greedy layer-wise pretraining.
#[derive(Debug, Clone, Copy)]
pub struct PretrainPlan {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
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

    /// The objective on held-out data, deterministic (no noise, no
    /// sampling), used for early stopping: a regularised variant is judged
    /// with its regulariser, not by reconstruction alone.
    fn validation_loss(&self, x: &Tensor) -> Result<Tensor> {
        let (reconstruction, _) = self.forward(x)?;
        mse(&reconstruction, x)
    }

    /// Writes the same computation as [`forward`](Self::forward) as ONNX
    /// nodes reading the graph input.
    fn export(&self, graph: &mut GraphBuilder) -> std::result::Result<Exported, ExportError>;

    fn hyperparameters(&self) -> serde_json::Value;

    /// How a window's anomaly score is computed from this model's outputs.
    fn score_kind(&self) -> ScoreKind {
        ScoreKind::Mse
    }

    /// Greedy layer-wise pretraining before the whole network is trained;
    /// returns the last loss of each pretrained layer. Most variants have none.
    fn pretrain(
        &self,
        _x: &Tensor,
        _plan: &PretrainPlan,
        _rng: &mut ChaCha8Rng,
    ) -> Result<Vec<f64>> {
        Ok(Vec::new())
    }
}

pub fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (a - b)?.sqr()?.mean_all()
}

pub(crate) fn activate(x: &Tensor, activation: Activation) -> Result<Tensor> {
    match activation {
        Activation::Relu => x.relu(),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => candle_nn::ops::sigmoid(x),
    }
}

pub(crate) fn activation_op(activation: Activation) -> &'static str {
    match activation {
        Activation::Relu => "Relu",
        Activation::Tanh => "Tanh",
        Activation::Sigmoid => "Sigmoid",
    }
}

pub(crate) fn activation_name(activation: Option<Activation>) -> &'static str {
    match activation {
        None => "linear",
        Some(Activation::Relu) => "relu",
        Some(Activation::Tanh) => "tanh",
        Some(Activation::Sigmoid) => "sigmoid",
    }
}

/// Standard normal noise of `like`'s shape, drawn from the seeded generator.
pub(crate) fn normal_like(like: &Tensor, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let values: Vec<f32> = (0..like.elem_count())
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    Tensor::from_vec(values, like.shape(), like.device())
}

/// Dense layers, each followed by its activation (`None` is linear).
pub(crate) struct Mlp {
    pub(crate) layers: Vec<Linear>,
    pub(crate) activations: Vec<Option<Activation>>,
}

impl Mlp {
    /// `sizes[0] -> sizes[1] -> ...`; every layer uses `hidden` but the last,
    /// which uses `last`.
    pub(crate) fn new(
        sizes: &[usize],
        hidden: Activation,
        last: Option<Activation>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let n = sizes.len() - 1;
        let layers = (0..n)
            .map(|i| candle_nn::linear(sizes[i], sizes[i + 1], vb.pp(i)))
            .collect::<Result<_>>()?;
        let activations = (0..n)
            .map(|i| if i + 1 == n { last } else { Some(hidden) })
            .collect();
        Ok(Self {
            layers,
            activations,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (layer, activation) in self.layers.iter().zip(&self.activations) {
            x = layer.forward(&x)?;
            if let Some(a) = activation {
                x = activate(&x, *a)?;
            }
        }
        Ok(x)
    }

    pub(crate) fn export(
        &self,
        graph: &mut GraphBuilder,
        input: &str,
    ) -> std::result::Result<String, ExportError> {
        let mut x = input.to_string();
        for (layer, activation) in self.layers.iter().zip(&self.activations) {
            x = graph.linear(&x, layer)?;
            if let Some(a) = activation {
                x = graph.node(activation_op(*a), &[&x], vec![]);
            }
        }
        Ok(x)
    }
}

/// `x̂ = W₂·act(W₁x + b₁) + b₂`, the graph of both single-code-layer variants.
pub(crate) fn export_one_code_layer(
    graph: &mut GraphBuilder,
    encoder: &Linear,
    activation_op: &str,
    decoder: &Linear,
) -> std::result::Result<Exported, ExportError> {
    let pre = graph.linear(INPUT, encoder)?;
    let latent = graph.node(activation_op, &[&pre], vec![]);
    let reconstruction = graph.linear(&latent, decoder)?;
    Ok(Exported {
        reconstruction,
        latent,
        kl: None,
        latent_score: None,
        activity: None,
    })
}
