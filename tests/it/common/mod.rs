//! Helpers shared by the integration tests: paths and models here;
//! HTTP and metrics ([`http`]), child processes with deadlines
//! ([`process`]), a mosquitto broker and its clients ([`mosquitto`]), test
//! certificates ([`pki`]), a collecting sink ([`sink`]) and a headless
//! browser, run once ([`browser`]) or driven over DevTools ([`cdp`]).
#![allow(dead_code)]

pub mod browser;
pub mod cdp;
pub mod http;
pub mod mosquitto;
pub mod pki;
pub mod process;
pub mod sink;

pub use http::*;
pub use process::*;
pub use sink::Collect;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use accelwatch::config::{Config, TrainingConfig, Variant};
use accelwatch::model::train::{self, Trained, WindowSet};
use accelwatch::model::BackendOptions;
use accelwatch::recording::Recording;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Real recordings shipped in the repository (see data/watch/README.md).
pub fn train_csv() -> PathBuf {
    repo().join("data/watch/train-pen.csv")
}

pub fn demo_csv() -> PathBuf {
    repo().join("data/watch/demo.csv")
}

pub fn channels(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Windows of the shipped PEN recordings, one stream per recording.
pub fn pen_windows(config: &Config) -> WindowSet {
    Recording::window_set_of(&train_csv(), "series", &config.input, &config.window)
        .expect("shipped training data")
}

/// Trains a basic model on the shipped PEN data with few epochs.
pub fn quick_model(channel_names: &[&str], epochs: usize, seed: u64) -> Trained {
    let mut config = Config::default();
    config.input.channels = channels(channel_names);
    config.model.latent = 8;
    quick_variant(&config, Variant::Basic, epochs, seed)
}

/// Trains `variant` on the shipped PEN data with `config`'s settings.
pub fn quick_variant(config: &Config, variant: Variant, epochs: usize, seed: u64) -> Trained {
    let mut config = config.clone();
    config.model.variant = variant;
    let set = pen_windows(&config);
    let arch = config.architecture();
    let settings = TrainingConfig {
        epochs,
        seed,
        ..config.training.clone()
    };
    let input = config.input_spec();
    train::train(&arch, &settings, &input, &set, &mut |_| {}).expect("training")
}

pub fn accelwatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_accelwatch"))
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write test file");
}

pub const PIP_INSTALL: &str = "install: pip install numpy scikit-learn skl2onnx onnx onnxruntime";

