//! The dense variants: basic, deep (stacked), denoising and sparse.

use candle_core::{Result, Tensor, Var};
use candle_nn::{Linear, Module, VarBuilder};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::onnx::{ExportError, Exported, GraphBuilder, INPUT};
use crate::model::config::{Activation, Noise, SparsityPenalty};

use super::net::*;

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
            latent_score: None,
            activity: None,
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
    pub(crate) inner: Deep,
    pub(crate) noise: Noise,
    pub(crate) sigma: f64,
    pub(crate) mask_fraction: f64,
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
        cfg: &crate::model::config::SparseConfig,
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
