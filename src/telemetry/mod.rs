//! Prometheus metrics, and the HTTP endpoint that serves them with
//! `/healthz` and `/readyz`. Every stage reports through the small typed
//! methods of [`Metrics`], so names and label sets are defined here once.

pub mod config;
pub mod events;
pub mod http;
pub mod metrics;

pub use http::serve;
pub use metrics::Metrics;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::DecodeError;

    #[test]
    fn renders_named_counters_with_bounded_labels() {
        let m = Metrics::new();
        m.frame();
        m.samples(3);
        m.decode_error(&DecodeError::NotUtf8);
        m.window_scored("basic-x", 0.5, true);
        let text = m.render();
        assert!(text.contains("accelwatch_frames_total 1"), "{text}");
        assert!(text.contains("accelwatch_samples_total 3"));
        assert!(text.contains("accelwatch_decode_errors_total{reason=\"not_utf8\"} 1"));
        assert!(
            text.contains("accelwatch_decode_errors_total{reason=\"syntax\"} 0"),
            "reasons pre-registered"
        );
        assert!(text.contains("accelwatch_anomalous_windows_total 1"));
    }
}
