//! The latent score: how far a window's code lies from the codes of the
//! training windows. The reference codes travel inside the ONNX file as one
//! initializer `R` (`[M, D]`), and the graph computes, per window code `z`,
//!
//! ```text
//! g_j  = −2·(z − c)·R'_jᵀ + ‖R'_j‖²              (Sub, Gemm)
//! d²_j = g_j + ‖z − c‖²  for the k smallest g_j     (TopK, ReduceSumSquare, Add, Relu)
//! latent_score = mean of √d²_j over those k          (Sqrt, ReduceMean)
//! ```
//!
//! with `c` the references' mean and `R' = R − c` (`R` itself is kept in
//! the initializer `latent_references` for whoever checks the score),
//! so that onnxruntime alone reproduces the score (docs/models.md).

use super::onnx::{Attr, GraphBuilder};

/// The initializer holding the reference codes.
pub const REFERENCES: &str = "latent_references";

/// Codes of `n` training windows (`dim` values each), thinned to at most
/// `max` by taking every (n/max)-th, evenly over the whole set and in
/// order, so the same training gives the same references.
pub fn references(codes: &[f32], dim: usize, max: usize) -> Vec<f32> {
    let n = codes.len() / dim.max(1);
    if n <= max {
        return codes.to_vec();
    }
    (0..max)
        .flat_map(|i| {
            let j = i * n / max;
            codes[j * dim..(j + 1) * dim].iter().copied()
        })
        .collect()
}

/// Writes the latent distance of `latent` (`[N, dim]`) to `references`
/// (`[M, dim]`, row-major) into `graph`; returns its `[N]` output.
pub fn export_distance(
    graph: &mut GraphBuilder,
    latent: &str,
    references: &[f32],
    dim: usize,
    k: usize,
) -> String {
    let m = references.len() / dim;
    let r = REFERENCES.to_string();
    graph.constant(&r, vec![m as i64, dim as i64], references.to_vec());
    // Centred on the references' mean, so that ‖z‖² − 2z·R + ‖R‖² (one
    // Gemm, fast) cancels less in float32 than on raw codes.
    let mean: Vec<f32> = (0..dim)
        .map(|i| references.iter().skip(i).step_by(dim).sum::<f32>() / m.max(1) as f32)
        .collect();
    let centred: Vec<f32> = references
        .chunks_exact(dim)
        .flat_map(|row| {
            row.iter()
                .zip(&mean)
                .map(|(v, c)| v - c)
                .collect::<Vec<_>>()
        })
        .collect();
    let norms: Vec<f32> = centred
        .chunks_exact(dim)
        .map(|row| row.iter().map(|v| v * v).sum())
        .collect();
    let rc = graph.floats("latent_centred_references", centred);
    let shape = graph.constant_i64("shape", vec![m as i64, dim as i64]);
    let rc = graph.node("Reshape", &[&rc, &shape], vec![]);
    let c = graph.floats("latent_reference_mean", mean);
    let r_norms = graph.floats("latent_reference_norms", norms);
    let z = graph.node("Sub", &[latent, &c], vec![]);
    let cross = graph.node(
        "Gemm",
        &[&z, &rc, &r_norms],
        vec![
            Attr::Float("alpha", -2.0),
            Attr::Float("beta", 1.0),
            Attr::Int("transB", 1),
        ],
    );
    let z_norms = graph.node(
        "ReduceSumSquare",
        &[&z],
        vec![Attr::Ints("axes", vec![1]), Attr::Int("keepdims", 1)],
    );
    // ‖z − c‖² is the same for every reference of a row, so the k nearest
    // are the k smallest of the Gemm alone: the sum and the Relu then work
    // on k values per window rather than M. (Rounding is monotonic, so the
    // k values kept are the same as those of the whole sum.)
    let k = graph.constant_i64("k", vec![k.min(m) as i64]);
    let nearest = graph.node_outputs(
        "TopK",
        &[&cross, &k],
        vec![Attr::Int("axis", 1), Attr::Int("largest", 0)],
        2,
    );
    let squared = graph.node("Add", &[&nearest[0], &z_norms], vec![]);
    // Rounding can leave a tiny negative d² for a code on a reference.
    let squared = graph.node("Relu", &[&squared], vec![]);
    let distances = graph.node("Sqrt", &[&squared], vec![]);
    graph.node(
        "ReduceMean",
        &[&distances],
        vec![Attr::Ints("axes", vec![1]), Attr::Int("keepdims", 0)],
    )
}

