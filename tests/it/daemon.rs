//! The daemon end to end: a real replay of shipped recordings through
//! decoding, windowing, tract scoring and the sinks, with a real HTTP scrape
//! of /metrics, and a clean drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use accelwatch::config::Config;
use accelwatch::daemon::error::DaemonError;
use accelwatch::daemon::Daemon;
use accelwatch::decode::Format;
use accelwatch::pipeline::IngestStage;
use accelwatch::source::frame::Frame;
use accelwatch::telemetry::Metrics;

fn config_with_model(dir: &std::path::Path) -> Config {
    let trained = quick_model(&["ax", "ay", "az"], 40, 3);
    let model = dir.join("model.onnx");
    std::fs::write(&model, &trained.onnx).unwrap();
    let mut config = Config::default();
    config.model.path = model;
    config.input.replay.path = demo_csv();
    config.input.replay.speed = 0.0;
    config.output.jsonl = dir.join("out.jsonl").display().to_string();
    config.telemetry.listen = "127.0.0.1:0".parse().unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    config
}

/// Windows per device in the shipped demo file: floor((n - 128) / 64) + 1.
fn expected_windows() -> usize {
    let text = std::fs::read_to_string(demo_csv()).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for line in text.lines().skip(1) {
        *counts
            .entry(line.split(',').next().unwrap().to_string())
            .or_insert(0usize) += 1;
    }
    assert_eq!(counts.len(), 2, "two devices in demo.csv");
    counts.values().map(|n| (n - 128) / 64 + 1).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_to_the_end_scores_every_window_and_drains() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_model(dir.path());
    let collected = Collect::default();
    let daemon = Daemon::start(config, vec![Box::new(collected.clone())])
        .await
        .unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(60), daemon.wait())
        .await
        .unwrap()
        .unwrap();
    let expected = expected_windows();
    assert_eq!(summary.windows as usize, expected);
    assert_eq!(summary.frames, 17_837, "one frame per row of demo.csv");

    // The JSON lines file holds the same windows, complete and parseable.
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let windows: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "window").collect();
    assert_eq!(windows.len(), expected);
    let first = windows[0];
    for key in [
        "device",
        "seq",
        "t_start",
        "t_end",
        "score",
        "threshold",
        "anomaly",
        "latent",
        "channel_error",
        "model",
    ] {
        assert!(first.get(key).is_some(), "window line has {key}: {first}");
    }
    assert_eq!(first["latent"].as_array().unwrap().len(), 8);
    let errors = first["channel_error"].as_object().unwrap();
    assert_eq!(errors.keys().collect::<Vec<_>>(), vec!["ax", "ay", "az"]);
    assert!(
        (first["t_end"].as_f64().unwrap() - first["t_start"].as_f64().unwrap() - 127.0 * 20.0)
            .abs()
            < 1e-9
    );
    // Per device, sequence numbers run 0, 1, 2, ... without a hole.
    for device in ["watch-9", "watch-10"] {
        let seqs: Vec<u64> = windows
            .iter()
            .filter(|w| w["device"] == device)
            .map(|w| w["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "{device}");
    }
    // The held-out subjects do other exercises than PEN: alerts are raised.
    let raised = lines
        .iter()
        .filter(|l| l["type"] == "alert" && l["event"] == "raise")
        .count();
    assert!(raised >= 2, "expected alerts on ABD/FEL, got {raised}");
    assert_eq!(collected.len(), lines.len(), "every sink got every output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_over_http_and_shutdown_drains() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_with_model(dir.path());
    config.input.replay.repeat = true;
    let daemon = Daemon::start(config, Vec::new()).await.unwrap();
    let addr = daemon.telemetry_addr().expect("telemetry enabled");
    let (status, body) = get(addr, "/healthz").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"ok\""), "{body}");
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    // The looping replay goes past one pass (276 windows).
    wait_until(
        Duration::from_secs(20),
        "over 300 windows scored",
        || async { metric(&scrape(addr).await, "accelwatch_windows_total").unwrap_or(0.0) > 300.0 },
    )
    .await;
    let text = scrape(addr).await;
    assert!(metric(&text, "accelwatch_samples_total").unwrap() > 17_000.0);
    assert!(text.contains("accelwatch_model_info{id=\"basic-"));
    assert!(text.contains("accelwatch_inference_seconds_bucket"));
    assert!(text.contains("accelwatch_reconstruction_error_bucket"));
    assert!(text.contains("accelwatch_decode_errors_total{reason=\"syntax\"} 0"));

    daemon.shutdown();
    let summary = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .unwrap()
        .unwrap();
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let lines = text
        .lines()
        .filter(|l| l.contains("\"type\":\"window\""))
        .count();
    assert_eq!(
        lines as u64, summary.windows,
        "every scored window was written before exit"
    );
    assert!(text.ends_with('\n'), "no half-written line");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "telemetry stopped with the daemon"
    );
}

