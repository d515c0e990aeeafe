//! The spectral front end's rows in one pass, for tract's plan.
//!
//! The graph computes a window's statistics and DFT magnitudes with about
//! twenty standard ONNX nodes (src/model/spectrum.rs), so that any runtime
//! reproduces them. In tract each node is a pass over the batch with a
//! tensor of its own, and together they cost as much as the autoencoder
//! behind them (docs/measured.md#what-the-mix-front-end-costs-per-window).
//! So the tract backend finds the tensor of unstandardised rows
//! (`[N, (4 + B)·C]`) in the typed model and wires [`FusedSpectrum`] in
//! its place, which reads each window twice: once for the mean, minimum
//! and maximum, once for the centred variance and the DFT sums. The ONNX
//! file is unchanged; onnxruntime runs the nodes.
//!
//! The standardisation right after the rows (a `Sub` of `front_end_mean`,
//! a `Div` by `front_end_std`) is taken into the op too, when the graph has
//! it: tract runs those two on its generic broadcast, a closure call a
//! value, as the row count (`(4 + B)·C`, 36) is no multiple of its vector
//! width (docs/measured.md, "The front end's standardisation in the fused
//! op").
//!
//! The swap is taken only when it answers as the nodes do: at load, both
//! run on probe windows and must agree to float rounding; a graph that
//! differs from what the metadata describes keeps its own nodes.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

use super::meta::{spectrum_rows, FrontEnd, Normalization, SPECTRUM_STATISTICS};

/// Where in the typed model the front end's unstandardised rows are: the
/// tensor the standardisation's Sub reads beside `front_end_mean`.
const MEAN_PREFIX: &str = "front_end_mean";
/// The standard deviations the standardisation divides by.
const STD_PREFIX: &str = "front_end_std";

#[derive(Debug, Clone)]
pub struct FusedSpectrum {
    window: usize,
    channels: usize,
    bins: usize,
    log: bool,
    /// Per time step t: cos(2πkt/T) for k = 1..=B, then sin, padded with
    /// zeros to whole lanes of 8: `[T, lanes]`.
    basis: Arc<Vec<[f32; 8]>>,
    /// Lanes of 8 per time step (and per channel in the sums).
    lanes: usize,
    /// Each row's mean and standard deviation, in the rows' order: applied
    /// when the op stands for the graph's standardisation too.
    standardisation: Option<Arc<Normalization>>,
}

impl PartialEq for FusedSpectrum {
    fn eq(&self, other: &Self) -> bool {
        // The basis follows from the rest.
        (self.window, self.channels, self.bins, self.log)
            == (other.window, other.channels, other.bins, other.log)
            && self.standardisation == other.standardisation
    }
}

impl Eq for FusedSpectrum {}

impl FusedSpectrum {
    pub fn new(front_end: &FrontEnd, window: usize, channels: usize) -> Option<Self> {
        let FrontEnd::Spectrum { bins, log, .. } = *front_end;
        if window == 0 || channels == 0 || bins == 0 {
            return None;
        }
        let lanes = (2 * bins).div_ceil(8);
        let mut flat = vec![0f32; window * lanes * 8];
        for t in 0..window {
            let row = &mut flat[t * lanes * 8..];
            for k in 1..=bins {
                // k·t mod T keeps the angle exact, as the graph's basis does.
                let angle = 2.0 * std::f64::consts::PI * ((k * t) % window) as f64 / window as f64;
                row[k - 1] = angle.cos() as f32;
                row[bins + k - 1] = angle.sin() as f32;
            }
        }
        let basis = flat
            .chunks_exact(8)
            .map(|c| c.try_into().expect("eight"))
            .collect();
        Some(Self {
            window,
            channels,
            bins,
            log,
            basis: Arc::new(basis),
            lanes,
            standardisation: None,
        })
    }

    /// The same op, giving standardised rows.
    fn standardising(&self, standardisation: Normalization) -> Self {
        Self {
            standardisation: Some(Arc::new(standardisation)),
            ..self.clone()
        }
    }

    /// Values per window in and out.
    fn widths(&self) -> (usize, usize) {
        (
            self.window * self.channels,
            spectrum_rows(self.bins) * self.channels,
        )
    }

