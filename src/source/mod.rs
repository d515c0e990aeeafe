//! Sources turn the outside world into [`Frame`]s: raw payloads tagged with
//! the device they came from, handed to an [`Intake`]. They never decode;
//! the pipeline does.

pub mod config;
pub mod frame;
pub mod mqtt;
pub mod replay;
pub mod serial;

pub use crate::source::frame::{Frame, Intake};

/// Why a source could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Replay(#[from] crate::recording::RecordingError),
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt::broker::MqttError),
}

/// The configured source.
pub enum Source {
    Replay(replay::Replay),
    Mqtt(Box<mqtt::MqttSource>),
    Serial(serial::SerialSource),
}

impl Source {
    pub fn open(
        input: &crate::source::config::InputConfig,
        metrics: &crate::telemetry::Metrics,
    ) -> Result<Self, SourceError> {
        Ok(match input.kind {
            crate::source::config::InputKind::Replay => {
                Source::Replay(replay::Replay::open(input)?)
            }
            crate::source::config::InputKind::Mqtt => {
                Source::Mqtt(Box::new(mqtt::MqttSource::open(input, metrics.clone())?))
            }
            crate::source::config::InputKind::Serial => {
                Source::Serial(serial::SerialSource::open(input, metrics.clone()))
            }
        })
    }

    /// Hands frames to `intake` until the source ends, `shutdown` fires or
    /// the intake is closed; returns the frames taken.
    pub async fn run(
        self,
        frames: impl Intake,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> u64 {
        match self {
            Source::Replay(replay) => replay.run(frames, shutdown).await,
            Source::Mqtt(mqtt) => mqtt.run(frames, shutdown).await,
            Source::Serial(serial) => serial.run(frames, shutdown).await,
        }
    }
}
