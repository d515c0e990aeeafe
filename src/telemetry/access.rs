//! Who may use the HTTP endpoint: the bearer token of `/control/*` and the
//! optional TLS of the listener (rustls with the ring provider, as for
//! MQTT), with an accept loop that keeps slow handshakes off the others.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use serde::{Deserialize, Serialize};

/// `[telemetry.tls]`: serve HTTPS with this certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryTls {
    /// PEM: the server certificate, then its chain.
    pub cert_file: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// The shortest token accepted: a guessable one would make the check moot.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Handshakes in progress at once; more connections wait in the kernel's
/// backlog.
const MAX_HANDSHAKES: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

crate::reason::reason_error!(
    /// Why the token file is unusable.
    TokenError
);

/// The control token, kept as its digest: comparing digests in constant
/// time hides the token's length as well as its bytes.
#[derive(Clone)]
pub struct Token(Arc<[u8; 32]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    fn new(token: &str) -> Self {
        Self(Arc::new(Sha256::digest(token.as_bytes()).into()))
    }

    /// Whether an `Authorization` header value carries this token.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some(presented) = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
        else {
            return false;
        };
        self.admits_secret(presented)
    }

    /// Whether `presented` (surrounding white space ignored) is the token.
    pub fn admits_secret(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.trim_ascii()).into();
        digest[..].ct_eq(&self.0[..]).into()
    }

    /// The value of the status page's session cookie: a digest of the
    /// token's digest under a label of its own, so the cookie proves the
    /// token without being it (a leaked cookie reads the page, it cannot
    /// send a command), and a new token ends every session.
    pub fn session_cookie(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(b"accelwatch status page session\0");
        hash.update(&self.0[..]);
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Reads the token file: one token of at least [`MIN_TOKEN_CHARS`]
/// visible ASCII characters, surrounding white space ignored.
pub fn read_token(path: &Path) -> Result<Token, TokenError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TokenError(format!("cannot read {}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError(format!("{} is empty", path.display())));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError(format!(
            "{}: the token must be visible ASCII without spaces (e.g. openssl rand -hex 32)",
            path.display()
        )));
    }
    if token.len() < MIN_TOKEN_CHARS {
        return Err(TokenError(format!(
            "{}: the token has {} characters, at least {MIN_TOKEN_CHARS} are needed \
             (e.g. openssl rand -hex 32)",
            path.display(),
            token.len()
        )));
    }
    Ok(Token::new(token))
}

/// A TLS file that cannot be used, with its key.
#[derive(Debug)]
pub struct TlsError {
    pub key: &'static str,
    pub message: String,
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The server's rustls configuration from its PEM files.
pub fn server_config(tls: &TelemetryTls) -> Result<rustls::ServerConfig, TlsError> {
    let read = |key: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| TlsError {
            key,
            message: format!("cannot read {}: {e}", path.display()),
        })
    };
    let cert_key = "telemetry.tls.cert_file";
    let key_key = "telemetry.tls.key_file";
    let pem = read(cert_key, &tls.cert_file)?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError {
            key: cert_key,
            message: format!("{}: {e}", tls.cert_file.display()),
        })?;
    if chain.is_empty() {
        return Err(TlsError {
            key: cert_key,
            message: format!("no PEM certificate in {}", tls.cert_file.display()),
        });
    }
    let pem = read(key_key, &tls.key_file)?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| TlsError {
            key: key_key,
            message: format!("no PEM private key in {}", tls.key_file.display()),
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            key: cert_key,
            message: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError {
            key: key_key,
            message: format!("does not fit the certificate: {e}"),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A TCP listener whose connections are TLS-terminated before axum sees
/// them. Handshakes run as tasks of their own, so one that stalls delays
/// nobody else; one that fails or takes over [`HANDSHAKE_TIMEOUT`] is
/// dropped.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: rustls::ServerConfig) -> Self {
        Self {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_HANDSHAKES => {
                    match accepted {
                        Ok((stream, addr)) => {
                            let acceptor = self.acceptor.clone();
                            self.handshakes.spawn(async move {
                                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(tls)) => Some((tls, addr)),
                                    Ok(Err(error)) => {
                                        tracing::debug!(%addr, %error, "TLS handshake failed");
                                        None
                                    }
                                    Err(_) => None,
                                }
                            });
                        }
                        // Out of file descriptors and the like: wait a little,
                        // as axum's own listener does.
                        Err(error) => {
                            tracing::warn!(%error, "telemetry: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef-token\n").unwrap();
        let token = read_token(&path).unwrap();
        assert!(token.admits(Some(b"Bearer 0123456789abcdef-token")));
        assert!(token.admits(Some(b"bearer 0123456789abcdef-token ")));
        for wrong in [
            &b"Bearer 0123456789abcdef-toke"[..],
            b"Bearer 0123456789abcdef-tokenX",
            b"Basic 0123456789abcdef-token",
            b"0123456789abcdef-token",
            b"Bearer ",
            b"",
        ] {
            assert!(
                !token.admits(Some(wrong)),
                "{}",
                String::from_utf8_lossy(wrong)
            );
        }
        assert!(!token.admits(None));
        assert!(!format!("{token:?}").contains("0123"), "never printed");
    }

    #[test]
    fn token_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        assert!(read_token(&path).unwrap_err().0.contains("cannot read"));
        for (text, says) in [
            ("\n", "empty"),
            ("0123456789 abcdef\n", "visible ASCII"),
            ("0123456789\n", "at least 16"),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = read_token(&path).unwrap_err().0;
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }
}
