//! What the status page shows per device: the last window, a short history
//! of scores, the alert state and its last raise.
//!
//! The board is written by one sink ([`crate::sink::live::LiveSink`]) on the
//! scorer's thread, once per batch, and read by the HTTP handler: its mutex
//! is taken once a batch, never per window.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::idle::IdleOrder;

/// Scores kept per device for the sparkline, by default.
pub const HISTORY: usize = 120;

/// One thing a sink saw, reduced to what the board keeps.
#[derive(Debug, Clone)]
pub enum Seen {
    Window {
        device: Arc<str>,
        seq: u64,
        t_start: f64,
        t_end: f64,
        score: f32,
        threshold: f64,
        over_threshold: bool,
        /// The device's alert state after this window.
        alert: bool,
        model: Arc<str>,
    },
    Alert {
        device: Arc<str>,
        raise: bool,
        seq: u64,
        t: f64,
        score: f32,
        evidence: Option<Arc<str>>,
    },
}

/// The window that raised a device's last alert.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Raise {
    /// When the sink wrote it (Unix ms, wall clock).
    pub at_ms: f64,
    pub seq: u64,
    /// The window's last sample's timestamp (ms, the data's clock).
    pub t: f64,
    pub score: f32,
    /// Its evidence id (`/api/alerts/<id>`), when evidence is kept.
    pub evidence: Option<Arc<str>>,
}

/// A device's row on the status page.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceRow {
    pub device: Arc<str>,
    /// When its last window was written (Unix ms, wall clock).
    pub last_seen_ms: f64,
    /// Its last window's first and last samples (ms, the data's clock):
    /// what a mark of that window names.
    pub t_start: f64,
    pub t_end: f64,
    /// Windows written since the board first saw it.
    pub windows: u64,
    pub seq: u64,
    pub score: f32,
    pub threshold: f64,
    pub over_threshold: bool,
    /// In alert after its last window.
    pub alert: bool,
    /// Alerts raised since the board first saw it, and the last one.
    pub raises: u64,
    pub last_raise: Option<Raise>,
    pub model: Arc<str>,
    /// The last scores, oldest first (at most the board's history).
    pub scores: VecDeque<f32>,
    /// When the board last wrote to it, in the board's own count (the
    /// wall clock repeats within a batch): the eviction order.
    #[serde(skip)]
    touch: u64,
}

/// The order of [`LiveState::page`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// By device id: stable from one read to the next, for paging.
    #[default]
    Id,
    /// What needs a look first: in alert, then over the threshold, then by
    /// score against the threshold (highest first), then by id.
    Attention,
}

impl Sort {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "id" => Some(Sort::Id),
            "attention" => Some(Sort::Attention),
            _ => None,
        }
    }
}

/// A page of rows: `total` rows on the board, and those from `offset`.
#[derive(Debug, Clone)]
pub struct Page {
    pub total: usize,
    pub rows: Vec<DeviceRow>,
}

impl DeviceRow {
    /// The last score against the threshold (the score itself without one).
    fn ratio(&self) -> f64 {
        let score = f64::from(self.score);
        if self.threshold > 0.0 {
            score / self.threshold
        } else {
            score
        }
    }

    fn attention(a: &Self, b: &Self) -> std::cmp::Ordering {
        b.alert
            .cmp(&a.alert)
            .then(b.over_threshold.cmp(&a.over_threshold))
            .then(b.ratio().total_cmp(&a.ratio()))
            .then(a.device.cmp(&b.device))
    }
}

#[derive(Debug)]
struct Board {
    devices: HashMap<Arc<str>, DeviceRow>,
    max_devices: usize,
    history: usize,
    evicted: u64,
    touches: u64,
    idle: IdleOrder<u64>,
}

/// The shared board; clones share it.
#[derive(Debug, Clone)]
pub struct LiveState {
    board: Arc<Mutex<Board>>,
}

impl LiveState {
    /// At most `max_devices` rows (the idlest goes first) of at most
    /// `history` scores each.
    pub fn new(max_devices: usize, history: usize) -> Self {
        Self {
            board: Arc::new(Mutex::new(Board {
                devices: HashMap::new(),
                max_devices: max_devices.max(1),
                history: history.max(1),
                evicted: 0,
                touches: 0,
                idle: IdleOrder::new(),
            })),
        }
    }

    pub fn max_devices(&self) -> usize {
        self.lock().max_devices
    }

    pub fn history(&self) -> usize {
        self.lock().history
    }

    /// Rows dropped to stay within `max_devices`.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies what a sink saw, in order, stamped `now_ms`; empties `seen`.
    pub fn apply(&self, seen: &mut Vec<Seen>, now_ms: f64) {
        if seen.is_empty() {
            return;
        }
        let mut board = self.lock();
        for item in seen.drain(..) {
            board.apply(item, now_ms);
        }
    }

