//! `[telemetry]`: where /metrics, the health probes and control listen.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use super::access::TelemetryTls;
use crate::problem::{Problem, Problems};

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
    /// A file holding the bearer token `/control/*` requires; unset, HTTP
    /// control is off (the MQTT control topic is not affected).
    #[serde(default)]
    pub control_token_file: Option<PathBuf>,
    /// Serve HTTPS instead of HTTP.
    #[serde(default)]
    pub tls: Option<TelemetryTls>,
    /// Serve the status page, `/api/state` and `/api/alerts*` (device ids,
    /// raw sensor windows) without the token on a listener beyond
    /// loopback. On loopback they are always open.
    #[serde(default)]
    pub public_reads: bool,
    /// Serve `/metrics` without the token on a listener beyond loopback,
    /// as a Prometheus scrape expects by default.
    #[serde(default = "TelemetryConfig::default_public_metrics")]
    pub public_metrics: bool,
}

/// Where a listener's endpoints stand: open to whoever reaches it, or
/// behind the control token (refused to all without one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exposure {
    pub open: Vec<&'static str>,
    pub token: Vec<&'static str>,
}

impl TelemetryConfig {
    const fn default_enabled() -> bool {
        true
    }
    fn default_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9898))
    }
    const fn default_public_metrics() -> bool {
        true
    }

    /// Only this machine reaches the listener, so everything but control
    /// is served without the token.
    pub fn on_loopback(&self) -> bool {
        self.listen.ip().is_loopback()
    }

    /// The page, `/api/state` and `/api/alerts*` are served without the
    /// token.
    pub fn reads_open(&self) -> bool {
        self.public_reads || self.on_loopback()
    }

    pub fn metrics_open(&self) -> bool {
        self.public_metrics || self.on_loopback()
    }

    /// Which endpoints answer without the token, and which need it.
    pub fn exposure(&self) -> Exposure {
        let mut exposure = Exposure {
            open: vec!["/healthz", "/readyz"],
            token: Vec::new(),
        };
        let metrics = ["/metrics"];
        let reads = ["/", "/api/state", "/api/alerts"];
        for (open, paths) in [
            (self.metrics_open(), &metrics[..]),
            (self.reads_open(), &reads[..]),
        ] {
            if open {
                exposure.open.extend(paths);
            } else {
                exposure.token.extend(paths);
            }
        }
        exposure.token.push("/control");
        exposure
    }

    /// The token file and the TLS files, read and checked as the daemon
    /// will read them.
    pub fn file_problems(&self, problems: &mut Problems) {
        if !self.enabled {
            return;
        }
        if let Some(path) = &self.control_token_file {
            if let Err(error) = super::access::read_token(path) {
                problems.check(false, "telemetry.control_token_file", error.to_string());
            }
        }
        if let Some(tls) = &self.tls {
            if let Err(error) = super::access::server_config(tls) {
                problems.check(false, error.key, error.message);
            }
        }
    }

    /// What is allowed but worth a second look.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut warnings = Problems::default();
        if !self.enabled {
            return warnings.into_vec();
        }
        let exposure = self.exposure();
        warnings.check(
            self.on_loopback(),
            "telemetry.listen",
            format!(
                "{} is reachable beyond this machine: without authentication {}; {} {}{}",
                self.listen,
                exposure.open.join(", "),
                if self.control_token_file.is_some() {
                    "with the control token"
                } else {
                    "refused to everyone (no telemetry.control_token_file)"
                },
                exposure.token.join(", "),
                if self.tls.is_some() {
                    ""
                } else {
                    "; in clear text (see telemetry.tls)"
                }
            ),
        );
        #[cfg(unix)]
        if let Some(path) = &self.control_token_file {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_or(0, |m| m.permissions().mode());
            warnings.check(
                mode & 0o004 == 0,
                "telemetry.control_token_file",
                format!("{} is readable by every user (chmod 600)", path.display()),
            );
        }
        warnings.into_vec()
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            enabled: Self::default_enabled(),
            listen: Self::default_listen(),
            ready_while_calibrating: false,
            control_token_file: None,
            tls: None,
            public_reads: false,
            public_metrics: Self::default_public_metrics(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_beyond_loopback_is_a_warning() {
        let mut config = TelemetryConfig::default();
        assert!(config.warnings().is_empty());
        config.listen = "0.0.0.0:9898".parse().unwrap();
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].key, "telemetry.listen");
        assert!(warnings[0].message.contains("clear text"), "{warnings:?}");
        assert!(
            warnings[0].message.contains(
                "without authentication /healthz, /readyz, /metrics; refused to everyone \
                 (no telemetry.control_token_file) /, /api/state, /api/alerts, /control"
            ),
            "{warnings:?}"
        );
        config.public_reads = true;
        config.public_metrics = false;
        config.control_token_file = Some("token".into());
        assert_eq!(
            config.exposure(),
            Exposure {
                open: vec!["/healthz", "/readyz", "/", "/api/state", "/api/alerts"],
                token: vec!["/metrics", "/control"],
            }
        );
        assert!(config.warnings()[0]
            .message
            .contains("with the control token /metrics, /control"));
        config.public_reads = false;
        config.public_metrics = true;
        config.control_token_file = None;
        config.listen = "[::1]:9898".parse().unwrap();
        assert!(config.warnings().is_empty());
        assert!(config.reads_open() && config.metrics_open());
        assert_eq!(
            config.exposure().token,
            ["/control"],
            "loopback: only control is closed"
        );
        config.enabled = false;
        config.listen = "0.0.0.0:9898".parse().unwrap();
        assert!(config.warnings().is_empty());
    }

    #[test]
    fn a_missing_or_empty_token_file_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = TelemetryConfig::default();
        let keys = |config: &TelemetryConfig| {
            let mut problems = Problems::default();
            config.file_problems(&mut problems);
            problems.into_vec()
        };
        config.control_token_file = Some(dir.path().join("absent"));
        assert_eq!(keys(&config)[0].key, "telemetry.control_token_file");
        let path = dir.path().join("token");
        std::fs::write(&path, "  \n").unwrap();
        config.control_token_file = Some(path.clone());
        assert!(
            keys(&config)[0].message.contains("empty"),
            "{:?}",
            keys(&config)
        );
        std::fs::write(&path, "short\n").unwrap();
        assert!(
            keys(&config)[0].message.contains("16"),
            "{:?}",
            keys(&config)
        );
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        assert!(keys(&config).is_empty(), "{:?}", keys(&config));
        config.tls = Some(TelemetryTls {
            cert_file: dir.path().join("cert.pem"),
            key_file: dir.path().join("key.pem"),
        });
        assert_eq!(keys(&config)[0].key, "telemetry.tls.cert_file");
    }
}