    /// One time-major window's rows: row r of channel c at `r·C + c`.
    /// `scratch` (T values) and `sums` (the DFT's lanes) are reused.
    #[inline(always)]
    fn rows_of(&self, window: &[f32], scratch: &mut [f32], sums: &mut [[f32; 8]], out: &mut [f32]) {
        let (t_len, c_len) = (self.window, self.channels);
        let stats = SPECTRUM_STATISTICS.len();
        for c in 0..c_len {
            // One channel's samples made contiguous, so that each pass
            // below runs eight of them at a time.
            for (x, frame) in scratch.iter_mut().zip(window.chunks_exact(c_len)) {
                *x = frame[c];
            }
            let (mut sum, mut min, mut max) =
                ([0f32; 8], [f32::INFINITY; 8], [f32::NEG_INFINITY; 8]);
            let mut chunks = scratch.chunks_exact(8);
            for chunk in &mut chunks {
                for i in 0..8 {
                    sum[i] += chunk[i];
                    min[i] = min[i].min(chunk[i]);
                    max[i] = max[i].max(chunk[i]);
                }
            }
            let rest = chunks.remainder();
            let mean = (sum.iter().sum::<f32>() + rest.iter().sum::<f32>()) / t_len as f32;
            let min = rest
                .iter()
                .chain(&min)
                .fold(f32::INFINITY, |a, &v| a.min(v));
            let max = rest
                .iter()
                .chain(&max)
                .fold(f32::NEG_INFINITY, |a, &v| a.max(v));
            let mut squares = [0f32; 8];
            let mut chunks = scratch.chunks_exact(8);
            for chunk in &mut chunks {
                for i in 0..8 {
                    let d = chunk[i] - mean;
                    squares[i] += d * d;
                }
            }
            let squares = squares.iter().sum::<f32>()
                + chunks
                    .remainder()
                    .iter()
                    .map(|v| (v - mean) * (v - mean))
                    .sum::<f32>();
            // The graph's DFT reads the window as it is: bins k ≥ 1 of a
            // constant are zero, so centring changes nothing.
            match self.lanes {
                1 => dft::<1>(scratch, &self.basis, sums),
                2 => dft::<2>(scratch, &self.basis, sums),
                3 => dft::<3>(scratch, &self.basis, sums),
                4 => dft::<4>(scratch, &self.basis, sums),
                _ => dft_any(scratch, &self.basis, sums),
            }
            out[c] = mean;
            out[c_len + c] = (squares / t_len as f32).sqrt();
            out[2 * c_len + c] = min;
            out[3 * c_len + c] = max;
            let dft = sums.as_flattened();
            for k in 0..self.bins {
                let (re, im) = (dft[k], dft[self.bins + k]);
                let magnitude = (re * re + im * im).sqrt();
                out[(stats + k) * c_len + c] = if self.log {
                    (magnitude + 1.0).ln()
                } else {
                    magnitude
                };
            }
        }
    }

    #[inline(always)]
    fn rows_portable(&self, input: &[f32], out: &mut [f32]) {
        let (width_in, width_out) = self.widths();
        let mut sums = vec![[0f32; 8]; self.lanes];
        let mut scratch = vec![0f32; self.window];
        for (window, rows) in input
            .chunks_exact(width_in)
            .zip(out.chunks_exact_mut(width_out))
        {
            self.rows_of(window, &mut scratch, &mut sums, rows);
            if let Some(Normalization { mean, std }) = self.standardisation.as_deref() {
                // A division, as the graph's `Div` does.
                for ((v, m), s) in rows.iter_mut().zip(mean).zip(std) {
                    *v = (*v - m) / s;
                }
            }
        }
    }

