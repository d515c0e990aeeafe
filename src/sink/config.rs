//! `[output]`: the JSON-lines output and the optional MQTT output.

use serde::{Deserialize, Serialize};

use crate::problem::Problems;
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

    /// The files and directories `[output]` names that are not there.
    pub fn file_problems(&self, problems: &mut Problems) {
        let mut check = |ok: bool, key: &str, message: String| problems.check(ok, key, message);
        if let Some(output) = &self.mqtt {
            crate::mqtt::config::auth_files(&output.auth, "output.mqtt.auth", &mut check);
            output.file_problems(&mut check);
        }
        let jsonl = self.jsonl.as_str();
        if jsonl.trim().is_empty() {
            check(
                false,
                "output.jsonl",
                format!("{jsonl:?} names no file: use \"-\" for stdout, \"off\", or a file path"),
            );
        } else if jsonl != "-" && jsonl != "off" {
            let path = std::path::Path::new(jsonl);
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            check(
                parent.is_none_or(std::path::Path::is_dir),
                "output.jsonl",
                format!("the directory of {jsonl} does not exist"),
            );
            check(
                !path.is_dir(),
                "output.jsonl",
                format!("{jsonl} is a directory, not a file"),
            );
        }
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
