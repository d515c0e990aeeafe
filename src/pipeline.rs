//! The synchronous heart of every path (daemon, `score`, `evaluate`,
//! `demo`): frames to windows ([`IngestStage`]) and windows to published
//! outputs ([`ScoreStage`]). The daemon runs them in tasks; the offline
//! commands call them directly, so both score a window the same way.

use crate::logging::RateLimited;
use crate::model::inference::BackendError;
use std::sync::Arc;
use std::time::Instant;

use crate::decode::{Decoder, Samples};
use crate::detect::DetectorConfig;
use crate::detect::{Detector, Transition};
use crate::evidence::{by_channel, Evidence, EvidenceIds, EvidenceNormalization};
use crate::model::scorer::Scorer;
use crate::model::train::config::TrainingConfig;
use crate::model::LoadedModel;
use crate::record::{AlertRecord, ChannelErrors, Output, WindowRecord};
use crate::scope::rules::{ScopeCache, ScopeRules, FLEET};
use crate::source::config::InputConfig;
use crate::source::frame::Frame;
use crate::telemetry::Metrics;
use crate::window::WindowConfig;
use crate::window::{Spares, Window, WindowSpec, Windower};

/// Decodes frames and windows their samples. A bad payload is counted, and
/// logged the first time its reason is seen; the stream goes on.
pub struct IngestStage {
    decoder: Decoder,
    windower: Windower,
    samples: Samples,
    warned: RateLimited,
    metrics: Metrics,
    scopes: ScopeCache,
}

impl IngestStage {
    /// Decodes `input`'s payloads into `window`'s windows; `training` says
    /// which devices share a model scope.
    pub fn new(
        input: &InputConfig,
        window: &WindowConfig,
        training: &TrainingConfig,
        metrics: Metrics,
    ) -> Self {
        Self {
            decoder: Decoder::new(
                input.channels.clone(),
                input.max_payload_bytes,
                input.max_samples_per_message,
            )
            .with_i16_scale(input.binary_i16_scale as f32),
            windower: Windower::new(WindowSpec::new(
                window,
                input.channels.len(),
                input.sample_rate_hz,
            )),
            samples: Samples::default(),
            warned: RateLimited::new(std::time::Duration::from_secs(60)),
            metrics,
            scopes: ScopeCache::new(
                ScopeRules::new(training),
                window.max_devices.saturating_mul(2),
            ),
        }
    }

    /// Devices with a window in progress, and devices whose scope is
    /// remembered: both bounded by `window.max_devices`.
    pub fn devices_tracked(&self) -> (usize, usize) {
        (self.windower.device_count(), self.scopes.remembered())
    }

    /// Takes one frame; windows it completes are appended to `windows`.
    /// New windows are filled in buffers handed back to `spares`.
    pub fn recycling(mut self, spares: Spares) -> Self {
        self.windower = self.windower.recycling(spares);
        self
    }

    pub fn ingest(&mut self, frame: &Frame, windows: &mut Vec<Window>) {
        let metrics = &self.metrics;
        metrics.frame();
        if frame.restart {
            self.windower.restart_device(&frame.device);
        }
        if let Err(error) = self
            .decoder
            .decode(frame.format, &frame.payload, &mut self.samples)
        {
            metrics.decode_error(error.reason());
            if let Some(held_back) = self.warned.check(error.reason(), Instant::now()) {
                tracing::warn!(
                    device = %frame.device, %error, held_back,
                    "dropping a malformed payload (at most one line a minute per reason; all are \
                     counted in accelwatch_decode_errors_total)"
                );
            }
            return;
        }
        metrics.samples(self.samples.len());
        let scope = self.scopes.scope_of(&frame.device, frame.topic.as_deref());
        let warned = &mut self.warned;
        let times = &self.samples.t_ms;
        let admitted = self.windower.push_many(
            &frame.device,
            times,
            frame.received_at_ms,
            &self.samples.values,
            |i, pushed| match pushed {
                Err(dropped) => metrics.sample_dropped(dropped.reason()),
                Ok(pushed) => {
                    if pushed.gap_restart {
                        metrics.gap_restart();
                    }
                    if pushed.clock_reset {
                        metrics.clock_reset();
                        if let Some(held_back) = warned.check("clock_reset", Instant::now()) {
                            tracing::warn!(
                                device = %frame.device, t_ms = times[i].unwrap_or_default(), held_back,
                                "the device's clock went back by more than window.max_gap_ms (a \
                                 reboot?): its window restarts (at most one line a minute; all \
                                 are counted in accelwatch_clock_resets_total)"
                            );
                        }
                    }
                    windows.extend(pushed.window.map(|mut window| {
                        window.scope = scope.clone();
                        window
                    }));
                }
            },
        );
        if admitted.evicted.is_some() {
            metrics.device_evicted();
        }
        if admitted.new_device || admitted.evicted.is_some() {
            metrics.devices(self.windower.device_count());
        }
    }
}

