//! Every variant of the autoencoder family trains with candle, exports to
//! ONNX that tract runs with the same outputs, records its hyper-parameters,
//! and has its own graph.

use crate::common::*;
use accelwatch::config::{Config, Noise, SparsityPenalty, VaeScore, Variant};
use accelwatch::model::meta::ScoreKind;
use accelwatch::model::LoadedModel;
use prost::Message;

/// Small networks on the raw window (the front ends have a test of their
/// own below).
fn small_config() -> Config {
    let mut config = Config::default();
    config.model.input = accelwatch::model::config::ModelInput::Raw;
    config.model.hidden = vec![64, 32];
    config.model.latent = 8;
    config.model.sparse.units = Some(400);
    config.model.conv.filters = vec![8, 16];
    config
}

fn op_types(onnx: &[u8]) -> Vec<String> {
    let proto = tract_onnx::pb::ModelProto::decode(onnx).unwrap();
    proto
        .graph
        .unwrap()
        .node
        .into_iter()
        .map(|n| n.op_type)
        .collect()
}

/// Every output of each window, run in batches of sizes up to two chunks
/// of a small graph's plan batch and more (whole chunks, and a last one
/// padded with zeros), is bit for bit its output run alone: a window's
/// score does not depend on what else was queued with it.
fn assert_batch_independent(loaded: &LoadedModel, windows: &[f32], features: usize, name: &str) {
    use accelwatch::model::inference::Inference;
    use accelwatch::model::tract_backend::PLAN_BATCH;
    // Each output as one list of bits, absent outputs empty.
    fn outputs(out: &Inference) -> [Vec<u32>; 6] {
        let bits = |v: Option<&Vec<f32>>| {
            v.map_or(Vec::new(), |v| v.iter().map(|x| x.to_bits()).collect())
        };
        [
            bits(Some(&out.reconstruction)),
            bits(Some(&out.latent)),
            bits(out.kl.as_ref()),
            bits(out.latent_score.as_ref()),
            bits(out.activity.as_ref()),
            bits(out.target.as_ref()),
        ]
    }
    let most = 2 * PLAN_BATCH + 3;
    assert!(windows.len() >= most * features, "{name}: too few windows");
    let mut alone: [Vec<u32>; 6] = Default::default();
    for window in windows[..most * features].chunks_exact(features) {
        let one = outputs(&loaded.runtime.run(window, 1).unwrap());
        for (all, one) in alone.iter_mut().zip(one) {
            all.extend(one);
        }
    }
    for n in (1..=most).filter(|n| n.is_power_of_two() || n % 4 == 3) {
        let together = outputs(&loaded.runtime.run(&windows[..n * features], n).unwrap());
        for (which, (together, alone)) in together.iter().zip(&alone).enumerate() {
            assert!(
                *together == alone[..together.len()],
                "{name}: output {which} of a batch of {n} is not each window's alone"
            );
        }
    }
}

#[test]
fn every_variant_round_trips_through_tract() {
    let config = small_config();
    let set = pen_windows(&config);
    let sample = &set.data[..24 * set.features];
    let mut graphs = Vec::new();
    for variant in Variant::ALL {
        let trained = quick_variant(&config, variant, 3, 5);
        let gap = export_gap(&trained, sample);
        assert!(
            gap <= 1e-5,
            "{}: tract and candle differ by {gap}",
            variant.name()
        );
        assert_eq!(trained.meta.variant, variant.name());
        assert!(trained.meta.id.starts_with(variant.name()));
        assert!(trained.meta.threshold > 0.0, "{}", variant.name());
        let loaded = LoadedModel::from_bytes(&trained.onnx, "m.onnx".as_ref()).unwrap();
        assert_batch_independent(&loaded, &set.data, set.features, variant.name());
        // Only the basic network here (384 → 8 → 384) is small enough for
        // a plan made for its batch.
        if let accelwatch::model::loaded::Runtime::Tract(model) = &loaded.runtime {
            assert_eq!(
                model.plan_batch().is_some(),
                variant == Variant::Basic,
                "{}",
                variant.name()
            );
        }
        let out = loaded.runtime.run(&vec![0.0; 2 * set.features], 2).unwrap();
        assert_eq!(
            out.latent.len(),
            2 * trained.meta.latent_dim,
            "{}",
            variant.name()
        );
        graphs.push((
            variant,
            op_types(&trained.onnx),
            trained.meta.hyperparameters.clone(),
        ));
    }
    let ops = |v: Variant| graphs.iter().find(|g| g.0 == v).unwrap().1.clone();
    assert!(ops(Variant::Basic).contains(&"Tanh".to_string()));
    assert_eq!(
        ops(Variant::Deep).iter().filter(|o| *o == "Gemm").count(),
        6,
        "3 encoder + 3 decoder layers"
    );
    assert!(ops(Variant::Sparse).contains(&"Sigmoid".to_string()));
    assert!(
        ops(Variant::Vae).contains(&"Exp".to_string()),
        "the KL output"
    );
    for op in ["Conv", "Resize", "Transpose"] {
        assert!(
            ops(Variant::Conv).contains(&op.to_string()),
            "conv graph has {op}"
        );
    }
    let hyper = |v: Variant| graphs.iter().find(|g| g.0 == v).unwrap().2.clone();
    assert_eq!(
        hyper(Variant::Deep)["layers"],
        serde_json::json!([384, 64, 32, 8, 32, 64, 384])
    );
    assert_eq!(hyper(Variant::Denoising)["noise"]["kind"], "gaussian");
    assert_eq!(hyper(Variant::Sparse)["penalty"]["kind"], "kl");
    assert_eq!(hyper(Variant::Vae)["beta"], 1.0);
    assert_eq!(hyper(Variant::Conv)["filters"], serde_json::json!([8, 16]));
}

