//! The pipeline's heartbeat: progress counters and queue depths, for
//! /readyz, the watchdog and STATUS=.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::window::Window;

/// Progress counters the stages bump; see [`Health`].
#[derive(Debug, Default)]
pub struct Pulse {
    pub frames: AtomicU64,
    pub batches: AtomicU64,
    /// Ingest has a frame in hand (decoding and windowing it on the
    /// source's task): no queue holds frames, so this is their "queued".
    pub ingesting: AtomicBool,
}

impl Pulse {
    pub fn beat(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The pipeline's heartbeat: each stage either made progress since the
/// last look or has nothing queued for it.
#[derive(Clone)]
pub struct Health {
    pub pulse: Arc<Pulse>,
    pub windows: mpsc::WeakSender<Window>,
}

/// One look at the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Frames ingested, batches scored.
    pub progress: [u64; 2],
    /// Work waiting at each stage: a frame in ingest's hands (0 or 1), and
    /// the windows queued for the scorer.
    pub waiting: [usize; 2],
}

/// The scorer writes to the sinks on its own thread: no queue between.
const STAGES: [&str; 2] = ["ingest", "scorer and sinks"];

fn depth<T>(weak: &mpsc::WeakSender<T>) -> usize {
    weak.upgrade()
        .map(|s| s.max_capacity() - s.capacity())
        .unwrap_or(0)
}

impl Health {
    pub fn snapshot(&self) -> Snapshot {
        let p = &self.pulse;
        Snapshot {
            progress: [
                p.frames.load(Ordering::Relaxed),
                p.batches.load(Ordering::Relaxed),
            ],
            waiting: [
                usize::from(p.ingesting.load(Ordering::Relaxed)),
                depth(&self.windows),
            ],
        }
    }

    /// What is still queued, for the log: "12 windows queued for the scorer".
    pub fn in_flight(&self) -> String {
        format!(
            "{} windows queued for the scorer",
            self.snapshot().waiting[1]
        )
    }
}

impl Snapshot {
    /// The stages that had work waiting and did none between `before` and
    /// `self` (ingest: the same frame in hand at both looks).
    pub fn stalled_since(&self, before: &Snapshot) -> Vec<&'static str> {
        (0..2)
            .filter(|&i| {
                self.progress[i] == before.progress[i]
                    && self.waiting[i] > 0
                    && before.waiting[i] > 0
            })
            .map(|i| STAGES[i])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(progress: [u64; 2], waiting: [usize; 2]) -> Snapshot {
        Snapshot { progress, waiting }
    }

    #[test]
    fn a_stage_is_stalled_when_its_work_waited_across_two_looks_without_progress() {
        // The same frame in ingest's hands at both looks, no frame done.
        assert_eq!(
            look([5, 9], [1, 0]).stalled_since(&look([5, 9], [1, 0])),
            ["ingest"]
        );
        // Windows queued at both looks and no batch scored.
        assert_eq!(
            look([6, 9], [0, 3]).stalled_since(&look([5, 9], [0, 2])),
            ["scorer and sinks"]
        );
        // Progress, or nothing waiting at the first look, is not a stall.
        assert!(look([6, 10], [1, 3])
            .stalled_since(&look([5, 9], [1, 3]))
            .is_empty());
        assert!(look([5, 9], [1, 3])
            .stalled_since(&look([5, 9], [0, 0]))
            .is_empty());
    }

    #[test]
    fn ingest_waits_with_a_frame_in_hand() {
        let (tx, _rx) = mpsc::channel::<Window>(4);
        let health = Health {
            pulse: Arc::default(),
            windows: tx.downgrade(),
        };
        assert_eq!(health.snapshot().waiting, [0, 0]);
        health.pulse.ingesting.store(true, Ordering::Relaxed);
        assert_eq!(health.snapshot().waiting, [1, 0]);
    }
}
