//! The autoencoder family, as candle modules that can also write
//! themselves out as ONNX graphs. Each variant is its own network:
//!
//! - [`Basic`]: one tanh code layer, linear decoder.
//! - [`Deep`]: stacked dense layers, optionally pretrained greedily layer by
//!   layer as shallow autoencoders, then fine-tuned whole.
//! - [`Denoising`]: the deep network trained on corrupted inputs against
//!   the clean ones.
//! - [`Sparse`]: one overcomplete sigmoid code layer under a KL (or L1)
//!   sparsity penalty.
//! - [`Vae`]: a variational autoencoder; served deterministically on μ.
//! - [`Conv`]: strided 1-D convolutions over time, decoded by nearest
//!   upsampling and convolutions (candle has no backward for transposed
//!   convolutions; this pair exports to ONNX Resize + Conv).

use candle_core::{Result, Tensor, Var, D};
use candle_nn::{Conv1d, Conv1dConfig, Linear, Module, VarBuilder};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::meta::ScoreKind;
use super::onnx::{Attr, ExportError, GraphBuilder, INPUT};
use crate::config::{Activation, ModelConfig, Noise, SparsityPenalty, VaeScore, Variant};

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
    /// The network `config` describes: its window, channels and `[model]`.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            window: config.window.size,
            channels: config.input.channels.len(),
            model: config.model.clone(),
        }
    }

    /// The same shapes for another variant.
    pub fn with_variant(mut self, variant: crate::config::Variant) -> Self {
        self.model.variant = variant;
        self
    }

    pub fn features(&self) -> usize {
        self.window * self.channels
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

/// The names of a graph's outputs, as [`Autoencoder::export`] wrote them.
pub struct Exported {
    pub reconstruction: String,
    pub latent: String,
    /// Per-window KL divergence of q(z|x) from the prior (VAE only).
    pub kl: Option<String>,
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

pub fn build(arch: &Architecture, vb: VarBuilder) -> Result<Box<dyn Autoencoder>> {
    let m = &arch.model;
    let features = arch.features();
    Ok(match m.variant {
        Variant::Basic => Box::new(Basic::new(features, m.latent, vb)?),
        Variant::Deep => Box::new(Deep::new(features, &m.hidden, m.latent, m.activation, vb)?),
        Variant::Denoising => Box::new(Denoising {
            inner: Deep::new(features, &m.hidden, m.latent, m.activation, vb)?,
            noise: m.denoising.noise,
            sigma: m.denoising.sigma,
            mask_fraction: m.denoising.mask_fraction,
        }),
        Variant::Sparse => Box::new(Sparse::new(features, arch.latent_dim(), &m.sparse, vb)?),
        Variant::Vae => Box::new(Vae::new(
            features,
            &m.hidden,
            m.latent,
            m.activation,
            &m.vae,
            vb,
        )?),
        Variant::Conv => Box::new(Conv::new(arch, vb)?),
    })
}

fn activate(x: &Tensor, activation: Activation) -> Result<Tensor> {
    match activation {
        Activation::Relu => x.relu(),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => candle_nn::ops::sigmoid(x),
    }
}

fn activation_op(activation: Activation) -> &'static str {
    match activation {
        Activation::Relu => "Relu",
        Activation::Tanh => "Tanh",
        Activation::Sigmoid => "Sigmoid",
    }
}

fn activation_name(activation: Option<Activation>) -> &'static str {
    match activation {
        None => "linear",
        Some(Activation::Relu) => "relu",
        Some(Activation::Tanh) => "tanh",
        Some(Activation::Sigmoid) => "sigmoid",
    }
}

/// Standard normal noise of `like`'s shape, drawn from the seeded generator.
fn normal_like(like: &Tensor, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let values: Vec<f32> = (0..like.elem_count())
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    Tensor::from_vec(values, like.shape(), like.device())
}

/// Dense layers, each followed by its activation (`None` is linear).
struct Mlp {
    layers: Vec<Linear>,
    activations: Vec<Option<Activation>>,
}

impl Mlp {
    /// `sizes[0] -> sizes[1] -> ...`; every layer uses `hidden` but the last,
    /// which uses `last`.
    fn new(
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

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (layer, activation) in self.layers.iter().zip(&self.activations) {
            x = layer.forward(&x)?;
            if let Some(a) = activation {
                x = activate(&x, *a)?;
            }
        }
        Ok(x)
    }

