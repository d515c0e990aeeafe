//! `[input.replay]`: a CSV recording replayed as a stream.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    #[serde(default = "ReplayConfig::default_path")]
    pub path: PathBuf,
    /// 1.0 is real time, 10.0 ten times faster, 0 as fast as possible.
    #[serde(default = "ReplayConfig::default_speed")]
    pub speed: f64,
    /// Start again at the end of the file instead of exiting.
    #[serde(default, rename = "loop")]
    pub repeat: bool,
    #[serde(flatten)]
    pub columns: CsvColumns,
}

impl ReplayConfig {
    fn default_path() -> PathBuf {
        PathBuf::from("data/watch/demo.csv")
    }
    const fn default_speed() -> f64 {
        1.0
    }
}

impl Default for ReplayConfig {
    fn default() -> Self {
        Self {
            path: Self::default_path(),
            speed: Self::default_speed(),
            repeat: false,
            columns: CsvColumns::default(),
        }
    }
}

/// How a CSV recording is laid out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvColumns {
    /// Column naming the device; absent from the file means one device.
    #[serde(default = "CsvColumns::default_device_column")]
    pub device_column: String,
    /// Column of timestamps in milliseconds; absent means the sample rate is assumed.
    #[serde(default = "CsvColumns::default_time_column")]
    pub time_column: String,
}

impl CsvColumns {
    fn default_device_column() -> String {
        "device".into()
    }
    fn default_time_column() -> String {
        "t_ms".into()
    }
}

impl Default for CsvColumns {
    fn default() -> Self {
        Self {
            device_column: Self::default_device_column(),
            time_column: Self::default_time_column(),
        }
    }
}
