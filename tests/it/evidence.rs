//! Alert evidence: a daemon replays recorded data; each raise in the JSON
//! lines names an evidence that `/api/alerts`, `accelwatch alerts` and the
//! status page (in a real headless chromium) serve and plot; the store
//! stays within its caps under a burst of alerts, survives a restart, and
//! skips files that are not its own; a device id full of markup stays text
//! in the plot and on the page.
//!
//! `ACCELWATCH_SCREENSHOT_DOCS=1` also writes the screenshot to
//! docs/evidence.png.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::browser::{dump_dom, screenshot};
use crate::common::*;
use accelwatch::config::Config;
use accelwatch::daemon::Daemon;

/// A replay of `data` as fast as it goes, the shipped model, evidence in
/// `dir/evidence`, JSON lines in `dir/out.jsonl`, telemetry on a free port.
fn config(dir: &Path, data: std::path::PathBuf) -> Config {
    let mut config = Config::default();
    config.model.path = repo().join("models/demo.onnx");
    config.input.replay.path = data;
    config.input.replay.speed = 0.0;
    config.output.jsonl = dir.join("out.jsonl").display().to_string();
    config.telemetry.listen = "127.0.0.1:0".parse().unwrap();
    config.detector.evidence_dir = Some(dir.join("evidence").display().to_string());
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    config
}

fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = get(addr, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path} is JSON ({e}): {body}"))
}

/// Waits until `/api/alerts` lists `n` evidences; returns the list.
async fn wait_for_alerts(addr: SocketAddr, n: usize) -> Value {
    wait_until(
        Duration::from_secs(60),
        &format!("/api/alerts to list {n}"),
        || async {
            json(addr, "/api/alerts").await["alerts"]
                .as_array()
                .unwrap()
                .len()
                == n
        },
    )
    .await;
    json(addr, "/api/alerts").await
}