/// Scores batches of windows, runs the detector, and builds the records.
pub struct ScoreStage {
    scorer: Scorer,
    detector: Detector,
    threshold: f64,
    model_id: Arc<str>,
    model_windows: crate::telemetry::events::ModelWindows,
    channel_names: Arc<[String]>,
    /// The activity head's class names (empty without a head).
    classes: Vec<Arc<str>>,
    metrics: Metrics,
    log_alerts: bool,
    /// The model scope served, for metrics.
    scope: Arc<str>,
    /// Raised alerts carry their evidence (`detector.evidence_dir`), with
    /// ids from these.
    evidence: Option<EvidenceIds>,
    raise_after: u32,
}

fn class_names(model: &LoadedModel) -> Vec<Arc<str>> {
    model.meta.activity.as_ref().map_or_else(Vec::new, |h| {
        h.classes.iter().map(|c| Arc::from(c.as_str())).collect()
    })
}

impl ScoreStage {
    /// A stage serving `model` to at most `max_devices` devices at once
    /// (`window.max_devices`: the windower evicts the same devices).
    pub fn new(
        model: LoadedModel,
        detector: &DetectorConfig,
        max_devices: usize,
        metrics: Metrics,
    ) -> Self {
        Self::for_scope(model, detector, max_devices, metrics, Arc::from(FLEET))
    }

    /// A stage serving the model of `scope` (see [`crate::scope`]).
    pub fn for_scope(
        model: LoadedModel,
        detector: &DetectorConfig,
        max_devices: usize,
        metrics: Metrics,
        scope: Arc<str>,
    ) -> Self {
        let threshold = detector.threshold.unwrap_or(model.meta.threshold);
        metrics.model_loaded(&scope, &model.meta.id, &model.meta.variant, threshold);
        Self {
            scope,
            threshold,
            model_id: Arc::from(model.meta.id.as_str()),
            model_windows: metrics.model_windows(&model.meta.id),
            channel_names: model.meta.channels.clone().into(),
            classes: class_names(&model),
            scorer: Scorer::new(model),
            detector: Detector::new(detector.raise_after, detector.clear_after, max_devices),
            metrics,
            log_alerts: true,
            evidence: None,
            raise_after: detector.raise_after,
        }
    }

    /// Raised alerts carry their evidence (the raising window, its
    /// reconstruction and errors) for the evidence writer, and its id
    /// (from `ids`; none kept without).
    pub fn with_evidence(mut self, ids: Option<EvidenceIds>) -> Self {
        self.evidence = ids;
        self
    }