    /// The same, compiled for AVX2 (8 lanes in one register).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn rows_avx2(&self, input: &[f32], out: &mut [f32]) {
        self.rows_portable(input, out)
    }

    /// The same, compiled for AVX-512.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn rows_avx512(&self, input: &[f32], out: &mut [f32]) {
        self.rows_portable(input, out)
    }

    /// Rows of `n` windows laid end to end.
    fn rows(&self, input: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, which is all the function assumes.
            return unsafe { self.rows_avx512(input, out) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, which is all the function assumes.
            return unsafe { self.rows_avx2(input, out) };
        }
        self.rows_portable(input, out)
    }

    /// Wires the op into `model` in place of the front end's rows when the
    /// metadata's `front_end` describes them and both agree on probe
    /// windows; returns whether it did.
    pub fn swap_into(
        model: &mut TypedModel,
        front_end: &FrontEnd,
        window: usize,
        channels: usize,
    ) -> TractResult<bool> {
        let Some(op) = Self::new(front_end, window, channels) else {
            return Ok(false);
        };
        let Some((rows, mean)) = rows_outlet(model) else {
            return Ok(false);
        };
        let inputs = model.input_outlets()?.to_vec();
        let [input] = inputs[..] else {
            return Ok(false);
        };
        let (width_in, width_out) = op.widths();
        let fits = |fact: &TypedFact, width: usize| {
            fact.datum_type == f32::datum_type()
                && fact.rank() == 2
                && fact.shape[1].to_usize().ok() == Some(width)
        };
        if !fits(model.outlet_fact(input)?, width_in) || !fits(model.outlet_fact(rows)?, width_out)
        {
            return Ok(false);
        }
        // The rows and their standardisation, else the rows alone.
        let mut candidates = Vec::with_capacity(2);
        if let Some((standardised, standardisation)) =
            standardised_outlet(model, rows, mean, width_out)
        {
            if fits(model.outlet_fact(standardised)?, width_out) {
                candidates.push((standardised, op.standardising(standardisation)));
            }
        }
        candidates.push((rows, op));
        for (replaced, op) in candidates {
            if !op.agrees_with(model, replaced)? {
                continue;
            }
            let mut patch = TypedModelPatch::default();
            let tapped = patch.tap_model(model, input)?;
            let fused = patch.wire_node("front_end_rows_fused", op, &[tapped])?[0];
            patch.shunt_outside(model, replaced, fused)?;
            patch.apply(model)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether the graph's nodes up to `rows` give what this op gives, to
    /// float rounding, on probe windows (varied, constant, and zero).
    fn agrees_with(&self, model: &TypedModel, rows: OutletId) -> TractResult<bool> {
        let (width_in, width_out) = self.widths();
        let probes = 4;
        let mut input = vec![0f32; probes * width_in];
        for (i, v) in input[..2 * width_in].iter_mut().enumerate() {
            // Deterministic values of a few units, as normalised windows have.
            *v = ((i as u64 * 2_654_435_761 % 1000) as f32 / 250.0) - 2.0 + (i as f32 * 0.3).sin();
        }
        input[2 * width_in..3 * width_in].fill(1.5);
        let mut graph = model.clone();
        graph.select_output_outlets(&[rows])?;
        let plan = graph.into_optimized()?.into_runnable()?;
        let x = Tensor::from_shape(&[probes, width_in], &input)?;
        let want = plan.run(tvec!(x.into_tvalue()))?;
        let want = want[0].try_as_plain_ram()?;
        let want = want.as_slice::<f32>()?;
        let mut got = vec![0f32; probes * width_out];
        self.rows(&input, &mut got);
        Ok(want.len() == got.len()
            && want
                .iter()
                .zip(&got)
                .all(|(w, g)| (w - g).abs() <= 1e-4 * (1.0 + w.abs())))
    }
}

/// The DFT's sums of one channel's samples `x` by the `[T, L]` lanes of
/// `basis`, into `sums`: two time steps at a time into two sets of
/// accumulators held in registers, so that no step waits for the last.
#[inline(always)]
fn dft<const L: usize>(x: &[f32], basis: &[[f32; 8]], sums: &mut [[f32; 8]]) {
    let (mut even, mut odd) = ([[0f32; 8]; L], [[0f32; 8]; L]);
    let mut steps = x.chunks_exact(2).zip(basis.chunks_exact(2 * L));
    for (v, b) in &mut steps {
        for l in 0..L {
            for i in 0..8 {
                even[l][i] += v[0] * b[l][i];
                odd[l][i] += v[1] * b[L + l][i];
            }
        }
    }
    if x.len() % 2 == 1 {
        let (v, b) = (x[x.len() - 1], &basis[(x.len() - 1) * L..]);
        for l in 0..L {
            for i in 0..8 {
                even[l][i] += v * b[l][i];
            }
        }
    }
    for l in 0..L {
        for i in 0..8 {
            sums[l][i] = even[l][i] + odd[l][i];
        }
    }
}

/// [`dft`] for any number of lanes (more than 32 bins), through memory.
fn dft_any(x: &[f32], basis: &[[f32; 8]], sums: &mut [[f32; 8]]) {
    let lanes = sums.len();
    sums.fill([0.0; 8]);
    for (&v, basis) in x.iter().zip(basis.chunks_exact(lanes)) {
        for (sum, b) in sums.iter_mut().zip(basis) {
            // In a local first: the compiler cannot tell that the sums and
            // the basis do not overlap, and would add one lane at a time.
            let mut lanes = *sum;
            for (lane, b) in lanes.iter_mut().zip(b) {
                *lane += v * b;
            }
            *sum = lanes;
        }
    }
}

/// The outlet that the standardisation's Sub reads beside the constant
/// `front_end_mean…`: the first node of two inputs whose other input holds
/// the same values (as they are, reshaped, or broadcast by tract into a
/// constant of its own), with those values.
fn rows_outlet(model: &TypedModel) -> Option<(OutletId, Vec<f32>)> {
    let mean = named_constant(model, MEAN_PREFIX)?;
    // The constant itself, or the values of the single-input nodes that
    // reshape it on the way (a broadcast's AddAxis); the probe windows of
    // `agrees_with` judge what is found.
    let holds_mean = |mut outlet: OutletId| {
        for _ in 0..4 {
            let node = &model.nodes[outlet.node];
            match (&node.outputs[outlet.slot].fact.konst, &node.inputs[..]) {
                (Some(k), _) => {
                    return k
                        .try_as_plain_ram()
                        .ok()
                        .and_then(|k| k.as_slice::<f32>().ok().map(|k| k == mean.as_slice()))
                        .unwrap_or(false)
                }
                (None, [input]) => outlet = *input,
                _ => return false,
            }
        }
        false
    };
    let rows = model.nodes.iter().find_map(|node| match node.inputs[..] {
        [a, b] if holds_mean(b) && !holds_mean(a) => Some(a),
        [a, b] if holds_mean(a) && !holds_mean(b) => Some(b),
        _ => None,
    })?;
    Some((rows, mean))
}

/// The values of the constant node named `prefix…`.
fn named_constant(model: &TypedModel, prefix: &str) -> Option<Vec<f32>> {
    let constant = model
        .nodes
        .iter()
        .find(|n| n.name.starts_with(prefix) && n.inputs.is_empty())?;
    let values = model
        .outlet_fact(OutletId::new(constant.id, 0))
        .ok()?
        .konst
        .clone()?;
    let values = values.try_as_plain_ram().ok()?;
    Some(values.as_slice::<f32>().ok()?.to_vec())
}

/// Where the standardised rows are, with the standardisation's values
/// (`mean`, as `rows_outlet` found it):
/// the output of the node after the node after `rows`, each the only
/// reader of what it reads, so that nothing else needs the values in
/// between. What the two nodes compute is left to `agrees_with`.
fn standardised_outlet(
    model: &TypedModel,
    rows: OutletId,
    mean: Vec<f32>,
    width: usize,
) -> Option<(OutletId, Normalization)> {
    let std = named_constant(model, STD_PREFIX)?;
    if mean.len() != width || std.len() != width {
        return None;
    }
    let only_reader = |outlet: OutletId| match model.outlet_successors(outlet) {
        [inlet] if !model.output_outlets().ok()?.contains(&outlet) => Some(inlet.node),
        _ => None,
    };
    let centring = only_reader(rows)?;
    let scaling = only_reader(OutletId::new(centring, 0))?;
    (model.nodes[centring].outputs.len() == 1 && model.nodes[scaling].outputs.len() == 1)
        .then_some((OutletId::new(scaling, 0), Normalization { mean, std }))
}

impl Op for FusedSpectrum {
    fn name(&self) -> StaticName {
        "FusedSpectrum".into()
    }

    op_as_typed_op!();
}

impl EvalOp for FusedSpectrum {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let (width_in, width_out) = self.widths();
        let &[n, width] = input.shape() else {
            bail!("FusedSpectrum wants [N, T·C], got {:?}", input.shape());
        };
        if width != width_in {
            bail!("FusedSpectrum wants {width_in} values per window, got {width}");
        }
        let plain = input.try_as_plain_ram()?;
        let values = plain.as_slice::<f32>()?;
        let mut out = vec![0f32; n * width_out];
        self.rows(values, &mut out);
        Ok(tvec!(
            Tensor::from_shape(&[n, width_out], &out)?.into_tvalue()
        ))
    }
}

