//! The evidence sink: on the scorer's thread it keeps each device's last
//! scores and hands a raised alert's evidence, with those scores, to a
//! writer thread of its own through a bounded queue, so a slow disk holds
//! up neither the scorer nor the other sinks. When the queue is full the
//! evidence is dropped and counted (`accelwatch_evidence_dropped_total`).

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::store::EvidenceStore;
use super::{Evidence, RecentScore};
use crate::idle::IdleOrder;
use crate::record::Output;
use crate::sink::Sink;
use crate::telemetry::Metrics;

/// Scores kept per device for an evidence's `recent`.
pub const RECENT: usize = 60;

/// Evidence waiting for the writer, at most.
pub const QUEUE: usize = 256;

pub struct EvidenceSink {
    queue: Option<SyncSender<Evidence>>,
    writer: Option<JoinHandle<()>>,
    recent: HashMap<Arc<str>, (u64, VecDeque<RecentScore>)>,
    max_devices: usize,
    idle: IdleOrder<u64>,
    tick: u64,
    metrics: Metrics,
}

impl EvidenceSink {
    /// Writes into `store`; keeps the last scores of at most `max_devices`
    /// devices (the idlest is forgotten first).
    pub fn start(
        store: EvidenceStore,
        max_devices: usize,
        metrics: Metrics,
    ) -> std::io::Result<Self> {
        let (queue, evidence) = sync_channel::<Evidence>(QUEUE);
        for (_, why) in store.skipped() {
            metrics.evidence_skipped(why.as_str());
        }
        let (files, bytes) = store.usage();
        metrics.evidence_kept(files, bytes);
        let writer_metrics = metrics.clone();
        let writer = std::thread::Builder::new()
            .name("evidence".into())
            .spawn(move || {
                let metrics = writer_metrics;
                let mut failing = false;
                for e in evidence {
                    match store.put(&e) {
                        Ok(removed) => {
                            let (files, bytes) = store.usage();
                            metrics.evidence_written(removed, files, bytes);
                            failing = false;
                        }
                        Err(error) => {
                            metrics.evidence_dropped("write_failed");
                            if !failing {
                                tracing::error!(%error, id = %e.id, "cannot keep an alert's evidence");
                            }
                            failing = true;
                        }
                    }
                }
            })?;
        Ok(Self {
            queue: Some(queue),
            writer: Some(writer),
            recent: HashMap::new(),
            max_devices: max_devices.max(1),
            idle: IdleOrder::new(),
            tick: 0,
            metrics,
        })
    }

    fn remember(&mut self, device: &Arc<str>, score: RecentScore) {
        self.tick += 1;
        if !self.recent.contains_key(device) && self.recent.len() >= self.max_devices {
            let recent = &self.recent;
            let idlest = self.idle.idlest(
                |device| recent.get(device).map(|(tick, _)| *tick),
                || {
                    recent
                        .iter()
                        .map(|(device, (tick, _))| (*tick, device.clone()))
                },
            );
            if let Some(idlest) = idlest {
                self.recent.remove(&idlest);
            }
        }
        let (tick, scores) = self
            .recent
            .entry(device.clone())
            .or_insert_with(|| (0, VecDeque::with_capacity(RECENT)));
        *tick = self.tick;
        if scores.len() >= RECENT {
            scores.pop_front();
        }
        scores.push_back(score);
    }
}

