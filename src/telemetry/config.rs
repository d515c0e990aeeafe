//! `[telemetry]`: where /metrics, the health probes and control listen.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    #[serde(default = "TelemetryConfig::default_enabled")]
    pub enabled: bool,
    #[serde(default = "TelemetryConfig::default_listen")]
    pub listen: SocketAddr,
    /// Whether /readyz answers 200 while a model scope calibrates (serves
    /// no model yet). Off by default: such a daemon scores nothing, so a
    /// load balancer or an orchestrator should not count on it yet.
    #[serde(default)]
    pub ready_while_calibrating: bool,
}

impl TelemetryConfig {
    const fn default_enabled() -> bool {
        true
    }
    fn default_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9898))
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            enabled: Self::default_enabled(),
            listen: Self::default_listen(),
            ready_while_calibrating: false,
        }
    }
}
