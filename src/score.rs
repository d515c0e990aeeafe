//! Scoring maths: reconstruction error per window and per channel, and the
//! calibration quantile (pure; [`crate::model::scorer`] runs a model).

/// Mean of squared differences over all values.
pub fn mean_squared_error(input: &[f32], reconstruction: &[f32]) -> f32 {
    debug_assert_eq!(input.len(), reconstruction.len());
    // Sixteen partial sums, as in `weighted_squared_error`: one sum in order
    // waited on each addition, 8 % of the binary path's compute. Calibration
    // and serving both sum here, so a threshold and the scores it is held
    // against add alike.
    let mut lanes = [0f32; 16];
    for (x, r) in input.chunks_exact(16).zip(reconstruction.chunks_exact(16)) {
        for ((lane, x), r) in lanes.iter_mut().zip(x).zip(r) {
            *lane += (x - r) * (x - r);
        }
    }
    mse_from_lanes(&lanes, input, reconstruction)
}

/// The mean squared error from its 16 lanes' sums and the values after the
/// last whole chunk of 16.
fn mse_from_lanes(lanes: &[f32; 16], input: &[f32], reconstruction: &[f32]) -> f32 {
    let (x, r) = (input.chunks_exact(16), reconstruction.chunks_exact(16));
    let tail: f32 = x
        .remainder()
        .iter()
        .zip(r.remainder())
        .map(|(x, r)| (x - r) * (x - r))
        .sum();
    (lanes.iter().sum::<f32>() + tail) / input.len().max(1) as f32
}

