//! The feature lines' own connection, for `output.mqtt.features_qos = 0`
//! (the default).
//!
//! Through rumqttc each line was a request: queued, taken by its event loop,
//! encoded and written by a `writev` of its own, one wake-up of the broker
//! each. Here the sink's thread encodes each line as a PUBLISH straight into
//! a buffer, and the lane's task writes all that has gathered in one write a
//! wake-up (docs/measured.md, "The feature lines' own connection"). QoS 0
//! needs nothing back from the broker but its keep-alive answers, so the
//! client is small: CONNECT, PUBLISH, PINGREQ and DISCONNECT, in MQTT 3.1.1
//! or 5, over TCP or TLS.
//!
//! Alerts and status keep the acknowledged connection (`connection.rs`).
//! MQTT orders messages per connection and topic, and the lines and alerts
//! are on topics of their own, so no subscriber loses an order it had.
//!
//! While the broker is away the lines wait, up to `output.mqtt.queue`;
//! beyond that new ones are dropped and counted in
//! `accelwatch_mqtt_publish_dropped_total{kind="features"}`, as are the lines
//! of a write that a lost connection cut short.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{TlsConfiguration, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::mqtt::client::Endpoint;
use crate::mqtt::config::MqttProtocol;
use crate::telemetry::Metrics;

/// The role in `accelwatch_mqtt_connected{role}` and the failures' metric.
pub const ROLE: &str = "features";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const PINGREQ: [u8; 2] = [0xC0, 0x00];
const DISCONNECT: [u8; 2] = [0xE0, 0x00];

/// Why a connection ended; the `reason` label of the failures' metric.
#[derive(Debug, thiserror::Error)]
enum LaneError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the broker refused the connection (return code {0})")]
    Refused(u8),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Protocol(String),
}

impl LaneError {
    fn reason(&self) -> &'static str {
        match self {
            Self::Io(_) | Self::Timeout(_) => "network",
            Self::Refused(_) => "refused",
            Self::Tls(_) => "tls",
            Self::Protocol(_) => "protocol",
        }
    }
}

/// What the sink and the lane's task share: the encoded lines not yet
/// written.
struct Shared {
    waiting: Mutex<Waiting>,
    wake: Notify,
}

#[derive(Default)]
struct Waiting {
    bytes: Vec<u8>,
    lines: usize,
    /// The sink is gone: write what waits, say goodbye, end.
    closing: bool,
}

impl Shared {
    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        // A panic elsewhere while holding it leaves plain bytes behind.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How a PUBLISH of this lane starts: its first byte, and whether it
/// carries MQTT 5's (empty) properties.
#[derive(Clone, Copy)]
struct PublishHeader {
    first_byte: u8,
    properties: bool,
}

impl PublishHeader {
    fn new(protocol: MqttProtocol, retain: bool) -> Self {
        Self {
            first_byte: 0x30 | u8::from(retain),
            properties: matches!(protocol, MqttProtocol::V5),
        }
    }

    /// Appends a QoS 0 PUBLISH of `payload` on `topic` to `out`.
    fn encode(self, topic: &str, payload: &[u8], out: &mut Vec<u8>) {
        let remaining = 2 + topic.len() + usize::from(self.properties) + payload.len();
        out.reserve(5 + remaining);
        out.push(self.first_byte);
        push_remaining_length(remaining, out);
        push_str(topic, out);
        if self.properties {
            out.push(0);
        }
        out.extend_from_slice(payload);
    }
}

fn push_remaining_length(mut length: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if length == 0 {
            break;
        }
    }
}

/// A UTF-8 string as MQTT writes it: its length in two bytes, then it.
fn push_str(text: &str, out: &mut Vec<u8>) {
    push_bytes(text.as_bytes(), out);
}

