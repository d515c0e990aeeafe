//! Inference time per window, tract against ONNX Runtime (the `ort`
//! backend), at batch 1, 8, 32 and 128, for the shipped model and the other
//! variants with their default sizes, next to onnxruntime's own Python
//! figure for the same files (scripts/bench_onnxruntime.py).
//!
//! `cargo bench --bench backends` prints a Markdown table; the ONNX Runtime
//! library is ORT_DYLIB_PATH (the onnxruntime wheel's `capi/libonnxruntime.so*`).
//! Under `cargo test` it runs the shipped model briefly as a smoke test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use accelwatch::config::{Config, TrainingConfig, Variant};
use accelwatch::model::train;
use accelwatch::model::{BackendOptions, LoadedModel};
use accelwatch::recording::Recording;

const BATCHES: [usize; 4] = [1, 8, 32, 128];

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let seconds = if benchmarking { 1.0 } else { 0.02 };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Without the library the table says so in every ort cell and in a
    // line above it, so a bare `cargo bench` still measures tract.
    let library = std::env::var_os("ORT_DYLIB_PATH")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-models");
    std::fs::create_dir_all(&dir).expect("bench model directory");
    let mut models = vec![(
        "basic (shipped demo.onnx)".to_string(),
        repo.join("models/demo.onnx"),
    )];
    if benchmarking {
        models.extend(other_variants(repo, &dir));
    }

    let python = python_figures(seconds, &models);
    println!(
        "per-window inference time in µs (lower is better), one thread each, {} cores; \
         onnxruntime (Python) {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        python
            .as_ref()
            .ok()
            .and_then(|v| v["onnxruntime"].as_str())
            .unwrap_or("n/a")
    );
    if let Err(reason) = &python {
        println!("(no Python figures: {reason})");
    }
    if library.is_none() {
        println!(
            "(no ort figures: set ORT_DYLIB_PATH to the ONNX Runtime library, e.g. the \
             onnxruntime wheel's capi/libonnxruntime.so*)"
        );
    }
    println!("| model | batch | tract | ort | onnxruntime (Python) |");
    println!("|---|---|---|---|---|");
    for (name, path) in &models {
        let tract = LoadedModel::load_with(path, &BackendOptions::tract()).expect("tract loads");
        let ort = library.as_ref().map(|library| {
            LoadedModel::load_with(path, &BackendOptions::ort(Some(library.clone())))
                .expect("ort loads")
        });
        let features = tract.meta.features();
        for batch in BATCHES {
            // Values in the range of normalised windows.
            let input: Vec<f32> = (0..batch * features)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
                .collect();
            let time = |model: &LoadedModel| {
                per_window(
                    || {
                        std::hint::black_box(model.runtime.run(&input, batch).unwrap());
                    },
                    batch,
                    seconds,
                )
            };
            let py = python
                .as_ref()
                .ok()
                .and_then(|v| v["models"][path.display().to_string()][batch.to_string()].as_f64())
                .map_or("n/a".to_string(), |us| format!("{us:.2}"));
            let ort = ort
                .as_ref()
                .map_or("n/a".to_string(), |ort| format!("{:.2}", time(ort)));
            println!("| {name} | {batch} | {:.2} | {ort} | {py} |", time(&tract));
        }
    }
}

/// Microseconds per window of `run`, which scores `batch` windows.
fn per_window(mut run: impl FnMut(), batch: usize, seconds: f64) -> f64 {
    for _ in 0..20 {
        run();
    }
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < budget {
        run();
        calls += 1;
    }
    started.elapsed().as_secs_f64() / (calls as f64 * batch as f64) * 1e6
}

/// The other variants with their default sizes, trained for two epochs
/// (inference time does not depend on how well they were trained).
fn other_variants(repo: &Path, dir: &Path) -> Vec<(String, PathBuf)> {
    let config = Config::default();
    let set = Recording::window_set_of(
        &repo.join("data/watch/train-pen.csv"),
        "series",
        &config.input,
        &config.window,
    )
    .expect("shipped training data");
    let input = config.input_spec();
    [Variant::Deep, Variant::Vae, Variant::Conv, Variant::Sparse]
        .into_iter()
        .map(|variant| {
            let arch = config.architecture().with_variant(variant);
            let settings = TrainingConfig {
                epochs: 2,
                ..config.training.clone()
            };
            let trained =
                train::train(&arch, &settings, &input, &set, &mut |_| {}).expect("training");
            let path = dir.join(format!("{}.onnx", variant.name()));
            std::fs::write(&path, &trained.onnx).expect("writing the bench model");
            (variant.name().to_string(), path)
        })
        .collect()
}

/// scripts/bench_onnxruntime.py's figures for the same files.
fn python_figures(seconds: f64, models: &[(String, PathBuf)]) -> Result<serde_json::Value, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_onnxruntime.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(seconds.to_string())
        .args(models.iter().map(|(_, p)| p))
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}
