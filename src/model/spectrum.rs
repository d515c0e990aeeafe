//! The spectral front end (`model.input = "spectrum"`): the autoencoder
//! sees, per channel of the (normalised) window, its mean, standard
//! deviation, minimum and maximum and the magnitudes of DFT bins 1..=B
//! (log(1 + |X_k|) by default), each standardised by the training windows'
//! statistics, rather than the raw samples. What separates one motion from
//! another lies in how much of each rhythm it has, not in where a window
//! happens to start, and the raw samples' reconstruction is mostly about
//! the latter.
//!
//! The graph computes the features itself from the window (Reshape,
//! ReduceMean/Min/Max, Sqrt, a Gemm by a fixed cos and sin basis, Log;
//! the standardisation as initializers), so the file stays self-describing
//! and onnxruntime reproduces every score from raw windows. Rows are laid
//! out like a window's samples: feature row r of channel c at `r·C + c`,
//! so per-channel errors and the convolutional variant read them as they
//! read time-major samples.

use super::meta::{spectrum_rows, FrontEnd, Normalization, SPECTRUM_STATISTICS};
use serde::{Deserialize, Serialize};

use super::onnx::{Attr, GraphBuilder, INPUT, WINDOW_INPUT};

/// What the autoencoder sees of a window (`model.input`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelInput {
    /// The normalised samples themselves.
    Raw,
    /// Per channel: statistics and DFT magnitudes, computed inside the
    /// graph ([`crate::model::spectrum`]).
    Spectrum,
    /// The spectrum's rows, then the window's own samples, weighted so
    /// that each part carries about the same share of the error: the best
    /// measured (docs/measured.md, the front end in accelwatch).
    #[default]
    Mix,
}

impl ModelInput {
    pub const fn name(self) -> &'static str {
        match self {
            ModelInput::Raw => "raw",
            ModelInput::Spectrum => "spectrum",
            ModelInput::Mix => "mix",
        }
    }
}

/// `[model.spectrum]`: the spectral front end's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpectrumConfig {
    /// DFT bins 1..=bins per channel (fewer for windows shorter than
    /// twice that).
    #[serde(default = "SpectrumConfig::default_bins")]
    pub bins: usize,
    /// log(1 + |X_k|) rather than |X_k|.
    #[serde(default = "SpectrumConfig::default_log")]
    pub log: bool,
}

impl SpectrumConfig {
    const fn default_bins() -> usize {
        8
    }
    const fn default_log() -> bool {
        true
    }

    /// The bins windows of `window` samples have: `bins`, or fewer for
    /// windows too short to hold them (a DFT has T/2 distinct bins).
    pub fn bins_for(&self, window: usize) -> usize {
        self.bins.min(window / 2).max(1)
    }

    /// What a model of windows of `window` samples trained with these
    /// settings carries; with `mix`, the window after the spectrum,
    /// weighted by √(rows / T) so that both parts weigh about the same in
    /// the error (each standardised value's error counts once).
    pub fn front_end(&self, window: usize, mix: bool) -> FrontEnd {
        let bins = self.bins_for(window);
        FrontEnd::Spectrum {
            bins,
            log: self.log,
            window_weight: mix
                .then(|| (spectrum_rows(bins) as f64 / window.max(1) as f64).sqrt() as f32),
            output: FrontEnd::default_output(),
        }
    }
}

impl Default for SpectrumConfig {
    fn default() -> Self {
        Self {
            bins: Self::default_bins(),
            log: Self::default_log(),
        }
    }
}

/// The features of windows of `window` samples of `channels` values.
#[derive(Debug, Clone)]
pub struct Spectrum {
    window: usize,
    channels: usize,
    bins: usize,
    log: bool,
    /// For `mix`: the window's own samples follow, times this.
    window_weight: Option<f32>,
    /// `cos(2πkt/T)` and `sin(2πkt/T)`, bins k = 1..=B by row, `[B, T]`.
    cos: Vec<f64>,
    sin: Vec<f64>,
}

impl Spectrum {
    pub fn new(front_end: &FrontEnd, window: usize, channels: usize) -> Self {
        let FrontEnd::Spectrum {
            bins,
            log,
            window_weight,
            ..
        } = *front_end;
        let angle = |k: usize, t: usize| {
            // k·t mod T keeps the angle exact for long windows.
            2.0 * std::f64::consts::PI * ((k * t) % window.max(1)) as f64 / window.max(1) as f64
        };
        let basis = |f: fn(f64) -> f64| {
            (1..=bins)
                .flat_map(|k| (0..window).map(move |t| f(angle(k, t))))
                .collect()
        };
        Self {
            window,
            channels,
            bins,
            log,
            window_weight,
            cos: basis(f64::cos),
            sin: basis(f64::sin),
        }
    }

