//! What the status page costs the pipeline: the live sink's work per batch
//! of windows (on the sink thread, the board's lock taken once per batch),
//! and building `/api/state` for a full board (on an HTTP worker).
//! Run with `cargo bench --bench status`; figures in docs/measured.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use accelwatch::record::{ChannelErrors, Output, WindowRecord};
use accelwatch::sink::live::LiveSink;
use accelwatch::sink::Sink;
use accelwatch::telemetry::live::{LiveState, HISTORY};
use accelwatch::telemetry::state::StatusState;
use accelwatch::telemetry::Metrics;

const DEVICES: usize = 1024;
const BATCH: usize = 32;

fn window(device: &Arc<str>, seq: u64) -> Output {
    Output::Window(WindowRecord {
        kind: "window",
        device: device.clone(),
        seq,
        t_start: seq as f64 * 1280.0,
        t_end: seq as f64 * 1280.0 + 2540.0,
        score: 0.05 + (seq % 7) as f32 * 0.01,
        threshold: 0.3,
        anomaly: false,
        over_threshold: false,
        latent: vec![0.1; 8],
        channel_error: ChannelErrors {
            names: Arc::from(vec!["ax".to_string(), "ay".into(), "az".into()]),
            values: vec![0.01; 3],
        },
        model: Arc::from("basic-0123456789ab"),
        arrival_ms: seq as f64 * 1280.0 + 2540.0,
    })
}

fn status(c: &mut Criterion) {
    let devices: Vec<Arc<str>> = (0..DEVICES)
        .map(|i| Arc::from(format!("watch-{i}")))
        .collect();
    let live = LiveState::new(DEVICES, HISTORY);
    let mut sink = LiveSink::new(live.clone());
    // A full board: every device with a full history.
    for seq in 0..HISTORY as u64 {
        for device in &devices {
            sink.write(&window(device, seq)).unwrap();
        }
        sink.flush().unwrap();
    }
    let batches: Vec<Vec<Output>> = (0..DEVICES / BATCH)
        .map(|b| {
            (0..BATCH)
                .map(|i| window(&devices[b * BATCH + i], HISTORY as u64))
                .collect()
        })
        .collect();

    let mut group = c.benchmark_group("status");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut next = 0;
    group.bench_function("live_sink_batch_32", |b| {
        b.iter(|| {
            for output in &batches[next % batches.len()] {
                sink.write(black_box(output)).unwrap();
            }
            sink.flush().unwrap();
            next += 1;
        })
    });
    group.throughput(Throughput::Elements(DEVICES as u64));
    let state = StatusState::new(Metrics::new(), live);
    group.bench_function("api_state_1024_devices", |b| {
        b.iter(|| {
            serde_json::to_vec(&black_box(state.document()))
                .unwrap()
                .len()
        })
    });
    group.finish();
}

criterion_group!(benches, status);
criterion_main!(benches);
