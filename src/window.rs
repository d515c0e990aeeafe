//! Per-device sliding windows. Pure: time comes from the samples (or the
//! caller's arrival stamp), never from a clock of its own.

use serde::{Deserialize, Serialize};

use crate::idle::IdleOrder;
use crate::problem::Problems;
use std::collections::HashMap;
use std::sync::Arc;

mod spares;
use spares::Buffers;
pub use spares::Spares;

/// `size` consecutive samples of one device, time-major (`size * channels`).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub device: Arc<str>,
    /// Per-device sequence number, counting every window emitted.
    pub seq: u64,
    pub t_start: f64,
    pub t_end: f64,
    pub data: Vec<f32>,
    /// The model scope serving the device (see [`crate::scope`]);
    /// None for the fleet.
    pub scope: Option<Arc<str>>,
    /// When it passed each stage on its way to the outputs.
    pub timeline: Timeline,
}

/// When a window passed each stage of the daemon (wall clock, Unix ms; 0:
/// not stamped, as in offline commands), for `accelwatch_window_latency_seconds`
/// and its parts in `accelwatch_window_stage_seconds`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timeline {
    /// The frame holding the window's last sample arrived: where the
    /// latency starts.
    pub arrival_ms: f64,
    /// The ingest stage had decoded that frame and completed the window.
    pub completed_ms: f64,
    /// The scorer took the window off its queue.
    pub picked_ms: f64,
    /// The scorer had scored the window's batch.
    pub scored_ms: f64,
}

impl Timeline {
    pub const fn arrived(arrival_ms: f64) -> Self {
        Timeline {
            arrival_ms,
            completed_ms: 0.0,
            picked_ms: 0.0,
            scored_ms: 0.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowSpec {
    pub size: usize,
    pub hop: usize,
    pub channels: usize,
    pub max_gap_ms: f64,
    pub max_devices: usize,
    /// Spacing given to samples that carry no timestamp.
    pub interval_ms: f64,
}

/// Why a sample was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Older than the device's last sample, by at most `max_gap_ms` (a
    /// larger step back is a clock reset, not a drop).
    OutOfOrder,
    /// Same timestamp as the device's last sample.
    Duplicate,
}

impl Dropped {
    pub const fn reason(self) -> &'static str {
        match self {
            Dropped::OutOfOrder => "out_of_order",
            Dropped::Duplicate => "duplicate",
        }
    }
}

/// What else happened while a sample was taken.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Pushed {
    pub window: Option<Window>,
    /// The gap since the device's previous sample restarted its window.
    pub gap_restart: bool,
    /// The device's clock went back by more than `max_gap_ms` (it rebooted
    /// and stamps time since boot again): its window restarted.
    pub clock_reset: bool,
    /// The device was not tracked before this sample.
    pub new_device: bool,
    /// A device forgotten to make room for this one.
    pub evicted: Option<Arc<str>>,
}

/// What taking a payload of a device did to the device map.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Admitted {
    /// The device was not tracked before.
    pub new_device: bool,
    /// A device forgotten to make room for this one.
    pub evicted: Option<Arc<str>>,
}

#[derive(Debug)]
struct DeviceRing {
    id: Arc<str>,
    values: Vec<f32>,
    times: Vec<f64>,
    /// Next slot to write.
    head: usize,
    filled: usize,
    since_emit: usize,
    emitted_since_reset: bool,
    last_t: Option<f64>,
    next_seq: u64,
    last_touch: u64,
}

impl DeviceRing {
    fn new(id: Arc<str>, spec: &WindowSpec) -> Self {
        Self {
            id,
            values: vec![0.0; spec.size * spec.channels],
            times: vec![0.0; spec.size],
            head: 0,
            filled: 0,
            since_emit: 0,
            emitted_since_reset: false,
            last_t: None,
            next_seq: 0,
            last_touch: 0,
        }
    }

