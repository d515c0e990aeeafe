//! Plain MQTT input and output: samples in, features, alerts and status
//! out, across a broker restart, oversize packets and odd device ids.

use std::collections::BTreeMap;

use accelwatch::config::{MqttProtocol, TopicEntry};
use accelwatch::daemon::Daemon;
use rumqttc::QoS;
use serde_json::Value;

use super::*;
use crate::common::mosquitto::{client, publish, resubscribed, Mosquitto, Received};
use crate::common::*;

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
        let broker = Mosquitto::start();
        let (_watcher, mut watched) = client(broker.port, "watcher", &["accelwatch/#"]).await;
        let mut config = mqtt_config(&broker);
        config.input.mqtt.protocol = protocol;
        config.input.max_payload_bytes = 64 * 1024;
        let (daemon, _) = start_connected(config).await;
        let addr = daemon.telemetry_addr().unwrap();
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
        // Every published window was timed, from its frame's arrival.
        let count = "accelwatch_window_latency_seconds_count";
        wait_metric(addr, count, total as f64).await;
        let text = scrape(addr).await;
        let all = metric(
            &text,
            "accelwatch_window_latency_seconds_bucket{le=\"+Inf\"}",
        );
        assert_eq!(all, Some(total as f64), "{text}");
        let sum = metric(&text, "accelwatch_window_latency_seconds_sum").unwrap();
        let mean = sum / total as f64;
        assert!(
            mean > 0.0 && mean < 5.0,
            "a mean latency of {mean} s is not plausible on loopback"
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
        let mut broker = Mosquitto::start();
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
            let (status, body) = get(addr, "/readyz").await;
            (status, serde_json::from_str::<Value>(&body).unwrap())
        };
        let (status, body) = readyz().await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["input"]["connected"], true);

        broker.kill();
        wait_metric(addr, "accelwatch_mqtt_connected{role=\"input\"}", 0.0).await;
        wait_metric(addr, "accelwatch_mqtt_connected{role=\"output\"}", 0.0).await;
        wait_metric(addr, "accelwatch_mqtt_connected{role=\"features\"}", 0.0).await;
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
        wait_metric(addr, "accelwatch_mqtt_connected{role=\"features\"}", 1.0).await;

        // The watcher reconnects by itself; wait for its subscription, and
        // for the daemon's own (the broker keeps no session).
        resubscribed(&mut watched).await;
        broker
            .wait_subscribed("accelwatch-test", "sensors/+/accel")
            .await;
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
        let broker = Mosquitto::start();
        let mut config = mqtt_config(&broker);
        config.input.mqtt.protocol = protocol;
        config.input.max_payload_bytes = 16 * 1024;
        config.input.mqtt.max_packet_bytes = 64 * 1024;
        // A persistent session: QoS 1 messages wait at the broker while the
        // connection is re-established.
        config.input.mqtt.clean_session = false;
        let (daemon, _) = start_connected(config).await;
        let addr = daemon.telemetry_addr().unwrap();
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
        // And no connection failure of any other reason, input or output:
        // over MQTT 5 the connection is kept.
        assert_eq!(
            metric_sum(&text, "accelwatch_mqtt_connection_failures_total", &[]),
            lost_connections,
            "{text}"
        );
        stop(daemon).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_named_by_a_payload_field() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Mosquitto::start();
        let (_watcher, mut watched) =
            client(broker.port, "watcher", &["accelwatch/+/features"]).await;
        let mut config = mqtt_config(&broker);
        config.input.mqtt.topics = vec![TopicEntry::Filter("plant/accel".into())];
        config.input.mqtt.device_field = Some("id".into());
        assert_valid(&config);
        let (daemon, _) = start_connected(config).await;
        let addr = daemon.telemetry_addr().unwrap();
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

/// `output.mqtt.features_connections = 3`: three connections to the
/// broker, every window's line delivered once, each device's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_lines_spread_over_connections_keep_each_devices_order() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Mosquitto::start();
        let (_watcher, mut watched) =
            client(broker.port, "watcher", &["accelwatch/+/features"]).await;
        let mut config = mqtt_config(&broker);
        config.output.mqtt.as_mut().unwrap().features_connections = 3;
        let (daemon, _) = start_connected(config).await;
        let addr = daemon.telemetry_addr().unwrap();
        for role in ["features", "features-1", "features-2"] {
            wait_metric(
                addr,
                &format!("accelwatch_mqtt_connected{{role=\"{role}\"}}"),
                1.0,
            )
            .await;
        }

        // Eight devices, so that every connection carries some.
        let (devices, total, _publisher) = streamed_devices(&broker, 8).await;
        let mut got = Received::default();
        got.until(&mut watched, "every window", |r| r.0.len() >= total)
            .await;
        for (device, r) in &devices {
            let seqs: Vec<u64> = got
                .on(&format!("accelwatch/{device}/features"))
                .iter()
                .map(|w| w["seq"].as_u64().unwrap())
                .collect();
            assert_eq!(
                seqs,
                (0..windows_of(r.len()) as u64).collect::<Vec<_>>(),
                "{device}"
            );
        }
        let text = scrape(addr).await;
        assert_eq!(
            metric_sum(
                &text,
                "accelwatch_mqtt_publish_dropped_total",
                &["kind=\"features\""]
            ),
            0.0
        );
        stop(daemon).await;
    })
    .await
    .expect("test timed out");
}