    fn export(
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
fn export_one_code_layer(
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
    })
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

    fn export(&self, graph: &mut GraphBuilder) -> std::result::Result<Exported, ExportError> {
        export_one_code_layer(graph, &self.encoder, "Tanh", &self.decoder)
    }

    fn hyperparameters(&self) -> serde_json::Value {
        serde_json::json!({
            "layers": [self.features, self.latent, self.features],
            "code_activation": "tanh",
            "output_activation": "linear",
        })
    }
}

/// Stacked dense layers `F -> h₁ -> ... -> latent -> ... -> h₁ -> F`, with
/// a linear code and a linear output.
pub struct Deep {
    encoder: Mlp,
    decoder: Mlp,
    sizes: Vec<usize>,
    activation: Activation,
}

impl Deep {
    pub fn new(
        features: usize,
        hidden: &[usize],
        latent: usize,
        activation: Activation,
        vb: VarBuilder,
    ) -> Result<Self> {
        let sizes: Vec<usize> = std::iter::once(features)
            .chain(hidden.iter().copied())
            .chain([latent])
            .collect();
        let reversed: Vec<usize> = sizes.iter().rev().copied().collect();
        Ok(Self {
            encoder: Mlp::new(&sizes, activation, None, vb.pp("encoder"))?,
            decoder: Mlp::new(&reversed, activation, None, vb.pp("decoder"))?,
            sizes,
            activation,
        })
    }
}

impl Autoencoder for Deep {
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let latent = self.encoder.forward(x)?;
        Ok((self.decoder.forward(&latent)?, latent))
    }

    fn export(&self, graph: &mut GraphBuilder) -> std::result::Result<Exported, ExportError> {
        let latent = self.encoder.export(graph, INPUT)?;
        let reconstruction = self.decoder.export(graph, &latent)?;
        Ok(Exported {
            reconstruction,
            latent,
            kl: None,
        })
    }

    fn hyperparameters(&self) -> serde_json::Value {
        let mut layers = self.sizes.clone();
        layers.extend(self.sizes.iter().rev().skip(1));
        serde_json::json!({
            "layers": layers,
            "hidden_activation": activation_name(Some(self.activation)),
            "code_activation": "linear",
            "output_activation": "linear",
        })
    }

    /// Trains encoder layer i with its mirror decoder layer as a shallow
    /// autoencoder on the codes of layers 0..i, one layer after another.
    fn pretrain(&self, x: &Tensor, plan: &PretrainPlan, rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
        use candle_nn::Optimizer;
        use rand::seq::SliceRandom;
        let depth = self.encoder.layers.len();
        let mut input = x.detach();
        let mut losses = Vec::with_capacity(depth);
        for i in 0..depth {
            let (enc, enc_act) = (&self.encoder.layers[i], self.encoder.activations[i]);
            let (dec, dec_act) = (
                &self.decoder.layers[depth - 1 - i],
                self.decoder.activations[depth - 1 - i],
            );
            let vars = [
                enc.weight(),
                enc.bias().expect("bias"),
                dec.weight(),
                dec.bias().expect("bias"),
            ]
            .into_iter()
            .map(Var::from_tensor)
            .collect::<Result<Vec<_>>>()?;
            let mut optimizer = candle_nn::AdamW::new(
                vars,
                candle_nn::ParamsAdamW {
                    lr: plan.learning_rate,
                    weight_decay: plan.weight_decay,
                    ..Default::default()
                },
            )?;
            let shallow = |x: &Tensor| -> Result<Tensor> {
                let mut h = enc.forward(x)?;
                if let Some(a) = enc_act {
                    h = activate(&h, a)?;
                }
                let mut r = dec.forward(&h)?;
                if let Some(a) = dec_act {
                    r = activate(&r, a)?;
                }
                Ok(r)
            };
            let n = input.dim(0)?;
            let mut order: Vec<u32> = (0..n as u32).collect();
            let mut last = f64::NAN;
            for _ in 0..plan.epochs {
                order.shuffle(rng);
                let (mut sum, mut batches) = (0.0, 0);
                for chunk in order.chunks(plan.batch_size) {
                    let idx = Tensor::from_slice(chunk, chunk.len(), input.device())?;
                    let batch = input.index_select(&idx, 0)?;
                    let loss = mse(&shallow(&batch)?, &batch)?;
                    optimizer.backward_step(&loss)?;
                    sum += loss.to_scalar::<f32>()? as f64;
                    batches += 1;
                }
                last = sum / batches as f64;
            }
            losses.push(last);
            let mut next = enc.forward(&input)?;
            if let Some(a) = enc_act {
                next = activate(&next, a)?;
            }
            input = next.detach();
        }
        Ok(losses)
    }
}

