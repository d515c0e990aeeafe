//! Training with candle: a deterministic split, per-channel standardisation,
//! seeded initialisation, AdamW on mini-batches, early stopping on the
//! validation loss, threshold calibration on held-out normal windows, and
//! export to one ONNX file.

mod check;
pub mod config;
pub mod head;
mod init;
mod trained;
mod windows;

use init::seeded_init;

pub use check::{export_gap, ExportGap};
use trained::load_exported;
pub use trained::{TrainError, TrainSummary, Trained};
pub use windows::{split, Split, WindowSet};

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use super::family;
use super::latent;
use super::meta::{
    Calibration, InputLayout, ModelMetadata, Moments, Normalization, ScoreKind, TrainingRecord,
    FORMAT,
};
use super::net::{Architecture, Autoencoder};
use super::onnx::GraphBuilder;
use super::spectrum::FittedFrontEnd;
use crate::model::config::ScoreChoice;
use crate::model::train::config::TrainingConfig;
use crate::score;

#[derive(Debug, Clone)]
pub struct InputSpec {
    pub channels: Vec<String>,
    pub window: usize,
    pub hop: usize,
    pub sample_rate_hz: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochReport {
    pub epoch: usize,
    pub epochs: usize,
    pub train_loss: f64,
    pub validation_loss: f64,
    pub best: bool,
}

pub fn train(
    arch: &Architecture,
    settings: &TrainingConfig,
    input: &InputSpec,
    windows: &WindowSet,
    on_epoch: &mut dyn FnMut(&EpochReport),
) -> Result<Trained, TrainError> {
    train_paced(arch, settings, input, windows, on_epoch, &mut || {})
}

/// [`train`], calling `pace` after every batch (online training sleeps
/// there to keep to its CPU share).
pub fn train_paced(
    arch: &Architecture,
    settings: &TrainingConfig,
    input: &InputSpec,
    windows: &WindowSet,
    on_epoch: &mut dyn FnMut(&EpochReport),
    pace: &mut dyn FnMut(),
) -> Result<Trained, TrainError> {
    let started = Instant::now();
    let device = Device::Cpu;
    debug_assert_eq!(windows.features, arch.window * arch.channels);
    // What the network reads and reconstructs per window.
    let features = arch.features();
    let plan = split(
        windows,
        settings.validation_fraction,
        input.window,
        input.hop,
    );
    if plan.train.len() < 2 || plan.validation.is_empty() {
        return Err(TrainError::TooFewWindows {
            windows: windows.len(),
            train: plan.train.len(),
            validation: plan.validation.len(),
        });
    }
    if plan.whole_streams > 0 {
        tracing::info!(
            "{} of {} streams are too short to hold out their last {}%: {} of them held out whole",
            plan.short_streams,
            plan.streams,
            (settings.validation_fraction * 100.0).round(),
            plan.whole_streams
        );
    }
    let Split {
        train: train_idx,
        validation: val_idx,
        whole_streams,
        ..
    } = plan;
    let mut train_raw = Vec::with_capacity(train_idx.len() * windows.features);
    for &i in &train_idx {
        train_raw.extend_from_slice(windows.window(i));
    }
    let normalization = Normalization::fit(&train_raw, input.channels.len());
    let data_sha256 = format!("{:x}", Sha256::digest(bytes_of(&train_raw)));
    let standardiser = normalization.standardiser();
    let normalised = |idx: &[usize]| {
        let mut out = Vec::with_capacity(idx.len() * windows.features);
        for &i in idx {
            standardiser.extend(windows.window(i), &mut out);
        }
        out
    };
    let train_windows = normalised(&train_idx);
    let val_windows = normalised(&val_idx);
    let front_end = arch.front_end().map(|front_end| {
        FittedFrontEnd::fit(&front_end, input.window, arch.channels, &train_windows)
    });
    let network_input = |normalised: Vec<f32>| match &front_end {
        Some(front_end) => front_end.apply(&normalised),
        None => normalised,
    };
    let train_x = Tensor::from_vec(
        network_input(train_windows),
        (train_idx.len(), features),
        &device,
    )?;
    let val_x = Tensor::from_vec(
        network_input(val_windows.clone()),
        (val_idx.len(), features),
        &device,
    )?;

    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let varmap = VarMap::new();
    let network = family::build(arch, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    let vars = seeded_init(&varmap, &mut rng)?;
    let pretrain_losses = if settings.pretrain_epochs > 0 {
        let plan = crate::model::net::PretrainPlan {
            epochs: settings.pretrain_epochs,
            batch_size: settings.batch_size,
            learning_rate: settings.learning_rate,
            weight_decay: settings.weight_decay,
        };
        network.pretrain(&train_x, &plan, &mut rng)?
    } else {
        Vec::new()
    };
    // The front end's standardised features lead the network's input.
    let head_front_end = match &front_end {
        Some(front_end) if settings.activity.front_end => front_end.spectrum.features(),
        _ => 0,
    };
    let joint = head::Joint::new(
        windows.labels.as_ref(),
        &train_idx,
        &val_idx,
        arch.latent_dim(),
        head_front_end,
        settings,
        &mut rng,
    )?;
    let mut vars = vars;
    vars.extend(joint.iter().flat_map(|j| j.head.vars().iter().cloned()));
    let mut optimizer = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: settings.learning_rate,
            weight_decay: settings.weight_decay,
            ..Default::default()
        },
    )?;

