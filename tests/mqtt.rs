//! The MQTT input and output against a real mosquitto broker, started by
//! each test on a free 127.0.0.1 port: samples published by a test client
//! are windowed and scored by the daemon, and its features, alerts and
//! status are received by a test subscriber.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use accelwatch::config::{Config, InputKind, MqttOutputConfig, MqttProtocol, TopicEntry};
use accelwatch::daemon::Daemon;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::Value;
use tokio::sync::mpsc;

use common::*;

const TEST_TIMEOUT: Duration = Duration::from_secs(150);

fn mosquitto_binary() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the MQTT tests need a real broker: install the Debian package mosquitto \
                 (apt-get install mosquitto), or run .ci/run as root"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A mosquitto process of our own; killed on drop.
struct Broker {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// `users`: (name, password) pairs; any makes the broker refuse
    /// anonymous clients.
    fn start_with(users: &[(&str, &str)]) -> Self {
        Self::start_conf(users, |_| String::new())
    }

    /// `extra` writes more config (e.g. a TLS listener) into the broker's
    /// directory, after the plain listener.
    fn start_conf(users: &[(&str, &str)], extra: impl FnOnce(&Path) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut conf = format!(
            "per_listener_settings false\npersistence false\nmax_queued_messages 100000\n\
             message_size_limit 0\nlog_dest stderr\nlistener {port} 127.0.0.1\n"
        );
        if users.is_empty() {
            conf.push_str("allow_anonymous true\n");
        } else {
            let passwords = dir.path().join("passwords");
            for (i, (user, password)) in users.iter().enumerate() {
                let mut cmd = Command::new("mosquitto_passwd");
                cmd.arg("-b");
                if i == 0 {
                    cmd.arg("-c");
                }
                let status = cmd
                    .arg(&passwords)
                    .arg(user)
                    .arg(password)
                    .status()
                    .expect("mosquitto_passwd (Debian package mosquitto)");
                assert!(status.success());
            }
            conf.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                passwords.display()
            ));
        }
        conf.push_str(&extra(dir.path()));
        write(&dir.path().join("mosquitto.conf"), &conf);
        let mut broker = Self {
            port,
            dir,
            child: None,
        };
        broker.restart();
        broker
    }

    fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("mosquitto.log")).unwrap())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen: {}",
                std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One model for every test of this binary.
fn model_file() -> &'static Path {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &MODEL
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("model.onnx");
            std::fs::write(&path, quick_model(&["ax", "ay", "az"], 40, 3).onnx).unwrap();
            (dir, path)
        })
        .1
}

fn mqtt_config(broker: &Broker) -> Config {
    let mut config = Config::default();
    config.model.path = model_file().to_path_buf();
    config.input.kind = InputKind::Mqtt;
    config.input.mqtt.url = broker.url();
    config.input.mqtt.client_id = "accelwatch-test".into();
    config.input.mqtt.qos = 1;
    config.input.mqtt.reconnect_min_ms = 50;
    config.input.mqtt.reconnect_max_ms = 400;
    config.output.jsonl = "off".into();
    config.output.mqtt = Some(MqttOutputConfig::default());
    config.telemetry.listen = "127.0.0.1:0".parse().unwrap();
    config
}

#[derive(Debug)]
enum Got {
    Connected,
    Subscribed,
    Message(String, Vec<u8>),
}

/// A test client; reconnects by itself and subscribes to `topics` on every
/// connect. Returns once connected (and subscribed, if asked to).
async fn client(
    port: u16,
    id: &str,
    topics: &[&str],
) -> (AsyncClient, mpsc::UnboundedReceiver<Got>) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_max_packet_size(8 << 20, 8 << 20);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 10_000);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    let wanted = topics.len();
    let subscriber = client.clone();
    tokio::spawn(async move {
        loop {
            let got = match events.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    for topic in &topics {
                        subscriber.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
                    }
                    Got::Connected
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => Got::Subscribed,
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    Got::Message(p.topic.clone(), p.payload.to_vec())
                }
                Ok(_) => continue,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.send(got).is_err() {
                return;
            }
        }
    });
    // Wait for the connection and every SubAck (one per topic).
    let mut pending = wanted + 1;
    while pending > 0 {
        match rx.recv().await.expect("test client task") {
            Got::Connected | Got::Subscribed => pending -= 1,
            Got::Message(..) => {}
        }
    }
    (client, rx)
}

type Rows = Vec<(f64, [f64; 3])>;

/// demo.csv's rows per device: (t_ms, [ax, ay, az]).
fn demo_rows() -> BTreeMap<String, Rows> {
    let text = std::fs::read_to_string(demo_csv()).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (d, t, ax, ay, az) = (col("device"), col("t_ms"), col("ax"), col("ay"), col("az"));
    let mut rows: BTreeMap<String, Rows> = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let n = |i: usize| f[i].parse::<f64>().unwrap();
        rows.entry(f[d].to_string())
            .or_default()
            .push((n(t), [n(ax), n(ay), n(az)]));
    }
    rows
}

/// A JSON array of samples.
fn json_samples(rows: &[(f64, [f64; 3])]) -> Vec<u8> {
    let samples: Vec<Value> = rows
        .iter()
        .map(|(t, v)| serde_json::json!({"t": t, "ax": v[0], "ay": v[1], "az": v[2]}))
        .collect();
    serde_json::to_vec(&samples).unwrap()
}

fn windows_of(samples: usize) -> usize {
    if samples < 128 {
        0
    } else {
        (samples - 128) / 64 + 1
    }
}

async fn publish(client: &AsyncClient, topic: &str, payload: Vec<u8>) {
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .unwrap();
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, text) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    text
}

/// Polls /metrics until `sample` has `value`.
async fn wait_metric(addr: SocketAddr, sample: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(addr).await;
        if metric(&text, sample) == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sample} never reached {value}; last:\n{}",
            text.lines()
                .filter(|l| l.starts_with("accelwatch_mqtt")
                    || l.starts_with(sample.split('{').next().unwrap()))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Panics naming every problem `config` has.
