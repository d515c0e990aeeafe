//! The status page's control actions and its paging, in a real headless
//! chromium driven over DevTools (clicks and typing as a person does them):
//! without a token configured, `/api/state` says control is off and the
//! page renders no action at all; with one, the page asks for it, a wrong
//! token gets the 401 shown and changes nothing, and the right one sends a
//! mark and a calibrate that the daemon carries out (its metrics, its
//! marks file and its scope's state say so); device ids with markup stay text in the action UI.
//! `/api/state?sort=&offset=&limit=` pages the devices, and the page shows
//! the first 50 of a larger fleet with a button for more.
//!
//! `ACCELWATCH_SCREENSHOT_DOCS=1` also writes docs/status-control.png.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::browser::dump_dom;
use crate::common::cdp::{js, Browser};
use crate::common::*;
use accelwatch::config::Config;
use accelwatch::daemon::Daemon;

/// A device id with markup and both quotes in it.
const HOSTILE: &str = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='img'\">\"q\" & 'a'";

const BROWSER_WAIT: Duration = Duration::from_secs(60);

/// demo.csv with watch-10 renamed to [`HOSTILE`], in `dir`.
fn hostile_csv(dir: &std::path::Path) -> std::path::PathBuf {
    let quoted = format!("\"{}\"", HOSTILE.replace('"', "\"\""));
    let data = std::fs::read_to_string(demo_csv())
        .unwrap()
        .replace("watch-10,", &format!("{quoted},"));
    let csv = dir.join("hostile.csv");
    write(&csv, &data);
    csv
}

/// A daemon with online training, serving the shipped demo model as its
/// first version (so that windows are scored and shown while it takes
/// commands), that never collects enough windows to train (no training
/// competes for the CPU); it replays `data` in a loop, its models in `dir`.
fn online(dir: &std::path::Path, data: std::path::PathBuf, token: bool) -> Config {
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::copy(
        repo().join("models/demo.onnx"),
        models.join("1764547200000-demo.onnx"),
    )
    .unwrap();
    let mut config = Config::default();
    config.model.dir = Some(models);
    config.training.mode = accelwatch::config::TrainingMode::Online;
    config.training.min_windows = config.training.max_windows;
    config.input.replay.path = data;
    config.input.replay.repeat = true;
    config.input.replay.speed = 4.0;
    config.output.jsonl = "off".into();
    config.telemetry.listen = "127.0.0.1:0".parse().unwrap();
    if token {
        config.telemetry.control_token_file = Some(control_token_file());
    }
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    config
}

async fn state(addr: SocketAddr, query: &str) -> (u16, Value) {
    let (status, body) = get(addr, &format!("/api/state{query}")).await;
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("JSON ({e}): {body}"));
    (status, value)
}

/// Waits until `/api/state` shows `devices` devices and a model scope.
async fn wait_for_devices(addr: SocketAddr, devices: u64) -> Value {
    wait_until(
        Duration::from_secs(60),
        &format!("{devices} devices and a scope on /api/state"),
        || async {
            let (_, s) = state(addr, "").await;
            s["page"]["total"] == devices && !s["models"].as_array().unwrap().is_empty()
        },
    )
    .await;
    state(addr, "").await.1
}

