//! MQTT input: subscribes to the configured topic filters and turns each
//! message into a [`Frame`] for the device named by its topic.
//!
//! The connection is never fatal: on any error the gauge
//! `accelwatch_mqtt_connected{role="input"}` drops to 0, the failure is
//! counted and logged, and the client reconnects after a capped, jittered
//! back-off, subscribing again on every ConnAck. When the intake pushes
//! back the source waits (it does not read from the broker meanwhile), so
//! back-pressure reaches the broker, which queues or drops per its own
//! limits; nothing is dropped here.

pub mod config;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::clock::unix_ms;
use crate::control::{Control, ControlCommand};
use crate::decode::json_device_field;
use crate::decode::Format;
use crate::logging::RateLimited;
use crate::mqtt::broker::{BrokerSettings, MqttError};
use crate::mqtt::client::Session;
use crate::mqtt::client::{Client, Event, Events};
use crate::mqtt::topic::{DeviceFilter, DeviceSource};
use crate::source::config::InputConfig;
use crate::source::frame::{Frame, Intake};
use crate::telemetry::Metrics;

const ROLE: &str = "input";

struct Route {
    filter: DeviceFilter,
    format: Format,
}

pub struct MqttSource {
    client: Client,
    events: Events,
    routes: Vec<Route>,
    qos: u8,
    backoff: Backoff,
    url: String,
    metrics: Metrics,
    device_field: Option<String>,
    warned: RateLimited,
    command_topic: Option<String>,
    control: Option<Control>,
    /// Frames carry their topic (device groups are topic patterns).
    keep_topics: bool,
}

impl MqttSource {
    /// Builds the client; connecting happens in [`run`](Self::run), so a
    /// broker that is down at start-up is waited for, not an error.
    pub fn open(input: &InputConfig, metrics: Metrics) -> Result<Self, MqttError> {
        let mqtt = &input.mqtt;
        let broker = BrokerSettings::input(mqtt);
        let routes = mqtt
            .topics
            .iter()
            .map(|entry| {
                Ok(Route {
                    filter: DeviceFilter::parse_with(
                        &mqtt.subscription_filter(entry),
                        mqtt.device_field.is_some(),
                    )
                    .map_err(|message| MqttError::Setting {
                        key: "input.mqtt.topics".into(),
                        message: message.0,
                    })?,
                    format: entry.format(mqtt.format),
                })
            })
            .collect::<Result<Vec<_>, MqttError>>()?;
        let (client, events) = broker.connect(Session {
            protocol: mqtt.protocol,
            client_id: mqtt.client_id.clone(),
            clean_session: mqtt.clean_session,
            will: None,
            capacity: routes.len() + 8,
        })?;
        metrics.mqtt_connected(ROLE, false);
        Ok(Self {
            client,
            events,
            routes,
            qos: mqtt.qos,
            backoff: Backoff::new(broker.backoff_min, broker.backoff_max),
            url: mqtt.url.clone(),
            metrics,
            device_field: mqtt.device_field.clone(),
            warned: RateLimited::new(Duration::from_secs(60)),
            command_topic: mqtt.command_topic.clone(),
            control: None,
            keep_topics: false,
        })
    }

    /// Commands on `input.mqtt.command_topic` go here (online training).
    pub fn set_control(&mut self, control: Control) {
        self.control = Some(control);
    }

    /// Frames carry the topic they came on (for `training.scope = "group"`).
    pub fn keep_topics(&mut self) {
        self.keep_topics = true;
    }

    /// Takes a command message; invalid ones are counted and warned about.
    fn command(&mut self, payload: &[u8]) {
        let Some(control) = &self.control else {
            self.metrics.command("unknown", "refused");
            return;
        };
        match ControlCommand::parse_json(payload) {
            Ok(command) => {
                let name = command.as_str();
                if !control.send(command) {
                    self.metrics.command(name, "refused");
                }
            }
            Err(error) => {
                self.metrics.command("unknown", "invalid");
                if let Some(held_back) = self.warned.check("command", Instant::now()) {
                    tracing::warn!(%error, held_back, "ignoring an invalid command message");
                }
            }
        }
    }

