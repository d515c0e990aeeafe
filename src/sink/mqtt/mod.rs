//! MQTT output: each window's JSON line (as the jsonl sink writes it) on
//! the features topic, each alert transition on the alert topic, both per
//! device, and a retained status (`online` on every connect, `offline` as
//! the last will and on shutdown).
//!
//! Sinks run on a blocking thread, so publishing never waits: messages go
//! into the [`outbox::Outbox`], which the [`connection`] task hands to
//! rumqttc while the broker is there. Features are best effort: beyond
//! `output.mqtt.queue` waiting, new ones are dropped and counted in
//! `accelwatch_mqtt_publish_dropped_total{kind}` rather than stalling the
//! pipeline behind an outage. Alerts and status records are kept until the
//! broker acknowledges them (QoS 1) and published again, in order, after a
//! lost connection; each carries a rising `msg_id` by which a subscriber
//! drops the duplicates QoS 1 allows. With `output.mqtt.spool_dir`, alerts
//! are also fsynced to the [`spool`] first, and a restarted daemon
//! publishes what its predecessor could not.

pub mod config;
pub mod connection;
pub mod outbox;
pub mod spool;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::mqtt::broker::{BrokerSettings, MqttError};
use crate::mqtt::client::{Session, Will};
use crate::mqtt::topic::{Template, TopicError};
use crate::record::{Output, StatusRecord};
use crate::sink::mqtt::config::MqttOutputConfig;
use crate::sink::mqtt::connection::{Connection, Shared};
use crate::sink::mqtt::outbox::{Message, Outbox};
use crate::sink::mqtt::spool::Spool;
use crate::sink::Sink;
use crate::telemetry::Metrics;

const ROLE: &str = "output";

/// Requests rumqttc itself may hold; the outbox holds the rest.
const RUMQTTC_QUEUE: usize = 64;

