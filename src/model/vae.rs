//! The variational autoencoder, served deterministically on μ.

use candle_core::{Result, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};
use rand_chacha::ChaCha8Rng;

use super::meta::ScoreKind;
use super::onnx::{Attr, ExportError, Exported, GraphBuilder, INPUT};
use crate::model::config::{Activation, VaeScore};

use super::net::*;

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
        cfg: &crate::model::config::VaeConfig,
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
            latent_score: None,
            activity: None,
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
