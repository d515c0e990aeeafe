//! `[output]`: the JSON-lines output and the optional MQTT output.

use serde::{Deserialize, Serialize};

use crate::sink::mqtt::config::MqttOutputConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// `-` for stdout, a file path, or `off`.
    #[serde(default = "OutputConfig::default_jsonl")]
    pub jsonl: String,
    /// Publish windows, alerts and a status to MQTT when present.
    #[serde(default)]
    pub mqtt: Option<MqttOutputConfig>,
}

impl OutputConfig {
    fn default_jsonl() -> String {
        "-".into()
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            jsonl: Self::default_jsonl(),
            mqtt: None,
        }
    }
}
