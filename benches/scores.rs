//! What the `latent` and `combined` scores cost per window next to the
//! reconstruction error: the same network (the default variant, trained
//! for a few epochs on the shipped PEN windows; inference time does not
//! depend on how well it was trained) exported for each score, and every
//! window of a batch scored through the daemon's [`Scorer`] (normalisation,
//! inference on tract, the score), at batch 1 and 32.
//!
//! `cargo bench --bench scores` prints a Markdown table; under `cargo test`
//! it runs briefly as a smoke test.

use std::path::Path;
use std::time::{Duration, Instant};

use accelwatch::config::{Config, TrainingConfig};
use accelwatch::model::config::ScoreChoice;
use accelwatch::model::scorer::Scorer;
use accelwatch::model::train;
use accelwatch::model::LoadedModel;
use accelwatch::recording::Recording;

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let seconds = if benchmarking { 2.0 } else { 0.02 };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = Config::default();
    let set = Recording::window_set_of(
        &repo.join("data/watch/train-pen.csv"),
        "series",
        &config.input,
        &config.window,
    )
    .expect("shipped training data");
    let input = config.input_spec();
    let settings = TrainingConfig {
        epochs: if benchmarking { 5 } else { 1 },
        ..config.training.clone()
    };
    println!(
        "per-window time in µs through the Scorer on tract (lower is better), {} cores, \
         {} model, {} training windows as references",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        config.model.variant.name(),
        set.len()
    );
    println!("| score | batch | µs per window | against reconstruction |");
    println!("|---|---|---|---|");
    let mut baseline = [0.0; 2];
    for score in [
        ScoreChoice::Reconstruction,
        ScoreChoice::Latent,
        ScoreChoice::Combined,
    ] {
        let mut arch = config.architecture();
        arch.model.score = score;
        let trained = train::train(&arch, &settings, &input, &set, &mut |_| {}).expect("training");
        let model = LoadedModel::from_bytes(&trained.onnx, Path::new("<bench>")).expect("loads");
        let mut scorer = Scorer::new(model);
        for (i, batch) in [1usize, 32].into_iter().enumerate() {
            let windows: Vec<&[f32]> = (0..batch).map(|w| set.window(w % set.len())).collect();
            let us = per_window(
                || {
                    std::hint::black_box(scorer.score(windows.iter().copied()).unwrap());
                },
                batch,
                seconds,
            );
            if score == ScoreChoice::Reconstruction {
                baseline[i] = us;
            }
            println!(
                "| {} | {batch} | {us:.2} | {:+.0}% |",
                score.name(),
                (us / baseline[i] - 1.0) * 100.0
            );
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