#[test]
fn the_sparse_code_is_overcomplete_and_mostly_quiet() {
    let mut config = small_config();
    config.model.sparse.beta = 3.0;
    config.training.learning_rate = 3e-3;
    let trained = quick_variant(&config, Variant::Sparse, 25, 2);
    assert_eq!(
        trained.meta.latent_dim, 400,
        "more code units than the 384 inputs"
    );
    let loaded = LoadedModel::from_bytes(&trained.onnx, "m.onnx".as_ref()).unwrap();
    let set = pen_windows(&config);
    let mut input = set.data[..50 * set.features].to_vec();
    trained
        .meta
        .normalization
        .as_ref()
        .unwrap()
        .apply(&mut input);
    let out = loaded.runtime.run(&input, 50).unwrap();
    let mean = out.latent.iter().sum::<f32>() / out.latent.len() as f32;

    // Without the penalty the same network is far less sparse.
    config.model.sparse.beta = 0.0;
    let dense = quick_variant(&config, Variant::Sparse, 25, 2);
    let loaded = LoadedModel::from_bytes(&dense.onnx, "m.onnx".as_ref()).unwrap();
    let out = loaded.runtime.run(&input, 50).unwrap();
    let dense_mean = out.latent.iter().sum::<f32>() / out.latent.len() as f32;
    assert!(
        mean < dense_mean - 0.1,
        "the KL penalty pulls the mean activation towards rho = 0.05: on {mean}, off {dense_mean}"
    );

    config.model.sparse.penalty = SparsityPenalty::L1;
    config.model.sparse.l1 = 0.1;
    let l1 = quick_variant(&config, Variant::Sparse, 5, 2);
    assert_eq!(l1.meta.hyperparameters["penalty"]["kind"], "l1");
}

#[test]
fn the_vae_serves_mu_and_can_score_by_negative_elbo() {
    let mut config = small_config();
    config.model.vae.score = VaeScore::NegElbo;
    let trained = quick_variant(&config, Variant::Vae, 10, 3);
    assert_eq!(trained.meta.score, ScoreKind::NegElbo { beta: 1.0 });
    let loaded = LoadedModel::from_bytes(&trained.onnx, "m.onnx".as_ref()).unwrap();
    let set = pen_windows(&config);
    let mut input = set.data[..4 * set.features].to_vec();
    trained
        .meta
        .normalization
        .as_ref()
        .unwrap()
        .apply(&mut input);
    let a = loaded.runtime.run(&input, 4).unwrap();
    let b = loaded.runtime.run(&input, 4).unwrap();
    assert_eq!(a, b, "served deterministically");
    let kl = a.kl.expect("a kl output");
    assert!(kl.iter().all(|k| *k >= 0.0 && k.is_finite()), "{kl:?}");
    let mut scorer = accelwatch::model::scorer::Scorer::new(loaded);
    let scores = scorer
        .score(set.data[..4 * set.features].chunks(set.features))
        .unwrap();
    assert_eq!(scores.len(), 4, "every window scored");
    assert_eq!(kl.len(), 4);
    for (i, s) in scores.iter().enumerate() {
        let r = &a.reconstruction[i * set.features..(i + 1) * set.features];
        let x = &input[i * set.features..(i + 1) * set.features];
        let half_sse: f32 = 0.5 * x.iter().zip(r).map(|(x, r)| (x - r) * (x - r)).sum::<f32>();
        assert!(
            (s.score - (half_sse + kl[i])).abs() < 1e-2 * s.score.max(1.0),
            "{} vs {}",
            s.score,
            half_sse + kl[i]
        );
    }
}

