//! Alerts across an outage of the broker: a replay keeps raising and
//! clearing alerts while mosquitto is killed (and restarted on the same
//! port) or frozen with SIGSTOP, and while the daemon itself is killed and
//! restarted with the same spool. A subscriber must get every alert raise
//! and clear, in order, once the broker is back.
//!
//! QoS 1 may deliver a message twice; the subscriber here de-duplicates as
//! the docs tell users to: it drops a message whose `msg_id` is not above
//! the last one it kept.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use accelwatch::backoff::Backoff;
use accelwatch::config::{Config, InputKind, MqttOutputConfig};
use accelwatch::mqtt::broker::BrokerSettings;
use accelwatch::mqtt::config::MqttProtocol;
use accelwatch::sink::mqtt::lane::{FeatureLanes, LaneSettings, LaneTask};
use accelwatch::telemetry::Metrics;
use serde_json::Value;

use super::*;
use crate::common::mosquitto::{free_port, persistent_client, Got, Messages, Mosquitto};
use crate::common::*;
use rumqttc::AsyncClient;

/// How long a test may take.
const OUTAGE_TEST_TIMEOUT: Duration = Duration::from_secs(200);
/// How many alert events must happen while the broker is away.
const DURING_OUTAGE: usize = 4;
/// How long the broker stays away in the outages of issue 29's targets.
const LONG_OUTAGE: Duration = Duration::from_secs(30);

/// A replay of demo.csv, looping, at `speed`, with a hair-trigger detector
/// so that alerts come every few seconds, published to `broker`.
fn replay_config(broker: &Mosquitto) -> Config {
    let mut config = Config::default();
    config.model.path = model_file().to_path_buf();
    config.input.kind = InputKind::Replay;
    config.input.replay.path = demo_csv();
    config.input.replay.speed = 20.0;
    config.input.replay.repeat = true;
    config.detector.raise_after = 1;
    config.detector.clear_after = 1;
    // The output's back-off follows input.mqtt's.
    config.input.mqtt.reconnect_min_ms = 50;
    config.input.mqtt.reconnect_max_ms = 400;
    config.output.jsonl = "off".into();
    config.output.mqtt = Some(MqttOutputConfig {
        url: Some(broker.url()),
        // Small enough that a frozen broker is noticed within 1-2 s.
        keep_alive_s: Some(1),
        ..MqttOutputConfig::default()
    });
    config.telemetry.listen = "127.0.0.1:0".parse().unwrap();
    config
}

/// What identifies an alert event, as the daemon produced it.
type Event = (String, String, u64, String);

fn event_of(alert: &Value) -> Event {
    (
        alert["device"].as_str().unwrap().to_string(),
        alert["event"].as_str().unwrap().to_string(),
        alert["seq"].as_u64().unwrap(),
        alert["t"].to_string(),
    )
}

fn alerts_of(collect: &Collect) -> Vec<Event> {
    collect
        .alerts()
        .iter()
        .map(|a| event_of(&serde_json::to_value(a).unwrap()))
        .collect()
}

/// A subscriber's alerts, de-duplicated by `msg_id`.
#[derive(Default)]
struct Alerts {
    kept: Vec<Event>,
    last_id: u64,
    duplicates: usize,
}

impl Alerts {
    fn take(&mut self, topic: &str, payload: &[u8]) {
        if !topic.ends_with("/alert") {
            return;
        }
        let alert: Value = serde_json::from_slice(payload).expect("JSON alert");
        let id = alert["msg_id"]
            .as_u64()
            .expect("an alert carries its msg_id");
        if id <= self.last_id {
            self.duplicates += 1;
            return;
        }
        self.last_id = id;
        self.kept.push(event_of(&alert));
    }

    /// Receives until `done`, for at most a minute and a half.
    async fn until(&mut self, rx: &mut Messages, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while !done(self) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Got::Message(topic, payload))) => self.take(&topic, &payload),
                Ok(Some(_)) => {}
                Ok(None) => panic!("subscriber gone"),
                Err(_) => panic!("timed out waiting for {what}; kept {}", self.kept.len()),
            }
        }
    }
}