    /// The evidence of the alert raised by window `i` of the batch just
    /// scored.
    fn evidence(
        &self,
        ids: &EvidenceIds,
        i: usize,
        window: &Window,
        score: f32,
        errors: &[f32],
    ) -> Evidence {
        let meta = &self.scorer.model().meta;
        let channels = self.channel_names.len();
        // A model with a front end has no reconstruction of the samples.
        let reconstruction = self.scorer.reconstruction(i).unwrap_or_default();
        let (id, time_ms) = ids.next();
        Evidence {
            format: crate::evidence::FORMAT.to_string(),
            id,
            time_ms,
            device: window.device.to_string(),
            scope: self.scope.to_string(),
            model: self.model_id.to_string(),
            seq: window.seq,
            t_start: window.t_start,
            t_end: window.t_end,
            score,
            threshold: self.threshold,
            raise_after: self.raise_after,
            sample_rate_hz: meta.sample_rate_hz,
            channels: self.channel_names.to_vec(),
            channel_error: errors.to_vec(),
            samples: by_channel(&window.data, channels),
            reconstruction: match meta.front_end {
                Some(_) => Vec::new(),
                None => by_channel(&reconstruction, channels),
            },
            features: self.scorer.front_end(i).zip(meta.front_end.as_ref()).map(
                |((values, reconstruction), front_end)| crate::evidence::EvidenceFeatures {
                    rows: front_end.row_names(meta.window),
                    values: by_channel(&values, channels),
                    reconstruction: by_channel(&reconstruction, channels),
                },
            ),
            normalization: meta.normalization.as_ref().map(|n| EvidenceNormalization {
                mean: n.mean.clone(),
                std: n.std.clone(),
            }),
            recent: Vec::new(),
        }
    }

    /// Serves `model` from the next batch on (a reload): the threshold and
    /// the hysteresis lengths come from `detector`; each device's alert state
    /// is kept.
    pub fn replace_model(&mut self, model: LoadedModel, detector: &DetectorConfig) {
        let threshold = detector.threshold.unwrap_or(model.meta.threshold);
        self.metrics
            .model_loaded(&self.scope, &model.meta.id, &model.meta.variant, threshold);
        self.threshold = threshold;
        self.model_id = Arc::from(model.meta.id.as_str());
        self.model_windows = self.metrics.model_windows(&model.meta.id);
        self.channel_names = model.meta.channels.clone().into();
        self.classes = class_names(&model);
        self.scorer = Scorer::new(model);
        self.detector
            .set_limits(detector.raise_after, detector.clear_after);
        self.raise_after = detector.raise_after;
    }

    /// Devices whose alert state is kept (at most `max_devices`).
    pub fn devices_tracked(&self) -> usize {
        self.detector.devices_tracked()
    }

    /// Offline commands report alerts in their output only, not the log.
    pub fn quiet(mut self) -> Self {
        self.log_alerts = false;
        self
    }

    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The model being served.
    pub fn model(&self) -> &LoadedModel {
        self.scorer.model()
    }