fn push_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    let len = u16::try_from(bytes.len()).expect("checked: topics and ids under 64 KiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The CONNECT of a clean session without a will (the acknowledged
/// connection carries the daemon's will).
fn connect_packet(
    protocol: MqttProtocol,
    client_id: &str,
    keep_alive: Duration,
    credentials: Option<&(String, String)>,
) -> Vec<u8> {
    let v5 = matches!(protocol, MqttProtocol::V5);
    let mut body = Vec::with_capacity(64);
    push_str("MQTT", &mut body);
    body.push(if v5 { 5 } else { 4 });
    let mut flags = 0x02; // clean session / clean start
    if credentials.is_some() {
        flags |= 0x80 | 0x40;
    }
    body.push(flags);
    let keep_alive_s = u16::try_from(keep_alive.as_secs()).unwrap_or(u16::MAX);
    body.extend_from_slice(&keep_alive_s.to_be_bytes());
    if v5 {
        body.push(0); // no properties
    }
    push_str(client_id, &mut body);
    if let Some((username, password)) = credentials {
        push_str(username, &mut body);
        push_bytes(password.as_bytes(), &mut body);
    }
    let mut packet = vec![0x10];
    push_remaining_length(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    packet
}

/// Splits the broker's bytes into packets; only their types matter here.
#[derive(Default)]
struct Incoming {
    bytes: Vec<u8>,
}

impl Incoming {
    /// The next whole packet's first byte and body, if one has arrived.
    fn next_packet(&mut self) -> Result<Option<(u8, Vec<u8>)>, LaneError> {
        let mut length = 0usize;
        let mut shift = 0;
        let mut at = 1;
        loop {
            let Some(&byte) = self.bytes.get(at) else {
                return Ok(None);
            };
            length |= usize::from(byte & 0x7F) << shift;
            at += 1;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 21 {
                return Err(LaneError::Protocol("malformed remaining length".into()));
            }
        }
        if self.bytes.len() < at + length {
            return Ok(None);
        }
        let first = self.bytes[0];
        let body = self.bytes[at..at + length].to_vec();
        self.bytes.drain(..at + length);
        Ok(Some((first, body)))
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Where and how the lane connects.
struct Dial {
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    connect: Vec<u8>,
    keep_alive: Duration,
}

impl Dial {
    async fn open(&self) -> Result<Box<dyn Stream>, LaneError> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        let mut stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| LaneError::Tls(format!("{}: {e}", self.host)))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| LaneError::Tls(e.to_string()))?;
                Box::new(tls)
            }
        };
        stream.write_all(&self.connect).await?;
        let mut incoming = Incoming::default();
        loop {
            if let Some((first, body)) = incoming.next_packet()? {
                if first >> 4 != 2 {
                    return Err(LaneError::Protocol(format!(
                        "expected CONNACK, got packet type {}",
                        first >> 4
                    )));
                }
                // Both versions: acknowledge flags, then the return (or
                // reason) code.
                let code = body.get(1).copied().unwrap_or(0xFF);
                return if code == 0 {
                    Ok(stream)
                } else {
                    Err(LaneError::Refused(code))
                };
            }
            let mut chunk = [0u8; 256];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(LaneError::Protocol("closed before CONNACK".into()));
            }
            incoming.bytes.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The sink's end: encodes each line into its own buffer, and hands the
/// buffer over once a batch.
pub struct FeatureLane {
    shared: Arc<Shared>,
    header: PublishHeader,
    staged: Vec<u8>,
    /// Where each staged line ends in `staged`.
    ends: Vec<usize>,
    queue: usize,
    metrics: Metrics,
}

/// The lane's task; it ends after the sink's end is dropped and what waits
/// is written (or at once while the broker is away).
pub struct LaneTask {
    pub task: tokio::task::JoinHandle<()>,
}

impl FeatureLane {
    /// The lane to the broker of `endpoint`, as `client_id`.
    pub fn open(
        endpoint: &Endpoint,
        protocol: MqttProtocol,
        client_id: &str,
        retain: bool,
        queue: usize,
        backoff: Backoff,
        metrics: Metrics,
    ) -> (Self, LaneTask) {
        let tls = match &endpoint.transport {
            Transport::Tls(TlsConfiguration::Rustls(config)) => Some(config.clone()),
            _ => None,
        };
        let dial = Dial {
            host: endpoint.host.clone(),
            port: endpoint.port,
            tls,
            connect: connect_packet(
                protocol,
                client_id,
                endpoint.keep_alive,
                endpoint.credentials.as_ref(),
            ),
            keep_alive: endpoint.keep_alive,
        };
        let shared = Arc::new(Shared {
            waiting: Mutex::new(Waiting::default()),
            wake: Notify::new(),
        });
        metrics.mqtt_connected(ROLE, false);
        let task = tokio::spawn(run(dial, shared.clone(), backoff, metrics.clone()));
        let lane = Self {
            shared,
            header: PublishHeader::new(protocol, retain),
            staged: Vec::new(),
            ends: Vec::new(),
            queue,
            metrics,
        };
        (lane, LaneTask { task })
    }

    /// Stages one line; it goes to the task at the next [`Self::hand_over`].
    pub fn push(&mut self, topic: &str, line: &[u8]) {
        self.header.encode(topic, line, &mut self.staged);
        self.ends.push(self.staged.len());
    }

    /// Lines staged since the last hand-over.
    #[cfg(test)]
    pub(crate) fn staged_lines(&self) -> usize {
        self.ends.len()
    }

    /// Hands the staged lines to the task, as many as the queue has room
    /// for; the rest are dropped and counted.
    pub fn hand_over(&mut self) {
        if self.ends.is_empty() {
            return;
        }
        let dropped = {
            let mut waiting = self.shared.waiting();
            let room = self.queue.saturating_sub(waiting.lines);
            let taken = room.min(self.ends.len());
            if taken > 0 {
                let end = self.ends[taken - 1];
                if waiting.bytes.is_empty() && taken == self.ends.len() {
                    // The usual case: the task took the last batch already.
                    std::mem::swap(&mut waiting.bytes, &mut self.staged);
                } else {
                    waiting.bytes.extend_from_slice(&self.staged[..end]);
                }
                waiting.lines += taken;
            }
            self.ends.len() - taken
        };
        self.staged.clear();
        self.ends.clear();
        self.metrics.mqtt_publish_dropped("features", dropped);
        self.shared.wake.notify_one();
    }
}

impl Drop for FeatureLane {
    fn drop(&mut self) {
        self.hand_over();
        self.shared.waiting().closing = true;
        self.shared.wake.notify_one();
    }
}

async fn run(dial: Dial, shared: Arc<Shared>, mut backoff: Backoff, metrics: Metrics) {
    let mut logged_failure = false;
    loop {
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, dial.open())
            .await
            .unwrap_or(Err(LaneError::Timeout(CONNECT_TIMEOUT)));
        let error = match opened {
            Ok(stream) => {
                backoff.reset();
                logged_failure = false;
                metrics.mqtt_connected(ROLE, true);
                tracing::info!(host = %dial.host, port = dial.port, "MQTT feature lane connected");
                let served = serve(stream, &dial, &shared, &metrics).await;
                metrics.mqtt_connected(ROLE, false);
                match served {
                    Ok(()) => return,
                    Err(error) => error,
                }
            }
            Err(error) => error,
        };
        metrics.mqtt_connection_failure(ROLE, error.reason());
        if !logged_failure {
            tracing::warn!(
                host = %dial.host, port = dial.port, %error,
                "MQTT feature lane: no connection; reconnecting with back-off"
            );
            logged_failure = true;
        }
        let delay = backoff.next_delay();
        let closing = tokio::select! {
            () = tokio::time::sleep(delay) => shared.waiting().closing,
            () = closed(&shared) => true,
        };
        if closing {
            // No broker to say goodbye to: what waits is lost with the process.
            let lines = std::mem::take(&mut shared.waiting().lines);
            metrics.mqtt_publish_dropped("features", lines);
            return;
        }
    }
}

