//! `[output.mqtt]`: where features, alerts and status are published.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::mqtt::config::{broker_problems, qos_problem, MqttAuth, MqttProtocol};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttOutputConfig {
    /// `"3.1.1"` or `"5"`; the input's when unset.
    #[serde(default)]
    pub protocol: Option<MqttProtocol>,
    /// Another broker; unset, the input's broker, credentials and TLS.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default = "MqttOutputConfig::default_client_id")]
    pub client_id: String,
    #[serde(default = "MqttOutputConfig::default_features_topic")]
    pub features_topic: String,
    #[serde(default = "MqttOutputConfig::default_alert_topic")]
    pub alert_topic: String,
    /// Retained `online` / `offline` (the last will) status.
    #[serde(default = "MqttOutputConfig::default_status_topic")]
    pub status_topic: String,
    #[serde(default)]
    pub features_qos: u8,
    #[serde(default)]
    pub features_retain: bool,
    /// Connections the QoS 0 feature lines are spread over, each device's
    /// on one of them (so in order). Mosquitto reads one packet of a
    /// connection per turn of its loop: one connection carries at most a
    /// turn's worth of lines, however busy the broker's other clients.
    #[serde(default = "MqttOutputConfig::default_features_connections")]
    pub features_connections: usize,
    /// Up to this many lines of one topic in one message, a line each
    /// (newline-delimited JSON); 1: a message per line, as always.
    #[serde(default = "MqttOutputConfig::default_features_lines_per_message")]
    pub features_lines_per_message: usize,
    /// How long the first line of a message may wait for more lines of
    /// its topic (with `features_lines_per_message` over 1).
    #[serde(default = "MqttOutputConfig::default_features_linger_ms")]
    pub features_linger_ms: u64,
    #[serde(default = "MqttOutputConfig::default_alert_qos")]
    pub alert_qos: u8,
    #[serde(default)]
    pub alert_retain: bool,
    /// Messages waiting for the broker; beyond this (a long outage) they
    /// are dropped and counted.
    #[serde(default = "MqttOutputConfig::default_queue")]
    pub queue: usize,
    /// Only with `url`; otherwise the input's.
    #[serde(default)]
    pub auth: MqttAuth,
    /// The output's own keep-alive; unset, `input.mqtt.keep_alive_s`. A
    /// frozen broker is noticed after one to two of these.
    #[serde(default)]
    pub keep_alive_s: Option<u64>,
    /// Alerts are appended here (fsynced) until the broker acknowledges
    /// them, so they survive a restart of the daemon during an outage.
    /// Unset: `<pipeline.state_dir>/spool`; `"off"`: no spool.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// The spool's bound on disk; alerts beyond it are dropped and counted.
    #[serde(default = "MqttOutputConfig::default_spool_max_bytes")]
    pub spool_max_bytes: u64,
}

impl MqttOutputConfig {
    fn default_client_id() -> String {
        "accelwatch-out".into()
    }
    fn default_features_topic() -> String {
        "accelwatch/{device}/features".into()
    }
    fn default_alert_topic() -> String {
        "accelwatch/{device}/alert".into()
    }
    fn default_status_topic() -> String {
        "accelwatch/status".into()
    }
    const fn default_features_connections() -> usize {
        1
    }
    const fn default_features_lines_per_message() -> usize {
        1
    }
    const fn default_features_linger_ms() -> u64 {
        100
    }
    const fn default_alert_qos() -> u8 {
        1
    }
    const fn default_queue() -> usize {
        4096
    }
    pub const fn default_spool_max_bytes() -> u64 {
        16 * 1024 * 1024
    }
}

impl Default for MqttOutputConfig {
    fn default() -> Self {
        Self {
            protocol: None,
            url: None,
            client_id: Self::default_client_id(),
            features_topic: Self::default_features_topic(),
            alert_topic: Self::default_alert_topic(),
            status_topic: Self::default_status_topic(),
            features_qos: 0,
            features_retain: false,
            features_connections: Self::default_features_connections(),
            features_lines_per_message: Self::default_features_lines_per_message(),
            features_linger_ms: Self::default_features_linger_ms(),
            alert_qos: Self::default_alert_qos(),
            alert_retain: false,
            queue: Self::default_queue(),
            auth: MqttAuth::default(),
            keep_alive_s: None,
            spool_dir: None,
            spool_max_bytes: Self::default_spool_max_bytes(),
        }
    }
}

/// The most connections the feature lines may be spread over.
pub const MAX_FEATURE_CONNECTIONS: usize = 16;

/// The most window lines in one message (about 1 KB each with a head).
pub const MAX_LINES_PER_MESSAGE: usize = 1000;

/// The longest a line may wait for others of its topic.
pub const MAX_LINGER_MS: u64 = 10_000;

/// The `spool_dir` that switches the spool off.
pub const SPOOL_OFF: &str = "off";

/// The spool's directory under the state directory.
pub const SPOOL_SUBDIR: &str = "spool";

