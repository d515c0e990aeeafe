//! What every source yields: one payload as it arrived, tagged with its
//! device.

use std::future::Future;
use std::sync::Arc;

use crate::decode::Format;

/// One payload from one device, not yet decoded.
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

impl Frame {
    /// CSV lines from `device`, as a replay sends them (tests).
    #[cfg(test)]
    pub(crate) fn csv(device: &str, lines: String) -> Self {
        Self {
            device: Arc::from(device),
            payload: lines.into_bytes(),
            format: Format::Csv,
            received_at_ms: 0.0,
            restart: false,
            topic: None,
        }
    }
}

/// Where a source hands each frame. The daemon's intake decodes and
/// windows the frame on the source's own task (no queue and no other
/// thread's wake-up per frame); a channel's sender is one too (the demo,
/// tests, benches).
pub trait Intake: Send {
    /// Takes one frame; false once nothing downstream takes frames, and
    /// the source stops. May wait (back-pressure). Dropping the future
    /// part-way loses no more than that frame.
    fn take(&mut self, frame: Frame) -> impl Future<Output = bool> + Send;
}

impl Intake for tokio::sync::mpsc::Sender<Frame> {
    async fn take(&mut self, frame: Frame) -> bool {
        self.send(frame).await.is_ok()
    }
}

impl<T: Intake + ?Sized> Intake for &mut T {
    fn take(&mut self, frame: Frame) -> impl Future<Output = bool> + Send {
        (**self).take(frame)
    }
}
