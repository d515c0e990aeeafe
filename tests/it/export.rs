//! The ONNX file the trainer writes is read back by tract and computes what
//! candle trained, and carries its metadata.

use crate::common::*;
use accelwatch::config::Config;
use accelwatch::model::meta::{InputLayout, METADATA_KEY};
use accelwatch::model::LoadedModel;
use prost::Message;

#[test]
fn tract_equals_candle_for_three_and_six_channels() {
    for names in [
        &["ax", "ay", "az"][..],
        &["ax", "ay", "az", "wx", "wy", "wz"][..],
    ] {
        let trained = quick_model(names, 15, 7);
        let mut config = Config::default();
        config.input.channels = channels(names);
        let set = pen_windows(&config);
        let gap = export_gap(&trained, &set.data[..40 * set.features]);
        assert!(
            gap <= 1e-5,
            "{} channels: tract and candle differ by {gap}",
            names.len()
        );
    }
}

#[test]
fn metadata_travels_inside_the_file() {
    let trained = quick_model(&["ax", "ay", "az"], 5, 1);
    let proto = tract_onnx::pb::ModelProto::decode(trained.onnx.as_slice()).unwrap();
    let entry = proto
        .metadata_props
        .iter()
        .find(|p| p.key == METADATA_KEY)
        .expect("metadata entry");
    let json: serde_json::Value = serde_json::from_str(&entry.value).unwrap();
    assert_eq!(json["variant"], "basic");
    assert_eq!(json["channels"], serde_json::json!(["ax", "ay", "az"]));
    assert_eq!(json["window"], 128);
    let loaded = LoadedModel::from_bytes(&trained.onnx, "mem.onnx".as_ref()).unwrap();
    assert_eq!(loaded.meta, trained.meta);
    assert_eq!(loaded.meta.input_layout, InputLayout::Flat);
    assert!(loaded.meta.threshold > 0.0);
    let norm = loaded.meta.normalization.as_ref().unwrap();
    assert!(norm.std.iter().all(|s| *s > 0.0));
    assert!(loaded.meta.id.starts_with("basic-"));
}

#[test]
fn the_batch_dimension_is_dynamic_on_every_backend() {
    let trained = quick_model(&["ax", "ay", "az"], 5, 1);
    for backend in backends() {
        let loaded =
            LoadedModel::from_bytes_with(&trained.onnx, "mem.onnx".as_ref(), &backend).unwrap();
        let features = loaded.meta.features();
        let input: Vec<f32> = (0..33 * features)
            .map(|i| ((i % 17) as f32 - 8.0) / 8.0)
            .collect();
        let all = loaded.runtime.run(&input, 33).unwrap();
        // Window 5 alone gives what it gave inside the batch.
        let one = loaded
            .runtime
            .run(&input[5 * features..6 * features], 1)
            .unwrap();
        // What the model reconstructs: its front end's features.
        let width = loaded.meta.target_features();
        assert_eq!(all.reconstruction.len(), 33 * width);
        assert_eq!(one.reconstruction.len(), width);
        let in_batch = &all.reconstruction[5 * width..6 * width];
        let gap = one
            .reconstruction
            .iter()
            .zip(in_batch)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(gap < 1e-5, "{}: {gap}", backend.kind.name());
        assert_eq!(all.latent.len(), 33 * loaded.meta.latent_dim);
    }
}

#[test]
fn same_seed_same_model_other_seed_other_model() {
    let a = quick_model(&["ax", "ay", "az"], 8, 11);
    let b = quick_model(&["ax", "ay", "az"], 8, 11);
    let c = quick_model(&["ax", "ay", "az"], 8, 12);
    assert_eq!(a.meta.id, b.meta.id, "the id hashes the weights");
    assert_eq!(a.onnx, b.onnx);
    assert_ne!(a.meta.id, c.meta.id);
}