    /// Every row, by device id.
    pub fn rows(&self) -> Vec<DeviceRow> {
        self.page(Sort::Id, 0, usize::MAX).rows
    }

    /// At most `limit` rows from `offset` in `sort` order, and how many
    /// there are. Only the rows returned are copied (under the lock: a
    /// sort of at most `max_devices` references).
    pub fn page(&self, sort: Sort, offset: usize, limit: usize) -> Page {
        let board = self.lock();
        let mut rows: Vec<&DeviceRow> = board.devices.values().collect();
        let order = |a: &&DeviceRow, b: &&DeviceRow| match sort {
            Sort::Id => a.device.cmp(&b.device),
            Sort::Attention => DeviceRow::attention(a, b),
        };
        let end = offset.saturating_add(limit).min(rows.len());
        if offset < end {
            // Only the first `end` need to be in order.
            if end < rows.len() {
                rows.select_nth_unstable_by(end - 1, order);
                rows.truncate(end);
            }
            rows.sort_unstable_by(order);
        }
        Page {
            total: board.devices.len(),
            rows: rows
                .get(offset..end)
                .unwrap_or_default()
                .iter()
                .map(|&row| row.clone())
                .collect(),
        }
    }
}

impl Board {
    /// The device's row, touched; made (evicting the idlest beyond
    /// `max_devices`) if it has none.
    fn row(&mut self, device: &Arc<str>, now_ms: f64, model: &Arc<str>) -> &mut DeviceRow {
        if !self.devices.contains_key(device) && self.devices.len() >= self.max_devices {
            let devices = &self.devices;
            let idlest = self.idle.idlest(
                |id| devices.get(id).map(|row| row.touch),
                || devices.values().map(|row| (row.touch, row.device.clone())),
            );
            if let Some(idlest) = idlest {
                self.devices.remove(&idlest);
                self.evicted += 1;
            }
        }
        let history = self.history;
        self.touches += 1;
        let touch = self.touches;
        let row = self
            .devices
            .entry(device.clone())
            .or_insert_with(|| DeviceRow {
                device: device.clone(),
                last_seen_ms: now_ms,
                t_start: 0.0,
                t_end: 0.0,
                windows: 0,
                seq: 0,
                score: 0.0,
                threshold: 0.0,
                over_threshold: false,
                alert: false,
                raises: 0,
                last_raise: None,
                model: model.clone(),
                scores: VecDeque::with_capacity(history.min(16)),
                touch,
            });
        row.touch = touch;
        row
    }

