//! `/api/alerts` (the kept evidence, newest first), `/api/alerts/<id>`
//! (one evidence as JSON) and `/api/alerts/<id>.svg` (its plot). Files
//! are read off the runtime's threads; an id that is not one we make is a
//! 404 before any path is built from it.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::evidence::store::{EvidenceError, EvidenceStore};

/// An SVG opened on its own runs no script and loads nothing.
const SVG_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'";

fn not_kept() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({
            "error": "no alert evidence is kept (detector.evidence_dir is off)"
        })),
    )
        .into_response()
}

pub async fn list(State(store): State<Option<EvidenceStore>>) -> Response {
    let Some(store) = store else {
        return (
            [(header::CACHE_CONTROL, "no-store")],
            Json(serde_json::json!({ "enabled": false, "alerts": [] })),
        )
            .into_response();
    };
    let (files, bytes) = store.usage();
    let limits = store.limits();
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({
            "enabled": true,
            "files": files,
            "bytes": bytes,
            "max_count": limits.max_count,
            "max_bytes": limits.max_bytes,
            "alerts": store.list(),
        })),
    )
        .into_response()
}

pub async fn one(State(store): State<Option<EvidenceStore>>, Path(name): Path<String>) -> Response {
    let Some(store) = store else {
        return not_kept();
    };
    let (id, svg) = match name.strip_suffix(".svg") {
        Some(id) => (id.to_string(), true),
        None => (name, false),
    };
    let read = tokio::task::spawn_blocking(move || {
        store.get(&id).map(|evidence| {
            if svg {
                Err(crate::eval::plots_evidence::evidence_plot(&evidence))
            } else {
                Ok(evidence)
            }
        })
    })
    .await;
    match read {
        Ok(Ok(Ok(evidence))) => {
            ([(header::CACHE_CONTROL, "no-cache")], Json(evidence)).into_response()
        }
        Ok(Ok(Err(plot))) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CONTENT_SECURITY_POLICY, SVG_POLICY),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            plot,
        )
            .into_response(),
        Ok(Err(EvidenceError::Unknown { id, .. })) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("no alert evidence {id:?}") })),
        )
            .into_response(),
        // The error names the file; the log says it, the client is told
        // no path of this machine.
        Ok(Err(error)) => {
            tracing::error!(%error, "/api/alerts: the evidence cannot be read");
            server_error("the evidence cannot be read; the daemon's log says why")
        }
        Err(join) => {
            tracing::error!(error = %join, "/api/alerts: the evidence reader failed");
            server_error("the evidence reader failed; the daemon's log says why")
        }
    }
}

fn server_error(message: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}
