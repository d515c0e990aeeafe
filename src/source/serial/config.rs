//! `[input.serial]`: the ports, their line settings and framing.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Serial input (`input.kind = "serial"`): one or more ports, each carrying
/// one device's samples (see `serial::framing` for the wire formats).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialInputConfig {
    #[serde(default)]
    pub ports: Vec<SerialPortConfig>,
    /// Longest text line (without its line feed); a longer one is counted
    /// and skipped up to the next line feed.
    #[serde(default = "SerialInputConfig::default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Largest payload of a binary frame; a frame announcing more is
    /// treated as garbage (it would otherwise stall resynchronisation).
    #[serde(default = "SerialInputConfig::default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    #[serde(default = "SerialInputConfig::default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    #[serde(default = "SerialInputConfig::default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Relative deviation of the observed sample rate from
    /// `input.sample_rate_hz` that counts as a mismatch...
    #[serde(default = "SerialInputConfig::default_rate_tolerance")]
    pub rate_tolerance: f64,
    /// ...when it lasts this long.
    #[serde(default = "SerialInputConfig::default_rate_window_s")]
    pub rate_window_s: f64,
}

impl SerialInputConfig {
    const fn default_max_line_bytes() -> usize {
        1024
    }
    const fn default_max_frame_bytes() -> usize {
        1536
    }
    const fn default_reconnect_min_ms() -> u64 {
        500
    }
    const fn default_reconnect_max_ms() -> u64 {
        10_000
    }
    const fn default_rate_tolerance() -> f64 {
        0.2
    }
    const fn default_rate_window_s() -> f64 {
        10.0
    }
}

impl Default for SerialInputConfig {
    fn default() -> Self {
        Self {
            ports: Vec::new(),
            max_line_bytes: Self::default_max_line_bytes(),
            max_frame_bytes: Self::default_max_frame_bytes(),
            reconnect_min_ms: Self::default_reconnect_min_ms(),
            reconnect_max_ms: Self::default_reconnect_max_ms(),
            rate_tolerance: Self::default_rate_tolerance(),
            rate_window_s: Self::default_rate_window_s(),
        }
    }
}

/// How a serial port's bytes are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialFormat {
    /// One `t,ax,ay,az` or `ax,ay,az` line per sample.
    Csv,
    /// One JSON sample (or batch) per line.
    Json,
    /// Sync bytes, length, int16 samples, CRC-16 (see `serial::framing`).
    Binary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialParity {
    None,
    Odd,
    Even,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialFlowControl {
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialPortConfig {
    /// e.g. `/dev/ttyUSB0`, or a stable udev name such as `/dev/accel0`.
    pub path: PathBuf,
    /// The device id its samples are windowed and published under.
    pub device: String,
    /// The `port` label of the serial metrics; the port's index when unset.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "SerialPortConfig::default_baud")]
    pub baud: u32,
    #[serde(default = "SerialPortConfig::default_format")]
    pub format: SerialFormat,
    #[serde(default = "SerialPortConfig::default_data_bits")]
    pub data_bits: u8,
    #[serde(default = "SerialPortConfig::default_parity")]
    pub parity: SerialParity,
    #[serde(default = "SerialPortConfig::default_stop_bits")]
    pub stop_bits: u8,
    #[serde(default = "SerialPortConfig::default_flow_control")]
    pub flow_control: SerialFlowControl,
}

impl SerialPortConfig {
    const fn default_baud() -> u32 {
        115_200
    }
    const fn default_format() -> SerialFormat {
        SerialFormat::Csv
    }
    const fn default_data_bits() -> u8 {
        8
    }
    const fn default_parity() -> SerialParity {
        SerialParity::None
    }
    const fn default_stop_bits() -> u8 {
        1
    }
    const fn default_flow_control() -> SerialFlowControl {
        SerialFlowControl::None
    }

    /// A port with every default but its path and device.
    pub fn new(path: impl Into<PathBuf>, device: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            device: device.into(),
            name: None,
            baud: Self::default_baud(),
            format: Self::default_format(),
            data_bits: Self::default_data_bits(),
            parity: Self::default_parity(),
            stop_bits: Self::default_stop_bits(),
            flow_control: Self::default_flow_control(),
        }
    }

    /// The metric label of the port at `index` in `input.serial.ports`.
    pub fn label(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| index.to_string())
    }
}

