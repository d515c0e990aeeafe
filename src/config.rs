//! Typed configuration: one TOML file plus `ACCELWATCH__SECTION__KEY`
//! environment overrides, deserialised strictly (an unknown key is an error
//! naming it) and validated as a whole before anything starts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::daemon::config::PipelineConfig;

pub use crate::detect::DetectorConfig;
pub use crate::model::config::*;
pub use crate::model::train::config::*;
pub use crate::mqtt::config::{MqttAuth, MqttProtocol};
pub use crate::problem::{Problem, Problems};
pub use crate::sink::config::OutputConfig;
pub use crate::sink::mqtt::config::MqttOutputConfig;
pub use crate::source::config::*;
pub use crate::source::mqtt::config::*;
pub use crate::source::replay::config::{CsvColumns, ReplayConfig};
pub use crate::source::serial::config::*;
pub use crate::telemetry::config::{TelemetryConfig, TelemetryTls};
pub use crate::window::WindowConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {cause}")]
    Load {
        path: PathBuf,
        cause: config::ConfigError,
    },
    #[error("invalid config {}:\n{}", path.display(), format_problems(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// Why TOML text is no config ([`Config::from_toml_str`]).
#[derive(Debug, thiserror::Error)]
pub enum TomlError {
    #[error("cannot read config: {0}")]
    Load(config::ConfigError),
    #[error("invalid config:\n{}", format_problems(.0))]
    Invalid(Vec<Problem>),
}

/// The `config` crate reads a key as a path: `a.b` and `a[3]` address
/// nested values, and a quoted `'a[-888888888885]'` made it allocate an
/// array of that length and abort (found by the `config_toml` fuzz
/// target). No accelwatch key holds `.`, `[` or `]`, so such a key is a
/// problem before `config` sees it. Text that is no TOML is left to
/// `config`, which reports where.
fn path_like_key(text: &str) -> Option<Problem> {
    use toml::de::{DeTable, DeValue};
    fn in_table(table: &DeTable<'_>, prefix: &str) -> Option<Problem> {
        table.iter().find_map(|(key, value)| {
            let key = key.get_ref();
            let path = if prefix.is_empty() {
                key.to_string()
            } else {
                format!("{prefix}.{key}")
            };
            if key.contains(['.', '[', ']']) {
                return Some(Problem {
                    key: path,
                    message: format!(
                        "{key:?} is no key of accelwatch's config: a key name never holds '.', '[' or ']'"
                    ),
                });
            }
            in_value(value.get_ref(), &path)
        })
    }
    fn in_value(value: &DeValue<'_>, path: &str) -> Option<Problem> {
        match value {
            DeValue::Table(table) => in_table(table, path),
            DeValue::Array(items) => items.iter().find_map(|item| in_value(item.get_ref(), path)),
            _ => None,
        }
    }
    let document = DeTable::parse(text).ok()?;
    in_table(document.get_ref(), "")
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub input: InputConfig,
    #[serde(default)]
    pub window: WindowConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub training: TrainingConfig,
    #[serde(default)]
    pub detector: DetectorConfig,
    #[serde(default)]
    pub output: OutputConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
}
/// `ACCELWATCH__<SECTION>__<KEY>` overrides, e.g. `ACCELWATCH__WINDOW__HOP=32`.
fn environment() -> config::Environment {
    config::Environment::with_prefix("ACCELWATCH")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .with_list_parse_key("input.channels")
}