async fn in_browser<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("the browser task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_page_renders_no_action() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(online(dir.path(), demo_csv(), false), Vec::new())
        .await
        .expect("the daemon starts");
    let addr = daemon.telemetry_addr().unwrap();
    let s = wait_for_devices(addr, 2).await;
    assert_eq!(s["control"], json!({"enabled": false, "online": true}));
    let dom = in_browser(move || dump_dom(&format!("http://{addr}/"), 5000)).await;
    assert!(dom.contains("data-loaded=\"yes\""), "{dom}");
    // What was rendered, without the script's own text.
    let (before, rest) = dom.split_once("<script>").expect("the script");
    let dom = format!(
        "{before}{}",
        rest.split_once("</script>").expect("its end").1
    );
    assert!(dom.contains("<td class=\"device\">watch-9</td>"), "{dom}");
    for action in [
        "id=\"control",
        "data-command",
        "<input",
        "<select",
        "<button",
    ] {
        assert!(
            !dom.contains(action),
            "{action} on a page without control:\n{dom}"
        );
    }
    let (status, _) = post(addr, "/control/mark?label=abnormal&from_ms=0&to_ms=1").await;
    assert_eq!(status, 403, "and the endpoint is off");
    stop(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_state_pages_the_devices() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(online(dir.path(), demo_csv(), true), Vec::new())
        .await
        .expect("the daemon starts");
    let addr = daemon.telemetry_addr().unwrap();
    let all = wait_for_devices(addr, 2).await;
    assert_eq!(
        all["page"],
        json!({"sort": "id", "offset": 0, "limit": 100, "total": 2})
    );
    assert_eq!(
        all["control"],
        json!({"enabled": true, "online": true}),
        "on, and nothing of the token"
    );
    assert!(!all.to_string().contains(CONTROL_TOKEN));
    let ids = |s: &Value| -> Vec<String> {
        s["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["device"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&all), ["watch-10", "watch-9"]);
    let (status, first) = state(addr, "?limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&first), ["watch-10"]);
    assert_eq!(first["page"]["total"], 2);
    let (_, second) = state(addr, "?offset=1&limit=1").await;
    assert_eq!(ids(&second), ["watch-9"]);
    let (_, past) = state(addr, "?offset=5").await;
    assert!(ids(&past).is_empty());
    assert_eq!(past["page"]["total"], 2);
    let (_, capped) = state(addr, "?limit=100000&sort=attention").await;
    assert_eq!(capped["page"]["limit"], 1000);
    assert_eq!(capped["page"]["sort"], "attention");
    assert_eq!(ids(&capped).len(), 2);
    for bad in [
        "?limit=-1",
        "?sort=name",
        "?offset=1&offset=2",
        "?devices=all",
    ] {
        let (status, body) = state(addr, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("/api/state"),
            "{body}"
        );
    }
    stop(daemon).await;
}

/// The device table's row of `device`, as a JavaScript expression.
fn row(device: &str) -> String {
    format!(
        "[...document.querySelectorAll('#devices tr')].find(tr => tr.dataset.device === {})",
        js(device)
    )
}

/// Clicks the mark button of `device`'s row until the form names it (the
/// rows are drawn anew every second, and may change places).
fn pick_mark(browser: &mut Browser, device: &str) {
    let button = format!("({})?.querySelector('button.mark')", row(device));
    browser.wait_for(
        "a mark button on the row",
        &format!("!!{button}"),
        BROWSER_WAIT,
    );
    for _ in 0..10 {
        browser.click(&button);
        if browser.eval("document.getElementById('control-device').value") == json!(device) {
            return;
        }
    }
    panic!("the mark form never named {device:?}");
}

/// Clicks `element` and waits for the control box's result; the status
/// and text shown.
fn result_of_click(browser: &mut Browser, element: &str) -> (String, String) {
    browser.click(element);
    browser.wait_for(
        "a result",
        "!['', 'sending', undefined].includes(document.getElementById('control-result').dataset.status)",
        BROWSER_WAIT,
    );
    let shown = browser.eval(
        "(() => { const r = document.getElementById('control-result'); \
           const s = r.dataset.status; r.dataset.status = ''; return [s, r.textContent]; })()",
    );
    (
        shown[0].as_str().unwrap().to_string(),
        shown[1].as_str().unwrap().to_string(),
    )
}

fn send(browser: &mut Browser) -> (String, String) {
    result_of_click(browser, "document.getElementById('control-send')")
}

/// Types `token` into the prompt and uses it; the result shown.
fn give_token(browser: &mut Browser, token: &str) -> (String, String) {
    browser.wait_for(
        "the token prompt",
        "!document.getElementById('control-prompt').hidden",
        BROWSER_WAIT,
    );
    browser.type_into("document.getElementById('control-token')", token);
    result_of_click(browser, "document.getElementById('control-use')")
}

const NO_ACTION: &str = "document.querySelectorAll('[data-command]').length === 0 && \
     document.getElementById('control-form').hidden && \
     sessionStorage.getItem('accelwatch-control-token') === null";

/// The page's own script only, its title untouched, no element made from
/// a device id.
fn assert_untouched(browser: &mut Browser) {
    assert_eq!(
        browser.eval(
            "[document.title, document.querySelectorAll('script').length, \
              document.querySelectorAll('img').length]"
        ),
        json!(["accelwatch", 1, 1])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_token_the_page_sends_commands_and_a_wrong_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let csv = hostile_csv(dir.path());
    let daemon = Daemon::start(online(dir.path(), csv, true), Vec::new())
        .await
        .expect("the daemon starts");
    let addr = daemon.telemetry_addr().unwrap();
    wait_for_devices(addr, 2).await;
    let shots = dir.path().to_path_buf();
    let mark_accepted = "accelwatch_commands_total{command=\"mark\",result=\"accepted\"}";
    let unauthorized = "accelwatch_control_unauthorized_total";

    // A wrong token: the 401 is shown, the token is not kept, no action.
    let (mut browser, wrong) = in_browser(move || {
        let mut b = Browser::open(&format!("http://{addr}/"), (1000, 1300));
        b.wait_for(
            "the token prompt",
            "document.body.dataset.loaded === 'yes' && \
             !!document.getElementById('control-prompt')",
            BROWSER_WAIT,
        );
        b.wait_for("no action before a token is given", NO_ACTION, BROWSER_WAIT);
        let wrong = give_token(&mut b, &format!("{CONTROL_TOKEN}-wrong"));
        // Past the next redraw of the page, still no action.
        let drawn = b.eval("document.getElementById('updated').textContent");
        b.wait_for(
            "a redraw",
            &format!("document.getElementById('updated').textContent !== {drawn}"),
            BROWSER_WAIT,
        );
        assert_eq!(b.eval(NO_ACTION), json!(true), "no action after a 401");
        (b, wrong)
    })
    .await;
    assert_eq!(wrong.0, "401", "{}", wrong.1);
    assert!(
        wrong.1.contains("Bearer") && wrong.1.contains("not kept"),
        "{}",
        wrong.1
    );
    let metrics = scrape(addr).await;
    assert_eq!(metric(&metrics, unauthorized), Some(1.0));

    // The right one: a mark of the hostile device, from its row.
    let (browser_back, accepted, mark) = in_browser({
        let shots = shots.clone();
        move || {
            let accepted = give_token(&mut browser, CONTROL_TOKEN);
            pick_mark(&mut browser, HOSTILE);
            assert_untouched(&mut browser);
            let mark = send(&mut browser);
            assert_untouched(&mut browser);
            let png = shots.join("control.png");
            browser.screenshot(&png);
            if std::env::var_os("ACCELWATCH_SCREENSHOT_DOCS").is_some() {
                std::fs::copy(&png, repo().join("docs/status-control.png")).unwrap();
            }
            (browser, accepted, mark)
        }
    })
    .await;
    browser = browser_back;
    assert_eq!(accepted.0, "200", "{}", accepted.1);
    assert_eq!(mark.0, "202", "{}", mark.1);
    assert!(
        mark.1.contains("queued: mark") && mark.1.contains(&format!("device {HOSTILE}, ")),
        "the answer names the device as text: {}",
        mark.1
    );
    wait_until(Duration::from_secs(30), "the mark carried out", || async {
        metric(&scrape(addr).await, mark_accepted) == Some(1.0)
    })
    .await;
    let marks = std::fs::read_to_string(dir.path().join("models/marks.json"))
        .expect("the mark is kept in the fleet scope's directory");
    let marks: Value = serde_json::from_str(&marks).unwrap();
    assert_eq!(marks[0]["device"], HOSTILE, "{marks}");
    assert_eq!(marks[0]["label"], "abnormal", "{marks}");

    // A token that stopped being right (the daemon restarted with another):
    // the action's 401 is shown, the token forgotten, nothing carried out.
    let (browser_back, refused) = in_browser(move || {
        browser
            .eval("sessionStorage.setItem('accelwatch-control-token', 'an-old-token-0123456789')");
        pick_mark(&mut browser, HOSTILE);
        let refused = send(&mut browser);
        browser.wait_for("the prompt again", NO_ACTION, BROWSER_WAIT);
        (browser, refused)
    })
    .await;
    browser = browser_back;
    assert_eq!(refused.0, "401", "{}", refused.1);
    assert!(refused.1.contains("forgotten"), "{}", refused.1);
    let metrics = scrape(addr).await;
    assert_eq!(metric(&metrics, unauthorized), Some(2.0));
    assert_eq!(metric(&metrics, mark_accepted), Some(1.0), "no second mark");

    // Calibrate the fleet scope from its model card.
    let scope_state = move || async move {
        state(addr, "").await.1["models"][0]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(scope_state().await, "serving");
    let (browser_back, calibrate) = in_browser(move || {
        assert_eq!(give_token(&mut browser, CONTROL_TOKEN).0, "200");
        let button =
            "document.querySelector('button[data-command=\"calibrate\"][data-scope=\"fleet\"]')";
        browser.wait_for("a calibrate button", &format!("!!{button}"), BROWSER_WAIT);
        browser.click(button);
        assert_eq!(
            browser.eval(
                "[document.getElementById('control-command').value, \
                  document.getElementById('control-scope').value, \
                  document.getElementById('control-preview').textContent]"
            ),
            json!(["calibrate", "fleet", "POST /control/calibrate?scope=fleet"])
        );
        let shown = send(&mut browser);
        (browser, shown)
    })
    .await;
    browser = browser_back;
    assert_eq!(calibrate.0, "202", "{}", calibrate.1);
    wait_until(
        Duration::from_secs(30),
        "the calibration restarted",
        || async {
            metric(
                &scrape(addr).await,
                "accelwatch_commands_total{command=\"calibrate\",result=\"accepted\"}",
            ) == Some(1.0)
        },
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "the fleet scope calibrating anew",
        || async { scope_state().await == "calibrating" },
    )
    .await;

    in_browser(move || {
        // On a phone, the control box and the rows fit the screen's width.
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 390, "height": 1400, "deviceScaleFactor": 1, "mobile": true }),
        );
        browser.wait_for(
            "the page at a phone's width",
            "document.documentElement.clientWidth === 390",
            BROWSER_WAIT,
        );
        browser.screenshot(&shots.join("phone.png"));
        let wide = browser.eval(
            "[document.documentElement.scrollWidth, [...document.querySelectorAll('body *')]\
               .filter(e => e.getBoundingClientRect().right > 391)\
               .map(e => e.tagName + '#' + e.id + '.' + e.className).slice(0, 12)]",
        );
        assert!(
            wide[0].as_f64().unwrap() <= 390.0,
            "wider than a phone: {wide}"
        );
        assert_untouched(&mut browser);
    })
    .await;
    stop(daemon).await;
}

/// demo.csv cut into `devices` devices of 256 samples each (three windows).
fn fleet_csv(dir: &std::path::Path, devices: usize) -> std::path::PathBuf {
    let text = std::fs::read_to_string(demo_csv()).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.filter(|l| l.starts_with("watch-9,")).collect();
    let mut out = format!("{header}\n");
    for d in 0..devices {
        let start = (d * 256) % (rows.len() - 256);
        for row in &rows[start..start + 256] {
            out.push_str(&row.replacen("watch-9", &format!("unit-{d:03}"), 1));
            out.push('\n');
        }
    }
    let csv = dir.join("fleet.csv");
    write(&csv, &out);
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_first_devices_of_a_larger_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.model.path = repo().join("models/demo.onnx");
    config.input.replay.path = fleet_csv(dir.path(), 60);
    config.input.replay.speed = 0.0;
    config.output.jsonl = "off".into();
    config.telemetry.listen = "127.0.0.1:0".parse().unwrap();
    let daemon = Daemon::start(config, Vec::new())
        .await
        .expect("the daemon starts");
    let addr = daemon.telemetry_addr().unwrap();
    wait_for_devices(addr, 60).await;
    wait_until(
        Duration::from_secs(60),
        "the whole replay scored",
        || async { state(addr, "").await.1["windows"] == 180 },
    )
    .await;
    let (_, top) = state(addr, "?sort=attention&limit=50").await;
    let expected: Vec<String> = top["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(expected.len(), 50);
    let shown = in_browser(move || {
        let mut b = Browser::open(&format!("http://{addr}/"), (1000, 1300));
        b.wait_for(
            "the devices",
            "document.body.dataset.loaded === 'yes'",
            BROWSER_WAIT,
        );
        let first = b.eval(
            "[[...document.querySelectorAll('#devices tr')].map(tr => tr.dataset.device), \
              document.getElementById('devices-note').textContent]",
        );
        b.click("document.getElementById('devices-more')");
        b.wait_for(
            "all 60 rows",
            "document.querySelectorAll('#devices tr').length === 60 && \
             !document.getElementById('devices-more')",
            BROWSER_WAIT,
        );
        first
    })
    .await;
    assert_eq!(
        shown[0],
        json!(expected),
        "the page shows what needs a look first"
    );
    let note = shown[1].as_str().unwrap();
    assert!(
        note.contains("The 50 of 60 devices") && note.contains("show 10 more"),
        "{note}"
    );
    stop(daemon).await;
}