    /// Values per window of the spectrum's rows (the statistics and bins):
    /// what is standardised.
    pub fn features(&self) -> usize {
        spectrum_rows(self.bins) * self.channels
    }

    /// Appends the spectrum's rows of one normalised, time-major window
    /// to `out` (not standardised, without the window of a `mix`).
    pub fn push(&self, window: &[f32], out: &mut Vec<f32>) {
        let (t, c) = (self.window, self.channels);
        debug_assert_eq!(window.len(), t * c);
        let start = out.len();
        out.resize(start + self.features(), 0.0);
        let rows = &mut out[start..];
        let mut centred = vec![0f64; t];
        for ch in 0..c {
            let samples = window.iter().skip(ch).step_by(c).map(|v| *v as f64);
            let mean = samples.clone().sum::<f64>() / t as f64;
            let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
            for (slot, v) in centred.iter_mut().zip(samples) {
                *slot = v - mean;
                min = min.min(v);
                max = max.max(v);
            }
            let var = centred.iter().map(|v| v * v).sum::<f64>() / t as f64;
            let mut row = |r: usize, value: f64| rows[r * c + ch] = value as f32;
            row(0, mean);
            row(1, var.sqrt());
            row(2, min);
            row(3, max);
            for k in 0..self.bins {
                let basis = k * t..(k + 1) * t;
                let dot = |b: &[f64]| b.iter().zip(&centred).map(|(b, v)| b * v).sum::<f64>();
                let (re, im) = (dot(&self.cos[basis.clone()]), dot(&self.sin[basis]));
                let magnitude = (re * re + im * im).sqrt();
                row(
                    SPECTRUM_STATISTICS.len() + k,
                    if self.log {
                        (1.0 + magnitude).ln()
                    } else {
                        magnitude
                    },
                );
            }
        }
    }

    /// A basis of `[B, T]` values (bin-major) as the `[T, B]` the graph
    /// multiplies by.
    fn time_by_bin(&self, basis: &[f64]) -> Vec<f32> {
        let (t, b) = (self.window, self.bins);
        let mut out = vec![0f32; t * b];
        for k in 0..b {
            for step in 0..t {
                out[step * b + k] = basis[k * t + step] as f32;
            }
        }
        out
    }

