//! A shared subscription splits the input between daemons.

use std::time::Duration;

use accelwatch::daemon::Daemon;

use super::*;
use crate::common::mosquitto::{client, publish, Mosquitto};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_splits_messages_between_daemons() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Mosquitto::start();
        let mut daemons = Vec::new();
        for member in ["a", "b"] {
            let mut config = mqtt_config(&broker);
            config.input.mqtt.client_id = format!("accelwatch-{member}");
            config.input.mqtt.share_group = Some("fleet".into());
            config.output.mqtt = None;
            assert_valid(&config);
            let (daemon, _) = start_connected(config).await;
            let addr = daemon.telemetry_addr().unwrap();
            daemons.push((daemon, addr));
        }
        // Mosquitto hands each message to one member only, round robin;
        // every message here is one whole window of its own device, so the
        // split cannot cut a window.
        let rows = std::sync::Arc::new(demo_rows().into_values().next().unwrap());
        let (publisher, _rx) = client(broker.port, "sensors", &[]).await;
        let messages = 40;
        // Both subscriptions are in place before anything is published.
        for member in ["a", "b"] {
            broker
                .wait_subscribed(
                    &format!("accelwatch-{member}"),
                    "$share/fleet/sensors/+/accel",
                )
                .await;
        }
        let publish_windows = |from: usize, to: usize, prefix: &'static str| {
            let publisher = publisher.clone();
            let rows = rows.clone();
            async move {
                for i in from..to {
                    publish(
                        &publisher,
                        &format!("sensors/{prefix}{i}/accel"),
                        json_samples(&rows[i * 128..(i + 1) * 128]),
                    )
                    .await;
                }
            }
        };
        publish_windows(0, messages, "d").await;
        async fn counts(daemons: &[(Daemon, std::net::SocketAddr)]) -> Vec<f64> {
            let mut counts = Vec::new();
            for (_, addr) in daemons {
                counts
                    .push(metric(&scrape(*addr).await, "accelwatch_windows_total").unwrap_or(0.0));
            }
            counts
        }
        wait_until(
            Duration::from_secs(30),
            &format!("{messages} windows scored between the members"),
            || async { counts(&daemons).await.iter().sum::<f64>() >= messages as f64 },
        )
        .await;
        let per_member = counts(&daemons).await;
        assert_eq!(
            per_member.iter().sum::<f64>(),
            messages as f64,
            "{per_member:?}"
        );
        assert!(
            per_member.iter().all(|n| *n > 0.0),
            "both members work: {per_member:?}"
        );
        // No message reaches both members: a fence of two more windows per
        // member, published after every other one. Each member gets its
        // messages in order, so once every member has scored a fence window,
        // a duplicate would have been scored already.
        let fences = 2 * daemons.len();
        publish_windows(messages, messages + fences, "fence-").await;
        wait_until(
            Duration::from_secs(30),
            "every member to score a fence window",
            || async {
                let now = counts(&daemons).await;
                now.iter()
                    .zip(&per_member)
                    .all(|(now, before)| now > before)
                    && now.iter().sum::<f64>() >= (messages + fences) as f64
            },
        )
        .await;
        let settled = counts(&daemons).await;
        assert_eq!(
            settled.iter().sum::<f64>(),
            (messages + fences) as f64,
            "late duplicates: {per_member:?} then {settled:?}"
        );
        for (daemon, _) in daemons {
            stop(daemon).await;
        }
    })
    .await
    .expect("test timed out");
}
