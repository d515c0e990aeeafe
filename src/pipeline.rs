//! The synchronous heart of every path (daemon, `score`, `evaluate`,
//! `demo`): frames to windows ([`IngestStage`]) and windows to published
//! outputs ([`ScoreStage`]). The daemon runs them in tasks; the offline
//! commands call them directly, so both score a window the same way.

use crate::logging::RateLimited;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::decode::{Decoder, Samples};
use crate::detect::{Detector, Transition};
use crate::model::LoadedModel;
use crate::online::scope::{ScopeCache, ScopeRules, FLEET};
use crate::score::Scorer;
use crate::sink::{AlertRecord, ChannelErrors, Output, WindowRecord};
use crate::source::Frame;
use crate::telemetry::Metrics;
use crate::window::{Window, WindowSpec, Windower};

pub fn window_spec(config: &Config) -> WindowSpec {
    WindowSpec {
        size: config.window.size,
        hop: config.window.hop,
        channels: config.input.channels.len(),
        max_gap_ms: config.window.max_gap_ms,
        max_devices: config.window.max_devices,
        interval_ms: 1000.0 / config.input.sample_rate_hz,
    }
}

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
    pub fn new(config: &Config, metrics: Metrics) -> Self {
        Self {
            decoder: Decoder::new(
                config.input.channels.clone(),
                config.input.max_payload_bytes,
                config.input.max_samples_per_message,
            )
            .with_i16_scale(config.input.binary_i16_scale as f32),
            windower: Windower::new(window_spec(config)),
            samples: Samples::default(),
            warned: RateLimited::new(std::time::Duration::from_secs(60)),
            metrics,
            scopes: ScopeCache::new(
                ScopeRules::from_config(config),
                config.window.max_devices.saturating_mul(2),
            ),
        }
    }

    /// Takes one frame; windows it completes are appended to `windows`.
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
            metrics.decode_error(&error);
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
        let channels = self.decoder.channels();
        let scope = self.scopes.scope_of(&frame.device, frame.topic.as_deref());
        for (i, t) in self.samples.t_ms.iter().enumerate() {
            let values = &self.samples.values[i * channels..(i + 1) * channels];
            match self
                .windower
                .push(&frame.device, *t, frame.received_at_ms, values)
            {
                Err(dropped) => metrics.sample_dropped(dropped),
                Ok(pushed) => {
                    if pushed.gap_restart {
                        metrics.gap_restart();
                    }
                    if pushed.evicted.is_some() {
                        metrics.device_evicted();
                    }
                    if pushed.new_device || pushed.evicted.is_some() {
                        metrics.devices(self.windower.device_count());
                    }
                    windows.extend(pushed.window.map(|mut window| {
                        window.scope = scope.clone();
                        window
                    }));
                }
            }
        }
    }
}

/// Scores batches of windows, runs the detector, and builds the records.
pub struct ScoreStage {
    scorer: Scorer,
    detector: Detector,
    threshold: f64,
    model_id: Arc<str>,
    channel_names: Arc<[String]>,
    metrics: Metrics,
    log_alerts: bool,
    /// The model scope served, for metrics.
    scope: Arc<str>,
}

impl ScoreStage {
    pub fn new(model: LoadedModel, config: &Config, metrics: Metrics) -> Self {
        Self::for_scope(model, config, metrics, Arc::from(FLEET))
    }

    /// A stage serving the model of `scope` (see [`crate::online::scope`]).
    pub fn for_scope(
        model: LoadedModel,
        config: &Config,
        metrics: Metrics,
        scope: Arc<str>,
    ) -> Self {
        let threshold = config.detector.threshold.unwrap_or(model.meta.threshold);
        metrics.model_loaded(&scope, &model.meta.id, &model.meta.variant, threshold);
        Self {
            scope,
            threshold,
            model_id: Arc::from(model.meta.id.as_str()),
            channel_names: model.meta.channels.clone().into(),
            scorer: Scorer::new(model),
            detector: Detector::new(config.detector.raise_after, config.detector.clear_after),
            metrics,
            log_alerts: true,
        }
    }

    /// Serves `model` from the next batch on (a reload): the threshold and
    /// the hysteresis lengths come from `config`; each device's alert state
    /// is kept.
    pub fn replace_model(&mut self, model: LoadedModel, config: &Config) {
        let threshold = config.detector.threshold.unwrap_or(model.meta.threshold);
        self.metrics
            .model_loaded(&self.scope, &model.meta.id, &model.meta.variant, threshold);
        self.threshold = threshold;
        self.model_id = Arc::from(model.meta.id.as_str());
        self.channel_names = model.meta.channels.clone().into();
        self.scorer = Scorer::new(model);
        self.detector
            .set_limits(config.detector.raise_after, config.detector.clear_after);
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
    pub fn score(&mut self, windows: &[Window]) -> Result<Vec<Output>, String> {
        let started = Instant::now();
        let scores = self
            .scorer
            .score(windows.iter().map(|w| w.data.as_slice()))?;
        self.metrics
            .inference(windows.len(), started.elapsed().as_secs_f64());
        let mut out = Vec::with_capacity(windows.len() + 1);
        for (window, scored) in windows.iter().zip(scores) {
            let over = scored.score as f64 > self.threshold;
            let (anomaly, transition) = self.detector.observe(&window.device, over);
            self.metrics
                .window_scored(&self.model_id, scored.score, over);
            let alert = transition.map(|t| AlertRecord {
                kind: "alert",
                event: t.as_str(),
                device: window.device.clone(),
                seq: window.seq,
                t: window.t_end,
                score: scored.score,
                threshold: self.threshold,
                model: self.model_id.clone(),
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
        Ok(out)
    }
}
