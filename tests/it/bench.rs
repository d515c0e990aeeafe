//! A short pass of the end-to-end benchmark (scripts/e2e_bench.sh): the
//! load generator of examples/loadgen.rs (compiled in here, so the same
//! code) publishes through a real mosquitto to a daemon serving the shipped
//! model, in both payload formats and with JSON numbers of 17 digits; every
//! sample is windowed and scored, and every published window is timed once
//! in `accelwatch_window_latency_seconds`, read over HTTP. How fast is for
//! the benchmarks (scripts/e2e_bench.py); here, that each latency is one
//! the run could have had.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

use accelwatch::config::{Config, InputKind, MqttOutputConfig};
use accelwatch::decode::Format;

use super::mqtt::TEST_TIMEOUT;
use crate::common::mosquitto::Mosquitto;
use crate::common::*;

#[allow(dead_code)]
#[path = "../../examples/loadgen.rs"]
mod loadgen;

#[allow(dead_code)]
#[path = "../../examples/mqtt_count.rs"]
mod mqtt_count;

/// The counting consumer of the benchmark's `count-binary-100` run (what
/// the broker alone passes) counts every message and payload byte the
/// generator sent, and nothing else; the generator's devices spread over
/// three connections, as the benchmark spreads them (each connection's
/// client id its own, or the broker would close all but one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counting_consumer_counts_what_the_generator_sent() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Mosquitto::start();
        let port = broker.port.to_string();
        let counter = mqtt_count::Args::parse_from(["mqtt_count", "--port", &port]);
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let counting = tokio::spawn(async move {
            mqtt_count::count(&counter, move || {
                let _ = subscribed_tx.send(());
            })
            .await
        });
        subscribed.await.expect("the counter subscribed");
        let args = loadgen::Args::parse_from([
            "loadgen",
            "--port",
            &port,
            "--format",
            "binary",
            "--devices",
            "10",
            "--batch",
            "100",
            "--rate",
            "2000",
            "--messages",
            "200",
            "--duration",
            "30",
            "--qos",
            "1",
            "--connections",
            "3",
        ]);
        let sent = loadgen::run(&args).await.expect("the generator runs");
        assert_eq!(sent.messages, 200, "{sent:?}");
        let counted = counting.await.unwrap().expect("the counter ran");
        assert_eq!(
            (counted.messages, counted.bytes),
            (sent.messages, sent.bytes),
            "{counted:?} against {sent:?}"
        );
        assert!(
            counted.seconds > 0.0 && counted.seconds < 30.0,
            "{counted:?}"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_json_load_is_windowed_scored_and_timed() {
    smoke("json", None).await;
}

/// Numbers as Python's json.dumps writes them: every one decoded (none
/// refused), whichever path reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_json_load_with_17_digit_numbers_is_windowed_scored_and_timed() {
    smoke("json", Some("17")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_binary_load_is_windowed_scored_and_timed() {
    smoke("binary", None).await;
}

/// 20 devices, 20 batches of 50 samples each, at 500 samples/s per device
/// (2 s), then checks the daemon's metrics.
async fn smoke(format: &str, digits: Option<&str>) {
    let started = Instant::now();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Mosquitto::start();
        let mut config = Config::default();
        config.model.path = repo().join("models/demo.onnx");
        config.input.kind = InputKind::Mqtt;
        config.input.mqtt.url = broker.url();
        config.input.mqtt.format = match format {
            "json" => Format::Json,
            _ => Format::Binary,
        };
        config.input.binary_i16_scale = 1.0 / 4096.0;
        // QoS 1 both ways, so that the counts below are exact.
        config.input.mqtt.qos = 1;
        config.output.jsonl = "off".into();
        config.output.mqtt = Some(MqttOutputConfig::default());
        config.telemetry.listen = "127.0.0.1:0".parse().unwrap();
        let (daemon, _) = start_connected(config).await;
        let addr = daemon.telemetry_addr().unwrap();
        wait_until(
            std::time::Duration::from_secs(30),
            "/readyz 200",
            || async move { get(addr, "/readyz").await.0 == 200 },
        )
        .await;

        let (devices, batches, batch) = (20usize, 20usize, 50usize);
        let port = broker.port.to_string();
        let messages = (devices * batches).to_string();
        let mut argv = vec![
            "loadgen",
            "--port",
            &port,
            "--format",
            format,
            "--devices",
            "20",
            "--batch",
            "50",
            "--rate",
            "500",
            "--messages",
            &messages,
            "--duration",
            "30",
            "--qos",
            "1",
        ];
        if let Some(digits) = digits {
            argv.extend(["--digits", digits]);
        }
        let args = loadgen::Args::parse_from(argv);
        assert_eq!(args.data, None::<PathBuf>, "the shipped recording");
        let sent = loadgen::run(&args).await.expect("the generator runs");
        assert_eq!(sent.messages as usize, devices * batches, "{sent:?}");
        assert!(sent.seconds >= 1.5, "paced at 500 samples/s: {sent:?}");

        let samples = (devices * batches * batch) as f64;
        wait_metric(addr, "accelwatch_samples_total", samples).await;
        let windows = (devices * windows_of(batches * batch)) as f64;
        wait_metric(addr, "accelwatch_windows_total", windows).await;
        wait_metric(addr, "accelwatch_window_latency_seconds_count", windows).await;
        let text = scrape(addr).await;
        assert_eq!(
            metric_sum(&text, "accelwatch_decode_errors_total", &[]),
            0.0,
            "{text}"
        );
        // Each window timed once, not twice, and each latency one this run
        // could have had: more than nothing, and no longer than the run so
        // far (a wrong clock, such as the device's timestamps, or a
        // latency counted from the daemon's start, would break the bound).
        let count = metric(&text, "accelwatch_window_latency_seconds_count").unwrap();
        assert_eq!(count, windows, "{text}");
        let sum = metric(&text, "accelwatch_window_latency_seconds_sum").unwrap();
        let run = started.elapsed().as_secs_f64();
        assert!(
            sum > 0.0 && sum <= count * run,
            "{count} latencies summing to {sum} s within a run of {run:.3} s"
        );
        // Its five parts: each window timed once in every stage, and the
        // parts add up to the whole (each a difference of the same stamps,
        // so only float rounding and the zero floor stand between them).
        let mut parts = 0.0;
        for stage in ["ingest", "to_scorer", "scoring", "to_sink", "sink"] {
            let label = format!("stage=\"{stage}\"");
            let of = |name: &str| metric_sum(&text, name, &[label.as_str()]);
            assert_eq!(
                of("accelwatch_window_stage_seconds_count"),
                windows,
                "{stage}: {text}"
            );
            parts += of("accelwatch_window_stage_seconds_sum");
        }
        assert!(
            (parts - sum).abs() <= 1e-6 * count + 1e-9 * sum,
            "the stages sum to {parts} s, the latency to {sum} s"
        );
        stop(daemon).await;
    })
    .await
    .expect("test timed out");
}
