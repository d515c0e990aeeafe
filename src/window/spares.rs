//! Window buffers handed back by the scorer for the windower to fill again.

use std::sync::{Arc, Mutex};

/// Scored windows' sample buffers, back for reuse: a window's samples are
/// then neither allocated on the ingest thread nor freed on the scorer's
/// (a 1.5 kB buffer is beyond glibc's per-thread cache, so each window
/// took the allocator's locked bins twice). Bounded: past `limit` buffers
/// waiting, the rest are freed as before.
#[derive(Debug, Clone)]
pub struct Spares {
    waiting: Arc<Mutex<Vec<Vec<f32>>>>,
    limit: usize,
}

impl Spares {
    pub fn new(limit: usize) -> Self {
        Self {
            waiting: Arc::default(),
            limit,
        }
    }

    /// Takes the sample buffers of windows done with (one lock a batch).
    pub fn give_back(&self, buffers: impl IntoIterator<Item = Vec<f32>>) {
        let mut buffers = buffers.into_iter();
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            let room = self.limit.saturating_sub(waiting.len());
            waiting.extend(buffers.by_ref().take(room));
        }
        // Any beyond the bound are freed here, outside the lock.
        drop(buffers);
    }

    /// Buffers waiting, for tests and the bound's check.
    pub fn waiting(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Moves every waiting buffer to `local` (one lock for many windows).
    fn take_all(&self, local: &mut Vec<Vec<f32>>) {
        local.append(&mut self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Where the windower gets a new window's buffer: one handed back if any
/// is waiting, else a new one.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    local: Vec<Vec<f32>>,
    spares: Option<Spares>,
}

impl Buffers {
    pub(crate) fn with_spares(spares: Spares) -> Self {
        Self {
            local: Vec::new(),
            spares: Some(spares),
        }
    }

    /// An empty buffer with room for `len` values.
    pub(crate) fn take(&mut self, len: usize) -> Vec<f32> {
        if self.local.is_empty() {
            if let Some(spares) = &self.spares {
                spares.take_all(&mut self.local);
            }
        }
        match self.local.pop() {
            Some(mut buffer) => {
                buffer.clear();
                buffer.reserve_exact(len);
                buffer
            }
            None => Vec::with_capacity(len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_handed_back_is_the_next_one_filled() {
        let spares = Spares::new(4);
        let mut buffers = Buffers::with_spares(spares.clone());
        let first = buffers.take(6);
        let address = first.as_ptr();
        spares.give_back([first]);
        assert_eq!(spares.waiting(), 1);
        let again = buffers.take(6);
        assert_eq!(again.as_ptr(), address, "the same allocation");
        assert!(again.is_empty() && again.capacity() >= 6);
        assert_eq!(spares.waiting(), 0);
    }

    #[test]
    fn no_more_than_the_limit_wait() {
        let spares = Spares::new(3);
        spares.give_back((0..10).map(|_| vec![0.0; 6]));
        assert_eq!(spares.waiting(), 3);
        spares.give_back([vec![1.0]]);
        assert_eq!(spares.waiting(), 3);
    }

    #[test]
    fn without_spares_every_buffer_is_new() {
        let mut buffers = Buffers::default();
        let buffer = buffers.take(384);
        assert!(buffer.is_empty() && buffer.capacity() >= 384);
    }
}
