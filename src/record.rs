//! What the pipeline publishes: one record per scored window, alert
//! transition or model status. A leaf: sources, stages and sinks share it.

use std::sync::Arc;

pub use crate::score::{LatentCode, PerChannel};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::evidence::SharedEvidence;
use crate::scope::rules::FLEET;

/// Where a scope's model stands: published on the status topic and as
/// `accelwatch_model_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelState {
    Calibrating,
    Training,
    Serving,
}

impl ModelState {
    pub const fn as_str(self) -> &'static str {
        match self {
            ModelState::Calibrating => "calibrating",
            ModelState::Training => "training",
            ModelState::Serving => "serving",
        }
    }
}

/// One scored window: the line the daemon writes per window.
#[derive(Debug, Clone, Serialize)]
pub struct WindowRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub device: Arc<str>,
    pub seq: u64,
    pub t_start: f64,
    pub t_end: f64,
    pub score: f32,
    pub threshold: f64,
    /// The device is in alert after this window (hysteresis applied).
    pub anomaly: bool,
    /// This window alone is over the threshold.
    pub over_threshold: bool,
    pub latent: LatentCode,
    pub channel_error: ChannelErrors,
    pub model: Arc<str>,
    /// The activity head's most probable class, and its probability;
    /// absent when the model has no head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// When the window passed each stage; not published: the sinks time `accelwatch_window_latency_seconds` and its parts from it.
    #[serde(skip)]
    pub timeline: crate::window::Timeline,
}

impl WindowRecord {
    /// The window's line, byte for byte what serde_json makes of
    /// `Output::Window(self)` (the tests hold it to that), written without
    /// the derive's per-field dispatch and key escaping: this line is the
    /// daemon's most frequent output. Strings and numbers still go through
    /// serde_json, so escaping, float formatting and `null` for a NaN or
    /// an infinity are serde_json's own.
    pub fn write_json<W: std::io::Write>(&self, out: &mut W) -> std::io::Result<()> {
        fn value<W: std::io::Write, T: Serialize + ?Sized>(
            out: &mut W,
            value: &T,
        ) -> std::io::Result<()> {
            serde_json::to_writer(out, value).map_err(std::io::Error::from)
        }
        out.write_all(b"{\"type\":")?;
        value(out, self.kind)?;
        out.write_all(b",\"device\":")?;
        value(out, &*self.device)?;
        out.write_all(b",\"seq\":")?;
        value(out, &self.seq)?;
        out.write_all(b",\"t_start\":")?;
        value(out, &self.t_start)?;
        out.write_all(b",\"t_end\":")?;
        value(out, &self.t_end)?;
        out.write_all(b",\"score\":")?;
        value(out, &self.score)?;
        out.write_all(b",\"threshold\":")?;
        value(out, &self.threshold)?;
        out.write_all(if self.anomaly {
            b",\"anomaly\":true"
        } else {
            b",\"anomaly\":false"
        })?;
        out.write_all(if self.over_threshold {
            b",\"over_threshold\":true"
        } else {
            b",\"over_threshold\":false"
        })?;
        out.write_all(b",\"latent\":[")?;
        for (i, v) in self.latent.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            value(out, v)?;
        }
        out.write_all(b"],\"channel_error\":{")?;
        let errors = &self.channel_error;
        for (i, (name, v)) in errors.names.iter().zip(&errors.values).enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            value(out, name.as_str())?;
            out.write_all(b":")?;
            value(out, v)?;
        }
        out.write_all(b"},\"model\":")?;
        value(out, &*self.model)?;
        if let Some(activity) = &self.activity {
            out.write_all(b",\"activity\":")?;
            value(out, &**activity)?;
        }
        if let Some(confidence) = &self.confidence {
            out.write_all(b",\"confidence\":")?;
            value(out, confidence)?;
        }
        out.write_all(b"}")
    }
}

/// Per-channel errors, serialised as an object keyed by channel name.
#[derive(Debug, Clone)]
pub struct ChannelErrors {
    pub names: Arc<[String]>,
    pub values: PerChannel,
}

impl Serialize for ChannelErrors {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.values.len()))?;
        for (name, value) in self.names.iter().zip(&self.values) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Where the daemon's model stands (online training): published on the
/// status topic, written as a JSON line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `calibrating`, `training` or `serving`.
    pub state: &'static str,
    /// Windows collected for the training, and how many it waits for.
    pub collected: usize,
    pub target: usize,
    /// collected / target, at most 1.
    pub progress: f64,
    /// The model scope (`device:<id>`, `group:<name>`); absent for the
    /// fleet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<Arc<str>>,
    /// The drift ratio of the served model (see `online::Drift`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<f64>,
}

impl StatusRecord {
    pub fn new(state: ModelState, collected: usize, target: usize) -> Self {
        Self {
            kind: "status",
            state: state.as_str(),
            collected,
            target,
            progress: (collected as f64 / target.max(1) as f64).min(1.0),
            scope: None,
            model: None,
            drift: None,
        }
    }

    /// The status of a scope serving `model`.
    pub fn serving(model: &str, drift: Option<f64>) -> Self {
        let mut status = Self::new(ModelState::Serving, 0, 0);
        status.progress = 1.0;
        status.model = Some(model.into());
        status.drift = drift;
        status
    }

