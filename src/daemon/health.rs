//! The pipeline's heartbeat: progress counters and queue depths, for
//! /readyz, the watchdog and STATUS=.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::source::frame::Frame;
use crate::window::Window;

/// Progress counters the stages bump; see [`Health`].
#[derive(Debug, Default)]
pub struct Pulse {
    pub frames: AtomicU64,
    pub batches: AtomicU64,
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
    pub frames: mpsc::WeakSender<Frame>,
    pub windows: mpsc::WeakSender<Window>,
}

/// One look at the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub progress: [u64; 2],
    pub queued: [usize; 2],
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
            queued: [depth(&self.frames), depth(&self.windows)],
        }
    }

    /// What is still queued, for the log: "3 frames, 12 windows".
    pub fn in_flight(&self) -> String {
        let s = self.snapshot();
        format!(
            "{} frames queued for ingest, {} windows queued for the scorer",
            s.queued[0], s.queued[1]
        )
    }
}

impl Snapshot {
    /// The stages that had work queued and did none between `before` and `self`.
    pub fn stalled_since(&self, before: &Snapshot) -> Vec<&'static str> {
        (0..2)
            .filter(|&i| self.progress[i] == before.progress[i] && self.queued[i] > 0)
            .map(|i| STAGES[i])
            .collect()
    }
}