/// The deep network, trained to reconstruct the clean input from a
/// corrupted one; serving sees the clean input.
pub struct Denoising {
    inner: Deep,
    noise: Noise,
    sigma: f64,
    mask_fraction: f64,
}

impl Denoising {
    /// x̃ ~ q(x̃|x): additive Gaussian noise, or masking noise.
    pub fn corrupt(&self, x: &Tensor, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        match self.noise {
            Noise::Gaussian => x + (normal_like(x, rng)? * self.sigma)?,
            Noise::Mask => {
                let keep: Vec<f32> = (0..x.elem_count())
                    .map(|_| {
                        if rng.random::<f64>() < self.mask_fraction {
                            0.0
                        } else {
                            1.0
                        }
                    })
                    .collect();
                x * Tensor::from_vec(keep, x.shape(), x.device())?
            }
        }
    }
}

impl Autoencoder for Denoising {
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.inner.forward(x)
    }

    /// L(x, g(f(x̃))): the loss compares with the clean input.
    fn loss(&self, x: &Tensor, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let corrupted = self.corrupt(x, rng)?;
        let (reconstruction, _) = self.inner.forward(&corrupted)?;
        mse(&reconstruction, x)
    }

    fn export(&self, graph: &mut GraphBuilder) -> std::result::Result<Exported, ExportError> {
        self.inner.export(graph)
    }

    fn hyperparameters(&self) -> serde_json::Value {
        let mut h = self.inner.hyperparameters();
        h["noise"] = serde_json::json!(match self.noise {
            Noise::Gaussian => serde_json::json!({ "kind": "gaussian", "sigma": self.sigma }),
            Noise::Mask => serde_json::json!({ "kind": "mask", "fraction": self.mask_fraction }),
        });
        h
    }
}

/// One overcomplete code layer of sigmoid units, few active at once.
pub struct Sparse {
    encoder: Linear,
    decoder: Linear,
    features: usize,
    units: usize,
    penalty: SparsityPenalty,
    rho: f64,
    beta: f64,
    l1: f64,
}

impl Sparse {
    pub fn new(
        features: usize,
        units: usize,
        cfg: &crate::config::SparseConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            encoder: candle_nn::linear(features, units, vb.pp("encoder"))?,
            decoder: candle_nn::linear(units, features, vb.pp("decoder"))?,
            features,
            units,
            penalty: cfg.penalty,
            rho: cfg.rho,
            beta: cfg.beta,
            l1: cfg.l1,
        })
    }

    /// The penalty on a batch of code activations `h` (values in (0, 1)).
    pub fn sparsity_penalty(&self, h: &Tensor) -> Result<Tensor> {
        match self.penalty {
            SparsityPenalty::Kl => {
                // Mean over units of KL(ρ ‖ ρ̂ⱼ), ρ̂ⱼ the unit's mean activation.
                let rho_hat = h.mean(0)?.clamp(1e-6f32, 1.0 - 1e-6)?;
                let rho = self.rho;
                let kl = ((rho_hat.recip()? * rho)?.log()? * rho)?.add(
                    &(((rho_hat.affine(-1.0, 1.0)?.recip()? * (1.0 - rho))?.log()? * (1.0 - rho))?),
                )?;
                kl.mean_all()? * self.beta
            }
            SparsityPenalty::L1 => h.abs()?.mean_all()? * self.l1,
        }
    }
}

