//! Throughput of each stage: decoding, windowing, tract inference per
//! window at batch 1 and 32, and ingest-to-score for recorded data.
//! Run with `cargo bench`; figures are quoted in the README.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use accelwatch::config::Config;
use accelwatch::decode::{BinaryHeader, BinaryType, Decoder, Format, Samples};
use accelwatch::model::LoadedModel;
use accelwatch::pipeline::{IngestStage, ScoreStage};
use accelwatch::source::frame::Frame;
use accelwatch::telemetry::Metrics;
use accelwatch::window::{WindowSpec, Windower};

fn model() -> LoadedModel {
    LoadedModel::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo.onnx"))
        .expect("shipped model")
}

fn decoding(c: &mut Criterion) {
    let decoder = Decoder::new(vec!["ax".into(), "ay".into(), "az".into()], 1 << 20, 4096);
    let mut out = Samples::default();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    let csv = b"1234.0,0.957226,0.182651,-0.620297";
    group.bench_function("csv_line", |b| {
        b.iter(|| {
            decoder
                .decode(Format::Csv, black_box(csv), &mut out)
                .unwrap()
        })
    });
    let json = br#"{"t": 1234.0, "ax": 0.957226, "ay": 0.182651, "az": -0.620297}"#;
    group.bench_function("json_sample", |b| {
        b.iter(|| {
            decoder
                .decode(Format::Json, black_box(json), &mut out)
                .unwrap()
        })
    });
    let batch = format!(
        r#"{{"t0": 1000, "interval_ms": 20, "values": [{}]}}"#,
        vec!["[0.957226,0.182651,-0.620297]"; 50].join(",")
    );
    group.throughput(Throughput::Elements(50));
    group.bench_function("json_batch_50", |b| {
        b.iter(|| {
            decoder
                .decode(Format::Json, black_box(batch.as_bytes()), &mut out)
                .unwrap()
        })
    });
    // The same 150 values twice: with 6 decimals (`-1.083608`), and as
    // Python's json.dumps writes them, 17 significant digits
    // (`-1.0836080312728882`). Values that vary, so the digit loops see
    // varied lengths; the fixed row above repeats one row.
    let values = long_values(150);
    let rows = |print: fn(f64) -> String| {
        let rows: Vec<String> = values
            .chunks(3)
            .map(|r| format!("[{}, {}, {}]", print(r[0]), print(r[1]), print(r[2])))
            .collect();
        format!(
            r#"{{"t0": 1764720000000.0, "interval_ms": 20.0, "values": [{}]}}"#,
            rows.join(", ")
        )
    };
    // A binary int16 batch of 100 samples, as the end-to-end binary run sends.
    let mut binary = BinaryHeader {
        value_type: BinaryType::I16,
        channels: 3,
        samples: 100,
        t0_ms: 1_764_720_000_000.0,
        interval_ms: 20.0,
    }
    .to_bytes()
    .to_vec();
    for i in 0..300 {
        binary.extend_from_slice(&(((i as f32 * 0.37).sin() * 4096.0) as i16).to_le_bytes());
    }
    group.bench_function("binary_int16_100", |b| {
        b.iter(|| {
            decoder
                .decode(Format::Binary, black_box(&binary), &mut out)
                .unwrap()
        })
    });
    for (name, batch) in [
        ("json_batch_50_6_decimals", rows(|v| format!("{v:.6}"))),
        ("json_batch_50_17_digits", rows(|v| format!("{v:?}"))),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                decoder
                    .decode(Format::Json, black_box(batch.as_bytes()), &mut out)
                    .unwrap()
            })
        });
    }
    group.finish();
}

/// `n` accelerometer-like values whose shortest round trip (Rust's `{:?}`,
/// Python's repr) has 17 significant digits.
fn long_values(n: usize) -> Vec<f64> {
    (0..)
        .map(|i| 1.7 * (f64::from(i) * 0.37).sin())
        .filter(|v| {
            let text = format!("{v:e}");
            let mantissa = text.split('e').next().unwrap();
            mantissa.chars().filter(char::is_ascii_digit).count() == 17
        })
        .take(n)
        .collect()
}

