//! systemd notifications: READY, STATUS, WATCHDOG, STOPPING.

use std::time::{Duration, Instant};

use crate::telemetry::Metrics;

use crate::daemon::health::Health;
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::debug!(%error, "systemd notification failed");
    }
}

/// READY=1 (the model is loaded and the pipeline runs), with a first STATUS=.
pub fn notify_ready(input_kind: &str) {
    let status = format!("running, input {input_kind}");
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
}

/// STOPPING=1.
pub fn notify_stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

/// Sends STATUS= every `status_every` (windows/s and the input's state)
/// and WATCHDOG=1 at half the watchdog period, but only while the
/// pipeline's heartbeat advances. Returns at once when NOTIFY_SOCKET is
/// unset.
pub async fn notify_loop(
    health: Health,
    metrics: Metrics,
    input_kind: String,
    status_every: Duration,
) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled();
    let tick = match watchdog {
        Some(period) => (period / 2).min(status_every),
        None => status_every,
    };
    let mut last = health.snapshot();
    let mut last_windows = metrics.windows_scored();
    let mut last_status = Instant::now();
    let mut stalled_logged = false;
    loop {
        tokio::time::sleep(tick).await;
        let now = health.snapshot();
        let stalled = now.stalled_since(&last);
        last = now;
        if watchdog.is_some() {
            if stalled.is_empty() {
                stalled_logged = false;
                notify(&[sd_notify::NotifyState::Watchdog]);
            } else if !stalled_logged {
                stalled_logged = true;
                tracing::error!(
                    stages = %stalled.join(", "),
                    "the pipeline is stalled: not pinging the systemd watchdog"
                );
            }
        }
        if last_status.elapsed() >= status_every {
            let windows = metrics.windows_scored();
            let rate = (windows - last_windows) as f64 / last_status.elapsed().as_secs_f64();
            last_windows = windows;
            last_status = Instant::now();
            let input = match input_kind.as_str() {
                "mqtt" if metrics.is_mqtt_connected("input") => "mqtt connected",
                "mqtt" => "mqtt disconnected",
                other => other,
            };
            let status = format!(
                "{rate:.1} windows/s, {windows} windows, {} frames, input {input}{}",
                metrics.frames_received(),
                if stalled.is_empty() { "" } else { ", STALLED" }
            );
            notify(&[sd_notify::NotifyState::Status(&status)]);
        }
    }
}
