//! What every source yields: one payload as it arrived, tagged with its
//! device.

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
