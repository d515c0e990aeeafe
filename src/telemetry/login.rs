//! Signing a browser in to the status page when reads need the token: `/`
//! answers a small form (no script, so its policy allows none) that posts
//! the token to `/login`; the right token sets the session cookie of
//! [`Guard::session_set_cookie`] and sends the browser back to the page,
//! whose own requests (`/api/state`, the evidence plots) then carry the
//! cookie. A wrong token counts against the address like a wrong bearer
//! token.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::guard::{peer_ip, Guard, Refused};

/// The form needs to post to this server only and load nothing.
const LOGIN_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                            base-uri 'none'; frame-ancestors 'none'";

/// A form body is a token and its encoding; anything longer is not one.
const MAX_BODY: usize = 4096;

const HEAD: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>accelwatch: sign in</title>
<style>
  body { margin: 0; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color: #1d2430; background: #f6f7f9; }
  main { max-width: 34em; margin: 3em auto; padding: 1em 1.2em; background: #fff;
         border: 1px solid #d9dee6; border-radius: 8px; }
  h1 { font-size: 1.2em; margin: 0 0 .5em; }
  p { color: #5d6b7e; }
  p.error { color: #c0262d; font-weight: 600; }
  form { display: flex; flex-wrap: wrap; gap: .5em; }
  input, button { font: inherit; padding: .35em .6em; min-height: 2.2em; border-radius: 6px;
                  border: 1px solid #d9dee6; }
  input { flex: 1 1 16em; }
  button { background: #2458b3; color: #fff; border-color: #2458b3; cursor: pointer; }
</style>
</head>
<body>
<main>
<h1>accelwatch</h1>
"#;

const FORM: &str = r#"<form method="post" action="login">
  <input id="token" name="token" type="password" autocomplete="current-password" required
         aria-label="control token" placeholder="the control token" autofocus>
  <button id="sign-in" type="submit">sign in</button>
</form>
"#;

const TAIL: &str = "</main>\n</body>\n</html>\n";

/// The sign-in page for a refused request: the form with what went wrong,
/// or, with no token configured, what the operator has to set.
pub fn page(refused: Refused, attempted: bool) -> Response {
    let (lead, error, form) = match refused {
        Refused::NoToken => (
            "This daemon's listener is not on loopback, so it shows the status page only \
             to a client with the control token, and none is configured. Set \
             telemetry.control_token_file (or telemetry.public_reads = true) and restart it.",
            String::new(),
            false,
        ),
        Refused::Unauthorized => (
            "This daemon shows its status page beyond loopback only to a client with the \
             control token (the contents of telemetry.control_token_file). The browser keeps \
             the sign-in until it closes.",
            if attempted {
                "That is not the token.".to_string()
            } else {
                String::new()
            },
            true,
        ),
        Refused::TooMany(_) => (
            "This daemon shows its status page beyond loopback only to a client with the \
             control token.",
            refused.message(super::guard::Area::Page),
            true,
        ),
    };
    let mut html = String::from(HEAD);
    html.push_str(&format!("<p>{lead}</p>\n"));
    if !error.is_empty() {
        html.push_str(&format!("<p class=\"error\" id=\"error\">{error}</p>\n"));
    }
    if form {
        html.push_str(FORM);
    }
    html.push_str(TAIL);
    let mut response = (
        refused.status(),
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, LOGIN_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response();
    if let Refused::TooMany(_) = refused {
        let api = refused.response(super::guard::Area::Page);
        if let Some(wait) = api.headers().get(header::RETRY_AFTER) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, wait.clone());
        }
    }
    response
}

/// `POST /login` with `token=<token>` (a form): 303 back to the page with
/// the session cookie, or the form again (401, 429, or 403 without a
/// configured token).
pub async fn login(State(guard): State<Guard>, request: Request) -> Response {
    let ip = peer_ip(request.extensions());
    let Ok(body) = axum::body::to_bytes(request.into_body(), MAX_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "a token is not that long\n").into_response();
    };
    let token = form_field(&body, b"token").unwrap_or_default();
    match guard.admit_secret(&token, ip, Instant::now()) {
        Ok(()) => {
            let cookie = guard
                .session_set_cookie()
                .expect("admitted, so a token is configured");
            (
                StatusCode::SEE_OTHER,
                [
                    // Relative: the page is wherever this form was, behind a
                    // reverse proxy's prefix too.
                    (header::LOCATION, "./".to_string()),
                    (header::SET_COOKIE, cookie),
                    (header::CACHE_CONTROL, "no-store".to_string()),
                ],
            )
                .into_response()
        }
        Err(refused) => page(refused, true),
    }
}

/// The value of `name` in an `application/x-www-form-urlencoded` body,
/// decoded.
fn form_field(body: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let value = body
        .split(|b| *b == b'&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix(b"="))?;
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < value.len() => match (hex(value[i + 1]), hex(value[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(
            form_field(b"token=abc%2Bdef%3d+x", b"token").unwrap(),
            b"abc+def= x"
        );
        assert_eq!(
            form_field(b"other=1&token=t%zz%4", b"token").unwrap(),
            b"t%zz%4"
        );
        assert_eq!(form_field(b"tokens=1", b"token"), None);
        assert_eq!(form_field(b"", b"token"), None);
    }

    #[test]
    fn the_form_posts_here_and_runs_no_script() {
        let response = page(Refused::Unauthorized, true);
        assert_eq!(response.status(), 401);
        let policy = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(policy.contains("default-src 'none'") && !policy.contains("script-src"));
        assert!(policy.contains("form-action 'self'"));
        assert!(HEAD.contains("<title>") && !HEAD.contains("<script") && !FORM.contains("<script"));
        let forbidden = page(Refused::NoToken, false);
        assert_eq!(forbidden.status(), 403);
        let wait = page(Refused::TooMany(std::time::Duration::from_secs(5)), true);
        assert_eq!(wait.status(), 429);
        assert_eq!(wait.headers()[header::RETRY_AFTER], "5");
    }
}