/// Waits for the replay to be through every sink: the status page's board
/// (the last sink) holds `windows` windows.
async fn wait_for_windows(addr: SocketAddr, windows: u64) {
    wait_until(
        Duration::from_secs(60),
        &format!("{windows} windows through the sinks"),
        || async {
            let state = json(addr, "/api/state").await;
            let seen: u64 = state["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["windows"].as_u64().unwrap())
                .sum();
            seen == windows
        },
    )
    .await;
}

async fn in_browser<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("the browser task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_raise_names_evidence_that_is_served_listed_and_plotted() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(config(dir.path(), demo_csv()), Vec::new())
        .await
        .expect("the daemon starts");
    let addr = daemon.telemetry_addr().unwrap();
    wait_for_windows(addr, 276).await;
    let lines = json_lines(&dir.path().join("out.jsonl"));
    let raises: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "alert" && l["event"] == "raise")
        .collect();
    assert!(raises.len() >= 2, "the demo recording raises alerts");
    for clear in lines.iter().filter(|l| l["event"] == "clear") {
        assert!(clear.get("evidence").is_none(), "a clear has none: {clear}");
    }
    let list = wait_for_alerts(addr, raises.len()).await;
    assert_eq!(list["enabled"], true);
    let listed: Vec<&str> = list["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    let mut named: Vec<&str> = raises
        .iter()
        .map(|r| r["evidence"].as_str().expect("a raise names its evidence"))
        .collect();
    named.reverse();
    assert_eq!(listed, named, "every raise's evidence, newest first");

    // Each evidence is the raising window: as the JSON lines have it.
    for raise in &raises {
        let id = raise["evidence"].as_str().unwrap();
        let e = json(addr, &format!("/api/alerts/{id}")).await;
        for key in ["device", "seq", "score", "threshold", "model"] {
            assert_eq!(e[key], raise[key], "{id} {key}");
        }
        let window = lines
            .iter()
            .find(|l| {
                l["type"] == "window" && l["device"] == raise["device"] && l["seq"] == raise["seq"]
            })
            .expect("the raising window's line");
        assert_eq!(e["t_end"], window["t_end"]);
        let channels: Vec<&str> = e["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(channels, ["ax", "ay", "az"]);
        for (c, name) in channels.iter().enumerate() {
            assert_eq!(
                e["channel_error"][c], window["channel_error"][name],
                "{id} {name}"
            );
            assert_eq!(e["samples"][c].as_array().unwrap().len(), 128);
            assert_eq!(e["reconstruction"][c].as_array().unwrap().len(), 128);
        }
        assert_ne!(
            e["samples"], e["reconstruction"],
            "a reconstruction, not a copy"
        );
        let recent = e["recent"].as_array().unwrap();
        assert_eq!(
            recent.last().unwrap()["seq"],
            raise["seq"],
            "up to the raise"
        );
        assert_eq!(recent.last().unwrap()["score"], raise["score"]);
        assert_eq!(e["scope"], "fleet");
        assert!(e["time_ms"].as_f64().unwrap() > 1.6e12, "wall clock");
    }
    // The first raise's window samples are the recording's, in g.
    let first = json(addr, &format!("/api/alerts/{}", named.last().unwrap())).await;
    assert!(first["samples"][0]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v.as_f64().unwrap().abs() < 16.0));

    let id = named[0].to_string();
    let (status, svg) = get(addr, &format!("/api/alerts/{id}.svg")).await;
    assert_eq!(status, 200);
    assert!(
        svg.starts_with("<svg") && svg.contains("signal against reconstruction"),
        "{svg}"
    );
    let (status, body) = get(addr, "/api/alerts/1000000000000-000000").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no alert evidence"), "{body}");
    let (status, _) = get(addr, "/api/alerts/..%2f..%2fetc%2fpasswd").await;
    assert_eq!(status, 404);
    let text = scrape(addr).await;
    assert_eq!(
        metric(&text, "accelwatch_evidence_written_total"),
        Some(raises.len() as f64)
    );
    assert_eq!(
        metric(&text, "accelwatch_evidence_files"),
        Some(raises.len() as f64)
    );

    // The page lists them and opens one's plot.
    let url = format!("http://{addr}/#alert={id}");
    let dom = in_browser({
        let url = url.clone();
        move || dump_dom(&url, 5000)
    })
    .await;
    assert!(
        dom.contains("data-alerts=\"yes\""),
        "the page read /api/alerts:\n{dom}"
    );
    assert!(
        dom.contains(&format!("data-evidence=\"{id}\"")),
        "the plot loaded:\n{dom}"
    );
    assert!(
        dom.contains(&format!("src=\"api/alerts/{id}.svg\"")),
        "{dom}"
    );
    assert_eq!(
        dom.matches("class=\"alert-row\"").count(),
        raises.len(),
        "{dom}"
    );
    assert_eq!(dom.matches(">show plot<").count(), raises.len());
    let png = dir.path().join("evidence.png");
    in_browser({
        let png = png.clone();
        move || screenshot(&url, &png, (1100, 1150), 5000)
    })
    .await;
    assert!(
        std::fs::metadata(&png).unwrap().len() > 20_000,
        "a real picture"
    );
    if std::env::var_os("ACCELWATCH_SCREENSHOT_DOCS").is_some() {
        std::fs::copy(&png, repo().join("docs/evidence.png")).unwrap();
    }
    stop(daemon).await;

    // Over SSH: the same evidence from the command line.
    let evidence_dir = dir.path().join("evidence");
    let out = accelwatch()
        .args(["alerts", "list", "--dir"])
        .arg(&evidence_dir)
        .run_within(Duration::from_secs(30))
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    let order: Vec<&str> = printed
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(order, named, "{printed}");
    let svg_path = dir.path().join("plot.svg");
    let out = accelwatch()
        .args(["alerts", "show", &id, "--dir"])
        .arg(&evidence_dir)
        .arg("--out")
        .arg(&svg_path)
        .run_within(Duration::from_secs(30))
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&svg_path).unwrap(),
        svg,
        "the served plot"
    );
    let out = accelwatch()
        .args(["alerts", "show", "1000000000000-000000", "--dir"])
        .arg(&evidence_dir)
        .run_within(Duration::from_secs(30))
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no evidence \"1000000000000-000000\""),
        "{stderr}"
    );
    let bad = dir.path().join("bad.toml");
    write(&bad, "[detector]\nevidence_max_count = 0\n");
    let out = accelwatch()
        .args(["alerts", "list", "--config"])
        .arg(&bad)
        .run_within(Duration::from_secs(30))
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("detector.evidence_max_count"));
    let off = dir.path().join("off.toml");
    write(&off, "[detector]\nevidence_dir = \"off\"\n");
    let out = accelwatch()
        .args(["alerts", "list", "--config"])
        .arg(&off)
        .run_within(Duration::from_secs(30))
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
}

