//! Inference with tract: the graph is loaded once, its input fact fixed to
//! `[N, T·C]` or `[N, T, C]` with a symbolic batch (fixed to [`PLAN_BATCH`]
//! for a small graph), optimised, and the runnable plan shared behind an
//! `Arc` by every caller.

use crate::model::inference::BackendError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tract_onnx::pb;
use tract_onnx::prelude::*;

use super::fused_front_end::FusedSpectrum;
use super::inference::Inference;
use super::meta::ModelMetadata;
use super::select_k::SelectK;
use super::signature::Signature;

/// The batch a small graph's plan is made for; see [`SMALL_GRAPH_FMAS`].
pub const PLAN_BATCH: usize = 16;

/// Graphs of at most this many multiply-adds a window get a plan made for
/// a batch of [`PLAN_BATCH`]: every run is in chunks of that many windows,
/// the last one padded with zeros. With the batch known, tract picks
/// kernels made for it: the demo model (12 288 a window) scores 32 windows
/// in 12.4 µs, where the plan for any batch took 19.6 µs. A larger graph
/// keeps the plan for any batch: there the kernels gain 3-16 % at full
/// batches, and a lone window padded to 16 costs 4 to 9 times as much
/// (`cargo bench --bench backends`, docs/measured.md). One plan either
/// way, so a window's outputs are the same bits whatever was queued with
/// it: plans for other batch sizes pick other kernels, which round
/// differently.
pub const SMALL_GRAPH_FMAS: u64 = 32 * 1024;

/// Tells tract that a plan for any batch (`N`) runs at least one window:
/// it takes its by-scalar kernel for a broadcast only when it can prove
/// the operand large enough (`N · 384 > 32`), and of an unbounded `N` it
/// cannot. The `mix` input's window weight was then applied by the generic
/// broadcast, element by element: 9 % of the daemon's CPU with the model
/// `train` makes by default (docs/measured.md, "The batch known to be at
/// least one"). A plan made for a fixed batch has no `N` left to bound.
pub(crate) fn bound_batch(model: &TypedModel) -> TractResult<()> {
    model.symbols.add_assertion("N >= 1")
}

#[derive(Clone)]
pub struct TractModel {
    plan: Arc<TypedRunnableModel>,
    /// The batch the plan was made for ([`PLAN_BATCH`], a small graph's):
    /// runs go in chunks of it. `None`: a plan for any batch.
    plan_batch: Option<usize>,
    /// Run states kept between calls: a fresh one per call set up every
    /// node's state and the constants' slots, most of a small batch's time.
    /// One per caller running at once; a caller takes one and puts it back.
    states: Arc<Mutex<Vec<TypedSimpleState>>>,
    input_shape: Vec<usize>,
    features: usize,
    /// Values per window of the reconstruction (and of the front end's
    /// features, when the model has one).
    target_features: usize,
    latent_dim: usize,
    with_latent: bool,
    with_kl: bool,
    with_latent_score: bool,
    /// Classes of the activity head (0 without one).
    classes: usize,
    with_target: bool,
}

