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

/// The same distance in plain Rust, for one code: what the graph must give.
pub fn distance(z: &[f32], references: &[f32], k: usize) -> f32 {
    let mut d: Vec<f32> = references
        .chunks_exact(z.len())
        .map(|r| z.iter().zip(r).map(|(a, b)| (a - b) * (a - b)).sum::<f32>())
        .collect();
    d.sort_by(f32::total_cmp);
    let k = k.min(d.len()).max(1);
    d[..k].iter().map(|v| v.sqrt()).sum::<f32>() / k as f32
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
        assert_eq!(distance(&[0.0, 0.0], &refs, 1), 0.0);
        assert_eq!(distance(&[0.0, 0.0], &refs, 2), 2.5);
        assert_eq!(distance(&[0.0, 0.0], &refs, 9), 5.0);
    }
}
