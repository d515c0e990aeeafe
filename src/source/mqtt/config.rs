//! `[input.mqtt]`: the broker, topics and session of the MQTT input.

use serde::{Deserialize, Serialize};

use crate::decode::Format;
use crate::mqtt::config::{broker_problems, qos_problem, MqttAuth, MqttProtocol};

/// One subscription: a topic filter with a `{device}` segment, either as a
/// bare string (using `input.mqtt.format`) or with its own format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TopicEntry {
    Filter(String),
    WithFormat(TopicWithFormat),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicWithFormat {
    pub filter: String,
    pub format: Format,
}

impl TopicEntry {
    pub fn filter(&self) -> &str {
        match self {
            TopicEntry::Filter(f) => f,
            TopicEntry::WithFormat(t) => &t.filter,
        }
    }
    pub fn format(&self, default: Format) -> Format {
        match self {
            TopicEntry::Filter(_) => default,
            TopicEntry::WithFormat(t) => t.format,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttInputConfig {
    /// `mqtt://host[:1883]` or `mqtts://host[:8883]`.
    #[serde(default = "MqttInputConfig::default_url")]
    pub url: String,
    #[serde(default = "MqttInputConfig::default_client_id")]
    pub client_id: String,
    /// `"3.1.1"` or `"5"`.
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// false keeps the broker-side session (and QoS 1 messages queued for
    /// us) across reconnects.
    #[serde(default = "MqttInputConfig::default_clean_session")]
    pub clean_session: bool,
    #[serde(default = "MqttInputConfig::default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// QoS of the subscriptions (0 or 1).
    #[serde(default)]
    pub qos: u8,
    #[serde(default = "MqttInputConfig::default_topics")]
    pub topics: Vec<TopicEntry>,
    /// A JSON payload field naming the device, for filters without a
    /// `{device}` level (those must carry JSON).
    #[serde(default)]
    pub device_field: Option<String>,
    /// A topic for control commands (`{"command": "retrain"}`), with online
    /// training; restrict who may publish to it with the broker's ACL.
    #[serde(default)]
    pub command_topic: Option<String>,
    /// Subscribe every filter as `$share/<group>/<filter>`, so daemons in
    /// the same group split the messages (README: splitting a fleet).
    #[serde(default)]
    pub share_group: Option<String>,
    #[serde(default = "MqttInputConfig::default_format")]
    pub format: Format,
    /// Largest MQTT packet read or written. A larger incoming packet costs
    /// the connection (the client cannot skip it) and is counted.
    #[serde(default = "MqttInputConfig::default_max_packet_bytes")]
    pub max_packet_bytes: usize,
    #[serde(default = "MqttInputConfig::default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    #[serde(default = "MqttInputConfig::default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    #[serde(default)]
    pub auth: MqttAuth,
}

impl MqttInputConfig {
    fn default_url() -> String {
        "mqtt://127.0.0.1:1883".into()
    }
    fn default_client_id() -> String {
        "accelwatch".into()
    }
    const fn default_clean_session() -> bool {
        true
    }
    const fn default_keep_alive_s() -> u64 {
        30
    }
    fn default_topics() -> Vec<TopicEntry> {
        vec![TopicEntry::Filter("sensors/{device}/accel".into())]
    }
    const fn default_format() -> Format {
        Format::Json
    }
    const fn default_max_packet_bytes() -> usize {
        1024 * 1024
    }
    const fn default_reconnect_min_ms() -> u64 {
        500
    }
    const fn default_reconnect_max_ms() -> u64 {
        30_000
    }

    /// The filter as subscribed: within `share_group` when one is set and
    /// the filter is not a shared subscription already.
    pub fn subscription_filter(&self, entry: &TopicEntry) -> String {
        match &self.share_group {
            Some(group) if !entry.filter().starts_with("$share/") => {
                format!("$share/{group}/{}", entry.filter())
            }
            _ => entry.filter().to_string(),
        }
    }
}

impl Default for MqttInputConfig {
    fn default() -> Self {
        Self {
            url: Self::default_url(),
            client_id: Self::default_client_id(),
            protocol: MqttProtocol::default(),
            clean_session: Self::default_clean_session(),
            keep_alive_s: Self::default_keep_alive_s(),
            qos: 0,
            topics: Self::default_topics(),
            share_group: None,
            command_topic: None,
            device_field: None,
            format: Self::default_format(),
            max_packet_bytes: Self::default_max_packet_bytes(),
            reconnect_min_ms: Self::default_reconnect_min_ms(),
            reconnect_max_ms: Self::default_reconnect_max_ms(),
            auth: MqttAuth::default(),
        }
    }
}

impl MqttInputConfig {
    /// The problems of `[input.mqtt]`; payloads are at most `max_payload_bytes`.
    pub fn problems(&self, max_payload_bytes: usize, check: &mut impl FnMut(bool, &str, String)) {
        let mqtt = self;
        broker_problems(&mqtt.url, &mqtt.auth, "input.mqtt", check);
        check(
            !mqtt.client_id.is_empty() || mqtt.clean_session,
            "input.mqtt.client_id",
            "a persistent session (clean_session = false) needs a client id".into(),
        );
        check(
            mqtt.keep_alive_s >= 5,
            "input.mqtt.keep_alive_s",
            format!("must be at least 5 seconds, got {}", mqtt.keep_alive_s),
        );
        qos_problem(mqtt.qos, "input.mqtt.qos", check);
        check(
            !mqtt.topics.is_empty(),
            "input.mqtt.topics",
            "must list at least one topic filter".into(),
        );
        if let Some(group) = &mqtt.share_group {
            if let Err(message) = crate::mqtt::topic::check_share_group(group) {
                check(false, "input.mqtt.share_group", message.0);
            }
        }
        if let Some(topic) = &mqtt.command_topic {
            if let Err(message) = crate::mqtt::topic::check_topic_name(topic) {
                check(false, "input.mqtt.command_topic", message.0);
            }
        }
        if let Some(field) = &mqtt.device_field {
            check(
                !field.is_empty(),
                "input.mqtt.device_field",
                "must name a JSON field".into(),
            );
        }
        for entry in &mqtt.topics {
            match crate::mqtt::topic::DeviceFilter::parse_with(
                &mqtt.subscription_filter(entry),
                mqtt.device_field.is_some(),
            ) {
                Err(message) => check(false, "input.mqtt.topics", message.0),
                Ok(filter) => check(
                    filter.names_device() || entry.format(mqtt.format) == Format::Json,
                    "input.mqtt.topics",
                    format!(
                        "{:?} takes its device from the payload field input.mqtt.device_field, \
                         which needs format = \"json\"",
                        entry.filter()
                    ),
                ),
            }
        }
        check(
            mqtt.max_packet_bytes > max_payload_bytes,
            "input.mqtt.max_packet_bytes",
            format!(
                "must exceed input.max_payload_bytes ({}) so that an over-limit payload is counted \
                 instead of costing the connection, got {}",
                max_payload_bytes, mqtt.max_packet_bytes
            ),
        );
        check(
            mqtt.max_packet_bytes <= 256 * 1024 * 1024,
            "input.mqtt.max_packet_bytes",
            "MQTT packets are at most 256 MiB".into(),
        );
        check(
            mqtt.reconnect_min_ms >= 1 && mqtt.reconnect_min_ms <= mqtt.reconnect_max_ms,
            "input.mqtt.reconnect_min_ms",
            format!(
                "must be between 1 and reconnect_max_ms ({}), got {}",
                mqtt.reconnect_max_ms, mqtt.reconnect_min_ms
            ),
        );
    }
}