    fn restart(&mut self) {
        self.head = 0;
        self.filled = 0;
        self.since_emit = 0;
        self.emitted_since_reset = false;
    }

    /// One sample (see [`Windower::push`]).
    fn take(
        &mut self,
        spec: &WindowSpec,
        t_ms: Option<f64>,
        arrival_ms: f64,
        values: &[f32],
        buffers: &mut Buffers,
    ) -> Result<Pushed, Dropped> {
        let mut pushed = Pushed::default();
        let ring = self;
        let t = match (t_ms, ring.last_t) {
            (Some(t), _) => t,
            (None, Some(last)) => arrival_ms.max(last + spec.interval_ms),
            (None, None) => arrival_ms,
        };
        if let Some(last) = ring.last_t {
            if t < last {
                // A microcontroller stamps time since boot: after a reboot
                // every sample is older than the last one before it, and
                // dropping them would blind the device until its clock
                // caught up. Small reorderings stay drops.
                if last - t <= spec.max_gap_ms {
                    return Err(Dropped::OutOfOrder);
                }
                ring.restart();
                pushed.clock_reset = true;
            }
            if t == last {
                return Err(Dropped::Duplicate);
            }
            if t - last > spec.max_gap_ms {
                ring.restart();
                pushed.gap_restart = true;
            }
        }
        pushed.window = ring.store(spec, t, arrival_ms, values, buffers);
        Ok(pushed)
    }

    /// Writes a sample whose time has been checked, and returns the window
    /// it completes, if it does.
    #[inline]
    fn store(
        &mut self,
        spec: &WindowSpec,
        t: f64,
        arrival_ms: f64,
        values: &[f32],
        buffers: &mut Buffers,
    ) -> Option<Window> {
        self.store_run(spec, &[Some(t)], values);
        self.emit_if_due(spec, arrival_ms, buffers)
    }

    /// The window the samples stored so far complete, if one is due.
    #[inline]
    fn emit_if_due(
        &mut self,
        spec: &WindowSpec,
        arrival_ms: f64,
        buffers: &mut Buffers,
    ) -> Option<Window> {
        let due = !self.emitted_since_reset || self.since_emit >= spec.hop;
        if self.filled < spec.size || !due {
            return None;
        }
        let window = Window {
            timeline: Timeline::arrived(arrival_ms),
            ..self.window(spec, buffers)
        };
        self.next_seq += 1;
        self.since_emit = 0;
        self.emitted_since_reset = true;
        Some(window)
    }

    /// The samples of one payload. A sample in time order, after the last
    /// and within `max_gap_ms` of it, is stored without a word to `each`
    /// unless it completes a window; any other goes through
    /// [`take`](Self::take), and `each` hears what it did.
    fn take_all(
        &mut self,
        spec: &WindowSpec,
        t_ms: &[Option<f64>],
        arrival_ms: f64,
        values: &[f32],
        buffers: &mut Buffers,
        each: &mut impl FnMut(usize, Result<Pushed, Dropped>),
    ) {
        let c = spec.channels;
        let mut i = 0;
        while i < t_ms.len() {
            let run = self.continuing_run(spec, &t_ms[i..]);
            if run == 0 {
                let taken = self.take(
                    spec,
                    t_ms[i],
                    arrival_ms,
                    &values[i * c..(i + 1) * c],
                    buffers,
                );
                if taken != Ok(Pushed::default()) {
                    each(i, taken);
                }
                i += 1;
                continue;
            }
            // The run is stored up to each sample that completes a window
            // at once: the checks and bookkeeping of `store` once a window
            // rather than once a sample (the per-sample path was 8 % of
            // the daemon's CPU on binary input).
            let end = i + run;
            while i < end {
                let k = self.until_due(spec).min(end - i);
                self.store_run(spec, &t_ms[i..i + k], &values[i * c..(i + k) * c]);
                i += k;
                if let Some(window) = self.emit_if_due(spec, arrival_ms, buffers) {
                    each(
                        i - 1,
                        Ok(Pushed {
                            window: Some(window),
                            ..Pushed::default()
                        }),
                    );
                }
            }
        }
    }