    /// The features of many windows laid end to end.
    pub fn of_windows<'a>(&self, windows: impl IntoIterator<Item = &'a [f32]>) -> Vec<f32> {
        let mut out = Vec::new();
        for window in windows {
            self.push(window, &mut out);
        }
        out
    }

    /// Writes the front end into `graph`, reading `input` (`[N, T·C]`) and
    /// standardising each feature by `standardisation`, then (for `mix`)
    /// the weighted window; its output is the tensor [`INPUT`], which the
    /// network's nodes read.
    /// Returns the standardised features' tensor (`[N, features]`, the
    /// network's input itself unless the window follows them).
    pub fn export(
        &self,
        graph: &mut GraphBuilder,
        input: &str,
        standardisation: &Normalization,
    ) -> String {
        let (t, c, b) = (self.window as i64, self.channels as i64, self.bins as i64);
        // Every part is computed on the window turned to `[N, C, T]`: one
        // copy, after which each channel's samples are contiguous, so the
        // reductions run along rows and the DFT is one dense MatMul by a
        // `[T, B]` basis per part (tract ran the reductions over the strided
        // time axis of `[N, T, C]` at about 8 µs a window, and a block-
        // diagonal basis on the flat window does C times the work).
        let shape = graph.constant_i64("front_end_shape", vec![-1, t, c]);
        let samples = graph.node("Reshape", &[input, &shape], vec![]);
        let rows = graph.node(
            "Transpose",
            &[&samples],
            vec![Attr::Ints("perm", vec![0, 2, 1])],
        );
        // Mean and variance as MatMuls by a `[T, 1]` of 1/T (tract's
        // ReduceMean costs several times a dense product), minimum and
        // maximum as TopK of 1 on `[N·C, T]` (which the tract backend runs
        // as one pass per row, src/model/select_k.rs; ReduceMin and
        // ReduceMax cost about 1.2 µs a window each).
        let average = "front_end_average";
        graph.constant(
            average,
            vec![t, 1],
            vec![1.0 / self.window as f32; self.window],
        );
        let mean = graph.node("MatMul", &[&rows, average], vec![]);
        let centred = graph.node("Sub", &[&rows, &mean], vec![]);
        let squares = graph.node("Mul", &[&centred, &centred], vec![]);
        let var = graph.node("MatMul", &[&squares, average], vec![]);
        let std = graph.node("Sqrt", &[&var], vec![]);
        let by_channel = graph.constant_i64("front_end_by_channel", vec![-1, t]);
        let channel_rows = graph.node("Reshape", &[&rows, &by_channel], vec![]);
        let one = graph.constant_i64("front_end_one", vec![1]);
        let back = graph.constant_i64("front_end_back", vec![-1, c, 1]);
        let mut extreme = |largest: i64| {
            let top = graph.node_outputs(
                "TopK",
                &[&channel_rows, &one],
                vec![Attr::Int("axis", 1), Attr::Int("largest", largest)],
                2,
            );
            graph.node("Reshape", &[&top[0], &back], vec![])
        };
        let min = extreme(0);
        let max = extreme(1);
        // `[T, B]`: cos(2πkt/T) at (t, k − 1). The window is not centred
        // first: a bin k ≥ 1 of a constant is zero.
        let (cos, sin) = ("front_end_dft_cos", "front_end_dft_sin");
        graph.constant(cos, vec![t, b], self.time_by_bin(&self.cos));
        graph.constant(sin, vec![t, b], self.time_by_bin(&self.sin));
        let re = graph.node("MatMul", &[&rows, cos], vec![]);
        let im = graph.node("MatMul", &[&rows, sin], vec![]);
        let re2 = graph.node("Mul", &[&re, &re], vec![]);
        let im2 = graph.node("Mul", &[&im, &im], vec![]);
        let power = graph.node("Add", &[&re2, &im2], vec![]);
        let mut spectrum = graph.node("Sqrt", &[&power], vec![]);
        if self.log {
            let one = graph.scalar("one", 1.0);
            let shifted = graph.node("Add", &[&spectrum, &one], vec![]);
            spectrum = graph.node("Log", &[&shifted], vec![]);
        }
        // `[N, C, 4 + B]`, turned back to `[N, 4 + B, C]` and flattened: row
        // r of channel c lands at r·C + c.
        let per_channel = graph.node(
            "Concat",
            &[&mean, &std, &min, &max, &spectrum],
            vec![Attr::Int("axis", 2)],
        );
        let by_row = graph.node(
            "Transpose",
            &[&per_channel],
            vec![Attr::Ints("perm", vec![0, 2, 1])],
        );
        let flat_shape = graph.constant_i64(
            "front_end_flat",
            vec![-1, spectrum_rows(self.bins) as i64 * c],
        );
        let flat = graph.node("Reshape", &[&by_row, &flat_shape], vec![]);
        let mean = graph.floats("front_end_mean", standardisation.mean.clone());
        let std = graph.floats("front_end_std", standardisation.std.clone());
        let centred = graph.node("Sub", &[&flat, &mean], vec![]);
        match self.window_weight {
            None => {
                graph.node_named("Div", &[&centred, &std], vec![], INPUT);
                INPUT.to_string()
            }
            Some(weight) => {
                let features = graph.node("Div", &[&centred, &std], vec![]);
                let weight = graph.scalar("front_end_window_weight", weight);
                let window = graph.node("Mul", &[input, &weight], vec![]);
                graph.node_named(
                    "Concat",
                    &[&features, &window],
                    vec![Attr::Int("axis", 1)],
                    INPUT,
                );
                features
            }
        }
    }
}

/// A front end with the standardisation fitted on training windows: what
/// the network reads of normalised windows, in training and in the graph.
#[derive(Debug, Clone)]
pub struct FittedFrontEnd {
    pub spectrum: Spectrum,
    pub standardisation: Normalization,
}

impl FittedFrontEnd {
    /// Fits each feature's mean and standard deviation on `normalised`
    /// (windows laid end to end).
    pub fn fit(front_end: &FrontEnd, window: usize, channels: usize, normalised: &[f32]) -> Self {
        let spectrum = Spectrum::new(front_end, window, channels);
        let features = spectrum.of_windows(normalised.chunks_exact(window * channels));
        let standardisation = Normalization::fit(&features, spectrum.features());
        Self {
            spectrum,
            standardisation,
        }
    }

    /// What the network reads of normalised windows laid end to end: the
    /// standardised spectrum of each, then for `mix` the weighted window.
    pub fn apply(&self, normalised: &[f32]) -> Vec<f32> {
        let size = self.spectrum.window * self.spectrum.channels;
        let mut out = Vec::new();
        let standardiser = self.standardisation.standardiser();
        for window in normalised.chunks_exact(size) {
            let start = out.len();
            self.spectrum.push(window, &mut out);
            standardiser.apply(&mut out[start..]);
            if let Some(weight) = self.spectrum.window_weight {
                out.extend(window.iter().map(|v| v * weight));
            }
        }
        out
    }

