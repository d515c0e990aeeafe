//! The recent windows the served model judged normal, kept for
//! retraining.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::control::Mark;
use crate::model::train::WindowSet;
use crate::window::Window;

use super::learn::*;

/// Recent windows the served model judged normal. A window is kept only
/// once the `margin` windows after it on its device were normal too, and
/// the `margin` windows after an over-threshold one are dropped, so the
/// surroundings of an anomaly are not learned as normal either.
pub(crate) struct NormalWindows {
    pub(crate) capacity: usize,
    pub(crate) margin: usize,
    /// Devices followed at once (`window.max_devices`).
    pub(crate) max_devices: usize,
    /// Per device: its pending windows, the windows left to skip after an
    /// anomaly, and its stream.
    pub(crate) pending: HashMap<Arc<str>, Pending>,
    pub(crate) next_stream: usize,
    pub(crate) kept: VecDeque<Kept>,
}

/// One device's windows not yet confirmed normal.
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) queue: VecDeque<Kept>,
    pub(crate) cooldown: usize,
    pub(crate) stream: usize,
}

/// A window kept for retraining: its stream, values and span.
pub(crate) struct Kept {
    pub(crate) stream: usize,
    pub(crate) data: Vec<f32>,
    pub(crate) device: Arc<str>,
    pub(crate) t_start: f64,
    pub(crate) t_end: f64,
}

impl NormalWindows {
    pub(crate) fn new(capacity: usize, margin: usize, max_devices: usize) -> Self {
        Self {
            capacity,
            margin,
            max_devices: max_devices.max(1),
            pending: HashMap::new(),
            next_stream: 0,
            kept: VecDeque::new(),
        }
    }

    pub(crate) fn observe(&mut self, window: &Window, over: bool) {
        if !self.pending.contains_key(&window.device) && self.pending.len() >= self.max_devices {
            // Past the windower's bound the devices are new ids, and the
            // windower forgot the old ones: so do we (what they had pending
            // was not confirmed normal yet). Kept windows keep their streams.
            self.pending.clear();
        }
        let next_stream = &mut self.next_stream;
        let pending = self
            .pending
            .entry(window.device.clone())
            .or_insert_with(|| {
                *next_stream += 1;
                Pending {
                    stream: *next_stream - 1,
                    ..Pending::default()
                }
            });
        let stream = pending.stream;
        let (queue, cooldown) = (&mut pending.queue, &mut pending.cooldown);
        if over {
            queue.clear();
            *cooldown = self.margin;
            return;
        }
        if *cooldown > 0 {
            *cooldown -= 1;
            return;
        }
        queue.push_back(Kept {
            stream,
            data: window.data.clone(),
            device: window.device.clone(),
            t_start: window.t_start,
            t_end: window.t_end,
        });
        if queue.len() > self.margin {
            let confirmed = queue.pop_front().expect("longer than the margin");
            if self.kept.len() == self.capacity {
                self.kept.pop_front();
            }
            self.kept.push_back(confirmed);
        }
    }

    /// Forgets the windows `mark` covers, kept or pending; returns how many.
    pub(crate) fn remove(&mut self, mark: &Mark) -> usize {
        let before = self.kept.len();
        self.kept
            .retain(|k| !mark.covers(&k.device, k.t_start, k.t_end));
        let mut removed = before - self.kept.len();
        for pending in self.pending.values_mut() {
            let before = pending.queue.len();
            pending
                .queue
                .retain(|k| !mark.covers(&k.device, k.t_start, k.t_end));
            removed += before - pending.queue.len();
        }
        removed
    }

    /// The older windows to train on and the newest ones held back, each
    /// grouped by device in time order.
    pub(crate) fn split(&self, features: usize) -> (WindowSet, WindowSet) {
        let held = ((self.kept.len() as f64) * HELD_BACK_FRACTION).ceil() as usize;
        let cut = self.kept.len() - held;
        let mut train_set = WindowSet::new(features);
        let mut held_back = WindowSet::new(features);
        // The windows just before the cut overlap the held-back ones.
        for (i, kept) in self.kept.iter().enumerate() {
            if i < cut.saturating_sub(self.margin) {
                train_set.push(kept.stream, &kept.data);
            } else if i >= cut {
                held_back.push(kept.stream, &kept.data);
            }
        }
        (grouped_by_stream(&train_set), held_back)
    }
}