/// `output.mqtt.features_lines_per_message = 8`: a message holds up to 8
/// lines of its device, newline-delimited, each the line it would have
/// been alone; every window arrives once, in order, the last ones once
/// their linger is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_lines_of_a_device_share_messages_up_to_the_bound() {
    grouped_lines(Duration::from_millis(200), false).await;
}

/// With a linger longer than the test, the lines still waiting in groups
/// leave when the daemon stops, not later and not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_lines_waiting_in_groups_leave_at_shutdown() {
    grouped_lines(Duration::from_secs(600), true).await;
}

async fn grouped_lines(linger: Duration, stop_first: bool) {
    use crate::common::mosquitto::Got;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Mosquitto::start();
        let (_watcher, mut watched) =
            client(broker.port, "watcher", &["accelwatch/+/features"]).await;
        let mut config = mqtt_config(&broker);
        let output = config.output.mqtt.as_mut().unwrap();
        output.features_lines_per_message = 8;
        output.features_linger_ms = linger.as_millis() as u64;
        let (daemon, _) = start_connected(config).await;
        let addr = daemon.telemetry_addr().unwrap();
        wait_metric(addr, "accelwatch_mqtt_connected{role=\"features\"}", 1.0).await;

        let (devices, total, _publisher) = streamed_devices(&broker, 4).await;
        let daemon = if stop_first {
            wait_metric(addr, "accelwatch_windows_total", total as f64).await;
            stop(daemon).await;
            None
        } else {
            Some(daemon)
        };

        let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let (mut lines, mut messages, mut most) = (0, 0, 0);
        while lines < total {
            let got = tokio::time::timeout(Duration::from_secs(10), watched.recv()).await;
            let Ok(Some(Got::Message(topic, payload))) = got else {
                match got {
                    Ok(Some(_)) => continue,
                    _ => panic!("{lines} of {total} lines arrived"),
                }
            };
            messages += 1;
            let text = String::from_utf8(payload).unwrap();
            most = most.max(text.lines().count());
            for line in text.split('\n') {
                let window: Value = serde_json::from_str(line).expect("each line a window's JSON");
                let device = window["device"].as_str().unwrap().to_string();
                assert_eq!(topic, format!("accelwatch/{device}/features"));
                seqs.entry(device)
                    .or_default()
                    .push(window["seq"].as_u64().unwrap());
                lines += 1;
            }
        }
        for (device, r) in &devices {
            assert_eq!(
                seqs[device],
                (0..windows_of(r.len()) as u64).collect::<Vec<_>>(),
                "{device}"
            );
        }
        assert!(
            most > 1 && most <= 8,
            "at most 8 lines a message, some more than 1: {most}"
        );
        assert!(messages < total, "{messages} messages for {total} lines");
        if let Some(daemon) = daemon {
            stop(daemon).await;
        }
    })
    .await
    .expect("test timed out");
}

/// Streams `n` devices `dev-0` … (the demo's recordings in turn, 2000
/// samples at most each) to `broker`; returns them, the windows they make,
/// and the publisher (kept until the test ends, so that nothing it queued
/// is cut off).
async fn streamed_devices(
    broker: &Mosquitto,
    n: usize,
) -> (Vec<(String, Rows)>, usize, rumqttc::AsyncClient) {
    let rows = demo_rows();
    let devices: Vec<(String, Rows)> = (0..n)
        .map(|i| {
            let (_, r) = rows.iter().nth(i % rows.len()).unwrap();
            (format!("dev-{i}"), r[..r.len().min(2000)].to_vec())
        })
        .collect();
    let (publisher, _) = client(broker.port, "publisher", &[]).await;
    stream(&publisher, &devices).await;
    let total = devices.iter().map(|(_, r)| windows_of(r.len())).sum();
    (devices, total, publisher)
}