/// `devices` copies of the first `rows` rows of the demo recording's first
/// device, as devices `burst-<i>` (or `name(i)`).
fn burst_csv(path: &Path, devices: usize, rows: usize, name: impl Fn(usize) -> String) {
    let data = std::fs::read_to_string(demo_csv()).unwrap();
    let mut lines = data.lines();
    let header = lines.next().unwrap();
    let first: Vec<&str> = lines
        .filter(|l| l.starts_with("watch-9,"))
        .take(rows)
        .collect();
    let mut csv = format!("{header}\n");
    for i in 0..devices {
        let device = name(i);
        for line in &first {
            csv.push_str(&device);
            csv.push_str(&line["watch-9".len()..]);
            csv.push('\n');
        }
    }
    write(path, &csv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_bounded_under_a_burst_survives_a_restart_and_skips_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("burst.csv");
    // 40 devices, 3 windows each; every window is over a tiny threshold:
    // 40 raises at once.
    burst_csv(&csv, 40, 260, |i| format!("burst-{i:02}"));
    let mut burst = config(dir.path(), csv.clone());
    burst.detector.threshold = Some(1e-9);
    burst.detector.evidence_max_count = 10;
    let daemon = Daemon::start(burst.clone(), Vec::new()).await.unwrap();
    let addr = daemon.telemetry_addr().unwrap();
    wait_for_windows(addr, 120).await;
    let summary = stop(daemon).await;
    assert_eq!(summary.alerts, 40);
    let lines = json_lines(&dir.path().join("out.jsonl"));
    let ids: Vec<String> = lines
        .iter()
        .filter(|l| l["event"] == "raise")
        .map(|l| l["evidence"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 40);
    let evidence_dir = dir.path().join("evidence");
    let mut on_disk: Vec<String> = std::fs::read_dir(&evidence_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    // The directory's id counter, which keeps ids rising across restarts.
    assert_eq!(on_disk.first().map(String::as_str), Some(".sequence"));
    on_disk.remove(0);
    let mut newest: Vec<String> = ids.iter().map(|id| format!("{id}.json")).collect();
    newest.sort();
    let newest = newest.split_off(30);
    assert_eq!(on_disk, newest, "the 10 newest, no temporary file left");

    // Strangers in the directory: a foreign file and a corrupt one.
    write(&evidence_dir.join("README.txt"), "not evidence\n");
    let corrupt = evidence_dir.join("1000000000000-000000.json");
    write(&corrupt, "{\"format\":\"accelwatch-evidence/1\",\"id\":");
    std::fs::create_dir(evidence_dir.join("subdir")).unwrap();

    // A restart that raises nothing: what was kept is served again.
    let mut quiet = config(dir.path(), csv.clone());
    quiet.detector.threshold = Some(1e9);
    quiet.detector.evidence_max_count = 10;
    let daemon = Daemon::start(quiet, Vec::new()).await.unwrap();
    let addr = daemon.telemetry_addr().unwrap();
    wait_for_windows(addr, 120).await;
    let list = json(addr, "/api/alerts").await;
    let listed: Vec<String> = list["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|a| format!("{}.json", a["id"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, newest, "survived the restart, strangers not listed");
    let text = scrape(addr).await;
    assert_eq!(
        metric(
            &text,
            "accelwatch_evidence_skipped_files_total{reason=\"foreign\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &text,
            "accelwatch_evidence_skipped_files_total{reason=\"corrupt\"}"
        ),
        Some(1.0)
    );
    assert_eq!(metric(&text, "accelwatch_evidence_files"), Some(10.0));
    stop(daemon).await;
    assert!(
        corrupt.exists() && evidence_dir.join("README.txt").exists(),
        "left in place"
    );

    // A second burst: still 10, now all of the second run.
    let daemon = Daemon::start(burst, Vec::new()).await.unwrap();
    let addr = daemon.telemetry_addr().unwrap();
    wait_for_windows(addr, 120).await;
    wait_until(Duration::from_secs(30), "40 evidences written", || async {
        metric(&scrape(addr).await, "accelwatch_evidence_written_total") == Some(40.0)
    })
    .await;
    let text = scrape(addr).await;
    assert_eq!(
        metric(&text, "accelwatch_evidence_removed_total"),
        Some(40.0),
        "the 10 old and 30 new"
    );
    stop(daemon).await;
    let kept = std::fs::read_dir(&evidence_dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name().into_string().unwrap();
            name.ends_with(".json") && name != "1000000000000-000000.json"
        })
        .count();
    assert_eq!(kept, 10);
    for old in &newest {
        assert!(
            !evidence_dir.join(old).exists(),
            "{old}: the first run's went first"
        );
    }

    // The command line warns about the strangers too.
    let out = accelwatch()
        .args(["alerts", "list", "--dir"])
        .arg(&evidence_dir)
        .run_within(Duration::from_secs(30))
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("README.txt (foreign")
            && stderr.contains("1000000000000-000000.json (corrupt"),
        "{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 10);
}

/// A device id full of markup, as a CSV recording may carry it.
const HOSTILE: &str =
    "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>'&";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_id_with_markup_stays_text_in_the_plot_and_on_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("hostile.csv");
    burst_csv(&csv, 1, 260, |_| {
        format!("\"{}\"", HOSTILE.replace('"', "\"\""))
    });
    let mut config = config(dir.path(), csv);
    config.detector.threshold = Some(1e-9);
    let daemon = Daemon::start(config, Vec::new()).await.unwrap();
    let addr = daemon.telemetry_addr().unwrap();
    let list = wait_for_alerts(addr, 1).await;
    let alert = &list["alerts"][0];
    assert_eq!(alert["device"], HOSTILE, "kept as it came");
    let id = alert["id"].as_str().unwrap().to_string();
    let (status, svg) = get(addr, &format!("/api/alerts/{id}.svg")).await;
    assert_eq!(status, 200);
    assert!(!svg.contains("<script") && !svg.contains("<img"), "{svg}");
    assert!(
        svg.contains("&lt;script&gt;document.title=&apos;pwned&apos;&lt;/script&gt;"),
        "{svg}"
    );

    let dom = in_browser(move || dump_dom(&format!("http://{addr}/#alert={id}"), 5000)).await;
    assert!(
        dom.contains("data-alerts=\"yes\"") && dom.contains("data-evidence="),
        "{dom}"
    );
    assert_eq!(dom.matches("<script").count(), 1, "only the page's script");
    assert_eq!(
        dom.matches("<img").count(),
        1,
        "only the evidence plot:\n{dom}"
    );
    assert!(dom.contains("<title>accelwatch</title>"), "{dom}");
    let escaped = HOSTILE
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert_eq!(
        dom.matches(&format!("<td class=\"device\">{escaped}</td>"))
            .count(),
        2,
        "as text in the devices and the alerts:\n{dom}"
    );
    stop(daemon).await;
}
