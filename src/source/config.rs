//! `[input]`: where samples come from, and the limits every source shares.

use serde::{Deserialize, Serialize};

use crate::problem::Problems;
use crate::source::mqtt::config::MqttInputConfig;
use crate::source::replay::config::ReplayConfig;
use crate::source::serial::config::SerialInputConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    Replay,
    Mqtt,
    Serial,
}

impl InputKind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Replay => "replay",
            Self::Mqtt => "mqtt",
            Self::Serial => "serial",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    #[serde(default = "InputConfig::default_kind")]
    pub kind: InputKind,
    /// Channel names in the order the model expects them.
    #[serde(default = "default_channels")]
    pub channels: Vec<String>,
    /// Nominal sample rate; used to stamp samples that carry no timestamp.
    #[serde(default = "InputConfig::default_sample_rate_hz")]
    pub sample_rate_hz: f64,
    #[serde(default = "InputConfig::default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    #[serde(default = "InputConfig::default_max_samples_per_message")]
    pub max_samples_per_message: usize,
    /// Factor applied to int16 values of the binary payload format.
    #[serde(default = "InputConfig::default_binary_i16_scale")]
    pub binary_i16_scale: f64,
    #[serde(default)]
    pub replay: ReplayConfig,
    #[serde(default)]
    pub mqtt: MqttInputConfig,
    #[serde(default)]
    pub serial: SerialInputConfig,
}

impl InputConfig {
    /// An input that ends by itself: a replay that does not loop.
    pub fn is_finite(&self) -> bool {
        self.kind == InputKind::Replay && !self.replay.repeat
    }

    const fn default_binary_i16_scale() -> f64 {
        1.0
    }
    const fn default_kind() -> InputKind {
        InputKind::Replay
    }
    const fn default_sample_rate_hz() -> f64 {
        50.0
    }
    const fn default_max_payload_bytes() -> usize {
        256 * 1024
    }
    const fn default_max_samples_per_message() -> usize {
        4096
    }
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            kind: Self::default_kind(),
            channels: default_channels(),
            sample_rate_hz: Self::default_sample_rate_hz(),
            max_payload_bytes: Self::default_max_payload_bytes(),
            max_samples_per_message: Self::default_max_samples_per_message(),
            binary_i16_scale: Self::default_binary_i16_scale(),
            replay: ReplayConfig::default(),
            mqtt: MqttInputConfig::default(),
            serial: SerialInputConfig::default(),
        }
    }
}

pub fn default_channels() -> Vec<String> {
    ["ax", "ay", "az"].iter().map(|s| s.to_string()).collect()
}

impl InputConfig {
    /// The problems of `[input]` (and of the section of its kind).
    pub fn problems(&self, problems: &mut Problems) {
        let mut check = |ok: bool, key: &str, message: String| problems.check(ok, key, message);
        let input = self;
        check(
            !input.channels.is_empty(),
            "input.channels",
            "must name at least one channel".into(),
        );
        let mut seen = std::collections::HashSet::new();
        for name in &input.channels {
            check(
                seen.insert(name),
                "input.channels",
                format!("channel {name:?} is listed twice"),
            );
            check(
                !name.trim().is_empty(),
                "input.channels",
                "a channel name is empty".into(),
            );
        }
        check(
            input.sample_rate_hz.is_finite() && input.sample_rate_hz > 0.0,
            "input.sample_rate_hz",
            format!(
                "must be a positive number of hertz, got {}",
                input.sample_rate_hz
            ),
        );
        check(
            input.max_payload_bytes > 0,
            "input.max_payload_bytes",
            "must be at least 1".into(),
        );
        check(
            input.max_samples_per_message > 0,
            "input.max_samples_per_message",
            "must be at least 1".into(),
        );
        check(
            input.replay.speed.is_finite() && input.replay.speed >= 0.0,
            "input.replay.speed",
            format!(
                "must be 0 (as fast as possible) or a positive factor, got {}",
                input.replay.speed
            ),
        );
        check(
            input.binary_i16_scale.is_finite() && input.binary_i16_scale != 0.0,
            "input.binary_i16_scale",
            format!(
                "must be a finite non-zero factor, got {}",
                input.binary_i16_scale
            ),
        );
        if input.kind == InputKind::Mqtt {
            self.mqtt.problems(self.max_payload_bytes, &mut check);
        }
        if input.kind == InputKind::Serial {
            self.serial.problems(
                self.channels.len(),
                self.max_payload_bytes,
                self.max_samples_per_message,
                &mut check,
            );
        }
    }

    /// The files `[input]` names that are not there. A serial port that is
    /// not there (yet) is waited for, not a problem: USB devices come and go.
    pub fn file_problems(&self, problems: &mut Problems) {
        let mut check = |ok: bool, key: &str, message: String| problems.check(ok, key, message);
        match self.kind {
            InputKind::Replay => check(
                self.replay.path.is_file(),
                "input.replay.path",
                format!("no such file: {}", self.replay.path.display()),
            ),
            InputKind::Mqtt => {
                crate::mqtt::config::auth_files(&self.mqtt.auth, "input.mqtt.auth", &mut check)
            }
            InputKind::Serial => {}
        }
    }
}