    /// Scores `windows` in one inference call; returns each window's record,
    /// each followed by the alert it caused, if any.
    pub fn score(&mut self, windows: &[Window]) -> Result<Vec<Output>, BackendError> {
        let started = Instant::now();
        let scores = self
            .scorer
            .score(windows.iter().map(|w| w.data.as_slice()))?;
        self.metrics
            .inference(windows.len(), started.elapsed().as_secs_f64());
        let mut out = Vec::with_capacity(windows.len() + 1);
        for (i, (window, scored)) in windows.iter().zip(scores).enumerate() {
            let over = scored.score as f64 > self.threshold;
            let (anomaly, transition) = self.detector.observe(&window.device, over);
            self.model_windows.scored(scored.score, over);
            // Only a raise, and only when kept: the one copy of a window
            // and its reconstruction on this path.
            let detail = self
                .evidence
                .as_ref()
                .filter(|_| transition == Some(Transition::Raised))
                .map(|ids| {
                    Arc::new(self.evidence(ids, i, window, scored.score, &scored.channel_error))
                });
            let alert = transition.map(|t| AlertRecord {
                kind: "alert",
                event: t.as_str(),
                device: window.device.clone(),
                seq: window.seq,
                t: window.t_end,
                score: scored.score,
                threshold: self.threshold,
                model: self.model_id.clone(),
                evidence: detail.as_ref().map(|e| Arc::from(e.id.as_str())),
                detail,
            });
            out.push(Output::Window(WindowRecord {
                kind: "window",
                device: window.device.clone(),
                seq: window.seq,
                t_start: window.t_start,
                t_end: window.t_end,
                score: scored.score,
                threshold: self.threshold,
                anomaly,
                over_threshold: over,
                latent: scored.latent,
                channel_error: ChannelErrors {
                    names: self.channel_names.clone(),
                    values: scored.channel_error,
                },
                model: self.model_id.clone(),
                activity: scored
                    .activity
                    .and_then(|(c, _)| self.classes.get(c).cloned()),
                confidence: scored.activity.map(|(_, p)| p),
                timeline: window.timeline,
            }));
            if let Some(alert) = alert {
                self.metrics
                    .alert(alert.event, self.detector.active_alerts());
                match transition {
                    _ if !self.log_alerts => {}
                    Some(Transition::Raised) => {
                        tracing::info!(device = %alert.device, t = alert.t, score = alert.score, "anomaly alert raised")
                    }
                    _ => {
                        tracing::info!(device = %alert.device, t = alert.t, "anomaly alert cleared")
                    }
                }
                out.push(Output::Alert(alert));
            }
        }
        self.model_windows.flush();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::decode::Format;
    use crate::model::train::config::ScopeKind;

    /// A fleet of ever-new device ids, ten times `window.max_devices`:
    /// every per-device map of both stages stays within its bound.
    #[test]
    fn evicted_devices_leave_no_state_behind() {
        let model_path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/demo.onnx");
        let model = LoadedModel::load(std::path::Path::new(model_path)).expect("the shipped model");
        let mut config = Config::default();
        config.input.channels = model.meta.channels.clone();
        config.window.size = model.meta.window;
        config.window.hop = model.meta.window;
        config.window.max_devices = 8;
        config.training.scope = ScopeKind::Device;
        let max = config.window.max_devices;
        let mut ingest = IngestStage::new(
            &config.input,
            &config.window,
            &config.training,
            Metrics::new(),
        );
        let mut score = ScoreStage::new(model, &config.detector, max, Metrics::new()).quiet();
        let channels = config.input.channels.len();
        let one_window: String = (0..config.window.size)
            .map(|i| {
                let values = vec![format!("{}", (i as f32 * 0.1).sin()); channels];
                format!("{},{}\n", i * 20, values.join(","))
            })
            .collect();
        let (mut windows, mut scored) = (Vec::new(), 0);
        for n in 0..10 * max {
            let frame = Frame {
                device: Arc::from(format!("device-{n}")),
                payload: one_window.clone().into_bytes(),
                format: Format::Csv,
                received_at_ms: n as f64,
                restart: false,
                topic: None,
            };
            ingest.ingest(&frame, &mut windows);
            let outputs = score.score(&windows).expect("scored");
            scored += outputs
                .iter()
                .filter(|o| matches!(o, Output::Window(_)))
                .count();
            windows.clear();
            let (windowed, scoped) = ingest.devices_tracked();
            assert!(windowed <= max, "windower: {windowed} devices");
            assert!(scoped <= 2 * max, "scope cache: {scoped} devices");
            assert!(
                score.devices_tracked() <= max,
                "detector: {}",
                score.devices_tracked()
            );
        }
        assert_eq!(scored, 10 * max, "every device's window was scored");
        assert_eq!(score.devices_tracked(), max);
    }

    /// A sensor that rebooted stamps time since boot again: its samples
    /// are windowed from the reboot on (counted), not dropped for an hour.
    #[test]
    fn a_rebooted_sensor_keeps_being_windowed() {
        let mut config = Config::default();
        config.input.channels = vec!["ax".into()];
        config.window.size = 4;
        config.window.hop = 4;
        let metrics = Metrics::new();
        let mut ingest = IngestStage::new(
            &config.input,
            &config.window,
            &config.training,
            metrics.clone(),
        );
        let frame = |from_ms: u64| {
            Frame::csv(
                "w1",
                (0..8)
                    .map(|i| format!("{},0.5\n", from_ms + i * 20))
                    .collect(),
            )
        };
        let mut windows = Vec::new();
        ingest.ingest(&frame(3_600_000), &mut windows);
        assert_eq!(windows.len(), 2);
        windows.clear();
        ingest.ingest(&frame(0), &mut windows);
        assert_eq!(
            windows.len(),
            2,
            "the samples after the reboot are windowed"
        );
        assert_eq!(windows[0].t_start, 0.0);
        let text = metrics.render();
        assert!(text.contains("accelwatch_clock_resets_total 1\n"), "{text}");
        assert!(
            text.contains("accelwatch_samples_dropped_total{reason=\"out_of_order\"} 0\n"),
            "nothing dropped: {text}"
        );
    }
}
