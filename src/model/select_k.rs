//! The k smallest (or largest) of each row in one pass, for tract's plan.
//!
//! tract's own `Topk` sorts every whole row, through an allocation per row,
//! to keep k of its values. The latent score asks it for the 5 nearest of up
//! to `model.references` distances per window, and that sort cost more than
//! the rest of the network (docs/measured.md#what-the-scores-cost-per-window).
//! So the tract backend swaps each `Topk` of the optimised plan that works on
//! the last axis of a float32 matrix, with a constant k no longer than the
//! row, for [`SelectK`], which keeps the k best in order while it reads the
//! row once. The ONNX file is unchanged, and
//! onnxruntime runs its own TopK on it.
//!
//! Same outputs as `Topk` (values, then their int64 indices, best first);
//! equal values come in index order, as ONNX asks of TopK. NaN comes after
//! every number, so a row's NaN is the last to be kept.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::Topk;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct SelectK {
    /// The op it stands for: which values it keeps (`largest`), and the
    /// output facts it gives.
    pub topk: Topk,
}

impl SelectK {
    /// Swaps every `Topk` on the last axis of a rank-2 float32 input, with
    /// a constant k in 1..=row length, in `model` for a [`SelectK`];
    /// returns how many it swapped.
    pub fn swap_into(model: &mut TypedModel) -> TractResult<usize> {
        let mut swapped = 0;
        for id in 0..model.nodes.len() {
            let Some(topk) = model.nodes[id].op_as::<Topk>().cloned() else {
                continue;
            };
            let input = model.outlet_fact(model.nodes[id].inputs[0])?;
            if input.datum_type != f32::datum_type() || input.rank() != 2 || topk.axis != 1 {
                continue;
            }
            // Only a k known now, and within the row: anything else stays
            // with tract's op and its own handling.
            let cols = input.shape[1].to_usize().ok();
            let k = model
                .outlet_fact(model.nodes[id].inputs[1])?
                .konst
                .as_ref()
                .and_then(|k| k.cast_to_scalar::<i64>().ok());
            let (Some(cols), Some(k)) = (cols, k) else {
                continue;
            };
            if k < 1 || k as usize > cols {
                continue;
            }
            model.nodes[id].op = Box::new(SelectK { topk });
            swapped += 1;
        }
        Ok(swapped)
    }

    /// Whether `a` comes strictly before `b`: NaN (of either sign) after
    /// every number, equal numbers (0 and −0 too) in neither order.
    fn before(&self, a: f32, b: f32) -> bool {
        !a.is_nan() && (b.is_nan() || if self.topk.largest { a > b } else { a < b })
    }

    /// The k best of `row` in order, with their indices, into `best`.
    fn select(&self, row: &[f32], k: usize, best: &mut Vec<(f32, i64)>) {
        best.clear();
        if k == 1 && !row.is_empty() {
            // The front end's minimum and maximum: a branch-free fold (max
            // and min pass over NaN, as NaN comes last), then the first
            // value equal to it (0 and −0 alike, as in the general case).
            // Eight lanes, folded at the end: the compiler keeps them in
            // one vector register (max and min give the same value
            // whatever the order, NaN aside, and NaN is passed over).
            let mut lanes = [f32::NAN; 8];
            let mut chunks = row.chunks_exact(8);
            let largest = self.topk.largest;
            for chunk in &mut chunks {
                for (lane, &v) in lanes.iter_mut().zip(chunk) {
                    *lane = if largest { lane.max(v) } else { lane.min(v) };
                }
            }
            let extreme = chunks
                .remainder()
                .iter()
                .chain(&lanes)
                .fold(f32::NAN, |a, &v| if largest { a.max(v) } else { a.min(v) });
            let at = row.iter().position(|&v| v == extreme).unwrap_or(0);
            best.push((row[at], at as i64));
            return;
        }
        // The k-th best so far, once there are k: most values are not
        // better, and one comparison with it sends them on. A NaN kept
        // while filling is worse than any number, so then every value
        // takes the full test.
        let mut kth: Option<f32> = None;
        for (i, &v) in row.iter().enumerate() {
            if let Some(kth) = kth {
                let better = if self.topk.largest { v > kth } else { v < kth };
                if !better {
                    continue;
                }
            } else if best.len() == k && !self.before(v, best[k - 1].0) {
                continue;
            }
            // After every kept value that is as good: equal values stay in
            // index order.
            let at = best.partition_point(|&(b, _)| !self.before(v, b));
            if best.len() == k {
                best.pop();
            }
            best.insert(at, (v, i as i64));
            kth = (best.len() == k && !best[k - 1].0.is_nan()).then(|| best[k - 1].0);
        }
    }
}

