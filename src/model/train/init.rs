//! Seeded initialisation: the same seed gives the same network.

use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Re-initialises every variable from the seeded generator, in name order,
/// so the same seed gives the same model (candle's own CPU initialiser
/// cannot be seeded). Uniform in ±1/√fan_in, as PyTorch's `Linear` does.
pub fn seeded_init(varmap: &VarMap, rng: &mut ChaCha8Rng) -> candle_core::Result<Vec<Var>> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut named: Vec<(&String, &Var)> = data.iter().collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    for (name, var) in &named {
        let dims = var.dims().to_vec();
        let fan_in = if name.ends_with("bias") {
            // A bias is sized by fan-out; its layer's weight gives fan-in.
            let weight = name.trim_end_matches("bias").to_string() + "weight";
            data.get(&weight)
                .and_then(|w| w.dims().get(1).copied())
                .unwrap_or(dims[0])
        } else {
            dims.iter().skip(1).product::<usize>().max(1)
        };
        let bound = 1.0 / (fan_in as f32).sqrt();
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        var.set(&Tensor::from_vec(values, dims.as_slice(), var.device())?)?;
    }
    Ok(named.into_iter().map(|(_, v)| v.clone()).collect())
}
