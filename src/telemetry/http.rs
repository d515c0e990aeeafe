//! The HTTP endpoint: /metrics, /healthz, /readyz, the status page (`/`)
//! with its `/api/state`, the alert evidence (`/api/alerts`), and /control
//! for a client that presents the configured bearer token (see
//! [`super::access`]); over TLS when `telemetry.tls` is set.

use std::net::SocketAddr;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::control::{Control, ControlCommand};

use super::access::{TlsListener, Token};
use super::config::TelemetryConfig;

use super::live::LiveState;
use super::metrics::Metrics;
use super::state::StatusState;
use crate::evidence::store::EvidenceStore;

async fn metrics_handler(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(metrics): State<Metrics>) -> impl IntoResponse {
    let readiness = metrics.readiness();
    let status = if readiness.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({
            "ready": readiness.ready(),
            "reason": readiness.reason(),
            "model": readiness.model,
            "pipeline": readiness.pipeline,
            "input": {
                "kind": readiness.input_kind,
                "connected": readiness.input_connected,
            },
            "subscribed": readiness.input_subscribed,
            "calibrating": {
                "scopes": readiness.calibrating,
                "first": readiness.calibrating_first,
                "ready_while_calibrating": readiness.ready_while_calibrating,
            },
        })),
    )
}

/// What `/control` needs: the token it asks for (none: control over HTTP
/// is off) and where commands go.
#[derive(Clone)]
struct ControlState {
    metrics: Metrics,
    control: Option<Control>,
    token: Option<Token>,
}

/// The token check both control routes make: the refusal, if any (403
/// when no token is configured, 401 without the right `Authorization:
/// Bearer` token; both counted).
fn refusal(
    metrics: &Metrics,
    token: Option<&Token>,
    headers: &HeaderMap,
) -> Option<axum::response::Response> {
    let Some(token) = token else {
        metrics.control_unauthorized();
        return Some(
            (
                StatusCode::FORBIDDEN,
                Json(serde_json::json!({
                    "error": "control over HTTP is off: set telemetry.control_token_file"
                })),
            )
                .into_response(),
        );
    };
    if !token.admits(
        headers
            .get(header::AUTHORIZATION)
            .map(axum::http::HeaderValue::as_bytes),
    ) {
        metrics.control_unauthorized();
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"accelwatch\"")],
                Json(
                    serde_json::json!({ "error": "a valid Authorization: Bearer token is needed" }),
                ),
            )
                .into_response(),
        );
    }
    None
}

/// `GET /control`: whether the token presented is the right one (200
/// `{"authorised":true}`, or 401 / 403 as for a command), so that the
/// status page shows its actions only to a client that holds it. It runs
/// nothing.
async fn control_check(
    State(ControlState { metrics, token, .. }): State<ControlState>,
    headers: HeaderMap,
) -> axum::response::Response {
    refusal(&metrics, token.as_ref(), &headers).unwrap_or_else(|| {
        (
            [(header::CACHE_CONTROL, "no-store")],
            Json(serde_json::json!({ "authorised": true })),
        )
            .into_response()
    })
}

/// `POST /control/<command>[?arguments]`: 403 when no token is configured,
/// 401 without the right `Authorization: Bearer` token (checked before
/// anything else), then queued for the scorer (202), refused when online
/// training is off (409), an unknown command (404) or bad arguments (400).
async fn control_handler(
    State(ControlState {
        metrics,
        control,
        token,
    }): State<ControlState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> axum::response::Response {
    if let Some(refused) = refusal(&metrics, token.as_ref(), &headers) {
        return refused;
    }
    command_response(&metrics, control.as_ref(), &name, query.as_deref()).into_response()
}

fn command_response(
    metrics: &Metrics,
    control: Option<&Control>,
    name: &str,
    query: Option<&str>,
) -> impl IntoResponse {
    let command = match ControlCommand::parse(name, query) {
        Ok(command) => command,
        Err(error) => {
            let known = crate::control::NAMES.contains(&name);
            metrics.command(if known { name } else { "unknown" }, "invalid");
            let status = if known {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::NOT_FOUND
            };
            return (
                status,
                Json(serde_json::json!({ "error": error.to_string() })),
            );
        }
    };
    let name = command.as_str();
    match control {
        Some(control) if control.send(command) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "accepted": name })),
        ),
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": "shutting down" })),
        ),
        None => {
            metrics.command(name, "refused");
            (
                StatusCode::CONFLICT,
                Json(serde_json::json!({
                    "error": "control needs training.mode = \"online\" and model.dir"
                })),
            )
        }
    }
}

/// Binds `settings.listen` (port 0 picks a free one) and serves until
/// `shutdown` resolves; the status page shows `live`. Returns the bound
/// address and the server task. The token and TLS files are read here: a
/// problem with them is an `InvalidInput` error naming the key.
pub async fn serve(
    settings: &TelemetryConfig,
    metrics: Metrics,
    control: Option<Control>,
    live: LiveState,
    evidence: Option<EvidenceStore>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    let token = match &settings.control_token_file {
        Some(path) => Some(
            super::access::read_token(path)
                .map_err(|e| invalid(format!("telemetry.control_token_file: {e}")))?,
        ),
        None => None,
    };
    let tls = match &settings.tls {
        Some(tls) => Some(super::access::server_config(tls).map_err(|e| invalid(e.to_string()))?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    let local = listener.local_addr()?;
    for warning in settings.warnings() {
        tracing::warn!(%warning, "telemetry");
    }
    if token.is_none() {
        tracing::info!("control over HTTP is off (no telemetry.control_token_file)");
    }
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(metrics.clone())
        .merge(
            Router::new()
                .route("/", get(super::page::page))
                .route("/api/state", get(super::page::api_state))
                .with_state(StatusState::new(metrics.clone(), live).with_control(
                    super::state::ControlStatus {
                        enabled: token.is_some(),
                        online: control.is_some(),
                    },
                )),
        )
        .merge(
            Router::new()
                .route("/api/alerts", get(super::alerts::list))
                .route("/api/alerts/{id}", get(super::alerts::one))
                .with_state(evidence),
        )
        .merge(
            Router::new()
                .route("/control", get(control_check))
                .route("/control/{command}", post(control_handler))
                .with_state(ControlState {
                    metrics,
                    control,
                    token,
                }),
        );
    let task = tokio::spawn(async move {
        let served = match tls {
            Some(tls) => {
                axum::serve(TlsListener::new(listener, tls), app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "telemetry server failed");
        }
    });
    Ok((local, task))
}
