//! Scoring maths: reconstruction error per window and per channel, and the
//! calibration quantile (pure; [`crate::model::scorer`] runs a model).

/// Mean of squared differences over all values.
pub fn mean_squared_error(input: &[f32], reconstruction: &[f32]) -> f32 {
    debug_assert_eq!(input.len(), reconstruction.len());
    let sum: f32 = input
        .iter()
        .zip(reconstruction)
        .map(|(x, r)| (x - r) * (x - r))
        .sum();
    sum / input.len().max(1) as f32
}

/// Mean squared error of each channel of a time-major window.
pub fn channel_errors(input: &[f32], reconstruction: &[f32], channels: usize) -> Vec<f32> {
    let mut sums = vec![0f32; channels];
    for (x, r) in input
        .chunks_exact(channels)
        .zip(reconstruction.chunks_exact(channels))
    {
        for c in 0..channels {
            sums[c] += (x[c] - r[c]) * (x[c] - r[c]);
        }
    }
    let frames = (input.len() / channels).max(1) as f32;
    sums.iter().map(|s| s / frames).collect()
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
    fn errors_per_window_and_channel() {
        let x = [1.0, 0.0, 1.0, 0.0];
        let r = [0.0, 0.0, 1.0, 2.0];
        assert_eq!(mean_squared_error(&x, &r), 5.0 / 4.0);
        assert_eq!(channel_errors(&x, &r, 2), vec![0.5, 2.0]);
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
