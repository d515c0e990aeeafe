//! What the MQTT input and output share: the broker URL, client options
//! (credentials, TLS, packet limit), one client over MQTT 3.1.1 and 5
//! ([`client`]), reconnection back-off, topic rules ([`topic`]).
//!
//! The callers own rumqttc's event loop and poll it in a task; rumqttc
//! reconnects on the poll after an error, and the caller waits with
//! [`Backoff`] in between, so an outage never ends the daemon.

pub mod client;
pub mod topic;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rumqttc::{TlsConfiguration, Transport};

pub use client::{Client, Event, Events};

use crate::config::{MqttAuth, MqttInputConfig};

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("{key}: {message}")]
    Setting { key: String, message: String },
    #[error("{key}: cannot read {path}: {cause}")]
    Read {
        key: String,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{key}: {message}")]
    Tls { key: String, message: String },
}

/// `mqtt://host[:port]` (1883 by default) or `mqtts://host[:port]` (8883).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err(format!("{url:?}: must start with mqtt:// or mqtts://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "{url:?}: only a host and a port (credentials go in auth)"
            ));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed ["))?;
            (host, after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{url:?}: bad port {p:?}"))?,
        };
        Ok(Self {
            host: host.into(),
            port,
            tls,
        })
    }
}

/// A broker connection, resolved from the config.
#[derive(Debug, Clone)]
pub struct Broker {
    pub url: String,
    /// Key prefix for messages, e.g. `input.mqtt`.
    pub key: &'static str,
    pub auth: MqttAuth,
    pub keep_alive: Duration,
    pub max_packet_bytes: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Broker {
    /// The input's broker; the output's when it sets no `url` of its own.
    pub fn input(mqtt: &MqttInputConfig) -> Self {
        Self {
            url: mqtt.url.clone(),
            key: "input.mqtt",
            auth: mqtt.auth.clone(),
            keep_alive: Duration::from_secs(mqtt.keep_alive_s),
            max_packet_bytes: mqtt.max_packet_bytes,
            backoff_min: Duration::from_millis(mqtt.reconnect_min_ms),
            backoff_max: Duration::from_millis(mqtt.reconnect_max_ms),
        }
    }

    /// The client and its event loop: address, credentials, TLS,
    /// keep-alive and packet limit from here, the rest from `session`. The
    /// password is read here and never logged.
    pub fn connect(&self, session: client::Session) -> Result<(Client, Events), MqttError> {
        let url = BrokerUrl::parse(&self.url).map_err(|message| MqttError::Setting {
            key: format!("{}.url", self.key),
            message,
        })?;
        let credentials = match &self.auth.username {
            Some(username) => Some((username.clone(), self.password()?.unwrap_or_default())),
            None => None,
        };
        let transport = if url.tls {
            Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(self.tls_config()?)))
        } else {
            Transport::Tcp
        };
        let endpoint = client::Endpoint {
            host: url.host,
            port: url.port,
            keep_alive: self.keep_alive,
            max_packet_bytes: self.max_packet_bytes,
            credentials,
            transport,
        };
        Ok(client::new(endpoint, session))
    }

    fn password(&self) -> Result<Option<String>, MqttError> {
        if let Some(path) = &self.auth.password_file {
            let text = std::fs::read_to_string(path).map_err(|cause| MqttError::Read {
                key: format!("{}.auth.password_file", self.key),
                path: path.clone(),
                cause,
            })?;
            return Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()));
        }
        if let Some(name) = &self.auth.password_env {
            return std::env::var(name)
                .map(Some)
                .map_err(|_| MqttError::Setting {
                    key: format!("{}.auth.password_env", self.key),
                    message: format!("the environment variable {name} is not set (or not UTF-8)"),
                });
        }
        Ok(None)
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig, MqttError> {
        let tls_error = |key: &str, message: String| MqttError::Tls {
            key: format!("{}.auth.{key}", self.key),
            message,
        };
        let mut roots = rustls::RootCertStore::empty();
        match &self.auth.ca_file {
            Some(path) => {
                let certs = self.pem_certs("ca_file", path)?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(tls_error(
                        "ca_file",
                        format!("no usable certificate in {}", path.display()),
                    ));
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
                if roots.is_empty() {
                    return Err(tls_error(
                        "ca_file",
                        "unset, and no system root certificate was found".into(),
                    ));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("ca_file", e.to_string()))?
            .with_root_certificates(roots);
        match (&self.auth.client_cert_file, &self.auth.client_key_file) {
            (Some(cert), Some(key)) => {
                let chain = self.pem_certs("client_cert_file", cert)?;
                let key_path = key;
                let key = self.read("client_key_file", key_path).and_then(|bytes| {
                    rustls_pemfile::private_key(&mut bytes.as_slice())
                        .ok()
                        .flatten()
                        .ok_or_else(|| {
                            tls_error(
                                "client_key_file",
                                format!("no PEM private key in {}", key_path.display()),
                            )
                        })
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls_error("client_key_file", e.to_string()))
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }

    fn read(&self, key: &str, path: &Path) -> Result<Vec<u8>, MqttError> {
        std::fs::read(path).map_err(|cause| MqttError::Read {
            key: format!("{}.auth.{key}", self.key),
            path: path.to_path_buf(),
            cause,
        })
    }

    fn pem_certs(
        &self,
        key: &str,
        path: &Path,
    ) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, MqttError> {
        let bytes = self.read(key, path)?;
        let certs = rustls_pemfile::certs(&mut bytes.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| MqttError::Tls {
                key: format!("{}.auth.{key}", self.key),
                message: format!("{}: {e}", path.display()),
            })?;
        if certs.is_empty() {
            return Err(MqttError::Tls {
                key: format!("{}.auth.{key}", self.key),
                message: format!("no PEM certificate in {}", path.display()),
            });
        }
        Ok(certs)
    }
}

/// Capped exponential back-off with jitter: each failure doubles the wait
/// up to the cap, and the actual wait is drawn from its upper half so that
/// many boxes restarted together do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            current: min,
        }
    }

    pub fn reset(&mut self) {
        self.current = self.min;
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = base / 2;
        half + rand::rng().random_range(Duration::ZERO..=base - half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let u = BrokerUrl::parse("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("127.0.0.1", 1884, false));
        let u = BrokerUrl::parse("mqtts://broker.example/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("broker.example", 8883, true)
        );
        let u = BrokerUrl::parse("mqtt://[::1]:1885").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1885));
        for bad in [
            "tcp://h:1",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:x",
            "mqtt://u:p@h",
            "mqtt://h/path",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        for (d, base) in delays
            .iter()
            .zip([100, 200, 400, 800, 1000, 1000, 1000, 1000])
        {
            let base = Duration::from_millis(base);
            assert!(*d >= base / 2 && *d <= base, "{d:?} for {base:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
