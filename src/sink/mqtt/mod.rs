//! MQTT output: each window's JSON line (as the jsonl sink writes it) on
//! the features topic, each alert transition on the alert topic, both per
//! device, and a retained status (`online` on every connect, `offline` as
//! the last will and on shutdown).
//!
//! Sinks run on a blocking thread, so publishing never waits: messages go
//! into rumqttc's bounded request queue (`output.mqtt.queue`), which the
//! connection task drains. While the broker is away they wait there; when
//! it is full, new messages are dropped and counted in
//! `accelwatch_mqtt_publish_dropped_total{kind}` rather than stalling the
//! pipeline behind an outage.

pub mod config;

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::mqtt::broker::{BrokerSettings, MqttError};
use crate::mqtt::client::{Client, Event, Events};
use crate::mqtt::client::{Session, Will};
use crate::mqtt::topic::{Template, TopicError};
use crate::record::{Output, StatusRecord};
use crate::sink::mqtt::config::MqttOutputConfig;
use crate::sink::Sink;
use crate::telemetry::Metrics;

const ROLE: &str = "output";

pub struct MqttSink {
    client: Client,
    features: Template,
    alert: Template,
    features_qos: u8,
    features_retain: bool,
    alert_qos: u8,
    alert_retain: bool,
    status_topic: String,
    metrics: Metrics,
}

/// The status payload: `{"status": "online"|"offline", "version": ...}`.
pub fn status_payload(online: bool) -> Vec<u8> {
    status_payload_with(online, None)
}

/// The status payload, with the model's state (online training) when known:
/// `{"status": "online", "version": ..., "model_state": "calibrating",
/// "collected": 420, "target": 2000, "progress": 0.21}`.
pub fn status_payload_with(online: bool, model: Option<&StatusRecord>) -> Vec<u8> {
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
    serde_json::to_vec(&payload).expect("static JSON")
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
        let (client, events) = broker.connect(Session {
            protocol: output.protocol.unwrap_or(broker.protocol),
            client_id: output.client_id.clone(),
            clean_session: true,
            // The will tells subscribers the daemon vanished without a goodbye.
            will: Some(Will {
                topic: output.status_topic.clone(),
                payload: status_payload(false),
                qos: 1,
                retain: true,
            }),
            capacity: output.queue,
        })?;
        metrics.mqtt_connected(ROLE, false);
        let connection = Connection {
            client: client.clone(),
            events,
            status_topic: output.status_topic.clone(),
            backoff: Backoff::new(broker.backoff_min, broker.backoff_max),
            url: broker.url.clone(),
            metrics: metrics.clone(),
        };
        let task = tokio::spawn(connection.run());
        let sink = Self {
            client,
            features: Template::parse(&output.features_topic)
                .map_err(setting("output.mqtt.features_topic"))?,
            alert: Template::parse(&output.alert_topic)
                .map_err(setting("output.mqtt.alert_topic"))?,
            features_qos: output.features_qos,
            features_retain: output.features_retain,
            alert_qos: output.alert_qos,
            alert_retain: output.alert_retain,
            status_topic: output.status_topic.clone(),
            metrics,
        };
        Ok((sink, task))
    }

    fn publish(&self, kind: &str, topic: String, qos: u8, retain: bool, payload: Vec<u8>) {
        if !self.client.try_publish(&topic, qos, retain, payload) {
            self.metrics.mqtt_publish_dropped(kind);
        }
    }
}

impl Sink for MqttSink {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn write(&mut self, output: &Output) -> std::io::Result<()> {
        let payload = serde_json::to_vec(output)?;
        match output {
            Output::Window(w) => self.publish(
                "features",
                self.features.render(&w.device),
                self.features_qos,
                self.features_retain,
                payload,
            ),
            Output::Alert(a) => self.publish(
                "alert",
                self.alert.render(&a.device),
                self.alert_qos,
                self.alert_retain,
                payload,
            ),
            // The retained status says "online" and how the model stands;
            // each scope's under a topic of its own, so none hides another.
            Output::Status(status) => self.publish(
                "status",
                match &status.scope {
                    Some(scope) => scope_status_topic(&self.status_topic, scope),
                    None => self.status_topic.clone(),
                },
                1,
                true,
                status_payload_with(true, Some(status)),
            ),
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for MqttSink {
    /// Says goodbye: a retained `offline`, then DISCONNECT (so the broker
    /// does not publish the will as well).
    fn drop(&mut self) {
        self.publish(
            "status",
            self.status_topic.clone(),
            1,
            true,
            status_payload(false),
        );
        self.client.try_disconnect();
    }
}

struct Connection {
    client: Client,
    events: Events,
    status_topic: String,
    backoff: Backoff,
    url: String,
    metrics: Metrics,
}

impl Connection {
    async fn run(mut self) {
        let mut connected = false;
        let mut logged_failure = false;
        loop {
            match self.events.poll().await {
                Ok(Event::ConnAck { .. }) => {
                    connected = true;
                    logged_failure = false;
                    self.backoff.reset();
                    self.metrics.mqtt_connected(ROLE, true);
                    tracing::info!(url = %self.url, "MQTT output connected");
                    if !self
                        .client
                        .try_publish(&self.status_topic, 1, true, status_payload(true))
                    {
                        self.metrics.mqtt_publish_dropped("status");
                    }
                }
                Ok(Event::Disconnected) => break,
                Ok(_) => {}
                Err(error) => {
                    let reason = error.reason;
                    self.metrics.mqtt_connection_failure(ROLE, reason);
                    if connected || !logged_failure {
                        tracing::warn!(
                            url = %self.url, %error, reason,
                            "MQTT output disconnected; reconnecting with back-off"
                        );
                    }
                    connected = false;
                    logged_failure = true;
                    self.metrics.mqtt_connected(ROLE, false);
                    tokio::time::sleep(self.backoff.next_delay()).await;
                }
            }
        }
        self.metrics.mqtt_connected(ROLE, false);
        tracing::info!("MQTT output disconnected");
    }
}

/// How long shutdown waits for the final status to reach the broker.
pub const GOODBYE_TIMEOUT: Duration = Duration::from_secs(3);
