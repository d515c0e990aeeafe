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
use crate::sink::mqtt::config::MAX_FEATURE_CONNECTIONS;
use crate::sink::mqtt::drops::DropWarning;
use crate::sink::mqtt::group::Grouper;
use crate::sink::mqtt::packet::{connect_packet, Incoming, PublishHeader, DISCONNECT, PINGREQ};
use crate::telemetry::Metrics;

/// The first connection's role; the others add `-1`, `-2`, ….
const ROLE: &str = "features";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The lane has a connection: lines dropped now are the broker's
    /// pace, not an outage.
    connected: bool,
}

impl Shared {
    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        // A panic elsewhere while holding it leaves plain bytes behind.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Where and how the lane connects.
struct Dial {
    /// In `accelwatch_mqtt_connected{role}` and the failures' metric:
    /// `features`, then `features-1`, … with several connections.
    role: String,
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
            if let Some((first, body)) = incoming.next_packet().map_err(LaneError::Protocol)? {
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
    /// Lines the queue could take when last looked at, staged ones
    /// included: a line past it is refused before it is even written.
    room: usize,
    /// Lines refused since the last hand-over.
    refused: usize,
    metrics: Metrics,
    role: String,
    warning: DropWarning,
}

/// The lane's task; it ends after the sink's end is dropped and what waits
/// is written (or at once while the broker is away).
pub struct LaneTask {
    pub task: tokio::task::JoinHandle<()>,
}

impl FeatureLane {
    /// One lane of `settings`, as `client_id`, reported as `role`.
    fn open(
        settings: &LaneSettings<'_>,
        (role, client_id): (String, &str),
        backoff: Backoff,
        metrics: Metrics,
    ) -> (Self, LaneTask) {
        let LaneSettings {
            endpoint,
            protocol,
            retain,
            queue,
            lines_per_message,
            linger,
            ..
        } = *settings;
        let header = PublishHeader::new(protocol, retain);
        let grouper =
            (lines_per_message > 1).then(|| Grouper::new(header, lines_per_message, linger));
        let tls = match &endpoint.transport {
            Transport::Tls(TlsConfiguration::Rustls(config)) => Some(config.clone()),
            _ => None,
        };
        let dial = Dial {
            role: role.clone(),
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
        metrics.mqtt_connected(&dial.role, false);
        let task = tokio::spawn(run(dial, shared.clone(), grouper, backoff, metrics.clone()));
        let lane = Self {
            shared,
            header,
            staged: Vec::new(),
            ends: Vec::new(),
            queue,
            room: 0,
            refused: 0,
            metrics,
            role,
            warning: DropWarning::new(),
        };
        (lane, LaneTask { task })
    }

    /// Whether a line staged now would be handed over: the queue is looked
    /// at again (one lock) only once the room last seen is used up. Under
    /// overload a third of the lines were written and then dropped at the
    /// hand-over; [`Self::refuse`] drops them before they are written.
    pub fn has_room(&mut self) -> bool {
        if self.ends.len() < self.room {
            return true;
        }
        self.room = self.queue.saturating_sub(self.shared.waiting().lines);
        self.ends.len() < self.room
    }

    /// A line there was no room for, not written: counted as dropped at the
    /// next hand-over, as a line staged beyond the room would be.
    pub fn refuse(&mut self) {
        self.refused += 1;
    }

    /// Stages one line; it goes to the task at the next [`Self::hand_over`].
    pub fn push(&mut self, topic: &str, line: &[u8]) {
        self.push_with(topic, |out| {
            out.extend_from_slice(line);
            Ok(())
        })
        .expect("a slice is appended without error");
    }

    /// Stages one line that `write` appends in place, in its PUBLISH; a
    /// line `write` fails on is not staged.
    pub fn push_with(
        &mut self,
        topic: &str,
        write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        self.header.encode_with(topic, &mut self.staged, write)?;
        self.ends.push(self.staged.len());
        Ok(())
    }

    /// Lines staged since the last hand-over.
    #[cfg(test)]
    pub(crate) fn staged_lines(&self) -> usize {
        self.ends.len()
    }

    /// Hands the staged lines to the task, as many as the queue has room
    /// for; the rest are dropped and counted.
    pub fn hand_over(&mut self) {
        if self.ends.is_empty() && self.refused == 0 {
            return;
        }
        let (dropped, connected) = {
            let mut waiting = self.shared.waiting();
            let room = self.queue.saturating_sub(waiting.lines);
            let taken = room.min(self.ends.len());
            self.room = room - taken;
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
            let refused = std::mem::take(&mut self.refused);
            (self.ends.len() - taken + refused, waiting.connected)
        };
        self.staged.clear();
        self.ends.clear();
        self.metrics.mqtt_publish_dropped("features", dropped);
        if let Some(warning) = self
            .warning
            .note(dropped, connected, std::time::Instant::now())
        {
            tracing::warn!(role = %self.role, "MQTT feature lane: {warning}");
        }
        self.shared.wake.notify_one();
    }
}

/// The feature lines' connections (`output.mqtt.features_connections`),
/// each device's lines on one of them, chosen by its topic.
pub struct FeatureLanes {
    lanes: Vec<FeatureLane>,
}

/// Where and as whom the lanes connect, and what each holds back.
pub struct LaneSettings<'a> {
    pub endpoint: &'a Endpoint,
    pub protocol: MqttProtocol,
    /// The first lane's client id; the others add `-1`, `-2`, ….
    pub client_id: String,
    pub retain: bool,
    pub connections: usize,
    /// Lines waiting, per connection.
    pub queue: usize,
    /// Lines of a topic in one message, and how long the first waits for
    /// the others (`features_lines_per_message`, `features_linger_ms`).
    pub lines_per_message: usize,
    pub linger: Duration,
}

impl FeatureLanes {
    /// `settings.connections` lanes (1 to 16), each with a task and a
    /// back-off of its own.
    pub fn open(
        settings: LaneSettings<'_>,
        backoff: impl Fn() -> Backoff,
        metrics: &Metrics,
    ) -> (Self, Vec<LaneTask>) {
        let connections = settings.connections.clamp(1, MAX_FEATURE_CONNECTIONS);
        let (lanes, tasks) = (0..connections)
            .map(|index| {
                let (role, client_id) = match index {
                    0 => (ROLE.to_string(), settings.client_id.clone()),
                    n => (format!("{ROLE}-{n}"), format!("{}-{n}", settings.client_id)),
                };
                FeatureLane::open(&settings, (role, &client_id), backoff(), metrics.clone())
            })
            .unzip();
        (Self { lanes }, tasks)
    }