#[test]
fn denoising_noise_is_training_only_and_masks_or_adds() {
    let mut config = small_config();
    config.model.denoising.noise = Noise::Mask;
    config.model.denoising.mask_fraction = 0.5;
    let trained = quick_variant(&config, Variant::Denoising, 3, 4);
    assert_eq!(trained.meta.hyperparameters["noise"]["kind"], "mask");
    let loaded = LoadedModel::from_bytes(&trained.onnx, "m.onnx".as_ref()).unwrap();
    let x = vec![0.5; trained.meta.features()];
    assert_eq!(
        loaded.runtime.run(&x, 1).unwrap(),
        loaded.runtime.run(&x, 1).unwrap(),
        "no noise when serving"
    );
    // The noise changes what is learned: from the same seed, masking half
    // the inputs, masking none and adding Gaussian noise give three
    // different networks, while the same settings give the same one.
    let again = quick_variant(&config, Variant::Denoising, 3, 4);
    assert_eq!(again.meta.id, trained.meta.id, "training is deterministic");
    config.model.denoising.mask_fraction = 0.0;
    let unmasked = quick_variant(&config, Variant::Denoising, 3, 4);
    config.model.denoising.noise = Noise::Gaussian;
    config.model.denoising.sigma = 0.3;
    let gaussian = quick_variant(&config, Variant::Denoising, 3, 4);
    assert_eq!(gaussian.meta.hyperparameters["noise"]["kind"], "gaussian");
    let ids = [&trained.meta.id, &unmasked.meta.id, &gaussian.meta.id];
    assert!(
        ids[0] != ids[1] && ids[0] != ids[2] && ids[1] != ids[2],
        "the noise changed the weights: {ids:?}"
    );
}

#[test]
fn stacked_pretraining_runs_layer_by_layer_before_fine_tuning() {
    let mut config = small_config();
    config.training.pretrain_epochs = 4;
    let trained = quick_variant(&config, Variant::Deep, 3, 6);
    let losses = &trained.meta.training.as_ref().unwrap().pretrain_losses;
    assert_eq!(losses.len(), 3, "one shallow autoencoder per encoder layer");
    assert!(
        losses.iter().all(|l| l.is_finite() && *l > 0.0),
        "{losses:?}"
    );
    config.training.pretrain_epochs = 0;
    let plain = quick_variant(&config, Variant::Deep, 3, 6);
    assert_ne!(
        plain.meta.id, trained.meta.id,
        "pretraining changed the weights"
    );
}

/// `model.input = "spectrum"` and `"mix"`: every variant trains on the
/// front end's features, the graph reads the raw window and computes them
/// itself (its `features` output equals what training computed), and
/// reconstructs them rather than the window.
#[test]
fn every_variant_trains_on_the_spectrum_and_mix_front_ends() {
    use accelwatch::model::config::ModelInput;
    for (input, rows) in [(ModelInput::Spectrum, 12), (ModelInput::Mix, 12 + 128)] {
        every_variant_trains_on(input, rows);
    }
}

fn every_variant_trains_on(input: accelwatch::model::config::ModelInput, rows: usize) {
    let mut config = small_config();
    config.model.input = input;
    config.model.sparse.units = Some(rows * 3 + 16);
    let set = pen_windows(&config);
    let sample = &set.data[..24 * set.features];
    for variant in Variant::ALL {
        let trained = quick_variant(&config, variant, 3, 5);
        let name = format!("{} on {}", variant.name(), input.name());
        let gap = export_gap(&trained, sample);
        assert!(gap <= 1e-4, "{name}: tract and candle differ by {gap}");
        let check = accelwatch::model::train::export_gap(&trained, sample).unwrap();
        assert_eq!(check.problem(), None, "{name}: {check}");
        assert!(trained.meta.front_end.is_some(), "{name}");
        assert_eq!(trained.meta.target_features(), rows * 3, "{name}");
        let proto = tract_onnx::pb::ModelProto::decode(trained.onnx.as_slice()).unwrap();
        let graph = proto.graph.unwrap();
        assert_eq!(
            graph.input[0].name, "window",
            "{name}: the graph reads the window"
        );
        assert!(graph.output.iter().any(|o| o.name == "features"), "{name}");
        let ops = op_types(&trained.onnx);
        for op in ["TopK", "MatMul", "Log", "Concat"] {
            assert!(ops.iter().any(|o| o == op), "{name}: no {op} in {ops:?}");
        }
        let loaded = LoadedModel::from_bytes(&trained.onnx, "m.onnx".as_ref()).unwrap();
        assert_batch_independent(&loaded, &set.data, set.features, &name);
        let out = loaded.runtime.run(&sample[..2 * set.features], 2).unwrap();
        assert_eq!(out.reconstruction.len(), 2 * rows * 3, "{name}");
        assert_eq!(
            out.target.as_ref().map(Vec::len),
            Some(2 * rows * 3),
            "{name}"
        );
    }
}