impl TractModel {
    pub fn from_proto(
        proto: &pb::ModelProto,
        meta: &ModelMetadata,
        signature: &Signature,
    ) -> Result<Self, BackendError> {
        let mut model = tract_onnx::onnx()
            .model_for_proto_model(proto)
            .map_err(|e| format!("tract cannot read the graph: {e:#}"))?;
        let batch = model.symbols.sym("N");
        let input_shape = signature.input_shape.clone();
        let dims: Vec<TDim> = std::iter::once(batch.to_dim())
            .chain(input_shape.iter().map(|d| d.to_dim()))
            .collect();
        let inputs = model.input_outlets().map_err(|e| e.to_string())?.to_vec();
        let input = inputs
            .iter()
            .position(|o| model.node(o.node).name == signature.input)
            .ok_or_else(|| format!("tract finds no input {:?}", signature.input))?;
        // Any other input is fed nothing: the model must not need it.
        if inputs.len() != 1 {
            return Err(BackendError(format!(
                "the graph must have exactly one input, it has {}",
                inputs.len()
            )));
        }
        model
            .set_input_fact(input, InferenceFact::dt_shape(f32::datum_type(), dims))
            .map_err(|e| format!("setting the input shape: {e:#}"))?;
        let outputs = model.output_outlets().map_err(|e| e.to_string())?.to_vec();
        let find = |name: &str| {
            outputs
                .iter()
                .copied()
                .find(|o| model.outlet_label(*o) == Some(name) || model.node(o.node).name == name)
                .ok_or_else(|| format!("the graph has no output named {name:?}"))
        };
        // In this order, each when the signature has it: what `run` reads.
        let mut selected = vec![find(&signature.reconstruction)?];
        for name in [&signature.latent, &signature.kl, &signature.latent_score]
            .into_iter()
            .chain([&signature.activity.as_ref().map(|a| a.0.clone())])
            .chain([&signature.target])
            .flatten()
        {
            selected.push(find(name)?);
        }
        model
            .select_output_outlets(&selected)
            .map_err(|e| e.to_string())?;
        let front_end = meta.front_end.as_ref();
        let mut plan_batch = None;
        let plan = model
            .into_typed()
            .and_then(|mut m| {
                if let Some(front_end) = front_end {
                    let fused = FusedSpectrum::swap_into(
                        &mut m,
                        front_end,
                        meta.window,
                        meta.channels.len(),
                    )?;
                    tracing::debug!(fused, "the front end's rows on tract");
                }
                let fmas = fmas_per_window(&m, &batch);
                tracing::debug!(?fmas, "multiply-adds a window");
                if fmas.is_some_and(|fmas| fmas <= SMALL_GRAPH_FMAS) {
                    plan_batch = Some(PLAN_BATCH);
                    m = m.set_symbols(&HashMap::from([(batch.clone(), PLAN_BATCH.to_dim())]))?;
                } else {
                    bound_batch(&m)?;
                }
                m.into_optimized()
            })
            .and_then(|mut m| {
                SelectK::swap_into(&mut m)?;
                m.into_runnable()
            })
            .map_err(|e| format!("the graph does not fit input [N, {input_shape:?}]: {e:#}"))?;
        Ok(Self {
            plan,
            plan_batch,
            states: Arc::default(),
            input_shape,
            features: meta.features(),
            target_features: meta.target_features(),
            latent_dim: meta.latent_dim,
            with_latent: signature.latent.is_some(),
            with_kl: signature.kl.is_some(),
            with_latent_score: signature.latent_score.is_some(),
            classes: signature.activity.as_ref().map_or(0, |a| a.1),
            with_target: signature.target.is_some(),
        })
    }

    pub fn features(&self) -> usize {
        self.features
    }

    /// The batch the plan was made for, when the graph is small enough
    /// ([`SMALL_GRAPH_FMAS`]); `None`: a plan for any batch.
    pub fn plan_batch(&self) -> Option<usize> {
        self.plan_batch
    }

    pub fn latent_dim(&self) -> usize {
        self.latent_dim
    }

    /// Runs `n` windows laid end to end in `input`: at once, or in chunks
    /// of [`PLAN_BATCH`] for a small graph.
    pub fn run(&self, input: &[f32], n: usize) -> Result<Inference, BackendError> {
        assert_eq!(input.len(), n * self.features, "input holds {n} windows");
        let mut inference = Inference {
            reconstruction: Vec::with_capacity(n * self.target_features),
            latent: Vec::with_capacity(if self.with_latent {
                n * self.latent_dim
            } else {
                0
            }),
            kl: self.with_kl.then(|| Vec::with_capacity(n)),
            latent_score: self.with_latent_score.then(|| Vec::with_capacity(n)),
            activity: (self.classes > 0).then(|| Vec::with_capacity(n * self.classes)),
            target: self
                .with_target
                .then(|| Vec::with_capacity(n * self.target_features)),
        };
        let mut done = 0;
        while done < n {
            let windows = self.plan_batch.map_or(n, |batch| (n - done).min(batch));
            let chunk = &input[done * self.features..(done + windows) * self.features];
            self.run_chunk(chunk, windows, &mut inference)?;
            done += windows;
        }
        Ok(inference)
    }

