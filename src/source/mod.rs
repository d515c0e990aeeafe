//! Sources turn the outside world into [`Frame`]s: raw payloads tagged with
//! the device they came from. They never decode; the pipeline does.

pub mod replay;

use std::sync::Arc;

use crate::decode::Format;

#[derive(Debug, Clone)]
pub struct Frame {
    pub device: Arc<str>,
    pub payload: Vec<u8>,
    pub format: Format,
    /// Wall-clock arrival time in Unix milliseconds.
    pub received_at_ms: f64,
}

pub fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
