//! A broker's address and the client options to reach it (credentials,
//! TLS, packet limit), shared by the MQTT input and output.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{TlsConfiguration, Transport};

use crate::mqtt::client::{self, Client, Events};
use crate::mqtt::config::{MqttAuth, MqttProtocol};
use crate::mqtt::url::BrokerUrl;
use crate::source::mqtt::config::MqttInputConfig;

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
    /// The output's state (spool, `msg_id` counter) cannot be kept.
    #[error("{key}: {}: {cause}", path.display())]
    State {
        key: String,
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// A broker connection, resolved from the config.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub url: String,
    /// Key prefix for messages, e.g. `input.mqtt`.
    pub key: &'static str,
    pub auth: MqttAuth,
    pub keep_alive: Duration,
    pub max_packet_bytes: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// The protocol of the input, which the output follows unless it sets
    /// its own.
    pub protocol: MqttProtocol,
}

impl BrokerSettings {
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
            protocol: mqtt.protocol,
        }
    }

    /// The client and its event loop: address, credentials, TLS,
    /// keep-alive and packet limit from here, the rest from `session`. The
    /// password is read here and never logged.
    pub fn connect(&self, session: client::Session) -> Result<(Client, Events), MqttError> {
        Ok(client::new(self.endpoint()?, session))
    }

    /// Address, credentials, TLS, keep-alive and packet limit, resolved
    /// (the password read, the TLS configuration built).
    pub fn endpoint(&self) -> Result<client::Endpoint, MqttError> {
        let url = BrokerUrl::parse(&self.url).map_err(|message| MqttError::Setting {
            key: format!("{}.url", self.key),
            message: message.0,
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
        Ok(endpoint)
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