    /// How many of `t_ms`, from the first, only continue the ring: stamped,
    /// each after the one before (the first after the ring's last sample)
    /// and within `max_gap_ms` of it. Anything else (no stamp, a first
    /// sample, a reordering, a gap, a reset clock) is for
    /// [`take`](Self::take)'s checks.
    #[inline]
    fn continuing_run(&self, spec: &WindowSpec, t_ms: &[Option<f64>]) -> usize {
        let Some(mut last) = self.last_t else {
            return 0;
        };
        let mut run = 0;
        for t in t_ms {
            match *t {
                Some(t) if t > last && t - last <= spec.max_gap_ms => last = t,
                _ => break,
            }
            run += 1;
        }
        run
    }

    /// Samples to store before the next one that may complete a window (at
    /// least one): the rest of the ring to fill, else the rest of the hop.
    #[inline]
    fn until_due(&self, spec: &WindowSpec) -> usize {
        let left = if self.filled < spec.size || !self.emitted_since_reset {
            spec.size.saturating_sub(self.filled)
        } else {
            spec.hop.saturating_sub(self.since_emit)
        };
        left.max(1)
    }

    /// Stores samples whose times have been checked, as [`store`](Self::store)
    /// would one by one, short of emitting.
    fn store_run(&mut self, spec: &WindowSpec, t_ms: &[Option<f64>], values: &[f32]) {
        let c = spec.channels;
        let k = t_ms.len();
        let mut done = 0;
        while done < k {
            let m = (spec.size - self.head).min(k - done);
            self.values[self.head * c..(self.head + m) * c]
                .copy_from_slice(&values[done * c..(done + m) * c]);
            for (slot, t) in self.times[self.head..self.head + m]
                .iter_mut()
                .zip(&t_ms[done..done + m])
            {
                *slot = t.unwrap_or_default();
            }
            self.head = (self.head + m) % spec.size;
            done += m;
        }
        self.last_t = t_ms[k - 1];
        self.filled = (self.filled + k).min(spec.size);
        self.since_emit += k;
    }

    fn window(&self, spec: &WindowSpec, buffers: &mut Buffers) -> Window {
        let c = spec.channels;
        // The oldest sample sits at `head` once the ring is full.
        let mut data = buffers.take(spec.size * c);
        data.extend_from_slice(&self.values[self.head * c..]);
        data.extend_from_slice(&self.values[..self.head * c]);
        let t_start = self.times[self.head % spec.size];
        let t_end = self.times[(self.head + spec.size - 1) % spec.size];
        Window {
            device: self.id.clone(),
            seq: self.next_seq,
            t_start,
            t_end,
            data,
            scope: None,
            timeline: Timeline::default(),
        }
    }
}

#[derive(Debug)]
pub struct Windower {
    spec: WindowSpec,
    devices: HashMap<Arc<str>, DeviceRing>,
    touches: u64,
    idle: IdleOrder<u64>,
    buffers: Buffers,
}

impl Windower {
    pub fn new(spec: WindowSpec) -> Self {
        assert!(spec.size >= 1 && spec.hop >= 1 && spec.channels >= 1 && spec.max_devices >= 1);
        Self {
            spec,
            devices: HashMap::new(),
            touches: 0,
            idle: IdleOrder::new(),
            buffers: Buffers::default(),
        }
    }

    /// New windows are filled in the buffers handed back to `spares` when
    /// there are any (see [`Spares`]).
    pub fn recycling(mut self, spares: Spares) -> Self {
        self.buffers = Buffers::with_spares(spares);
        self
    }

