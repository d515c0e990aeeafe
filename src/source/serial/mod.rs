//! Serial input: reads one device per port (USB-serial adapters, UARTs),
//! cuts the bytes into lines or binary frames (`serial::framing`) and sends
//! each as a [`Frame`] stamped with its arrival time.
//!
//! Every port runs on its own task, so a port that is missing at start or
//! unplugged later never holds up the others. A port that cannot be opened
//! or goes away is retried after a capped, jittered back-off; the gauge
//! `accelwatch_serial_connected{port}` follows it, failures are counted and
//! logged once per outage, and the first frame after a (re)connection asks
//! the pipeline to restart the device's window. Framing errors are counted
//! and never end the stream. The observed sample rate is compared with
//! `input.sample_rate_hz` once a second (see `serial::rate`).

pub mod config;
pub mod framing;
pub mod rate;
pub mod sim;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_serial::{SerialPortBuilderExt, SerialStream};

use crate::backoff::Backoff;
use crate::clock::unix_ms;
use crate::decode::{json_sample_count, BinaryHeader, BinaryType, Format};
use crate::logging::RateLimited;
use crate::source::config::InputConfig;
use crate::source::frame::Frame;
use crate::source::frame::Intake;
use crate::source::serial::config::{
    SerialFlowControl, SerialFormat, SerialInputConfig, SerialParity, SerialPortConfig,
};
use crate::source::serial::framing::{BinaryFramer, Framed, Framer, LineFramer};
use crate::source::serial::rate::{RateEvent, RateMonitor};
use crate::telemetry::Metrics;

/// Bytes asked for per read; a read returns what the driver has.
const READ_BUFFER: usize = 4096;
const RATE_TICK: Duration = Duration::from_secs(1);
/// Frames read and not yet taken by the intake, all ports together: a
/// quarter second of CSV lines at 1 kHz. A full queue stops the reads, and
/// the port's own buffer holds the bytes meanwhile.
const PORT_QUEUE: usize = 256;

pub struct SerialSource {
    ports: Vec<PortTask>,
}

/// Everything one port's task needs.
struct PortTask {
    port: SerialPortConfig,
    label: String,
    device: Arc<str>,
    channels: usize,
    interval_ms: f64,
    serial: SerialInputConfig,
    sample_rate_hz: f64,
    /// Counts the samples of JSON lines (which may be batches) for the
    /// rate check; CSV lines are one sample and binary frames say.
    metrics: Metrics,
}

/// Why reading a port stopped.
enum Ended {
    Lost(String),
    Shutdown,
}

impl SerialSource {
    /// Nothing is opened here: a port that is absent at start-up is waited
    /// for, like one unplugged later.
    pub fn open(input: &InputConfig, metrics: Metrics) -> Self {
        let ports = input
            .serial
            .ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let label = port.label(i);
                metrics.serial_port(&label);
                PortTask {
                    port: port.clone(),
                    label,
                    device: Arc::from(port.device.as_str()),
                    channels: input.channels.len(),
                    interval_ms: 1000.0 / input.sample_rate_hz,
                    serial: input.serial.clone(),
                    sample_rate_hz: input.sample_rate_hz,
                    metrics: metrics.clone(),
                }
            })
            .collect();
        Self { ports }
    }

    /// Reads every port until `shutdown` fires or the intake is closed.
    /// Returns the frames read.
    pub async fn run(self, mut intake: impl Intake, shutdown: watch::Receiver<bool>) -> u64 {
        // Each port reads on a task of its own (a port that stalls holds
        // up no other); their frames meet in one queue before the intake.
        let (frames, mut queued) = mpsc::channel(PORT_QUEUE);
        let mut tasks = JoinSet::new();
        for port in self.ports {
            tasks.spawn(port.run(frames.clone(), shutdown.clone()));
        }
        drop(frames);
        // Ends when every port's task has ended (their senders dropped) or
        // the intake is closed (the ports' sends then fail and they end).
        while let Some(frame) = queued.recv().await {
            if !intake.take(frame).await {
                break;
            }
        }
        drop(queued);
        let mut sent = 0;
        while let Some(result) = tasks.join_next().await {
            match result {
                Ok(n) => sent += n,
                Err(error) => tracing::error!(%error, "a serial port task failed"),
            }
        }
        tracing::info!(frames = sent, "serial input stopped");
        sent
    }
}

