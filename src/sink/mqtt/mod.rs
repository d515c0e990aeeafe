//! MQTT output: each window's JSON line (as the jsonl sink writes it) on
//! the features topic, each alert transition on the alert topic, both per
//! device, and a retained status (`online` on every connect, `offline` as
//! the last will and on shutdown).
//!
//! Sinks run on a blocking thread, so publishing never waits. At
//! `features_qos = 0` (the default) the feature lines go through
//! connections of their own (one unless `features_connections` says more),
//! the [`lane`]: encoded on the sink's thread, written a batch at a time. Otherwise, and for alerts and status,
//! messages go into the [`outbox::Outbox`], which the [`connection`] task
//! hands to rumqttc while the broker is there. Features are best effort:
//! beyond `output.mqtt.queue` waiting, new ones are dropped and counted in
//! `accelwatch_mqtt_publish_dropped_total{kind}` rather than stalling the
//! pipeline behind an outage. Alerts and status records are kept until the
//! broker acknowledges them (QoS 1) and published again, in order, after a
//! lost connection; each carries a rising `msg_id` (from a counter kept in
//! the state directory, never from the clock) by which a subscriber drops
//! the duplicates QoS 1 allows. Unless `output.mqtt.spool_dir = "off"`,
//! alerts are also fsynced to the [`spool`] first, and a restarted daemon
//! publishes what its predecessor could not. That wait happens on a thread
//! of its own (`reliable.rs`), so the windows' lines never queue behind it. An alert that cannot be kept
//! is counted in `accelwatch_alerts_lost_total{reason}` and logged.

pub mod config;
pub mod connection;
mod drops;
mod group;
pub mod lane;
pub mod outbox;
mod packet;
mod reliable;
pub use reliable::scope_status_topic;
pub mod spool;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::mqtt::broker::{BrokerSettings, MqttError};
use crate::mqtt::client::{Session, Will};
use crate::mqtt::topic::{Template, TopicError};
use crate::record::{Output, StatusRecord, WindowRecord};
use crate::sequence::Sequence;
use crate::sink::mqtt::config::MqttOutputConfig;
use crate::sink::mqtt::connection::{Connection, Shared};
use crate::sink::mqtt::lane::{FeatureLanes, LaneSettings, LaneTask};
use crate::sink::mqtt::outbox::{Message, Outbox};
use crate::sink::mqtt::reliable::{status_value, MsgIds, ReliablePath, ReliableWriter};
use crate::sink::mqtt::spool::Spool;
use crate::sink::Sink;
use crate::telemetry::events::AlertsLost;
use crate::telemetry::Metrics;

const ROLE: &str = "output";

/// Requests rumqttc itself may hold; the outbox holds the rest.
const RUMQTTC_QUEUE: usize = 64;

pub struct MqttSink {
    shared: Arc<Shared>,
    features: Template,
    features_qos: u8,
    features_retain: bool,
    /// Alerts and status records go through their own thread.
    reliable: ReliableWriter,
    metrics: Metrics,
    /// The feature lines' own connections, at QoS 0.
    lanes: Option<FeatureLanes>,
    /// The feature line's topic, kept between windows.
    topic: String,
    /// The longest feature line so far.
    line_bytes: usize,
    /// Feature lines are in the outbox that the connection task has not
    /// been woken for: it is woken once a batch (at `flush`), not once a
    /// line.
    unannounced: bool,
}

/// The status payload: `{"status": "online"|"offline", "version": ...}`.
pub fn status_payload(online: bool) -> Vec<u8> {
    status_payload_with(online, None)
}

/// The status payload, with the model's state (online training) when known:
/// `{"status": "online", "version": ..., "model_state": "calibrating",
/// "collected": 420, "target": 2000, "progress": 0.21}`.
pub fn status_payload_with(online: bool, model: Option<&StatusRecord>) -> Vec<u8> {
    serde_json::to_vec(&status_value(online, model)).expect("static JSON")
}

/// The file the `msg_id` counter is kept in, under the state directory.
pub const MSG_ID_FILE: &str = "msg_id";

/// The `msg_id`s, past the spool's (`spooled`) and past any earlier run's.
/// A counter made anew starts at the wall clock in microseconds: past the
/// ids of versions that took them from the clock, so subscribers keep
/// what follows an upgrade; the clock is not read again after that.
fn msg_ids(dir: Option<&Path>, spooled: u64, clock: &Clock) -> Result<MsgIds, MqttError> {
    let Some(dir) = dir else {
        return Ok(MsgIds::Counted((spooled + 1).max(clock.unix_us())));
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| MqttError::State {
            key: "pipeline.state_dir".into(),
            path,
            cause,
        }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let sequence = Sequence::open(&dir.join(MSG_ID_FILE), spooled + 1, clock.unix_us())
        .map_err(|e| io(&e.path)(e.cause))?;
    Ok(MsgIds::Kept(sequence))
}

fn setting(key: &str) -> impl Fn(TopicError) -> MqttError + '_ {
    move |error| MqttError::Setting {
        key: key.into(),
        message: error.0,
    }
}

