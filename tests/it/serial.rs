//! The serial input through real pseudo-terminals: socat joins two ptys,
//! the daemon opens one end as its serial port and the test writes into
//! the other as a device would. Text and binary framing end to end (with
//! garbage, torn frames and bad CRCs mid-stream), an unplugged port (socat
//! killed and restarted) and a port missing at start-up.
//!
//! socat is required: install the Debian package socat (`.ci/run` does).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use accelwatch::config::{Config, InputKind, SerialFormat, SerialPortConfig};
use accelwatch::daemon::Daemon;
use accelwatch::source::serial::framing::encode_samples;
use tokio::io::AsyncWriteExt;
use tokio_serial::{SerialPortBuilderExt, SerialStream};

use crate::common::*;

const TEST_TIMEOUT: Duration = Duration::from_secs(90);

fn socat_binary() -> PathBuf {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("socat"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the serial tests need real pseudo-terminals joined by socat: install the \
                 Debian package socat (apt-get install socat), or run .ci/run as root"
            )
        })
}

/// A socat process joining two ptys, linked as `port` (the daemon's end)
/// and `port.writer` (the device's end); killed on drop.
struct PtyPair {
    port: PathBuf,
    writer: PathBuf,
    child: Option<Child>,
}

impl PtyPair {
    fn new(port: &Path) -> Self {
        let mut pair = Self {
            port: port.to_path_buf(),
            writer: port.with_extension("writer"),
            child: None,
        };
        pair.start();
        pair
    }