impl Autoencoder for Sparse {
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let code = candle_nn::ops::sigmoid(&self.encoder.forward(x)?)?;
        Ok((self.decoder.forward(&code)?, code))
    }

    fn loss(&self, x: &Tensor, _rng: &mut ChaCha8Rng) -> Result<Tensor> {
        self.validation_loss(x)
    }

    fn validation_loss(&self, x: &Tensor) -> Result<Tensor> {
        let (reconstruction, code) = self.forward(x)?;
        mse(&reconstruction, x)? + self.sparsity_penalty(&code)?
    }

    fn export(&self, graph: &mut GraphBuilder) -> std::result::Result<Exported, ExportError> {
        export_one_code_layer(graph, &self.encoder, "Sigmoid", &self.decoder)
    }

    fn hyperparameters(&self) -> serde_json::Value {
        let penalty = match self.penalty {
            SparsityPenalty::Kl => {
                serde_json::json!({ "kind": "kl", "rho": self.rho, "beta": self.beta })
            }
            SparsityPenalty::L1 => serde_json::json!({ "kind": "l1", "lambda": self.l1 }),
        };
        serde_json::json!({
            "layers": [self.features, self.units, self.features],
            "code_activation": "sigmoid",
            "output_activation": "linear",
            "penalty": penalty,
        })
    }
}

/// q(z|x) = N(μ(x), diag σ²(x)); p(x|z) Gaussian with unit variance.
pub struct Vae {
    encoder: Option<Mlp>,
    mu: Linear,
    log_var: Linear,
    decoder: Mlp,
    sizes: Vec<usize>,
    activation: Activation,
    beta: f64,
    score: VaeScore,
}

impl Vae {
    pub fn new(
        features: usize,
        hidden: &[usize],
        latent: usize,
        activation: Activation,
        cfg: &crate::config::VaeConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        let trunk: Vec<usize> = std::iter::once(features)
            .chain(hidden.iter().copied())
            .collect();
        let encoder = if hidden.is_empty() {
            None
        } else {
            Some(Mlp::new(
                &trunk,
                activation,
                Some(activation),
                vb.pp("encoder"),
            )?)
        };
        let last = *trunk.last().expect("features");
        let decoder_sizes: Vec<usize> = std::iter::once(latent)
            .chain(trunk.iter().rev().copied())
            .collect();
        Ok(Self {
            encoder,
            mu: candle_nn::linear(last, latent, vb.pp("mu"))?,
            log_var: candle_nn::linear(last, latent, vb.pp("log_var"))?,
            decoder: Mlp::new(&decoder_sizes, activation, None, vb.pp("decoder"))?,
            sizes: trunk.into_iter().chain([latent]).collect(),
            activation,
            beta: cfg.beta,
            score: cfg.score,
        })
    }

    fn encode(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = match &self.encoder {
            Some(encoder) => encoder.forward(x)?,
            None => x.clone(),
        };
        Ok((self.mu.forward(&h)?, self.log_var.forward(&h)?))
    }

    /// ½Σ(x − decode(z))² + β·KL per window, averaged over the batch and
    /// divided by the number of inputs.
    fn negative_elbo(
        &self,
        x: &Tensor,
        z: &Tensor,
        mu: &Tensor,
        log_var: &Tensor,
    ) -> Result<Tensor> {
        let reconstruction = self.decoder.forward(z)?;
        let nll = ((reconstruction - x)?.sqr()?.sum(D::Minus1)? * 0.5)?;
        let kl = Self::kl(mu, log_var)?;
        let features = x.dim(D::Minus1)? as f64;
        (nll + (kl * self.beta)?)?.mean_all()? / features
    }

    /// KL(N(μ, σ²) ‖ N(0, I)) per row: -½ Σ (1 + log σ² − μ² − σ²).
    pub fn kl(mu: &Tensor, log_var: &Tensor) -> Result<Tensor> {
        ((log_var + 1.0)? - mu.sqr()? - log_var.exp()?)?.sum(D::Minus1)? * -0.5
    }
}

