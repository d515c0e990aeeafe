//! Live scoring latency with and without an online training running next
//! to it: every window of 8 simulated devices is ingested sample by sample
//! and scored alone (batch 1, the live case), and the time from the sample
//! that completes a window to its score is recorded. Then the same while a
//! thread trains the basic autoencoder on the PEN recordings over and over,
//! niced as the daemon's trainer is. `cargo bench --bench online` prints
//! the figures; under `cargo test` it runs briefly as a smoke test.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use accelwatch::config::{Config, CsvColumns};
use accelwatch::decode::Format;
use accelwatch::model::net::Architecture;
use accelwatch::model::train::{self, InputSpec};
use accelwatch::model::LoadedModel;
use accelwatch::pipeline::{window_spec, IngestStage, ScoreStage};
use accelwatch::recording::{ReadOptions, Recording};
use accelwatch::source::Frame;
use accelwatch::telemetry::Metrics;

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let run_for = Duration::from_millis(if benchmarking { 10_000 } else { 300 });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = Config::default();
    let model = LoadedModel::load(&root.join("models/demo.onnx")).expect("shipped model");

    let quiet = measure(&config, &model, run_for);
    let stop = Arc::new(AtomicBool::new(false));
    let trainings = Arc::new(AtomicUsize::new(0));
    let trainer = {
        let (stop, trainings, config) = (stop.clone(), trainings.clone(), config.clone());
        let data = root.join("data/watch/train-pen.csv");
        std::thread::spawn(move || {
            accelwatch::online::lower_priority();
            let recording = Recording::read(
                &data,
                &ReadOptions {
                    columns: CsvColumns {
                        device_column: "series".into(),
                        time_column: "t_ms".into(),
                    },
                    channels: config.input.channels.clone(),
                    sample_rate_hz: config.input.sample_rate_hz,
                    ..Default::default()
                },
            )
            .expect("shipped training data");
            let set = recording.window_set(window_spec(&config));
            let mut model = config.model.clone();
            model.variant = accelwatch::config::Variant::Basic;
            let arch = Architecture {
                window: config.window.size,
                channels: config.input.channels.len(),
                model,
            };
            let input = InputSpec::from_config(&config);
            let mut settings = config.training.clone();
            settings.epochs = 20;
            while !stop.load(Ordering::SeqCst) {
                train::train(&arch, &settings, &input, &set, &mut |_| {}).expect("training");
                trainings.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // Let the trainer get going.
    std::thread::sleep(Duration::from_millis(200));
    let busy = measure(&config, &model, run_for);
    stop.store(true, Ordering::SeqCst);
    trainer.join().expect("trainer thread");

    println!(
        "live scoring, batch 1, 8 devices, {} cores (std::thread::available_parallelism)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| condition | windows | p50 µs | p99 µs | max µs | samples/s |");
    println!("|---|---|---|---|---|---|");
    for (name, figures) in [("alone", &quiet), ("while training (nice 10)", &busy)] {
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.0} |",
            figures.windows, figures.p50, figures.p99, figures.max, figures.samples_per_s
        );
    }
    println!(
        "trainings of 20 epochs completed meanwhile: {}",
        trainings.load(Ordering::SeqCst)
    );
}

struct Figures {
    windows: usize,
    p50: f64,
    p99: f64,
    max: f64,
    samples_per_s: f64,
}

fn measure(config: &Config, model: &LoadedModel, run_for: Duration) -> Figures {
    let mut ingest = IngestStage::new(config, Metrics::new());
    let mut score = ScoreStage::new(model.clone(), config, Metrics::new()).quiet();
    let mut latencies = Vec::new();
    let mut windows = Vec::new();
    let started = Instant::now();
    let mut samples = 0u64;
    while started.elapsed() < run_for {
        let device = Arc::<str>::from(format!("device-{}", samples % 8));
        let t = (samples / 8) * 20;
        let frame = Frame {
            device,
            payload: format!("{t},{:.4},0.2,0.98", (samples as f32 * 0.1).sin()).into_bytes(),
            format: Format::Csv,
            received_at_ms: 0.0,
            restart: false,
            topic: None,
        };
        let arrived = Instant::now();
        ingest.ingest(&frame, &mut windows);
        if !windows.is_empty() {
            std::hint::black_box(score.score(&windows).expect("scores"));
            latencies.push(arrived.elapsed().as_secs_f64() * 1e6);
            windows.clear();
        }
        samples += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Figures {
        windows: latencies.len(),
        p50: at(0.5),
        p99: at(0.99),
        max: *latencies.last().expect("windows were scored"),
        samples_per_s: samples as f64 / elapsed,
    }
}
