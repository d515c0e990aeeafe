//! The HTTP endpoint: /metrics, /healthz, /readyz, the status page (`/`)
//! with its `/api/state`, the alert evidence (`/api/alerts`), and, when
//! enabled, /control.

use std::net::SocketAddr;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::control::{Control, ControlCommand};

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

/// `POST /control/<command>[?arguments]`: queued for the scorer (202),
/// refused when online training is off (409), an unknown command (404) or
/// bad arguments (400).
async fn control_handler(
    State((metrics, control)): State<(Metrics, Option<Control>)>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> impl IntoResponse {
    let command = match ControlCommand::parse(&name, query.as_deref()) {
        Ok(command) => command,
        Err(error) => {
            let known = crate::control::NAMES.contains(&name.as_str());
            metrics.command(if known { name.as_str() } else { "unknown" }, "invalid");
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
    match &control {
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

/// Binds `addr` (port 0 picks a free one) and serves until `shutdown`
/// resolves; the status page shows `live`. Returns the bound address and
/// the server task.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    control: Option<Control>,
    live: LiveState,
    evidence: Option<EvidenceStore>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(metrics.clone())
        .merge(
            Router::new()
                .route("/", get(super::page::page))
                .route("/api/state", get(super::page::api_state))
                .with_state(StatusState::new(metrics.clone(), live)),
        )
        .merge(
            Router::new()
                .route("/api/alerts", get(super::alerts::list))
                .route("/api/alerts/{id}", get(super::alerts::one))
                .with_state(evidence),
        )
        .merge(
            Router::new()
                .route("/control/{command}", post(control_handler))
                .with_state((metrics, control)),
        );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "telemetry server failed");
        }
    });
    Ok((local, task))
}