    /// Stages one line on its topic's lane: a topic is always on the same
    /// one, so MQTT's order per connection and topic is each device's.
    pub fn push(&mut self, topic: &str, line: &[u8]) {
        let index = lane_of(topic, self.lanes.len());
        self.lanes[index].push(topic, line);
    }

    /// The lane of `topic` when it has room for a line (see
    /// [`FeatureLane::has_room`]); else the line is counted as dropped
    /// there, and need not be written.
    pub fn admit(&mut self, topic: &str) -> Option<usize> {
        let index = lane_of(topic, self.lanes.len());
        let lane = &mut self.lanes[index];
        if lane.has_room() {
            Some(index)
        } else {
            lane.refuse();
            None
        }
    }

    /// Stages one line of `topic` on `lane`, which [`Self::admit`] gave,
    /// written in place by `write`.
    pub fn push_on(
        &mut self,
        lane: usize,
        topic: &str,
        write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        self.lanes[lane].push_with(topic, write)
    }

    /// Hands every lane's staged lines to its task.
    pub fn hand_over(&mut self) {
        for lane in &mut self.lanes {
            lane.hand_over();
        }
    }

    /// Lines staged since the last hand-over, on every lane.
    #[cfg(test)]
    pub(crate) fn staged_lines(&self) -> usize {
        self.lanes.iter().map(FeatureLane::staged_lines).sum()
    }
}

/// The lane of `topic` among `lanes`: FNV-1a of the topic, so the same in
/// every run, in a few ns a topic.
fn lane_of(topic: &str, lanes: usize) -> usize {
    if lanes <= 1 {
        return 0;
    }
    let hash = topic.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % lanes as u64) as usize
}

impl Drop for FeatureLane {
    fn drop(&mut self) {
        self.hand_over();
        self.shared.waiting().closing = true;
        self.shared.wake.notify_one();
    }
}

async fn run(
    dial: Dial,
    shared: Arc<Shared>,
    mut grouper: Option<Grouper>,
    mut backoff: Backoff,
    metrics: Metrics,
) {
    let mut logged_failure = false;
    loop {
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, dial.open())
            .await
            .unwrap_or(Err(LaneError::Timeout(CONNECT_TIMEOUT)));
        let error = match opened {
            Ok(stream) => {
                backoff.reset();
                logged_failure = false;
                metrics.mqtt_connected(&dial.role, true);
                shared.waiting().connected = true;
                tracing::info!(host = %dial.host, port = dial.port, role = %dial.role, "MQTT feature lane connected");
                let served = serve(stream, &dial, &shared, grouper.as_mut(), &metrics).await;
                metrics.mqtt_connected(&dial.role, false);
                shared.waiting().connected = false;
                match served {
                    Ok(()) => return,
                    Err(error) => error,
                }
            }
            Err(error) => error,
        };
        metrics.mqtt_connection_failure(&dial.role, error.reason());
        if !logged_failure {
            tracing::warn!(
                host = %dial.host, port = dial.port, role = %dial.role, %error,
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
            let grouped = grouper.as_ref().map_or(0, Grouper::waiting);
            metrics.mqtt_publish_dropped("features", lines + grouped);
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
    mut grouper: Option<&mut Grouper>,
    metrics: &Metrics,
) -> Result<(), LaneError> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut incoming = Incoming::default();
    let mut chunk = [0u8; 256];
    let mut spare = Vec::new();
    let mut grouped = Vec::new();
    let mut last_write = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    loop {
        let (mut lines, closing) = {
            let mut waiting = shared.waiting();
            std::mem::swap(&mut waiting.bytes, &mut spare);
            (std::mem::take(&mut waiting.lines), waiting.closing)
        };
        if let Some(grouper) = grouper.as_deref_mut() {
            // The lines handed over join their topics' groups; what is
            // written is the groups full or due.
            let now = Instant::now();
            grouped.clear();
            lines = grouper.add(&spare, now, &mut grouped) + grouper.seal_due(now, &mut grouped);
            if closing {
                lines += grouper.seal_all(&mut grouped);
            }
            spare.clear();
            std::mem::swap(&mut spare, &mut grouped);
        }
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
        let group_due = grouper.as_deref().and_then(Grouper::next_deadline);
        tokio::select! {
            () = shared.wake.notified() => {}
            () = tokio::time::sleep_until(group_due.unwrap_or(deadline)), if group_due.is_some() => {}
            read = reader.read(&mut chunk) => {
                let n = read?;
                if n == 0 {
                    return Err(LaneError::Protocol("the broker closed the connection".into()));
                }
                incoming.bytes.extend_from_slice(&chunk[..n]);
                while let Some((first, _)) = incoming.next_packet().map_err(LaneError::Protocol)? {
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
    fn a_topic_keeps_its_lane_and_devices_spread_over_all() {
        assert_eq!(lane_of("accelwatch/d1/features", 1), 0);
        // FNV-1a's own values (computed apart, in Python): a device keeps
        // its connection across restarts and versions.
        let lanes: Vec<usize> = (0..6)
            .map(|i| lane_of(&format!("accelwatch/dev-{i}/features"), 4))
            .collect();
        assert_eq!(lanes, [3, 2, 1, 0, 3, 2]);
        for lanes in [2, 3, 4, MAX_FEATURE_CONNECTIONS] {
            let mut per_lane = vec![0usize; lanes];
            for device in 0..1000 {
                let topic = format!("accelwatch/dev-{device}/features");
                per_lane[lane_of(&topic, lanes)] += 1;
            }
            let even = 1000 / lanes;
            assert!(
                per_lane
                    .iter()
                    .all(|&n| n > even * 2 / 3 && n < even * 4 / 3),
                "{lanes} lanes: {per_lane:?}"
            );
        }
    }
}
