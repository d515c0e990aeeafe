//! Live scoring latency with and without an online training running next
//! to it: every window of 8 simulated devices is ingested sample by sample
//! and scored alone (batch 1, the live case), and the time from the sample
//! that completes a window to its score is recorded. Then the same while
//! the daemon's training machinery (one niced thread, paced to
//! `training.cpu_share`) trains the basic autoencoder on the PEN recordings
//! over and over, at three shares; the training thread's measured share of
//! a core is printed with each. `cargo bench --bench online` prints
//! the figures; under `cargo test` it runs briefly as a smoke test.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use accelwatch::config::Config;
use accelwatch::decode::Format;
use accelwatch::model::train;
use accelwatch::model::LoadedModel;
use accelwatch::pipeline::{IngestStage, ScoreStage};
use accelwatch::recording::Recording;
use accelwatch::source::frame::Frame;
use accelwatch::telemetry::Metrics;

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let run_for = Duration::from_millis(if benchmarking { 10_000 } else { 300 });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = Config::default();
    let model = LoadedModel::load(&root.join("models/demo.onnx")).expect("shipped model");

    let quiet = measure(&config, &model, run_for);
    let data = root.join("data/watch/train-pen.csv");
    let busy: Vec<(f64, Figures, usize, f64)> = [1.0, config.training.cpu_share, 0.25]
        .into_iter()
        .map(|share| {
            let (figures, trainings, measured) =
                measure_while_training(&config, &model, run_for, &data, share);
            (share, figures, trainings, measured)
        })
        .collect();

    println!(
        "live scoring, batch 1, 8 devices, {} cores (std::thread::available_parallelism)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| condition | windows | p50 µs | p99 µs | max µs | samples/s | trainings (20 epochs) | \
         training thread's CPU share |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| alone | {} | {:.1} | {:.1} | {:.1} | {:.0} | – | – |",
        quiet.windows, quiet.p50, quiet.p99, quiet.max, quiet.samples_per_s
    );
    for (share, figures, trainings, measured) in &busy {
        println!(
            "| while training, training.cpu_share = {share} | {} | {:.1} | {:.1} | {:.1} | {:.0} \
             | {trainings} | {measured:.2} |",
            figures.windows, figures.p50, figures.p99, figures.max, figures.samples_per_s
        );
    }
}

/// Live scoring while the online trainer's machinery (one niced thread,
/// paced to `share` of a core) trains the basic autoencoder on the PEN
/// recordings over and over; also the trainings done and the training
/// thread's measured CPU share.
fn measure_while_training(
    config: &Config,
    model: &LoadedModel,
    run_for: Duration,
    data: &Path,
    share: f64,
) -> (Figures, usize, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let trainings = Arc::new(AtomicUsize::new(0));
    let trainer = {
        let (stop, trainings, config) = (stop.clone(), trainings.clone(), config.clone());
        let data = data.to_path_buf();
        std::thread::spawn(move || {
            let set = Recording::window_set_of(&data, "series", &config.input, &config.window)
                .expect("shipped training data");
            let arch = config
                .architecture()
                .with_variant(accelwatch::config::Variant::Basic);
            let input = config.input_spec();
            let mut settings = config.training.clone();
            settings.epochs = 20;
            accelwatch::online::background::in_background(share, |pacer| {
                while !stop.load(Ordering::SeqCst) {
                    train::train_paced(&arch, &settings, &input, &set, &mut |_| {}, &mut || {
                        pacer.pace()
                    })
                    .expect("training");
                    trainings.fetch_add(1, Ordering::SeqCst);
                }
                pacer.measured()
            })
            .expect("training pool")
        })
    };
    // Let the trainer get going.
    std::thread::sleep(Duration::from_millis(200));
    let figures = measure(config, model, run_for);
    stop.store(true, Ordering::SeqCst);
    let measured = trainer.join().expect("trainer thread");
    (figures, trainings.load(Ordering::SeqCst), measured)
}

struct Figures {
    windows: usize,
    p50: f64,
    p99: f64,
    max: f64,
    samples_per_s: f64,
}

fn measure(config: &Config, model: &LoadedModel, run_for: Duration) -> Figures {
    let mut ingest = IngestStage::new(
        &config.input,
        &config.window,
        &config.training,
        Metrics::new(),
    );
    let mut score = ScoreStage::new(
        model.clone(),
        &config.detector,
        config.window.max_devices,
        Metrics::new(),
    )
    .quiet();
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
