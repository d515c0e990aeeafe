//! Prometheus metrics, and the HTTP endpoint that serves them with
//! `/healthz`, `/readyz` and the status page (`/`, [`page`]; its data,
//! `/api/state`, from [`state`] and the [`live`] board), behind the door
//! of [`guard`] when the listener is not on loopback. Every stage
//! reports through the small typed methods of [`Metrics`], so names and
//! label sets are defined here once.

pub mod access;
pub mod alerts;
pub mod config;
pub mod events;
pub mod guard;
pub mod http;
pub mod limiter;
pub mod live;
pub mod login;
pub mod metrics;
pub mod page;
mod register;
pub mod state;

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
        m.decode_error(DecodeError::NotUtf8.reason());
        m.model_windows("basic-x").scored(0.5, true);
        let text = m.render();
        assert!(text.contains("accelwatch_frames_total 1"), "{text}");
        assert!(text.contains("accelwatch_samples_total 3"));
        assert!(text.contains("accelwatch_decode_errors_total{reason=\"not_utf8\"} 1"));
        assert!(
            text.contains("accelwatch_decode_errors_total{reason=\"syntax\"} 0"),
            "reasons pre-registered"
        );
        assert!(text.contains("accelwatch_anomalous_windows_total 1"));
        assert!(text.contains("accelwatch_windows_total 1"));
        assert!(
            text.contains("accelwatch_reconstruction_error_count{model=\"basic-x\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn readiness_needs_subscriptions_and_a_model_for_every_scope() {
        let m = Metrics::new();
        m.set_input_kind("mqtt");
        m.set_ready(true);
        m.mqtt_connected("input", true);
        let r = m.readiness();
        assert!(!r.ready());
        assert!(r.reason().unwrap().contains("subscriptions"), "{r:?}");
        m.mqtt_subscribed(true);
        assert!(m.readiness().ready());

        m.model_state("device:a", "calibrating");
        m.model_state("fleet", "calibrating");
        let r = m.readiness();
        assert!(!r.ready());
        assert_eq!(r.calibrating, 2);
        assert_eq!(r.calibrating_first, ["device:a", "fleet"]);
        assert!(r.reason().unwrap().contains("2 model scope(s) calibrating"));
        m.set_ready_while_calibrating(true);
        assert!(m.readiness().ready(), "the documented choice");
        m.set_ready_while_calibrating(false);

        m.model_loaded("fleet", "basic-1", "basic", 0.5);
        m.model_state("fleet", "serving");
        m.model_loaded("device:a", "basic-2", "basic", 0.5);
        // A served scope that retrains stays ready.
        m.model_state("device:a", "training");
        assert!(m.readiness().ready(), "{:?}", m.readiness());

        m.mqtt_connected("input", false);
        m.mqtt_subscribed(false);
        assert!(m.readiness().reason().unwrap().contains("not connected"));
    }
}
