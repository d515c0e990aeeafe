//! The daemon: a source, then decoding and windowing, then batched scoring
//! and detection, then the sinks; bounded queues between stages.
//!
//! Shutdown runs front to back: the source stops on the shutdown signal (or
//! at the end of a replay) and drops its sender; each stage drains its
//! queue, then drops its own sender; the sinks flush last. Nothing accepted
//! is left half-processed.

pub mod batch_thread;
pub mod config;
pub mod error;
pub mod health;
pub mod reload;
pub mod scoring;
pub mod served;
pub mod service;
pub mod stages;
pub mod startup_code;
pub mod systemd;

use crate::daemon::batch_thread::BatchThread;
use crate::daemon::error::DaemonError;
use crate::daemon::scoring::{score_loop, Scoring};
use crate::daemon::served::{open_scopes, ScopeConfig};
use crate::daemon::stages::{Ingest, Sinks};
use crate::evidence::store::{EvidenceLimits, EvidenceStore};
use crate::evidence::writer::EvidenceSink;
use crate::model::inference::BackendError;
use std::net::SocketAddr;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::Config;
use crate::control::Control;
use crate::daemon::health::{Health, Pulse};
use crate::daemon::reload::{PendingModel, Reloader};
use crate::model::train::config::{ScopeKind, TrainingMode};
use crate::mqtt::broker::BrokerSettings;
use crate::pipeline::IngestStage;
use crate::sink::jsonl::JsonlSink;
use crate::sink::live::LiveSink;
use crate::sink::mqtt::{MqttSink, OutputTask};
use crate::sink::Sink;
use crate::source::Source;
use crate::telemetry::live::LiveState;
use crate::telemetry::{self, Metrics};
use crate::window::{Spares, Window};

/// What a finished run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub frames: u64,
    pub windows: u64,
    pub alerts: u64,
}

/// A started daemon. Dropping it does not stop it: call
/// [`shutdown`](Self::shutdown) or wait for the source to end.
pub struct Daemon {
    shutdown: watch::Sender<bool>,
    telemetry_addr: Option<SocketAddr>,
    telemetry: Option<JoinHandle<()>>,
    stop_telemetry: watch::Sender<bool>,
    /// Reads, decodes and windows; ends when the source does.
    source: JoinHandle<u64>,
    /// Scores, then writes to the sinks, on one thread.
    scorer: JoinHandle<Result<(u64, u64), BackendError>>,
    /// The MQTT output's connection, which sends its final status.
    mqtt_output: Option<OutputTask>,
    pub metrics: Metrics,
    reloader: Reloader,
    health: Health,
    model_watch: Option<JoinHandle<()>>,
    queue_gauges: JoinHandle<()>,
    input_kind: String,
}

/// Keeps `accelwatch_queue_depth` current (four times a second): a queue
/// at its capacity is back-pressure on the stage before it.
async fn report_queue_depths(health: Health, metrics: Metrics, capacity: usize) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        metrics.queue_depth(health.snapshot().waiting[1], capacity);
    }
}

impl Daemon {
    /// Loads and checks everything, then starts every stage. Any problem
    /// with the config, the model, the input or an output is reported here,
    /// before a single sample is read.
    pub async fn start(config: Config, sinks: Vec<Box<dyn Sink>>) -> Result<Daemon, DaemonError> {
        Self::start_with_clock(config, sinks, Clock::system()).await
    }