fn open(port: &SerialPortConfig) -> tokio_serial::Result<SerialStream> {
    use tokio_serial::{DataBits, FlowControl, Parity, StopBits};
    let data_bits = match port.data_bits {
        5 => DataBits::Five,
        6 => DataBits::Six,
        7 => DataBits::Seven,
        _ => DataBits::Eight,
    };
    let parity = match port.parity {
        SerialParity::None => Parity::None,
        SerialParity::Odd => Parity::Odd,
        SerialParity::Even => Parity::Even,
    };
    let stop_bits = match port.stop_bits {
        2 => StopBits::Two,
        _ => StopBits::One,
    };
    let flow_control = match port.flow_control {
        SerialFlowControl::None => FlowControl::None,
        SerialFlowControl::Software => FlowControl::Software,
        SerialFlowControl::Hardware => FlowControl::Hardware,
    };
    tokio_serial::new(port.path.to_string_lossy(), port.baud)
        .data_bits(data_bits)
        .parity(parity)
        .stop_bits(stop_bits)
        .flow_control(flow_control)
        .open_native_async()
}

impl PortTask {
    fn framer(&self) -> Framer {
        match self.port.format {
            SerialFormat::Binary => Framer::Binary(BinaryFramer::new(
                self.channels,
                self.serial.max_frame_bytes,
            )),
            SerialFormat::Csv | SerialFormat::Json => {
                Framer::Lines(LineFramer::new(self.serial.max_line_bytes))
            }
        }
    }