/// Resolves once the sink's end is dropped.
async fn closed(shared: &Shared) {
    loop {
        shared.wake.notified().await;
        if shared.waiting().closing {
            return;
        }
    }
}

/// Writes what the sink hands over until it is gone (`Ok`) or the
/// connection is lost.
async fn serve(
    stream: Box<dyn Stream>,
    dial: &Dial,
    shared: &Shared,
    metrics: &Metrics,
) -> Result<(), LaneError> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut incoming = Incoming::default();
    let mut chunk = [0u8; 256];
    let mut spare = Vec::new();
    let mut last_write = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    loop {
        let (lines, closing) = {
            let mut waiting = shared.waiting();
            std::mem::swap(&mut waiting.bytes, &mut spare);
            (std::mem::take(&mut waiting.lines), waiting.closing)
        };
        if !spare.is_empty() {
            let written = write(&mut writer, &spare, dial.keep_alive).await;
            spare.clear();
            if let Err(error) = written {
                metrics.mqtt_publish_dropped("features", lines);
                return Err(error);
            }
            last_write = Instant::now();
            // What the sink handed over while this was written.
            continue;
        }
        if closing {
            write(&mut writer, &DISCONNECT, dial.keep_alive).await?;
            writer.shutdown().await?;
            return Ok(());
        }
        let keep_alive = !dial.keep_alive.is_zero();
        // A PINGREQ when nothing was written for a keep-alive; the
        // connection is given up when its PINGRESP is a keep-alive late.
        let deadline = match ping_sent {
            Some(sent) => sent + dial.keep_alive,
            None => last_write + dial.keep_alive,
        };
        tokio::select! {
            () = shared.wake.notified() => {}
            read = reader.read(&mut chunk) => {
                let n = read?;
                if n == 0 {
                    return Err(LaneError::Protocol("the broker closed the connection".into()));
                }
                incoming.bytes.extend_from_slice(&chunk[..n]);
                while let Some((first, _)) = incoming.next_packet()? {
                    match first >> 4 {
                        13 => ping_sent = None,
                        14 => return Err(LaneError::Protocol("the broker disconnected".into())),
                        other => tracing::debug!(packet_type = other, "MQTT feature lane: ignored"),
                    }
                }
            }
            () = tokio::time::sleep_until(deadline), if keep_alive => {
                if ping_sent.is_some() {
                    return Err(LaneError::Timeout(dial.keep_alive));
                }
                write(&mut writer, &PINGREQ, dial.keep_alive).await?;
                let now = Instant::now();
                ping_sent = Some(now);
                last_write = now;
            }
        }
    }
}