    let mut order: Vec<u32> = (0..train_idx.len() as u32).collect();
    let mut best: Option<(usize, f64, f64, Vec<Tensor>)> = None;
    let mut epochs_run = 0;
    for epoch in 1..=settings.epochs {
        epochs_run = epoch;
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        let mut batches = 0;
        for chunk in order.chunks(settings.batch_size) {
            let idx = Tensor::from_slice(chunk, chunk.len(), &device)?;
            let batch = train_x.index_select(&idx, 0)?;
            let mut loss = network.loss(&batch, &mut rng)?;
            if let Some(joint) = &joint {
                loss = (loss + joint.loss(network.as_ref(), &batch, &idx)?)?;
            }
            optimizer.backward_step(&loss)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            batches += 1;
            pace();
        }
        let train_loss = loss_sum / batches as f64;
        let mut validation = network.validation_loss(&val_x)?;
        if let Some(joint) = &joint {
            validation = (validation + joint.validation_loss(network.as_ref(), &val_x)?)?;
        }
        let validation_loss = validation.to_scalar::<f32>()? as f64;
        if !train_loss.is_finite() || !validation_loss.is_finite() {
            return Err(TrainError::Diverged {
                epoch,
                loss: train_loss,
            });
        }
        let improved = best
            .as_ref()
            .is_none_or(|(_, _, v, _)| validation_loss < *v);
        if improved {
            let snapshot = vars
                .iter()
                .map(|v| v.as_tensor().copy())
                .collect::<candle_core::Result<_>>()?;
            best = Some((epoch, train_loss, validation_loss, snapshot));
        }
        on_epoch(&EpochReport {
            epoch,
            epochs: settings.epochs,
            train_loss,
            validation_loss,
            best: improved,
        });
        let best_epoch = best.as_ref().map_or(epoch, |b| b.0);
        if epoch - best_epoch >= settings.patience {
            break;
        }
    }
    let (best_epoch, train_loss, validation_loss, snapshot) = best.expect("at least one epoch ran");
    for (var, value) in vars.iter().zip(&snapshot) {
        var.set(value)?;
    }
    let head = match (&windows.labels, joint) {
        (Some(labels), Some(joint)) => Some(joint.finish(network.as_ref(), labels, &val_x)?),
        (Some(labels), None) => Some(head::fit_frozen(
            network.as_ref(),
            labels,
            &train_idx,
            &val_idx,
            &train_x,
            &val_x,
            head_front_end,
            settings,
            &mut rng,
        )?),
        (None, _) => None,
    };

