//! The check `train` makes before it writes a model file: the exported
//! graph, as tract runs it, computes what candle trained.

use candle_core::{Device, Tensor};

use super::trained::{load_exported, TrainError, Trained};
use crate::model::latent;
use crate::model::meta::ScoreKind;

/// How far the exported graph, as tract runs it, lies from the trained
/// network on some windows: proof that the file computes what was trained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExportGap {
    /// The largest difference over the reconstructions, latent codes and
    /// activity probabilities.
    pub values: f32,
    /// For a latent score: the largest ratio of the distance's difference
    /// to what float32 allows on that window
    /// ([`latent::distance_with_tolerance`]); at most 1 passes.
    pub distance: Option<f32>,
}

impl ExportGap {
    /// The largest difference allowed between the values of both sides.
    pub const TOLERANCE: f32 = 1e-4;

    /// Why the exported graph cannot be trusted, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if self.values.is_nan() || self.values > Self::TOLERANCE {
            return Some(format!(
                "the exported model differs from the trained one by {} (more than {})",
                self.values,
                Self::TOLERANCE
            ));
        }
        match self.distance {
            Some(ratio) if ratio.is_nan() || ratio > 1.0 => Some(format!(
                "the exported latent distance differs from the exact one by {ratio:.2} times \
                 what float32 rounding explains"
            )),
            _ => None,
        }
    }
}

impl std::fmt::Display for ExportGap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1e}", self.values)?;
        if let Some(ratio) = self.distance {
            write!(f, ", distance {ratio:.2} of its rounding bound")?;
        }
        Ok(())
    }
}

/// Compares candle's and tract's outputs on `raw` windows
/// ([`ExportGap`]).
pub fn export_gap(trained: &Trained, raw: &[f32]) -> Result<ExportGap, TrainError> {
    let features = trained.meta.features();
    let n = raw.len() / features;
    let mut input = raw.to_vec();
    if let Some(norm) = &trained.meta.normalization {
        norm.apply(&mut input);
    }
    let loaded = load_exported(&trained.onnx)?;
    let tract = loaded.runtime.run(&input, n)?;
    // The network's input as training computed it: the front end in Rust.
    let x = match &trained.front_end {
        Some(front_end) => front_end.apply(&input),
        None => input,
    };
    let candle = (|| -> candle_core::Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let x = Tensor::from_slice(&x, (n, trained.meta.target_features()), &Device::Cpu)?;
        let (r, z) = trained.network.forward(&x)?;
        let p = match &trained.head {
            Some(head) => head
                .probabilities(&head.input(&z, &x)?)?
                .flatten_all()?
                .to_vec1()?,
            None => Vec::new(),
        };
        Ok((r.flatten_all()?.to_vec1()?, z.flatten_all()?.to_vec1()?, p))
    })()?;
    for (what, served, trained) in [
        ("reconstruction", &tract.reconstruction, &candle.0),
        ("latent", &tract.latent, &candle.1),
    ] {
        if served.len() != trained.len() {
            return Err(TrainError::Reload(format!(
                "the exported {what} has {} values, the trained network's {}",
                served.len(),
                trained.len()
            )));
        }
    }
    let gap = |a: &[f32], b: &[f32]| worst(a.iter().zip(b).map(|(x, y)| (x - y).abs()));
    let code_gap = gap(&tract.latent, &candle.1);
    let mut values = gap(&tract.reconstruction, &candle.0).max(code_gap);
    match (&tract.target, &trained.front_end) {
        (Some(graph), Some(_)) if graph.len() == x.len() => values = values.max(gap(graph, &x)),
        (None, None) => {}
        (graph, _) => {
            return Err(TrainError::Reload(format!(
                "the exported front end gives {} values, the trained one {}",
                graph.as_ref().map_or(0, Vec::len),
                trained.front_end.as_ref().map_or(0, |_| x.len())
            )))
        }
    }
    if let Some(probs) = &tract.activity {
        if probs.len() != candle.2.len() {
            return Err(TrainError::Reload(format!(
                "the exported activity output has {} values, the trained head's {}",
                probs.len(),
                candle.2.len()
            )));
        }
        values = values.max(gap(probs, &candle.2));
    }
    let distance = match (&tract.latent_score, &trained.references, trained.meta.score) {
        (Some(served), Some(refs), ScoreKind::Latent { k, .. } | ScoreKind::Combined { k, .. }) => {
            let dim = trained.meta.latent_dim;
            if served.len() != n {
                return Err(TrainError::Reload(format!(
                    "the exported latent score has {} values for {n} windows",
                    served.len()
                )));
            }
            Some(worst(candle.1.chunks_exact(dim).zip(served).map(
                |(z, served)| {
                    let (exact, allowed) = latent::distance_with_tolerance(z, refs, k, code_gap);
                    (served - exact).abs() / allowed.max(f32::MIN_POSITIVE)
                },
            )))
        }
        (None, _, ScoreKind::Latent { .. } | ScoreKind::Combined { .. }) => {
            return Err(TrainError::Reload(
                "the exported model has no latent_score output".into(),
            ))
        }
        _ => None,
    };
    Ok(ExportGap { values, distance })
}

/// The largest of `values`, NaN if any is: a NaN must fail a check, and
/// `f32::max` would drop it.
fn worst(values: impl Iterator<Item = f32>) -> f32 {
    values.fold(0f32, |w, v| {
        if w.is_nan() || v.is_nan() {
            f32::NAN
        } else {
            w.max(v)
        }
    })
}