    fn route<'t>(&self, topic: &'t str) -> Option<(DeviceSource<'t>, Format)> {
        self.routes
            .iter()
            .find_map(|r| r.filter.matches(topic).map(|d| (d, r.format)))
    }

    /// The message's device: its topic level, or its payload field.
    fn device(&mut self, source: DeviceSource<'_>, payload: &[u8]) -> Option<Arc<str>> {
        let field = match source {
            DeviceSource::Topic(device) => return Some(Arc::from(device)),
            DeviceSource::Payload => self.device_field.as_deref()?,
        };
        match json_device_field(payload, field) {
            Ok(device) => Some(Arc::from(device)),
            Err(error) => {
                if let Some(held_back) = self.warned.check("device_field", Instant::now()) {
                    tracing::warn!(
                        %error, held_back,
                        "dropping a message that names no device (at most one line a minute; \
                         all are counted in accelwatch_mqtt_unrouted_total)"
                    );
                }
                None
            }
        }
    }

    /// Hands every message to `frames` until `shutdown` fires or the
    /// intake is closed; then disconnects cleanly. Returns the frames taken.
    pub async fn run(
        mut self,
        mut frames: impl Intake,
        mut shutdown: watch::Receiver<bool>,
    ) -> u64 {
        let mut sent = 0u64;
        let mut connected = false;
        let mut failing_since_log = false;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let event = tokio::select! {
                event = self.events.poll() => event,
                _ = shutdown.changed() => break,
            };
            match event {
                Ok(Event::ConnAck { session_present }) => {
                    connected = true;
                    failing_since_log = false;
                    self.backoff.reset();
                    self.metrics.mqtt_connected(ROLE, true);
                    self.metrics.mqtt_subscribed(false);
                    let filters: Vec<String> = self
                        .routes
                        .iter()
                        .map(|r| r.filter.subscription.clone())
                        .chain(self.command_topic.clone())
                        .collect();
                    tracing::info!(
                        url = %self.url,
                        session_present,
                        topics = ?filters,
                        "MQTT input connected; subscribing"
                    );
                    // The request queue holds more than one subscribe per
                    // connection, so this cannot be full.
                    if let Err(error) = self.client.try_subscribe_many(&filters, self.qos) {
                        tracing::error!(%error, "MQTT input could not queue its subscription");
                    }
                }
                Ok(Event::SubAck { refused }) => {
                    self.metrics.mqtt_subscribed(!refused);
                    if refused {
                        tracing::error!("the broker refused an MQTT subscription (check its ACL)");
                    }
                }
                Ok(Event::Publish { topic, payload })
                    if self.command_topic.as_deref() == Some(topic.as_str()) =>
                {
                    self.command(&payload);
                }
                Ok(Event::Publish { topic, payload }) => {
                    let routed = self.route(&topic).and_then(|(source, format)| {
                        Some((self.device(source, &payload)?, format))
                    });
                    let Some((device, format)) = routed else {
                        self.metrics.mqtt_unrouted();
                        continue;
                    };
                    let frame = Frame {
                        device,
                        payload,
                        format,
                        received_at_ms: unix_ms(),
                        restart: false,
                        topic: self.keep_topics.then(|| Arc::from(topic.as_str())),
                    };
                    tokio::select! {
                        taken = frames.take(frame) => if !taken { break },
                        _ = shutdown.changed() => break,
                    }
                    sent += 1;
                }
                Ok(_) => {}
                Err(error) => {
                    let reason = error.reason;
                    self.metrics.mqtt_connection_failure(ROLE, reason);
                    if connected || !failing_since_log {
                        tracing::warn!(
                            url = %self.url, %error, reason,
                            "MQTT input disconnected; reconnecting with back-off"
                        );
                    }
                    if reason == "oversize" {
                        tracing::warn!(
                            "a message larger than input.mqtt.max_packet_bytes was lost with the \
                             connection"
                        );
                    }
                    connected = false;
                    failing_since_log = true;
                    self.metrics.mqtt_connected(ROLE, false);
                    self.metrics.mqtt_subscribed(false);
                    let delay = self.backoff.next_delay();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => break,
                    }
                }
            }
        }
        if connected {
            self.disconnect().await;
        }
        self.metrics.mqtt_connected(ROLE, false);
        self.metrics.mqtt_subscribed(false);
        tracing::info!(frames = sent, "MQTT input stopped");
        sent
    }

    /// Sends DISCONNECT and drives the event loop until it is written.
    async fn disconnect(&mut self) {
        if !self.client.try_disconnect() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match self.events.poll().await {
                    Ok(Event::Disconnected) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}