impl MqttOutputConfig {
    /// Where the spool is: `spool_dir`, else `spool` under `state_dir`;
    /// none when switched off (or with neither).
    pub fn spool_path(&self, state_dir: Option<&Path>) -> Option<PathBuf> {
        match &self.spool_dir {
            Some(dir) if dir.as_os_str() == SPOOL_OFF => None,
            Some(dir) => Some(dir.clone()),
            None => state_dir.map(|state| state.join(SPOOL_SUBDIR)),
        }
    }

    /// The key a problem with the spool's directory is reported under.
    pub fn spool_key(&self) -> &'static str {
        match &self.spool_dir {
            Some(_) => "output.mqtt.spool_dir",
            None => "pipeline.state_dir",
        }
    }

    /// The problems of `[output.mqtt]`; without a url of its own it needs
    /// the MQTT input's broker (`input_is_mqtt`), and it speaks the input's
    /// protocol unless it sets one.
    pub fn problems(
        &self,
        input_is_mqtt: bool,
        input_protocol: MqttProtocol,
        check: &mut impl FnMut(bool, &str, String),
    ) {
        let output = self;
        match &output.url {
            Some(url) => broker_problems(url, &output.auth, "output.mqtt", check),
            None => {
                check(
                    input_is_mqtt,
                    "output.mqtt.url",
                    "required unless input.kind is mqtt (the output then uses the input's broker)"
                        .into(),
                );
                check(
                    output.auth.is_empty(),
                    "output.mqtt.auth",
                    "only with output.mqtt.url; without it the input's connection is used".into(),
                );
            }
        }
        check(
            !output.client_id.is_empty(),
            "output.mqtt.client_id",
            "must not be empty".into(),
        );
        for (key, template) in [
            ("output.mqtt.features_topic", &output.features_topic),
            ("output.mqtt.alert_topic", &output.alert_topic),
        ] {
            if let Err(message) = crate::mqtt::topic::Template::parse(template) {
                check(false, key, message.0);
            }
        }
        if let Err(message) = crate::mqtt::topic::check_topic_name(&output.status_topic) {
            check(false, "output.mqtt.status_topic", message.0);
        }
        qos_problem(output.features_qos, "output.mqtt.features_qos", check);
        qos_problem(output.alert_qos, "output.mqtt.alert_qos", check);
        check(
            (1..=MAX_FEATURE_CONNECTIONS).contains(&output.features_connections),
            "output.mqtt.features_connections",
            format!(
                "must be 1 to {MAX_FEATURE_CONNECTIONS}, got {}",
                output.features_connections
            ),
        );
        check(
            (1..=MAX_LINES_PER_MESSAGE).contains(&output.features_lines_per_message),
            "output.mqtt.features_lines_per_message",
            format!(
                "must be 1 to {MAX_LINES_PER_MESSAGE}, got {}",
                output.features_lines_per_message
            ),
        );
        check(
            output.features_lines_per_message == 1 || output.features_qos == 0,
            "output.mqtt.features_lines_per_message",
            "more than 1 only at features_qos = 0".into(),
        );
        check(
            (1..=MAX_LINGER_MS).contains(&output.features_linger_ms),
            "output.mqtt.features_linger_ms",
            format!(
                "must be 1 to {MAX_LINGER_MS} ms, got {}",
                output.features_linger_ms
            ),
        );
        check(
            output.features_connections == 1 || output.features_qos == 0,
            "output.mqtt.features_connections",
            "more than 1 only at features_qos = 0 (QoS 1 lines share the acknowledged connection)"
                .into(),
        );
        check(
            output.queue >= 1,
            "output.mqtt.queue",
            "must be at least 1".into(),
        );
        if let Some(keep_alive) = output.keep_alive_s {
            // rumqttc's limits: MQTT 5 pings no faster than every 5 s.
            let least = match output.protocol.unwrap_or(input_protocol) {
                MqttProtocol::V5 => 5,
                MqttProtocol::V311 => 1,
            };
            check(
                keep_alive >= least,
                "output.mqtt.keep_alive_s",
                format!("must be at least {least} seconds with this protocol, got {keep_alive}"),
            );
        }
        check(
            output.spool_max_bytes >= crate::sink::mqtt::spool::MIN_BYTES,
            "output.mqtt.spool_max_bytes",
            format!(
                "must be at least {} bytes, got {}",
                crate::sink::mqtt::spool::MIN_BYTES,
                output.spool_max_bytes
            ),
        );
        if let Some(dir) = &output.spool_dir {
            check(
                !dir.as_os_str().is_empty(),
                "output.mqtt.spool_dir",
                "must not be empty (\"off\" for no spool; unset, it is under pipeline.state_dir)"
                    .into(),
            );
        }
    }

    /// The spool directory, when set, is a directory the daemon can write
    /// in, or can be made one.
    pub fn file_problems(&self, check: &mut impl FnMut(bool, &str, String)) {
        let Some(dir) = self
            .spool_dir
            .as_deref()
            .filter(|d| !d.as_os_str().is_empty() && d.as_os_str() != SPOOL_OFF)
        else {
            return;
        };
        if let Err(why) = crate::problem::writable_dir(dir) {
            check(false, "output.mqtt.spool_dir", why);
        }
    }
}
