//! Reads behind the control token on a listener that is not on loopback
//! (`0.0.0.0`, reached through 127.0.0.1): the status page, `/api/state`
//! and `/api/alerts*` answer 401 without the token and 200 with it, over
//! plain HTTP and in a real headless chromium that signs in with the form;
//! `/metrics` and the probes stay open; a 500 names no path; the 11th
//! wrong token within a minute from one address gets 429.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::cdp::{js, Browser};
use crate::common::http::{control_token_file, get_as, CONTROL_TOKEN};
use crate::common::*;
use accelwatch::config::Config;
use accelwatch::daemon::Daemon;

const BROWSER_WAIT: Duration = Duration::from_secs(60);

/// A replay of the demo recording as fast as it goes, evidence kept, the
/// listener on every interface with the test's control token.
fn config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.model.path = repo().join("models/demo.onnx");
    config.input.replay.path = demo_csv();
    config.input.replay.speed = 0.0;
    config.output.jsonl = "off".into();
    config.telemetry.listen = "0.0.0.0:0".parse().unwrap();
    config.telemetry.control_token_file = Some(control_token_file());
    config.detector.evidence_dir = Some(dir.join("evidence").display().to_string());
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    config
}

/// The listener bound on 0.0.0.0, reached through loopback.
async fn start(config: Config) -> (Daemon, SocketAddr) {
    let daemon = Daemon::start(config, Vec::new())
        .await
        .expect("the daemon starts");
    let bound = daemon.telemetry_addr().expect("telemetry enabled");
    assert!(bound.ip().is_unspecified(), "{bound}");
    (daemon, SocketAddr::from(([127, 0, 0, 1], bound.port())))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// One raw HTTP/1.1 request with these extra header lines and body; the
/// status, the head and the body.
async fn raw(
    addr: SocketAddr,
    method: &'static str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("a head");
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, head.to_string(), body.to_string())
    })
    .await
    .unwrap()
}

async fn authorised_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = get_as(addr, path, Some(&bearer(CONTROL_TOKEN))).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path} is JSON ({e}): {body}"))
}