impl Config {
    /// Reads `path` (TOML) with environment overrides and validates the
    /// result; every problem found is reported at once.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config = Self::load_unvalidated(path)?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    pub fn load_unvalidated(path: &Path) -> Result<Config, ConfigError> {
        let load_error = |cause| ConfigError::Load {
            path: path.to_path_buf(),
            cause,
        };
        if !path.is_file() {
            return Err(load_error(config::ConfigError::NotFound(
                path.display().to_string(),
            )));
        }
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Some(problem) = path_like_key(&text) {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    problems: vec![problem],
                });
            }
        }
        config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(environment())
            .build()
            .and_then(|c| c.try_deserialize::<Config>())
            .map(|mut config| {
                let state_directory = std::env::var("STATE_DIRECTORY").ok();
                config.pipeline.state_dir.get_or_insert_with(|| {
                    crate::daemon::config::default_state_dir(path, state_directory.as_deref())
                });
                config
            })
            .map_err(load_error)
    }

    /// The defaults with the environment's overrides, for a command run
    /// without `--config` (`ACCELWATCH__MODEL__INPUT=mix accelwatch train …`
    /// reads what it says, as with a file), checked like a file's.
    pub fn from_environment() -> Result<Config, ConfigError> {
        let path = PathBuf::from("<environment>");
        let config: Config = config::Config::builder()
            .add_source(environment())
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|cause| ConfigError::Load {
                path: path.clone(),
                cause,
            })?;
        let problems = config.validate_settings();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid { path, problems })
        }
    }

    /// A config from TOML text alone: no file, no environment overrides,
    /// and checked with [`validate_settings`](Self::validate_settings)
    /// (files it names are not looked at). For the fuzz target and tests.
    pub fn from_toml_str(text: &str) -> Result<Config, TomlError> {
        if let Some(problem) = path_like_key(text) {
            return Err(TomlError::Invalid(vec![problem]));
        }
        let config: Config = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(TomlError::Load)?;
        let problems = config.validate_settings();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(TomlError::Invalid(problems))
        }
    }

    /// Every semantic problem of the configuration, with its key path,
    /// including files it names that do not exist (the model file itself is
    /// checked by loading it, see `Config::model_problems`).
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = self.validate_settings();
        let mut files = Problems::default();
        self.input.file_problems(&mut files);
        self.output.file_problems(&mut files);
        self.telemetry.file_problems(&mut files);
        self.state_problems(&mut files);
        problems.extend(files.into_vec());
        problems
    }

    /// The state directory, when something keeps state in it (the MQTT
    /// output's `msg_id` counter, and its spool unless placed elsewhere),
    /// is a directory the daemon can write in or make.
    fn state_problems(&self, problems: &mut Problems) {
        let (Some(output), Some(dir)) = (&self.output.mqtt, &self.pipeline.state_dir) else {
            return;
        };
        if dir.as_os_str().is_empty() {
            return;
        }
        if let Err(why) = crate::problem::writable_dir(dir) {
            let spool = if output.spool_dir.is_none() {
                "the alert spool and "
            } else {
                ""
            };
            problems.check(
                false,
                "pipeline.state_dir",
                format!(
                    "{why}: it keeps {spool}the msg_id counter (unset, it is $STATE_DIRECTORY \
                     or <config>.state beside the config file)"
                ),
            );
        }
    }

    /// What is allowed but deserves a second look; `validate` prints them.
    pub fn warnings(&self) -> Vec<Problem> {
        self.telemetry.warnings()
    }

    /// The network this config describes: its window, channels and `[model]`.
    pub fn architecture(&self) -> crate::model::net::Architecture {
        crate::model::net::Architecture {
            window: self.window.size,
            channels: self.input.channels.len(),
            model: self.model.clone(),
        }
    }

    /// What this config's input and window settings tell a model.
    pub fn input_spec(&self) -> crate::model::train::InputSpec {
        crate::model::train::InputSpec {
            channels: self.input.channels.clone(),
            window: self.window.size,
            hop: self.window.hop,
            sample_rate_hz: self.input.sample_rate_hz,
        }
    }

    /// Where the config and the model disagree, with the config key to change.
    pub fn model_problems(&self, meta: &crate::model::meta::ModelMetadata) -> Vec<Problem> {
        self.model_fit().problems(meta)
    }

    /// The keys a model file must agree with.
    pub fn model_fit(&self) -> ModelFit {
        ModelFit {
            channels: self.input.channels.clone(),
            window: self.window.size,
            sample_rate_hz: self.input.sample_rate_hz,
            score: self.model.score,
        }
    }

    /// The problems of the values themselves, without looking at files:
    /// each section's own, then those that span sections.
    pub fn validate_settings(&self) -> Vec<Problem> {
        let mut problems = Problems::default();
        // Saturating: a size far out of range is reported, not an overflow.
        let features = self.window.size.saturating_mul(self.input.channels.len());
        self.input.problems(&mut problems);
        self.window.problems(&mut problems);
        problems.check(
            features <= crate::window::MAX_WINDOW_VALUES,
            "window.size",
            format!(
                "{} samples of {} channels make windows of {features} values, over the limit of {}",
                self.window.size,
                self.input.channels.len(),
                crate::window::MAX_WINDOW_VALUES
            ),
        );
        self.model
            .problems(features, self.window.size, &mut problems);
        self.training.problems(
            features,
            self.model.dir.is_some(),
            self.input.kind == InputKind::Mqtt,
            &mut problems,
        );
        self.detector.problems(&mut problems);
        self.pipeline.problems(&mut problems);
        if let Some(output) = &self.output.mqtt {
            output.problems(
                self.input.kind == InputKind::Mqtt,
                self.input.mqtt.protocol,
                &mut |ok, key, message| problems.check(ok, key, message),
            );
        }
        problems.into_vec()
    }
}

