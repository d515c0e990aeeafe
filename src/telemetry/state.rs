//! `/api/state`: the document the status page polls. The input and the
//! model scopes come from [`Metrics`]; the devices from the [`LiveState`]
//! board the live sink keeps.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::core::Collector;
use serde::Serialize;

use super::live::{DeviceRow, LiveState, Sort};
use super::metrics::Metrics;

/// How far back the input's rates look.
const RATE_SPAN: Duration = Duration::from_secs(5);

/// Device rows per `/api/state` when the query names no `limit`, and the
/// most it may ask for.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// Whether control over HTTP is on (a token is configured; the token
/// itself is never part of the state), and whether the scorer takes
/// commands (online training).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ControlStatus {
    pub enabled: bool,
    pub online: bool,
}

/// Which device rows `/api/state?sort=…&offset=…&limit=…` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateQuery {
    pub sort: Sort,
    pub offset: usize,
    pub limit: usize,
}

impl Default for StateQuery {
    fn default() -> Self {
        Self {
            sort: Sort::Id,
            offset: 0,
            limit: DEFAULT_LIMIT,
        }
    }
}

impl StateQuery {
    /// `sort=id|attention`, `offset=N`, `limit=N` (capped at
    /// [`MAX_LIMIT`]), each at most once; nothing else.
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut parsed = Self::default();
        let mut seen: Vec<&str> = Vec::new();
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if seen.contains(&key) {
                return Err(format!("{key} given twice"));
            }
            let number = || {
                value
                    .parse::<usize>()
                    .map_err(|_| format!("{key} must be a whole number, got {value:?}"))
            };
            match key {
                "sort" => {
                    parsed.sort = Sort::parse(value)
                        .ok_or_else(|| format!("sort is id or attention, got {value:?}"))?;
                }
                "offset" => parsed.offset = number()?,
                "limit" => parsed.limit = number()?.min(MAX_LIMIT),
                _ => return Err(format!("unknown parameter {key:?}: sort, offset or limit")),
            }
            seen.push(key);
        }
        Ok(parsed)
    }
}

/// Which rows a document holds: `total` on the board, `limit` from
/// `offset` in `sort` order.
#[derive(Debug, Clone, Serialize)]
pub struct DevicePage {
    pub sort: &'static str,
    pub offset: usize,
    pub limit: usize,
    pub total: usize,
}

/// What the status endpoints share: the metrics, the board and the
/// counters the rates are computed from.
#[derive(Clone)]
pub struct StatusState {
    pub metrics: Metrics,
    pub live: LiveState,
    pub control: ControlStatus,
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
    /// Which rows `devices` holds, and how many there are.
    pub page: DevicePage,
    pub devices: Vec<DeviceRow>,
    pub control: ControlStatus,
}

impl StatusState {
    pub fn new(metrics: Metrics, live: LiveState) -> Self {
        Self {
            metrics,
            live,
            control: ControlStatus::default(),
            counts: Arc::default(),
        }
    }

    /// Says what [`ControlStatus`] the page is told.
    pub fn with_control(mut self, control: ControlStatus) -> Self {
        self.control = control;
        self
    }

    /// The document as of now, with the device rows `query` asks for.
    pub fn document(&self, query: StateQuery) -> StateDocument {
        let metrics = &self.metrics;
        let inner = &metrics.inner;
        let readiness = metrics.readiness();
        let (messages, samples) = (inner.frames.get(), inner.samples.get());
        let (messages_per_s, samples_per_s) = self.rates(Instant::now(), messages, samples);
        let page = self.live.page(query.sort, query.offset, query.limit);
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
            page: DevicePage {
                sort: match query.sort {
                    Sort::Id => "id",
                    Sort::Attention => "attention",
                },
                offset: query.offset,
                limit: query.limit,
                total: page.total,
            },
            devices: page.rows,
            control: self.control,
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
    fn the_query_pages_strictly() {
        assert_eq!(StateQuery::parse(None), Ok(StateQuery::default()));
        assert_eq!(
            StateQuery::parse(Some("sort=attention&offset=20&limit=5")),
            Ok(StateQuery {
                sort: Sort::Attention,
                offset: 20,
                limit: 5
            })
        );
        assert_eq!(
            StateQuery::parse(Some("limit=1000000")).map(|q| q.limit),
            Ok(MAX_LIMIT),
            "capped"
        );
        for bad in [
            "limit=-1",
            "offset=x",
            "sort=score",
            "limit=2&limit=3",
            "devices=all",
            "limit",
        ] {
            assert!(StateQuery::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_document_tells_the_page_and_not_the_token() {
        let live = LiveState::new(8, 4);
        let mut seen: Vec<crate::telemetry::live::Seen> = ["x", "y", "z"]
            .iter()
            .map(|d| crate::telemetry::live::Seen::Window {
                device: Arc::from(*d),
                seq: 0,
                t_start: 0.0,
                t_end: 1.0,
                score: if *d == "y" { 2.0 } else { 0.1 },
                threshold: 1.0,
                over_threshold: *d == "y",
                alert: false,
                model: Arc::from("m"),
            })
            .collect();
        live.apply(&mut seen, 5.0);
        let state = StatusState::new(Metrics::new(), live).with_control(ControlStatus {
            enabled: true,
            online: false,
        });
        let doc = state.document(StateQuery {
            sort: Sort::Attention,
            offset: 0,
            limit: 2,
        });
        let ids: Vec<&str> = doc.devices.iter().map(|d| &*d.device).collect();
        assert_eq!(ids, ["y", "x"]);
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            json["page"],
            serde_json::json!({"sort": "attention", "offset": 0, "limit": 2, "total": 3})
        );
        assert_eq!(
            json["control"],
            serde_json::json!({"enabled": true, "online": false})
        );
        assert!(json["devices"][0].get("touch").is_none());
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
