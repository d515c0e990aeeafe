//! The daemon over HTTP: GET and POST, /metrics scrapes, and waits for a
//! metric to reach a value.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use accelwatch::daemon::Daemon;

/// How long [`wait_metric`] waits.
pub const METRIC_DEADLINE: Duration = Duration::from_secs(30);

/// One plain HTTP/1.1 GET; the status code and the body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path).await
}

/// The bearer token of [`control_token_file`], which [`post`] presents.
pub const CONTROL_TOKEN: &str = "accelwatch-test-token-0123456789";

/// A file holding [`CONTROL_TOKEN`] (readable by its owner only), for
/// `telemetry.control_token_file`.
pub fn control_token_file() -> PathBuf {
    static FILE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control-token");
        std::fs::write(&path, format!("{CONTROL_TOKEN}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        (dir, path)
    })
    .1
    .clone()
}

/// A POST without a body (a control command), with the test's bearer
/// token.
pub async fn post(addr: SocketAddr, path: &str) -> (u16, String) {
    let authorization = format!("Bearer {CONTROL_TOKEN}");
    post_as(addr, path, Some(&authorization)).await
}

/// A POST with this `Authorization` header, or none.
pub async fn post_as(addr: SocketAddr, path: &str, authorization: Option<&str>) -> (u16, String) {
    let path = path.to_string();
    let authorization = authorization.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        request_blocking(addr, "POST", &path, authorization.as_deref())
    })
    .await
    .expect("the HTTP request task")
}

/// A GET with this `Authorization` header, or none.
pub async fn get_as(addr: SocketAddr, path: &str, authorization: Option<&str>) -> (u16, String) {
    let path = path.to_string();
    let authorization = authorization.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        request_blocking(addr, "GET", &path, authorization.as_deref())
    })
    .await
    .expect("the HTTP request task")
}

async fn request(addr: SocketAddr, method: &'static str, path: &str) -> (u16, String) {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || request_blocking(addr, method, &path, None))
        .await
        .expect("the HTTP request task")
}

fn request_blocking(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let authorization = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("{method} {path}: reading the response: {e}"));
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

/// GET /metrics, which must answer 200.
pub async fn scrape(addr: SocketAddr) -> String {
    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "/metrics: {text}");
    text
}

/// The value of one sample (labels included, as rendered) in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// The sum of every sample of `family` whose labels contain each of
/// `labels` (e.g. `role="input"`); 0 without any.
pub fn metric_sum(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            let rest = key.strip_prefix(family)?;
            let ok = (rest.is_empty() || rest.starts_with('{'))
                && labels.iter().all(|l| rest.contains(l));
            ok.then(|| value.trim().parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Where a test reads metrics: a telemetry address (scraped over HTTP) or
/// a daemon's registry (rendered; for daemons without telemetry).
pub trait Scrape {
    fn metrics_text(&self) -> impl Future<Output = String>;
}

impl Scrape for SocketAddr {
    fn metrics_text(&self) -> impl Future<Output = String> {
        scrape(*self)
    }
}

impl Scrape for &accelwatch::telemetry::Metrics {
    fn metrics_text(&self) -> impl Future<Output = String> {
        let text = self.render();
        async move { text }
    }
}

impl Scrape for &Daemon {
    fn metrics_text(&self) -> impl Future<Output = String> {
        let text = self.metrics.render();
        async move { text }
    }
}

/// What a metric is waited for to reach.
pub trait Wanted: std::fmt::Debug {
    fn holds(&self, value: f64) -> bool;
}

/// Exactly this value.
impl Wanted for f64 {
    fn holds(&self, value: f64) -> bool {
        value == *self
    }
}

/// This value or more.
#[derive(Debug)]
pub struct AtLeast(pub f64);

impl Wanted for AtLeast {
    fn holds(&self, value: f64) -> bool {
        value >= self.0
    }
}

/// Polls the metrics until `sample` (an exact series, labels included) is
/// `wanted`; fails after [`METRIC_DEADLINE`] showing the related series.
pub async fn wait_metric(source: impl Scrape, sample: &str, wanted: impl Wanted) {
    let deadline = Instant::now() + METRIC_DEADLINE;
    loop {
        let text = source.metrics_text().await;
        let value = metric(&text, sample);
        if value.is_some_and(|v| wanted.holds(v)) {
            return;
        }
        let family = sample.split('{').next().unwrap();
        assert!(
            Instant::now() < deadline,
            "{sample} never reached {wanted:?} in {METRIC_DEADLINE:?} (last {value:?}):\n{}",
            text.lines()
                .filter(|l| l.starts_with(family)
                    || l.starts_with("accelwatch_mqtt")
                    || l.starts_with("accelwatch_frames_total")
                    || l.contains("serial")
                    || l.contains("decode_errors"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
