//! What the `latent` and `combined` scores and the `mix` front end (the
//! default input) cost per window next to the reconstruction error of the
//! raw window (the default before it): the same network (the default variant, trained
//! for a few epochs on the shipped PEN windows; inference time does not
//! depend on how well it was trained) exported for each score, and every
//! window of a batch scored through the daemon's [`Scorer`] (normalisation,
//! inference on tract, the score), at batch 1 and 32, with every training
//! window as a reference and with half of them: 15 rounds that take them
//! all in turn, 6 s of each in all, and the median round of each.
//!
//! `cargo bench --bench scores` prints a Markdown table; under `cargo test`
//! it runs briefly as a smoke test. A word after `--` keeps only the rows
//! whose input or score it names, beside the first row that the others are
//! compared with, and a number keeps that batch size only (`cargo bench
//! --bench scores -- mix 32`, e.g. under `perf`).

use std::path::Path;
use std::time::{Duration, Instant};

use accelwatch::config::{Config, TrainingConfig};
use accelwatch::model::config::{ModelInput, ScoreChoice};
use accelwatch::model::scorer::Scorer;
use accelwatch::model::train;
use accelwatch::model::LoadedModel;
use accelwatch::recording::Recording;

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let seconds = if benchmarking { 6.0 } else { 0.06 };
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
         {} model, {} training windows, references: all of them or the fewer named",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        config.model.variant.name(),
        set.len()
    );
    println!(
        "| input | score | references | batch | µs per window | against the raw window's reconstruction |"
    );
    println!("|---|---|---|---|---|---|");
    // The distance's cost grows with the references kept (model.references).
    let fewer = set.len() / 2;
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let (batch_words, filter): (Vec<String>, Vec<String>) =
        words.into_iter().partition(|w| w.parse::<usize>().is_ok());
    let batches: Vec<usize> = [1usize, 32]
        .into_iter()
        .filter(|b| batch_words.is_empty() || batch_words.contains(&b.to_string()))
        .collect();
    let scores = [
        (ModelInput::Raw, ScoreChoice::Reconstruction, set.len()),
        (ModelInput::Mix, ScoreChoice::Reconstruction, set.len()),
        (ModelInput::Raw, ScoreChoice::Latent, set.len()),
        (ModelInput::Raw, ScoreChoice::Combined, set.len()),
        (ModelInput::Raw, ScoreChoice::Latent, fewer),
        (ModelInput::Raw, ScoreChoice::Combined, fewer),
        (ModelInput::Mix, ScoreChoice::Combined, set.len()),
    ];
    let scores: Vec<_> = scores
        .into_iter()
        .enumerate()
        .filter(|(row, (model_input, score, _))| {
            *row == 0
                || filter.is_empty()
                || filter
                    .iter()
                    .any(|f| f == model_input.name() || f == score.name())
        })
        .map(|(_, row)| row)
        .collect();
    let mut scorers: Vec<Scorer> = scores
        .iter()
        .map(|&(model_input, score, references)| {
            let mut arch = config.architecture();
            arch.model.input = model_input;
            arch.model.score = Some(score);
            arch.model.references = references;
            let trained =
                train::train(&arch, &settings, &input, &set, &mut |_| {}).expect("training");
            let model =
                LoadedModel::from_bytes(&trained.onnx, Path::new("<bench>")).expect("loads");
            Scorer::new(model)
        })
        .collect();
    for batch in batches {
        let windows: Vec<&[f32]> = (0..batch).map(|w| set.window(w % set.len())).collect();
        // Rounds that take the three scores in turn, and the median of each:
        // a machine that slows down for a while slows all three alike.
        let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); scores.len()];
        for _ in 0..ROUNDS {
            for (scorer, times) in scorers.iter_mut().zip(&mut rounds) {
                times.push(per_window(
                    || {
                        std::hint::black_box(scorer.score(windows.iter().copied()).unwrap());
                    },
                    batch,
                    seconds / ROUNDS as f64,
                ));
            }
        }
        let medians: Vec<f64> = rounds.into_iter().map(median).collect();
        for ((model_input, score, references), us) in scores.iter().zip(&medians) {
            let references = match score {
                ScoreChoice::Reconstruction => "-".to_string(),
                _ => references.to_string(),
            };
            println!(
                "| {} | {} | {references} | {batch} | {us:.2} | {:+.0}% |",
                model_input.name(),
                score.name(),
                (us / medians[0] - 1.0) * 100.0
            );
        }
    }
}

/// Rounds per batch size, each of every score in turn.
const ROUNDS: usize = 15;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
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
