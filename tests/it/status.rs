//! The status page and `/api/state`: a daemon replays the shipped demo
//! recording; what `/api/state` says matches `/metrics` and the JSON lines;
//! the page, opened in a real headless chromium, shows the same devices
//! and alert states; device ids with markup in them are shown as text; and
//! `accelwatch demo` serves the page while it runs.
//!
//! `ACCELWATCH_SCREENSHOT_DOCS=1` also writes the screenshot to
//! docs/status-page.png.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::common::browser::{dump_dom, screenshot};
use crate::common::*;
use accelwatch::config::Config;
use accelwatch::daemon::Daemon;

/// A daemon replaying `data` once, as fast as it can, with the shipped
/// demo model, JSON lines in `dir`, and telemetry on a free port.
fn replay_config(dir: &std::path::Path, data: std::path::PathBuf) -> Config {
    let mut config = Config::default();
    config.model.path = repo().join("models/demo.onnx");
    config.input.replay.path = data;
    config.input.replay.speed = 0.0;
    config.output.jsonl = dir.join("out.jsonl").display().to_string();
    config.telemetry.listen = "127.0.0.1:0".parse().unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    config
}

async fn api_state(addr: SocketAddr) -> Value {
    let (status, body) = get(addr, "/api/state").await;
    assert_eq!(status, 200, "/api/state: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/api/state is JSON ({e}): {body}"))
}

/// Waits until the page's board holds `windows` windows: the replay has
/// gone through every sink (the live sink writes after the JSON lines).
async fn wait_for_windows(addr: SocketAddr, windows: u64) -> Value {
    wait_until(
        Duration::from_secs(60),
        &format!("/api/state to hold {windows} windows"),
        || async {
            let state = api_state(addr).await;
            let rows: u64 = state["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["windows"].as_u64().unwrap())
                .sum();
            rows == windows
        },
    )
    .await;
    api_state(addr).await
}

fn json_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `<tr>` of the page's device table whose device cell reads `cell`
/// (as serialised text, i.e. escaped).
fn row_of<'a>(dom: &'a str, cell: &str) -> &'a str {
    let needle = format!("<td class=\"device\">{cell}</td>");
    let at = dom
        .find(&needle)
        .unwrap_or_else(|| panic!("no row for {cell:?} on the page:\n{dom}"));
    let start = dom[..at].rfind("<tr").expect("a row");
    let end = at + dom[at..].find("</tr>").expect("the row ends");
    &dom[start..end]
}

/// Runs the browser off the runtime that serves the page.
async fn in_browser<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("the browser task")
}