impl MqttSink {
    /// The sink and the task driving its connection; the task ends after
    /// the sink is dropped and its final `offline` status is sent (or
    /// never, while the broker is away: bound the wait for it). Without a
    /// url of its own, `output` publishes through the broker of `fallback`
    /// (the MQTT input's settings).
    /// `state_dir` holds the `msg_id` counter and, unless
    /// `output.mqtt.spool_dir` says otherwise, the spool.
    pub fn open(
        output: &MqttOutputConfig,
        state_dir: Option<&Path>,
        fallback: BrokerSettings,
        metrics: Metrics,
        clock: &Clock,
    ) -> Result<(Self, OutputTask), MqttError> {
        let mut broker = fallback;
        if let Some(url) = &output.url {
            broker.url = url.clone();
            broker.key = "output.mqtt";
            broker.auth = output.auth.clone();
        }
        if let Some(keep_alive) = output.keep_alive_s {
            broker.keep_alive = Duration::from_secs(keep_alive);
        }
        let protocol = output.protocol.unwrap_or(broker.protocol);
        let backoff = || Backoff::new(broker.backoff_min, broker.backoff_max);
        let (lanes, lane_tasks) = if output.features_qos == 0 {
            let settings = LaneSettings {
                endpoint: &broker.endpoint()?,
                protocol,
                client_id: format!("{}-features", output.client_id),
                retain: output.features_retain,
                connections: output.features_connections,
                queue: output.queue,
                lines_per_message: output.features_lines_per_message,
                linger: Duration::from_millis(output.features_linger_ms),
            };
            let (lanes, tasks) = FeatureLanes::open(settings, backoff, &metrics);
            (Some(lanes), tasks)
        } else {
            (None, Vec::new())
        };
        let (client, events) = broker.connect(Session {
            protocol,
            client_id: output.client_id.clone(),
            // Nothing is left to a session: the outbox sends again what
            // the broker did not acknowledge.
            clean_session: true,
            // The will tells subscribers the daemon vanished without a goodbye.
            will: Some(Will {
                topic: output.status_topic.clone(),
                payload: status_payload(false),
                qos: 1,
                retain: true,
            }),
            capacity: RUMQTTC_QUEUE.min(output.queue),
        })?;
        let features = Template::parse(&output.features_topic)
            .map_err(setting("output.mqtt.features_topic"))?;
        let alert =
            Template::parse(&output.alert_topic).map_err(setting("output.mqtt.alert_topic"))?;
        let mut outbox = Outbox::new(output.queue, output.queue);
        let spool_dir = output.spool_path(state_dir);
        let (spool, last_id) = match &spool_dir {
            Some(dir) => {
                let (spool, replay) =
                    Spool::open(dir, output.spool_max_bytes).map_err(|e| MqttError::State {
                        key: output.spool_key().into(),
                        path: e.path,
                        cause: e.cause,
                    })?;
                metrics.mqtt_spool_corrupt(replay.corrupt_bytes);
                metrics.mqtt_spool("replayed", replay.records.len() as u64);
                metrics.mqtt_spool_bytes(spool.bytes());
                if !replay.records.is_empty() {
                    tracing::info!(
                        alerts = replay.records.len(),
                        dir = %dir.display(),
                        "MQTT output: alerts of an earlier run are published when the broker is there"
                    );
                }
                for record in replay.records {
                    outbox.push_alert(record.id, record.message, true);
                }
                (Some(Mutex::new(spool)), replay.last_id)
            }
            None => {
                // Said once; each alert actually lost is a warning.
                tracing::info!(
                    "MQTT output: no spool (output.mqtt.spool_dir = \"off\", or no state \
                     directory): alerts not acknowledged at shutdown are lost"
                );
                (None, 0)
            }
        };
        let ids = msg_ids(state_dir.or(spool_dir.as_deref()), last_id, clock)?;
        let shared = Arc::new(Shared {
            outbox: Mutex::new(outbox),
            spool,
            wake: tokio::sync::Notify::new(),
        });
        metrics.mqtt_connected(ROLE, false);
        let connection = Connection {
            client,
            events,
            shared: shared.clone(),
            status_topic: output.status_topic.clone(),
            hello: status_payload(true),
            goodbye: status_payload(false),
            backoff: backoff(),
            url: broker.url.clone(),
            metrics: metrics.clone(),
        };
        let task = OutputTask {
            task: tokio::spawn(connection.run()),
            lanes: lane_tasks,
            shared: shared.clone(),
            metrics: metrics.clone(),
        };
        let reliable = ReliableWriter::spawn(
            ReliablePath {
                shared: shared.clone(),
                ids,
                alert,
                alert_qos: output.alert_qos,
                alert_retain: output.alert_retain,
                status_topic: output.status_topic.clone(),
                metrics: metrics.clone(),
                warned: crate::logging::RateLimited::new(Duration::from_secs(60)),
            },
            output.queue,
        )
        .map_err(|cause| MqttError::State {
            key: "output.mqtt".into(),
            path: Default::default(),
            cause,
        })?;
        let sink = Self {
            shared,
            features,
            features_qos: output.features_qos,
            features_retain: output.features_retain,
            reliable,
            metrics,
            lanes,
            topic: String::new(),
            line_bytes: 256,
            unannounced: false,
        };
        Ok((sink, task))
    }

