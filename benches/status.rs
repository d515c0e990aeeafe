//! What the status page costs the pipeline: the live sink's work per batch
//! of windows (on the sink thread, the board's lock taken once per batch),
//! and building `/api/state` for a full board (on an HTTP worker). And what
//! alert evidence costs: the scorer's batch of 32 with evidence off, on
//! (no raise: the usual case), and on with every window raising (ever new
//! devices over a tiny threshold: the worst case, each copying its window
//! and reconstruction); the evidence sink per batch (sink thread, no lock);
//! drawing one evidence plot (HTTP worker).
//! Run with `cargo bench --bench status`; figures in docs/measured.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use accelwatch::detect::DetectorConfig;
use accelwatch::evidence::store::{EvidenceLimits, EvidenceStore};
use accelwatch::evidence::writer::EvidenceSink;
use accelwatch::evidence::EvidenceIds;
use accelwatch::model::LoadedModel;
use accelwatch::pipeline::ScoreStage;
use accelwatch::record::{ChannelErrors, Output, WindowRecord};
use accelwatch::sink::live::LiveSink;
use accelwatch::sink::Sink;
use accelwatch::telemetry::live::{LiveState, HISTORY};
use accelwatch::telemetry::state::{StateQuery, StatusState};
use accelwatch::telemetry::Metrics;
use accelwatch::window::Window;

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
        latent: std::iter::repeat_n(0.1, 8).collect(),
        channel_error: ChannelErrors {
            names: Arc::from(vec!["ax".to_string(), "ay".into(), "az".into()]),
            values: std::iter::repeat_n(0.01, 3).collect(),
        },
        model: Arc::from("basic-0123456789ab"),
        activity: None,
        confidence: None,
        timeline: accelwatch::window::Timeline::arrived(seq as f64 * 1280.0 + 2540.0),
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
    // Every row, as one page (more than a client may ask for).
    let all = StateQuery {
        limit: DEVICES,
        ..StateQuery::default()
    };
    group.bench_function("api_state_1024_devices", |b| {
        b.iter(|| {
            serde_json::to_vec(&black_box(state.document(all)))
                .unwrap()
                .len()
        })
    });
    group.finish();
}

fn windows(devices: &[Arc<str>], seq: u64) -> Vec<Window> {
    devices
        .iter()
        .enumerate()
        .map(|(d, device)| Window {
            device: device.clone(),
            seq,
            t_start: 0.0,
            t_end: 2540.0,
            data: (0..128 * 3)
                .map(|i| ((i + d) as f32 * 0.05).sin() * 0.5 + if i % 3 == 2 { -0.6 } else { 0.2 })
                .collect(),
            scope: None,
            timeline: Default::default(),
        })
        .collect()
}

fn evidence(c: &mut Criterion) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/demo.onnx");
    let model = || LoadedModel::load(std::path::Path::new(path)).expect("the shipped model");
    let devices: Vec<Arc<str>> = (0..BATCH)
        .map(|i| Arc::from(format!("watch-{i}")))
        .collect();
    let batch = windows(&devices, 0);
    let mut group = c.benchmark_group("evidence");
    group.throughput(Throughput::Elements(BATCH as u64));
    let ids_dir = tempfile::tempdir().expect("a temporary directory");
    let ids = || {
        EvidenceIds::open(ids_dir.path(), 0, accelwatch::clock::Clock::system())
            .expect("an id counter")
    };
    for keep in [false, true] {
        let mut stage = ScoreStage::new(model(), &DetectorConfig::default(), 1024, Metrics::new())
            .quiet()
            .with_evidence(keep.then(ids));
        let name = if keep {
            "score_batch_32_evidence_on"
        } else {
            "score_batch_32_evidence_off"
        };
        group.bench_function(name, |b| {
            b.iter(|| stage.score(black_box(&batch)).unwrap().len())
        });
    }
    // Every window a new device over a tiny threshold, raised at once.
    let raising = DetectorConfig {
        raise_after: 1,
        threshold: Some(1e-12),
        ..DetectorConfig::default()
    };
    let mut stage = ScoreStage::new(model(), &raising, 1024, Metrics::new())
        .quiet()
        .with_evidence(Some(ids()));
    let mut round = 0u64;
    let mut raised = Vec::new();
    group.bench_function("score_batch_32_every_window_raises", |b| {
        b.iter_batched(
            || {
                round += 1;
                let fresh: Vec<Arc<str>> = (0..BATCH)
                    .map(|i| Arc::from(format!("new-{round}-{i}")))
                    .collect();
                windows(&fresh, 0)
            },
            |batch| {
                let out = stage.score(&batch).unwrap();
                let alerts = out.iter().filter(|o| matches!(o, Output::Alert(_))).count();
                assert_eq!(alerts, BATCH, "every window raised");
                raised = out;
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let evidence = raised
        .iter()
        .find_map(|o| match o {
            Output::Alert(a) => a.detail.clone(),
            _ => None,
        })
        .expect("an evidence");
    let dir = tempfile::tempdir().unwrap();
    let store = EvidenceStore::open(
        dir.path(),
        EvidenceLimits {
            max_count: 10,
            max_bytes: 1 << 30,
        },
    )
    .unwrap();
    let mut sink = EvidenceSink::start(store, 1024, Metrics::new()).unwrap();
    let records: Vec<Output> = (0..BATCH as u64)
        .map(|i| window(&devices[i as usize], i))
        .collect();
    group.bench_function("evidence_sink_batch_32", |b| {
        b.iter(|| {
            for output in &records {
                sink.write(black_box(output)).unwrap();
            }
            sink.flush().unwrap();
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("evidence_plot_svg", |b| {
        b.iter(|| accelwatch::eval::plots_evidence::evidence_plot(black_box(&evidence)).len())
    });
    group.finish();
}

criterion_group!(benches, status, evidence);
criterion_main!(benches);
