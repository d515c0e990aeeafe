//! The anomaly scores beyond reconstruction (`model.score`): a model
//! trained for `latent` or `combined` carries its reference codes and the
//! distance graph, scores as onnxruntime and numpy do from the file alone
//! (scripts/latent_score.py), on both backends; asking such a score of a
//! model without it is a config error. And short takes (many recordings of
//! a few windows each) train by holding out whole ones.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;

fn default_config() -> PathBuf {
    repo().join("configs/default.toml")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A basic model trained on the shipped PEN data for `score`.
fn train_for(dir: &Path, score: &str) -> PathBuf {
    train_on(dir, score, "raw")
}

/// The same, reading `input` (`raw` or `spectrum`).
fn train_on(dir: &Path, score: &str, input: &str) -> PathBuf {
    let model = dir.join(format!("{score}-{input}.onnx"));
    let out = accelwatch()
        .env("ACCELWATCH__MODEL__SCORE", score)
        .env("ACCELWATCH__MODEL__INPUT", input)
        .args(["train", "--config"])
        .arg(default_config())
        .arg("--data")
        .arg(train_csv())
        .args(["--device-column", "series", "--variant", "basic"])
        .args(["--epochs", "40", "--latent", "8", "--out"])
        .arg(&model)
        .run();
    assert!(out.status.success(), "{score}: {}", stderr(&out));
    model
}

/// accelwatch's published scores of the demo recording, by (device, seq).
fn accelwatch_scores(
    model: &Path,
    backend: &accelwatch::model::BackendOptions,
) -> HashMap<(String, u64), f64> {
    let out = accelwatch_on(backend)
        .args(["score", "--model"])
        .arg(model)
        .arg("--data")
        .arg(demo_csv())
        .run();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "window")
        .map(|v| {
            (
                (
                    v["device"].as_str().unwrap().to_string(),
                    v["seq"].as_u64().unwrap(),
                ),
                v["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The same scores from onnxruntime and numpy alone.
fn onnxruntime_scores(model: &Path) -> (String, HashMap<(String, u64), f64>) {
    let (kind, scores, _) = onnxruntime_scores_and_errors(model);
    (kind, scores)
}

/// A value per window, by (device, seq).
type PerWindow = HashMap<(String, u64), f64>;

/// The same, with each window's reconstruction error (onnxruntime's).
fn onnxruntime_scores_and_errors(model: &Path) -> (String, PerWindow, PerWindow) {
    let out = std::process::Command::new("python3")
        .arg(repo().join("scripts/latent_score.py"))
        .arg(model)
        .arg(demo_csv())
        .arg("device")
        .run_within(Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("cannot run python3: {e}; {PIP_INSTALL}"));
    assert!(
        out.status.success(),
        "scripts/latent_score.py ({PIP_INSTALL}): {}",
        stderr(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let field = |name: &str| -> PerWindow {
        v["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                let id = (
                    w["device"].as_str().unwrap().to_string(),
                    w["seq"].as_u64().unwrap(),
                );
                (id, w[name].as_f64().unwrap())
            })
            .collect()
    };
    let (scores, errors) = (field("score"), field("reconstruction"));
    (v["score"].as_str().unwrap().to_string(), scores, errors)
}

#[test]
fn latent_and_combined_scores_are_reproduced_by_onnxruntime_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    for (score, kind, input) in [
        ("latent", "latent", "raw"),
        ("combined", "combined", "raw"),
        ("reconstruction", "mse", "raw"),
        ("reconstruction", "mse", "spectrum"),
        ("combined", "combined", "spectrum"),
    ] {
        let model = train_on(dir.path(), score, input);
        let (found, expected) = onnxruntime_scores(&model);
        assert_eq!(found, kind, "{score}: the metadata's score kind");
        assert!(expected.len() > 200, "{} windows", expected.len());
        for backend in backends() {
            let served = accelwatch_scores(&model, &backend);
            assert_eq!(served.len(), expected.len(), "{score}: windows scored");
            for (id, want) in &expected {
                let got = served[id];
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "{score} ({input}) {} {id:?}: accelwatch {got}, onnxruntime {want}",
                    backend.kind.name()
                );
            }
        }
        // The distance is the score's own: the latent-scored model's
        // published scores (accelwatch's) are not its reconstruction errors.
        if score == "latent" {
            let (_, _, errors) = onnxruntime_scores_and_errors(&model);
            let served = accelwatch_scores(&model, &backends()[0]);
            let differ = served
                .iter()
                .filter(|(id, s)| (errors[*id] - **s).abs() > 1e-3)
                .count();
            assert!(
                differ > served.len() / 2,
                "accelwatch publishes the latent model's reconstruction errors, not its distances"
            );
        }
    }
}

#[test]
fn asking_a_latent_score_of_a_model_without_one_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    for score in ["latent", "combined"] {
        // The shipped demo model is scored by reconstruction only.
        let out = accelwatch()
            .env("ACCELWATCH__MODEL__SCORE", score)
            .args(["score", "--config"])
            .arg(default_config())
            .arg("--model")
            .arg(repo().join("models/demo.onnx"))
            .arg("--data")
            .arg(demo_csv())
            .run();
        assert_eq!(out.status.code(), Some(78), "{score}: {}", stderr(&out));
        let text = stderr(&out);
        assert!(
            text.contains("model.score") && text.contains("no latent_score output"),
            "{score}: {text}"
        );
        let config = dir.path().join("c.toml");
        write(
            &config,
            &format!(
                "[model]\npath = {:?}\nscore = {score:?}\n[input.replay]\npath = {:?}\n",
                repo().join("models/demo.onnx"),
                demo_csv()
            ),
        );
        let out = accelwatch()
            .args(["validate", "--config"])
            .arg(&config)
            .run();
        assert_eq!(
            out.status.code(),
            Some(78),
            "validate {score}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("model.score"), "{}", stderr(&out));
    }
    // A model made for one latent score is not served as the other.
    let latent = train_for(dir.path(), "latent");
    let out = accelwatch()
        .env("ACCELWATCH__MODEL__SCORE", "combined")
        .args(["score", "--config"])
        .arg(default_config())
        .arg("--model")
        .arg(&latent)
        .arg("--data")
        .arg(demo_csv())
        .run();
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is scored by latent"),
        "{}",
        stderr(&out)
    );
    // A bad value is refused with its key.
    let out = accelwatch()
        .env("ACCELWATCH__MODEL__SCORE", "knn")
        .args(["score", "--config"])
        .arg(default_config())
        .arg("--model")
        .arg(&latent)
        .arg("--data")
        .arg(demo_csv())
        .run();
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
}

#[test]
fn many_short_takes_train_by_holding_out_whole_ones() {
    // 40 takes of 100 samples (2 s at 50 Hz), windows of 50 every 10:
    // 6 windows a take, too few to lend a held-out tail.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("takes.csv");
    let mut text = String::from("take,ax,ay,az\n");
    for take in 0..40 {
        for i in 0..100 {
            let t = i as f64 / 50.0;
            let f = 1.0 + (take % 4) as f64 * 0.5;
            text += &format!(
                "{take},{:.5},{:.5},{:.5}\n",
                (t * f * std::f64::consts::TAU).sin(),
                (t * f * 3.1).cos() * 0.5,
                0.1 * take as f64 / 40.0
            );
        }
    }
    write(&csv, &text);
    let model = dir.path().join("takes.onnx");
    let out = accelwatch()
        .env("ACCELWATCH__WINDOW__SIZE", "50")
        .env("ACCELWATCH__WINDOW__HOP", "10")
        .args(["train", "--config"])
        .arg(default_config())
        .arg("--data")
        .arg(&csv)
        .args([
            "--device-column",
            "take",
            "--variant",
            "basic",
            "--epochs",
            "20",
            "--out",
        ])
        .arg(&model)
        .run();
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    // Every 5th take (8 of 40) held out whole: 48 windows, 192 to train on.
    assert!(
        text.contains("192 training and 48 held-out windows (8 whole streams"),
        "{text}"
    );
    assert!(model.exists());
}