#[tokio::test]
async fn a_model_that_does_not_fit_the_config_never_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_with_model(dir.path());
    config.input.channels = channels(&["ax", "ay", "az", "wx", "wy", "wz"]);
    config.window.size = 64;
    config.window.hop = 32;
    let err = Daemon::start(config, Vec::new())
        .await
        .err()
        .expect("refused");
    assert_eq!(err.exit_code(), 78);
    let text = err.to_string();
    assert!(
        text.contains("input.channels") && text.contains("window.size"),
        "{text}"
    );
    assert!(matches!(err, DaemonError::Mismatch(ref p) if p.len() == 2));
}

#[test]
fn malformed_payloads_are_counted_and_the_stream_goes_on() {
    let mut config = Config::default();
    config.window.size = 4;
    config.window.hop = 2;
    let metrics = Metrics::new();
    let mut stage = IngestStage::new(
        &config.input,
        &config.window,
        &config.training,
        metrics.clone(),
    );
    let frame = |payload: &str, format| Frame {
        device: Arc::from("dev"),
        payload: payload.as_bytes().to_vec(),
        format,
        received_at_ms: 0.0,
        restart: false,
        topic: None,
    };
    let mut windows = Vec::new();
    let payloads = [
        ("0,1,2,3", Format::Csv),
        ("garbage", Format::Csv),
        (r#"{"t": 20, "ax": 1, "ay": 2, "az": 3}"#, Format::Json),
        (r#"{"t": 40, "ax": 1, "ay": 2"#, Format::Json),
        (
            r#"{"t0": 40, "interval_ms": 20, "values": [[1,2,3],[4,5,6]]}"#,
            Format::Json,
        ),
        ("60,9,9,9", Format::Csv),
        ("100,1,1,1\n120,2,2,2", Format::Csv),
    ];
    for (payload, format) in payloads {
        stage.ingest(&frame(payload, format), &mut windows);
    }
    assert_eq!(
        windows.len(),
        2,
        "samples at 0..=60 make one window, 80..=120 the next after hop 2"
    );
    let text = metrics.render();
    assert_eq!(metric(&text, "accelwatch_frames_total"), Some(7.0));
    assert!(
        text.contains("accelwatch_decode_errors_total{reason=\"field_count\"} 1"),
        "{text}"
    );
    assert!(text.contains("accelwatch_decode_errors_total{reason=\"syntax\"} 1"));
    assert!(
        text.contains("accelwatch_samples_dropped_total{reason=\"duplicate\"} 1"),
        "t=60 came twice"
    );
    assert_eq!(metric(&text, "accelwatch_samples_total"), Some(7.0));
}

/// A replay faster than the first online training: the end of the input
/// waits for the model, stores it, and scores every window that came while
/// it trained (before, the run ended with no model and no window scored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_ends_mid_training_waits_and_scores_what_came_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let mut config = Config::default();
    config.model.dir = Some(models.clone());
    config.model.variant = accelwatch::config::Variant::Basic;
    config.training.mode = accelwatch::config::TrainingMode::Online;
    config.training.min_windows = 100;
    config.training.epochs = 60;
    config.training.patience = 1000;
    config.input.replay.path = demo_csv();
    config.input.replay.speed = 0.0;
    config.output.jsonl = "off".into();
    config.telemetry.enabled = false;
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    let collected = Collect::default();
    let daemon = Daemon::start(config, vec![Box::new(collected.clone())])
        .await
        .unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(240), daemon.wait())
        .await
        .expect("the wait for the training is bounded")
        .unwrap();
    let outputs = collected.outputs();
    let trained_on = outputs
        .iter()
        .find_map(|o| match o {
            accelwatch::record::Output::Status(s) if s.state == "serving" => Some(s.collected),
            _ => None,
        })
        .expect("a model was trained and served before the daemon exited");
    assert!(trained_on >= 100, "calibrated on {trained_on} windows");
    let expected = expected_windows();
    assert_eq!(
        summary.windows as usize + trained_on,
        expected,
        "every window after the calibration was scored"
    );
    assert_eq!(
        collected.windows_of("watch-9").len() + collected.windows_of("watch-10").len(),
        summary.windows as usize
    );
    let stored = std::fs::read_dir(&models)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "onnx"))
        .count();
    assert_eq!(stored, 1, "the model is stored in model.dir");
}
