//! Windows standardised by a model's normalisation: in place, or appended
//! to the batch the model reads.

use super::meta::Normalization;

/// A [`Normalization`] ready to append windows standardised, its blocks of
/// means and stds laid out once rather than per window.
#[derive(Debug, Clone)]
pub struct Standardiser {
    mean: Vec<f32>,
    std: Vec<f32>,
    /// The means and stds repeated over 16 frames (empty beyond 8
    /// channels, where the frame-by-frame loop does it all).
    mean_block: Vec<f32>,
    std_block: Vec<f32>,
}

impl Standardiser {
    /// Appends `window` to `out`, standardised: one pass over the window
    /// where a copy then [`Normalization::apply`] took two (the copy was
    /// 1.9 % of the daemon's CPU on binary input). The same operations, so
    /// the same results to the bit.
    pub fn extend(&self, window: &[f32], out: &mut Vec<f32>) {
        let c = self.mean.len();
        out.reserve(window.len());
        let mut rest = window;
        if !self.mean_block.is_empty() {
            let block = self.mean_block.len();
            let whole = rest.len() / block * block;
            let (blocks, remainder) = rest.split_at(whole);
            standardise_blocks_into(blocks, &self.mean_block, &self.std_block, out);
            rest = remainder;
        }
        for frame in rest.chunks_exact(c.max(1)) {
            for ((v, m), s) in frame.iter().zip(&self.mean).zip(&self.std) {
                out.push((v - m) / s);
            }
        }
    }
}

impl Standardiser {
    /// Standardises a time-major window in place.
    pub fn apply(&self, window: &mut [f32]) {
        let c = self.mean.len();
        let mut rest = window;
        if !self.mean_block.is_empty() {
            let block = self.mean_block.len();
            let whole = rest.len() / block * block;
            let (blocks, remainder) = rest.split_at_mut(whole);
            standardise_blocks(blocks, &self.mean_block, &self.std_block);
            rest = remainder;
        }
        for frame in rest.chunks_exact_mut(c.max(1)) {
            for ((v, m), s) in frame.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = (*v - m) / s;
            }
        }
    }
}

impl Normalization {
    /// What standardises windows by this normalisation. The channels'
    /// means and stds are repeated over 16 frames once: a block of those
    /// runs as whole-vector divisions (one frame at a time does not
    /// vectorise, and was 12 % of scoring a window), and laying them out
    /// per window was 1.4 % of the daemon's CPU. The same operations as
    /// frame by frame, so the same results to the bit.
    pub fn standardiser(&self) -> Standardiser {
        const FRAMES: usize = 16;
        let c = self.mean.len();
        let repeated = |values: &[f32]| -> Vec<f32> {
            if (1..=8).contains(&c) {
                values.iter().copied().cycle().take(FRAMES * c).collect()
            } else {
                Vec::new()
            }
        };
        Standardiser {
            mean: self.mean.clone(),
            std: self.std.clone(),
            mean_block: repeated(&self.mean),
            std_block: repeated(&self.std),
        }
    }

    /// Standardises a time-major window in place (a caller with many
    /// windows keeps a [`standardiser`](Self::standardiser) instead).
    pub fn apply(&self, window: &mut [f32]) {
        self.standardiser().apply(window)
    }
}

/// `(v - mean) / std` over whole blocks of `mean.len()` values. IEEE
/// division is correctly rounded at any vector width, so the AVX2 build
/// gives the portable one's results to the bit, with twice the lanes (the
/// release binary targets plain x86-64, whose divisions take 4).
fn standardise_blocks(values: &mut [f32], mean: &[f32], std: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, which is all the function assumes.
        return unsafe { standardise_blocks_avx2(values, mean, std) };
    }
    standardise_blocks_portable(values, mean, std)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn standardise_blocks_avx2(values: &mut [f32], mean: &[f32], std: &[f32]) {
    standardise_blocks_portable(values, mean, std)
}

/// [`standardise_blocks`] from `values` onto the end of `out`.
fn standardise_blocks_into(values: &[f32], mean: &[f32], std: &[f32], out: &mut Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, which is all the function assumes.
        return unsafe { standardise_blocks_into_avx2(values, mean, std, out) };
    }
    standardise_blocks_into_portable(values, mean, std, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn standardise_blocks_into_avx2(values: &[f32], mean: &[f32], std: &[f32], out: &mut Vec<f32>) {
    standardise_blocks_into_portable(values, mean, std, out)
}

#[inline(always)]
fn standardise_blocks_into_portable(values: &[f32], mean: &[f32], std: &[f32], out: &mut Vec<f32>) {
    let start = out.len();
    out.reserve(values.len());
    for (to, from) in out.spare_capacity_mut()[..values.len()]
        .chunks_exact_mut(mean.len())
        .zip(values.chunks_exact(mean.len()))
    {
        for (((t, v), m), s) in to.iter_mut().zip(from).zip(mean).zip(std) {
            t.write((*v - m) / s);
        }
    }
    // SAFETY: `values.len()` is whole blocks of `mean.len()`, so the loop
    // wrote every one of the `values.len()` slots after `start`.
    unsafe { out.set_len(start + values.len()) };
}

#[inline(always)]
fn standardise_blocks_portable(values: &mut [f32], mean: &[f32], std: &[f32]) {
    for block in values.chunks_exact_mut(mean.len()) {
        for ((v, m), s) in block.iter_mut().zip(mean).zip(std) {
            *v = (*v - m) / s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_in_blocks_gives_the_frame_by_frame_results_to_the_bit() {
        for channels in [1usize, 3, 6, 8, 9] {
            let norm = Normalization {
                mean: (0..channels).map(|c| c as f32 * 0.37 - 1.0).collect(),
                std: (0..channels).map(|c| 0.3 + c as f32 * 0.11).collect(),
            };
            for frames in [0usize, 1, 15, 16, 17, 128, 131] {
                let window: Vec<f32> = (0..frames * channels)
                    .map(|i| ((i * 7919) % 1013) as f32 * 0.0123 - 5.0)
                    .collect();
                let mut fast = window.clone();
                norm.apply(&mut fast);
                // Appended after what a batch already holds, as the scorer does.
                let mut appended = vec![7.5; 3];
                norm.standardiser().extend(&window, &mut appended);
                assert_eq!(appended[..3], [7.5; 3]);
                assert_eq!(
                    appended[3..]
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>(),
                    fast.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{channels} channels, {frames} frames: appended"
                );
                let slow: Vec<f32> = window
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v - norm.mean[i % channels]) / norm.std[i % channels])
                    .collect();
                assert_eq!(
                    fast.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    slow.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{channels} channels, {frames} frames"
                );
            }
        }
    }
}
