//! The door of the HTTP endpoint: who may read the status page, its APIs
//! and `/metrics`, and who may send control commands.
//!
//! Reads (the page, `/api/state`, `/api/alerts*`) carry device ids and raw
//! sensor windows, so beyond loopback they need the control token, unless
//! the operator opens them (`telemetry.public_reads`); `/metrics` is open
//! by its own switch (`telemetry.public_metrics`, on by default, as
//! Prometheus expects). A read presents the token as `Authorization:
//! Bearer`, or as the page's session cookie that the sign-in form
//! ([`super::login`]) sets. Control always needs the bearer header: a
//! cookie, which the browser sends by itself, must not be enough to act.
//! A wrong token counts against the client's address ([`FailedTokens`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use subtle::ConstantTimeEq;

use super::access::{TlsListener, Token};
use super::limiter::FailedTokens;
use super::metrics::Metrics;

/// The page's session cookie: proof of the token, not the token itself.
pub const SESSION_COOKIE: &str = "accelwatch_session";

/// What a request asks for, as the refusal metric names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// `/`, `/api/*`, `/login`.
    Page,
    Metrics,
    Control,
}

impl Area {
    pub const ALL: [Self; 3] = [Self::Page, Self::Metrics, Self::Control];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Page => "page",
            Self::Metrics => "metrics",
            Self::Control => "control",
        }
    }
}

/// The statuses a refusal has: no token configured, none or a wrong one
/// presented, too many wrong ones.
pub const REFUSALS: [StatusCode; 3] = [
    StatusCode::FORBIDDEN,
    StatusCode::UNAUTHORIZED,
    StatusCode::TOO_MANY_REQUESTS,
];

/// The client's address as the connection gave it; our own type, so that
/// the TLS listener can provide it as well.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// The client's IP address; unspecified when the server was built without
/// connection info (then every such client shares one entry).
pub fn peer_ip(request_extensions: &axum::http::Extensions) -> IpAddr {
    request_extensions
        .get::<ConnectInfo<Peer>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0 .0.ip())
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No token is configured, so nobody can be let in.
    NoToken,
    /// No credential, or a wrong one.
    Unauthorized,
    /// Too many wrong tokens from this address: try again after this long.
    TooMany(Duration),
}

impl Refused {
    pub const fn status(self) -> StatusCode {
        match self {
            Self::NoToken => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// What the refusal says, in words.
    pub fn message(self, area: Area) -> String {
        match (self, area) {
            (Self::NoToken, Area::Control) => {
                "control over HTTP is off: set telemetry.control_token_file".into()
            }
            (Self::NoToken, _) => "this listener is not on loopback, so it serves this only \
                 with the control token, and none is configured: set \
                 telemetry.control_token_file (or telemetry.public_reads / public_metrics)"
                .into(),
            (Self::Unauthorized, _) => "a valid Authorization: Bearer token is needed".into(),
            (Self::TooMany(wait), _) => format!(
                "too many wrong tokens from this address: try again in {} s",
                retry_after(wait)
            ),
        }
    }

    /// The refusal as a JSON reply, with the headers its status calls for.
    pub fn response(self, area: Area) -> Response {
        let body = Json(serde_json::json!({ "error": self.message(area) }));
        match self {
            Self::NoToken => (self.status(), body).into_response(),
            Self::Unauthorized => (
                self.status(),
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"accelwatch\"")],
                body,
            )
                .into_response(),
            Self::TooMany(wait) => (
                self.status(),
                [(header::RETRY_AFTER, retry_after(wait).to_string())],
                body,
            )
                .into_response(),
        }
    }
}

/// Whole seconds, rounded up: a client that waits that long is let in.
fn retry_after(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The door: the token, which areas are open, and the failures so far.
#[derive(Clone)]
pub struct Guard {
    token: Option<Token>,
    /// The session cookie's value, derived from the token.
    session: Option<String>,
    open_page: bool,
    open_metrics: bool,
    /// The cookie is marked `Secure` (the listener speaks HTTPS).
    secure: bool,
    failed: FailedTokens,
    metrics: Metrics,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("token", &self.token.is_some())
            .field("open_page", &self.open_page)
            .field("open_metrics", &self.open_metrics)
            .finish_non_exhaustive()
    }
}

/// What the door is told: which areas are open without the token.
#[derive(Debug, Clone, Copy)]
pub struct Openness {
    pub page: bool,
    pub metrics: bool,
    pub secure: bool,
}