fn windowing(c: &mut Criterion) {
    let spec = WindowSpec {
        size: 128,
        hop: 64,
        channels: 3,
        max_gap_ms: 1000.0,
        max_devices: 1024,
        interval_ms: 20.0,
    };
    let mut group = c.benchmark_group("window");
    group.throughput(Throughput::Elements(6400));
    group.bench_function("push_6400_samples_64_devices", |b| {
        let devices: Vec<String> = (0..64).map(|d| format!("device-{d}")).collect();
        b.iter_batched(
            || Windower::new(spec),
            |mut w| {
                for i in 0..100 {
                    for d in &devices {
                        black_box(
                            w.push(d, Some(i as f64 * 20.0), 0.0, &[0.1, 0.2, 0.3])
                                .unwrap(),
                        );
                    }
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
    // The binary path's shape: devices sending payloads of 100 samples,
    // taken a payload at a time (four each: the first window is due at
    // 128, then every 64).
    let mut group = c.benchmark_group("window");
    group.throughput(Throughput::Elements(64 * 400));
    group.bench_function("push_many_25600_samples_64_devices_payloads_of_100", |b| {
        let devices: Vec<String> = (0..64).map(|d| format!("device-{d}")).collect();
        let values: Vec<f32> = (0..300).map(|i| (i as f32 * 0.37).sin()).collect();
        let times: Vec<Vec<Option<f64>>> = (0..4)
            .map(|p| {
                (0..100)
                    .map(|i| Some((p * 100 + i) as f64 * 20.0))
                    .collect()
            })
            .collect();
        b.iter_batched(
            || Windower::new(spec),
            |mut w| {
                let mut windows = 0usize;
                for times in &times {
                    for d in &devices {
                        w.push_many(d, times, 0.0, &values, |_, pushed| {
                            windows += usize::from(pushed.unwrap().window.is_some());
                        });
                    }
                }
                assert_eq!(windows, 64 * 5);
                black_box(windows)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn inference(c: &mut Criterion) {
    let model = model();
    let features = model.meta.features();
    let mut group = c.benchmark_group("tract_basic_3ch");
    for batch in [1usize, 8, 16, 32] {
        let input: Vec<f32> = (0..batch * features)
            .map(|i| ((i % 13) as f32 - 6.0) / 6.0)
            .collect();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch_{batch}"), |b| {
            b.iter(|| model.runtime.run(black_box(&input), batch).unwrap())
        });
    }
    group.finish();
}

/// A fresh ingest stage and score stage serving the shipped model.
fn stages(config: &Config) -> (IngestStage, ScoreStage) {
    (
        IngestStage::new(
            &config.input,
            &config.window,
            &config.training,
            Metrics::new(),
        ),
        ScoreStage::new(
            model(),
            &config.detector,
            config.window.max_devices,
            Metrics::new(),
        )
        .quiet(),
    )
}

fn end_to_end(c: &mut Criterion) {
    let config = Config::default();
    // 3200 samples of 8 devices: 8 * 49 windows.
    let frames: Vec<Frame> = (0..3200)
        .map(|i| Frame {
            device: Arc::from(format!("device-{}", i % 8)),
            payload: format!(
                "{},{:.4},{:.4},{:.4}",
                (i / 8) * 20,
                (i as f32 * 0.1).sin(),
                0.2,
                0.98
            )
            .into_bytes(),
            format: Format::Csv,
            received_at_ms: 0.0,
            restart: false,
            topic: None,
        })
        .collect();
    let mut group = c.benchmark_group("ingest_and_score");
    group.throughput(Throughput::Elements(frames.len() as u64));
    group.sample_size(20);
    group.bench_function("3200_csv_samples_8_devices", |b| {
        b.iter_batched(
            || stages(&config),
            |(mut ingest, mut score)| {
                let mut windows = Vec::new();
                for frame in &frames {
                    ingest.ingest(frame, &mut windows);
                    if windows.len() >= 32 {
                        black_box(score.score(&windows).unwrap());
                        windows.clear();
                    }
                }
                black_box(score.score(&windows).unwrap());
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// The end-to-end bench's binary run without the broker, the threads
/// and the sockets: 100 devices' AWB1 int16 payloads of 100 samples each,
/// decoded, windowed, scored 32 windows a call by the shipped model, and
/// each window's feature line written. What is left per sample of the
/// daemon's CPU besides this is I/O and hand-offs between threads.
fn binary_path(c: &mut Criterion) {
    let mut config = Config::default();
    config.input.binary_i16_scale = 1.0 / 4096.0;
    let (devices, payloads, batch) = (100usize, 6usize, 100usize);
    let frames: Vec<Frame> = (0..payloads)
        .flat_map(|p| (0..devices).map(move |d| (p, d)))
        .map(|(p, d)| {
            let header = BinaryHeader {
                value_type: BinaryType::I16,
                channels: 3,
                samples: batch as u32,
                t0_ms: (p * batch) as f64 * 20.0,
                interval_ms: 20.0,
            };
            let mut payload = header.to_bytes().to_vec();
            for i in 0..batch * 3 {
                let v = ((p * batch * 3 + i + d) as f32 * 0.37).sin() * 4096.0;
                payload.extend_from_slice(&(v as i16).to_le_bytes());
            }
            Frame {
                device: Arc::from(format!("dev-{d}")),
                payload,
                format: Format::Binary,
                received_at_ms: 0.0,
                restart: false,
                topic: None,
            }
        })
        .collect();
    let mut group = c.benchmark_group("binary_path");
    group.throughput(Throughput::Elements((devices * payloads * batch) as u64));
    group.sample_size(20);
    group.bench_function("60000_samples_100_devices_payloads_of_100", |b| {
        b.iter_batched(
            || stages(&config),
            |(mut ingest, mut score)| {
                let (mut windows, mut line) = (Vec::new(), Vec::with_capacity(1024));
                let mut publish = |windows: &mut Vec<_>| {
                    for output in score.score(windows).unwrap() {
                        line.clear();
                        output.write_json(&mut line).unwrap();
                        black_box(&line);
                    }
                    windows.clear();
                };
                for frame in &frames {
                    ingest.ingest(frame, &mut windows);
                    if windows.len() >= 32 {
                        publish(&mut windows);
                    }
                }
                publish(&mut windows);
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// One window's feature line: 16 latent values, 3 channel errors, as the
/// MQTT output writes it per window.
fn window_line(c: &mut Criterion) {
    use accelwatch::record::{ChannelErrors, WindowRecord};
    let record = WindowRecord {
        kind: "window",
        device: Arc::from("dev-17"),
        seq: 123_456,
        t_start: 1_764_616_800_123.5,
        t_end: 1_764_616_802_663.5,
        score: 0.051_993_888,
        threshold: 0.308_684_587_478_637_7,
        anomaly: false,
        over_threshold: false,
        latent: (0..16).map(|i| (i as f32 * 0.731).sin() * 1.7).collect(),
        channel_error: ChannelErrors {
            names: vec!["ax".to_string(), "ay".to_string(), "az".to_string()].into(),
            values: [0.021_734_5, 0.113_902_1, 0.047_118_3]
                .into_iter()
                .collect(),
        },
        model: Arc::from("demo-3ch-9c0ffee"),
        activity: None,
        confidence: None,
        timeline: Default::default(),
    };
    let mut group = c.benchmark_group("score");
    let x: Vec<f32> = (0..384).map(|i| (i as f32 * 0.37).sin()).collect();
    let r: Vec<f32> = (0..384).map(|i| (i as f32 * 0.41).cos()).collect();
    group.bench_function("channel_errors_128x3", |b| {
        b.iter(|| accelwatch::score::channel_errors(black_box(&x), black_box(&r), 3))
    });
    group.bench_function("mean_squared_error_384", |b| {
        b.iter(|| accelwatch::score::mean_squared_error(black_box(&x), black_box(&r)))
    });
    // Both of the above in one pass, as the scorer takes them.
    group.bench_function("window_errors_128x3", |b| {
        b.iter(|| accelwatch::score::window_errors(black_box(&x), black_box(&r), None, 3))
    });
    group.finish();
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(1));
    group.bench_function("window_line_16_latent_3_channels", |b| {
        let mut line = Vec::with_capacity(1024);
        b.iter(|| {
            line.clear();
            black_box(&record).write_json(&mut line).unwrap();
            black_box(line.len())
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    decoding,
    windowing,
    inference,
    end_to_end,
    binary_path,
    window_line
);
criterion_main!(benches);