impl Op for SelectK {
    fn name(&self) -> StaticName {
        "SelectK".into()
    }

    op_as_typed_op!();
}

impl EvalOp for SelectK {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (input, k) = args_2!(inputs);
        let k = k.cast_to_scalar::<i64>()?;
        let &[rows, cols] = input.shape() else {
            bail!("SelectK wants a matrix, got shape {:?}", input.shape());
        };
        if k < 0 || k as usize > cols {
            bail!("k = {k} of a row of {cols}");
        }
        let k = k as usize;
        let plain = input.try_as_plain_ram()?;
        let values = plain.as_slice::<f32>()?;
        let mut out_values = Vec::with_capacity(rows * k);
        let mut out_indices = Vec::with_capacity(rows * k);
        let mut best = Vec::with_capacity(k + 1);
        if k > 0 {
            for row in values.chunks_exact(cols) {
                self.select(row, k, &mut best);
                out_values.extend(best.iter().map(|b| b.0));
                out_indices.extend(best.iter().map(|b| b.1));
            }
        }
        Ok(tvec!(
            Tensor::from_shape(&[rows, k], &out_values)?.into_tvalue(),
            Tensor::from_shape(&[rows, k], &out_indices)?.into_tvalue()
        ))
    }
}

impl TypedOp for SelectK {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.topk.output_facts(inputs)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    fn reference(row: &[f32], k: usize, largest: bool) -> Vec<(f32, i64)> {
        let mut all: Vec<(f32, i64)> = row.iter().copied().zip(0..).collect();
        // A stable sort: equal values keep their index order.
        all.sort_by(|a, b| match (a.0.is_nan(), b.0.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) if largest => b.0.partial_cmp(&a.0).unwrap(),
            (false, false) => a.0.partial_cmp(&b.0).unwrap(),
        });
        all.truncate(k);
        all
    }

    #[test]
    fn keeps_the_k_best_in_order_with_ties_in_index_order() {
        let mut state = 0x9e37_79b9_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for round in 0..2000 {
            let cols = 1 + (next() % 40) as usize;
            // Few distinct values, so that ties are common; now and then a NaN.
            let row: Vec<f32> = (0..cols)
                .map(|_| match next() % 23 {
                    0 => f32::NAN,
                    22 => -f32::NAN,
                    21 => -0.0,
                    1 => f32::INFINITY,
                    n => (n % 7) as f32 - 3.0,
                })
                .collect();
            let k = (next() as usize) % (cols + 1);
            for largest in [false, true] {
                let op = SelectK {
                    topk: Topk {
                        axis: 1,
                        largest,
                        fallback_k: TDim::from(k as i64),
                    },
                };
                let mut best = Vec::new();
                if k > 0 {
                    op.select(&row, k, &mut best);
                }
                let want = reference(&row, k, largest);
                let same = best.len() == want.len()
                    && best
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.1 == b.1 && a.0.to_bits() == b.0.to_bits());
                assert!(
                    same,
                    "round {round}, k {k}, largest {largest}, row {row:?}: {best:?} != {want:?}"
                );
            }
        }
    }

    /// A plan with tract's Topk, as the latent score's graph has it (a
    /// batch of any size, k a constant), optimised as the backend does:
    /// the swap finds it, and the plan then gives what Topk gave.
    #[test]
    fn the_optimised_plan_swaps_topk_and_answers_the_same() {
        let cols = 261;
        for largest in [false, true] {
            let mut model = TypedModel::default();
            let batch = model.symbols.sym("N");
            let x = model
                .add_source("x", f32::fact([batch.to_dim(), cols.to_dim()]))
                .unwrap();
            let k = model.add_const("k", tensor1(&[5i64])).unwrap();
            let topk = Topk {
                axis: 1,
                largest,
                fallback_k: TDim::from(5),
            };
            let out = model.wire_node("topk", topk, &[x, k]).unwrap();
            model.select_output_outlets(&out).unwrap();
            let model = model.into_optimized().unwrap();
            let mut swapped = model.clone();
            assert_eq!(SelectK::swap_into(&mut swapped).unwrap(), 1);
            let (tract, ours) = (
                model.into_runnable().unwrap(),
                swapped.into_runnable().unwrap(),
            );
            // Distinct values, then rows of ties (13 values over 261
            // columns): tract's order for ties is the one to keep, not
            // only the reference's above.
            for (rows, distinct) in [(1usize, 1013), (32, 1013), (1, 13), (32, 13)] {
                let input: Vec<f32> = (0..rows * cols)
                    .map(|i| ((i * 7919) % distinct) as f32 * 0.25)
                    .collect();
                let run = |plan: &Arc<TypedRunnableModel>| {
                    let x = Tensor::from_shape(&[rows, cols], &input).unwrap();
                    plan.run(tvec!(x.into())).unwrap()
                };
                let (want, got) = (run(&tract), run(&ours));
                assert_eq!(want.len(), got.len());
                for (w, g) in want.iter().zip(&got) {
                    // Compared bit for bit: NaN is not equal to itself.
                    let bits = |t: &Tensor| -> Vec<u64> {
                        let plain = t.try_as_plain_ram().unwrap();
                        match t.datum_type() {
                            DatumType::F32 => plain
                                .as_slice::<f32>()
                                .unwrap()
                                .iter()
                                .map(|v| v.to_bits() as u64)
                                .collect(),
                            _ => plain
                                .as_slice::<i64>()
                                .unwrap()
                                .iter()
                                .map(|v| *v as u64)
                                .collect(),
                        }
                    };
                    assert_eq!(w.shape(), g.shape());
                    assert_eq!(
                        bits(w),
                        bits(g),
                        "largest {largest}, {rows} rows, {distinct} distinct values"
                    );
                }
            }
            // tract's Topk panics on a NaN (its sort's order is not total),
            // so rows with NaN are held to the reference: NaN last, ties in
            // index order.
            let rows = 4;
            let input: Vec<f32> = (0..rows * cols)
                .map(|i| match i % 37 {
                    5 => f32::NAN,
                    _ => ((i * 7919) % 13) as f32 * 0.25,
                })
                .collect();
            let x = Tensor::from_shape(&[rows, cols], &input).unwrap();
            let got = ours.run(tvec!(x.into())).unwrap();
            let plain = (
                got[0].try_as_plain_ram().unwrap(),
                got[1].try_as_plain_ram().unwrap(),
            );
            let (values, indices) = (
                plain.0.as_slice::<f32>().unwrap(),
                plain.1.as_slice::<i64>().unwrap(),
            );
            for (r, row) in input.chunks_exact(cols).enumerate() {
                let want = reference(row, 5, largest);
                for (j, (value, index)) in want.iter().enumerate() {
                    assert_eq!(values[r * 5 + j].to_bits(), value.to_bits(), "row {r}");
                    assert_eq!(indices[r * 5 + j], *index, "row {r}");
                }
            }
        }
    }

    #[test]
    fn a_k_unknown_or_longer_than_the_row_stays_with_tract() {
        for k in [0i64, 4, 9] {
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([2, 8])).unwrap();
            let k_input = model.add_const("k", tensor1(&[k])).unwrap();
            let topk = Topk {
                axis: 1,
                largest: false,
                fallback_k: TDim::from(k),
            };
            let out = model.wire_node("topk", topk, &[x, k_input]).unwrap();
            model.select_output_outlets(&out).unwrap();
            let swapped = SelectK::swap_into(&mut model).unwrap();
            assert_eq!(swapped, usize::from(k == 4), "k = {k} of 8");
        }
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([2, 8])).unwrap();
        let k_input = model.add_source("k", i64::fact([1])).unwrap();
        let topk = Topk {
            axis: 1,
            largest: false,
            fallback_k: TDim::from(3),
        };
        let out = model.wire_node("topk", topk, &[x, k_input]).unwrap();
        model.select_output_outlets(&out).unwrap();
        assert_eq!(SelectK::swap_into(&mut model).unwrap(), 0, "k an input");
    }
}