impl SerialInputConfig {
    /// The problems of `[input.serial]`, for `channels` channels and the
    /// payload limits of `[input]`.
    pub fn problems(
        &self,
        channels: usize,
        max_payload_bytes: usize,
        max_samples_per_message: usize,
        check: &mut impl FnMut(bool, &str, String),
    ) {
        let serial = self;
        check(
            !serial.ports.is_empty(),
            "input.serial.ports",
            "must list at least one port ([[input.serial.ports]] with path and device)".into(),
        );
        let mut devices = std::collections::HashSet::new();
        let mut labels = std::collections::HashSet::new();
        for (i, port) in serial.ports.iter().enumerate() {
            let key = |field: &str| format!("input.serial.ports[{i}].{field}");
            check(
                !port.path.as_os_str().is_empty(),
                &key("path"),
                "must not be empty".into(),
            );
            check(
                !port.device.trim().is_empty(),
                &key("device"),
                "must not be empty".into(),
            );
            check(
                devices.insert(port.device.as_str()),
                &key("device"),
                format!(
                    "{:?} is already read from another port (one device per port)",
                    port.device
                ),
            );
            let label = port.label(i);
            check(!label.is_empty(), &key("name"), "must not be empty".into());
            check(
                labels.insert(label.clone()),
                &key("name"),
                format!("{label:?} names two ports"),
            );
            check(port.baud > 0, &key("baud"), "must be positive".into());
            check(
                (5..=8).contains(&port.data_bits),
                &key("data_bits"),
                format!("must be 5, 6, 7 or 8, got {}", port.data_bits),
            );
            check(
                matches!(port.stop_bits, 1 | 2),
                &key("stop_bits"),
                format!("must be 1 or 2, got {}", port.stop_bits),
            );
        }
        check(
            serial.max_line_bytes >= 1 && serial.max_line_bytes <= max_payload_bytes,
            "input.serial.max_line_bytes",
            format!(
                "must be between 1 and input.max_payload_bytes ({}), got {}",
                max_payload_bytes, serial.max_line_bytes
            ),
        );
        let sample_bytes = 2 * channels.max(1);
        let max_frame = (u16::MAX as usize)
            .min(max_payload_bytes.saturating_sub(crate::decode::BinaryHeader::LEN))
            .min(max_samples_per_message.saturating_mul(sample_bytes));
        check(
            serial.max_frame_bytes >= sample_bytes && serial.max_frame_bytes <= max_frame,
            "input.serial.max_frame_bytes",
            format!(
                "must hold at least one sample ({sample_bytes} bytes) and at most {max_frame} \
                 (65535, max_payload_bytes less a 24-byte batch header, and \
                 input.max_samples_per_message samples), got {}",
                serial.max_frame_bytes
            ),
        );
        check(
            serial.reconnect_min_ms >= 1 && serial.reconnect_min_ms <= serial.reconnect_max_ms,
            "input.serial.reconnect_min_ms",
            format!(
                "must be between 1 and reconnect_max_ms ({}), got {}",
                serial.reconnect_max_ms, serial.reconnect_min_ms
            ),
        );
        check(
            serial.rate_tolerance.is_finite() && serial.rate_tolerance > 0.0,
            "input.serial.rate_tolerance",
            format!("must be a positive fraction, got {}", serial.rate_tolerance),
        );
        check(
            serial.rate_window_s.is_finite() && serial.rate_window_s >= 1.0,
            "input.serial.rate_window_s",
            format!("must be at least 1 second, got {}", serial.rate_window_s),
        );
    }
}