    /// [`start`](Self::start) with the wall clock of `clock` (a test steps
    /// it): it dates the evidence and seeds a new `msg_id` counter; no
    /// order depends on it.
    pub async fn start_with_clock(
        config: Config,
        mut sinks: Vec<Box<dyn Sink>>,
        clock: Clock,
    ) -> Result<Daemon, DaemonError> {
        let metrics = Metrics::new();
        let mut evidence_sink = None;
        // Alert evidence: the store is opened (and checked) before anything
        // runs; its sink writes on a thread of its own.
        let evidence = match crate::evidence::evidence_dir(&config.detector, &config.model) {
            Some(dir) => {
                let store = EvidenceStore::open(
                    &dir,
                    EvidenceLimits {
                        max_count: config.detector.evidence_max_count,
                        max_bytes: config.detector.evidence_max_bytes,
                    },
                )?;
                let sink =
                    EvidenceSink::start(store.clone(), config.window.max_devices, metrics.clone())
                        .map_err(|cause| crate::evidence::store::EvidenceError::Io {
                            path: dir.clone(),
                            cause,
                        })?;
                evidence_sink = Some(sink);
                Some(store)
            }
            None => None,
        };
        let evidence_ids = match &evidence {
            Some(store) => Some(store.ids(clock.clone())?),
            None => None,
        };
        let scope_config = ScopeConfig::of(&config);
        let scopes = open_scopes(&scope_config, &metrics, evidence_ids.as_ref())?;
        let mut source = Source::open(&config.input, &metrics)?;
        if config.output.jsonl != "off" {
            let jsonl = JsonlSink::open(&config.output.jsonl)
                .map_err(|(path, cause)| DaemonError::Output { path, cause })?;
            sinks.insert(0, Box::new(jsonl));
        }
        let mqtt_output = match &config.output.mqtt {
            Some(output) => {
                let fallback = BrokerSettings::input(&config.input.mqtt);
                let (sink, task) = MqttSink::open(
                    output,
                    config.pipeline.state_dir.as_deref(),
                    fallback,
                    metrics.clone(),
                    &clock,
                )
                .map_err(DaemonError::MqttOutput)?;
                sinks.push(Box::new(sink));
                Some(task)
            }
            None => None,
        };
        // After the other outputs, as before: the evidence writer is the
        // slowest sink.
        if let Some(sink) = evidence_sink {
            sinks.push(Box::new(sink));
        }
        let (control, commands) = match config.training.mode {
            TrainingMode::Online => {
                let (control, commands) = Control::channel();
                (Some(control), Some(commands))
            }
            TrainingMode::Off => (None, None),
        };
        if let Source::Mqtt(mqtt) = &mut source {
            if let Some(control) = &control {
                mqtt.set_control(control.clone());
            }
            if config.training.scope == ScopeKind::Group {
                mqtt.keep_topics();
            }
        }
        let pending = PendingModel::default();
        let reloader = Reloader::new(&config, pending.clone(), metrics.clone());
        let rescan = reloader.rescan_flag();
        let pulse = std::sync::Arc::new(Pulse::default());
        let (stop_telemetry, mut telemetry_stopped) = watch::channel(false);
        let (telemetry_addr, telemetry) = if config.telemetry.enabled {
            let stopped = async move {
                let _ = telemetry_stopped.wait_for(|stop| *stop).await;
            };
            // The status page's board, kept by a sink of its own.
            let live = LiveState::new(config.window.max_devices, telemetry::live::HISTORY);
            sinks.push(Box::new(LiveSink::new(live.clone())));
            let (addr, task) = telemetry::serve(
                &config.telemetry,
                metrics.clone(),
                control.clone(),
                live,
                evidence,
                stopped,
            )
            .await
            .map_err(|cause| DaemonError::Listen {
                addr: config.telemetry.listen,
                cause,
            })?;
            tracing::info!(%addr, "serving the status page, /metrics, /healthz and /readyz");
            (Some(addr), Some(task))
        } else {
            (None, None)
        };

        let capacity = config.pipeline.queue_capacity;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (window_tx, window_rx) = mpsc::channel::<Window>(capacity);

        let health = Health {
            pulse: pulse.clone(),
            windows: window_tx.downgrade(),
        };
        metrics.queue_depth(0, capacity);
        let queue_gauges = tokio::spawn(report_queue_depths(
            health.clone(),
            metrics.clone(),
            capacity,
        ));
        let model_watch = (config.model.watch_interval_ms > 0).then(|| {
            let interval = std::time::Duration::from_millis(config.model.watch_interval_ms);
            tokio::spawn(crate::daemon::reload::watch_model(
                reloader.clone(),
                interval,
                shutdown_rx.clone(),
            ))
        });
        let max_batch = config.model.max_batch;
        // Sixteen batches' worth: the scorer, a batch thread, may score
        // several batches while the input waits for a core, and hands
        // their buffers back before the windower takes any.
        let spares = Spares::new(16 * max_batch);
        // Frames are decoded and windowed on the source's task: no queue
        // and no other thread between reading a frame and windowing it.
        let mut ingest = Ingest::new(
            IngestStage::new(
                &config.input,
                &config.window,
                &config.training,
                metrics.clone(),
            )
            .recycling(spares.clone()),
            window_tx,
            pulse.clone(),
        );
        let source = tokio::spawn({
            let shutdown = shutdown_rx.clone();
            async move {
                let frames = source.run(&mut ingest, shutdown).await;
                ingest.finish().await;
                frames
            }
        });
        let scorer = {
            let pulse = pulse.clone();
            let stage_metrics = metrics.clone();
            let stop = shutdown_rx.clone();
            let sched_batch = config.pipeline.scorer_sched_batch;
            tokio::task::spawn_blocking(move || {
                let _batch = sched_batch.then(BatchThread::for_scorer).flatten();
                let mut sinks = Sinks::new(sinks, &stage_metrics);
                let scored = score_loop(
                    Scoring::new(scopes, commands, scope_config, stage_metrics)
                        .rescan_on(rescan)
                        .with_evidence(evidence_ids)
                        .recycling(spares),
                    max_batch,
                    window_rx,
                    &mut sinks,
                    &pending,
                    &pulse,
                    &stop,
                );
                // Flushed even when scoring failed: what was scored is out.
                sinks.finish();
                scored
            })
        };
        metrics.set_input_kind(config.input.kind.name());
        metrics.io_threads(tokio::runtime::Handle::current().metrics().num_workers());
        metrics.set_ready_while_calibrating(config.telemetry.ready_while_calibrating);
        metrics.set_ready(true);
        tracing::info!(input = ?config.input.kind, "pipeline started");
        Ok(Daemon {
            shutdown,
            telemetry_addr,
            telemetry,
            stop_telemetry,
            source,
            scorer,
            mqtt_output,
            metrics,
            reloader,
            health,
            model_watch,
            queue_gauges,
            input_kind: config.input.kind.name().to_string(),
        })
    }