    async fn run(self, frames: mpsc::Sender<Frame>, mut shutdown: watch::Receiver<bool>) -> u64 {
        let mut backoff = Backoff::new(
            Duration::from_millis(self.serial.reconnect_min_ms),
            Duration::from_millis(self.serial.reconnect_max_ms),
        );
        let mut framer = self.framer();
        let mut sent = 0u64;
        // Log the first failure of an outage, not every retry.
        let mut failing = false;
        loop {
            if *shutdown.borrow() {
                break;
            }
            match open(&self.port) {
                Ok(stream) => {
                    backoff.reset();
                    self.metrics.serial_connected(&self.label, true);
                    tracing::info!(
                        port = %self.label, path = %self.port.path.display(),
                        device = %self.device, baud = self.port.baud,
                        "serial port open"
                    );
                    let ended = self
                        .read(stream, &mut framer, &frames, &mut shutdown, &mut sent)
                        .await;
                    self.metrics.serial_connected(&self.label, false);
                    self.metrics.serial_observed_rate(&self.label, 0.0);
                    if let Some(error) = framer.reset() {
                        self.metrics.serial_framing_error(&self.label, &error);
                    }
                    match ended {
                        Ended::Shutdown => break,
                        Ended::Lost(error) => {
                            self.metrics.serial_connection_failure(&self.label, "lost");
                            tracing::warn!(
                                port = %self.label, path = %self.port.path.display(), %error,
                                "serial port lost; reopening with back-off"
                            );
                            failing = true;
                        }
                    }
                }
                Err(error) => {
                    self.metrics.serial_connection_failure(&self.label, "open");
                    if !failing {
                        tracing::warn!(
                            port = %self.label, path = %self.port.path.display(), %error,
                            "cannot open serial port; retrying with back-off"
                        );
                    }
                    failing = true;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = shutdown.changed() => break,
            }
        }
        self.metrics.serial_connected(&self.label, false);
        sent
    }

    /// Reads until the port fails, `shutdown` fires or the receiver is gone.
    async fn read(
        &self,
        mut stream: SerialStream,
        framer: &mut Framer,
        frames: &mpsc::Sender<Frame>,
        shutdown: &mut watch::Receiver<bool>,
        sent: &mut u64,
    ) -> Ended {
        let mut buffer = vec![0u8; READ_BUFFER];
        let mut framed = Vec::new();
        let mut warned = RateLimited::new(Duration::from_secs(60));
        let mut rate = RateMonitor::new(
            self.sample_rate_hz,
            self.serial.rate_tolerance,
            self.serial.rate_window_s,
        );
        rate.restart(unix_ms());
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + RATE_TICK, RATE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut restart = true;
        loop {
            let n = tokio::select! {
                read = stream.read(&mut buffer) => match read {
                    Ok(0) => return Ended::Lost("end of stream".into()),
                    Ok(n) => n,
                    Err(error) => return Ended::Lost(error.to_string()),
                },
                _ = tick.tick() => {
                    self.rate_tick(&mut rate);
                    continue;
                }
                _ = shutdown.changed() => return Ended::Shutdown,
            };
            let received_at_ms = unix_ms();
            framer.feed(&buffer[..n], &mut framed);
            for item in framed.drain(..) {
                let payload = match item {
                    Framed::Payload(payload) => payload,
                    Framed::Error(error) => {
                        self.metrics.serial_framing_error(&self.label, &error);
                        if let Some(held_back) = warned.check(error.reason(), Instant::now()) {
                            tracing::warn!(
                                port = %self.label, reason = error.reason(), held_back,
                                "skipping serial bytes that form no line or frame (at most one \
                                 line a minute per reason; all are counted in \
                                 accelwatch_serial_framing_errors_total)"
                            );
                        }
                        continue;
                    }
                };
                let (payload, format, samples) = match self.port.format {
                    SerialFormat::Csv => (payload, Format::Csv, 1),
                    SerialFormat::Json => {
                        let samples = json_sample_count(&payload);
                        (payload, Format::Json, samples)
                    }
                    SerialFormat::Binary => {
                        let samples = payload.len() / (2 * self.channels);
                        (self.batch(&payload, samples), Format::Binary, samples)
                    }
                };
                rate.count(samples);
                let frame = Frame {
                    device: self.device.clone(),
                    payload,
                    format,
                    received_at_ms,
                    restart: std::mem::take(&mut restart),
                    topic: None,
                };
                tokio::select! {
                    result = frames.send(frame) => if result.is_err() { return Ended::Shutdown },
                    _ = shutdown.changed() => return Ended::Shutdown,
                }
                *sent += 1;
            }
        }
    }

    /// A binary frame's int16 samples as a binary batch payload (the same
    /// little-endian values behind a header without device time), so the
    /// pipeline decodes it like any other, scaled by
    /// `input.binary_i16_scale`.
    fn batch(&self, values: &[u8], samples: usize) -> Vec<u8> {
        let header = BinaryHeader {
            value_type: BinaryType::I16,
            channels: self.channels as u16,
            samples: samples as u32,
            t0_ms: f64::NAN,
            interval_ms: self.interval_ms as f32,
        };
        let mut payload = Vec::with_capacity(BinaryHeader::LEN + values.len());
        payload.extend_from_slice(&header.to_bytes());
        payload.extend_from_slice(values);
        payload
    }

    fn rate_tick(&self, rate: &mut RateMonitor) {
        let event = rate.tick(unix_ms());
        if let Some(hz) = rate.observed_hz() {
            self.metrics.serial_observed_rate(&self.label, hz);
        }
        match event {
            Some(RateEvent::Mismatch { observed_hz }) => {
                self.metrics.serial_rate_mismatch(&self.label);
                tracing::warn!(
                    port = %self.label, device = %self.device,
                    observed_hz = format!("{observed_hz:.1}"),
                    expected_hz = self.sample_rate_hz,
                    window_s = self.serial.rate_window_s,
                    "serial sample rate is off input.sample_rate_hz; untimed samples are \
                     placed at the configured rate, so windows are stretched or squeezed"
                );
            }
            Some(RateEvent::Recovered { observed_hz }) => {
                tracing::info!(
                    port = %self.label, observed_hz = format!("{observed_hz:.1}"),
                    "serial sample rate is back within tolerance"
                );
            }
            None => {}
        }
    }
}