/// Waits until the board holds the whole replay (276 windows) and every
/// raise's evidence is listed; the evidence ids.
async fn wait_for_replay(addr: SocketAddr) -> Vec<String> {
    wait_until(
        Duration::from_secs(60),
        "the replay through the sinks",
        || async {
            let state = authorised_json(addr, "/api/state").await;
            let windows: u64 = state["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["windows"].as_u64().unwrap())
                .sum();
            let raises: u64 = state["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["raises"].as_u64().unwrap())
                .sum();
            let listed = authorised_json(addr, "/api/alerts").await["alerts"]
                .as_array()
                .unwrap()
                .len() as u64;
            windows == 276 && raises >= 2 && listed == raises
        },
    )
    .await;
    authorised_json(addr, "/api/alerts").await["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_reads_need_the_token_errors_name_no_path_and_guessing_is_throttled() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, addr) = start(config(dir.path())).await;
    let ids = wait_for_replay(addr).await;
    let plot = format!("/api/alerts/{}.svg", ids[0]);
    let reads = [
        "/",
        "/api/state",
        "/api/alerts",
        &format!("/api/alerts/{}", ids[0]),
        &plot,
    ];

    for path in reads {
        let (status, body) = get(addr, path).await;
        assert_eq!(status, 401, "{path} without the token: {body}");
        let (status, body) = get_as(addr, path, Some(&bearer(CONTROL_TOKEN))).await;
        assert_eq!(status, 200, "{path} with the token: {body}");
    }
    let (_, head, body) = raw(addr, "GET", "/", "", "").await;
    assert!(
        body.contains("<form method=\"post\" action=\"login\">") && !body.contains("<script"),
        "the page without the token is the sign-in form: {body}"
    );
    assert!(head.contains("form-action 'self'"), "{head}");
    for open in ["/metrics", "/healthz", "/readyz"] {
        let (status, body) = get(addr, open).await;
        assert!(
            status == 200 || status == 503,
            "{open} stays open: {status} {body}"
        );
    }

    // Signing in over plain HTTP: the cookie opens the reads, not control.
    let form = format!("token={CONTROL_TOKEN}");
    let (status, head, _) = raw(addr, "POST", "/login", "", &form).await;
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("a session cookie: {head}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(CONTROL_TOKEN),
        "the cookie is not the token"
    );
    let cookie_line = format!("Cookie: {}\r\n", cookie.split(';').next().unwrap());
    let (status, _, body) = raw(addr, "GET", "/api/state", &cookie_line, "").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = raw(addr, "POST", "/control/calibrate", &cookie_line, "").await;
    assert_eq!(status, 401, "a cookie does not act");

    // A file that cannot be read: a 500 that names nothing on this machine.
    let evidence = dir.path().join("evidence");
    for file in std::fs::read_dir(&evidence).unwrap() {
        let path = file.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            std::fs::write(&path, "{ not evidence").unwrap();
        }
    }
    let (status, body) = get_as(
        addr,
        &format!("/api/alerts/{}", ids[0]),
        Some(&bearer(CONTROL_TOKEN)),
    )
    .await;
    assert_eq!(status, 500, "{body}");
    let error = serde_json::from_str::<Value>(&body).unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !error.contains('/') && !error.contains(&ids[0]) && error.contains("log"),
        "no path, the log says more: {error}"
    );

    // Guessing: ten wrong tokens are 401, the 11th within the minute 429,
    // and the right token from that address waits as well.
    let wrong = bearer("accelwatch-test-token-wrong-guess");
    for i in 1..=10 {
        let path = if i % 2 == 0 { "/api/state" } else { "/" };
        let (status, body) = get_as(addr, path, Some(&wrong)).await;
        assert_eq!(status, 401, "guess {i}: {body}");
    }
    let (status, head, body) = raw(
        addr,
        "GET",
        "/api/state",
        &format!("Authorization: {wrong}\r\n"),
        "",
    )
    .await;
    assert_eq!(status, 429, "the 11th guess: {body}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
    let (status, _) = get_as(addr, "/api/alerts", Some(&bearer(CONTROL_TOKEN))).await;
    assert_eq!(status, 429, "blocked addresses are not checked");
    let (status, _, _) = raw(addr, "POST", "/login", "", &form).await;
    assert_eq!(status, 429, "nor signed in");

    let text = scrape(addr).await;
    let refused = |status: &str| {
        metric(
            &text,
            &format!("accelwatch_http_refused_requests_total{{area=\"page\",status=\"{status}\"}}"),
        )
    };
    // 6 reads without a token and 10 guesses 401, then 3 refusals 429.
    assert_eq!(refused("401"), Some(16.0), "{text}");
    assert_eq!(refused("429"), Some(3.0), "{text}");
    assert_eq!(
        metric(
            &text,
            "accelwatch_http_refused_requests_total{area=\"control\",status=\"401\"}"
        ),
        Some(1.0)
    );
    stop(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_the_browser_signs_in_with_the_token_and_the_page_reads_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, addr) = start(config(dir.path())).await;
    wait_for_replay(addr).await;
    let status_of_page = "performance.getEntriesByType('navigation')[0].responseStatus";
    let shot = dir.path().join("signed-in.png");
    let seen = tokio::task::spawn_blocking(move || {
        let mut b = Browser::open(&format!("http://{addr}/"), (1000, 900));
        b.wait_for(
            "the sign-in form",
            "!!document.getElementById('token')",
            BROWSER_WAIT,
        );
        // The form's policy lets no script fetch; plain HTTP checks the
        // data's 401 (the other test).
        let mut seen = vec![b.eval(status_of_page)];
        b.type_into(
            "document.getElementById('token')",
            "accelwatch-test-token-wrong",
        );
        b.click("document.getElementById('sign-in')");
        b.wait_for(
            "the form again, saying so",
            "!!document.getElementById('error')",
            BROWSER_WAIT,
        );
        seen.push(b.eval(status_of_page));
        b.type_into("document.getElementById('token')", CONTROL_TOKEN);
        b.click("document.getElementById('sign-in')");
        b.wait_for(
            "the status page with its data",
            "document.body.dataset.loaded === 'yes' && \
             document.querySelectorAll('#devices tr').length === 2 && \
             document.body.dataset.alerts === 'yes'",
            BROWSER_WAIT,
        );
        seen.push(b.eval(status_of_page));
        seen.push(b.eval("fetch('api/state').then(r => r.status)"));
        seen.push(b.eval("document.cookie"));
        // The evidence plot loads with the cookie too.
        b.click("document.querySelector('.evidence-link')");
        b.wait_for(
            "the evidence plot",
            "!!document.body.dataset.evidence",
            BROWSER_WAIT,
        );
        seen.push(b.eval(&format!(
            "document.getElementById('evidence-plot').naturalWidth > 0 && {}",
            js("plotted")
        )));
        b.screenshot(&shot);
        seen
    })
    .await
    .expect("the browser task");
    assert_eq!(
        seen,
        [
            json!(401),
            json!(401),
            json!(200),
            json!(200),
            json!(""),
            json!("plotted")
        ],
        "the page: 401, 401 after a wrong token, 200 after the right one; its data 200; \
         the cookie out of the script's reach; the plot drawn"
    );
    stop(daemon).await;
}