/// The ONNX Runtime library for the `ort` backend: ORT_DYLIB_PATH, else the
/// one inside the onnxruntime wheel (`pip install onnxruntime`).
pub fn ort_library() -> PathBuf {
    static LIB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LIB.get_or_init(|| {
        if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
            return PathBuf::from(path);
        }
        let out = Command::new("python3")
            .args([
                "-c",
                "import glob, os, onnxruntime; \
                 print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so*')))[0])",
            ])
            .run_within(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("cannot run python3: {e}; {PIP_INSTALL}"));
        assert!(
            out.status.success(),
            "no ORT_DYLIB_PATH and no onnxruntime wheel found ({PIP_INSTALL}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

/// Every backend, for tests that must pass on each.
pub fn backends() -> [BackendOptions; 2] {
    [
        BackendOptions::tract(),
        BackendOptions::ort(Some(ort_library())),
    ]
}

/// `accelwatch` serving with `backend`, chosen through the environment.
pub fn accelwatch_on(backend: &BackendOptions) -> Command {
    let mut cmd = accelwatch();
    cmd.env("ACCELWATCH__MODEL__BACKEND", backend.kind.name())
        .env("ORT_DYLIB_PATH", ort_library());
    cmd
}

/// Shuts `daemon` down and waits (30 s at most) for a clean drain.
pub async fn stop(daemon: accelwatch::daemon::Daemon) -> accelwatch::daemon::RunSummary {
    daemon.shutdown();
    tokio::time::timeout(std::time::Duration::from_secs(30), daemon.wait())
        .await
        .expect("drains in time")
        .expect("clean stop")
}

/// Waits until `cond` holds, polling every 25 ms; fails naming `what` once
/// `within` has passed.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// [`wait_until`] for tests without a runtime: blocks the thread.
pub fn wait_until_blocking(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `(rows[i] - 128) / 64 + 1` windows of the default size and hop, none
/// below 128 samples.
pub fn windows_of(samples: usize) -> usize {
    if samples < 128 {
        0
    } else {
        (samples - 128) / 64 + 1
    }
}

/// The gauge that reads 1 once `config`'s input is connected: the MQTT
/// input's, or the first serial port's.
fn connected_series(config: &accelwatch::config::Config) -> String {
    use accelwatch::config::InputKind;
    match config.input.kind {
        InputKind::Mqtt => "accelwatch_mqtt_connected{role=\"input\"}".to_string(),
        InputKind::Serial => {
            let port = &config.input.serial.ports[0];
            let label = port.name.clone().unwrap_or_else(|| "0".into());
            format!("accelwatch_serial_connected{{port=\"{label}\"}}")
        }
        other => panic!("start_connected: input {} has no connection", other.name()),
    }
}

/// Starts a daemon writing to a [`Collect`] (besides its configured
/// outputs) and waits for its input (MQTT, or the first serial port) to
/// connect, and an MQTT input's subscriptions to be acknowledged: a message
/// published between the CONNACK and the SUBACK would not reach it.
pub async fn start_connected(
    config: accelwatch::config::Config,
) -> (accelwatch::daemon::Daemon, Collect) {
    let series = connected_series(&config);
    let collect = Collect::default();
    let daemon = accelwatch::daemon::Daemon::start(config, vec![Box::new(collect.clone())])
        .await
        .expect("the daemon starts");
    wait_metric(&daemon, &series, 1.0).await;
    let metrics = &daemon.metrics;
    wait_until(METRIC_DEADLINE, "the input's SUBACK", || async {
        metrics.readiness().input_subscribed
    })
    .await;
    (daemon, collect)
}

/// The largest difference between what tract computes from `trained`'s
/// exported file and what candle computes from the trained network, over
/// the reconstructions and latent codes of the `raw` windows. Like
/// `train::export_gap`, but both sides must give every value: an output
/// missing or cut short fails instead of comparing nothing.
pub fn export_gap(trained: &Trained, raw: &[f32]) -> f32 {
    let features = trained.meta.features();
    assert!(
        !raw.is_empty() && raw.len().is_multiple_of(features),
        "{} values are not whole windows of {features}",
        raw.len()
    );
    let n = raw.len() / features;
    let mut input = raw.to_vec();
    if let Some(norm) = &trained.meta.normalization {
        norm.apply(&mut input);
    }
    let loaded =
        accelwatch::model::LoadedModel::from_bytes(&trained.onnx, "exported.onnx".as_ref())
            .expect("the exported model loads");
    let tract = loaded.runtime.run(&input, n).expect("tract runs");
    // A front end's network reads the features training computed in Rust;
    // the graph computes them itself and gives them as an output.
    let (x, width) = match &trained.front_end {
        Some(front_end) => {
            let x = front_end.apply(&input);
            let graph = tract.target.as_ref().expect("the front end's output");
            assert_eq!(graph.len(), x.len(), "front end values");
            let gap = graph
                .iter()
                .zip(&x)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                gap <= 1e-4,
                "the graph's features differ from training's by {gap}"
            );
            (x, trained.meta.target_features())
        }
        None => (input, features),
    };
    let x = candle_core::Tensor::from_slice(&x, (n, width), &candle_core::Device::Cpu).unwrap();
    let (r, z) = trained.network.forward(&x).expect("candle runs");
    let candle_r: Vec<f32> = r.flatten_all().unwrap().to_vec1().unwrap();
    let candle_z: Vec<f32> = z.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(
        tract.reconstruction.len(),
        n * width,
        "tract reconstruction"
    );
    assert_eq!(candle_r.len(), n * width, "candle reconstruction");
    assert_eq!(
        tract.latent.len(),
        n * trained.meta.latent_dim,
        "tract latent"
    );
    assert_eq!(candle_z.len(), tract.latent.len(), "candle latent");
    let gap = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    gap(&tract.reconstruction, &candle_r).max(gap(&tract.latent, &candle_z))
}