/// Writes `bytes`; a write the broker has not taken within a keep-alive
/// (frozen, or a half-open connection) has lost the connection, as it
/// would have for not answering a PINGREQ.
async fn write(
    writer: &mut (impl AsyncWrite + Unpin),
    bytes: &[u8],
    keep_alive: Duration,
) -> Result<(), LaneError> {
    if keep_alive.is_zero() {
        return Ok(writer.write_all(bytes).await?);
    }
    match tokio::time::timeout(keep_alive, writer.write_all(bytes)).await {
        Ok(written) => Ok(written?),
        Err(_) => Err(LaneError::Timeout(keep_alive)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_lengths_use_the_fewest_bytes() {
        for (length, bytes) in [
            (0usize, vec![0x00]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xFF, 0x7F]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (2_097_152, vec![0x80, 0x80, 0x80, 0x01]),
        ] {
            let mut out = Vec::new();
            push_remaining_length(length, &mut out);
            assert_eq!(out, bytes, "{length}");
            let mut incoming = Incoming { bytes: vec![0x30] };
            incoming.bytes.extend_from_slice(&out);
            incoming.bytes.resize(1 + out.len() + length, 7);
            let (first, body) = incoming.next_packet().unwrap().expect("whole");
            assert_eq!((first, body.len()), (0x30, length));
            assert!(incoming.bytes.is_empty());
        }
    }

    #[test]
    fn a_publish_is_read_back_by_rumqttc_in_both_versions() {
        use bytes::BytesMut;
        let payload = vec![b'x'; 300];
        for retain in [false, true] {
            let mut out = Vec::new();
            PublishHeader::new(MqttProtocol::V311, retain).encode(
                "a/d1/features",
                &payload,
                &mut out,
            );
            let mut buf = BytesMut::from(&out[..]);
            let packet = rumqttc::mqttbytes::v4::Packet::read(&mut buf, 1 << 20).unwrap();
            let rumqttc::mqttbytes::v4::Packet::Publish(publish) = packet else {
                panic!("{packet:?}")
            };
            assert_eq!(publish.topic, "a/d1/features");
            assert_eq!(&publish.payload[..], &payload[..]);
            assert_eq!(publish.retain, retain);
            assert_eq!(publish.qos, rumqttc::QoS::AtMostOnce);

            let mut out = Vec::new();
            PublishHeader::new(MqttProtocol::V5, retain).encode(
                "a/d1/features",
                &payload,
                &mut out,
            );
            let mut buf = BytesMut::from(&out[..]);
            let packet = rumqttc::v5::mqttbytes::v5::Packet::read(&mut buf, Some(1 << 20)).unwrap();
            let rumqttc::v5::mqttbytes::v5::Packet::Publish(publish) = packet else {
                panic!("{packet:?}")
            };
            assert_eq!(&publish.topic[..], b"a/d1/features");
            assert_eq!(&publish.payload[..], &payload[..]);
            assert_eq!(publish.retain, retain);
        }
    }

    #[test]
    fn a_connect_is_read_back_by_rumqttc_in_both_versions() {
        use bytes::BytesMut;
        let credentials = ("user".to_string(), "secret".to_string());
        let packet = connect_packet(
            MqttProtocol::V311,
            "box-features",
            Duration::from_secs(30),
            Some(&credentials),
        );
        let mut buf = BytesMut::from(&packet[..]);
        let rumqttc::mqttbytes::v4::Packet::Connect(connect) =
            rumqttc::mqttbytes::v4::Packet::read(&mut buf, 1 << 20).unwrap()
        else {
            panic!("not a CONNECT")
        };
        assert_eq!(connect.client_id, "box-features");
        assert_eq!(connect.keep_alive, 30);
        assert!(connect.clean_session);
        let login = connect.login.expect("credentials");
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("user", "secret")
        );

        let packet = connect_packet(
            MqttProtocol::V5,
            "box-features",
            Duration::from_secs(30),
            None,
        );
        let mut buf = BytesMut::from(&packet[..]);
        let rumqttc::v5::mqttbytes::v5::Packet::Connect(connect, will, login) =
            rumqttc::v5::mqttbytes::v5::Packet::read(&mut buf, Some(1 << 20)).unwrap()
        else {
            panic!("not a CONNECT")
        };
        assert_eq!(connect.client_id, "box-features");
        assert_eq!(connect.keep_alive, 30);
        assert!(connect.clean_start);
        assert!(will.is_none() && login.is_none());
    }
}