impl Autoencoder for Vae {
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (mu, _) = self.encode(x)?;
        Ok((self.decoder.forward(&mu)?, mu))
    }

    /// Negative ELBO per window, averaged over the batch and divided by the
    /// number of inputs (a constant scale that keeps learning rates
    /// comparable with the other variants): ½Σ(x − x̂)² + β·KL, with
    /// z = μ + σ·ε sampled by the reparameterisation trick.
    fn loss(&self, x: &Tensor, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let (mu, log_var) = self.encode(x)?;
        let z = (&mu + ((&log_var * 0.5)?.exp()? * normal_like(&mu, rng)?)?)?;
        self.negative_elbo(x, &z, &mu, &log_var)
    }

    /// The negative ELBO at z = μ, on the same scale as the training loss.
    fn validation_loss(&self, x: &Tensor) -> Result<Tensor> {
        let (mu, log_var) = self.encode(x)?;
        self.negative_elbo(x, &mu, &mu, &log_var)
    }

    fn export(&self, graph: &mut GraphBuilder) -> std::result::Result<Exported, ExportError> {
        let h = match &self.encoder {
            Some(encoder) => encoder.export(graph, INPUT)?,
            None => INPUT.to_string(),
        };
        let mu = graph.linear(&h, &self.mu)?;
        let log_var = graph.linear(&h, &self.log_var)?;
        let reconstruction = self.decoder.export(graph, &mu)?;
        let one = graph.scalar("one", 1.0);
        let minus_half = graph.scalar("minus_half", -0.5);
        let axis = graph.constant_i64("axis", vec![1]);
        let lv1 = graph.node("Add", &[&log_var, &one], vec![]);
        let mu2 = graph.node("Mul", &[&mu, &mu], vec![]);
        let var = graph.node("Exp", &[&log_var], vec![]);
        let d1 = graph.node("Sub", &[&lv1, &mu2], vec![]);
        let d2 = graph.node("Sub", &[&d1, &var], vec![]);
        let sum = graph.node("ReduceSum", &[&d2, &axis], vec![Attr::Int("keepdims", 0)]);
        let kl = graph.node("Mul", &[&sum, &minus_half], vec![]);
        Ok(Exported {
            reconstruction,
            latent: mu,
            kl: Some(kl),
        })
    }

    fn hyperparameters(&self) -> serde_json::Value {
        serde_json::json!({
            "encoder_layers": self.sizes,
            "hidden_activation": activation_name(Some(self.activation)),
            "beta": self.beta,
            "likelihood": "gaussian, unit variance",
            "served_code": "mu",
            "score": self.score,
        })
    }

    fn score_kind(&self) -> ScoreKind {
        match self.score {
            VaeScore::Reconstruction => ScoreKind::Mse,
            VaeScore::NegElbo => ScoreKind::NegElbo { beta: self.beta },
        }
    }
}

/// `[N, T·C] -> [N, C, T]`, strided convolutions, a dense code, then dense,
/// nearest upsampling and convolutions back to `[N, T·C]`.
pub struct Conv {
    encoder: Vec<Conv1d>,
    to_code: Linear,
    from_code: Linear,
    decoder: Vec<Conv1d>,
    window: usize,
    channels: usize,
    filters: Vec<usize>,
    kernel: usize,
    latent: usize,
}

impl Conv {
    pub fn new(arch: &Architecture, vb: VarBuilder) -> Result<Self> {
        let cfg = &arch.model.conv;
        let (k, c) = (cfg.kernel, arch.channels);
        let strided = Conv1dConfig {
            padding: k / 2,
            stride: 2,
            ..Default::default()
        };
        let same = Conv1dConfig {
            padding: k / 2,
            stride: 1,
            ..Default::default()
        };
        let mut encoder = Vec::new();
        let mut inputs = c;
        for (i, f) in cfg.filters.iter().enumerate() {
            encoder.push(candle_nn::conv1d(
                inputs,
                *f,
                k,
                strided,
                vb.pp(format!("encoder.{i}")),
            )?);
            inputs = *f;
        }
        let reduced = arch.window >> cfg.filters.len();
        let flat = inputs * reduced;
        let mut decoder = Vec::new();
        for i in (0..cfg.filters.len()).rev() {
            let out = if i == 0 { c } else { cfg.filters[i - 1] };
            decoder.push(candle_nn::conv1d(
                cfg.filters[i],
                out,
                k,
                same,
                vb.pp(format!("decoder.{i}")),
            )?);
        }
        Ok(Self {
            encoder,
            to_code: candle_nn::linear(flat, arch.model.latent, vb.pp("to_code"))?,
            from_code: candle_nn::linear(arch.model.latent, flat, vb.pp("from_code"))?,
            decoder,
            window: arch.window,
            channels: c,
            filters: cfg.filters.clone(),
            kernel: k,
            latent: arch.model.latent,
        })
    }

