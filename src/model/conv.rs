//! The convolutional variant: strided 1-D convolutions over time, decoded
//! by nearest upsampling and convolutions.

use candle_core::{Result, Tensor};
use candle_nn::{Conv1d, Conv1dConfig, Linear, Module, VarBuilder};

use super::onnx::{Attr, ExportError, Exported, GraphBuilder, INPUT};

use super::net::*;

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
        let reduced = arch.rows() >> cfg.filters.len();
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
            window: arch.rows(),
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
            latent_score: None,
            activity: None,
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