    /// A feature line at QoS 1: through the outbox, acknowledged.
    fn feature_through_outbox(&mut self, w: &WindowRecord) -> std::io::Result<()> {
        let topic = self.features.render(&w.device);
        // Sized to the longest line so far: one allocation a line.
        let mut payload = Vec::with_capacity(self.line_bytes);
        w.write_json(&mut payload)?;
        self.line_bytes = self.line_bytes.max(payload.len());
        let message = Message {
            topic,
            qos: self.features_qos,
            retain: self.features_retain,
            payload,
        };
        if self.shared.outbox().push_feature(message) {
            self.unannounced = true;
        } else {
            self.metrics.mqtt_publish_dropped("features", 1);
        }
        Ok(())
    }

    /// Wakes the connection task for the feature lines written since the
    /// last wake-up.
    fn announce(&mut self) {
        if let Some(lanes) = &mut self.lanes {
            lanes.hand_over();
        }
        if std::mem::take(&mut self.unannounced) {
            self.shared.wake.notify_one();
        }
    }
}

impl Sink for MqttSink {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn write(&mut self, output: &Output) -> std::io::Result<()> {
        match output {
            Output::Window(w) => match &mut self.lanes {
                Some(lanes) => {
                    self.features.render_into(&w.device, &mut self.topic);
                    // A line its lane has no room for is counted, not written.
                    if let Some(lane) = lanes.admit(&self.topic) {
                        lanes.push_on(lane, &self.topic, |out| w.write_json(out))?;
                    }
                }
                None => self.feature_through_outbox(w)?,
            },
            Output::Alert(_) | Output::Status(_) => {
                // An alert that waits for room must not hold back the lines
                // before it.
                self.announce();
                self.reliable.send(output)?
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.announce();
        Ok(())
    }
}

impl Drop for MqttSink {
    /// Lets the connection say goodbye (a retained `offline`, then
    /// DISCONNECT, so the broker does not publish the will as well) once
    /// everything is acknowledged.
    fn drop(&mut self) {
        self.announce();
        // The lanes write what waits, then disconnect.
        self.lanes = None;
        // Every alert and status queued is in the outbox first.
        self.reliable.finish();
        let waiting = {
            let mut outbox = self.shared.outbox();
            outbox.closing = true;
            outbox.unacknowledged()
        };
        if waiting > 0 {
            tracing::info!(
                messages = waiting,
                "MQTT output: alerts and status wait for the broker's acknowledgement"
            );
        }
        self.shared.wake.notify_one();
    }
}

/// How long shutdown waits for the final status to reach the broker.
pub const GOODBYE_TIMEOUT: Duration = Duration::from_secs(3);

/// Waits for `task` until `deadline`, else aborts it, saying what of
/// `what` was not sent.
async fn join_by(deadline: tokio::time::Instant, task: &mut JoinHandle<()>, what: &str) {
    if tokio::time::timeout_at(deadline, &mut *task).await.is_err() {
        tracing::warn!("MQTT output: {what} could not be sent in time");
        task.abort();
    }
}

/// The output's connection task, and what it leaves undelivered.
pub struct OutputTask {
    task: JoinHandle<()>,
    lanes: Vec<LaneTask>,
    shared: Arc<Shared>,
    metrics: Metrics,
}

impl OutputTask {
    /// Once the sink is dropped: waits at most `timeout` for everything to
    /// be acknowledged and the goodbye said, then counts and logs the
    /// alerts lost with the process (those in memory only; the spooled
    /// ones are published by the next run).
    pub async fn finish(mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        join_by(deadline, &mut self.task, "the offline status").await;
        for mut lane in std::mem::take(&mut self.lanes) {
            join_by(deadline, &mut lane.task, "the last feature lines").await;
        }
        let outbox = self.shared.outbox();
        let lost = outbox.alerts_in_memory();
        let spooled = outbox.unacknowledged_alerts() - lost;
        drop(outbox);
        if lost > 0 {
            self.metrics.alerts_lost(AlertsLost::Shutdown, lost as u64);
            tracing::warn!(
                alerts = lost,
                "MQTT output: alerts the broker did not acknowledge before shutdown are lost \
                 (no spool: output.mqtt.spool_dir)"
            );
        }
        if spooled > 0 {
            tracing::info!(
                alerts = spooled,
                "MQTT output: alerts wait in the spool for the next run"
            );
        }
    }