/// Waits until the broker saved its database after `since` (so a
/// subscriber's persistent session is on disk before a SIGKILL).
async fn saved_since(broker: &Mosquitto, since: SystemTime) {
    let db = broker.dir.path().join("mosquitto.db");
    wait_until(
        Duration::from_secs(20),
        "mosquitto to save its sessions",
        || {
            let saved = std::fs::metadata(&db)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > since);
            async move { saved }
        },
    )
    .await;
}

/// A broker that keeps sessions on disk, and a persistent subscriber of
/// `topic` whose session it has saved (so it outlives a SIGKILL).
async fn watched_broker(topic: &str) -> (Mosquitto, AsyncClient, Messages) {
    let broker = Mosquitto::start_persistent();
    let subscribed = SystemTime::now();
    let (watcher, watched) = persistent_client(broker.port, "watcher", &[topic]).await;
    saved_since(&broker, subscribed).await;
    (broker, watcher, watched)
}

/// Waits until `count()` reaches `n`.
async fn wait_count(what: &str, n: usize, count: impl Fn() -> usize) {
    wait_until(Duration::from_secs(60), what, || {
        let reached = count() >= n;
        async move { reached }
    })
    .await;
}

enum Outage {
    Kill,
    Freeze,
}

/// One outage of the broker under a running daemon.
async fn across(outage: Outage) {
    let (mut broker, _watcher, mut watched) = watched_broker("accelwatch/#").await;
    // The frozen broker's alerts also go through the spool; the killed
    // one's are kept in memory only.
    let spool = tempfile::tempdir().unwrap();
    let mut config = replay_config(&broker);
    if matches!(outage, Outage::Freeze) {
        let output = config.output.mqtt.as_mut().unwrap();
        output.spool_dir = Some(spool.path().join("spool"));
        // Noticed after 5-10 s: alerts made meanwhile go into a connection
        // nobody reads, and must be published again on the next.
        output.keep_alive_s = Some(5);
    }
    let collect = Collect::default();
    let daemon = accelwatch::daemon::Daemon::start(config, vec![Box::new(collect.clone())])
        .await
        .expect("the daemon starts");
    let addr = daemon.telemetry_addr().unwrap();
    let connected = "accelwatch_mqtt_connected{role=\"output\"}";
    wait_metric(addr, connected, 1.0).await;
    wait_count("alerts before the outage", 2, || alerts_of(&collect).len()).await;

    let before = alerts_of(&collect).len();
    match outage {
        Outage::Kill => broker.kill(),
        Outage::Freeze => broker.signal(libc::SIGSTOP),
    }
    let started = Instant::now();
    // The keep-alive notices a frozen broker.
    wait_metric(addr, connected, 0.0).await;
    let unnoticed = alerts_of(&collect).len() - before;
    wait_count("alerts during the outage", before + DURING_OUTAGE, || {
        alerts_of(&collect).len()
    })
    .await;
    let during = alerts_of(&collect).len() - before;
    let lasted = started.elapsed();
    match outage {
        Outage::Kill => broker.restart(),
        Outage::Freeze => broker.signal(libc::SIGCONT),
    }
    wait_metric(addr, connected, 1.0).await;
    let after = alerts_of(&collect).len();
    wait_count("alerts after the outage", after + 2, || {
        alerts_of(&collect).len()
    })
    .await;
    let text = scrape(addr).await;
    let resent = metric(&text, "accelwatch_mqtt_resent_total").unwrap();
    assert!(
        metric_sum(
            &text,
            "accelwatch_mqtt_connection_failures_total",
            &["role=\"output\""]
        ) >= 1.0
    );
    if matches!(outage, Outage::Freeze) {
        assert!(
            unnoticed >= 1 && resent >= 1.0,
            "alerts made before the freeze was noticed ({unnoticed}) are published again \
             ({resent})"
        );
    }
    stop(daemon).await;

    let expected = alerts_of(&collect);
    let mut got = Alerts::default();
    got.until(&mut watched, "every alert of the run", |a| {
        a.kept.len() >= expected.len()
    })
    .await;
    assert_eq!(got.kept, expected, "every raise and clear, in order");
    eprintln!(
        "{} alert events, {during} during an outage of {lasted:?} ({unnoticed} before it was \
         noticed), {resent} resent, {} duplicates dropped",
        expected.len(),
        got.duplicates
    );
    assert!(during >= DURING_OUTAGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_survive_a_killed_broker() {
    tokio::time::timeout(OUTAGE_TEST_TIMEOUT, across(Outage::Kill))
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_survive_a_frozen_broker() {
    tokio::time::timeout(OUTAGE_TEST_TIMEOUT, across(Outage::Freeze))
        .await
        .expect("test timed out");
}

/// The alert events of a JSON-lines file written by the daemon.
fn jsonl_alerts(path: &Path) -> Vec<Event> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "alert")
        .map(|v| event_of(&v))
        .collect()
}

/// A daemon's config; with `spool: None` it names no spool (the default:
/// `<config>.state/spool` beside the config file).
fn daemon_toml(broker: &Mosquitto, spool: Option<&Path>, jsonl: &Path, port: u16) -> String {
    let spool = spool.map_or_else(String::new, |dir| {
        format!("spool_dir = \"{}\"", dir.display())
    });
    format!(
        r#"
[input]
kind = "replay"
[input.replay]
path = "{csv}"
speed = 10.0
loop = true
[input.mqtt]
reconnect_min_ms = 50
reconnect_max_ms = 400
[model]
path = "{model}"
[detector]
raise_after = 1
clear_after = 1
[output]
jsonl = "{jsonl}"
[output.mqtt]
url = "{url}"
keep_alive_s = 1
{spool}
[telemetry]
listen = "127.0.0.1:{port}"
"#,
        csv = demo_csv().display(),
        model = model_file().display(),
        jsonl = jsonl.display(),
        url = broker.url(),
    )
}

fn spawn_daemon(config: &Path) -> Child {
    Child::spawn(
        accelwatch()
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// Scrapes a daemon in another process.
async fn metric_of(port: u16, sample: &str) -> f64 {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    metric(&scrape(addr).await, sample).unwrap_or(0.0)
}

async fn wait_remote(port: u16, sample: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let up = std::net::TcpStream::connect(addr).is_ok();
        if up && metric_of(port, sample).await >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sample} did not reach {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Which config file a killed daemon runs with.
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    /// `output.mqtt.spool_dir` named.
    NamedSpool,
    /// No spool setting: the spool sits beside the config file.
    NoSpoolSetting,
    /// deploy/accelwatch.toml as packaged (the spool under its
    /// `pipeline.state_dir`), with only the site's own places and a replay
    /// for a sensor set by `ACCELWATCH__…` overrides; the broker away 30 s.
    Packaged,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_alerts_survive_a_killed_daemon() {
    stopped_daemon(Setup::NamedSpool, libc::SIGKILL).await;
}

/// The default config spools too: beside the config file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_survive_a_killed_daemon_with_no_spool_setting() {
    stopped_daemon(Setup::NoSpoolSetting, libc::SIGKILL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_survive_a_killed_daemon_with_the_packaged_config() {
    stopped_daemon(Setup::Packaged, libc::SIGKILL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_survive_a_terminated_daemon_with_the_packaged_config() {
    stopped_daemon(Setup::Packaged, libc::SIGTERM).await;
}

/// The packaged config's overrides: where this test keeps things, and a
/// replay in place of the sensors.
fn packaged_overrides(
    broker: &Mosquitto,
    state: &Path,
    jsonl: &Path,
    port: u16,
) -> Vec<(&'static str, String)> {
    vec![
        ("ACCELWATCH__INPUT__KIND", "replay".into()),
        (
            "ACCELWATCH__INPUT__REPLAY__PATH",
            demo_csv().display().to_string(),
        ),
        ("ACCELWATCH__INPUT__REPLAY__SPEED", "10".into()),
        ("ACCELWATCH__INPUT__REPLAY__LOOP", "true".into()),
        ("ACCELWATCH__OUTPUT__MQTT__URL", broker.url()),
        ("ACCELWATCH__INPUT__MQTT__RECONNECT_MIN_MS", "50".into()),
        ("ACCELWATCH__INPUT__MQTT__RECONNECT_MAX_MS", "400".into()),
        (
            "ACCELWATCH__MODEL__PATH",
            model_file().display().to_string(),
        ),
        (
            "ACCELWATCH__DETECTOR__EVIDENCE_DIR",
            state.join("evidence").display().to_string(),
        ),
        ("ACCELWATCH__DETECTOR__RAISE_AFTER", "1".into()),
        ("ACCELWATCH__DETECTOR__CLEAR_AFTER", "1".into()),
        ("ACCELWATCH__OUTPUT__JSONL", jsonl.display().to_string()),
        ("ACCELWATCH__OUTPUT__MQTT__KEEP_ALIVE_S", "1".into()),
        (
            "ACCELWATCH__PIPELINE__STATE_DIR",
            state.display().to_string(),
        ),
        ("ACCELWATCH__TELEMETRY__LISTEN", format!("127.0.0.1:{port}")),
    ]
}

/// The daemon stopped by `signal` (SIGKILL, or SIGTERM and its drain)
/// during an outage and started again with the same config file.
async fn stopped_daemon(setup: Setup, signal: i32) {
    tokio::time::timeout(OUTAGE_TEST_TIMEOUT, async {
        let (mut broker, _watcher, mut watched) = watched_broker("accelwatch/+/alert").await;
        let dir = tempfile::tempdir().unwrap();
        let named = dir.path().join("spool");
        let named = (setup == Setup::NamedSpool).then_some(named.as_path());
        let state = dir.path().join("state");
        let spool = match setup {
            Setup::NamedSpool => dir.path().join("spool"),
            Setup::NoSpoolSetting => dir.path().join("daemon.state/spool"),
            Setup::Packaged => state.join("spool"),
        };
        let config = dir.path().join("daemon.toml");
        let start = |broker: &Mosquitto, jsonl: &Path, port: u16| {
            if setup == Setup::Packaged {
                let packaged = repo().join("deploy/accelwatch.toml");
                let mut command = accelwatch();
                command.args(["run", "--config"]).arg(packaged);
                for (key, value) in packaged_overrides(broker, &state, jsonl, port) {
                    command.env(key, value);
                }
                Child::spawn(
                    command
                        .env("RUST_LOG", "info")
                        .stdout(Stdio::null())
                        .stderr(Stdio::null()),
                )
            } else {
                write(&config, &daemon_toml(broker, named, jsonl, port));
                spawn_daemon(&config)
            }
        };
        let outage = match setup {
            Setup::Packaged | Setup::NoSpoolSetting => LONG_OUTAGE,
            Setup::NamedSpool => Duration::ZERO,
        };
        let first_jsonl = dir.path().join("first.jsonl");
        let port = free_port();
        let first = start(&broker, &first_jsonl, port);
        wait_remote(port, "accelwatch_mqtt_connected{role=\"output\"}", 1.0).await;
        wait_count("alerts before the outage", 2, || {
            jsonl_alerts(&first_jsonl).len()
        })
        .await;

        broker.kill();
        let killed = Instant::now();
        let before = jsonl_alerts(&first_jsonl).len();
        wait_count("alerts during the outage", before + DURING_OUTAGE, || {
            jsonl_alerts(&first_jsonl).len()
        })
        .await;
        // Half the outage before the daemon is stopped, half after.
        tokio::time::sleep((outage / 2).saturating_sub(killed.elapsed())).await;
        first.signal(signal);
        let status = first.wait_with_deadline(Duration::from_secs(30));
        if signal == libc::SIGTERM {
            assert!(status.success(), "a drained stop exits 0: {status:?}");
        }
        let expected = jsonl_alerts(&first_jsonl);
        assert!(
            spool.read_dir().unwrap().count() > 0,
            "the spool holds them"
        );

        // Started again while the broker is still away, with the same spool.
        let second_jsonl = dir.path().join("second.jsonl");
        let port = free_port();
        let second = start(&broker, &second_jsonl, port);
        wait_remote(
            port,
            "accelwatch_mqtt_spool_alerts_total{event=\"replayed\"}",
            DURING_OUTAGE as f64,
        )
        .await;
        tokio::time::sleep(outage.saturating_sub(killed.elapsed())).await;
        let lasted = killed.elapsed();
        broker.restart();
        wait_remote(port, "accelwatch_mqtt_connected{role=\"output\"}", 1.0).await;

        let mut got = Alerts::default();
        got.until(&mut watched, "every alert of the killed daemon", |a| {
            a.kept.len() >= expected.len()
        })
        .await;
        assert_eq!(
            got.kept[..expected.len()],
            expected[..],
            "every raise and clear of the first run, in order, before the second run's"
        );
        wait_remote(
            port,
            "accelwatch_mqtt_spool_alerts_total{event=\"acked\"}",
            DURING_OUTAGE as f64,
        )
        .await;
        second.signal(libc::SIGTERM);
        let status = second.wait_with_deadline(Duration::from_secs(30));
        assert!(status.success(), "{status:?}");
        eprintln!(
            "{} alert events of the daemon stopped by signal {signal} delivered after an outage of \
             {lasted:?}, {} duplicates dropped",
            expected.len(),
            got.duplicates
        );
    })
    .await
    .expect("test timed out");
}

/// The config with no spool setting, loaded from its file as `run` does:
/// alerts raised while the broker is away (30 s) survive a drained stop
/// and a start while it is still away, and reach a subscriber in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_survive_a_drained_restart_with_no_spool_setting() {
    tokio::time::timeout(OUTAGE_TEST_TIMEOUT, async {
        let (mut broker, _watcher, mut watched) = watched_broker("accelwatch/+/alert").await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.toml");
        let jsonl = dir.path().join("out.jsonl");
        write(&path, &daemon_toml(&broker, None, &jsonl, 0));
        let load = || Config::load(&path).expect("the config");
        assert_eq!(
            load().pipeline.state_dir.as_deref(),
            Some(dir.path().join("site.state").as_path())
        );

        let first = Collect::default();
        let daemon = accelwatch::daemon::Daemon::start(load(), vec![Box::new(first.clone())])
            .await
            .expect("the daemon starts");
        let addr = daemon.telemetry_addr().unwrap();
        wait_metric(addr, "accelwatch_mqtt_connected{role=\"output\"}", 1.0).await;
        wait_count("alerts before the outage", 2, || alerts_of(&first).len()).await;
        broker.kill();
        let killed = Instant::now();
        let before = alerts_of(&first).len();
        wait_count("alerts during the outage", before + DURING_OUTAGE, || {
            alerts_of(&first).len()
        })
        .await;
        // Half the outage before the drained stop, half after.
        tokio::time::sleep((LONG_OUTAGE / 2).saturating_sub(killed.elapsed())).await;
        let text = scrape(addr).await;
        stop(daemon).await;
        let expected = alerts_of(&first);
        assert_eq!(
            metric(&text, "accelwatch_alerts_lost_total{reason=\"queue_full\"}"),
            Some(0.0)
        );
        assert!(
            dir.path()
                .join("site.state/spool")
                .read_dir()
                .unwrap()
                .count()
                > 0,
            "the spool holds them"
        );

        let second = Collect::default();
        let daemon = accelwatch::daemon::Daemon::start(load(), vec![Box::new(second.clone())])
            .await
            .expect("the daemon starts again");
        let addr = daemon.telemetry_addr().unwrap();
        let replayed = metric(
            &scrape(addr).await,
            "accelwatch_mqtt_spool_alerts_total{event=\"replayed\"}",
        )
        .unwrap();
        assert!(replayed >= DURING_OUTAGE as f64, "{replayed}");
        tokio::time::sleep(LONG_OUTAGE.saturating_sub(killed.elapsed())).await;
        let lasted = killed.elapsed();
        broker.restart();
        let mut got = Alerts::default();
        got.until(&mut watched, "every alert of the stopped daemon", |a| {
            a.kept.len() >= expected.len()
        })
        .await;
        assert_eq!(
            got.kept[..expected.len()],
            expected[..],
            "every raise and clear of the first run, in order, before the second run's"
        );
        let text = scrape(addr).await;
        stop(daemon).await;
        assert_eq!(
            metric_sum(&text, "accelwatch_alerts_lost_total", &[]),
            0.0,
            "{text}"
        );
        eprintln!(
            "{} alert events of the stopped daemon delivered after an outage of {lasted:?}, \
             {replayed} from its spool, {} duplicates dropped",
            expected.len(),
            got.duplicates
        );
    })
    .await
    .expect("test timed out");
}

/// A box without a real-time clock: the clock goes back a day while the
/// daemon runs, and again before it is started anew. A subscriber that
/// drops a `msg_id` not above the last it kept drops no alert, and the
/// evidence kept is the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_stepped_back_loses_no_alert_and_keeps_the_newest_evidence() {
    tokio::time::timeout(OUTAGE_TEST_TIMEOUT, async {
        const DAY_MS: i64 = 86_400_000;
        const KEPT: usize = 3;
        let broker = Mosquitto::start();
        let (_watcher, mut watched) =
            crate::common::mosquitto::client(broker.port, "watcher", &["accelwatch/+/alert"]).await;
        broker
            .wait_subscribed("watcher", "accelwatch/+/alert")
            .await;
        let dir = tempfile::tempdir().unwrap();
        let evidence = dir.path().join("evidence");
        let mut config = replay_config(&broker);
        config.pipeline.state_dir = Some(dir.path().join("state"));
        config.detector.evidence_dir = Some(evidence.display().to_string());
        config.detector.evidence_max_count = KEPT;
        let clock = accelwatch::clock::Clock::system();
        let mut expected = Vec::new();
        let mut raised = Vec::new();
        for run in 0..2 {
            let collect = Collect::default();
            let daemon = accelwatch::daemon::Daemon::start_with_clock(
                config.clone(),
                vec![Box::new(collect.clone())],
                clock.clone(),
            )
            .await
            .expect("the daemon starts");
            wait_count("alerts", 4, || alerts_of(&collect).len()).await;
            if run == 0 {
                clock.step(-DAY_MS);
                let before = alerts_of(&collect).len();
                wait_count("alerts a day back", before + 4, || {
                    alerts_of(&collect).len()
                })
                .await;
            }
            stop(daemon).await;
            expected.extend(alerts_of(&collect));
            raised.extend(collect.alerts().into_iter().filter_map(|a| a.evidence));
            // Started again with the clock yet another day back.
            clock.step(-DAY_MS);
        }
        let mut got = Alerts::default();
        got.until(&mut watched, "every alert of both runs", |a| {
            a.kept.len() >= expected.len()
        })
        .await;
        assert_eq!(got.kept, expected, "none dropped as a duplicate, in order");
        let store = accelwatch::evidence::store::EvidenceStore::read(
            &evidence,
            accelwatch::evidence::store::EvidenceLimits {
                max_count: KEPT,
                max_bytes: u64::MAX,
            },
        )
        .unwrap();
        let kept: Vec<String> = store.list().into_iter().map(|s| s.id).collect();
        let newest: Vec<String> = raised
            .iter()
            .rev()
            .take(KEPT)
            .map(|id| id.to_string())
            .collect();
        assert_eq!(kept, newest, "the newest evidence, newest first");
    })
    .await
    .expect("test timed out");
}

/// The output's in-memory bound (`output.mqtt.queue`, 8 here, no spool:
/// alerts wait in memory too) filled several times over with statuses of
/// twelve scopes during a broker outage, alerts in between: when the broker
/// is back, the subscriber gets every alert, in order, and none is counted
/// lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_filling_the_memory_bound_never_push_out_an_alert() {
    use accelwatch::clock::Clock;
    use accelwatch::config::MqttInputConfig;
    use accelwatch::record::{AlertRecord, ModelState, Output, StatusRecord};
    use accelwatch::sink::mqtt::MqttSink;
    use accelwatch::sink::Sink;
    use std::sync::Arc;
    use BrokerSettings;
    tokio::time::timeout(OUTAGE_TEST_TIMEOUT, async {
        let (mut broker, _watcher, mut watched) = watched_broker("accelwatch/+/alert").await;
        let metrics = Metrics::new();
        let output = MqttOutputConfig {
            url: Some(broker.url()),
            queue: 8,
            spool_dir: Some(accelwatch::sink::mqtt::config::SPOOL_OFF.into()),
            keep_alive_s: Some(1),
            ..MqttOutputConfig::default()
        };
        let input = MqttInputConfig {
            reconnect_min_ms: 50,
            reconnect_max_ms: 400,
            ..MqttInputConfig::default()
        };
        let (mut sink, task) = MqttSink::open(
            &output,
            None,
            BrokerSettings::input(&input),
            metrics.clone(),
            &Clock::system(),
        )
        .expect("the output opens");
        broker.kill();
        let alert = |seq: u64| {
            Output::Alert(AlertRecord {
                kind: "alert",
                event: if seq.is_multiple_of(2) {
                    "raise"
                } else {
                    "clear"
                },
                device: Arc::from("watch-1"),
                seq,
                t: seq as f64,
                score: 2.0,
                threshold: 0.3,
                model: Arc::from("m"),
                evidence: None,
                detail: None,
            })
        };
        let mut expected = Vec::new();
        for round in 0..6u64 {
            for scope in 0..12 {
                let scope: Arc<str> = Arc::from(format!("device:d{scope}"));
                let status = StatusRecord::new(ModelState::Calibrating, round as usize, 100);
                sink.write(&Output::Status(status.in_scope(&scope)))
                    .unwrap();
            }
            sink.write(&alert(round)).unwrap();
            expected.push(round);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        broker.restart();
        let mut got = Alerts::default();
        got.until(&mut watched, "every alert written in the outage", |a| {
            a.kept.len() >= expected.len()
        })
        .await;
        let seqs: Vec<u64> = got.kept.iter().map(|e| e.2).collect();
        assert_eq!(seqs, expected, "every alert, in order");
        let text = metrics.render();
        assert_eq!(
            metric_sum(&text, "accelwatch_alerts_lost_total", &[]),
            0.0,
            "{text}"
        );
        drop(sink);
        task.abort();
    })
    .await
    .expect("test timed out");
}

const LANE_CONNECTED: &str = "accelwatch_mqtt_connected{role=\"features\"}";

/// A feature lane of its own to `broker` (the daemon's back-off made
/// short), and the metrics it reports to.
fn open_lane(
    broker: &Mosquitto,
    protocol: MqttProtocol,
    keep_alive_s: u64,
    client_id: &str,
    queue: usize,
) -> (FeatureLanes, LaneTask, Metrics) {
    let metrics = Metrics::new();
    let settings = BrokerSettings::input(&accelwatch::config::MqttInputConfig {
        url: broker.url(),
        keep_alive_s,
        ..Default::default()
    });
    let (lane, mut tasks) = FeatureLanes::open(
        LaneSettings {
            endpoint: &settings.endpoint().unwrap(),
            protocol,
            client_id: client_id.to_string(),
            retain: false,
            connections: 1,
            queue,
            lines_per_message: 1,
            linger: Duration::from_millis(100),
        },
        || Backoff::new(Duration::from_millis(50), Duration::from_millis(500)),
        &metrics,
    );
    let task = tasks.pop().expect("one connection, one task");
    (lane, task, metrics)
}

/// Drops the sink's end and waits for the lane's task to end.
async fn close_lane(lane: FeatureLanes, task: LaneTask) {
    drop(lane);
    tokio::time::timeout(Duration::from_secs(10), task.task)
        .await
        .expect("the lane ends once its sink is gone")
        .unwrap();
}

/// The feature lines' own connection (`sink::mqtt::lane`) across a killed
/// broker: lines made while it is away wait for it, up to the queue, in
/// order; the rest are counted; the lane reconnects by itself and says
/// DISCONNECT when its sink is gone. A persistent subscriber on a broker
/// that queues QoS 0 for it sees what reached the broker whenever it
/// reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_lines_wait_for_a_killed_broker_up_to_the_queue() {
    tokio::time::timeout(OUTAGE_TEST_TIMEOUT, async {
        let mut broker = Mosquitto::start_persistent_conf("queue_qos0_messages true\n");
        let subscribed = SystemTime::now();
        let (_watcher, mut watched) = persistent_client(broker.port, "watcher", &["lane/#"]).await;
        saved_since(&broker, subscribed).await;

        let queue = 5;
        let (mut lane, task, metrics) =
            open_lane(&broker, MqttProtocol::V311, 30, "lane-test", queue);
        wait_metric(&metrics, LANE_CONNECTED, 1.0).await;
        let line = |name: &str| serde_json::to_vec(&serde_json::json!({ "line": name })).unwrap();
        for i in 0..3 {
            lane.push("lane/d1/features", &line(&format!("a{i}")));
        }
        lane.hand_over();
        let mut got = Received::default();
        got.until(&mut watched, "the lines before the outage", |r| {
            r.0.len() >= 3
        })
        .await;

        broker.kill();
        wait_metric(&metrics, LANE_CONNECTED, 0.0).await;
        for i in 0..8 {
            lane.push("lane/d1/features", &line(&format!("b{i}")));
        }
        lane.hand_over();
        let text = metrics.render();
        assert_eq!(
            crate::common::http::metric(
                &text,
                "accelwatch_mqtt_publish_dropped_total{kind=\"features\"}"
            ),
            Some(3.0),
            "the lines beyond the queue of {queue}: {text}"
        );
        // The queue is full: the next line is refused before it is
        // written, and counted as dropped like the three.
        assert_eq!(
            lane.admit("lane/d1/features"),
            None,
            "no room with {queue} lines waiting"
        );
        lane.hand_over();
        assert_eq!(
            crate::common::http::metric(
                &metrics.render(),
                "accelwatch_mqtt_publish_dropped_total{kind=\"features\"}"
            ),
            Some(4.0),
            "the refused line counted"
        );
        assert!(
            crate::common::http::metric_sum(
                &text,
                "accelwatch_mqtt_connection_failures_total",
                &["role=\"features\""]
            ) >= 1.0,
            "{text}"
        );

        broker.restart();
        wait_metric(&metrics, LANE_CONNECTED, 1.0).await;
        got.until(&mut watched, "the lines kept through the outage", |r| {
            r.0.len() >= 8
        })
        .await;
        let names: Vec<&str> = got
            .0
            .iter()
            .map(|(_, v)| v["line"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a0", "a1", "a2", "b0", "b1", "b2", "b3", "b4"]);
        assert!(got.0.iter().all(|(topic, _)| topic == "lane/d1/features"));
        assert_eq!(
            lane.admit("lane/d1/features"),
            Some(0),
            "room again once the queue was written"
        );

        close_lane(lane, task).await;
        // Mosquitto's words for a DISCONNECT (a dropped socket is "closed
        // its connection").
        wait_until(Duration::from_secs(10), "the lane's DISCONNECT", || {
            let said = broker.log().contains("Client lane-test disconnected.");
            async move { said }
        })
        .await;
    })
    .await
    .expect("test timed out");
}

/// The lane sends PINGREQs on an idle connection (mosquitto's debug log
/// shows them), and gives up a frozen broker's connection when a PINGRESP
/// is a keep-alive late, then reconnects once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feature_lane_pings_when_idle_and_notices_a_frozen_broker() {
    tokio::time::timeout(OUTAGE_TEST_TIMEOUT, async {
        let broker = Mosquitto::start_conf(&[], |_| "log_type debug\n".into());
        let (lane, task, metrics) = open_lane(&broker, MqttProtocol::V5, 1, "lane-ping", 16);
        wait_metric(&metrics, LANE_CONNECTED, 1.0).await;
        // Idle for a few keep-alives: the lane pings.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let pings = broker
            .log()
            .matches("Received PINGREQ from lane-ping")
            .count();
        assert!(
            pings >= 2,
            "{pings} PINGREQs in 3 s idle:\n{}",
            broker.log()
        );
        let failures = |text: &str| {
            crate::common::http::metric_sum(
                text,
                "accelwatch_mqtt_connection_failures_total",
                &["role=\"features\""],
            )
        };
        let text = metrics.render();
        assert_eq!(
            failures(&text),
            0.0,
            "an idle lane lost its connection: {text}"
        );
        assert_eq!(
            crate::common::http::metric(&text, LANE_CONNECTED),
            Some(1.0)
        );

        broker.signal(libc::SIGSTOP);
        let frozen = Instant::now();
        wait_metric(&metrics, LANE_CONNECTED, 0.0).await;
        let noticed = frozen.elapsed();
        assert!(
            noticed < Duration::from_secs(10),
            "a frozen broker noticed after {noticed:?}"
        );
        assert!(
            metrics.render().contains(
                "accelwatch_mqtt_connection_failures_total{reason=\"network\",role=\"features\"}"
            ),
            "{}",
            metrics.render()
        );
        broker.signal(libc::SIGCONT);
        wait_metric(&metrics, LANE_CONNECTED, 1.0).await;
        close_lane(lane, task).await;
    })
    .await
    .expect("test timed out");
}