fn assert_valid(config: &Config) {
    let problems = config.validate_settings();
    assert!(problems.is_empty(), "{problems:?}");
}

/// Starts a daemon and waits for its MQTT input to connect.
async fn start_connected(config: Config) -> (Daemon, SocketAddr) {
    let daemon = Daemon::start(config, Vec::new()).await.unwrap();
    let addr = daemon.telemetry_addr().unwrap();
    wait_metric(addr, "accelwatch_mqtt_connected{role=\"input\"}", 1.0).await;
    (daemon, addr)
}

/// POSTs to the daemon's HTTP endpoint (a control command).
async fn post(addr: SocketAddr, path: &'static str) -> (u16, String) {
    tokio::task::spawn_blocking(move || http_post(addr, path))
        .await
        .unwrap()
}

/// A daemon config that trains its own models in `models`, with the
/// quickest variant to train.
fn online_config(broker: &Broker, models: &Path) -> Config {
    let mut config = mqtt_config(broker);
    config.model.dir = Some(models.to_path_buf());
    config.model.variant = accelwatch::config::Variant::Basic;
    config.training.mode = accelwatch::config::TrainingMode::Online;
    config
}

/// Messages received, as (topic, JSON).
#[derive(Default)]
struct Received(Vec<(String, Value)>);