impl Guard {
    pub fn new(token: Option<Token>, open: Openness, metrics: Metrics) -> Self {
        for area in Area::ALL {
            for status in REFUSALS {
                metrics.http_refused(area.as_str(), status.as_str(), 0);
            }
        }
        Self {
            session: token.as_ref().map(Token::session_cookie),
            token,
            open_page: open.page,
            open_metrics: open.metrics,
            secure: open.secure,
            failed: FailedTokens::default(),
            metrics,
        }
    }

    pub const fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `area` is served without the token.
    pub const fn is_open(&self, area: Area) -> bool {
        match area {
            Area::Page => self.open_page,
            Area::Metrics => self.open_metrics,
            Area::Control => false,
        }
    }

    /// Lets the request in, or says why not (and counts the refusal). A
    /// bearer token is checked only while its address is not blocked, and
    /// a wrong one is a failure of that address; a wrong cookie is not (it
    /// is a 256-bit digest nobody guesses, and a page left open across a
    /// restart with a new token would lock its own address out).
    pub fn admit(
        &self,
        area: Area,
        headers: &HeaderMap,
        ip: IpAddr,
        now: Instant,
    ) -> Result<(), Refused> {
        if self.is_open(area) {
            return Ok(());
        }
        let verdict = self.verdict(area, headers, ip, now);
        if let Err(refused) = verdict {
            self.refused(area, refused);
        }
        verdict
    }

    fn verdict(
        &self,
        area: Area,
        headers: &HeaderMap,
        ip: IpAddr,
        now: Instant,
    ) -> Result<(), Refused> {
        let Some(token) = &self.token else {
            return Err(Refused::NoToken);
        };
        if area != Area::Control && self.has_session(headers) {
            return Ok(());
        }
        let Some(authorization) = headers.get(header::AUTHORIZATION) else {
            return Err(Refused::Unauthorized);
        };
        self.check_secret(ip, now, || token.admits(Some(authorization.as_bytes())))
    }

    /// A token presented by hand (the sign-in form): checked as a bearer
    /// token is, failures counted.
    pub fn admit_secret(&self, secret: &[u8], ip: IpAddr, now: Instant) -> Result<(), Refused> {
        let verdict = match &self.token {
            None => Err(Refused::NoToken),
            Some(token) => self.check_secret(ip, now, || token.admits_secret(secret)),
        };
        if let Err(refused) = verdict {
            self.refused(Area::Page, refused);
        }
        verdict
    }

    fn check_secret(
        &self,
        ip: IpAddr,
        now: Instant,
        admits: impl FnOnce() -> bool,
    ) -> Result<(), Refused> {
        if let Some(wait) = self.failed.blocked_for(ip, now) {
            return Err(Refused::TooMany(wait));
        }
        if admits() {
            Ok(())
        } else {
            self.failed.failed(ip, now);
            Err(Refused::Unauthorized)
        }
    }

    fn refused(&self, area: Area, refused: Refused) {
        self.metrics
            .http_refused(area.as_str(), refused.status().as_str(), 1);
        if area == Area::Control && matches!(refused, Refused::NoToken | Refused::Unauthorized) {
            self.metrics.control_unauthorized();
        }
    }

    fn has_session(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.session else {
            return false;
        };
        headers
            .get_all(header::COOKIE)
            .iter()
            .flat_map(|value| value.as_bytes().split(|b| *b == b';'))
            .filter_map(|pair| {
                let pair = pair.trim_ascii();
                pair.strip_prefix(SESSION_COOKIE.as_bytes())?
                    .strip_prefix(b"=")
            })
            .any(|value| bool::from(value.ct_eq(expected.as_bytes())))
    }

