//! The windows training learns from, and which of them are held out.

/// Windows to learn from, each tagged with the stream (device or
/// recording) it came from; within a stream they are in time order.
#[derive(Debug, Clone, Default)]
pub struct WindowSet {
    pub features: usize,
    pub data: Vec<f32>,
    pub streams: Vec<usize>,
    /// Each window's class, for an activity head (`train --label`).
    pub labels: Option<Labels>,
}

impl WindowSet {
    pub fn new(features: usize) -> Self {
        Self {
            features,
            ..Default::default()
        }
    }

    pub fn push(&mut self, stream: usize, window: &[f32]) {
        debug_assert_eq!(window.len(), self.features);
        self.data.extend_from_slice(window);
        self.streams.push(stream);
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    pub fn window(&self, i: usize) -> &[f32] {
        &self.data[i * self.features..(i + 1) * self.features]
    }
}

/// What the model will be told about its input.
/// Which windows train and which are held out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Split {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    /// Streams held out whole (their tails were too short to hold out).
    pub whole_streams: usize,
    /// Streams too short for a held-out tail.
    pub short_streams: usize,
    /// Streams in all.
    pub streams: usize,
}

/// Splits window indices into training and validation: the last
/// `fraction` of each stream is held out, and the windows that overlap the
/// held-out ones are left out of both, so no sample is in both sets.
/// A stream too short for that (many short takes, each a few windows)
/// cannot lend a tail; when there are two or more such streams, whole ones
/// among them are held out instead, every ⌈1/fraction⌉-th or so (the
/// first, then as the fraction falls due), so no take is in both sets.
pub fn split(set: &WindowSet, fraction: f64, window: usize, hop: usize) -> Split {
    let overlap = window.div_ceil(hop).saturating_sub(1);
    let mut out = Split::default();
    let mut short = Vec::new();
    let mut start = 0;
    while start < set.len() {
        let stream = set.streams[start];
        let end = (start..set.len())
            .find(|&i| set.streams[i] != stream)
            .unwrap_or(set.len());
        let n = end - start;
        let held = ((n as f64) * fraction).ceil() as usize;
        if n > held + overlap && held > 0 {
            out.train.extend(start..end - held - overlap);
            out.validation.extend(end - held..end);
        } else {
            short.push(start..end);
        }
        start = end;
        out.streams += 1;
    }
    out.short_streams = short.len();
    let whole = short.len() >= 2;
    for (i, range) in short.into_iter().enumerate() {
        // Held out so far vs due by now; the epsilon keeps 35 × 0.2 at 7.
        let due_by = |n: usize| ((n as f64) * fraction - 1e-9).ceil();
        let due = due_by(i + 1) > due_by(i);
        if whole && due {
            out.validation.extend(range);
            out.whole_streams += 1;
        } else {
            out.train.extend(range);
        }
    }
    out.train.sort_unstable();
    out.validation.sort_unstable();
    out
}

/// The label of each window of a [`WindowSet`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Labels {
    /// The CSV column they came from.
    pub column: String,
    pub classes: Vec<String>,
    /// Per window, an index into `classes`.
    pub of: Vec<u32>,
}
