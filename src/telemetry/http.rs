//! The HTTP endpoint: /metrics, /healthz, /readyz, the status page (`/`)
//! with its `/api/state`, the alert evidence (`/api/alerts`), and /control
//! for a client that presents the configured bearer token (see
//! [`super::access`]); over TLS when `telemetry.tls` is set.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::control::{Control, ControlCommand};

use axum::extract::Request;
use axum::middleware::{from_fn_with_state, Next};
use axum::response::Response;

use super::access::TlsListener;
use super::config::TelemetryConfig;
use super::guard::{peer_ip, Area, Guard, Openness, Peer};

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

/// What `/control` needs: where commands go (the guard in front of it
/// has checked the token).
#[derive(Clone)]
struct ControlState {
    metrics: Metrics,
    control: Option<Control>,
}

/// `GET /control`: the guard's 403 or 401, or 200 `{"authorised":true}`
/// with the right token, so that the status page shows its actions only
/// to a client that holds it. It runs nothing.
async fn control_check() -> axum::response::Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "authorised": true })),
    )
        .into_response()
}

/// `POST /control/<command>[?arguments]`: past the guard (403 when no
/// token is configured, 401 without the right `Authorization: Bearer`
/// token, 429 after too many wrong ones, all before anything else),
/// queued for the scorer (202), refused when online training is off
/// (409), an unknown command (404) or bad arguments (400).
async fn control_handler(
    State(ControlState { metrics, control }): State<ControlState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> axum::response::Response {
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

/// The middleware in front of the page's routes and `/metrics`: the area
/// is the one the route was layered with. An unauthorised request for the
/// page itself gets the sign-in form instead of JSON.
async fn guard_area(
    State((guard, area)): State<(Guard, Area)>,
    request: Request,
    next: Next,
) -> Response {
    let ip = peer_ip(request.extensions());
    match guard.admit(area, request.headers(), ip, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(refused) if area == Area::Page && request.uri().path() == "/" => {
            super::login::page(refused, false)
        }
        Err(refused) => refused.response(area),
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
    let guard = Guard::new(
        token,
        Openness {
            page: settings.reads_open(),
            metrics: settings.metrics_open(),
            secure: tls.is_some(),
        },
        metrics.clone(),
    );
    let door = |area: Area| from_fn_with_state((guard.clone(), area), guard_area);
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route_layer(door(Area::Metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(metrics.clone())
        .merge(
            Router::new()
                .route("/", get(super::page::page))
                .route("/api/state", get(super::page::api_state))
                .with_state(StatusState::new(metrics.clone(), live).with_control(
                    super::state::ControlStatus {
                        enabled: guard.has_token(),
                        online: control.is_some(),
                    },
                ))
                .merge(
                    Router::new()
                        .route("/api/alerts", get(super::alerts::list))
                        .route("/api/alerts/{id}", get(super::alerts::one))
                        .with_state(evidence),
                )
                .route_layer(door(Area::Page)),
        )
        .merge(
            Router::new()
                .route("/login", post(super::login::login))
                .with_state(guard.clone()),
        )
        .merge(
            Router::new()
                .route("/control", get(control_check))
                .route("/control/{command}", post(control_handler))
                .with_state(ControlState { metrics, control })
                .route_layer(door(Area::Control)),
        )
        .into_make_service_with_connect_info::<Peer>();
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