/// What of the config a model file must agree with: the input's channels
/// and rate, the window's size and the score asked for (`input`, `window`
/// and `model` keys), so that who loads models needs no more than this.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFit {
    pub channels: Vec<String>,
    pub window: usize,
    pub sample_rate_hz: f64,
    pub score: Option<crate::model::config::ScoreChoice>,
}

impl ModelFit {
    /// Where this and the model disagree, with the config key to change.
    pub fn problems(&self, meta: &crate::model::meta::ModelMetadata) -> Vec<Problem> {
        let mut problems = Vec::new();

        let mut check = |ok: bool, key: &str, message: String| {
            if !ok {
                problems.push(Problem {
                    key: key.into(),
                    message,
                });
            }
        };
        check(
            self.channels == meta.channels,
            "input.channels",
            format!(
                "{:?}, but model {} expects {:?}",
                self.channels, meta.id, meta.channels
            ),
        );
        check(
            self.window == meta.window,
            "window.size",
            format!(
                "{}, but model {} takes windows of {} samples",
                self.window, meta.id, meta.window
            ),
        );
        check(
            (self.sample_rate_hz - meta.sample_rate_hz).abs() <= meta.sample_rate_hz * 0.01,
            "input.sample_rate_hz",
            format!(
                "{} Hz, but model {} was trained at {} Hz",
                self.sample_rate_hz, meta.id, meta.sample_rate_hz
            ),
        );
        // A model is served with the score its threshold was calibrated for:
        // absent, model.score is the file's own; a score asked of a model
        // calibrated for another is an error rather than a silent change.
        if let Some(asked) = self.score {
            let own = meta.score.choice_name();
            check(
                asked.name() == own,
                "model.score",
                format!(
                    "{:?}, but model {} is scored by {own}{}; train one with model.score = {:?}, \
                     or leave model.score out to serve it as it is",
                    asked.name(),
                    meta.id,
                    if meta.score.needs_latent_score() {
                        ""
                    } else {
                        " (it has no latent_score output)"
                    },
                    asked.name()
                ),
            );
        }
        problems
    }
}

/// What the config tests share.
#[cfg(test)]
mod test_support {
    use super::*;

    /// The keys `validate_settings` names, in order.
    pub fn keys(config: &Config) -> Vec<String> {
        config
            .validate_settings()
            .into_iter()
            .map(|p| p.key)
            .collect()
    }

