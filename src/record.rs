//! What the pipeline publishes: one record per scored window, alert
//! transition or model status. A leaf: sources, stages and sinks share it.

use std::sync::Arc;

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
    pub latent: Vec<f32>,
    pub channel_error: ChannelErrors,
    pub model: Arc<str>,
    /// The activity head's most probable class, and its probability;
    /// absent when the model has no head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// When the frame completing the window arrived (wall clock, Unix ms);
    /// not published: the sinks time `accelwatch_window_latency_seconds`
    /// from it.
    #[serde(skip)]
    pub arrival_ms: f64,
}

/// Per-channel errors, serialised as an object keyed by channel name.
#[derive(Debug, Clone)]
pub struct ChannelErrors {
    pub names: Arc<[String]>,
    pub values: Vec<f32>,
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