    fn apply(&mut self, seen: Seen, now_ms: f64) {
        let history = self.history;
        match seen {
            Seen::Window {
                device,
                seq,
                t_start,
                t_end,
                score,
                threshold,
                over_threshold,
                alert,
                model,
            } => {
                let row = self.row(&device, now_ms, &model);
                row.last_seen_ms = now_ms;
                row.t_start = t_start;
                row.t_end = t_end;
                row.windows += 1;
                row.seq = seq;
                row.score = score;
                row.threshold = threshold;
                row.over_threshold = over_threshold;
                row.alert = alert;
                row.model = model;
                if row.scores.len() >= history {
                    row.scores.pop_front();
                }
                row.scores.push_back(score);
            }
            Seen::Alert {
                device,
                raise,
                seq,
                t,
                score,
                evidence,
            } => {
                // An alert follows its window, so the row exists unless the
                // board just evicted it; then it starts again from here.
                let model: Arc<str> = Arc::from("");
                let row = self.row(&device, now_ms, &model);
                row.alert = raise;
                if raise {
                    row.raises += 1;
                    row.last_raise = Some(Raise {
                        at_ms: now_ms,
                        seq,
                        t,
                        score,
                        evidence,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(device: &str, seq: u64, score: f32, alert: bool) -> Seen {
        Seen::Window {
            device: Arc::from(device),
            seq,
            t_start: seq as f64 * 1280.0 - 1260.0,
            t_end: seq as f64 * 1280.0,
            score,
            threshold: 1.0,
            over_threshold: score > 1.0,
            alert,
            model: Arc::from("basic-1"),
        }
    }

    #[test]
    fn keeps_the_last_scores_and_the_last_raise() {
        let live = LiveState::new(8, 3);
        let mut seen: Vec<Seen> = (0..5).map(|i| window("a", i, i as f32, false)).collect();
        seen.push(window("a", 5, 2.0, true));
        seen.push(Seen::Alert {
            device: Arc::from("a"),
            raise: true,
            seq: 5,
            t: 6400.0,
            score: 2.0,
            evidence: Some(Arc::from("1764616800000-000000")),
        });
        live.apply(&mut seen, 1000.0);
        assert!(seen.is_empty());
        let rows = live.rows();
        assert_eq!(rows.len(), 1);
        let a = &rows[0];
        assert_eq!(a.windows, 6);
        assert_eq!(a.seq, 5);
        assert_eq!(Vec::from(a.scores.clone()), vec![3.0, 4.0, 2.0]);
        assert!(a.alert && a.over_threshold);
        assert_eq!(a.raises, 1);
        assert_eq!(
            a.last_raise,
            Some(Raise {
                at_ms: 1000.0,
                seq: 5,
                t: 6400.0,
                score: 2.0,
                evidence: Some(Arc::from("1764616800000-000000")),
            })
        );
        let mut clear = vec![
            window("a", 6, 0.1, false),
            Seen::Alert {
                device: Arc::from("a"),
                raise: false,
                seq: 6,
                t: 7680.0,
                score: 0.1,
                evidence: None,
            },
        ];
        live.apply(&mut clear, 2000.0);
        let a = &live.rows()[0];
        assert!(!a.alert);
        assert_eq!(a.raises, 1, "a clear is not a raise");
        assert_eq!(a.last_raise.as_ref().unwrap().seq, 5, "the raise is kept");
        assert_eq!(a.last_seen_ms, 2000.0);
    }

    #[test]
    fn the_idlest_device_goes_beyond_max_devices() {
        let live = LiveState::new(2, 4);
        live.apply(&mut vec![window("a", 0, 0.1, false)], 1.0);
        live.apply(&mut vec![window("b", 0, 0.1, false)], 2.0);
        live.apply(&mut vec![window("a", 1, 0.1, false)], 3.0);
        live.apply(&mut vec![window("c", 0, 0.1, false)], 4.0);
        let names: Vec<String> = live.rows().iter().map(|r| r.device.to_string()).collect();
        assert_eq!(names, ["a", "c"], "b was the idlest");
        assert_eq!(live.evicted(), 1);
    }

    /// Many more ids than rows, some coming back: the board keeps exactly
    /// the `max_devices` written to last, as a scan of every row would.
    #[test]
    fn churn_evicts_the_least_recently_written_without_a_scan_per_id() {
        let max = 64;
        let live = LiveState::new(max, 2);
        // The board as a plain scan would keep it: device -> last write.
        let mut model: HashMap<String, u64> = HashMap::new();
        let mut evicted = 0;
        let mut rng = 7u64;
        for step in 0..20_000u64 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // A fresh id a quarter of the time, else one of the last 100.
            let device = if rng >> 62 == 0 {
                format!("new-{step}")
            } else {
                format!("new-{}", step.saturating_sub((rng >> 33) % 100))
            };
            // Several windows per batch share one wall-clock stamp.
            let mut batch = vec![window(&device, step, 0.1, false)];
            live.apply(&mut batch, (step / 8) as f64);
            if !model.contains_key(&device) && model.len() >= max {
                let idlest = model
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(d, _)| d.clone())
                    .expect("full");
                model.remove(&idlest);
                evicted += 1;
            }
            model.insert(device, step);
            if step % 97 == 0 || step == 19_999 {
                let mut expected: Vec<String> = model.keys().cloned().collect();
                expected.sort();
                let kept: Vec<String> = live.rows().iter().map(|r| r.device.to_string()).collect();
                assert_eq!(kept, expected, "at step {step}");
            }
        }
        assert!(evicted > 1000, "a churn: {evicted}");
        assert_eq!(live.evicted(), evicted);
    }

    #[test]
    fn pages_by_id_or_by_what_needs_a_look() {
        let live = LiveState::new(16, 4);
        let mut seen = vec![
            window("a", 0, 0.5, false),
            window("b", 0, 3.0, true),
            window("c", 0, 0.9, false),
            window("d", 0, 1.5, false),
            window("e", 0, 2.0, true),
        ];
        live.apply(&mut seen, 1.0);
        let ids = |page: Page| -> Vec<String> {
            page.rows.iter().map(|r| r.device.to_string()).collect()
        };
        assert_eq!(ids(live.page(Sort::Id, 0, 10)), ["a", "b", "c", "d", "e"]);
        assert_eq!(ids(live.page(Sort::Id, 1, 2)), ["b", "c"]);
        // In alert (highest score first), over the threshold, the rest.
        assert_eq!(
            ids(live.page(Sort::Attention, 0, 10)),
            ["b", "e", "d", "c", "a"]
        );
        let page = live.page(Sort::Attention, 1, 3);
        assert_eq!(page.total, 5);
        assert_eq!(ids(page), ["e", "d", "c"]);
        assert_eq!(ids(live.page(Sort::Attention, 4, 10)), ["a"]);
        assert!(live.page(Sort::Id, 5, 10).rows.is_empty());
        assert!(live.page(Sort::Id, usize::MAX, usize::MAX).rows.is_empty());
        assert!(live.page(Sort::Attention, 0, 0).rows.is_empty());
        assert_eq!(Sort::parse("attention"), Some(Sort::Attention));
        assert_eq!(Sort::parse("score"), None);
    }
}
