//! Training time per variant on the shipped PEN recordings (191 training
//! windows of 128 x 3), for a fixed number of epochs, on this machine's
//! cores. `cargo bench --bench training` prints the figures; under
//! `cargo test` it runs one epoch of each variant as a smoke test.

use std::path::Path;
use std::time::Instant;

use accelwatch::config::{Config, TrainingConfig, Variant};
use accelwatch::model::train;
use accelwatch::recording::Recording;
use accelwatch::window::WindowSpec;

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let epochs = if benchmarking { 30 } else { 1 };
    let config = Config::default();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/watch/train-pen.csv");
    let spec = WindowSpec::new(
        &config.window,
        config.input.channels.len(),
        config.input.sample_rate_hz,
    );
    let set = Recording::window_set_of(&data, "series", &config.input, &config.window)
        .expect("shipped training data");
    let input = config.input_spec();
    println!(
        "training {} epochs on {} windows of {}x{} (batch {}), {} cores",
        epochs,
        set.len(),
        spec.size,
        spec.channels,
        config.training.batch_size,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| variant | ONNX file | seconds per epoch | windows per second |");
    println!("|---|---|---|---|");
    for variant in Variant::ALL {
        let arch = config.architecture().with_variant(variant);
        // Patience above the epoch count: every epoch runs.
        let settings = TrainingConfig {
            epochs,
            patience: epochs + 1,
            ..config.training.clone()
        };
        let started = Instant::now();
        let trained = train::train(&arch, &settings, &input, &set, &mut |_| {}).expect("training");
        let seconds = started.elapsed().as_secs_f64() / epochs as f64;
        println!(
            "| {} | {} kB | {:.3} | {:.0} |",
            variant.name(),
            trained.onnx.len() / 1000,
            seconds,
            trained.summary.train_windows as f64 / seconds
        );
    }
}
