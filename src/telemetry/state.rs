//! `/api/state`: the document the status page polls. The input and the
//! model scopes come from [`Metrics`]; the devices from the [`LiveState`]
//! board the live sink keeps.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::core::Collector;
use serde::Serialize;

use super::live::{DeviceRow, LiveState};
use super::metrics::Metrics;

/// How far back the input's rates look.
const RATE_SPAN: Duration = Duration::from_secs(5);

/// What the status endpoints share: the metrics, the board and the
/// counters the rates are computed from.
#[derive(Clone)]
pub struct StatusState {
    pub metrics: Metrics,
    pub live: LiveState,
    counts: Arc<Mutex<VecDeque<(Instant, u64, u64)>>>,
}

/// The input: its kind, whether it is connected, and its traffic.
#[derive(Debug, Clone, Serialize)]
pub struct InputState {
    pub kind: &'static str,
    pub connected: bool,
    pub messages: u64,
    pub samples: u64,
    /// Over the last few seconds between two reads of the state; absent on
    /// the first read.
    pub messages_per_s: Option<f64>,
    pub samples_per_s: Option<f64>,
}

/// A model scope: the model it serves (if any), its state, threshold and
/// drift, and how far its calibration is.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct ScopeState {
    pub scope: String,
    pub id: Option<String>,
    pub variant: Option<String>,
    /// `calibrating`, `training` or `serving`.
    pub state: Option<String>,
    pub threshold: Option<f64>,
    pub drift: Option<f64>,
    /// Windows collected for the next online training, and the target.
    pub calibration: Option<CalibrationProgress>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct CalibrationProgress {
    pub collected: u64,
    pub target: u64,
}

/// The whole `/api/state` document.
#[derive(Debug, Clone, Serialize)]
pub struct StateDocument {
    pub version: &'static str,
    /// When it was made (Unix ms).
    pub now_ms: f64,
    pub ready: bool,
    pub input: InputState,
    pub windows: u64,
    pub alerts_active: i64,
    pub models: Vec<ScopeState>,
    /// Rows kept at most, and scores kept per row.
    pub max_devices: usize,
    pub history: usize,
    pub devices: Vec<DeviceRow>,
}

impl StatusState {
    pub fn new(metrics: Metrics, live: LiveState) -> Self {
        Self {
            metrics,
            live,
            counts: Arc::default(),
        }
    }

    /// The document as of now.
    pub fn document(&self) -> StateDocument {
        let metrics = &self.metrics;
        let inner = &metrics.inner;
        let readiness = metrics.readiness();
        let (messages, samples) = (inner.frames.get(), inner.samples.get());
        let (messages_per_s, samples_per_s) = self.rates(Instant::now(), messages, samples);
        StateDocument {
            version: env!("CARGO_PKG_VERSION"),
            now_ms: crate::clock::unix_ms(),
            ready: readiness.ready(),
            input: InputState {
                kind: readiness.input_kind,
                connected: readiness.input_connected,
                messages,
                samples,
                messages_per_s,
                samples_per_s,
            },
            windows: inner.windows.get(),
            alerts_active: inner.alerts_active.get(),
            models: metrics.scopes(),
            max_devices: self.live.max_devices(),
            history: self.live.history(),
            devices: self.live.rows(),
        }
    }

    /// Messages and samples per second since the oldest count kept within
    /// [`RATE_SPAN`] (or the last one before it).
    fn rates(&self, now: Instant, messages: u64, samples: u64) -> (Option<f64>, Option<f64>) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        while counts.len() > 1 && now.duration_since(counts[1].0) >= RATE_SPAN {
            counts.pop_front();
        }
        let rates = counts.front().and_then(|&(then, m0, s0)| {
            let dt = now.duration_since(then).as_secs_f64();
            (dt >= 0.2).then(|| {
                (
                    messages.saturating_sub(m0) as f64 / dt,
                    samples.saturating_sub(s0) as f64 / dt,
                )
            })
        });
        if counts.len() < 64 {
            counts.push_back((now, messages, samples));
        }
        (rates.map(|r| r.0), rates.map(|r| r.1))
    }
}

/// A gauge's series: its labels by name, and its value.
type Series = (BTreeMap<String, String>, f64);

/// Every series of a gauge family.
fn series(collector: &impl Collector) -> Vec<Series> {
    collector
        .collect()
        .iter()
        .flat_map(|family| family.get_metric().iter())
        .map(|m| {
            let labels = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            (labels, m.get_gauge().get_value())
        })
        .collect()
}

/// The series of a family labelled by scope: (scope, labels, value).
fn by_scope(collector: &impl Collector) -> impl Iterator<Item = (String, Series)> {
    series(collector)
        .into_iter()
        .filter_map(|(labels, value)| Some((labels.get("scope")?.clone(), (labels, value))))
}

impl Metrics {
    /// Every model scope the metrics know, by name: its model, state,
    /// threshold, drift and calibration.
    pub fn scopes(&self) -> Vec<ScopeState> {
        let inner = &self.inner;
        let mut scopes: BTreeMap<String, ScopeState> = BTreeMap::new();
        for (scope, (id, variant)) in inner
            .scope_models
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let s = scopes.entry(scope.clone()).or_default();
            s.id = Some(id.clone());
            s.variant = Some(variant.clone());
        }
        for (scope, (mut labels, value)) in by_scope(&inner.model_state) {
            if value == 1.0 {
                scopes.entry(scope).or_default().state = labels.remove("state");
            }
        }
        for (scope, (_, value)) in by_scope(&inner.model_threshold) {
            scopes.entry(scope).or_default().threshold = Some(value);
        }
        for (scope, (_, value)) in by_scope(&inner.drift) {
            scopes.entry(scope).or_default().drift = Some(value);
        }
        let target = inner.calibration_target.get().max(0) as u64;
        for (scope, (_, value)) in by_scope(&inner.calibration_windows) {
            scopes.entry(scope).or_default().calibration = Some(CalibrationProgress {
                collected: value.max(0.0) as u64,
                target,
            });
        }
        scopes
            .into_iter()
            .map(|(name, mut s)| {
                s.scope = name;
                s
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_come_from_the_metrics() {
        let m = Metrics::new();
        m.model_loaded("fleet", "basic-1", "basic", 0.5);
        m.model_state("fleet", "serving");
        m.drift("fleet", 1.25);
        m.model_state("device:a", "calibrating");
        m.calibration("device:a", 30, 200);
        let scopes = m.scopes();
        assert_eq!(
            scopes,
            vec![
                ScopeState {
                    scope: "device:a".into(),
                    state: Some("calibrating".into()),
                    calibration: Some(CalibrationProgress {
                        collected: 30,
                        target: 200
                    }),
                    ..Default::default()
                },
                ScopeState {
                    scope: "fleet".into(),
                    id: Some("basic-1".into()),
                    variant: Some("basic".into()),
                    state: Some("serving".into()),
                    threshold: Some(0.5),
                    drift: Some(1.25),
                    calibration: None,
                },
            ]
        );
    }

    #[test]
    fn rates_need_two_reads() {
        let state = StatusState::new(Metrics::new(), LiveState::new(4, 4));
        let t0 = Instant::now();
        assert_eq!(state.rates(t0, 0, 0), (None, None));
        let (m, s) = state.rates(t0 + Duration::from_secs(2), 100, 300);
        assert_eq!((m, s), (Some(50.0), Some(150.0)));
        // Past the span, the oldest count is dropped.
        let (m, _) = state.rates(t0 + Duration::from_secs(9), 100, 300);
        assert_eq!(m, Some(0.0));
    }
}
