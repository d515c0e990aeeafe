//! How far the recent alarm rate is from the calibrated one.

use std::collections::VecDeque;

/// Recent alarm rate against the calibrated one: the share of the last
/// [`Drift::WINDOWS`] windows over the threshold, divided by the share a
/// model calibrated at quantile q expects of normal data (1 − q). About 1
/// while the data looks like the training data; a lasting rise means drift
/// (or a lasting anomaly), and a retraining may be due.
pub struct Drift {
    recent: VecDeque<bool>,
    over: usize,
    expected: f64,
}

impl Drift {
    pub const WINDOWS: usize = 1000;

    pub fn new(quantile: f64) -> Self {
        Self {
            recent: VecDeque::with_capacity(Self::WINDOWS),
            over: 0,
            expected: (1.0 - quantile).max(1e-6),
        }
    }

    pub fn observe(&mut self, over: bool) {
        if self.recent.len() == Self::WINDOWS && self.recent.pop_front() == Some(true) {
            self.over -= 1;
        }
        self.recent.push_back(over);
        self.over += over as usize;
    }

    pub fn ratio(&self) -> f64 {
        if self.recent.is_empty() {
            return 0.0;
        }
        (self.over as f64 / self.recent.len() as f64) / self.expected
    }
}
