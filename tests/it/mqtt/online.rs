//! Models trained online from the MQTT input: calibration, alerts,
//! retraining and rollback, per device and per group of devices.

use std::path::Path;
use std::time::Duration;

use accelwatch::config::TopicEntry;
use accelwatch::daemon::Daemon;

use super::*;
use crate::common::mosquitto::{client, publish, Mosquitto, Received};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_without_a_model_calibrates_then_alerts_and_keeps_its_model() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Mosquitto::start();
        let (_watcher, mut watched) = client(
            broker.port,
            "watcher",
            &[
                "accelwatch/status",
                "accelwatch/+/alert",
                "accelwatch/+/features",
            ],
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        let mut config = online_config(&broker, &models);
        config.training.min_windows = 280;
        config.input.mqtt.command_topic = Some("accelwatch/command".into());
        assert_valid(&config);
        let (daemon, _) = start_connected(config.clone()).await;
        let addr = daemon.telemetry_addr().unwrap();
        assert_eq!(
            metric(
                &scrape(addr).await,
                "accelwatch_model_state{scope=\"fleet\",state=\"calibrating\"}"
            ),
            Some(1.0)
        );
        // Calibrating, it serves no model: not ready, and the body says why.
        let (status, body) = crate::common::http::get(addr, "/readyz").await;
        let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status, 503, "{body}");
        assert_eq!(ready["calibrating"]["scopes"], 1, "{body}");
        assert_eq!(ready["calibrating"]["first"], serde_json::json!(["fleet"]));
        assert_eq!(ready["subscribed"], true, "{body}");
        assert!(
            ready["reason"].as_str().unwrap().contains("calibrating"),
            "{body}"
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
        // Statuses not yet handed to the broker are merged (the newest says
        // as much), so a busy machine may publish fewer steps than windows.
        assert!(calibrating.len() >= 2, "progress is reported: {statuses:?}");
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
        let (status, body) = crate::common::http::get(addr, "/readyz").await;
        assert_eq!(status, 200, "ready once the model is served: {body}");
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

        // Control: without the bearer token, or with a wrong one, nothing
        // is looked at (401); then an unknown HTTP command, an invalid MQTT
        // one, then a retraining from the windows judged normal since
        // (more PEN).
        for authorization in [
            None,
            Some("Bearer not-the-token-0123456789"),
            Some("Basic eDp5"),
        ] {
            let (status, body) = post_as(addr, "/control/retrain", authorization).await;
            assert_eq!(status, 401, "{authorization:?}: {body}");
        }
        assert_eq!(
            metric(&scrape(addr).await, "accelwatch_control_unauthorized_total"),
            Some(3.0)
        );
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
        // The command overtakes queued windows: wait until the scorer has
        // caught up (every window of the new PEN scored).
        got.until(&mut watched, "every window of the new PEN scored", |r| {
            scored_every_window(r, &more_pen)
        })
        .await;
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
        let outcome = retraining_outcome(addr).await;
        // Whether a model retrained on more PEN alarms on more of the
        // held-back windows than the served one is a matter of a few
        // windows and moves with rounding; each branch has a test that
        // decides it (online::tests::a_retraining_worse_on_the_held_back_
        // windows_is_rejected_and_not_stored, and
        // a_retrained_model_is_served_and_rolled_back). Here the daemon's
        // state must agree with the outcome, whichever it was.
        let stored = if outcome == "rejected" { 1 } else { 2 };
        assert_eq!(versions(&models), stored, "the retraining was {outcome}");
        if outcome == "ok" {
            // Back to the first model, so what follows is the same.
            roll_back_to(addr, &served, "the rollback to the first model").await;
        }
        assert_eq!(
            served_fleet(&scrape(addr).await).as_deref(),
            Some(served.as_str())
        );
        // Nothing older to roll back to: refused, the model stays.
        assert_eq!(post(addr, "/control/rollback").await.0, 202);
        wait_metric(
            addr,
            "accelwatch_commands_total{command=\"rollback\",result=\"refused\"}",
            1.0,
        )
        .await;
        assert_eq!(
            served_fleet(&scrape(addr).await).as_deref(),
            Some(served.as_str())
        );
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
            .run();
        assert!(listed.status.success(), "models list: {listed:?}");
        let listed = String::from_utf8_lossy(&listed.stdout).to_string();
        assert_eq!(listed.lines().count(), stored, "{listed}");
        assert!(
            listed
                .lines()
                .any(|line| line.starts_with("* ") && line.contains(&served)),
            "{listed}"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_device_calibrates_a_model_of_its_own() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Mosquitto::start();
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
        let (daemon, _) = start_connected(config.clone()).await;
        let addr = daemon.telemetry_addr().unwrap();

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
            .run();
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
        let telemetry = daemon.telemetry_addr().unwrap();
        wait_until(Duration::from_secs(30), &wanted, || async {
            scrape(telemetry).await.contains(&wanted)
        })
        .await;
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
            .run();
        assert!(listed.status.success(), "models list: {listed:?}");
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
            .run();
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
        let broker = Mosquitto::start();
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
        let (daemon, _) = start_connected(config).await;
        let addr = daemon.telemetry_addr().unwrap();
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

/// The fleet model served, by /metrics.
fn served_fleet(text: &str) -> Option<String> {
    text.lines()
        .filter(|l| l.starts_with("accelwatch_model_info{") && l.contains("scope=\"fleet\""))
        .find_map(|l| Some(l.split("id=\"").nth(1)?.split('"').next()?.to_string()))
}

/// The model versions stored in `models` (the fleet scope's directory).
fn versions(models: &Path) -> usize {
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
}

/// Windows `rows` make, restarting at every gap over the default
/// `window.max_gap_ms` (1 s).
fn windows_in(rows: &Rows) -> usize {
    let mut windows = 0;
    let mut run = 0;
    let mut last: Option<f64> = None;
    for (t, _) in rows {
        if last.is_some_and(|last| t - last > 1000.0) {
            windows += windows_of(run);
            run = 0;
        }
        run += 1;
        last = Some(*t);
    }
    windows + windows_of(run)
}

/// Whether every window of `devices` has come back as features.
fn scored_every_window(got: &Received, devices: &[(String, Rows)]) -> bool {
    devices.iter().all(|(device, rows)| {
        got.on(&format!("accelwatch/{device}/features")).len() >= windows_in(rows)
    })
}

/// Posts a rollback, waits for it to be accepted (the first one of the
/// daemon's life) and for `model` to be served.
async fn roll_back_to(addr: std::net::SocketAddr, model: &str, what: &str) {
    assert_eq!(post(addr, "/control/rollback").await.0, 202);
    wait_metric(
        addr,
        "accelwatch_commands_total{command=\"rollback\",result=\"accepted\"}",
        1.0,
    )
    .await;
    wait_until(Duration::from_secs(30), what, || async {
        served_fleet(&scrape(addr).await).as_deref() == Some(model)
    })
    .await;
}

/// Waits for the second training run (the retraining) to end; `ok` or
/// `rejected`.
async fn retraining_outcome(addr: std::net::SocketAddr) -> &'static str {
    let runs = |text: &str, result: &str| {
        metric(
            text,
            &format!("accelwatch_training_runs_total{{result=\"{result}\"}}"),
        )
        .unwrap_or(0.0)
    };
    wait_until(
        Duration::from_secs(90),
        "the retraining to finish",
        || async {
            let text = scrape(addr).await;
            runs(&text, "ok") + runs(&text, "rejected") + runs(&text, "failed") >= 2.0
        },
    )
    .await;
    let text = scrape(addr).await;
    assert_eq!(runs(&text, "failed"), 0.0, "{text}");
    if runs(&text, "ok") == 2.0 {
        "ok"
    } else {
        "rejected"
    }
}

/// The accepted branch of a retraining: a motion the served model finds
/// abnormal is marked normal, streamed, and retrained on; the retrained
/// model alarms less on the held-back windows, is stored and served; a
/// rollback over HTTP serves the first model again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrained_model_is_served_and_rolled_back() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let broker = Mosquitto::start();
        let (_watcher, mut watched) = client(
            broker.port,
            "watcher",
            &["accelwatch/status", "accelwatch/+/features"],
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        let mut config = online_config(&broker, &models);
        config.training.min_windows = 120;
        assert_valid(&config);
        let (daemon, _) = start_connected(config).await;
        let addr = daemon.telemetry_addr().unwrap();

        // Calibrated on the PEN recordings.
        let pen: Vec<(String, Rows)> = csv_rows(&train_csv(), "series", None)
            .into_iter()
            .map(|(series, rows)| (format!("pen-{series}"), rows))
            .collect();
        let (publisher, _) = client(broker.port, "publisher", &[]).await;
        stream(&publisher, &pen).await;
        let mut got = Received::default();
        got.until(&mut watched, "a model trained online", |r| {
            r.on("accelwatch/status")
                .iter()
                .any(|s| s["model_state"] == "serving")
        })
        .await;
        wait_metric(addr, "accelwatch_training_runs_total{result=\"ok\"}", 1.0).await;
        let first = served_fleet(&scrape(addr).await).expect("a fleet model served");
        assert_eq!(versions(&models), 1);

        // Abduction and flexion, twice over, marked normal before they
        // arrive (their clocks start at 10^7 ms, past every PEN sample).
        let start = 10_000_000.0;
        assert_eq!(
            post(
                addr,
                &format!("/control/mark?label=normal&from_ms={start}&to_ms=1e12")
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
        let motion = |device: &str, exercise: &str| {
            csv_rows(&demo_csv(), "device", Some(("exercise", exercise)))
                .remove(device)
                .unwrap()
        };
        let marked: Vec<(String, Rows)> = ["watch-9", "watch-10"]
            .into_iter()
            .map(|device| {
                let (abd, fel) = (motion(device, "ABD"), motion(device, "FEL"));
                (
                    format!("new-{device}"),
                    back_to_back([&abd, &fel, &abd, &fel], start),
                )
            })
            .collect();
        stream(&publisher, &marked).await;
        got.until(&mut watched, "every marked window scored", |r| {
            scored_every_window(r, &marked)
        })
        .await;
        let over: usize = marked
            .iter()
            .map(|(device, _)| {
                got.on(&format!("accelwatch/{device}/features"))
                    .iter()
                    .filter(|w| w["over_threshold"] == true)
                    .count()
            })
            .sum();
        let total: usize = marked.iter().map(|(_, rows)| windows_in(rows)).sum();
        assert!(
            over * 2 > total,
            "the served model finds the new motion abnormal: {over} of {total} windows"
        );
        let normal = metric(
            &scrape(addr).await,
            "accelwatch_retrain_windows{scope=\"fleet\"}",
        )
        .unwrap();
        assert!(
            normal >= (total - 2 * marked.len()) as f64,
            "the marked windows are kept for retraining whatever their score: {normal} of {total}"
        );

        assert_eq!(post(addr, "/control/retrain").await.0, 202);
        wait_metric(
            addr,
            "accelwatch_commands_total{command=\"retrain\",result=\"accepted\"}",
            1.0,
        )
        .await;
        let outcome = retraining_outcome(addr).await;
        assert_eq!(outcome, "ok", "the retrained model was {outcome}");
        assert_eq!(versions(&models), 2, "the retrained model is stored");
        wait_until(
            Duration::from_secs(30),
            "the retrained model served",
            || async { served_fleet(&scrape(addr).await).is_some_and(|id| id != first) },
        )
        .await;
        let retrained = served_fleet(&scrape(addr).await).unwrap();

        // Back to the first model.
        roll_back_to(
            addr,
            &first,
            &format!("the rollback from {retrained} to {first}"),
        )
        .await;
        stop(daemon).await;
        let listed = accelwatch()
            .args(["models", "list", "--dir"])
            .arg(&models)
            .run();
        assert!(listed.status.success(), "models list: {listed:?}");
        let listed = String::from_utf8_lossy(&listed.stdout).to_string();
        assert_eq!(listed.lines().count(), 2, "{listed}");
        assert_eq!(
            listed.lines().filter(|l| l.starts_with("* ")).count(),
            1,
            "one version is current: {listed}"
        );
    })
    .await
    .expect("test timed out");
}
