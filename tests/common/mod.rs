//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use accelwatch::config::{Config, TrainingConfig, Variant};
use accelwatch::model::net::Architecture;
use accelwatch::model::train::{self, InputSpec, Trained, WindowSet};
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
    Recording::window_set_of(&train_csv(), "series", config).expect("shipped training data")
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
    let arch = Architecture::from_config(&config);
    let settings = TrainingConfig {
        epochs,
        seed,
        ..config.training.clone()
    };
    let input = InputSpec::from_config(&config);
    train::train(&arch, &settings, &input, &set, &mut |_| {}).expect("training")
}

/// One plain HTTP/1.1 GET; returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path)
}

/// A POST without a body.
pub fn http_post(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "POST", path)
}

fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of an unlabelled sample in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
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
            .output()
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