    pub fn spec(&self) -> &WindowSpec {
        &self.spec
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Takes one sample of `device`. `t_ms` is the device's timestamp; a
    /// sample without one is placed one interval after the device's previous
    /// sample, or at `arrival_ms` if that is later (so a silent device that
    /// comes back restarts its window instead of resuming it).
    pub fn push(
        &mut self,
        device: &str,
        t_ms: Option<f64>,
        arrival_ms: f64,
        values: &[f32],
    ) -> Result<Pushed, Dropped> {
        let mut result = Ok(Pushed::default());
        let admitted = self.push_many(device, &[t_ms], arrival_ms, values, |_, r| result = r);
        result.map(|mut pushed| {
            pushed.new_device = admitted.new_device;
            pushed.evicted = admitted.evicted;
            pushed
        })
    }

    /// Takes the samples of one payload of `device` (`t_ms.len()` samples,
    /// `values` time-major), finding the device once rather than per
    /// sample. `each(i, result)` hears, in order, what each sample that
    /// did more than join the ring did (dropped, restarted the window or
    /// completed one), as from [`push`](Self::push), whose `new_device` and
    /// `evicted` are returned here instead; a sample only stored is not
    /// reported, which keeps a payload's common case a copy.
    pub fn push_many(
        &mut self,
        device: &str,
        t_ms: &[Option<f64>],
        arrival_ms: f64,
        values: &[f32],
        mut each: impl FnMut(usize, Result<Pushed, Dropped>),
    ) -> Admitted {
        let spec = self.spec;
        debug_assert_eq!(values.len(), t_ms.len() * spec.channels);
        let mut admitted = Admitted::default();
        if t_ms.is_empty() {
            return admitted;
        }
        self.touches += 1;
        let touch = self.touches;
        if !self.devices.contains_key(device) {
            if self.devices.len() >= spec.max_devices {
                admitted.evicted = self.evict_idlest();
            }
            let id: Arc<str> = Arc::from(device);
            self.devices.insert(id.clone(), DeviceRing::new(id, &spec));
            admitted.new_device = true;
        }
        let ring = self.devices.get_mut(device).expect("inserted above");
        ring.last_touch = touch;
        ring.take_all(
            &spec,
            t_ms,
            arrival_ms,
            values,
            &mut self.buffers,
            &mut each,
        );
        admitted
    }

    /// Forgets a device, e.g. after its source reconnected.
    pub fn restart_device(&mut self, device: &str) {
        if let Some(ring) = self.devices.get_mut(device) {
            ring.restart();
            ring.last_t = None;
        }
    }

    fn evict_idlest(&mut self) -> Option<Arc<str>> {
        let devices = &self.devices;
        let idlest = self.idle.idlest(
            |id| devices.get(id).map(|ring| ring.last_touch),
            || {
                devices
                    .values()
                    .map(|ring| (ring.last_touch, ring.id.clone()))
            },
        )?;
        self.devices.remove(&idlest);
        Some(idlest)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    #[serde(default = "WindowConfig::default_size")]
    pub size: usize,
    #[serde(default = "WindowConfig::default_hop")]
    pub hop: usize,
    /// A larger jump between two timestamps of a device restarts its window.
    #[serde(default = "WindowConfig::default_max_gap_ms")]
    pub max_gap_ms: f64,
    /// Devices tracked at once; the longest idle is evicted beyond this.
    #[serde(default = "WindowConfig::default_max_devices")]
    pub max_devices: usize,
}

impl WindowSpec {
    /// The windowing `[window]` asks for, over `channels` channels sampled
    /// at `sample_rate_hz` (samples without a timestamp are spaced by it).
    pub fn new(window: &WindowConfig, channels: usize, sample_rate_hz: f64) -> Self {
        Self {
            size: window.size,
            hop: window.hop,
            channels,
            max_gap_ms: window.max_gap_ms,
            max_devices: window.max_devices,
            interval_ms: 1000.0 / sample_rate_hz,
        }
    }
}

/// The longest window accepted, in samples (a config's `window.size`, a
/// model's `window`): 17 minutes at 1 kHz. Beyond it a size is a typo, and
/// would allocate gigabytes per device.
pub const MAX_WINDOW_SAMPLES: usize = 1 << 20;

/// The most values (samples x channels) one window may hold: 16 MB of f32.
pub const MAX_WINDOW_VALUES: usize = 1 << 22;

impl WindowConfig {
    const fn default_size() -> usize {
        128
    }
    const fn default_hop() -> usize {
        64
    }
    const fn default_max_gap_ms() -> f64 {
        1000.0
    }
    const fn default_max_devices() -> usize {
        1024
    }
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            size: Self::default_size(),
            hop: Self::default_hop(),
            max_gap_ms: Self::default_max_gap_ms(),
            max_devices: Self::default_max_devices(),
        }
    }
}