#[test]
fn broken_model_files_are_refused_with_a_reason() {
    let trained = quick_model(&["ax", "ay", "az"], 3, 1);
    let truncated = &trained.onnx[..trained.onnx.len() / 2];
    let err = LoadedModel::from_bytes(truncated, "half.onnx".as_ref())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("half.onnx") && err.contains("not an ONNX file"),
        "{err}"
    );
    let err = LoadedModel::from_bytes(b"hello", "text.onnx".as_ref())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("text.onnx"), "{err}");
    // An output that nothing produces (tract-onnx would panic on it).
    let mut proto = tract_onnx::pb::ModelProto::decode(trained.onnx.as_slice()).unwrap();
    proto.graph.as_mut().unwrap().output[0].name = "nowhere".into();
    let err = LoadedModel::from_bytes(&proto.encode_to_vec(), "odd.onnx".as_ref())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("odd.onnx") && err.contains("\"nowhere\" is not produced"),
        "{err}"
    );
    // A model without metadata and without a sidecar.
    let mut proto = tract_onnx::pb::ModelProto::decode(trained.onnx.as_slice()).unwrap();
    proto.metadata_props.clear();
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("bare.onnx");
    std::fs::write(&bare, proto.encode_to_vec()).unwrap();
    let err = LoadedModel::load(&bare).err().expect("refused").to_string();
    assert!(
        err.contains("no \"accelwatch\" metadata") && err.contains("bare.json"),
        "{err}"
    );
    // The same metadata given as a sidecar is accepted.
    std::fs::write(
        dir.path().join("bare.json"),
        serde_json::to_string(&trained.meta).unwrap(),
    )
    .unwrap();
    assert!(LoadedModel::load(&bare).is_ok());
    // Error weights that do not fit what is reconstructed.
    let mut meta = trained.meta.clone();
    assert!(
        meta.error_weights.is_some(),
        "a front end's model weighs its errors"
    );
    meta.error_weights = Some(vec![1.0; 3]);
    std::fs::write(
        dir.path().join("bare.json"),
        serde_json::to_string(&meta).unwrap(),
    )
    .unwrap();
    let err = LoadedModel::load(&bare).err().expect("refused").to_string();
    assert!(err.contains("error_weights has 3 values"), "{err}");
    // Metadata that contradicts the graph.
    let mut meta = trained.meta.clone();
    meta.error_weights = None;
    meta.window = 64;
    std::fs::write(
        dir.path().join("bare.json"),
        serde_json::to_string(&meta).unwrap(),
    )
    .unwrap();
    for backend in backends() {
        let err = LoadedModel::load_with(&bare, &backend)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("bare.onnx") && err.contains("expected [N, 192]"),
            "{}: {err}",
            backend.kind.name()
        );
    }
}

/// The check `train` makes before writing a latent or combined model holds
/// the graph's distance to float32's own rounding bound: the graph as
/// exported passes on training windows (whose codes are references, where
/// √ magnifies rounding most), and a graph that measures against other
/// references, or averages another k, fails.
#[test]
fn the_export_check_passes_the_distance_graph_and_catches_a_wrong_one() {
    use accelwatch::model::config::{ScoreChoice, Variant};
    use accelwatch::model::meta::ScoreKind;
    use accelwatch::model::train;
    let mut config = Config::default();
    config.input.channels = channels(&["ax", "ay", "az"]);
    config.model.latent = 8;
    config.model.score = Some(ScoreChoice::Latent);
    let trained = quick_variant(&config, Variant::Basic, 15, 7);
    let set = pen_windows(&config);
    let windows = &set.data[..64 * set.features];
    let gap = train::export_gap(&trained, windows).expect("the check runs");
    assert_eq!(gap.problem(), None, "{gap}");
    let ratio = gap.distance.expect("a latent model's distance is checked");
    assert!(ratio > 0.0, "a ratio of exactly 0 compares nothing: {gap}");

    let mut moved = trained;
    let references = moved.references.clone().expect("references");
    let shifted: Vec<f32> = references.iter().map(|v| v + 0.01).collect();
    moved.references = Some(shifted);
    let gap = train::export_gap(&moved, windows).unwrap();
    assert!(
        gap.problem().is_some(),
        "references moved by 0.01 pass: {gap}"
    );
    moved.references = Some(references);

    let ScoreKind::Latent { k, references } = moved.meta.score else {
        panic!("{:?}", moved.meta.score)
    };
    moved.meta.score = ScoreKind::Latent {
        k: k + 1,
        references,
    };
    let gap = train::export_gap(&moved, windows).unwrap();
    assert!(
        gap.problem().is_some(),
        "k {} checked as {}: {gap}",
        k,
        k + 1
    );
}
