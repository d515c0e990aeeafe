//! The MQTT input and output against a real mosquitto broker, started by
//! each test on a free 127.0.0.1 port: samples published by a test client
//! are windowed and scored by the daemon, and its features, alerts and
//! status are received by a test subscriber.
//!
//! [`io`]: plain input and output flows; [`security`]: passwords and TLS;
//! [`shared`]: shared subscriptions; [`online`]: models trained online;
//! [`outage`]: alerts across a broker outage and a daemon restart.

mod io;
mod online;
mod outage;
mod security;
mod shared;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use accelwatch::config::{Config, InputKind, MqttOutputConfig};
use rumqttc::AsyncClient;
use serde_json::Value;

use crate::common::mosquitto::{publish, Mosquitto, Received};
use crate::common::*;

/// The longest an MQTT test may take.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(150);

/// One model for every test of this binary.
pub fn model_file() -> &'static Path {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &MODEL
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("model.onnx");
            std::fs::write(&path, quick_model(&["ax", "ay", "az"], 40, 3).onnx).unwrap();
            (dir, path)
        })
        .1
}

pub fn mqtt_config(broker: &Mosquitto) -> Config {
    let mut config = Config::default();
    config.model.path = model_file().to_path_buf();
    config.input.kind = InputKind::Mqtt;
    config.input.mqtt.url = broker.url();
    config.input.mqtt.client_id = "accelwatch-test".into();
    config.input.mqtt.qos = 1;
    config.input.mqtt.reconnect_min_ms = 50;
    config.input.mqtt.reconnect_max_ms = 400;
    config.output.jsonl = "off".into();
    config.output.mqtt = Some(MqttOutputConfig::default());
    config.telemetry.listen = "127.0.0.1:0".parse().unwrap();
    config
}

pub type Rows = Vec<(f64, [f64; 3])>;

/// demo.csv's rows per device: (t_ms, [ax, ay, az]).
pub fn demo_rows() -> BTreeMap<String, Rows> {
    let text = std::fs::read_to_string(demo_csv()).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (d, t, ax, ay, az) = (col("device"), col("t_ms"), col("ax"), col("ay"), col("az"));
    let mut rows: BTreeMap<String, Rows> = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let n = |i: usize| f[i].parse::<f64>().unwrap();
        rows.entry(f[d].to_string())
            .or_default()
            .push((n(t), [n(ax), n(ay), n(az)]));
    }
    rows
}

/// A JSON array of samples.
pub fn json_samples(rows: &[(f64, [f64; 3])]) -> Vec<u8> {
    let samples: Vec<Value> = rows
        .iter()
        .map(|(t, v)| serde_json::json!({"t": t, "ax": v[0], "ay": v[1], "az": v[2]}))
        .collect();
    serde_json::to_vec(&samples).unwrap()
}

/// Panics naming every problem `config` has.
pub fn assert_valid(config: &Config) {
    let problems = config.validate_settings();
    assert!(problems.is_empty(), "{problems:?}");
}

/// A daemon config that trains its own models in `models`, with the
/// quickest variant to train.
pub fn online_config(broker: &Mosquitto, models: &Path) -> Config {
    let mut config = mqtt_config(broker);
    config.model.dir = Some(models.to_path_buf());
    config.model.variant = accelwatch::config::Variant::Basic;
    config.training.mode = accelwatch::config::TrainingMode::Online;
    config.telemetry.control_token_file = Some(crate::common::http::control_token_file());
    config
}

/// Rows of a CSV with columns `key`, `t_ms`, `ax`, `ay`, `az`, grouped by
/// `key` (and, if given, only where `filter` = value).
pub fn csv_rows(path: &Path, key: &str, filter: Option<(&str, &str)>) -> BTreeMap<String, Rows> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (k, t, ax, ay, az) = (col(key), col("t_ms"), col("ax"), col("ay"), col("az"));
    let filter = filter.map(|(name, value)| (col(name), value));
    let mut rows: BTreeMap<String, Rows> = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if filter.is_some_and(|(i, value)| f[i] != value) {
            continue;
        }
        let n = |i: usize| f[i].parse::<f64>().unwrap();
        rows.entry(f[k].to_string())
            .or_default()
            .push((n(t), [n(ax), n(ay), n(az)]));
    }
    rows
}

/// Publishes every device's rows in batches of 32 samples, the devices
/// interleaved as live sensors would be.
pub async fn stream(publisher: &AsyncClient, devices: &[(String, Rows)]) {
    let longest = devices.iter().map(|(_, r)| r.len()).max().unwrap_or(0);
    for start in (0..longest).step_by(32) {
        for (device, rows) in devices {
            if start < rows.len() {
                let end = (start + 32).min(rows.len());
                let topic = format!("sensors/{device}/accel");
                publish(publisher, &topic, json_samples(&rows[start..end])).await;
            }
        }
    }
}

/// `rows` one after the other, each shifted to start 20 ms after the
/// previous one ends (one device recording several sessions).
pub fn back_to_back<'a>(parts: impl IntoIterator<Item = &'a Rows>, start_ms: f64) -> Rows {
    let mut joined = Rows::new();
    let mut next = start_ms;
    for rows in parts {
        let first = rows.first().map_or(0.0, |r| r.0);
        joined.extend(rows.iter().map(|(t, v)| (t - first + next, *v)));
        next = joined.last().map_or(next, |r| r.0 + 20.0);
    }
    joined
}

/// `device`'s feature records of windows ending from `from_ms` on.
pub fn features_from<'r>(got: &'r Received, device: &str, from_ms: f64) -> Vec<&'r Value> {
    got.on(&format!("accelwatch/{device}/features"))
        .into_iter()
        .filter(|w| w["t_end"].as_f64().unwrap() >= from_ms)
        .collect()
}

/// The share of `device`'s feature records from `from_ms` on over the
/// threshold.
pub fn over_share(got: &Received, device: &str, from_ms: f64) -> f64 {
    let records = features_from(got, device, from_ms);
    let over = records
        .iter()
        .filter(|r| r["over_threshold"] == true)
        .count();
    over as f64 / records.len().max(1) as f64
}
