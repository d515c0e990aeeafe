//! Anomaly state per device with hysteresis: raised after `raise_after`
//! consecutive windows over the threshold, cleared after `clear_after`
//! consecutive windows under it. Pure.

use serde::{Deserialize, Serialize};

use std::collections::HashMap;
use std::sync::Arc;

use crate::idle::IdleOrder;
use crate::problem::Problems;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Raised,
    Cleared,
}

impl Transition {
    pub const fn as_str(self) -> &'static str {
        match self {
            Transition::Raised => "raise",
            Transition::Cleared => "clear",
        }
    }
}

/// One device's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hysteresis {
    over_run: u32,
    under_run: u32,
    active: bool,
}

impl Hysteresis {
    pub fn active(&self) -> bool {
        self.active
    }

    pub fn observe(
        &mut self,
        over: bool,
        raise_after: u32,
        clear_after: u32,
    ) -> Option<Transition> {
        if over {
            self.over_run = self.over_run.saturating_add(1);
            self.under_run = 0;
            if !self.active && self.over_run >= raise_after {
                self.active = true;
                return Some(Transition::Raised);
            }
        } else {
            self.under_run = self.under_run.saturating_add(1);
            self.over_run = 0;
            if self.active && self.under_run >= clear_after {
                self.active = false;
                return Some(Transition::Cleared);
            }
        }
        None
    }
}

/// The hysteresis of every device heard recently. It holds at most
/// `max_devices` (the windower's bound): a new device beyond that takes the
/// place of the one observed longest ago, which the windower has evicted
/// too, so a fleet of ever-new device ids never grows it.
#[derive(Debug)]
pub struct Detector {
    raise_after: u32,
    clear_after: u32,
    max_devices: usize,
    /// Each device's state and the observation count when it was last seen.
    devices: HashMap<Arc<str>, (Hysteresis, u64)>,
    observations: u64,
    idle: IdleOrder<u64>,
}

impl Detector {
    pub fn new(raise_after: u32, clear_after: u32, max_devices: usize) -> Self {
        Self {
            raise_after,
            clear_after,
            max_devices: max_devices.max(1),
            devices: HashMap::new(),
            observations: 0,
            idle: IdleOrder::new(),
        }
    }

    /// Records one window's verdict; returns whether the device is in
    /// alert after it, and the transition it caused, if any.
    pub fn observe(&mut self, device: &Arc<str>, over: bool) -> (bool, Option<Transition>) {
        self.observations += 1;
        if !self.devices.contains_key(device) && self.devices.len() >= self.max_devices {
            self.forget_idlest();
        }
        let (state, seen) = self.devices.entry(device.clone()).or_default();
        *seen = self.observations;
        let transition = state.observe(over, self.raise_after, self.clear_after);
        (state.active, transition)
    }

    fn forget_idlest(&mut self) {
        let devices = &self.devices;
        let idlest = self.idle.idlest(
            |device| devices.get(device).map(|(_, seen)| *seen),
            || {
                devices
                    .iter()
                    .map(|(device, (_, seen))| (*seen, device.clone()))
            },
        );
        if let Some(device) = idlest {
            self.devices.remove(&device);
        }
    }

    /// Devices whose state is kept.
    pub fn devices_tracked(&self) -> usize {
        self.devices.len()
    }

    /// New hysteresis lengths (a reload); each device keeps its state.
    pub fn set_limits(&mut self, raise_after: u32, clear_after: u32) {
        self.raise_after = raise_after;
        self.clear_after = clear_after;
    }

    pub fn active_alerts(&self) -> usize {
        self.devices.values().filter(|(s, _)| s.active).count()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// Consecutive windows over the threshold that raise an alert.
    #[serde(default = "DetectorConfig::default_raise_after")]
    pub raise_after: u32,
    /// Consecutive windows under the threshold that clear it.
    #[serde(default = "DetectorConfig::default_clear_after")]
    pub clear_after: u32,
    /// Overrides the threshold calibrated into the model.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Where raised alerts' evidence is kept (`"off"`: nowhere); unset:
    /// `<model.dir>/evidence` when `model.dir` is set, else off. Read at
    /// start (see `crate::evidence`).
    #[serde(default)]
    pub evidence_dir: Option<String>,
    /// Most evidence files kept; the oldest go first.
    #[serde(default = "DetectorConfig::default_evidence_max_count")]
    pub evidence_max_count: usize,
    /// Most bytes of evidence kept; the oldest go first.
    #[serde(default = "DetectorConfig::default_evidence_max_bytes")]
    pub evidence_max_bytes: u64,
}

impl DetectorConfig {
    const fn default_raise_after() -> u32 {
        3
    }
    const fn default_clear_after() -> u32 {
        3
    }
    const fn default_evidence_max_count() -> usize {
        500
    }
    const fn default_evidence_max_bytes() -> u64 {
        32 * 1024 * 1024
    }
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            raise_after: Self::default_raise_after(),
            clear_after: Self::default_clear_after(),
            threshold: None,
            evidence_dir: None,
            evidence_max_count: Self::default_evidence_max_count(),
            evidence_max_bytes: Self::default_evidence_max_bytes(),
        }
    }
}

impl DetectorConfig {
    /// The problems of `[detector]`.
    pub fn problems(&self, problems: &mut Problems) {
        let mut check = |ok: bool, key: &str, message: String| problems.check(ok, key, message);
        check(
            self.raise_after >= 1,
            "detector.raise_after",
            "must be at least 1".into(),
        );
        check(
            self.clear_after >= 1,
            "detector.clear_after",
            "must be at least 1".into(),
        );
        check(
            self.evidence_max_count >= 1,
            "detector.evidence_max_count",
            "must be at least 1".into(),
        );
        check(
            self.evidence_max_bytes >= 65536,
            "detector.evidence_max_bytes",
            format!(
                "must be at least 65536 (one window's evidence), got {}",
                self.evidence_max_bytes
            ),
        );
        check(
            self.evidence_dir.as_deref() != Some(""),
            "detector.evidence_dir",
            "must be a directory or \"off\"".into(),
        );
        if let Some(threshold) = self.threshold {
            check(
                threshold.is_finite() && threshold > 0.0,
                "detector.threshold",
                format!("must be a positive number, got {threshold}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pattern: &str, raise: u32, clear: u32) -> String {
        let mut h = Hysteresis::default();
        pattern
            .chars()
            .map(|c| match h.observe(c == '1', raise, clear) {
                Some(Transition::Raised) => 'R',
                Some(Transition::Cleared) => 'C',
                None if h.active() => 'a',
                None => '.',
            })
            .collect()
    }

    #[test]
    fn raises_after_k_and_clears_after_m() {
        assert_eq!(run("1101110001000", 3, 3), ".....RaaC....");
    }

    #[test]
    fn hysteresis_cases() {
        assert_eq!(run("111000", 3, 3), "..RaaC");
        assert_eq!(run("110110", 3, 3), "......");
        assert_eq!(run("1110110", 3, 3), "..Raaaa");
        assert_eq!(run("1", 1, 1), "R");
        assert_eq!(run("10", 1, 1), "RC");
    }

    #[test]
    fn devices_are_independent() {
        let mut d = Detector::new(2, 1, 16);
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        assert_eq!(d.observe(&a, true), (false, None));
        assert_eq!(d.observe(&b, true), (false, None));
        assert_eq!(d.observe(&a, true), (true, Some(Transition::Raised)));
        assert_eq!(d.active_alerts(), 1);
        assert_eq!(d.observe(&b, false), (false, None));
        assert_eq!(d.observe(&a, false), (false, Some(Transition::Cleared)));
    }
}