impl Received {
    /// Receives until `done` holds.
    async fn until(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Got>,
        what: &str,
        done: impl Fn(&Self) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while !done(self) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Got::Message(topic, payload))) => {
                    let value = serde_json::from_slice(&payload).expect("JSON payload");
                    self.0.push((topic, value));
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("subscriber gone"),
                Err(_) => panic!(
                    "timed out waiting for {what}; got {} messages",
                    self.0.len()
                ),
            }
        }
    }

    fn on(&self, topic: &str) -> Vec<&Value> {
        self.0
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, v)| v)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_from_two_devices_become_features_alerts_and_status() {
    two_devices(MqttProtocol::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_from_two_devices_over_mqtt_5() {
    two_devices(MqttProtocol::V5).await;
}

/// The daemon speaks `protocol` (input and output); the test's clients
/// speak 3.1.1, so the two versions also interoperate through the broker.
async fn two_devices(protocol: MqttProtocol) {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Broker::start();
        let (_watcher, mut watched) = client(broker.port, "watcher", &["accelwatch/#"]).await;
        let mut config = mqtt_config(&broker);
        config.input.mqtt.protocol = protocol;
        config.input.max_payload_bytes = 64 * 1024;
        let (daemon, addr) = start_connected(config).await;
        wait_metric(addr, "accelwatch_mqtt_connected{role=\"output\"}", 1.0).await;

        let (publisher, _) = client(broker.port, "publisher", &[]).await;
        let rows = demo_rows();
        assert_eq!(rows.len(), 2);
        let expected: BTreeMap<&str, usize> = rows
            .iter()
            .map(|(d, r)| (d.as_str(), windows_of(r.len())))
            .collect();
        let longest = rows.values().map(Vec::len).max().unwrap();
        for (i, start) in (0..longest).step_by(32).enumerate() {
            for (device, rows) in &rows {
                if start < rows.len() {
                    let end = (start + 32).min(rows.len());
                    let topic = format!("sensors/{device}/accel");
                    publish(&publisher, &topic, json_samples(&rows[start..end])).await;
                }
            }
            if i == 100 {
                // Malformed and over-limit payloads in the middle of the stream.
                publish(&publisher, "sensors/watch-9/accel", b"{\"ax\": 1".to_vec()).await;
                publish(&publisher, "sensors/watch-10/accel", vec![b' '; 100 * 1024]).await;
                publish(&publisher, "elsewhere/watch-9", b"{}".to_vec()).await;
            }
        }

        let total: usize = expected.values().sum();
        let mut got = Received::default();
        got.until(&mut watched, "every window", |r| {
            r.0.iter().filter(|(t, _)| t.ends_with("/features")).count() >= total
        })
        .await;
        for (device, n) in &expected {
            let windows = got.on(&format!("accelwatch/{device}/features"));
            let seqs: Vec<u64> = windows.iter().map(|w| w["seq"].as_u64().unwrap()).collect();
            assert_eq!(seqs, (0..*n as u64).collect::<Vec<_>>(), "{device}");
            let w = windows[0];
            assert_eq!(w["type"], "window");
            assert_eq!(w["device"], *device);
            assert_eq!(w["latent"].as_array().unwrap().len(), 8);
            assert!(w["score"].as_f64().unwrap() >= 0.0);
        }
        let raised: Vec<&Value> = got
            .0
            .iter()
            .filter(|(t, v)| t.ends_with("/alert") && v["event"] == "raise")
            .map(|(_, v)| v)
            .collect();
        assert!(raised.len() >= 2, "alerts on the ABD/FEL parts: {raised:?}");
        for (topic, alert) in got.0.iter().filter(|(t, _)| t.ends_with("/alert")) {
            assert_eq!(
                *topic,
                format!("accelwatch/{}/alert", alert["device"].as_str().unwrap())
            );
            assert_eq!(alert["type"], "alert");
        }
        let status = got.on("accelwatch/status");
        assert_eq!(
            status.first().map(|s| &s["status"]),
            Some(&Value::from("online"))
        );

        let text = scrape(addr).await;
        assert_eq!(
            metric(&text, "accelwatch_decode_errors_total{reason=\"syntax\"}"),
            Some(1.0)
        );
        assert_eq!(
            metric(
                &text,
                "accelwatch_decode_errors_total{reason=\"too_large\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            metric(&text, "accelwatch_mqtt_unrouted_total"),
            Some(0.0),
            "not subscribed"
        );
        assert_eq!(
            metric(&text, "accelwatch_windows_total"),
            Some(total as f64)
        );

        let summary = stop(daemon).await;
        assert_eq!(summary.windows as usize, total);
        got.until(&mut watched, "the offline status", |r| {
            r.on("accelwatch/status")
                .last()
                .map(|s| s["status"].clone())
                == Some(Value::from("offline"))
        })
        .await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_is_survived() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut broker = Broker::start();
        let daemon = Daemon::start(mqtt_config(&broker), Vec::new())
            .await
            .unwrap();
        let addr = daemon.telemetry_addr().unwrap();
        wait_metric(addr, "accelwatch_mqtt_connected{role=\"input\"}", 1.0).await;
        wait_metric(addr, "accelwatch_mqtt_connected{role=\"output\"}", 1.0).await;
        let rows = demo_rows().remove("watch-9").unwrap();

        let send = |rows: Rows, port: u16| async move {
            let (publisher, _) = client(port, "publisher", &[]).await;
            for chunk in rows.chunks(32) {
                publish(&publisher, "sensors/w1/accel", json_samples(chunk)).await;
            }
            publisher
        };
        let (_watcher, mut watched) =
            client(broker.port, "watcher", &["accelwatch/+/features"]).await;
        let _p = send(rows[..256].to_vec(), broker.port).await;
        let mut got = Received::default();
        got.until(&mut watched, "windows before the restart", |r| {
            r.0.len() >= 3
        })
        .await;

        let readyz = || async move {
            let (status, body) = tokio::task::spawn_blocking(move || http_get(addr, "/readyz"))
                .await
                .unwrap();
            (status, serde_json::from_str::<Value>(&body).unwrap())
        };
        let (status, body) = readyz().await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["input"]["connected"], true);

        broker.kill();
        wait_metric(addr, "accelwatch_mqtt_connected{role=\"input\"}", 0.0).await;
        wait_metric(addr, "accelwatch_mqtt_connected{role=\"output\"}", 0.0).await;
        let (status, body) = readyz().await;
        assert_eq!(status, 503, "not ready while the broker is away: {body}");
        assert_eq!(
            body["input"],
            serde_json::json!({"kind": "mqtt", "connected": false})
        );
        assert_eq!(body["pipeline"], true);
        assert!(daemon.metrics.render().contains(
            "accelwatch_mqtt_connection_failures_total{reason=\"network\",role=\"input\"}"
        ));
        broker.restart();
        wait_metric(addr, "accelwatch_mqtt_connected{role=\"input\"}", 1.0).await;
        wait_metric(addr, "accelwatch_mqtt_connected{role=\"output\"}", 1.0).await;

        // The watcher reconnects by itself; wait for its subscription.
        loop {
            match watched.recv().await.unwrap() {
                Got::Subscribed => break,
                _ => continue,
            }
        }
        let _p = send(rows[256..512].to_vec(), broker.port).await;
        let mut after = Received::default();
        after
            .until(&mut watched, "windows after the restart", |r| {
                r.0.len() >= 3
            })
            .await;
        assert_eq!(after.0[0].0, "accelwatch/w1/features");
        stop(daemon).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_packets_and_odd_device_ids() {
    oversize(MqttProtocol::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_packets_over_mqtt_5_keep_the_connection() {
    oversize(MqttProtocol::V5).await;
}

/// MQTT 3.1.1 has to drop the connection to refuse an oversize packet;
/// an MQTT 5 client announces its limit, and the broker drops the message.
async fn oversize(protocol: MqttProtocol) {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Broker::start();
        let mut config = mqtt_config(&broker);
        config.input.mqtt.protocol = protocol;
        config.input.max_payload_bytes = 16 * 1024;
        config.input.mqtt.max_packet_bytes = 64 * 1024;
        // A persistent session: QoS 1 messages wait at the broker while the
        // connection is re-established.
        config.input.mqtt.clean_session = false;
        let (daemon, addr) = start_connected(config).await;
        let (_watcher, mut watched) =
            client(broker.port, "watcher", &["accelwatch/+/features"]).await;
        let (publisher, _) = client(broker.port, "publisher", &[]).await;

        let long_id = "d".repeat(100);
        let topic = format!("sensors/{long_id}/accel");
        let rows = demo_rows().remove("watch-9").unwrap();
        for chunk in rows[..128].chunks(32) {
            publish(&publisher, &topic, json_samples(chunk)).await;
        }
        // Over the packet limit, at QoS 0 so that the broker does not
        // deliver it again after the reconnection.
        publisher
            .publish(&topic, QoS::AtMostOnce, false, vec![b' '; 100 * 1024])
            .await
            .unwrap();
        for chunk in rows[128..256].chunks(32) {
            publish(&publisher, &topic, json_samples(chunk)).await;
        }
        let mut got = Received::default();
        got.until(&mut watched, "windows around the oversize message", |r| {
            r.0.len() >= 3
        })
        .await;
        let expected_topic = format!("accelwatch/{}/features", "d".repeat(64));
        assert!(
            got.0.iter().all(|(t, _)| *t == expected_topic),
            "{:?}",
            got.0[0].0
        );
        assert_eq!(
            got.0[0].1["device"],
            long_id.as_str(),
            "the payload keeps the full id"
        );
        let text = scrape(addr).await;
        let lost_connections = match protocol {
            MqttProtocol::V311 => 1.0,
            MqttProtocol::V5 => 0.0,
        };
        assert_eq!(
            metric(
                &text,
                "accelwatch_mqtt_connection_failures_total{reason=\"oversize\",role=\"input\"}"
            )
            .unwrap_or(0.0),
            lost_connections,
            "{text}"
        );
        stop(daemon).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Broker::start_with(&[("edge", "s3cret"), ("watcher", "w")]);
        let dir = tempfile::tempdir().unwrap();
        let password_file = dir.path().join("password");
        write(&password_file, "wrong\n");
        let mut config = mqtt_config(&broker);
        config.input.mqtt.auth.username = Some("edge".into());
        config.input.mqtt.auth.password_file = Some(password_file.clone());
        assert_valid(&config);
        let daemon = Daemon::start(config.clone(), Vec::new()).await.unwrap();
        let addr = daemon.telemetry_addr().unwrap();
        let refused =
            "accelwatch_mqtt_connection_failures_total{reason=\"refused\",role=\"input\"}";
        let deadline = Instant::now() + Duration::from_secs(20);
        while metric(&scrape(addr).await, refused).unwrap_or(0.0) < 2.0 {
            assert!(
                Instant::now() < deadline,
                "refusals are counted and retried"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            metric(
                &scrape(addr).await,
                "accelwatch_mqtt_connected{role=\"input\"}"
            ),
            Some(0.0)
        );
        stop(daemon).await;

        write(&password_file, "s3cret\n");
        let (daemon, addr) = start_connected(config).await;
        wait_metric(addr, "accelwatch_mqtt_connected{role=\"output\"}", 1.0).await;
        stop(daemon).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_splits_messages_between_daemons() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Broker::start();
        let mut daemons = Vec::new();
        for member in ["a", "b"] {
            let mut config = mqtt_config(&broker);
            config.input.mqtt.client_id = format!("accelwatch-{member}");
            config.input.mqtt.share_group = Some("fleet".into());
            config.output.mqtt = None;
            assert_valid(&config);
            let (daemon, addr) = start_connected(config).await;
            daemons.push((daemon, addr));
        }
        // Mosquitto hands each message to one member only, round robin;
        // every message here is one whole window of its own device, so the
        // split cannot cut a window.
        let rows = demo_rows();
        let rows = rows.values().next().unwrap();
        let (publisher, _rx) = client(broker.port, "sensors", &[]).await;
        let messages = 40;
        // Let both subscriptions settle before publishing.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..messages {
            let window = &rows[i * 128..(i + 1) * 128];
            publish(
                &publisher,
                &format!("sensors/d{i}/accel"),
                json_samples(window),
            )
            .await;
        }
        let windows = |text: &str| metric(text, "accelwatch_windows_total").unwrap_or(0.0);
        let deadline = Instant::now() + Duration::from_secs(30);
        let per_member = loop {
            let mut counts = Vec::new();
            for (_, addr) in &daemons {
                counts.push(windows(&scrape(*addr).await));
            }
            if counts.iter().sum::<f64>() >= messages as f64 || Instant::now() > deadline {
                break counts;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // No message reaches both members.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut settled = Vec::new();
        for (_, addr) in &daemons {
            settled.push(windows(&scrape(*addr).await));
        }
        assert_eq!(settled, per_member, "late duplicates");
        assert_eq!(
            per_member.iter().sum::<f64>(),
            messages as f64,
            "{per_member:?}"
        );
        assert!(
            per_member.iter().all(|n| *n > 0.0),
            "both members work: {per_member:?}"
        );
        for (daemon, _) in daemons {
            stop(daemon).await;
        }
    })
    .await
    .expect("test timed out");
}

/// Runs openssl, or fails saying what to install.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the TLS test needs the openssl command (Debian package openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA (`name`.pem/.key) and, signed by it, a server certificate for
/// 127.0.0.1 and a client certificate.
fn make_pki(dir: &Path, name: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_key = format!("{name}.key");
    let ca_pem = format!("{name}.pem");
    let mut req = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=accelwatch test CA",
    ];
    req.extend(ec);
    req.extend(["-keyout", &ca_key, "-out", &ca_pem]);
    openssl(dir, &req);
    for (leaf, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, pem, ext_file) = (
            format!("{name}-{leaf}.key"),
            format!("{name}-{leaf}.csr"),
            format!("{name}-{leaf}.pem"),
            format!("{name}-{leaf}.ext"),
        );
        write(&dir.join(&ext_file), ext);
        let subject = format!("/CN={leaf}");
        let mut req = vec!["req", "-subj", &subject];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-extfile",
                &ext_file,
                "-out",
                &pem,
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_in_and_out() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let tls_port = free_port();
        // A plain listener for the test's clients, and a TLS one that
        // demands a client certificate signed by the test CA.
        let broker = Broker::start_conf(&[], |dir| {
            make_pki(dir, "ca");
            make_pki(dir, "other");
            // Started as root, mosquitto drops to its own user before it
            // reads the key files.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
            format!(
                "listener {tls_port} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/ca-server.pem\n\
                 keyfile {0}/ca-server.key\nrequire_certificate true\n",
                dir.display()
            )
        });
        let pki = broker.dir.path();
        let tls_config = |ca: &str, client: Option<&str>| {
            let mut config = mqtt_config(&broker);
            config.input.mqtt.url = format!("mqtts://127.0.0.1:{tls_port}");
            config.input.mqtt.auth.ca_file = Some(pki.join(format!("{ca}.pem")));
            if let Some(client) = client {
                config.input.mqtt.auth.client_cert_file =
                    Some(pki.join(format!("{client}-client.pem")));
                config.input.mqtt.auth.client_key_file =
                    Some(pki.join(format!("{client}-client.key")));
            }
            assert_valid(&config);
            config
        };

        // Refused: no client certificate; a server not signed by our CA;
        // a client certificate from another CA. Each is counted, retried,
        // and never connects.
        for (ca, client) in [
            ("ca", None),
            ("other", Some("other")),
            ("ca", Some("other")),
        ] {
            let daemon = Daemon::start(tls_config(ca, client), Vec::new())
                .await
                .unwrap();
            let addr = daemon.telemetry_addr().unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let text = scrape(addr).await;
                let failures: f64 = text
                    .lines()
                    .filter(|l| {
                        l.starts_with("accelwatch_mqtt_connection_failures_total{")
                            && l.contains("role=\"input\"")
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum();
                if failures >= 2.0 {
                    assert_eq!(
                        metric(&text, "accelwatch_mqtt_connected{role=\"input\"}"),
                        Some(0.0),
                        "{ca} {client:?}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{ca} {client:?}: no failure counted"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            stop(daemon).await;
        }

        // Accepted: input and output (same broker, same TLS settings) go
        // over the TLS listener; the test's clients use the plain one.
        let (_watcher, mut watched) =
            client(broker.port, "watcher", &["accelwatch/+/features"]).await;
        let daemon = Daemon::start(tls_config("ca", Some("ca")), Vec::new())
            .await
            .unwrap();
        let addr = daemon.telemetry_addr().unwrap();
        wait_metric(addr, "accelwatch_mqtt_connected{role=\"input\"}", 1.0).await;
        wait_metric(addr, "accelwatch_mqtt_connected{role=\"output\"}", 1.0).await;
        let (publisher, _) = client(broker.port, "publisher", &[]).await;
        let rows = demo_rows();
        let rows = rows.values().next().unwrap();
        publish(
            &publisher,
            "sensors/tls-1/accel",
            json_samples(&rows[..256]),
        )
        .await;
        let mut got = Received::default();
        got.until(&mut watched, "features over TLS", |r| {
            r.on("accelwatch/tls-1/features").len() >= windows_of(256)
        })
        .await;
        stop(daemon).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_named_by_a_payload_field() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Broker::start();
        let (_watcher, mut watched) =
            client(broker.port, "watcher", &["accelwatch/+/features"]).await;
        let mut config = mqtt_config(&broker);
        config.input.mqtt.topics = vec![TopicEntry::Filter("plant/accel".into())];
        config.input.mqtt.device_field = Some("id".into());
        assert_valid(&config);
        let (daemon, addr) = start_connected(config).await;
        let (publisher, _) = client(broker.port, "publisher", &[]).await;
        let rows = demo_rows();
        let rows = rows.values().next().unwrap();
        let tagged = |id: &str, rows: &[(f64, [f64; 3])]| {
            let samples: Vec<Value> = rows
                .iter()
                .map(|(t, v)| serde_json::json!({"id": id, "t": t, "ax": v[0], "ay": v[1], "az": v[2]}))
                .collect();
            serde_json::to_vec(&samples).unwrap()
        };
        publish(&publisher, "plant/accel", tagged("press-1", &rows[..128])).await;
        publish(&publisher, "plant/accel", json_samples(&rows[..128])).await;
        publish(&publisher, "plant/accel", tagged("press-2", &rows[..128])).await;
        let mut got = Received::default();
        got.until(&mut watched, "one window per tagged device", |r| r.0.len() >= 2)
            .await;
        assert_eq!(got.on("accelwatch/press-1/features").len(), 1);
        assert_eq!(got.on("accelwatch/press-2/features").len(), 1);
        wait_metric(addr, "accelwatch_mqtt_unrouted_total", 1.0).await;
        stop(daemon).await;
    })
    .await
    .expect("test timed out");
}

/// Rows of a CSV with columns `key`, `t_ms`, `ax`, `ay`, `az`, grouped by
/// `key` (and, if given, only where `filter` = value).
fn csv_rows(path: &Path, key: &str, filter: Option<(&str, &str)>) -> BTreeMap<String, Rows> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (k, t, ax, ay, az) = (col(key), col("t_ms"), col("ax"), col("ay"), col("az"));
    let filter = filter.map(|(name, value)| (col(name), value));
    let mut rows: BTreeMap<String, Rows> = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if filter.is_some_and(|(i, value)| f[i] != value) {
            continue;
        }
        let n = |i: usize| f[i].parse::<f64>().unwrap();
        rows.entry(f[k].to_string())
            .or_default()
            .push((n(t), [n(ax), n(ay), n(az)]));
    }
    rows
}

/// Publishes every device's rows in batches of 32 samples, the devices
/// interleaved as live sensors would be.
async fn stream(publisher: &AsyncClient, devices: &[(String, Rows)]) {
    let longest = devices.iter().map(|(_, r)| r.len()).max().unwrap_or(0);
    for start in (0..longest).step_by(32) {
        for (device, rows) in devices {
            if start < rows.len() {
                let end = (start + 32).min(rows.len());
                let topic = format!("sensors/{device}/accel");
                publish(publisher, &topic, json_samples(&rows[start..end])).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_without_a_model_calibrates_then_alerts_and_keeps_its_model() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Broker::start();
        let (_watcher, mut watched) = client(
            broker.port,
            "watcher",
            &["accelwatch/status", "accelwatch/+/alert"],
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        let mut config = online_config(&broker, &models);
        config.training.min_windows = 280;
        config.input.mqtt.command_topic = Some("accelwatch/command".into());
        assert_valid(&config);
        let (daemon, addr) = start_connected(config.clone()).await;
        assert_eq!(
            metric(
                &scrape(addr).await,
                "accelwatch_model_state{scope=\"fleet\",state=\"calibrating\"}"
            ),
            Some(1.0)
        );

        // Normal data: the PEN recordings of subjects 1-7 (about 260
        // windows), with 30-odd windows of another motion (ABD) in the
        // middle that nobody marked: it must not become normal.
        let mut devices: Vec<(String, Rows)> = csv_rows(&train_csv(), "series", None)
            .into_iter()
            .map(|(series, rows)| (format!("pen-{series}"), rows))
            .collect();
        let abd = csv_rows(&demo_csv(), "device", Some(("exercise", "ABD")))
            .remove("watch-9")
            .unwrap();
        devices.insert(devices.len() / 2, ("unmarked-abd".to_string(), abd));
        let (publisher, _) = client(broker.port, "publisher", &[]).await;
        stream(&publisher, &devices).await;

        let mut got = Received::default();
        got.until(&mut watched, "a model trained online", |r| {
            r.on("accelwatch/status")
                .iter()
                .any(|s| s["model_state"] == "serving")
        })
        .await;
        let statuses = got.on("accelwatch/status");
        let calibrating: Vec<f64> = statuses
            .iter()
            .filter(|s| s["model_state"] == "calibrating")
            .map(|s| s["progress"].as_f64().unwrap())
            .collect();
        assert!(calibrating.len() >= 3, "progress is reported: {statuses:?}");
        assert!(calibrating.windows(2).all(|p| p[1] >= p[0]));
        let text = scrape(addr).await;
        assert_eq!(
            metric(
                &text,
                "accelwatch_model_state{scope=\"fleet\",state=\"serving\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            metric(&text, "accelwatch_training_runs_total{result=\"ok\"}"),
            Some(1.0)
        );
        let excluded = metric(&text, "accelwatch_training_excluded_windows_total").unwrap();
        assert!(
            excluded >= 10.0,
            "the unmarked ABD windows are left out: {excluded}"
        );

        // Now live: PEN, then ABD and the other motions raise alerts.
        let live = csv_rows(&demo_csv(), "device", None)
            .remove("watch-10")
            .unwrap();
        stream(&publisher, &[("watch-10".to_string(), live)]).await;
        got.until(&mut watched, "an alert from the online model", |r| {
            r.on("accelwatch/watch-10/alert")
                .iter()
                .any(|a| a["event"] == "raise")
        })
        .await;
        let served = got
            .on("accelwatch/status")
            .iter()
            .find_map(|s| s["model"].as_str().map(String::from))
            .unwrap();
        let text = scrape(addr).await;
        let drift = metric(&text, "accelwatch_drift_ratio{scope=\"fleet\"}").unwrap();
        assert!(drift > 1.0, "ABD and FEL are not PEN: drift {drift}");

        // Control: an unknown HTTP command, an invalid MQTT one, then a
        // retraining from the windows judged normal since (more PEN).
        assert_eq!(post(addr, "/control/format-disk").await.0, 404);
        assert_eq!(
            post(addr, "/control/mark?label=abnormal&from_ms=9&to_ms=1")
                .await
                .0,
            400
        );
        assert_eq!(
            post(
                addr,
                "/control/mark?label=abnormal&from_ms=0&to_ms=1&device=nobody"
            )
            .await
            .0,
            202
        );
        wait_metric(
            addr,
            "accelwatch_commands_total{command=\"mark\",result=\"accepted\"}",
            1.0,
        )
        .await;
        publish(
            &publisher,
            "accelwatch/command",
            br#"{"command":"retrain","now":1}"#.to_vec(),
        )
        .await;
        wait_metric(
            addr,
            "accelwatch_commands_total{command=\"unknown\",result=\"invalid\"}",
            2.0,
        )
        .await;
        let more_pen: Vec<(String, Rows)> = csv_rows(&train_csv(), "series", None)
            .into_iter()
            .map(|(series, rows)| (format!("pen-again-{series}"), rows))
            .collect();
        stream(&publisher, &more_pen).await;
        got.until(&mut watched, "a serving status with the drift ratio", |r| {
            r.on("accelwatch/status")
                .iter()
                .any(|s| s["model_state"] == "serving" && s["drift"].as_f64().is_some())
        })
        .await;
        // The command overtakes queued windows: let the scorer catch up.
        let mut last = -1.0;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = metric(&scrape(addr).await, "accelwatch_windows_total").unwrap();
            if now == last {
                break;
            }
            last = now;
        }
        publish(
            &publisher,
            "accelwatch/command",
            br#"{"command":"retrain"}"#.to_vec(),
        )
        .await;
        wait_metric(
            addr,
            "accelwatch_commands_total{command=\"retrain\",result=\"accepted\"}",
            1.0,
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let outcome = loop {
            let text = scrape(addr).await;
            let ok = metric(&text, "accelwatch_training_runs_total{result=\"ok\"}").unwrap_or(0.0);
            let rejected =
                metric(&text, "accelwatch_training_runs_total{result=\"rejected\"}").unwrap_or(0.0);
            if ok + rejected >= 2.0 {
                break if ok == 2.0 { "ok" } else { "rejected" };
            }
            assert!(Instant::now() < deadline, "the retraining never finished");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let versions = |models: &Path| {
            std::fs::read_dir(models)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "onnx")
                })
                .count()
        };
        eprintln!("the retrained model was {outcome}");
        if outcome == "ok" {
            assert_eq!(versions(&models), 2);
            // Back to the first model.
            assert_eq!(post(addr, "/control/rollback").await.0, 202);
            let deadline = Instant::now() + Duration::from_secs(30);
            while !scrape(addr)
                .await
                .contains(&format!("accelwatch_model_info{{id=\"{served}\""))
            {
                assert!(Instant::now() < deadline, "rollback to {served}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            assert_eq!(versions(&models), 1, "a rejected model is not stored");
            // Nothing older to roll back to: refused, the model stays.
            assert_eq!(post(addr, "/control/rollback").await.0, 202);
            wait_metric(
                addr,
                "accelwatch_commands_total{command=\"rollback\",result=\"refused\"}",
                1.0,
            )
            .await;
            assert!(scrape(addr)
                .await
                .contains(&format!("accelwatch_model_info{{id=\"{served}\"")));
        }
        stop(daemon).await;

        // A restart serves the stored model at once.
        let daemon = Daemon::start(config, Vec::new()).await.unwrap();
        let text = scrape(daemon.telemetry_addr().unwrap()).await;
        assert_eq!(
            metric(
                &text,
                "accelwatch_model_state{scope=\"fleet\",state=\"serving\"}"
            ),
            Some(1.0)
        );
        assert!(
            text.contains(&format!("accelwatch_model_info{{id=\"{served}\"")),
            "{served}"
        );
        stop(daemon).await;
        let listed = accelwatch()
            .args(["models", "list", "--dir"])
            .arg(&models)
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout).to_string();
        assert_eq!(listed.lines().count(), 1, "{listed}");
        assert!(
            listed.starts_with("* ") && listed.contains(&served),
            "{listed}"
        );
    })
    .await
    .expect("test timed out");
}

/// `rows` one after the other, each shifted to start 20 ms after the
/// previous one ends (one device recording several sessions).
fn back_to_back<'a>(parts: impl IntoIterator<Item = &'a Rows>, start_ms: f64) -> Rows {
    let mut joined = Rows::new();
    let mut next = start_ms;
    for rows in parts {
        let first = rows.first().map_or(0.0, |r| r.0);
        joined.extend(rows.iter().map(|(t, v)| (t - first + next, *v)));
        next = joined.last().map_or(next, |r| r.0 + 20.0);
    }
    joined
}

/// `device`'s feature records of windows ending from `from_ms` on.
fn features_from<'r>(got: &'r Received, device: &str, from_ms: f64) -> Vec<&'r Value> {
    got.on(&format!("accelwatch/{device}/features"))
        .into_iter()
        .filter(|w| w["t_end"].as_f64().unwrap() >= from_ms)
        .collect()
}

/// The share of `device`'s feature records from `from_ms` on over the
/// threshold.
fn over_share(got: &Received, device: &str, from_ms: f64) -> f64 {
    let records = features_from(got, device, from_ms);
    let over = records
        .iter()
        .filter(|r| r["over_threshold"] == true)
        .count();
    over as f64 / records.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_device_calibrates_a_model_of_its_own() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Broker::start();
        let (_watcher, mut watched) = client(
            broker.port,
            "watcher",
            &["accelwatch/status/#", "accelwatch/+/features"],
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        let mut config = online_config(&broker, &models);
        config.training.scope = accelwatch::config::ScopeKind::Device;
        config.training.max_scopes = 2;
        config.training.min_windows = 60;
        assert_valid(&config);
        let (daemon, addr) = start_connected(config.clone()).await;

        // One wrist does the pendulum, the other abduction: each device's
        // normal is its own motion.
        let pen = csv_rows(&train_csv(), "series", None);
        let pen_rows = back_to_back(pen.values().take(4), 0.0);
        let abd9 = csv_rows(&demo_csv(), "device", Some(("exercise", "ABD")))
            .remove("watch-9")
            .unwrap();
        let fel9 = csv_rows(&demo_csv(), "device", Some(("exercise", "FEL")))
            .remove("watch-9")
            .unwrap();
        let abd_rows = back_to_back([&abd9, &fel9], 0.0);
        let (publisher, _) = client(broker.port, "publisher", &[]).await;
        stream(
            &publisher,
            &[
                ("pen-dev".to_string(), pen_rows.clone()),
                ("abd-dev".to_string(), abd_rows.clone()),
            ],
        )
        .await;
        let mut got = Received::default();
        got.until(
            &mut watched,
            "both devices served by their own model",
            |r| {
                ["pen-dev", "abd-dev"].iter().all(|d| {
                    r.on(&format!("accelwatch/status/device/{d}"))
                        .iter()
                        .any(|s| s["model_state"] == "serving")
                })
            },
        )
        .await;
        for device in ["pen-dev", "abd-dev"] {
            let statuses = got.on(&format!("accelwatch/status/device/{device}"));
            assert!(
                statuses
                    .iter()
                    .all(|s| s["scope"] == format!("device:{device}").as_str()),
                "{statuses:?}"
            );
            assert!(statuses.iter().any(|s| s["model_state"] == "calibrating"));
            let versions: Vec<_> = std::fs::read_dir(models.join("devices").join(device))
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "onnx"))
                .collect();
            assert_eq!(versions.len(), 1, "{device}: one version of its own");
        }
        assert!(
            !std::fs::read_dir(&models).unwrap().any(|e| e
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "onnx")),
            "no fleet model"
        );
        let text = scrape(addr).await;
        let infos: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("accelwatch_model_info{"))
            .collect();
        assert_eq!(infos.len(), 2, "{infos:?}");
        assert!(infos.iter().any(|l| l.contains("scope=\"device:pen-dev\"")));
        assert!(infos.iter().any(|l| l.contains("scope=\"device:abd-dev\"")));
        let id = |l: &str| {
            l.split("id=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_string()
        };
        assert_ne!(id(infos[0]), id(infos[1]), "two different models");

        // Live: both wrists now do the pendulum (another subject's). The
        // abduction wrist's model finds it abnormal far more often than the
        // pendulum wrist's.
        let pen10 = csv_rows(&demo_csv(), "device", Some(("exercise", "PEN")))
            .remove("watch-10")
            .unwrap();
        let abd10 = csv_rows(&demo_csv(), "device", Some(("exercise", "ABD")))
            .remove("watch-10")
            .unwrap();
        let mut live = Received::default();
        let after_pen = pen_rows.last().unwrap().0 + 20.0;
        let after_abd = abd_rows.last().unwrap().0 + 20.0;
        stream(
            &publisher,
            &[
                ("pen-dev".to_string(), back_to_back([&pen10], after_pen)),
                ("abd-dev".to_string(), back_to_back([&pen10], after_abd)),
            ],
        )
        .await;
        // (watch-10's PEN has a pause in it, where each window restarts.)
        let expected = windows_of(pen10.len()) - 2;
        live.until(&mut watched, "the live windows scored", |r| {
            features_from(r, "pen-dev", after_pen).len() >= expected
                && features_from(r, "abd-dev", after_abd).len() >= expected
        })
        .await;
        let pen_share = over_share(&live, "pen-dev", after_pen);
        let abd_share = over_share(&live, "abd-dev", after_abd);
        eprintln!("live PEN over threshold: pen-dev {pen_share:.2}, abd-dev {abd_share:.2}");
        assert!(
            abd_share > 0.5 && abd_share > pen_share + 0.3,
            "pen-dev {pen_share:.2}, abd-dev {abd_share:.2}"
        );

        // A third device is past training.max_scopes: the fleet scope
        // takes it, and says so.
        stream(
            &publisher,
            &[("extra".to_string(), back_to_back([&abd10], 0.0))],
        )
        .await;
        let extra = windows_of(abd10.len()) as f64;
        wait_metric(addr, "accelwatch_scope_overflow_windows_total", extra).await;
        let text = scrape(addr).await;
        assert_eq!(
            metric(&text, "accelwatch_calibration_windows{scope=\"fleet\"}"),
            Some(extra)
        );

        // Commands address a scope; a rollback must name one.
        assert_eq!(post(addr, "/control/rollback").await.0, 202);
        wait_metric(
            addr,
            "accelwatch_commands_total{command=\"rollback\",result=\"refused\"}",
            1.0,
        )
        .await;
        assert_eq!(
            post(addr, "/control/retrain?scope=device:nobody").await.0,
            202
        );
        wait_metric(
            addr,
            "accelwatch_commands_total{command=\"retrain\",result=\"refused\"}",
            1.0,
        )
        .await;
        assert_eq!(
            post(addr, "/control/calibrate?scope=device%3Aabd-dev")
                .await
                .0,
            202
        );
        wait_metric(
            addr,
            "accelwatch_model_state{scope=\"device:abd-dev\",state=\"calibrating\"}",
            1.0,
        )
        .await;
        let text = scrape(addr).await;
        assert_eq!(
            metric(
                &text,
                "accelwatch_model_state{scope=\"device:pen-dev\",state=\"serving\"}"
            ),
            Some(1.0)
        );
        // A mark reaches every scope and outlives a restart.
        assert_eq!(
            post(
                addr,
                "/control/mark?label=abnormal&from_ms=0&to_ms=1000&device=pen-dev"
            )
            .await
            .0,
            202
        );
        wait_metric(
            addr,
            "accelwatch_commands_total{command=\"mark\",result=\"accepted\"}",
            1.0,
        )
        .await;
        assert!(models.join("devices/pen-dev/marks.json").exists());
        stop(daemon).await;

        // A restart finds every scope again: pen-dev serves at once, the
        // fleet scope resumes its collection.
        let daemon = Daemon::start(config, Vec::new()).await.unwrap();
        let text = scrape(daemon.telemetry_addr().unwrap()).await;
        assert_eq!(
            metric(
                &text,
                "accelwatch_model_state{scope=\"device:pen-dev\",state=\"serving\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            metric(&text, "accelwatch_calibration_windows{scope=\"fleet\"}"),
            Some(extra)
        );

        // `models rollback --scope` and a reload (SIGHUP's) switch a running
        // daemon's device model: here to a copy of abd-dev's model.
        let onnx_in = |device: &str| {
            std::fs::read_dir(models.join("devices").join(device))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|x| x == "onnx"))
                .unwrap()
        };
        let abd_model = accelwatch::model::LoadedModel::load(&onnx_in("abd-dev")).unwrap();
        std::fs::copy(
            onnx_in("abd-dev"),
            models.join("devices/pen-dev/0000000000001-abd.onnx"),
        )
        .unwrap();
        let rolled = accelwatch()
            .args(["models", "rollback", "--scope", "device:pen-dev", "--to"])
            .arg("0000000000001-abd")
            .arg("--dir")
            .arg(&models)
            .output()
            .unwrap();
        assert!(rolled.status.success(), "{rolled:?}");
        let reloader = daemon.reloader();
        tokio::task::spawn_blocking(move || reloader.reload("test"))
            .await
            .unwrap()
            .expect("a reload with no fleet model is not an error");
        let wanted = format!(
            "accelwatch_model_info{{id=\"{}\",scope=\"device:pen-dev\"",
            abd_model.meta.id
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !scrape(daemon.telemetry_addr().unwrap())
            .await
            .contains(&wanted)
        {
            assert!(Instant::now() < deadline, "{wanted}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        wait_metric(
            daemon.telemetry_addr().unwrap(),
            "accelwatch_reloads_total{result=\"ok\"}",
            1.0,
        )
        .await;
        stop(daemon).await;
        let listed = accelwatch()
            .args(["models", "list", "--dir"])
            .arg(&models)
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout).to_string();
        for heading in ["fleet:", "device:abd-dev:", "device:pen-dev:"] {
            assert!(listed.lines().any(|l| l == heading), "{listed}");
        }
        assert_eq!(
            listed.lines().filter(|l| l.starts_with("* ")).count(),
            2,
            "{listed}"
        );
        assert!(listed.contains("* 0000000000001-abd"), "{listed}");
        let misspelt = accelwatch()
            .args(["models", "list", "--scope", "device:pen-deb", "--dir"])
            .arg(&models)
            .output()
            .unwrap();
        assert_eq!(misspelt.status.code(), Some(78), "{misspelt:?}");
        assert!(
            !models.join("devices/pen-deb").exists(),
            "listing made no directory"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_groups_are_topic_patterns() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Broker::start();
        let (_watcher, mut watched) =
            client(broker.port, "watcher", &["accelwatch/status/#"]).await;
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        let mut config = online_config(&broker, &models);
        config.input.mqtt.topics = vec![TopicEntry::Filter("plant/+/{device}/accel".into())];
        config.training.scope = accelwatch::config::ScopeKind::Group;
        config.training.groups = vec![accelwatch::config::GroupConfig {
            name: "line1".into(),
            topics: vec!["plant/line1/#".into()],
        }];
        config.training.min_windows = 1000;
        assert_valid(&config);
        let (daemon, addr) = start_connected(config).await;
        let rows = demo_rows().remove("watch-9").unwrap();
        let part = &rows[..64 * 20 + 64];
        let (publisher, _) = client(broker.port, "publisher", &[]).await;
        for (topic, rows) in [
            ("plant/line1/w1/accel", part),
            ("plant/line1/w2/accel", part),
            ("plant/line2/w3/accel", part),
        ] {
            for chunk in rows.chunks(32) {
                publish(&publisher, topic, json_samples(chunk)).await;
            }
        }
        let per_device = windows_of(part.len()) as f64;
        wait_metric(
            addr,
            "accelwatch_calibration_windows{scope=\"group:line1\"}",
            2.0 * per_device,
        )
        .await;
        wait_metric(
            addr,
            "accelwatch_calibration_windows{scope=\"fleet\"}",
            per_device,
        )
        .await;
        let mut got = Received::default();
        got.until(&mut watched, "the group's retained status", |r| {
            r.on("accelwatch/status/group/line1")
                .iter()
                .any(|s| s["scope"] == "group:line1" && s["model_state"] == "calibrating")
        })
        .await;
        assert_eq!(
            std::fs::read_to_string(models.join("groups/line1/scope")).unwrap(),
            "group:line1"
        );
        stop(daemon).await;
    })
    .await
    .expect("test timed out");
}