/// Σ w_j (x_j − x̂_j)²: the reconstruction error of a model with
/// `error_weights`.
pub fn weighted_squared_error(input: &[f32], reconstruction: &[f32], weights: &[f32]) -> f32 {
    debug_assert_eq!(input.len(), reconstruction.len());
    debug_assert_eq!(input.len(), weights.len());
    // Sixteen partial sums, added at the end: one sum in order is bound by
    // the latency of each addition (it was 6 % of scoring a mix window).
    let mut lanes = [0f32; 16];
    let (x, r, w) = (
        input.chunks_exact(16),
        reconstruction.chunks_exact(16),
        weights.chunks_exact(16),
    );
    let tail: f32 = x
        .remainder()
        .iter()
        .zip(r.remainder())
        .zip(w.remainder())
        .map(|((x, r), w)| w * (x - r) * (x - r))
        .sum();
    for ((x, r), w) in x.zip(r).zip(w) {
        for (((lane, x), r), w) in lanes.iter_mut().zip(x).zip(r).zip(w) {
            *lane += w * (x - r) * (x - r);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The reconstruction error a model's metadata asks for: weighted when it
/// has `weights`, else the mean of the squares.
pub fn reconstruction_error(input: &[f32], reconstruction: &[f32], weights: Option<&[f32]>) -> f32 {
    match weights {
        Some(w) => weighted_squared_error(input, reconstruction, w),
        None => mean_squared_error(input, reconstruction),
    }
}

/// Error weights from held-out windows' residuals (`targets` and their
/// `reconstructions`, `features` values each, laid end to end): each of
/// the first `block` values gets 1 / (block · its mean squared error), the
/// rest share 1 / (their count · their mean squared error). On windows
/// like the held-out ones each block then adds about 1 to the error. A
/// value reconstructed (nearly) perfectly would get an unbounded weight:
/// each mean square is taken at least 1 % of its block's mean.
pub fn error_weights(
    targets: &[f32],
    reconstructions: &[f32],
    features: usize,
    block: usize,
) -> Vec<f32> {
    let mut squares = vec![0f64; features];
    let windows = targets.len() / features.max(1);
    for (x, r) in targets
        .chunks_exact(features)
        .zip(reconstructions.chunks_exact(features))
    {
        for (s, (x, r)) in squares.iter_mut().zip(x.iter().zip(r)) {
            *s += ((x - r) as f64).powi(2);
        }
    }
    squares.iter_mut().for_each(|s| *s /= windows.max(1) as f64);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    let (first, rest) = squares.split_at(block.min(features));
    let floor = (mean(first) * 0.01).max(f64::MIN_POSITIVE);
    let mut weights: Vec<f32> = first
        .iter()
        .map(|s| (1.0 / (first.len() as f64 * s.max(floor))) as f32)
        .collect();
    if !rest.is_empty() {
        let shared = 1.0 / (rest.len() as f64 * mean(rest).max(f64::MIN_POSITIVE));
        weights.extend(std::iter::repeat_n(shared as f32, rest.len()));
    }
    weights
}

/// A window's latent code: inline up to 16 values (the demo's size), on
/// the heap beyond.
pub type LatentCode = smallvec::SmallVec<[f32; 16]>;

/// One value per channel: inline up to six (an IMU's accelerometer and
/// gyroscope), on the heap beyond.
pub type PerChannel = smallvec::SmallVec<[f32; 6]>;

/// A window's [`reconstruction_error`] and [`channel_errors`] together.
/// An unweighted three-channel window of whole 48-value chunks (the demo's
/// 128 frames, every 3-axis model of a multiple of 16 frames) is read once
/// for both, each lane adding the same values in the same order as the two
/// loops apart, so both are the same to the bit; any other window takes
/// the two loops.
pub fn window_errors(
    input: &[f32],
    reconstruction: &[f32],
    weights: Option<&[f32]>,
    channels: usize,
) -> (f32, PerChannel) {
    #[cfg(target_arch = "x86_64")]
    if weights.is_none()
        && channels == 3
        && input.len() == reconstruction.len()
        && input.len().is_multiple_of(FUSED_CHUNK)
    {
        let (mse_lanes, channel_lanes) = fused_lane_sums(input, reconstruction);
        let mse = mse_from_lanes(&mse_lanes, input, reconstruction);
        let sums = fold_lanes::<3>(channel_lanes.as_flattened(), input, reconstruction);
        return (mse, per_frame(PerChannel::from_slice(&sums), input, 3));
    }
    (
        reconstruction_error(input, reconstruction, weights),
        channel_errors(input, reconstruction, channels),
    )
}

/// The values one pass of [`fused_lane_sums`] takes: three chunks of the
/// mean squared error's 16 lanes, two of three channels' 24.
#[cfg(target_arch = "x86_64")]
const FUSED_CHUNK: usize = 48;

/// The 16 lanes of [`mean_squared_error`] and the 24 of
/// [`fixed_channel_sums`] for three channels, over whole 48-value chunks,
/// in SSE2 (every x86_64 has it): each value's square is made once and
/// added to one lane of each.
#[cfg(target_arch = "x86_64")]
fn fused_lane_sums(input: &[f32], reconstruction: &[f32]) -> ([f32; 16], [[f32; 4]; 6]) {
    use std::arch::x86_64::{
        __m128, _mm_add_ps, _mm_loadu_ps, _mm_mul_ps, _mm_setzero_ps, _mm_storeu_ps, _mm_sub_ps,
    };
    let whole = input.len().min(reconstruction.len()) / FUSED_CHUNK * FUSED_CHUNK;
    let mut mse_lanes = [0f32; 16];
    let mut channel_lanes = [[0f32; 4]; 6];
    // SAFETY: SSE2 is part of the x86_64 baseline; every load reads four
    // floats inside a chunk of 48 within `[..whole]` of both slices, and
    // every store writes four floats of the two arrays of lanes.
    unsafe {
        let mut mse = [_mm_setzero_ps(); 4];
        let mut per_channel = [_mm_setzero_ps(); 6];
        for (x, r) in input[..whole]
            .chunks_exact(FUSED_CHUNK)
            .zip(reconstruction[..whole].chunks_exact(FUSED_CHUNK))
        {
            let mut squares = [_mm_setzero_ps(); 12];
            for (k, square) in squares.iter_mut().enumerate() {
                let d = _mm_sub_ps(
                    _mm_loadu_ps(x.as_ptr().add(4 * k)),
                    _mm_loadu_ps(r.as_ptr().add(4 * k)),
                );
                *square = _mm_mul_ps(d, d);
            }
            // Lane order: the mean squared error's chunks of 16 one after
            // the other, then the channels' chunks of 24.
            for group in squares.chunks_exact(4) {
                for (sum, square) in mse.iter_mut().zip(group) {
                    *sum = _mm_add_ps(*sum, *square);
                }
            }
            for group in squares.chunks_exact(6) {
                for (sum, square) in per_channel.iter_mut().zip(group) {
                    *sum = _mm_add_ps(*sum, *square);
                }
            }
        }
        let store = |lanes: &mut [f32], sums: &[__m128]| {
            for (lane, sum) in lanes.chunks_exact_mut(4).zip(sums) {
                _mm_storeu_ps(lane.as_mut_ptr(), *sum);
            }
        };
        store(&mut mse_lanes, &mse);
        store(channel_lanes.as_flattened_mut(), &per_channel);
    }
    (mse_lanes, channel_lanes)
}

/// Mean squared error of each channel of a time-major window.
pub fn channel_errors(input: &[f32], reconstruction: &[f32], channels: usize) -> PerChannel {
    // The common channel counts get a loop whose sums stay in registers,
    // without a bounds check per value: this was 8 % of the daemon's CPU on
    // binary input. Every count adds in the same order (eight frames'
    // partial sums, then the frames left), so the errors are the same to
    // the bit.
    let errors = match channels {
        1 => PerChannel::from_slice(&fixed_channel_sums::<1, 2>(input, reconstruction)),
        3 => PerChannel::from_slice(&fixed_channel_sums::<3, 6>(input, reconstruction)),
        6 => PerChannel::from_slice(&fixed_channel_sums::<6, 12>(input, reconstruction)),
        _ => PerChannel::from_vec(any_channel_sums(input, reconstruction, channels)),
    };
    per_frame(errors, input, channels)
}

/// Each channel's sum over the window's frames.
fn per_frame(mut sums: PerChannel, input: &[f32], channels: usize) -> PerChannel {
    let frames = (input.len() / channels).max(1) as f32;
    for sum in &mut sums {
        *sum /= frames;
    }
    sums
}

/// Frames summed apart before the channels' sums are folded: one sum per
/// channel in frame order waited on each addition (128 in a row for a
/// 2.56 s window).
const LANE_FRAMES: usize = 8;

/// The channels' sums of `C` channels, their `LANE_FRAMES` frames of
/// lanes held in `V` four-value vectors (`4 * V == LANE_FRAMES * C`).
fn fixed_channel_sums<const C: usize, const V: usize>(
    input: &[f32],
    reconstruction: &[f32],
) -> [f32; C] {
    debug_assert_eq!(4 * V, LANE_FRAMES * C);
    fold_lanes::<C>(
        flat_lane_sums::<V>(input, reconstruction).as_flattened(),
        input,
        reconstruction,
    )
}

/// The lanes' sums over whole chunks of `4 * V` values, as one flat array:
/// value `f * C + c` is frame `f`'s lane of channel `c`, so a chunk adds
/// element by element into `V` vector registers. Written with SSE2 (every
/// x86_64 has it) because the optimiser, seeing the per-channel fold after
/// it, laid the 24 lanes of three channels out as scalar loads gathered
/// into vectors, and this loop was 8-9 % of the daemon's CPU on binary
/// input. Each lane adds the same values in the same order either way.
#[cfg(target_arch = "x86_64")]
fn flat_lane_sums<const V: usize>(input: &[f32], reconstruction: &[f32]) -> [[f32; 4]; V] {
    use std::arch::x86_64::{
        _mm_add_ps, _mm_loadu_ps, _mm_mul_ps, _mm_setzero_ps, _mm_storeu_ps, _mm_sub_ps,
    };
    let n = 4 * V;
    let whole = input.len().min(reconstruction.len()) / n * n;
    let mut lanes = [[0f32; 4]; V];
    // SAFETY: SSE2 is part of the x86_64 baseline; every load reads four
    // floats inside a chunk of `4 * V` within `[..whole]` of both slices,
    // and every store writes one `[f32; 4]` of `lanes`.
    unsafe {
        let mut sums = [_mm_setzero_ps(); V];
        for (x, r) in input[..whole]
            .chunks_exact(n)
            .zip(reconstruction[..whole].chunks_exact(n))
        {
            for (v, sum) in sums.iter_mut().enumerate() {
                let d = _mm_sub_ps(
                    _mm_loadu_ps(x.as_ptr().add(4 * v)),
                    _mm_loadu_ps(r.as_ptr().add(4 * v)),
                );
                *sum = _mm_add_ps(*sum, _mm_mul_ps(d, d));
            }
        }
        for (lane, sum) in lanes.iter_mut().zip(sums) {
            _mm_storeu_ps(lane.as_mut_ptr(), sum);
        }
    }
    lanes
}

#[cfg(not(target_arch = "x86_64"))]
fn flat_lane_sums<const V: usize>(input: &[f32], reconstruction: &[f32]) -> [[f32; 4]; V] {
    let n = 4 * V;
    let whole = input.len().min(reconstruction.len()) / n * n;
    let mut lanes = [[0f32; 4]; V];
    for (x, r) in input[..whole]
        .chunks_exact(n)
        .zip(reconstruction[..whole].chunks_exact(n))
    {
        for (lane, (x, r)) in lanes
            .iter_mut()
            .zip(x.chunks_exact(4).zip(r.chunks_exact(4)))
        {
            for k in 0..4 {
                let d = x[k] - r[k];
                lane[k] += d * d;
            }
        }
    }
    lanes
}

/// The lanes folded per channel, then the frames after the last whole
/// chunk: the order [`any_channel_sums`] adds in.
fn fold_lanes<const C: usize>(lanes: &[f32], input: &[f32], reconstruction: &[f32]) -> [f32; C] {
    let frames = input.len().min(reconstruction.len()) / C;
    let whole = frames / LANE_FRAMES * LANE_FRAMES * C;
    let mut sums = [0f32; C];
    for lane in lanes.chunks_exact(C) {
        for c in 0..C {
            sums[c] += lane[c];
        }
    }
    let tail = input[whole..frames * C]
        .chunks_exact(C)
        .zip(reconstruction[whole..frames * C].chunks_exact(C));
    for (x, r) in tail {
        for c in 0..C {
            sums[c] += (x[c] - r[c]) * (x[c] - r[c]);
        }
    }
    sums
}

/// The same sums, in the same order, for any channel count.
fn any_channel_sums(input: &[f32], reconstruction: &[f32], channels: usize) -> Vec<f32> {
    let c = channels;
    let frames = input.len().min(reconstruction.len()) / c;
    let whole = frames / LANE_FRAMES * LANE_FRAMES * c;
    let mut lanes = vec![0f32; LANE_FRAMES * c];
    for (x, r) in input[..whole]
        .chunks_exact(c * LANE_FRAMES)
        .zip(reconstruction[..whole].chunks_exact(c * LANE_FRAMES))
    {
        for ((lane, x), r) in lanes.iter_mut().zip(x).zip(r) {
            *lane += (x - r) * (x - r);
        }
    }
    let mut sums = vec![0f32; c];
    for lane in lanes.chunks_exact(c) {
        for (sum, v) in sums.iter_mut().zip(lane) {
            *sum += v;
        }
    }
    let tail = input[whole..frames * c]
        .chunks_exact(c)
        .zip(reconstruction[whole..frames * c].chunks_exact(c));
    for (x, r) in tail {
        for ch in 0..c {
            sums[ch] += (x[ch] - r[ch]) * (x[ch] - r[ch]);
        }
    }
    sums
}

/// The `q` quantile with linear interpolation between order statistics
/// (NumPy's default). Sorts `values`. Empty input gives NaN.
pub fn quantile(values: &mut [f32], q: f64) -> f32 {
    if values.is_empty() {
        return f32::NAN;
    }
    values.sort_by(f32::total_cmp);
    let position = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let fraction = (position - below as f64) as f32;
    values[below] + (values[above] - values[below]) * fraction
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_weights_make_each_block_count_about_one_on_held_out_windows() {
        // Two windows of 4 values: the first 2 a block of their own.
        let targets = [1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0];
        let reconstructions = [0.0, 0.1, 0.5, 0.0, 0.0, 0.1, 0.0, 0.5];
        let w = error_weights(&targets, &reconstructions, 4, 2);
        // Mean squares: 1.0, 0.01; the rest together 0.125.
        let expected = [0.5, 50.0, 4.0, 4.0];
        for (got, want) in w.iter().zip(expected) {
            assert!((got - want).abs() < 1e-4 * want, "{w:?}");
        }
        let per_window: Vec<f32> = targets
            .chunks(4)
            .zip(reconstructions.chunks(4))
            .map(|(x, r)| weighted_squared_error(x, r, &w))
            .collect();
        let mean = per_window.iter().sum::<f32>() / 2.0;
        assert!((mean - 2.0).abs() < 1e-4, "{per_window:?}");
        // A value never wrong gets at most 100 times its block's mean weight.
        let w = error_weights(&[1.0, 0.0], &[0.0, 0.0], 2, 2);
        assert!(
            w[1].is_finite() && w[1] <= 100.0 * 2.0 / (2.0 * 0.5),
            "{w:?}"
        );
        assert_eq!(reconstruction_error(&[1.0, 0.0], &[0.0, 0.0], None), 0.5);
        assert_eq!(
            reconstruction_error(&[1.0, 0.0], &[0.0, 0.0], Some(&[3.0, 1.0])),
            3.0
        );
    }

    #[test]
    fn the_fixed_channel_loops_give_the_general_loops_errors_to_the_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for channels in 1..=8 {
            for frames in [0, 1, 2, 127, 128] {
                // A stray value past the last whole frame is ignored by both.
                let len = frames * channels + usize::from(frames % 2 == 1);
                let x: Vec<f32> = (0..len).map(|_| rng.random_range(-4.0..4.0)).collect();
                let r: Vec<f32> = (0..len).map(|_| rng.random_range(-4.0..4.0)).collect();
                let general: Vec<f32> = any_channel_sums(&x, &r, channels)
                    .iter()
                    .map(|s| s / (len / channels).max(1) as f32)
                    .collect();
                let errors = channel_errors(&x, &r, channels);
                assert_eq!(errors.len(), channels);
                let bits = |v: &[f32]| v.iter().map(|e| e.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&errors),
                    bits(&general),
                    "{channels} channels, {frames} frames"
                );
            }
        }
    }

    #[test]
    fn one_pass_gives_both_loops_errors_to_the_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let bits = |v: &[f32]| v.iter().map(|e| e.to_bits()).collect::<Vec<_>>();
        // 48 and 384 values take the one pass; the others the two loops.
        for (channels, len) in [
            (3, 48),
            (3, 384),
            (3, 96),
            (3, 300),
            (3, 0),
            (6, 384),
            (1, 384),
        ] {
            for scale in [1e-3f32, 1.0, 1e3] {
                let x: Vec<f32> = (0..len)
                    .map(|_| scale * rng.random_range(-4.0..4.0))
                    .collect();
                let r: Vec<f32> = (0..len)
                    .map(|_| scale * rng.random_range(-4.0..4.0))
                    .collect();
                let (mse, errors) = window_errors(&x, &r, None, channels);
                assert_eq!(
                    mse.to_bits(),
                    mean_squared_error(&x, &r).to_bits(),
                    "{channels} channels, {len} values, scale {scale}"
                );
                assert_eq!(
                    bits(&errors),
                    bits(&channel_errors(&x, &r, channels)),
                    "{channels} channels, {len} values, scale {scale}"
                );
                let w: Vec<f32> = (0..len).map(|_| rng.random_range(0.1..2.0)).collect();
                let (weighted, _) = window_errors(&x, &r, Some(&w), channels);
                assert_eq!(
                    weighted.to_bits(),
                    weighted_squared_error(&x, &r, &w).to_bits()
                );
            }
        }
    }

    #[test]
    fn errors_per_window_and_channel() {
        let x = [1.0, 0.0, 1.0, 0.0];
        let r = [0.0, 0.0, 1.0, 2.0];
        assert_eq!(mean_squared_error(&x, &r), 5.0 / 4.0);
        assert_eq!(channel_errors(&x, &r, 2).as_slice(), [0.5, 2.0].as_slice());
    }

    #[test]
    fn quantile_interpolates_like_numpy() {
        let mut v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&mut v, 0.5), 2.5);
        assert_eq!(quantile(&mut v, 0.0), 1.0);
        assert_eq!(quantile(&mut v, 1.0), 4.0);
        let mut v: Vec<f32> = (0..=100).map(|i| i as f32).collect();
        assert!((quantile(&mut v, 0.99) - 99.0).abs() < 1e-4);
        assert!(quantile(&mut [], 0.5).is_nan());
    }
}