impl TypedOp for FusedSpectrum {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (_, width_out) = self.widths();
        Ok(tvec!(f32::fact([
            inputs[0].shape[0].clone(),
            width_out.to_dim()
        ])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::meta::Normalization;
    use crate::model::onnx::{GraphBuilder, INPUT, WINDOW_INPUT};
    use crate::model::spectrum::Spectrum;

    fn front_end(bins: usize, log: bool) -> FrontEnd {
        FrontEnd::Spectrum {
            bins,
            log,
            window_weight: None,
            output: FrontEnd::default_output(),
        }
    }

    /// The exported front end up to its standardised features, as tract
    /// types it; the standardisation is an arbitrary one.
    fn typed_front_end(front_end: &FrontEnd, window: usize, channels: usize) -> TypedModel {
        typed_part(front_end, window, channels, false)
    }

    /// The same, up to what the network reads (`whole_input`: with a
    /// `mix` front end's weighted window after the features).
    fn typed_part(
        front_end: &FrontEnd,
        window: usize,
        channels: usize,
        whole_input: bool,
    ) -> TypedModel {
        let spectrum = Spectrum::new(front_end, window, channels);
        let rows = spectrum.features();
        let standardisation = Normalization {
            mean: (0..rows).map(|i| 0.1 * i as f32).collect(),
            std: (0..rows).map(|i| 1.0 + 0.01 * i as f32).collect(),
        };
        let mut graph = GraphBuilder::default();
        let features = spectrum.export(&mut graph, WINDOW_INPUT, &standardisation);
        let output = if whole_input {
            (INPUT, rows + window * channels)
        } else {
            (features.as_str(), rows)
        };
        let proto = graph.part_model((WINDOW_INPUT, window * channels), &[output]);
        let mut model = tract_onnx::onnx().model_for_proto_model(&proto).unwrap();
        let batch = model.symbols.sym("N");
        model
            .set_input_fact(
                0,
                InferenceFact::dt_shape(
                    f32::datum_type(),
                    [batch.to_dim(), (window * channels).to_dim()],
                ),
            )
            .unwrap();
        let model = model.into_typed().unwrap();
        crate::model::tract_backend::bound_batch(&model).unwrap();
        model
    }

    fn run(model: TypedModel, input: &[f32], n: usize) -> Vec<f32> {
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let x = Tensor::from_shape(&[n, input.len() / n], input).unwrap();
        let out = plan.run(tvec!(x.into_tvalue())).unwrap();
        out[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    fn windows(n: usize, width: usize, seed: u64) -> Vec<f32> {
        (0..n * width)
            .map(|i| {
                let h = (i as u64 + seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
                (h % 4000) as f32 / 1000.0 - 2.0 + (i as f32 * 0.05).sin()
            })
            .collect()
    }

    /// Lanes of 1, 2 and 5 (the general path), odd windows, 1 to 6
    /// channels: the swap is taken and gives what the nodes give.
    #[test]
    fn the_swap_is_taken_and_answers_as_the_graph_does() {
        for (bins, log, window, channels) in [
            (8, true, 128, 3),
            (8, true, 128, 6),
            (3, false, 50, 1),
            (20, true, 51, 2),
        ] {
            let front_end = front_end(bins, log);
            let graph = typed_front_end(&front_end, window, channels);
            let mut swapped = graph.clone();
            assert!(
                FusedSpectrum::swap_into(&mut swapped, &front_end, window, channels).unwrap(),
                "bins {bins}, window {window}, {channels} channels: not swapped"
            );
            assert!(swapped.nodes.iter().any(|n| n.op_is::<FusedSpectrum>()));
            for n in [1, 7, 32] {
                let input = windows(n, window * channels, n as u64);
                let (want, got) = (
                    run(graph.clone(), &input, n),
                    run(swapped.clone(), &input, n),
                );
                assert_eq!(want.len(), got.len());
                for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                    assert!(
                        (w - g).abs() <= 1e-4 * (1.0 + w.abs()),
                        "bins {bins}, window {window}, {channels} ch, batch {n}, value {i}: graph {w}, fused {g}"
                    );
                }
            }
        }
    }

    /// Every build of the rows this CPU can run gives the portable one's
    /// values to the bit (each lane's sums in the same order), so the
    /// paths this machine does not take answer as the one it does.
    #[test]
    fn each_instruction_sets_rows_are_the_portable_rows() {
        let op = FusedSpectrum::new(&front_end(8, true), 128, 3)
            .unwrap()
            .standardising(Normalization {
                mean: (0..36).map(|i| 0.1 * i as f32).collect(),
                std: (0..36).map(|i| 1.0 + 0.01 * i as f32).collect(),
            });
        let (width_in, width_out) = op.widths();
        let input = windows(5, width_in, 3);
        let mut portable = vec![0f32; 5 * width_out];
        op.rows_portable(&input, &mut portable);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let mut checked = 0;
        #[cfg(target_arch = "x86_64")]
        for (feature, present, rows) in [
            (
                "avx2",
                std::arch::is_x86_feature_detected!("avx2"),
                FusedSpectrum::rows_avx2 as unsafe fn(&FusedSpectrum, &[f32], &mut [f32]),
            ),
            (
                "avx512f",
                std::arch::is_x86_feature_detected!("avx512f"),
                FusedSpectrum::rows_avx512,
            ),
        ] {
            if !present {
                continue;
            }
            let mut out = vec![0f32; 5 * width_out];
            // SAFETY: the CPU has the feature, checked just above.
            unsafe { rows(&op, &input, &mut out) };
            assert_eq!(bits(&out), bits(&portable), "{feature}");
            checked += 1;
        }
        let mut dispatched = vec![0f32; 5 * width_out];
        op.rows(&input, &mut dispatched);
        assert_eq!(bits(&dispatched), bits(&portable));
        eprintln!("{checked} instruction-set builds checked against the portable one");
    }

    /// The standardisation after the rows is in the op: the optimised plan
    /// of the front end up to its features is the input and the op alone.
    /// Without it, tract runs the `Sub` and the `Div` on its generic
    /// broadcast (docs/measured.md).
    #[test]
    fn the_standardisation_is_taken_into_the_fused_op() {
        let front_end = front_end(8, true);
        let mut model = typed_front_end(&front_end, 128, 3);
        assert!(FusedSpectrum::swap_into(&mut model, &front_end, 128, 3).unwrap());
        let plan = model.into_optimized().unwrap();
        let others: Vec<String> = plan
            .nodes
            .iter()
            .filter(|n| !n.inputs.is_empty())
            .filter(|n| {
                n.op_as::<FusedSpectrum>()
                    .is_none_or(|op| op.standardisation.is_none())
            })
            .map(|n| format!("{}: {:?}", n.name, n.op))
            .collect();
        assert!(others.is_empty(), "{others:?}");
    }

    /// The `mix` input's window weight, a one-value constant, is applied by
    /// tract's by-scalar kernel, not by its generic broadcast (which it
    /// takes when it cannot bound the batch).
    #[test]
    fn the_mix_inputs_window_weight_is_a_by_scalar_multiply() {
        let mut front_end = front_end(8, true);
        let FrontEnd::Spectrum { window_weight, .. } = &mut front_end;
        *window_weight = Some(0.5);
        let plan = typed_part(&front_end, 128, 3, true)
            .into_optimized()
            .unwrap();
        let by_scalar = |node: &TypedNode| {
            node.op_as::<tract_onnx::tract_core::ops::binary::OptBinByScalar>()
                .is_some_and(|op| op.binop.is::<tract_onnx::tract_core::ops::math::Mul>())
        };
        assert!(
            plan.nodes.iter().any(by_scalar),
            "{:?}",
            plan.nodes
                .iter()
                .map(|n| format!("{}: {:?}", n.name, n.op))
                .collect::<Vec<_>>()
        );
    }

    /// Metadata that does not describe the graph (log, bins, channels)
    /// leaves the graph's own nodes in place.
    #[test]
    fn a_graph_the_metadata_does_not_describe_keeps_its_nodes() {
        let graph = typed_front_end(&front_end(8, true), 128, 3);
        for (described, channels) in [
            (front_end(8, false), 3),
            (front_end(7, true), 3),
            (front_end(8, true), 4),
        ] {
            let mut model = graph.clone();
            assert!(!FusedSpectrum::swap_into(&mut model, &described, 128, channels).unwrap());
            assert!(!model.nodes.iter().any(|n| n.op_is::<FusedSpectrum>()));
        }
    }
}