    /// Stops the task without waiting.
    pub fn abort(&self) {
        self.task.abort();
        for lane in &self.lanes {
            lane.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MqttInputConfig;
    use crate::record::{AlertRecord, ModelState};

    fn alert(seq: u64) -> Output {
        Output::Alert(AlertRecord {
            kind: "alert",
            event: "raise",
            device: Arc::from("d1"),
            seq,
            t: 0.0,
            score: 2.0,
            threshold: 0.3,
            model: Arc::from("m"),
            evidence: None,
            detail: None,
        })
    }

    fn window(seq: u64) -> Output {
        Output::Window(crate::record::WindowRecord {
            kind: "window",
            device: Arc::from("d1"),
            seq,
            t_start: 0.0,
            t_end: 2540.0,
            score: 0.1,
            threshold: 0.3,
            anomaly: false,
            over_threshold: false,
            latent: smallvec::smallvec![0.5; 4],
            channel_error: crate::record::ChannelErrors {
                names: Arc::from(vec!["ax".to_string()]),
                values: smallvec::smallvec![0.1],
            },
            model: Arc::from("m"),
            activity: None,
            confidence: None,
            timeline: Default::default(),
        })
    }

    /// An alert waits for the spool (here held, as during a slow fsync)
    /// on the alert thread: the sink goes on with the windows behind it,
    /// and the alert is kept once the spool is free.
    #[tokio::test]
    async fn an_alert_waiting_for_the_spool_holds_up_no_window() {
        let state = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let (mut sink, task) = MqttSink::open(
            &unreachable(16),
            Some(state.path()),
            BrokerSettings::input(&MqttInputConfig::default()),
            metrics.clone(),
            &Clock::system(),
        )
        .unwrap();
        let shared = sink.shared.clone();
        let busy = shared.spool().expect("a spool in the state directory");
        let writer = std::thread::spawn(move || {
            sink.write(&alert(1)).unwrap();
            for seq in 0..3 {
                sink.write(&window(seq)).unwrap();
            }
            sink
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !writer.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(writer.is_finished(), "the sink waited for the spool");
        let sink = writer.join().unwrap();
        let lane = sink
            .lanes
            .as_ref()
            .expect("QoS 0 lines take their own connection");
        assert_eq!(lane.staged_lines(), 3);
        assert_eq!(
            shared.outbox().unacknowledged(),
            0,
            "the alert is still at the spool"
        );
        drop(busy);
        drop(sink);
        assert_eq!(shared.outbox().unacknowledged(), 1, "the alert, spooled");
        let text = metrics.render();
        assert!(
            text.contains("accelwatch_mqtt_spool_alerts_total{event=\"spooled\"} 1"),
            "{text}"
        );
        task.abort();
    }

    /// A broker that is never there: nothing is acknowledged.
    fn unreachable(queue: usize) -> MqttOutputConfig {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        MqttOutputConfig {
            url: Some(format!("mqtt://127.0.0.1:{port}")),
            queue,
            ..MqttOutputConfig::default()
        }
    }

    #[tokio::test]
    async fn statuses_in_a_long_outage_never_push_out_an_alert() {
        let metrics = Metrics::new();
        let (mut sink, task) = MqttSink::open(
            &unreachable(4),
            None,
            BrokerSettings::input(&MqttInputConfig::default()),
            metrics.clone(),
            &Clock::system(),
        )
        .unwrap();
        // Many more statuses of one scope than the cap, then alerts.
        for collected in 0..10 {
            let status = StatusRecord::new(ModelState::Calibrating, collected, 100);
            sink.write(&Output::Status(status)).unwrap();
        }
        sink.write(&alert(1)).unwrap();
        sink.write(&alert(2)).unwrap();
        // Dropping the sink waits for its alert thread to have kept them.
        let shared = sink.shared.clone();
        drop(sink);
        let text = metrics.render();
        assert!(
            text.contains("accelwatch_mqtt_publish_dropped_total{kind=\"alert\"} 0")
                || !text.contains("kind=\"alert\""),
            "{text}"
        );
        assert_eq!(
            shared.outbox().unacknowledged(),
            3,
            "the newest status and both alerts"
        );
        task.abort();
    }
}