    /// Runs `n` windows (at most the plan's batch) and appends their outputs.
    fn run_chunk(&self, input: &[f32], n: usize, out: &mut Inference) -> Result<(), BackendError> {
        let size = self.plan_batch.unwrap_or(n);
        let mut shape = vec![size];
        shape.extend_from_slice(&self.input_shape);
        let tensor = if size == n {
            Tensor::from_shape(&shape, input).map_err(|e| e.to_string())?
        } else {
            // SAFETY: every value is written below, the windows' then zeros.
            let mut tensor =
                unsafe { Tensor::uninitialized::<f32>(&shape) }.map_err(|e| e.to_string())?;
            {
                let mut view = tensor.try_as_plain_ram_mut().map_err(|e| e.to_string())?;
                let values = view.as_slice_mut::<f32>().map_err(|e| e.to_string())?;
                values[..input.len()].copy_from_slice(input);
                values[input.len()..].fill(0.0);
            }
            tensor
        };
        let pooled = self.states.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut state = match pooled {
            Some(state) => state,
            None => self
                .plan
                .spawn()
                .map_err(|e| format!("inference state: {e:#}"))?,
        };
        let outputs = state
            .run(tvec!(tensor.into()))
            .map_err(|e| format!("inference failed: {e:#}"))?;
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(state);
        let mut next = 0;
        let mut take_next = |into: &mut Vec<f32>, per_window: usize, what: &str| {
            let i = next;
            next += 1;
            let view = outputs[i]
                .try_as_plain_ram()
                .map_err(|e| format!("{what} output: {e}"))?;
            let values = view
                .as_slice::<f32>()
                .map_err(|e| format!("{what} output is not float32: {e}"))?;
            if values.len() != size * per_window {
                return Err(format!(
                    "{what} output has {} values for {size} windows, expected {per_window} per window",
                    values.len()
                ));
            }
            into.extend_from_slice(&values[..n * per_window]);
            Ok::<(), String>(())
        };
        take_next(
            &mut out.reconstruction,
            self.target_features,
            "reconstruction",
        )?;
        if self.with_latent {
            take_next(&mut out.latent, self.latent_dim, "latent")?;
        }
        if let Some(kl) = &mut out.kl {
            take_next(kl, 1, "kl")?;
        }
        if let Some(latent_score) = &mut out.latent_score {
            take_next(latent_score, 1, "latent score")?;
        }
        if let Some(activity) = &mut out.activity {
            take_next(activity, self.classes, "activity")?;
        }
        if let Some(target) = &mut out.target {
            take_next(target, self.target_features, "front end")?;
        }
        Ok(())
    }
}

/// The graph's multiply-adds for one window, as tract counts them; `None`
/// when an operator's count cannot be had.
fn fmas_per_window(model: &TypedModel, batch: &Symbol) -> Option<u64> {
    let one = SymbolValues::default().with(batch, 1);
    let mut total = 0u64;
    for id in model.eval_order().ok()? {
        let inputs = model.node_input_facts(id).ok()?;
        for (cost, count) in model.nodes[id].op.cost(&inputs).ok()? {
            if matches!(cost, tract_onnx::tract_core::ops::Cost::FMA(_)) {
                total += u64::try_from(count.eval(&one).to_i64().ok()?).ok()?;
            }
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::loaded::Runtime;
    use crate::model::LoadedModel;

    fn tract(path: &str) -> TractModel {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        match LoadedModel::load(&path).expect("shipped model").runtime {
            Runtime::Tract(model) => model,
            #[allow(unreachable_patterns)]
            _ => panic!("the default backend is tract"),
        }
    }

    /// The demo model (384 → 16 → 384) is small: its plan is made for
    /// batches of 16, and a batch of any size still gives every window.
    #[test]
    fn the_demo_model_runs_in_chunks_of_the_plans_batch() {
        let model = tract("models/demo.onnx");
        assert_eq!(model.plan_batch(), Some(PLAN_BATCH));
        let features = model.features();
        for n in [
            1,
            PLAN_BATCH - 1,
            PLAN_BATCH,
            PLAN_BATCH + 1,
            3 * PLAN_BATCH + 5,
        ] {
            let input: Vec<f32> = (0..n * features).map(|i| (i as f32 * 0.01).sin()).collect();
            let out = model.run(&input, n).unwrap();
            assert_eq!(out.reconstruction.len(), n * features, "batch of {n}");
            assert_eq!(out.latent.len(), n * model.latent_dim(), "batch of {n}");
        }
    }
}