    let mut meta = ModelMetadata {
        format: FORMAT.into(),
        id: String::new(),
        variant: arch.model.variant.name().into(),
        channels: input.channels.clone(),
        window: input.window,
        hop: input.hop,
        sample_rate_hz: input.sample_rate_hz,
        input_layout: InputLayout::Flat,
        latent_dim: arch.latent_dim(),
        input: None,
        reconstruction_output: None,
        latent_output: None,
        normalization: Some(normalization),
        score: network.score_kind(),
        threshold: 0.0,
        calibration: Some(Calibration {
            quantile: settings.threshold_quantile,
            windows: val_idx.len(),
        }),
        hyperparameters: network.hyperparameters(),
        training: Some(TrainingRecord {
            tool: format!("accelwatch {}", env!("CARGO_PKG_VERSION")),
            train_windows: train_idx.len(),
            validation_windows: val_idx.len(),
            epochs_run,
            best_epoch,
            train_loss,
            validation_loss,
            seed: settings.seed,
            data_sha256,
            optimizer: "adamw".into(),
            learning_rate: settings.learning_rate,
            batch_size: settings.batch_size,
            pretrain_losses,
        }),
        activity: head.as_ref().map(|h| h.1.clone()),
        front_end: arch.front_end(),
        error_weights: None,
    };
    let head = head.map(|h| h.0);
    // A latent score measures codes against the training windows' own
    // (thinned to model.references), which the graph then carries.
    let references = match arch.model.score_to_train() {
        ScoreChoice::Reconstruction => None,
        ScoreChoice::Latent | ScoreChoice::Combined => {
            let (_, z) = network.forward(&train_x)?;
            let codes: Vec<f32> = z.flatten_all()?.to_vec1()?;
            let refs = latent::references(&codes, meta.latent_dim, arch.model.references);
            let m = refs.len() / meta.latent_dim.max(1);
            meta.score = ScoreKind::Latent {
                k: arch.model.neighbors.min(m),
                references: m,
            };
            Some(refs)
        }
    };
    // The threshold is calibrated by scoring the held-out windows with the
    // exported model itself, exactly as the daemon will score them.
    let exported = export(
        network.as_ref(),
        &mut meta,
        references.as_deref(),
        head.as_ref(),
        front_end.as_ref(),
    )?;
    let mut model = load_exported(&exported)?;
    let held_out = model.runtime.run(&val_windows, val_idx.len())?;
    let held_out_targets = held_out.target.as_deref().unwrap_or(&val_windows);
    // With a front end, each feature's error counts by how surprising it is
    // (measured: mean ROC AUC on the 14 tasks 0.956 to 0.960, docs/measured.md).
    if let (Some(front_end), false) = (&front_end, matches!(meta.score, ScoreKind::NegElbo { .. }))
    {
        let weights = score::error_weights(
            held_out_targets,
            &held_out.reconstruction,
            features,
            front_end.spectrum.features(),
        );
        meta.error_weights = Some(weights.clone());
        model.meta.error_weights = Some(weights);
    }
    if let (ScoreChoice::Combined, ScoreKind::Latent { k, references }) =
        (arch.model.score_to_train(), meta.score)
    {
        // Each part standardised by its own spread on the held-out windows.
        let errors: Vec<f32> = held_out_targets
            .chunks_exact(features)
            .zip(held_out.reconstruction.chunks_exact(features))
            .map(|(x, r)| score::reconstruction_error(x, r, meta.error_weights.as_deref()))
            .collect();
        let distances = held_out.latent_score.clone().unwrap_or_default();
        meta.score = ScoreKind::Combined {
            k,
            references,
            reconstruction: Moments::of(&errors),
            latent: Moments::of(&distances),
        };
        model.meta.score = meta.score;
    }
    let mut scorer = crate::model::scorer::Scorer::new(model);
    let mut errors: Vec<f32> = scorer
        .score(val_idx.iter().map(|&i| windows.window(i)))
        .map_err(TrainError::Score)?
        .into_iter()
        .map(|s| s.score)
        .collect();
    meta.threshold = score::quantile(&mut errors, settings.threshold_quantile) as f64;
    let onnx = export(
        network.as_ref(),
        &mut meta,
        references.as_deref(),
        head.as_ref(),
        front_end.as_ref(),
    )?;
    let threshold = meta.threshold;
    let summary = TrainSummary {
        train_windows: train_idx.len(),
        validation_windows: val_idx.len(),
        epochs_run,
        best_epoch,
        train_loss,
        validation_loss,
        threshold,
        whole_streams,
        elapsed: started.elapsed(),
    };
    Ok(Trained {
        onnx,
        meta,
        network,
        references,
        head,
        front_end,
        summary,
    })
}

fn export(
    network: &dyn Autoencoder,
    meta: &mut ModelMetadata,
    references: Option<&[f32]>,
    head: Option<&head::Head>,
    front_end: Option<&FittedFrontEnd>,
) -> Result<Vec<u8>, TrainError> {
    let mut graph = GraphBuilder::default();
    let features = front_end.map(|front_end| front_end.export(&mut graph));
    let mut outputs = network.export(&mut graph)?;
    if let Some(head) = head {
        outputs.activity = Some(head.export(&mut graph, &outputs.latent, features.as_deref())?);
    }
    if let (Some(refs), ScoreKind::Latent { k, .. } | ScoreKind::Combined { k, .. }) =
        (references, meta.score)
    {
        outputs.latent_score = Some(latent::export_distance(
            &mut graph,
            &outputs.latent,
            refs,
            meta.latent_dim,
            k,
        ));
    }
    Ok(graph.finish(&outputs, meta)?)
}

fn bytes_of(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_holds_out_each_stream_tail_without_overlap() {
        let mut set = WindowSet::new(1);
        for stream in 0..2 {
            for _ in 0..10 {
                set.push(stream, &[0.0]);
            }
        }
        let Split {
            train,
            validation: val,
            ..
        } = split(&set, 0.2, 128, 64);
        assert_eq!(val, vec![8, 9, 18, 19]);
        assert_eq!(
            train,
            (0..7).chain(10..17).collect::<Vec<_>>(),
            "window 7 overlaps window 8"
        );
    }

    #[test]
    fn a_short_stream_goes_to_training() {
        let mut set = WindowSet::new(1);
        set.push(0, &[0.0]);
        set.push(0, &[0.0]);
        let s = split(&set, 0.2, 128, 64);
        assert_eq!(
            (s.train.len(), s.validation.len(), s.whole_streams),
            (2, 0, 0)
        );
    }

    #[test]
    fn many_short_takes_hold_out_whole_streams() {
        // 100 samples, windows of 50 every 10: 6 windows a take, whose
        // last 20% (2) and the 4 overlapping them leave nothing to train on.
        let mut set = WindowSet::new(1);
        for stream in 0..12 {
            for _ in 0..6 {
                set.push(stream, &[0.0]);
            }
        }
        let s = split(&set, 0.2, 50, 10);
        assert_eq!((s.short_streams, s.whole_streams), (12, 3));
        assert_eq!(
            s.validation,
            (0..6).chain(30..36).chain(60..66).collect::<Vec<_>>(),
            "takes 0, 5 and 10 held out whole"
        );
        assert_eq!(s.train.len(), 9 * 6);
        assert!(s.train.iter().all(|i| !s.validation.contains(i)));
    }
}