    /// The `Set-Cookie` value that signs a browser in: for this browser
    /// session only, never readable by a script, never sent by another
    /// site; no `Path`, so it covers the directory the page is served
    /// from (a reverse proxy's prefix included).
    pub fn session_set_cookie(&self) -> Option<String> {
        self.session.as_ref().map(|value| {
            format!(
                "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict{}",
                if self.secure { "; Secure" } else { "" }
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const TOKEN: &str = "0123456789abcdef-token";

    fn guard(open: bool) -> (Guard, Metrics) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, TOKEN).unwrap();
        let token = super::super::access::read_token(&path).unwrap();
        let metrics = Metrics::new();
        let open = Openness {
            page: open,
            metrics: true,
            secure: false,
        };
        (Guard::new(Some(token), open, metrics.clone()), metrics)
    }

    fn headers(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn reads_need_the_bearer_token_or_the_session_cookie_and_control_the_bearer_only() {
        let (guard, metrics) = guard(false);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        let none = HeaderMap::new();
        let bearer = headers(header::AUTHORIZATION, &format!("Bearer {TOKEN}"));
        let cookie_value = guard
            .session_set_cookie()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        assert!(!cookie_value.contains(TOKEN), "the cookie is not the token");
        let cookie = headers(header::COOKIE, &format!("theme=dark; {cookie_value}"));
        assert_eq!(
            guard.admit(Area::Page, &none, ip, now),
            Err(Refused::Unauthorized)
        );
        assert_eq!(guard.admit(Area::Page, &bearer, ip, now), Ok(()));
        assert_eq!(guard.admit(Area::Page, &cookie, ip, now), Ok(()));
        assert_eq!(guard.admit(Area::Metrics, &none, ip, now), Ok(()));
        assert_eq!(guard.admit(Area::Control, &bearer, ip, now), Ok(()));
        assert_eq!(
            guard.admit(Area::Control, &cookie, ip, now),
            Err(Refused::Unauthorized),
            "a cookie the browser sends by itself does not act"
        );
        let forged = headers(header::COOKIE, &format!("{SESSION_COOKIE}={TOKEN}"));
        assert_eq!(
            guard.admit(Area::Page, &forged, ip, now),
            Err(Refused::Unauthorized)
        );
        let text = metrics.render();
        assert!(
            text.contains("accelwatch_http_refused_requests_total{area=\"page\",status=\"401\"} 2"),
            "{text}"
        );
        assert!(text.contains("accelwatch_control_unauthorized_total 1"));

        let (open, _) = self::guard(true);
        assert_eq!(open.admit(Area::Page, &none, ip, now), Ok(()));
        assert_eq!(
            open.admit(Area::Control, &none, ip, now),
            Err(Refused::Unauthorized)
        );
    }

    #[test]
    fn the_eleventh_wrong_token_is_429_and_then_even_the_right_one_waits() {
        let (guard, metrics) = guard(false);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        let wrong = headers(header::AUTHORIZATION, "Bearer 0123456789abcdef-wrong");
        let right = headers(header::AUTHORIZATION, &format!("Bearer {TOKEN}"));
        for i in 0..10u64 {
            let area = if i % 2 == 0 {
                Area::Page
            } else {
                Area::Control
            };
            assert_eq!(
                guard.admit(area, &wrong, ip, t0 + Duration::from_secs(i)),
                Err(Refused::Unauthorized),
                "failure {}",
                i + 1
            );
        }
        let eleventh = t0 + Duration::from_secs(30);
        assert_eq!(
            guard.admit(Area::Page, &wrong, ip, eleventh),
            Err(Refused::TooMany(Duration::from_secs(30)))
        );
        assert!(guard.admit(Area::Control, &right, ip, eleventh).is_err());
        assert_eq!(
            guard.admit_secret(TOKEN.as_bytes(), ip, eleventh),
            Err(Refused::TooMany(Duration::from_secs(30))),
            "the sign-in form waits too"
        );
        // No credential is no guess: 401, as before.
        assert_eq!(
            guard.admit(Area::Page, &HeaderMap::new(), ip, eleventh),
            Err(Refused::Unauthorized)
        );
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(guard.admit(Area::Page, &right, other, eleventh), Ok(()));
        assert_eq!(
            guard.admit(Area::Page, &right, ip, t0 + Duration::from_secs(60)),
            Ok(())
        );
        let response = Refused::TooMany(Duration::from_millis(29_200)).response(Area::Page);
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "30");
        assert!(metrics
            .render()
            .contains("accelwatch_http_refused_requests_total{area=\"page\",status=\"429\"} 2"));
    }

    #[test]
    fn without_a_token_nothing_closed_is_served() {
        let metrics = Metrics::new();
        let open = Openness {
            page: false,
            metrics: false,
            secure: true,
        };
        let guard = Guard::new(None, open, metrics);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for area in Area::ALL {
            assert_eq!(
                guard.admit(area, &HeaderMap::new(), ip, Instant::now()),
                Err(Refused::NoToken)
            );
        }
        assert!(Refused::NoToken
            .message(Area::Page)
            .contains("telemetry.control_token_file"));
        assert!(guard.session_set_cookie().is_none());
    }
}
