//! The status page at `/` and its data at `/api/state`. The page is one
//! embedded file (`status.html`: markup, style and script, no build step,
//! nothing fetched from elsewhere); it polls `/api/state` every second,
//! for the devices that need a look first.
//! Its Content-Security-Policy allows that one script, by hash, and
//! connections to this server only.

use std::sync::OnceLock;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::state::{StateQuery, StatusState};

/// The page, as served.
pub const PAGE: &str = include_str!("status.html");

/// The policy that lets the page's own script run and nothing else.
pub fn content_security_policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        let script = PAGE
            .split_once("<script>")
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map(|(script, _)| script)
            .expect("status.html has one inline <script>");
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script));
        format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        )
    })
}

pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, content_security_policy()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}

/// `GET /api/state[?sort=id|attention&offset=N&limit=N]`; a query it
/// does not understand is a 400 with `{"error"}`.
pub async fn api_state(
    State(state): State<StatusState>,
    RawQuery(query): RawQuery,
) -> axum::response::Response {
    match StateQuery::parse(query.as_deref()) {
        Ok(query) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(state.document(query)),
        )
            .into_response(),
        Err(error) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": format!("/api/state: {error}") })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_one_script_and_the_page_loads_nothing_else() {
        assert_eq!(PAGE.matches("<script").count(), 1, "one inline script");
        let policy = content_security_policy();
        assert!(policy.contains("script-src 'sha256-"), "{policy}");
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(
                !PAGE.contains(sink),
                "device ids go in as text, never {sink}"
            );
        }
        let urls = PAGE.matches("http").count();
        let svg_namespace = PAGE.matches("http://www.w3.org/2000/svg").count();
        assert_eq!(urls, svg_namespace, "nothing fetched from elsewhere");
    }
}
