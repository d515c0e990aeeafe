//! What the MQTT input and output share in their config: authentication,
//! the protocol version, and the checks of a broker's settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How to reach and authenticate to a broker; shared by the MQTT input
/// and output (the output reuses the input's unless it sets `url`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttAuth {
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (a trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The name of an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// PEM CA certificates for `mqtts://`; the system's roots when unset.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, for mutual TLS.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

impl MqttAuth {
    pub fn is_empty(&self) -> bool {
        *self == MqttAuth::default()
    }
}

/// The MQTT protocol version a client speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MqttProtocol {
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    #[serde(rename = "5")]
    V5,
}

pub fn auth_files(auth: &MqttAuth, prefix: &str, check: &mut impl FnMut(bool, &str, String)) {
    let files = [
        ("password_file", &auth.password_file),
        ("ca_file", &auth.ca_file),
        ("client_cert_file", &auth.client_cert_file),
        ("client_key_file", &auth.client_key_file),
    ];
    for (key, file) in files {
        if let Some(path) = file {
            check(
                path.is_file(),
                &format!("{prefix}.{key}"),
                format!("no such file: {}", path.display()),
            );
        }
    }
    if let Some(name) = &auth.password_env {
        check(
            std::env::var_os(name).is_some(),
            &format!("{prefix}.password_env"),
            format!("the environment variable {name} is not set"),
        );
    }
}

pub fn broker_problems(
    url: &str,
    auth: &MqttAuth,
    prefix: &str,
    check: &mut impl FnMut(bool, &str, String),
) {
    if let Err(message) = crate::mqtt::url::BrokerUrl::parse(url) {
        check(false, &format!("{prefix}.url"), message.0);
    }
    check(
        !(auth.password_file.is_some() && auth.password_env.is_some()),
        &format!("{prefix}.auth.password_env"),
        "set password_file or password_env, not both".into(),
    );
    check(
        auth.username.is_some() || (auth.password_file.is_none() && auth.password_env.is_none()),
        &format!("{prefix}.auth.username"),
        "a password needs a username".into(),
    );
    check(
        auth.client_cert_file.is_some() == auth.client_key_file.is_some(),
        &format!("{prefix}.auth.client_key_file"),
        "client_cert_file and client_key_file go together".into(),
    );
}

pub fn qos_problem(qos: u8, key: &str, check: &mut impl FnMut(bool, &str, String)) {
    check(qos <= 1, key, format!("must be 0 or 1, got {qos}"));
}