    /// Reloads the model (SIGHUP, a changed model file, or a test); see
    /// [`crate::daemon::reload`].
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The pipeline's heartbeat and queue depths.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// The input's kind, lower case (`replay`, `mqtt`, ...).
    pub fn input_kind(&self) -> &str {
        &self.input_kind
    }

    pub fn telemetry_addr(&self) -> Option<SocketAddr> {
        self.telemetry_addr
    }

    /// A handle that stops the sources when `true` is sent.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until every stage has drained, then stops the telemetry server.
    pub async fn wait(self) -> Result<RunSummary, DaemonError> {
        let join = |e: tokio::task::JoinError| DaemonError::Stage(e.to_string());
        let frames = self.source.await.map_err(join)?;
        if let Some(task) = self.model_watch {
            task.abort();
        }
        self.queue_gauges.abort();
        let scored = self.scorer.await.map_err(join)?;
        if let Some(task) = self.mqtt_output {
            // The sinks are dropped: the MQTT output is saying goodbye.
            // A broker that is away does not hold the exit for long.
            task.finish(crate::sink::mqtt::GOODBYE_TIMEOUT).await;
        }
        self.metrics.set_ready(false);
        let _ = self.stop_telemetry.send(true);
        if let Some(task) = self.telemetry {
            let _ = task.await;
        }
        let (windows, alerts) = scored?;
        tracing::info!(frames, windows, alerts, "pipeline drained");
        Ok(RunSummary {
            frames,
            windows,
            alerts,
        })
    }
}
