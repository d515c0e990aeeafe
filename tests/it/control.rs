//! HTTP control and who may use it: off without a token, 401 without the
//! right bearer token, the token file checked by `validate` and `run`
//! (exit 78), a warning for a listener beyond loopback, and the whole
//! endpoint over real TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use accelwatch::config::{Config, TelemetryTls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::pki::make_pki;
use crate::common::*;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A daemon replaying demo.csv in a loop (it runs until stopped).
fn looping() -> Config {
    let mut config = Config::default();
    config.model.path = repo().join("models/demo.onnx");
    config.input.replay.path = demo_csv();
    config.input.replay.repeat = true;
    config.output.jsonl = "off".into();
    config.telemetry.listen = "127.0.0.1:0".parse().unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_control_is_off_without_a_token() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let daemon = accelwatch::daemon::Daemon::start(looping(), Vec::new())
            .await
            .unwrap();
        let addr = daemon.telemetry_addr().unwrap();
        for path in [
            "/control/retrain",
            "/control/rollback",
            "/control/format-disk",
        ] {
            let (status, body) = post(addr, path).await;
            assert_eq!(status, 403, "{path}: {body}");
            assert!(body.contains("telemetry.control_token_file"), "{body}");
        }
        let bearer = format!("Bearer {CONTROL_TOKEN}");
        let (status, body) = get_as(addr, "/control", Some(&bearer)).await;
        assert_eq!(status, 403, "the token check too: {body}");
        assert_eq!(get(addr, "/healthz").await.0, 200, "the rest is served");
        assert_eq!(
            metric(&scrape(addr).await, "accelwatch_control_unauthorized_total"),
            Some(4.0)
        );
        stop(daemon).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_asked_for_before_anything_else() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut config = looping();
        config.telemetry.control_token_file = Some(control_token_file());
        let daemon = accelwatch::daemon::Daemon::start(config, Vec::new())
            .await
            .unwrap();
        let addr = daemon.telemetry_addr().unwrap();
        let wrong = format!("Bearer {}x", CONTROL_TOKEN);
        let short = format!("Bearer {}", &CONTROL_TOKEN[..CONTROL_TOKEN.len() - 1]);
        for authorization in [None, Some(wrong.as_str()), Some(short.as_str())] {
            for path in ["/control/retrain", "/control/format-disk"] {
                let (status, body) = post_as(addr, path, authorization).await;
                assert_eq!(status, 401, "{path} {authorization:?}: {body}");
            }
        }
        // GET /control checks a token and runs nothing.
        for authorization in [None, Some(wrong.as_str())] {
            assert_eq!(get_as(addr, "/control", authorization).await.0, 401);
        }
        let bearer = format!("Bearer {CONTROL_TOKEN}");
        let (status, body) = get_as(addr, "/control", Some(&bearer)).await;
        assert_eq!((status, body.as_str()), (200, r#"{"authorised":true}"#));
        // With the token, the command itself is judged: online training is
        // off here (409), and an unknown command is unknown (404).
        assert_eq!(post(addr, "/control/retrain").await.0, 409);
        assert_eq!(post(addr, "/control/format-disk").await.0, 404);
        assert_eq!(
            metric(&scrape(addr).await, "accelwatch_control_unauthorized_total"),
            Some(8.0)
        );
        stop(daemon).await;
    })
    .await
    .expect("test timed out");
}

/// One HTTP/1.1 request over TLS, trusting only `ca`; the status and body.
async fn https(
    addr: SocketAddr,
    ca: &std::path::Path,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> (u16, String) {
    let pem = std::fs::read(ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("the TLS handshake");
    let authorization = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    tls.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Content-Length: 0\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    // A close_notify-less end of stream is fine for a test.
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_over_tls() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        make_pki(dir.path(), "ca");
        let mut config = looping();
        config.telemetry.control_token_file = Some(control_token_file());
        config.telemetry.tls = Some(TelemetryTls {
            cert_file: dir.path().join("ca-server.pem"),
            key_file: dir.path().join("ca-server.key"),
        });
        let daemon = accelwatch::daemon::Daemon::start(config, Vec::new())
            .await
            .unwrap();
        let addr = daemon.telemetry_addr().unwrap();
        let ca = dir.path().join("ca.pem");
        let (status, body) = https(addr, &ca, "GET", "/healthz", None).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = https(addr, &ca, "GET", "/metrics", None).await;
        assert_eq!(status, 200);
        assert!(body.contains("accelwatch_frames_total"), "{body}");
        assert_eq!(
            https(addr, &ca, "POST", "/control/retrain", None).await.0,
            401
        );
        let bearer = format!("Bearer {CONTROL_TOKEN}");
        assert_eq!(
            https(addr, &ca, "POST", "/control/retrain", Some(&bearer))
                .await
                .0,
            409
        );
        // A stalled handshake holds nobody else up.
        let stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert_eq!(https(addr, &ca, "GET", "/healthz", None).await.0, 200);
        drop(stalled);
        // Plain HTTP gets no HTTP answer from a TLS listener.
        let plain = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            got
        })
        .await
        .unwrap();
        assert!(
            !plain.starts_with(b"HTTP/"),
            "{}",
            String::from_utf8_lossy(&plain)
        );
        stop(daemon).await;
    })
    .await
    .expect("test timed out");
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn validate_and_run_refuse_an_unusable_token_file_and_warn_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    let cfg = dir.path().join("control.toml");
    let config = |token_line: &str, listen: &str| {
        format!(
            "[input.replay]\npath = {:?}\n[model]\npath = {:?}\n[output]\njsonl = \"off\"\n\
             [telemetry]\nlisten = \"{listen}\"\n{token_line}\n",
            demo_csv(),
            repo().join("models/demo.onnx"),
        )
    };
    let line = format!("control_token_file = {token:?}");
    for (contents, says) in [(None, "cannot read"), (Some("\n"), "empty")] {
        let _ = std::fs::remove_file(&token);
        if let Some(contents) = contents {
            write(&token, contents);
        }
        write(&cfg, &config(&line, "127.0.0.1:0"));
        for command in ["validate", "run"] {
            let out = accelwatch().args([command, "--config"]).arg(&cfg).run();
            assert_eq!(out.status.code(), Some(78), "{command}: {}", stderr(&out));
            let text = stderr(&out);
            assert!(
                text.contains("telemetry.control_token_file") && text.contains(says),
                "{command}: {text}"
            );
        }
    }
    write(&token, &format!("{CONTROL_TOKEN}\n"));
    write(&cfg, &config(&line, "0.0.0.0:0"));
    let out = accelwatch().args(["validate", "--config"]).arg(&cfg).run();
    assert!(out.status.success(), "a warning only: {}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("warning: telemetry.listen") && text.contains("beyond this machine"),
        "{text}"
    );
    assert!(
        text.contains("warning: telemetry.control_token_file") && text.contains("chmod 600"),
        "the token file is readable by all: {text}"
    );
    write(&cfg, &config("", "127.0.0.1:0"));
    let out = accelwatch().args(["validate", "--config"]).arg(&cfg).run();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}
