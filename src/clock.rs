//! Wall-clock time as the records carry it, and a clock that tests can
//! step (a box without a real-time clock, NTP stepping it). Nothing orders
//! by it: ids come from [`crate::sequence`].

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Now, in Unix milliseconds (0 before 1970).
pub fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The system's wall clock moved by an offset; clones share the offset.
/// The daemon's is the system's ([`Clock::system`]).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn system() -> Self {
        Self::default()
    }

    /// Moves this clock and its clones by `ms` (back when negative), as a
    /// time service stepping the system clock would.
    pub fn step(&self, ms: i64) {
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Now, in Unix milliseconds (0 before 1970).
    pub fn unix_ms(&self) -> f64 {
        (unix_ms() + self.offset_ms.load(Ordering::SeqCst) as f64).max(0.0)
    }

    /// Now, in whole Unix microseconds.
    pub fn unix_us(&self) -> u64 {
        (self.unix_ms() * 1000.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stepped_clock_moves_its_clones_and_stops_at_1970() {
        let clock = Clock::system();
        let other = clock.clone();
        let before = clock.unix_ms();
        clock.step(-86_400_000);
        let after = other.unix_ms();
        assert!(before - after > 86_000_000.0, "{before} {after}");
        clock.step(-before as i64 * 2);
        assert_eq!(other.unix_ms(), 0.0);
    }
}
