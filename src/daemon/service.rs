//! The daemon under signals: SIGTERM or Ctrl-C drains within the grace,
//! SIGHUP reloads, and systemd hears READY, STATUS, WATCHDOG and STOPPING.

use std::time::Duration;

use crate::daemon::error::DaemonError;
use crate::daemon::{reload, systemd, Daemon, RunSummary};

/// Waits for SIGTERM or Ctrl-C.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs a daemon until its source ends or a signal arrives, then drains
/// within `grace` (else fails saying what was in flight). SIGHUP reloads;
/// systemd is notified when NOTIFY_SOCKET is set.
pub async fn serve(daemon: Daemon, grace: Duration) -> Result<RunSummary, DaemonError> {
    let handle = daemon.shutdown_handle();
    let health = daemon.health();
    let (stopping, mut stop_requested) = tokio::sync::watch::channel(false);
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: stopping the sources and draining");
        systemd::notify_stopping();
        let _ = stopping.send(true);
        let _ = handle.send(true);
    });
    let hangups = tokio::spawn(reload::reload_on_sighup(daemon.reloader()));
    let notifier = tokio::spawn(systemd::notify_loop(
        daemon.health(),
        daemon.metrics.clone(),
        daemon.input_kind().to_string(),
        Duration::from_secs(5),
    ));
    systemd::notify_ready(daemon.input_kind());
    let wait = daemon.wait();
    tokio::pin!(wait);
    let summary = tokio::select! {
        summary = &mut wait => summary,
        _ = stop_requested.wait_for(|stop| *stop) => {
            match tokio::time::timeout(grace, &mut wait).await {
                Ok(summary) => summary,
                Err(_) => {
                    let in_flight = health.in_flight();
                    tracing::error!("shutdown grace of {} ms is over; exiting with {in_flight}", grace.as_millis());
                    hangups.abort();
                    notifier.abort();
                    return Err(DaemonError::Drain { grace_ms: grace.as_millis(), in_flight: in_flight.to_string() });
                }
            }
        }
    };
    systemd::notify_stopping();
    signals.abort();
    hangups.abort();
    notifier.abort();
    summary
}