    fn reduced(&self) -> usize {
        self.window >> self.filters.len()
    }

    fn conv_attrs(&self, stride: i64) -> Vec<Attr> {
        let p = (self.kernel / 2) as i64;
        vec![
            Attr::Ints("kernel_shape", vec![self.kernel as i64]),
            Attr::Ints("strides", vec![stride]),
            Attr::Ints("pads", vec![p, p]),
            Attr::Ints("dilations", vec![1]),
            Attr::Int("group", 1),
        ]
    }
}

impl Autoencoder for Conv {
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = x.dim(0)?;
        let mut h = x
            .reshape((n, self.window, self.channels))?
            .transpose(1, 2)?
            .contiguous()?;
        for conv in &self.encoder {
            h = conv.forward(&h)?.relu()?;
        }
        let latent = self.to_code.forward(&h.flatten_from(1)?)?;
        let last = *self.filters.last().expect("a stage");
        let mut h = self
            .from_code
            .forward(&latent)?
            .relu()?
            .reshape((n, last, self.reduced()))?;
        for (i, conv) in self.decoder.iter().enumerate() {
            let length = h.dim(2)?;
            h = conv.forward(&h.upsample_nearest1d(2 * length)?)?;
            if i + 1 < self.decoder.len() {
                h = h.relu()?;
            }
        }
        let reconstruction = h
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n, self.window * self.channels))?;
        Ok((reconstruction, latent))
    }

    fn export(&self, graph: &mut GraphBuilder) -> std::result::Result<Exported, ExportError> {
        let ntc = graph.constant_i64("shape", vec![-1, self.window as i64, self.channels as i64]);
        let x = graph.node("Reshape", &[INPUT, &ntc], vec![]);
        let mut h = graph.node("Transpose", &[&x], vec![Attr::Ints("perm", vec![0, 2, 1])]);
        for conv in &self.encoder {
            let w = graph.weights("conv_w", conv.weight())?;
            let b = graph.weights("conv_b", conv.bias().expect("bias"))?;
            h = graph.node("Conv", &[&h, &w, &b], self.conv_attrs(2));
            h = graph.node("Relu", &[&h], vec![]);
        }
        let flat = graph.node("Flatten", &[&h], vec![Attr::Int("axis", 1)]);
        let latent = graph.linear(&flat, &self.to_code)?;
        let last = *self.filters.last().expect("a stage") as i64;
        let expanded = graph.linear(&latent, &self.from_code)?;
        let expanded = graph.node("Relu", &[&expanded], vec![]);
        let shape = graph.constant_i64("shape", vec![-1, last, self.reduced() as i64]);
        let mut h = graph.node("Reshape", &[&expanded, &shape], vec![]);
        let scales = graph.floats("scales", vec![1.0, 1.0, 2.0]);
        for (i, conv) in self.decoder.iter().enumerate() {
            h = graph.node(
                "Resize",
                &[&h, "", &scales],
                vec![
                    Attr::Str("mode", "nearest"),
                    Attr::Str("coordinate_transformation_mode", "asymmetric"),
                    Attr::Str("nearest_mode", "floor"),
                ],
            );
            let w = graph.weights("conv_w", conv.weight())?;
            let b = graph.weights("conv_b", conv.bias().expect("bias"))?;
            h = graph.node("Conv", &[&h, &w, &b], self.conv_attrs(1));
            if i + 1 < self.decoder.len() {
                h = graph.node("Relu", &[&h], vec![]);
            }
        }
        let h = graph.node("Transpose", &[&h], vec![Attr::Ints("perm", vec![0, 2, 1])]);
        let flat_shape =
            graph.constant_i64("shape", vec![-1, (self.window * self.channels) as i64]);
        let reconstruction = graph.node("Reshape", &[&h, &flat_shape], vec![]);
        Ok(Exported {
            reconstruction,
            latent,
            kl: None,
        })
    }

    fn hyperparameters(&self) -> serde_json::Value {
        serde_json::json!({
            "filters": self.filters,
            "kernel": self.kernel,
            "stride": 2,
            "latent": self.latent,
            "upsampling": "nearest",
            "hidden_activation": "relu",
            "code_activation": "linear",
        })
    }
}