    /// A config from TOML text, as `Config::load` reads a file.
    pub fn toml_like(text: &str) -> Result<Config, config::ConfigError> {
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?
            .try_deserialize()
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn a_key_config_would_read_as_a_path_is_a_problem_not_an_abort() {
        // The config_toml fuzz target's finding: `config` allocated an
        // array of 888 888 888 886 values for this key and aborted.
        for (text, key) in [
            ("'3[-888888888885]'=''", "3[-888888888885]"),
            ("[window]\n'size[2]' = 4", "window.size[2]"),
            ("[[x]]\n[x.y]\n'a.b' = 1", "x.y.a.b"),
        ] {
            match Config::from_toml_str(text) {
                Err(TomlError::Invalid(problems)) => {
                    assert_eq!(problems.len(), 1, "{problems:?}");
                    assert_eq!(problems[0].key, key);
                    assert!(problems[0].message.contains("never holds"), "{problems:?}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accelwatch.toml");
        std::fs::write(&path, "'3[-888888888885]'=''").unwrap();
        match Config::load(&path) {
            Err(ConfigError::Invalid { problems, .. }) => {
                assert_eq!(problems[0].key, "3[-888888888885]")
            }
            other => panic!("{other:?}"),
        }
        // Plain keys and text that is no TOML go on to `config` as before.
        assert!(Config::from_toml_str("[window]\nsize = 64\nhop = 32").is_ok());
        assert!(matches!(
            Config::from_toml_str("[window"),
            Err(TomlError::Load(_))
        ));
    }
}

#[cfg(test)]
mod mqtt_tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn mqtt_settings_are_checked_with_their_keys() {
        let mut config = Config::default();
        config.input.kind = InputKind::Mqtt;
        assert!(keys(&config).is_empty(), "{:?}", config.validate_settings());
        config.input.mqtt.url = "tcp://broker".into();
        config.input.mqtt.topics = vec![
            TopicEntry::Filter("sensors/accel".into()),
            TopicEntry::WithFormat(TopicWithFormat {
                filter: "a/{device}".into(),
                format: crate::decode::Format::Binary,
            }),
        ];
        config.input.mqtt.qos = 2;
        config.input.mqtt.max_packet_bytes = 1024;
        config.input.mqtt.auth.password_env = Some("X".into());
        config.output.mqtt = Some(MqttOutputConfig {
            features_topic: "out/+/{device}".into(),
            ..MqttOutputConfig::default()
        });
        let keys = keys(&config);
        for key in [
            "input.mqtt.url",
            "input.mqtt.topics",
            "input.mqtt.qos",
            "input.mqtt.max_packet_bytes",
            "input.mqtt.auth.username",
            "output.mqtt.features_topic",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
        }
        assert_eq!(keys.iter().filter(|k| *k == "input.mqtt.topics").count(), 1);

        let mut config = Config::default();
        config.output.mqtt = Some(MqttOutputConfig::default());
        assert_eq!(
            self::keys(&config),
            vec!["output.mqtt.url"],
            "replay input, no output url"
        );
        // Feature connections: 1 to 16, and more than one only at QoS 0.
        config.input.kind = InputKind::Mqtt;
        for (connections, qos, wrong) in [
            (1, 0, false),
            (16, 0, false),
            (2, 1, true),
            (0, 0, true),
            (17, 0, true),
        ] {
            config.output.mqtt = Some(MqttOutputConfig {
                features_connections: connections,
                features_qos: qos,
                ..MqttOutputConfig::default()
            });
            let keys = self::keys(&config);
            assert_eq!(
                keys.iter().any(|k| k == "output.mqtt.features_connections"),
                wrong,
                "{connections} at QoS {qos}: {keys:?}"
            );
        }
        // Lines per message: 1 to 1000, more than one only at QoS 0; a
        // linger of 1 ms to 10 s.
        for (lines, linger, qos, wrong) in [
            (1, 100, 1, None),
            (1000, 10_000, 0, None),
            (2, 100, 1, Some("output.mqtt.features_lines_per_message")),
            (1001, 100, 0, Some("output.mqtt.features_lines_per_message")),
            (8, 0, 0, Some("output.mqtt.features_linger_ms")),
            (8, 10_001, 0, Some("output.mqtt.features_linger_ms")),
        ] {
            config.output.mqtt = Some(MqttOutputConfig {
                features_lines_per_message: lines,
                features_linger_ms: linger,
                features_qos: qos,
                ..MqttOutputConfig::default()
            });
            let keys = self::keys(&config);
            assert_eq!(
                keys.iter().map(String::as_str).collect::<Vec<_>>(),
                wrong.into_iter().collect::<Vec<_>>(),
                "{lines} lines, {linger} ms, QoS {qos}"
            );
        }
    }
}

#[cfg(test)]
mod scope_tests {
    use super::test_support::*;
    use super::*;

    fn online() -> Config {
        let mut config = Config::default();
        config.model.dir = Some("/tmp/models".into());
        config.training.mode = TrainingMode::Online;
        config
    }

    #[test]
    fn model_scopes_are_checked_with_their_keys() {
        let mut config = online();
        config.training.scope = ScopeKind::Device;
        assert!(keys(&config).is_empty(), "{:?}", config.validate_settings());
        // Six channels at 16 device scopes could hold 2 GiB of windows.
        config.input.channels = ["ax", "ay", "az", "wx", "wy", "wz"]
            .map(String::from)
            .into();
        assert_eq!(keys(&config), ["training.max_memory_mb"]);
        config.training.max_windows = 10_000;
        assert!(keys(&config).is_empty());

        let mut config = Config::default();
        config.training.scope = ScopeKind::Device;
        config.training.cpu_share = 0.0;
        config.training.max_scopes = 0;
        assert_eq!(
            keys(&config),
            [
                "model.dir",
                "training.mode",
                "training.max_scopes",
                "training.cpu_share"
            ]
        );

        let mut config = online();
        config.training.scope = ScopeKind::Group;
        assert_eq!(keys(&config), ["training.groups", "training.groups"]);
        config.input.kind = InputKind::Mqtt;
        config.training.groups = vec![
            GroupConfig {
                name: "line 1".into(),
                topics: vec!["plant/line1/#".into()],
            },
            GroupConfig {
                name: "b".into(),
                topics: vec!["a/#/b".into()],
            },
            GroupConfig {
                name: "b".into(),
                topics: Vec::new(),
            },
        ];
        assert_eq!(
            keys(&config),
            [
                "training.groups[0].name",
                "training.groups[1].topics",
                "training.groups[2].name",
                "training.groups[2].topics"
            ]
        );
    }

    #[test]
    fn groups_parse_from_toml_strictly() {
        let text = r#"
            [training]
            scope = "group"
            [[training.groups]]
            name = "line1"
            topics = ["plant/line1/#"]
        "#;
        let config = toml_like(text).expect("parses");
        assert_eq!(config.training.scope, ScopeKind::Group);
        assert_eq!(config.training.groups[0].topics, ["plant/line1/#"]);
        let bad = text.replace("topics =", "topic =");
        assert!(toml_like(&bad).is_err(), "unknown key refused");
        assert!(toml_like("[training]\nscope = \"site\"").is_err());
    }
}

#[cfg(test)]
mod serial_tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn serial_settings_are_checked_with_their_keys() {
        let mut config = Config::default();
        config.input.kind = InputKind::Serial;
        assert_eq!(keys(&config), vec!["input.serial.ports"]);
        config.input.serial.ports = vec![
            SerialPortConfig::new("/dev/ttyUSB0", "a"),
            SerialPortConfig::new("/dev/ttyUSB1", "b"),
        ];
        assert!(keys(&config).is_empty(), "{:?}", config.validate_settings());
        config.input.serial.ports[1].device = "a".into();
        config.input.serial.ports[1].data_bits = 9;
        config.input.serial.ports[1].stop_bits = 3;
        config.input.serial.ports[0].name = Some("1".into());
        config.input.serial.max_frame_bytes = 70_000;
        config.input.serial.rate_tolerance = 0.0;
        let keys = keys(&config);
        for key in [
            "input.serial.ports[1].device",
            "input.serial.ports[1].data_bits",
            "input.serial.ports[1].stop_bits",
            "input.serial.ports[1].name",
            "input.serial.max_frame_bytes",
            "input.serial.rate_tolerance",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
        }
    }

    #[test]
    fn serial_ports_parse_from_toml_strictly() {
        let text = r#"
            [input]
            kind = "serial"
            [[input.serial.ports]]
            path = "/dev/accel0"
            device = "press-1"
            baud = 230400
            format = "binary"
            parity = "even"
            flow_control = "hardware"
        "#;
        let config: Config = toml_like(text).expect("parses");
        let port = &config.input.serial.ports[0];
        assert_eq!(port.baud, 230_400);
        assert_eq!(port.format, SerialFormat::Binary);
        assert_eq!(port.parity, SerialParity::Even);
        assert_eq!(port.flow_control, SerialFlowControl::Hardware);
        assert_eq!((port.data_bits, port.stop_bits), (8, 1));
        assert_eq!(port.label(0), "0");
        let bad = text.replace("baud = 230400", "bauds = 230400");
        assert!(toml_like(&bad).is_err(), "unknown key refused");
    }
}
