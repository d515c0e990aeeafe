//! Which entry of a bounded per-device map was touched longest ago, found
//! without scanning the whole map at every eviction (pure).
//!
//! A fleet of ever-new device ids evicts one device per new id. A scan per
//! eviction costs O(max_devices) each time; instead one scan keeps the
//! idlest sixteenth as candidates, and each eviction takes the oldest
//! candidate not touched since the scan. That one is the idlest of all:
//! every entry touched after the scan, and every entry left out of it, was
//! touched later. Amortised cost: O(16) per eviction, plus a sort.

use std::sync::Arc;

/// Candidates for eviction, idlest last.
#[derive(Debug, Default)]
pub struct IdleOrder<T> {
    candidates: Vec<(T, Arc<str>)>,
}

impl<T: Copy + PartialOrd> IdleOrder<T> {
    pub fn new() -> Self {
        Self {
            candidates: Vec::new(),
        }
    }

    /// The key touched longest ago. `touched(key)` is the key's current
    /// touch (None once it is gone); `all()` lists every key with its touch.
    pub fn idlest<I>(
        &mut self,
        touched: impl Fn(&str) -> Option<T>,
        all: impl FnOnce() -> I,
    ) -> Option<Arc<str>>
    where
        I: Iterator<Item = (T, Arc<str>)>,
    {
        if let Some(key) = self.pop_unchanged(&touched) {
            return Some(key);
        }
        let mut entries: Vec<(T, Arc<str>)> = all().collect();
        let keep = (entries.len() / 16).max(1);
        let order = |a: &(T, Arc<str>), b: &(T, Arc<str>)| {
            a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal)
        };
        if keep < entries.len() {
            entries.select_nth_unstable_by(keep - 1, order);
            entries.truncate(keep);
        }
        // Idlest last, so that `pop` takes it.
        entries.sort_unstable_by(|a, b| order(b, a));
        self.candidates = entries;
        self.pop_unchanged(&touched)
    }

    /// The idlest candidate not touched (nor removed) since the scan.
    fn pop_unchanged(&mut self, touched: &impl Fn(&str) -> Option<T>) -> Option<Arc<str>> {
        while let Some((at, key)) = self.candidates.pop() {
            if touched(&key) == Some(at) {
                return Some(key);
            }
        }
        None
    }

    /// Forgets every candidate (the map was cleared).
    pub fn clear(&mut self) {
        self.candidates.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Against the plain scan, over a churn of new and re-touched keys.
    #[test]
    fn evicts_what_a_full_scan_would() {
        let bound = 40;
        let mut map: HashMap<Arc<str>, u64> = HashMap::new();
        let mut order = IdleOrder::new();
        let mut rng = 12345u64;
        for touch in 0..5000u64 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Mostly re-touch a known key, sometimes a new one.
            let key: Arc<str> = if rng >> 60 < 4 || map.is_empty() {
                Arc::from(format!("new-{touch}"))
            } else {
                let n = (rng >> 33) as usize % map.len();
                map.keys().nth(n).expect("in range").clone()
            };
            if !map.contains_key(&key) && map.len() >= bound {
                let expected = map
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(k, _)| k.clone())
                    .expect("full");
                let got = order
                    .idlest(
                        |k| map.get(k).copied(),
                        || map.iter().map(|(k, t)| (*t, k.clone())),
                    )
                    .expect("full");
                assert_eq!(got, expected, "at touch {touch}");
                map.remove(&got);
            }
            map.insert(key, touch);
        }
    }

    #[test]
    fn an_empty_map_has_none() {
        let mut order = IdleOrder::<u64>::new();
        assert_eq!(order.idlest(|_| None, std::iter::empty), None);
    }
}
