//! Is a port delivering samples at the configured rate? Without device
//! timestamps, samples are placed by the nominal `input.sample_rate_hz`; a
//! sender at another rate (a firmware set to 100 Hz, a baud rate too slow
//! for the samples) would silently stretch or squeeze every window. Pure:
//! the caller counts samples and ticks it with the time.

/// What a tick concluded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateEvent {
    /// The rate has been off by more than the tolerance for the whole
    /// window: reported once per episode.
    Mismatch { observed_hz: f64 },
    /// Back within the tolerance after a reported mismatch.
    Recovered { observed_hz: f64 },
}

#[derive(Debug, Clone)]
pub struct RateMonitor {
    expected_hz: f64,
    tolerance: f64,
    window_ms: f64,
    period_start_ms: Option<f64>,
    samples: u64,
    off_since_ms: Option<f64>,
    reported: bool,
    observed_hz: Option<f64>,
}

impl RateMonitor {
    /// `tolerance`: relative, e.g. 0.2; `window_s`: how long the rate must
    /// stay off before it is reported.
    pub fn new(expected_hz: f64, tolerance: f64, window_s: f64) -> Self {
        Self {
            expected_hz,
            tolerance,
            window_ms: window_s * 1000.0,
            period_start_ms: None,
            samples: 0,
            off_since_ms: None,
            reported: false,
            observed_hz: None,
        }
    }

    /// Starts afresh, e.g. after a reconnection (whatever the port had
    /// buffered arrives in a burst).
    pub fn restart(&mut self, now_ms: f64) {
        self.period_start_ms = Some(now_ms);
        self.samples = 0;
        self.off_since_ms = None;
        self.reported = false;
        self.observed_hz = None;
    }

    pub fn count(&mut self, samples: usize) {
        self.samples += samples as u64;
    }

    /// The rate over the last period, once one has ended.
    pub fn observed_hz(&self) -> Option<f64> {
        self.observed_hz
    }

    /// Ends the current period (call about once a second).
    pub fn tick(&mut self, now_ms: f64) -> Option<RateEvent> {
        let Some(start) = self.period_start_ms else {
            self.restart(now_ms);
            return None;
        };
        let elapsed = now_ms - start;
        if elapsed <= 0.0 {
            return None;
        }
        let observed_hz = self.samples as f64 * 1000.0 / elapsed;
        self.observed_hz = Some(observed_hz);
        self.period_start_ms = Some(now_ms);
        self.samples = 0;
        let off = (observed_hz - self.expected_hz).abs() > self.tolerance * self.expected_hz;
        if !off {
            self.off_since_ms = None;
            return std::mem::take(&mut self.reported)
                .then_some(RateEvent::Recovered { observed_hz });
        }
        let since = *self.off_since_ms.get_or_insert(start);
        if !self.reported && now_ms - since >= self.window_ms {
            self.reported = true;
            return Some(RateEvent::Mismatch { observed_hz });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ticks once a second for `seconds` with `hz` samples a second.
    fn run(m: &mut RateMonitor, t: &mut f64, seconds: usize, hz: usize) -> Vec<RateEvent> {
        let mut events = Vec::new();
        for _ in 0..seconds {
            m.count(hz);
            *t += 1000.0;
            events.extend(m.tick(*t));
        }
        events
    }

    #[test]
    fn a_sustained_mismatch_is_reported_once_then_its_recovery() {
        let mut m = RateMonitor::new(50.0, 0.2, 10.0);
        let mut t = 0.0;
        m.restart(t);
        assert!(run(&mut m, &mut t, 30, 50).is_empty());
        assert!(
            run(&mut m, &mut t, 30, 55).is_empty(),
            "10% off is within 20%"
        );
        assert_eq!(m.observed_hz(), Some(55.0));
        assert!(run(&mut m, &mut t, 9, 100).is_empty(), "not yet 10 s");
        assert_eq!(
            run(&mut m, &mut t, 20, 100),
            vec![RateEvent::Mismatch { observed_hz: 100.0 }]
        );
        assert_eq!(
            run(&mut m, &mut t, 1, 50),
            vec![RateEvent::Recovered { observed_hz: 50.0 }]
        );
        assert!(run(&mut m, &mut t, 5, 0).is_empty());
        assert_eq!(
            run(&mut m, &mut t, 5, 0).len(),
            1,
            "silence is a mismatch too"
        );
    }

    #[test]
    fn short_bursts_are_not_reported() {
        let mut m = RateMonitor::new(50.0, 0.2, 10.0);
        let mut t = 0.0;
        m.restart(t);
        for _ in 0..10 {
            assert!(run(&mut m, &mut t, 5, 200).is_empty());
            assert!(run(&mut m, &mut t, 1, 50).is_empty());
        }
    }
}