impl WindowConfig {
    /// The problems of `[window]`.
    pub fn problems(&self, problems: &mut Problems) {
        let mut check = |ok: bool, key: &str, message: String| problems.check(ok, key, message);
        let window = self;
        check(
            (2..=MAX_WINDOW_SAMPLES).contains(&window.size),
            "window.size",
            format!(
                "must be between 2 and {MAX_WINDOW_SAMPLES} samples, got {}",
                window.size
            ),
        );
        check(
            window.hop >= 1 && window.hop <= window.size,
            "window.hop",
            format!(
                "must be between 1 and window.size ({}), got {}",
                window.size, window.hop
            ),
        );
        check(
            window.max_gap_ms.is_finite() && window.max_gap_ms > 0.0,
            "window.max_gap_ms",
            format!(
                "must be a positive number of milliseconds, got {}",
                window.max_gap_ms
            ),
        );
        check(
            window.max_devices >= 1,
            "window.max_devices",
            "must be at least 1".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(size: usize, hop: usize) -> WindowSpec {
        WindowSpec {
            size,
            hop,
            channels: 2,
            max_gap_ms: 100.0,
            max_devices: 2,
            interval_ms: 20.0,
        }
    }

    fn feed(w: &mut Windower, device: &str, from: usize, to: usize) -> Vec<Window> {
        (from..to)
            .filter_map(|i| {
                let t = i as f64 * 20.0;
                w.push(device, Some(t), 0.0, &[i as f32, -(i as f32)])
                    .unwrap()
                    .window
            })
            .collect()
    }

    #[test]
    fn emits_first_window_when_full_then_every_hop() {
        let mut w = Windower::new(spec(4, 2));
        let windows = feed(&mut w, "a", 0, 10);
        let firsts: Vec<f32> = windows.iter().map(|w| w.data[0]).collect();
        assert_eq!(firsts, vec![0.0, 2.0, 4.0, 6.0]);
        assert_eq!(
            windows.iter().map(|w| w.seq).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        let last = windows.last().unwrap();
        assert_eq!(
            last.data,
            vec![6.0, -6.0, 7.0, -7.0, 8.0, -8.0, 9.0, -9.0],
            "time-major, oldest first"
        );
        assert_eq!((last.t_start, last.t_end), (120.0, 180.0));
    }

    #[test]
    fn hop_equal_to_size_tiles_without_overlap() {
        let mut w = Windower::new(spec(3, 3));
        let windows = feed(&mut w, "a", 0, 9);
        let firsts: Vec<f32> = windows.iter().map(|w| w.data[0]).collect();
        assert_eq!(firsts, vec![0.0, 3.0, 6.0]);
    }

    #[test]
    fn devices_are_independent() {
        let mut w = Windower::new(spec(2, 1));
        assert!(w
            .push("a", Some(0.0), 0.0, &[1.0, 1.0])
            .unwrap()
            .window
            .is_none());
        assert!(w
            .push("b", Some(0.0), 0.0, &[2.0, 2.0])
            .unwrap()
            .window
            .is_none());
        let a = w
            .push("a", Some(20.0), 0.0, &[3.0, 3.0])
            .unwrap()
            .window
            .unwrap();
        assert_eq!(&*a.device, "a");
        assert_eq!(a.data, vec![1.0, 1.0, 3.0, 3.0]);
    }

    #[test]
    fn out_of_order_and_duplicates_are_dropped() {
        let mut w = Windower::new(spec(3, 1));
        w.push("a", Some(40.0), 0.0, &[0.0, 0.0]).unwrap();
        assert_eq!(
            w.push("a", Some(20.0), 0.0, &[0.0, 0.0]),
            Err(Dropped::OutOfOrder)
        );
        assert_eq!(
            w.push("a", Some(40.0), 0.0, &[0.0, 0.0]),
            Err(Dropped::Duplicate)
        );
        w.push("a", Some(60.0), 0.0, &[0.0, 0.0]).unwrap();
        let p = w.push("a", Some(80.0), 0.0, &[0.0, 0.0]).unwrap();
        assert!(p.window.is_some(), "drops do not count towards the window");
    }

    #[test]
    fn a_rebooted_device_restarts_instead_of_going_blind() {
        // spec: max_gap 100 ms. An hour of samples, then time since boot again.
        let mut w = Windower::new(spec(3, 1));
        w.push("a", Some(3_600_000.0), 0.0, &[1.0, 1.0]).unwrap();
        let p = w.push("a", Some(0.0), 0.0, &[2.0, 2.0]).unwrap();
        assert!(p.clock_reset && !p.gap_restart);
        assert!(p.window.is_none(), "nothing from before the reboot");
        w.push("a", Some(20.0), 0.0, &[3.0, 3.0]).unwrap();
        let window = w
            .push("a", Some(40.0), 0.0, &[4.0, 4.0])
            .unwrap()
            .window
            .expect("scoring goes on after the reboot");
        assert_eq!(window.data, vec![2.0, 2.0, 3.0, 3.0, 4.0, 4.0]);
        assert_eq!(window.t_start, 0.0);
        // A step back of max_gap or less is a reordering: dropped.
        assert_eq!(
            w.push("a", Some(40.0 - 100.0 + 1.0), 0.0, &[0.0, 0.0]),
            Err(Dropped::OutOfOrder)
        );
        assert_eq!(
            w.push("a", Some(-60.0), 0.0, &[0.0, 0.0]),
            Err(Dropped::OutOfOrder),
            "exactly max_gap back is still a reordering"
        );
    }

    #[test]
    fn gap_restarts_the_window() {
        let mut w = Windower::new(spec(3, 1));
        feed(&mut w, "a", 0, 2);
        let p = w.push("a", Some(1000.0), 0.0, &[9.0, 9.0]).unwrap();
        assert!(p.gap_restart);
        assert!(p.window.is_none());
        w.push("a", Some(1020.0), 0.0, &[9.0, 9.0]).unwrap();
        let window = w
            .push("a", Some(1040.0), 0.0, &[9.0, 9.0])
            .unwrap()
            .window
            .unwrap();
        assert_eq!(window.t_start, 1000.0, "no sample from before the gap");
    }

    #[test]
    fn untimed_samples_are_spaced_by_the_interval_or_arrival() {
        let mut w = Windower::new(spec(3, 1));
        w.push("a", None, 5000.0, &[0.0, 0.0]).unwrap();
        w.push("a", None, 5001.0, &[0.0, 0.0]).unwrap();
        let window = w
            .push("a", None, 5002.0, &[0.0, 0.0])
            .unwrap()
            .window
            .unwrap();
        assert_eq!((window.t_start, window.t_end), (5000.0, 5040.0));
        let p = w.push("a", None, 9000.0, &[0.0, 0.0]).unwrap();
        assert!(
            p.gap_restart,
            "a device silent for longer than max_gap restarts"
        );
    }

    #[test]
    fn the_longest_idle_device_is_evicted() {
        let mut w = Windower::new(spec(3, 1));
        w.push("a", Some(0.0), 0.0, &[0.0, 0.0]).unwrap();
        w.push("b", Some(0.0), 0.0, &[0.0, 0.0]).unwrap();
        w.push("a", Some(20.0), 0.0, &[0.0, 0.0]).unwrap();
        let p = w.push("c", Some(0.0), 0.0, &[0.0, 0.0]).unwrap();
        assert_eq!(p.evicted.as_deref(), Some("b"));
        assert!(p.new_device);
        assert_eq!(w.device_count(), 2);
    }

    #[test]
    fn window_count_matches_the_formula() {
        for (size, hop, n) in [(128, 64, 1000), (5, 3, 17), (4, 4, 4), (4, 1, 3)] {
            let mut w = Windower::new(WindowSpec {
                channels: 1,
                ..spec(size, hop)
            });
            let count = (0..n)
                .filter(|i| {
                    w.push("d", Some(*i as f64), 0.0, &[0.0])
                        .unwrap()
                        .window
                        .is_some()
                })
                .count();
            let expected = if n < size { 0 } else { (n - size) / hop + 1 };
            assert_eq!(count, expected, "size {size} hop {hop} n {n}");
        }
    }

    /// A payload's samples at once give what they give one by one: the
    /// same windows, drops, restarts and evictions, over a stream with
    /// reorderings, duplicates, gaps, reboots and untimed samples from
    /// more devices than are kept; with hops shorter than, equal to and
    /// longer than the window, and payloads of several windows.
    #[test]
    fn a_payload_at_once_is_its_samples_one_by_one() {
        for (size, hop, longest) in [(8, 3, 12), (4, 4, 12), (5, 7, 30), (1, 1, 5), (16, 5, 60)] {
            payload_at_once_is_its_samples_one_by_one(size, hop, longest);
        }
    }

    fn payload_at_once_is_its_samples_one_by_one(size: usize, hop: usize, longest: usize) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let spec = WindowSpec {
            max_devices: 3,
            ..spec(size, hop)
        };
        let (mut single, mut many) = (Windower::new(spec), Windower::new(spec));
        let mut clock = [0.0f64; 5];
        for _ in 0..4000 {
            let d = rng.random_range(0..5usize);
            let device = format!("d{d}");
            let n = rng.random_range(1..longest);
            let arrival = rng.random_range(0.0..1e6);
            let mut t_ms = Vec::new();
            for _ in 0..n {
                let step = match rng.random_range(0..20) {
                    0 => -30.0,
                    1 => 0.0,
                    2 => 500.0,
                    3 => -10_000.0,
                    _ => 20.0,
                };
                clock[d] += step;
                t_ms.push((rng.random_range(0..10) != 0).then_some(clock[d]));
            }
            let values: Vec<f32> = (0..n * 2).map(|_| rng.random_range(-1.0..1.0)).collect();
            // One by one, with what `push_many` reports apart: whether the
            // device is new or evicted one, and the samples only stored.
            let (mut new_device, mut evicted) = (false, None);
            let one_by_one: Vec<_> = t_ms
                .iter()
                .zip(values.chunks_exact(2))
                .map(|(t, v)| {
                    single.push(&device, *t, arrival, v).map(|mut pushed| {
                        new_device |= std::mem::take(&mut pushed.new_device);
                        evicted = evicted.clone().or(pushed.evicted.take());
                        pushed
                    })
                })
                .enumerate()
                .filter(|(_, r)| *r != Ok(Pushed::default()))
                .collect();
            let mut at_once = Vec::new();
            let admitted = many.push_many(&device, &t_ms, arrival, &values, |i, r| {
                assert!(at_once.last().is_none_or(|(j, _)| *j < i), "in order");
                at_once.push((i, r));
            });
            assert_eq!(
                (new_device, evicted),
                (admitted.new_device, admitted.evicted)
            );
            assert_eq!(one_by_one, at_once, "{device}: {t_ms:?}");
            assert_eq!(single.device_count(), many.device_count());
        }
    }
}