    /// Writes the front end; returns its standardised features' tensor.
    pub fn export(&self, graph: &mut GraphBuilder) -> String {
        self.spectrum
            .export(graph, WINDOW_INPUT, &self.standardisation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spectrum(bins: usize, log: bool, window: usize, channels: usize) -> Spectrum {
        Spectrum::new(
            &FrontEnd::Spectrum {
                bins,
                log,
                window_weight: None,
                output: FrontEnd::default_output(),
            },
            window,
            channels,
        )
    }

    #[test]
    fn a_pure_tone_lands_in_its_bin_with_the_statistics_first() {
        // Channel 0: 2 + cos at bin 3 of a 32-sample window; channel 1: 0.
        let t = 32;
        let window: Vec<f32> = (0..t)
            .flat_map(|i| {
                let v = 2.0 + (2.0 * std::f64::consts::PI * 3.0 * i as f64 / t as f64).cos();
                [v as f32, 0.0]
            })
            .collect();
        let s = spectrum(4, false, t, 2);
        let mut out = Vec::new();
        s.push(&window, &mut out);
        assert_eq!(out.len(), (4 + 4) * 2);
        let channel0: Vec<f32> = out.iter().step_by(2).copied().collect();
        let close = |a: f32, b: f32| (a - b).abs() < 1e-4;
        assert!(close(channel0[0], 2.0), "mean {channel0:?}");
        assert!(
            close(channel0[1], std::f32::consts::FRAC_1_SQRT_2),
            "std {channel0:?}"
        );
        assert!(
            close(channel0[2], 1.0) && close(channel0[3], 3.0),
            "min max {channel0:?}"
        );
        // |X_3| of a unit cosine over T samples is T/2; the other bins 0.
        let bins = &channel0[4..];
        assert!(close(bins[2], 16.0), "{bins:?}");
        assert!([0, 1, 3].iter().all(|&k| bins[k].abs() < 1e-4), "{bins:?}");
        assert!(
            out.iter().skip(1).step_by(2).all(|v| *v == 0.0),
            "silent channel"
        );
    }

    #[test]
    fn log_takes_one_plus_the_magnitude() {
        let window: Vec<f32> = (0..16)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let (plain, logged) = (spectrum(8, false, 16, 1), spectrum(8, true, 16, 1));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        plain.push(&window, &mut a);
        logged.push(&window, &mut b);
        assert_eq!(&a[..4], &b[..4], "statistics are not logged");
        for (p, l) in a[4..].iter().zip(&b[4..]) {
            assert!((l - (1.0 + p).ln()).abs() < 1e-6, "{p} {l}");
        }
        assert!((a[4 + 7] - 16.0).abs() < 1e-4, "Nyquist bin of ±1: {a:?}");
    }

    #[test]
    fn row_names_follow_the_layout() {
        let mut front_end = FrontEnd::Spectrum {
            bins: 2,
            log: true,
            window_weight: None,
            output: FrontEnd::default_output(),
        };
        assert_eq!(
            front_end.row_names(8),
            ["mean", "std", "min", "max", "dft1", "dft2"]
        );
        assert_eq!(front_end.rows(8), 6);
        assert_eq!(spectrum(2, true, 8, 3).features(), 18);
        let FrontEnd::Spectrum { window_weight, .. } = &mut front_end;
        *window_weight = Some(0.5);
        assert_eq!(front_end.rows(3), 9);
        assert_eq!(front_end.row_names(3)[6..], ["t0", "t1", "t2"]);
    }

    #[test]
    fn a_mix_appends_the_weighted_window_after_the_standardised_spectrum() {
        let front_end = SpectrumConfig { bins: 2, log: true }.front_end(24, true);
        let FrontEnd::Spectrum { window_weight, .. } = &front_end;
        let weight = window_weight.expect("a mix weighs its window");
        assert!(
            (weight - 0.5).abs() < 1e-6,
            "sqrt(6 rows / 24 samples): {weight}"
        );
        let windows: Vec<f32> = (0..2 * 24 * 2)
            .map(|i| ((i * 7) % 11) as f32 - 5.0)
            .collect();
        let fitted = FittedFrontEnd::fit(&front_end, 24, 2, &windows);
        let out = fitted.apply(&windows);
        assert_eq!(out.len(), 2 * (6 + 24) * 2);
        let (first, second) = out.split_at(out.len() / 2);
        let weighted: Vec<f32> = windows[..48].iter().map(|v| v * 0.5).collect();
        assert_eq!(&first[12..], weighted.as_slice());
        // Two windows: each standardised feature is ±1, or 0 where both agree.
        for (a, b) in first[..12].iter().zip(&second[..12]) {
            assert!((a + b).abs() < 1e-5, "{a} {b}");
            assert!((a.abs() - 1.0).abs() < 1e-5 || a.abs() < 1e-5, "{a}");
        }
    }
}