/// Like the page's `num()` for values between 1e-3 and 1e4.
fn shown(x: f64) -> String {
    assert!(
        (1e-3..1e4).contains(&x.abs()),
        "{x} is shown in exponent form"
    );
    format!("{x:.3}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_what_the_metrics_and_the_json_lines_say() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(replay_config(dir.path(), demo_csv()), Vec::new())
        .await
        .expect("the daemon starts");
    let addr = daemon.telemetry_addr().expect("telemetry enabled");
    let state = wait_for_windows(addr, 276).await;
    let text = scrape(addr).await;
    let lines = json_lines(&dir.path().join("out.jsonl"));

    // Totals: the state, the metrics and the lines agree.
    assert_eq!(state["windows"], 276);
    assert_eq!(metric(&text, "accelwatch_windows_total"), Some(276.0));
    assert_eq!(state["input"]["kind"], "replay");
    assert_eq!(state["input"]["connected"], true);
    assert_eq!(
        state["input"]["messages"].as_f64(),
        metric(&text, "accelwatch_frames_total")
    );
    assert_eq!(
        state["input"]["samples"].as_f64(),
        metric(&text, "accelwatch_samples_total")
    );
    let devices = state["devices"].as_array().unwrap();
    let in_alert = devices.iter().filter(|d| d["alert"] == true).count();
    assert_eq!(state["alerts_active"].as_u64(), Some(in_alert as u64));
    assert_eq!(
        metric(&text, "accelwatch_alerts_active"),
        Some(in_alert as f64)
    );
    let raises: u64 = devices.iter().map(|d| d["raises"].as_u64().unwrap()).sum();
    assert!(raises >= 2, "ABD/FEL/TRAP raise alerts: {state}");
    assert_eq!(
        metric(&text, "accelwatch_alerts_total{event=\"raise\"}"),
        Some(raises as f64)
    );

    // The model: as /metrics has it.
    let models = state["models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "{state}");
    let fleet = &models[0];
    assert_eq!(fleet["scope"], "fleet");
    assert_eq!(fleet["state"], "serving");
    let id = fleet["id"].as_str().unwrap();
    assert_eq!(
        metric(
            &text,
            &format!("accelwatch_model_info{{id=\"{id}\",scope=\"fleet\",variant=\"basic\"}}")
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        fleet["threshold"].as_f64(),
        metric(&text, "accelwatch_model_threshold{scope=\"fleet\"}")
    );

    // Each device: its last window, its count, its last raise and its last
    // scores, as the JSON lines have them.
    let mut by_device: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for line in &lines {
        if let Some(device) = line["device"].as_str() {
            by_device.entry(device).or_default().push(line);
        }
    }
    assert_eq!(
        devices
            .iter()
            .map(|d| d["device"].as_str().unwrap())
            .collect::<Vec<_>>(),
        by_device.keys().copied().collect::<Vec<_>>(),
        "one row per device, by id"
    );
    for row in devices {
        let device = row["device"].as_str().unwrap();
        let windows: Vec<&Value> = by_device[device]
            .iter()
            .copied()
            .filter(|l| l["type"] == "window")
            .collect();
        let last = windows.last().unwrap();
        assert_eq!(row["windows"].as_u64(), Some(windows.len() as u64));
        for (key, line_key) in [
            ("seq", "seq"),
            ("score", "score"),
            ("threshold", "threshold"),
            ("alert", "anomaly"),
            ("over_threshold", "over_threshold"),
            ("t_end", "t_end"),
            ("model", "model"),
        ] {
            assert_eq!(row[key], last[line_key], "{device} {key}");
        }
        let scores: Vec<&Value> = windows.iter().map(|w| &w["score"]).collect();
        let kept = scores.len().min(120);
        assert_eq!(
            row["scores"].as_array().unwrap().iter().collect::<Vec<_>>(),
            scores[scores.len() - kept..].to_vec(),
            "{device}: the last 120 scores, oldest first"
        );
        let raise = by_device[device]
            .iter()
            .rev()
            .find(|l| l["type"] == "alert" && l["event"] == "raise");
        match raise {
            Some(raise) => {
                let last_raise = &row["last_raise"];
                assert_eq!(last_raise["seq"], raise["seq"], "{device}");
                assert_eq!(last_raise["t"], raise["t"], "{device}");
                assert_eq!(last_raise["score"], raise["score"], "{device}");
                assert!(last_raise["at_ms"].as_f64().unwrap() > 1.6e12, "wall clock");
            }
            None => assert!(row["last_raise"].is_null(), "{device}"),
        }
    }

    // The page, in a real browser, shows the same rows and states.
    let url = format!("http://{addr}/");
    let dom = in_browser({
        let url = url.clone();
        move || dump_dom(&url, 5000)
    })
    .await;
    assert!(
        dom.contains("data-loaded=\"yes\""),
        "the page read /api/state:\n{dom}"
    );
    assert!(dom.contains("<b>basic-"), "the model is shown:\n{dom}");
    for row in devices {
        let device = row["device"].as_str().unwrap();
        let tr = row_of(&dom, device);
        let alert = row["alert"] == true;
        assert_eq!(tr.contains(">ALERT<"), alert, "{device} in alert: {tr}");
        assert_eq!(tr.starts_with("<tr class=\"alert\""), alert, "{tr}");
        let score = format!(
            "{} / {}",
            shown(row["score"].as_f64().unwrap()),
            shown(row["threshold"].as_f64().unwrap())
        );
        assert!(tr.contains(&score), "{device} shows {score}: {tr}");
        assert!(
            tr.contains(&format!(">{}<", row["windows"])),
            "{device} shows its windows: {tr}"
        );
        assert!(tr.contains("<polyline"), "{device} has a sparkline: {tr}");
        let seq = row["last_raise"]["seq"].as_u64().expect("raised");
        assert!(tr.contains(&format!("#{seq} (score ")), "last raise: {tr}");
    }

    let png = dir.path().join("status-page.png");
    in_browser({
        let png = png.clone();
        move || screenshot(&url, &png, (1200, 640), 5000)
    })
    .await;
    assert!(
        std::fs::metadata(&png).unwrap().len() > 10_000,
        "a real picture"
    );
    if std::env::var_os("ACCELWATCH_SCREENSHOT_DOCS").is_some() {
        std::fs::copy(&png, repo().join("docs/status-page.png")).unwrap();
    }
    stop(daemon).await;
}

/// A device id full of markup, as a CSV recording may carry it.
const HOSTILE: &str =
    "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>'&";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_ids_with_markup_are_shown_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let quoted = format!("\"{}\"", HOSTILE.replace('"', "\"\""));
    let data = std::fs::read_to_string(demo_csv())
        .unwrap()
        .replace("watch-10,", &format!("{quoted},"));
    let csv = dir.path().join("hostile.csv");
    write(&csv, &data);
    let daemon = Daemon::start(replay_config(dir.path(), csv), Vec::new())
        .await
        .expect("the daemon starts");
    let addr = daemon.telemetry_addr().unwrap();
    let state = wait_for_windows(addr, 276).await;
    let ids: Vec<&str> = state["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [HOSTILE, "watch-9"], "the id is kept as it came");

    let dom = in_browser(move || dump_dom(&format!("http://{addr}/"), 5000)).await;
    assert!(dom.contains("data-loaded=\"yes\""), "{dom}");
    // Serialised text escapes <, > and &: the id is one text node.
    let escaped = HOSTILE
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let tr = row_of(&dom, &escaped);
    assert!(tr.contains(">ok<") || tr.contains(">ALERT<") || tr.contains(">over<"));
    assert_eq!(dom.matches("<script").count(), 1, "only the page's script");
    assert_eq!(
        dom.matches("<img").count(),
        1,
        "no element made from the id, only the page's evidence plot:\n{dom}"
    );
    assert!(dom.contains("<img id=\"evidence-plot\""), "{dom}");
    assert!(dom.contains("<title>accelwatch</title>"), "{dom}");
    stop(daemon).await;
}

#[test]
fn the_demo_prints_the_page_address_and_serves_it() {
    let mut demo = Child::spawn(
        accelwatch()
            .args(["demo", "--speed", "4", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let stdout = demo.stdout().take().expect("piped");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = String::new();
    let page = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(300))
            .unwrap_or_else(|_| panic!("no status page address printed:\n{printed}"));
        printed.push_str(&line);
        printed.push('\n');
        if let Some(rest) = line.split("Status page: ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let addr: SocketAddr = page
        .strip_prefix("http://")
        .and_then(|a| a.strip_suffix('/'))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("an http://host:port/ address: {page}"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (status, body) = get(addr, "/").await;
        assert_eq!(status, 200);
        assert!(body.contains("<title>accelwatch</title>"), "{body}");
        wait_until(
            Duration::from_secs(60),
            "both demo devices on /api/state",
            || async {
                let state = api_state(addr).await;
                state["devices"].as_array().unwrap().len() == 2
                    && state["input"]["kind"] == "mqtt"
                    && state["input"]["connected"] == true
            },
        )
        .await;
        // Two devices at 50 Hz, at 4x: about 400 samples a second.
        api_state(addr).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let input = &api_state(addr).await["input"];
        let rate = input["samples_per_s"]
            .as_f64()
            .expect("a rate on a second read");
        assert!(
            (100.0..2000.0).contains(&rate),
            "samples per second: {input}"
        );
        assert!(input["messages_per_s"].as_f64().unwrap() > 0.0, "{input}");
    });
    let dom = dump_dom(&page, 3000);
    for device in ["watch-9", "watch-10"] {
        row_of(&dom, device);
    }
    demo.signal(libc::SIGINT);
    let status = demo.wait_with_deadline(Duration::from_secs(60));
    assert!(
        status.success(),
        "the demo stops cleanly on Ctrl-C: {status}"
    );
}