/// The latent distance of one code, computed exactly (in f64, from the
/// differences `z − R_j` rather than the graph's expansion), with how far a
/// float32 graph may honestly lie from it: `(distance, allowed)`.
///
/// The graph's d²_j = ‖z − c‖² − 2(z − c)·R'_j + ‖R'_j‖² cancels terms of
/// size (‖z − c‖ + ‖R'_j‖)², so each d²_j carries an error e_j of a few
/// float32 ulps of that size, times the D products summed; the order of
/// those float operations differs between builds and backends. √ turns e_j
/// into at most min(√e_j, e_j / 2d_j): tiny away from a reference, up to
/// √e_j on one (a training window's own code). `code_gap`, the largest
/// difference allowed between the two codes themselves, moves every
/// distance by as much. A wrong graph (other references, another k, no
/// centring) misses by far more than this on any window.
pub fn distance_with_tolerance(
    z: &[f32],
    references: &[f32],
    k: usize,
    code_gap: f32,
) -> (f32, f32) {
    let dim = z.len().max(1);
    let m = references.len() / dim;
    let mut mean = vec![0f64; dim];
    for row in references.chunks_exact(dim) {
        for (c, v) in mean.iter_mut().zip(row) {
            *c += *v as f64 / m.max(1) as f64;
        }
    }
    let z_norm = z
        .iter()
        .zip(&mean)
        .map(|(v, c)| (*v as f64 - c).powi(2))
        .sum::<f64>()
        .sqrt();
    let mut rows: Vec<(f64, f64)> = references
        .chunks_exact(dim)
        .map(|r| {
            let squared = z
                .iter()
                .zip(r)
                .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                .sum::<f64>();
            let r_norm = r
                .iter()
                .zip(&mean)
                .map(|(v, c)| (*v as f64 - c).powi(2))
                .sum::<f64>()
                .sqrt();
            (squared, r_norm)
        })
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let k = k.min(rows.len()).max(1);
    let ulps = (2 * dim + 8) as f64 * f32::EPSILON as f64;
    let (mut distance, mut allowed) = (0f64, 0f64);
    for &(squared, r_norm) in &rows[..k] {
        let d = squared.sqrt();
        let e = ulps * (z_norm + r_norm).powi(2);
        let rounding = if d > 0.0 {
            e.sqrt().min(e / (2.0 * d))
        } else {
            e.sqrt()
        };
        distance += d;
        allowed += rounding + code_gap as f64 + 4.0 * f32::EPSILON as f64 * d;
    }
    ((distance / k as f64) as f32, (allowed / k as f64) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_thinned_evenly_and_in_order() {
        let codes: Vec<f32> = (0..10).flat_map(|i| [i as f32, -(i as f32)]).collect();
        assert_eq!(references(&codes, 2, 20), codes);
        assert_eq!(
            references(&codes, 2, 4),
            vec![0.0, -0.0, 2.0, -2.0, 5.0, -5.0, 7.0, -7.0]
        );
    }

    #[test]
    fn distance_is_the_mean_of_the_k_nearest() {
        let refs = [0.0, 0.0, 3.0, 4.0, 10.0, 0.0];
        let d = |k| distance_with_tolerance(&[0.0, 0.0], &refs, k, 0.0).0;
        assert_eq!((d(1), d(2), d(9)), (0.0, 2.5, 5.0));
    }

    #[test]
    fn the_tolerance_is_wide_only_on_a_reference() {
        let refs: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 4.0)
            .collect();
        let on_reference = distance_with_tolerance(&refs[..16], &refs, 1, 0.0);
        let away: Vec<f32> = refs[..16].iter().map(|v| v + 0.5).collect();
        let away = distance_with_tolerance(&away, &refs, 1, 0.0);
        assert_eq!(on_reference.0, 0.0);
        assert!(
            on_reference.1 > 1e-3 && on_reference.1 < 0.05,
            "{on_reference:?}"
        );
        assert!(away.0 > 1.0 && away.1 < 1e-3, "{away:?}");
    }
}
