//! Anomaly state per device with hysteresis: raised after `raise_after`
//! consecutive windows over the threshold, cleared after `clear_after`
//! consecutive windows under it. Pure.

use std::collections::HashMap;
use std::sync::Arc;

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

#[derive(Debug)]
pub struct Detector {
    raise_after: u32,
    clear_after: u32,
    devices: HashMap<Arc<str>, Hysteresis>,
}

impl Detector {
    pub fn new(raise_after: u32, clear_after: u32) -> Self {
        Self {
            raise_after,
            clear_after,
            devices: HashMap::new(),
        }
    }

    /// Records one window's verdict; returns whether the device is in
    /// alert after it, and the transition it caused, if any.
    pub fn observe(&mut self, device: &Arc<str>, over: bool) -> (bool, Option<Transition>) {
        let state = self.devices.entry(device.clone()).or_default();
        let transition = state.observe(over, self.raise_after, self.clear_after);
        (state.active, transition)
    }

    /// New hysteresis lengths (a reload); each device keeps its state.
    pub fn set_limits(&mut self, raise_after: u32, clear_after: u32) {
        self.raise_after = raise_after;
        self.clear_after = clear_after;
    }

    pub fn forget(&mut self, device: &str) {
        self.devices.remove(device);
    }

    pub fn active_alerts(&self) -> usize {
        self.devices.values().filter(|s| s.active).count()
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
        let mut d = Detector::new(2, 1);
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
