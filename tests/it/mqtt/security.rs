//! The broker's password and mutual-TLS authentication, in and out.

use std::time::Duration;

use accelwatch::daemon::Daemon;

use super::*;
use crate::common::mosquitto::{client, free_port, publish, Mosquitto, Received};
use crate::common::pki::make_pki;
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Mosquitto::start_with(&[("edge", "s3cret"), ("watcher", "w")]);
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
        // Refusals are counted and retried, by the feature lines' own
        // connection too.
        wait_metric(addr, refused, AtLeast(2.0)).await;
        wait_metric(
            addr,
            "accelwatch_mqtt_connection_failures_total{reason=\"refused\",role=\"features\"}",
            AtLeast(2.0),
        )
        .await;
        assert_eq!(
            metric(
                &scrape(addr).await,
                "accelwatch_mqtt_connected{role=\"input\"}"
            ),
            Some(0.0)
        );
        stop(daemon).await;

        write(&password_file, "s3cret\n");
        let (daemon, _) = start_connected(config).await;
        let addr = daemon.telemetry_addr().unwrap();
        wait_metric(addr, "accelwatch_mqtt_connected{role=\"output\"}", 1.0).await;
        wait_metric(addr, "accelwatch_mqtt_connected{role=\"features\"}", 1.0).await;
        stop(daemon).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_in_and_out() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let tls_port = free_port();
        // A plain listener for the test's clients, and a TLS one that
        // demands a client certificate signed by the test CA.
        let broker = Mosquitto::start_conf(&[], |dir| {
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
            let failures = |text: &str| {
                metric_sum(
                    text,
                    "accelwatch_mqtt_connection_failures_total",
                    &["role=\"input\""],
                )
            };
            wait_until(
                Duration::from_secs(20),
                &format!("{ca} {client:?}: two connection failures counted"),
                || async move { failures(&scrape(addr).await) >= 2.0 },
            )
            .await;
            assert_eq!(
                metric(
                    &scrape(addr).await,
                    "accelwatch_mqtt_connected{role=\"input\"}"
                ),
                Some(0.0),
                "{ca} {client:?}"
            );
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