    /// For `scope` (nothing is added for the fleet).
    pub fn in_scope(mut self, scope: &Arc<str>) -> Self {
        if &**scope != FLEET {
            self.scope = Some(scope.clone());
        }
        self
    }
}

/// An alert raised or cleared by the detector.
#[derive(Debug, Clone, Serialize)]
pub struct AlertRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `raise` or `clear`.
    pub event: &'static str,
    pub device: Arc<str>,
    /// The window that caused the transition.
    pub seq: u64,
    pub t: f64,
    pub score: f32,
    pub threshold: f64,
    pub model: Arc<str>,
    /// The id of the raise's evidence (`/api/alerts/<id>`, `accelwatch
    /// alerts show <id>`) when evidence is kept; absent otherwise and on
    /// a clear.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Arc<str>>,
    /// The evidence itself, on its way to the evidence writer; not
    /// published.
    #[serde(skip)]
    pub detail: Option<SharedEvidence>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Output {
    Window(WindowRecord),
    Alert(AlertRecord),
    Status(StatusRecord),
}

impl Output {
    /// The output's JSON line (without its newline), as serde_json writes
    /// it; a window's through [`WindowRecord::write_json`].
    pub fn write_json<W: std::io::Write>(&self, out: &mut W) -> std::io::Result<()> {
        match self {
            Output::Window(window) => window.write_json(out),
            other => serde_json::to_writer(out, other).map_err(std::io::Error::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(device: &str, names: &[&str], score: f32, threshold: f64) -> WindowRecord {
        WindowRecord {
            kind: "window",
            device: Arc::from(device),
            seq: 7,
            t_start: 1_764_616_800_123.5,
            t_end: 1_764_616_802_663.5,
            score,
            threshold,
            anomaly: score > 1.0,
            over_threshold: score.is_nan(),
            latent: smallvec::smallvec![
                0.465_119_45,
                -0.0,
                f32::NAN,
                1e-7,
                f32::MAX,
                f32::MIN_POSITIVE / 3.0,
            ],
            channel_error: ChannelErrors {
                names: names
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .into(),
                values: names
                    .iter()
                    .enumerate()
                    .map(|(i, _)| i as f32 * 0.1 + 0.021)
                    .collect(),
            },
            model: Arc::from("basic-d05b93f487fd"),
            activity: None,
            confidence: None,
            timeline: crate::window::Timeline::arrived(5.0),
        }
    }

    fn same_as_serde(record: WindowRecord) {
        let output = Output::Window(record);
        let expected = serde_json::to_vec(&output).expect("serialised");
        let mut ours = Vec::new();
        output.write_json(&mut ours).expect("written");
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&expected)
        );
        assert_eq!(ours, expected);
    }

    /// The hand-written window line is serde_json's, byte for byte: device
    /// ids and channel names that need escaping, NaN and infinities (`null`),
    /// signed zeros, extremes, empty latent codes and channel sets.
    #[test]
    fn the_window_line_is_serde_jsons_byte_for_byte() {
        let ids = [
            "watch-9",
            "",
            "quote\"d",
            "back\\slash",
            "slash/and+hash#",
            "ctl\u{0}\u{1}\u{1f}\n\r\t\u{8}\u{c}",
            "del\u{7f}",
            "é日本🙂",
            "</script><!--",
            "\u{2028}\u{2029}",
        ];
        let scores = [
            0.051_993_888,
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            123_456_790.0,
        ];
        let thresholds = [
            0.308_684_587_478_637_7,
            f64::NAN,
            f64::INFINITY,
            0.0,
            1e300,
            5e-324,
        ];
        for (i, id) in ids.iter().enumerate() {
            for (j, score) in scores.iter().enumerate() {
                let threshold = thresholds[(i + j) % thresholds.len()];
                same_as_serde(record(id, &["ax", "ay", "az"], *score, threshold));
            }
        }
        same_as_serde(record("w", &["a\"x", "ä", "\n"], 0.5, 0.3));
        let mut empty = record("w", &[], 0.5, 0.3);
        empty.latent.clear();
        empty.seq = u64::MAX;
        empty.t_start = f64::NAN;
        empty.t_end = -f64::INFINITY;
        same_as_serde(empty);
        // A model with an activity head adds its class and probability.
        for (activity, confidence) in [("PEN", 0.93), ("a\"b</c>\n", f32::NAN), ("", 1.0)] {
            let mut with_head = record("w", &["ax"], 0.5, 0.3);
            with_head.activity = Some(Arc::from(activity));
            with_head.confidence = Some(confidence);
            same_as_serde(with_head);
        }
    }

    /// Alerts and status records keep serde_json's line.
    #[test]
    fn other_lines_are_serde_jsons() {
        let alert = Output::Alert(AlertRecord {
            kind: "alert",
            event: "raise",
            device: Arc::from("w\"1"),
            seq: 25,
            t: 34_540.0,
            score: f32::NAN,
            threshold: 0.3,
            model: Arc::from("m"),
            evidence: None,
            detail: None,
        });
        let status = Output::Status(StatusRecord::new(ModelState::Training, 3, 7));
        for output in [alert, status] {
            let mut ours = Vec::new();
            output.write_json(&mut ours).expect("written");
            assert_eq!(ours, serde_json::to_vec(&output).expect("serialised"));
        }
    }
}