    fn start(&mut self) {
        assert!(self.child.is_none());
        let child = Child::spawn(
            Command::new(socat_binary())
                .arg("-d")
                .arg(format!("pty,raw,echo=0,link={}", self.writer.display()))
                .arg(format!("pty,raw,echo=0,link={}", self.port.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(self.port.exists() && self.writer.exists()) {
            assert!(Instant::now() < deadline, "socat made no ptys");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Unplugs the device: both ptys vanish.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
        // SIGKILL leaves the links behind, dangling.
        let _ = std::fs::remove_file(&self.port);
        let _ = std::fs::remove_file(&self.writer);
    }

    /// The device's end, opened as a serial port.
    fn open_writer(&self) -> SerialStream {
        tokio_serial::new(self.writer.to_string_lossy(), 115_200)
            .open_native_async()
            .expect("open the writer pty")
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The model is trained once per test binary.
fn model_bytes() -> &'static [u8] {
    static MODEL: OnceLock<Vec<u8>> = OnceLock::new();
    MODEL.get_or_init(|| quick_model(&["ax", "ay", "az"], 40, 3).onnx)
}

fn config(dir: &Path, ports: Vec<SerialPortConfig>) -> Config {
    let model = dir.join("model.onnx");
    std::fs::write(&model, model_bytes()).unwrap();
    let mut config = Config::default();
    config.model.path = model;
    config.input.kind = InputKind::Serial;
    config.input.serial.ports = ports;
    config.input.serial.reconnect_min_ms = 50;
    config.input.serial.reconnect_max_ms = 400;
    config.output.jsonl = "off".into();
    config.telemetry.enabled = false;
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    config
}

/// The accelerometer rows of the shipped demo recording, for one device.
fn demo_rows() -> Vec<[f64; 4]> {
    let text = std::fs::read_to_string(demo_csv()).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| l.starts_with("watch-9,"))
        .map(|l| {
            let f: Vec<f64> = l.split(',').map(|x| x.parse().unwrap_or(0.0)).collect();
            [f[1], f[3], f[4], f[5]]
        })
        .collect()
}

async fn wait_windows(collect: &Collect, device: &str, n: usize) {
    wait_until(
        Duration::from_secs(30),
        &format!("{n} windows of {device}"),
        || async { collect.windows_of(device).len() >= n },
    )
    .await;
}

fn value(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_lines_are_windowed_scored_and_their_rate_checked() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let pty = PtyPair::new(&dir.path().join("accel0"));
        let mut port = SerialPortConfig::new(&pty.port, "wrist");
        port.name = Some("accel0".into());
        let mut config = config(dir.path(), vec![port]);
        config.input.serial.max_line_bytes = 64;
        config.input.serial.rate_window_s = 1.0;
        // Waits for accelwatch_serial_connected{port="accel0"}.
        let (daemon, collect) = start_connected(config).await;

        // Untimed `ax,ay,az` lines as firmware prints them, with a boot
        // banner, blank lines, an over-long line and a malformed one.
        let mut text = String::from("\r\nACCEL v1.2 booting\r\n\r\n");
        for (i, row) in demo_rows().iter().take(300).enumerate() {
            text.push_str(&format!("{},{},{}\r\n", row[1], row[2], row[3]));
            if i == 100 {
                text.push_str(&"9".repeat(500));
                text.push('\n');
            }
            if i == 150 {
                text.push_str("1.0,oops,2.0\n");
            }
        }
        let mut writer = pty.open_writer();
        writer.write_all(text.as_bytes()).await.unwrap();
        writer.flush().await.unwrap();

        // 300 samples: windows at 128, 192 and 256.
        wait_windows(&collect, "wrist", 3).await;
        let windows = collect.windows_of("wrist");
        assert_eq!(
            windows.iter().map(|w| w.seq).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        let first = &windows[0];
        assert!(first.score.is_finite() && first.latent.len() == 8);
        assert!(
            (first.t_end - first.t_start - 127.0 * 20.0).abs() < 1e-6,
            "untimed samples are spaced at 50 Hz from their arrival"
        );
        // The third window came with sample 256; the 44 after it are
        // counted a moment later.
        wait_metric(&daemon, "accelwatch_samples_total", 300.0).await;
        let text = daemon.metrics.render();
        let framing = |reason: &str| {
            value(
                &text,
                &format!(
                    "accelwatch_serial_framing_errors_total{{port=\"accel0\",reason=\"{reason}\"}}"
                ),
            )
        };
        assert_eq!(framing("line_too_long"), 1.0);
        assert_eq!(framing("bad_crc"), 0.0);
        assert_eq!(
            value(
                &text,
                "accelwatch_decode_errors_total{reason=\"not_a_number\"}"
            ) + value(
                &text,
                "accelwatch_decode_errors_total{reason=\"field_count\"}"
            ),
            2.0,
            "the banner and the malformed line"
        );
        assert_eq!(value(&text, "accelwatch_samples_total"), 300.0);

        // 300 samples in a burst, then silence, against 50 Hz: a mismatch
        // once it has lasted rate_window_s (1 s here).
        wait_metric(
            &daemon,
            "accelwatch_serial_rate_mismatch_total{port=\"accel0\"}",
            1.0,
        )
        .await;
        stop(daemon).await;
    })
    .await
    .expect("test timed out");
}

/// `n` frames of `per_frame` samples from the demo rows, in LSB at 1/4096 g.
fn binary_frames(rows: &[[f64; 4]], per_frame: usize) -> Vec<Vec<u8>> {
    rows.chunks(per_frame)
        .map(|chunk| {
            let values: Vec<i16> = chunk
                .iter()
                .flat_map(|r| r[1..].iter().map(|v| (v * 4096.0).round() as i16))
                .collect();
            encode_samples(&values)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_survive_garbage_torn_frames_and_bad_crcs() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let pty = PtyPair::new(&dir.path().join("accel1"));
        let mut port = SerialPortConfig::new(&pty.port, "press");
        port.format = SerialFormat::Binary;
        port.baud = 921_600;
        let mut config = config(dir.path(), vec![port]);
        config.input.binary_i16_scale = 1.0 / 4096.0;
        let (daemon, collect) = start_connected(config).await;

        let rows = demo_rows();
        let frames = binary_frames(&rows[..260], 10);
        let mut stream = b"\x00\xffgarbage at power-up\xa5".to_vec();
        for (i, frame) in frames.iter().enumerate() {
            match i {
                // A frame torn by a glitch: only its first half arrives.
                5 => stream.extend(&frame[..frame.len() / 2]),
                // A corrupted byte.
                9 => {
                    let mut bad = frame.clone();
                    bad[10] ^= 0x01;
                    stream.extend(bad);
                }
                12 => stream.extend([0xA5, 0x5A, 0xFF, 0xFF, 0x13, 0x37]),
                _ => {}
            }
            if i != 5 && i != 9 {
                stream.extend(frame);
            }
        }
        let mut writer = pty.open_writer();
        // Written in odd-sized pieces, so frames straddle reads.
        for piece in stream.chunks(37) {
            writer.write_all(piece).await.unwrap();
        }
        writer.flush().await.unwrap();

        // 24 good frames of 10: 240 samples, windows at 128 and 192.
        wait_windows(&collect, "press", 2).await;
        wait_metric(&daemon, "accelwatch_samples_total", 240.0).await;
        let windows = collect.windows_of("press");
        assert_eq!(windows.len(), 2);
        assert!(windows.iter().all(|w| w.score.is_finite()));
        let text = daemon.metrics.render();
        let framing = |reason: &str| {
            value(
                &text,
                &format!(
                    "accelwatch_serial_framing_errors_total{{port=\"0\",reason=\"{reason}\"}}"
                ),
            )
        };
        assert!(
            framing("bad_crc") >= 2.0,
            "the torn and the corrupted frame"
        );
        assert!(framing("bad_length") >= 1.0);
        assert!(framing("garbage") >= 3.0);
        assert!(value(&text, "accelwatch_serial_discarded_bytes_total{port=\"0\"}") > 20.0);
        assert_eq!(
            value(&text, "accelwatch_decode_errors_total{reason=\"length\"}"),
            0.0,
            "only whole frames reach the decoder"
        );
        // The scale was applied: the first window scores as the good
        // frames' samples in g (demo.csv's values, to 1/4096) score offline.
        let good: Vec<f32> = (0..26)
            .filter(|i| *i != 5 && *i != 9)
            .flat_map(|i| &rows[i * 10..i * 10 + 10])
            .take(128)
            .flat_map(|r| {
                r[1..]
                    .iter()
                    .map(|v| ((v * 4096.0).round() / 4096.0) as f32)
            })
            .collect();
        let model =
            accelwatch::model::LoadedModel::from_bytes(model_bytes(), "m.onnx".as_ref()).unwrap();
        let expected = accelwatch::model::scorer::Scorer::new(model)
            .score([good.as_slice()])
            .unwrap();
        assert_eq!(expected.len(), 1);
        let (window, expected) = (&windows[0], &expected[0]);
        assert!(
            (window.score - expected.score).abs() <= 1e-4 * expected.score.abs().max(1e-3),
            "scaled window scores {} online, {} offline",
            window.score,
            expected.score
        );
        assert_eq!(window.channel_error.values.len(), 3);
        for (online, offline) in window
            .channel_error
            .values
            .iter()
            .zip(&expected.channel_error)
        {
            assert!((online - offline).abs() <= 1e-4 * offline.abs().max(1e-3));
        }
        stop(daemon).await;
    })
    .await
    .expect("test timed out");
}

fn timed_lines(rows: &[[f64; 4]], t0: f64) -> String {
    rows.iter()
        .enumerate()
        .map(|(i, r)| format!("{},{},{},{}\n", t0 + i as f64 * 20.0, r[1], r[2], r[3]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplugged_port_is_reopened_and_the_window_restarts() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let mut pty = PtyPair::new(&dir.path().join("accel2"));
        let mut config = config(dir.path(), vec![SerialPortConfig::new(&pty.port, "arm")]);
        // Timestamps continue across the outage without a gap, so only the
        // reconnection can restart the window.
        config.window.max_gap_ms = 60_000.0;
        let connected = "accelwatch_serial_connected{port=\"0\"}";
        let (daemon, collect) = start_connected(config).await;
        let rows = demo_rows();
        let mut writer = pty.open_writer();
        writer
            .write_all(timed_lines(&rows[..200], 0.0).as_bytes())
            .await
            .unwrap();
        wait_windows(&collect, "arm", 2).await;
        wait_metric(&daemon, "accelwatch_samples_total", 200.0).await;

        drop(writer);
        pty.kill();
        wait_metric(&daemon, connected, 0.0).await;
        wait_metric(
            &daemon,
            "accelwatch_serial_connection_failures_total{port=\"0\",reason=\"lost\"}",
            1.0,
        )
        .await;
        // Unplugged for a while: reopening fails, and is retried.
        wait_metric(
            &daemon,
            "accelwatch_serial_connection_failures_total{port=\"0\",reason=\"open\"}",
            AtLeast(2.0),
        )
        .await;

        pty.start();
        wait_metric(&daemon, connected, 1.0).await;
        let mut writer = pty.open_writer();
        writer
            .write_all(timed_lines(&rows[200..400], 4000.0).as_bytes())
            .await
            .unwrap();
        wait_windows(&collect, "arm", 4).await;
        let windows = collect.windows_of("arm");
        // Without the restart, the ring would have gone on from sample 200
        // and emitted at 256, 320, 384.
        assert_eq!(
            windows
                .iter()
                .map(|w| (w.seq, w.t_start))
                .collect::<Vec<_>>(),
            vec![(0, 0.0), (1, 1280.0), (2, 4000.0), (3, 5280.0)],
            "after the reconnection the window starts afresh"
        );
        stop(daemon).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_missing_at_start_is_waited_for_while_another_port_serves() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let present = PtyPair::new(&dir.path().join("left"));
        let absent_path = dir.path().join("right");
        let mut left = SerialPortConfig::new(&present.port, "left");
        left.name = Some("left".into());
        let mut right = SerialPortConfig::new(&absent_path, "right");
        right.name = Some("right".into());
        right.format = SerialFormat::Json;
        let collect = Collect::default();
        let daemon = Daemon::start(
            config(dir.path(), vec![left, right]),
            vec![Box::new(collect.clone())],
        )
        .await
        .expect("a missing port does not stop the start");
        wait_metric(
            &daemon,
            "accelwatch_serial_connection_failures_total{port=\"right\",reason=\"open\"}",
            AtLeast(2.0),
        )
        .await;
        wait_metric(&daemon, "accelwatch_serial_connected{port=\"left\"}", 1.0).await;

        let rows = demo_rows();
        let mut writer = present.open_writer();
        writer
            .write_all(timed_lines(&rows[..140], 0.0).as_bytes())
            .await
            .unwrap();
        wait_windows(&collect, "left", 1).await;
        let text = daemon.metrics.render();
        assert_eq!(
            value(&text, "accelwatch_serial_connected{port=\"right\"}"),
            0.0
        );

        // The device is plugged in: its port appears and is read.
        let late = PtyPair::new(&absent_path);
        wait_metric(&daemon, "accelwatch_serial_connected{port=\"right\"}", 1.0).await;
        let json: String = rows[..130]
            .iter()
            .map(|r| format!("{{\"ax\":{},\"ay\":{},\"az\":{}}}\n", r[1], r[2], r[3]))
            .collect();
        let mut writer = late.open_writer();
        writer.write_all(json.as_bytes()).await.unwrap();
        wait_windows(&collect, "right", 1).await;
        assert_eq!(
            collect.windows_of("left").len(),
            1,
            "one window from each port"
        );
        stop(daemon).await;
    })
    .await
    .expect("test timed out");
}

/// The simulator the README points users without hardware to
/// (`examples/serial_sim.rs` runs `accelwatch::source::serial::sim`): its pty,
/// in both formats, read by the daemon through to scored windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_device_is_read_through_to_windows() {
    use accelwatch::source::serial::sim::{self, SimFormat};
    tokio::time::timeout(TEST_TIMEOUT, async {
        let rows = sim::recording_rows(&demo_csv(), "watch-10").unwrap();
        let rows = &rows[..128 + 64 * 9];
        for (format, serial_format) in [
            (SimFormat::Csv, SerialFormat::Csv),
            (SimFormat::Binary, SerialFormat::Binary),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (mut master, _slave, path) = sim::pty_pair().unwrap();
            let mut port = SerialPortConfig::new(Path::new(&path), "sim");
            port.format = serial_format;
            let mut config = config(dir.path(), vec![port]);
            config.input.binary_i16_scale = 1.0 / sim::COUNTS_PER_G;
            let (daemon, collect) = start_connected(config).await;
            sim::play(&mut master, rows, format, 50.0, 20.0)
                .await
                .unwrap();
            wait_windows(&collect, "sim", 10).await;
            let windows = collect.windows_of("sim");
            assert_eq!(windows.len(), 10, "{format:?}");
            assert!(windows.iter().all(|w| w.score.is_finite()));
            stop(daemon).await;
        }
    })
    .await
    .expect("test timed out");
}