impl Sink for EvidenceSink {
    fn name(&self) -> &'static str {
        "evidence"
    }

    fn write(&mut self, output: &Output) -> std::io::Result<()> {
        match output {
            Output::Window(w) => self.remember(
                &w.device,
                RecentScore {
                    seq: w.seq,
                    t_end: w.t_end,
                    score: w.score,
                },
            ),
            Output::Alert(a) => {
                let (Some(detail), Some(queue)) = (&a.detail, &self.queue) else {
                    return Ok(());
                };
                let mut evidence = Evidence::clone(detail);
                if let Some((_, scores)) = self.recent.get(&a.device) {
                    evidence.recent = scores.iter().copied().collect();
                }
                match queue.try_send(evidence) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => self.metrics.evidence_dropped("queue_full"),
                    Err(TrySendError::Disconnected(_)) => {
                        self.metrics.evidence_dropped("write_failed")
                    }
                }
            }
            Output::Status(_) => {}
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EvidenceSink {
    /// The queued evidence is written before the sink is gone (the daemon
    /// drops its sinks after the last batch).
    fn drop(&mut self) {
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::store::EvidenceLimits;
    use crate::record::{AlertRecord, ChannelErrors, WindowRecord};

    fn window(device: &Arc<str>, seq: u64, score: f32) -> Output {
        Output::Window(WindowRecord {
            kind: "window",
            device: device.clone(),
            seq,
            t_start: 0.0,
            t_end: seq as f64,
            score,
            threshold: 0.3,
            anomaly: false,
            over_threshold: score > 0.3,
            latent: Default::default(),
            channel_error: ChannelErrors {
                names: Arc::from(vec!["ax".to_string(), "ay".into()]),
                values: smallvec::smallvec![0.0; 2],
            },
            model: Arc::from("basic-1"),
            activity: None,
            confidence: None,
            timeline: Default::default(),
        })
    }

    #[test]
    fn a_raise_is_written_with_the_devices_last_scores() {
        let dir = tempfile::tempdir().unwrap();
        let limits = EvidenceLimits {
            max_count: 10,
            max_bytes: 1 << 20,
        };
        let store = EvidenceStore::open(dir.path(), limits).unwrap();
        let metrics = Metrics::new();
        let mut sink = EvidenceSink::start(store.clone(), 1, metrics.clone()).unwrap();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        for seq in 0..(RECENT as u64 + 5) {
            sink.write(&window(&a, seq, 0.1)).unwrap();
        }
        let mut evidence = crate::evidence::store::tests::sample("a", 1.0e12);
        evidence.seq = RECENT as u64 + 4;
        let id = evidence.id.clone();
        let alert = AlertRecord {
            kind: "alert",
            event: "raise",
            device: a.clone(),
            seq: evidence.seq,
            t: 0.0,
            score: 2.5,
            threshold: 0.3,
            model: Arc::from("basic-1"),
            evidence: Some(Arc::from(id.as_str())),
            detail: Some(Arc::new(evidence)),
        };
        sink.write(&Output::Alert(alert)).unwrap();
        // Another device: the one remembered before it is forgotten.
        sink.write(&window(&b, 0, 0.1)).unwrap();
        drop(sink);
        let kept = store.get(&id).unwrap();
        assert_eq!(kept.recent.len(), RECENT);
        assert_eq!(kept.recent.last().unwrap().seq, RECENT as u64 + 4);
        assert_eq!(kept.recent[0].seq, 5, "the oldest dropped");
        assert!(metrics
            .render()
            .contains("accelwatch_evidence_written_total 1"));
    }

    #[test]
    fn past_max_devices_the_idlest_device_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let limits = EvidenceLimits {
            max_count: 10,
            max_bytes: 1 << 20,
        };
        let store = EvidenceStore::open(dir.path(), limits).unwrap();
        let mut sink = EvidenceSink::start(store, 3, Metrics::new()).unwrap();
        let ids: Vec<Arc<str>> = ["a", "b", "c", "d", "e"].map(Arc::from).to_vec();
        for (seq, i) in [0, 1, 2, 0, 3, 0, 4].into_iter().enumerate() {
            sink.write(&window(&ids[i], seq as u64, 0.1)).unwrap();
        }
        let mut kept: Vec<&str> = sink.recent.keys().map(|d| &**d).collect();
        kept.sort();
        // b (seq 1) went when d came, c (seq 2) when e came; a stayed, touched since.
        assert_eq!(kept, ["a", "d", "e"]);
    }
}
