//! Sustained sample rate through the serial input and a real
//! pseudo-terminal: a writer pushes samples into the pty as fast as it
//! takes them, the serial source frames them and the ingest stage decodes
//! and windows them; the figure is samples windowed per second.
//!
//! `cargo bench --bench serial` prints the figures quoted in the README;
//! under `cargo test` it runs a short smoke pass.

use std::time::{Duration, Instant};

use accelwatch::config::{Config, InputKind, SerialFormat, SerialPortConfig};
use accelwatch::pipeline::IngestStage;
use accelwatch::source::serial::framing::encode_samples;
use accelwatch::source::Source;
use accelwatch::telemetry::Metrics;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

/// Samples per binary frame.
const PER_FRAME: usize = 32;

fn payload(format: SerialFormat, samples: usize) -> Vec<u8> {
    let value = |i: usize, c: usize| ((i * 7 + c * 13) % 2000) as i16 - 1000;
    match format {
        SerialFormat::Binary => (0..samples)
            .collect::<Vec<_>>()
            .chunks(PER_FRAME)
            .flat_map(|chunk| {
                let values: Vec<i16> = chunk
                    .iter()
                    .flat_map(|i| (0..3).map(move |c| value(*i, c)))
                    .collect();
                encode_samples(&values)
            })
            .collect(),
        _ => (0..samples)
            .map(|i| {
                format!(
                    "{:.4},{:.4},{:.4}\n",
                    value(i, 0) as f32 / 4096.0,
                    value(i, 1) as f32 / 4096.0,
                    value(i, 2) as f32 / 4096.0
                )
            })
            .collect::<String>()
            .into_bytes(),
    }
}

/// Samples per second from the first byte written to the last sample windowed.
async fn run(format: SerialFormat, samples: usize) -> (f64, f64) {
    let (mut master, _keeper, path) =
        accelwatch::source::serial::sim::pty_pair().expect("pty pair");
    let mut config = Config::default();
    config.input.kind = InputKind::Serial;
    let mut port = SerialPortConfig::new(path, "bench");
    port.format = format;
    config.input.serial.ports = vec![port];
    config.input.serial.max_frame_bytes = PER_FRAME * 6;
    let metrics = Metrics::new();
    let source = Source::open(&config.input, &metrics).unwrap();
    let (frames_tx, mut frames) = mpsc::channel(1024);
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(source.run(frames_tx, stopped));
    // Wait until the port is open before timing.
    while !metrics
        .render()
        .contains("accelwatch_serial_connected{port=\"0\"} 1")
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let bytes = payload(format, samples);
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        master.write_all(&bytes).await.unwrap();
        master
    });
    let mut stage = IngestStage::new(
        &config.input,
        &config.window,
        &config.training,
        metrics.clone(),
    );
    let mut windows = Vec::new();
    let mut taken = 0usize;
    let mut received = 0usize;
    let rendered = |m: &Metrics| {
        m.render()
            .lines()
            .find_map(|l| {
                l.strip_prefix("accelwatch_samples_total ")
                    .map(str::to_string)
            })
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as usize
    };
    while taken < samples {
        let frame = tokio::time::timeout(Duration::from_secs(30), frames.recv())
            .await
            .expect("frames keep coming")
            .expect("source alive");
        stage.ingest(&frame, &mut windows);
        windows.clear();
        received += 1;
        // Rendering the registry costs more than a frame: look now and then.
        if received.is_multiple_of(256) || frames.is_empty() {
            taken = rendered(&metrics);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let _master = writer.await.unwrap();
    let _ = stop.send(true);
    let _ = task.await;
    let bytes_per_sample = payload(format, PER_FRAME).len() as f64 / PER_FRAME as f64;
    (samples as f64 / seconds, bytes_per_sample)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let samples = if full { 2_000_000 } else { 20_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (name, format) in [
        ("csv lines", SerialFormat::Csv),
        ("binary frames", SerialFormat::Binary),
    ] {
        let (rate, bytes) = runtime.block_on(run(format, samples));
        println!(
            "serial {name:<14} {samples} samples of 3 channels through a pty: {:>9.0} samples/s \
             ({bytes:.1} bytes/sample, {:.1} MB/s)",
            rate,
            rate * bytes / 1e6
        );
    }
}