pub struct MqttSink {
    shared: Arc<Shared>,
    /// The next `msg_id`.
    next_id: u64,
    features: Template,
    alert: Template,
    features_qos: u8,
    features_retain: bool,
    alert_qos: u8,
    alert_retain: bool,
    status_topic: String,
    metrics: Metrics,
    warned: crate::logging::RateLimited,
    /// The longest feature line so far.
    line_bytes: usize,
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

fn status_value(online: bool, model: Option<&StatusRecord>) -> serde_json::Value {
    let mut payload = serde_json::json!({
        "status": if online { "online" } else { "offline" },
        "version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(model) = model {
        payload["model_state"] = model.state.into();
        payload["collected"] = model.collected.into();
        payload["target"] = model.target.into();
        payload["progress"] = model.progress.into();
        if let Some(id) = &model.model {
            payload["model"] = id.as_ref().into();
        }
        if let Some(drift) = model.drift {
            payload["drift"] = drift.into();
        }
        if let Some(scope) = &model.scope {
            payload["scope"] = scope.as_ref().into();
        }
    }
    payload
}

/// `value` (a JSON object) with its `msg_id`.
fn with_msg_id(mut value: serde_json::Value, id: u64) -> Vec<u8> {
    if let Some(object) = value.as_object_mut() {
        object.insert("msg_id".into(), id.into());
    }
    serde_json::to_vec(&value).expect("JSON")
}

/// Where `msg_id`s start: past the spool's, and past any earlier run's
/// (microseconds of the wall clock, so they rise across restarts even
/// without a spool, as long as the clock does).
fn first_id(spooled: u64) -> u64 {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    (spooled + 1).max(now_us)
}

/// Where a scope's status is retained: `<status topic>/device/<id>` or
/// `<status topic>/group/<name>` (the id made safe for one topic level).
pub fn scope_status_topic(status_topic: &str, scope: &str) -> String {
    let (kind, name) = scope.split_once(':').unwrap_or(("scope", scope));
    format!(
        "{status_topic}/{kind}/{}",
        crate::mqtt::topic::sanitize_device(name)
    )
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
    pub fn open(
        output: &MqttOutputConfig,
        fallback: BrokerSettings,
        metrics: Metrics,
    ) -> Result<(Self, JoinHandle<()>), MqttError> {
        let mut broker = fallback;
        if let Some(url) = &output.url {
            broker.url = url.clone();
            broker.key = "output.mqtt";
            broker.auth = output.auth.clone();
        }
        if let Some(keep_alive) = output.keep_alive_s {
            broker.keep_alive = Duration::from_secs(keep_alive);
        }
        let (client, events) = broker.connect(Session {
            protocol: output.protocol.unwrap_or(broker.protocol),
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
        let (spool, last_id) = match &output.spool_dir {
            Some(dir) => {
                let (spool, replay) =
                    Spool::open(dir, output.spool_max_bytes).map_err(|e| MqttError::Read {
                        key: "output.mqtt.spool_dir".into(),
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
                    outbox.push_reliable(record.id, record.message, true);
                }
                (Some(Mutex::new(spool)), replay.last_id)
            }
            None => (None, 0),
        };
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
            backoff: Backoff::new(broker.backoff_min, broker.backoff_max),
            url: broker.url.clone(),
            metrics: metrics.clone(),
        };
        let task = tokio::spawn(connection.run());
        let sink = Self {
            shared,
            next_id: first_id(last_id),
            features,
            alert,
            features_qos: output.features_qos,
            features_retain: output.features_retain,
            alert_qos: output.alert_qos,
            alert_retain: output.alert_retain,
            status_topic: output.status_topic.clone(),
            metrics,
            warned: crate::logging::RateLimited::new(Duration::from_secs(60)),
            line_bytes: 256,
        };
        Ok((sink, task))
    }

    fn feature(&mut self, topic: String, payload: Vec<u8>) {
        let message = Message {
            topic,
            qos: self.features_qos,
            retain: self.features_retain,
            payload,
        };
        if !self.shared.outbox().push_feature(message) {
            self.metrics.mqtt_publish_dropped("features");
            return;
        }
        self.shared.wake.notify_one();
    }

    /// Keeps an alert (`spool`: in the spool too) or a status record until
    /// the broker has it.
    fn reliable(&mut self, kind: &'static str, message: Message, spool: bool) {
        let id = self.next_id;
        self.next_id += 1;
        let mut spooled = false;
        if spool {
            if let Some(mut spool) = self.shared.spool() {
                match spool.append(id, &message) {
                    Ok(true) => {
                        spooled = true;
                        self.metrics.mqtt_spool("spooled", 1);
                        self.metrics.mqtt_spool_bytes(spool.bytes());
                    }
                    Ok(false) => {
                        self.metrics.mqtt_spool("dropped", 1);
                        self.metrics.mqtt_publish_dropped(kind);
                        if let Some(held_back) =
                            self.warned.check("spool full", std::time::Instant::now())
                        {
                            tracing::warn!(
                                held_back,
                                "MQTT output: the spool is full (output.mqtt.spool_max_bytes); \
                                 an alert was dropped"
                            );
                        }
                        return;
                    }
                    // Kept in memory instead: it still survives an outage.
                    Err(error) => tracing::error!(%error, "MQTT output: cannot spool an alert"),
                }
            }
        }
        if !self.shared.outbox().push_reliable(id, message, spooled) {
            self.metrics.mqtt_publish_dropped(kind);
            return;
        }
        self.shared.wake.notify_one();
    }
}

impl Sink for MqttSink {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn write(&mut self, output: &Output) -> std::io::Result<()> {
        match output {
            Output::Window(w) => {
                let topic = self.features.render(&w.device);
                // Sized to the longest line so far: one allocation a line.
                let mut payload = Vec::with_capacity(self.line_bytes);
                w.write_json(&mut payload)?;
                self.line_bytes = self.line_bytes.max(payload.len());
                self.feature(topic, payload);
            }
            Output::Alert(a) => {
                let message = Message {
                    topic: self.alert.render(&a.device),
                    qos: self.alert_qos,
                    retain: self.alert_retain,
                    payload: with_msg_id(serde_json::to_value(output)?, self.next_id),
                };
                self.reliable("alert", message, true);
            }
            // The retained status says "online" and how the model stands;
            // each scope's under a topic of its own, so none hides another.
            Output::Status(status) => {
                let message = Message {
                    topic: match &status.scope {
                        Some(scope) => scope_status_topic(&self.status_topic, scope),
                        None => self.status_topic.clone(),
                    },
                    qos: 1,
                    retain: true,
                    payload: with_msg_id(status_value(true, Some(status)), self.next_id),
                };
                self.reliable("status", message, false);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for MqttSink {
    /// Lets the connection say goodbye (a retained `offline`, then
    /// DISCONNECT, so the broker does not publish the will as well) once
    /// everything is acknowledged.
    fn drop(&mut self) {
        let waiting = {
            let mut outbox = self.shared.outbox();
            outbox.closing = true;
            outbox.unacknowledged()
        };
        if waiting > 0 {
            tracing::info!(
                messages = waiting,
                spooled = self.shared.spool.is_some(),
                "MQTT output: alerts and status wait for the broker's acknowledgement"
            );
        }
        self.shared.wake.notify_one();
    }
}

/// How long shutdown waits for the final status to reach the broker.
pub const GOODBYE_TIMEOUT: Duration = Duration::from_secs(3);
