//! Sources turn the outside world into [`Frame`]s: raw payloads tagged with
//! the device they came from. They never decode; the pipeline does.

pub mod mqtt;
pub mod replay;
pub mod serial;

use std::sync::Arc;

use crate::decode::Format;

#[derive(Debug, Clone)]
pub struct Frame {
    pub device: Arc<str>,
    pub payload: Vec<u8>,
    pub format: Format,
    /// Wall-clock arrival time in Unix milliseconds.
    pub received_at_ms: f64,
    /// The first frame since the source (re)connected to this device: the
    /// device's window starts afresh instead of joining samples from
    /// before an outage.
    pub restart: bool,
    /// The MQTT topic the payload came on (device groups match it).
    pub topic: Option<Arc<str>>,
}

pub fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Why a source could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Replay(#[from] crate::recording::RecordingError),
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt::MqttError),
}

/// The configured source.
pub enum Source {
    Replay(replay::Replay),
    Mqtt(Box<mqtt::MqttSource>),
    Serial(serial::SerialSource),
}

impl Source {
    pub fn open(
        input: &crate::config::InputConfig,
        metrics: &crate::telemetry::Metrics,
    ) -> Result<Self, SourceError> {
        Ok(match input.kind {
            crate::config::InputKind::Replay => Source::Replay(replay::Replay::open(input)?),
            crate::config::InputKind::Mqtt => {
                Source::Mqtt(Box::new(mqtt::MqttSource::open(input, metrics.clone())?))
            }
            crate::config::InputKind::Serial => {
                Source::Serial(serial::SerialSource::open(input, metrics.clone()))
            }
        })
    }

    /// Sends frames until the source ends, `shutdown` fires or the
    /// receiver is gone; dropping `frames` on return lets the pipeline drain.
    pub async fn run(
        self,
        frames: tokio::sync::mpsc::Sender<Frame>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> u64 {
        match self {
            Source::Replay(replay) => replay.run(frames, shutdown).await,
            Source::Mqtt(mqtt) => mqtt.run(frames, shutdown).await,
            Source::Serial(serial) => serial.run(frames, shutdown).await,
        }
    }
}
