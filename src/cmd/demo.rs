//! `accelwatch demo`: trains on shipped real recordings, then streams
//! held-out ones as live devices. With the `embedded-broker` feature (the
//! default) everything goes over MQTT through a broker inside the process:
//! simulated devices publish, the daemon path subscribes, scores and
//! publishes, and the demo prints what it publishes. Without it, the daemon
//! replays the file directly.

use anyhow::{anyhow, Context};

use crate::cli::{DataArgs, DemoArgs};
use crate::cmd::exit::Failure;
use crate::cmd::train::train_model;
use crate::config::{Config, ConfigError};
use crate::daemon::service::serve;
use crate::daemon::Daemon;
use crate::sink::console::ConsoleSink;

// data/watch/train-pen.csv and demo.csv, deflated by build.rs: 0.99 MB in
// the binary rather than 2.75 MB of CSV text.
const DEMO_TRAIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/train-pen.csv.deflate"));
const DEMO_REPLAY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/demo.csv.deflate"));

/// The CSV text of a recording the binary carries.
fn inflate(packed: &[u8]) -> anyhow::Result<Vec<u8>> {
    miniz_oxide::inflate::decompress_to_vec(packed)
        .map_err(|error| anyhow!("the demo data inside this binary is damaged: {error:?}"))
}

pub async fn run(args: DemoArgs) -> Result<(), Failure> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let train_path = dir.path().join("train-pen.csv");
    let replay_path = dir.path().join("demo.csv");
    std::fs::write(&train_path, inflate(DEMO_TRAIN)?).context("writing the demo data")?;
    std::fs::write(&replay_path, inflate(DEMO_REPLAY)?).context("writing the demo data")?;
    let mut config = Config::default();
    config.input.replay.path = replay_path;
    config.input.replay.speed = args.speed;
    config.input.replay.repeat = !args.once;
    config.model.path = dir.path().join("demo.onnx");
    config.output.jsonl = "off".into();
    config.telemetry.listen = args.listen;
    // The demo shows shipped public recordings and has no token to hand
    // out: a --listen beyond loopback (a phone on the same network) is
    // meant to show the page.
    config.telemetry.public_reads = true;
    // The page shows each alert's evidence; it goes with the demo.
    config.detector.evidence_dir = Some(dir.path().join("evidence").display().to_string());
    let problems = config.validate();
    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            path: "<demo>".into(),
            problems,
        }
        .into());
    }
    println!(
        "accelwatch demo: real smartwatch recordings (Burns et al. 2018, see data/watch/README.md).\n\
         1. Training a {} autoencoder on the PEN (pendulum) exercise of subjects 1-7 ...",
        config.model.variant.name()
    );
    let data = DataArgs {
        data: train_path,
        device_column: Some("series".into()),
        time_column: None,
        filters: Vec::new(),
    };
    let config_for_training = config.clone();
    let model_path = config.model.path.clone();
    tokio::task::spawn_blocking(move || {
        train_model(&config_for_training, &data, &model_path, true, None, None)
    })
    .await
    .map_err(|e| anyhow!("training task: {e}"))??;
    #[cfg(feature = "embedded-broker")]
    if !args.no_mqtt {
        return mqtt::run(&args, config).await;
    }
    let daemon = Daemon::start(config, vec![Box::new(ConsoleSink::stdout())]).await?;
    banner(&args, &daemon, "replayed straight into the pipeline");
    serve(daemon, std::time::Duration::from_secs(10)).await?;
    Ok(())
}

fn banner(args: &DemoArgs, daemon: &Daemon, path: &str) {
    let telemetry = daemon.telemetry_addr();
    println!(
        "2. Streaming held-out subjects 9 and 10 {} ({path}): PEN, then ABD, PEN, FEL, TRAP. Motions other \
         than PEN should score over the threshold (|) and raise alerts.\n   Status page: {}   Metrics: {}   ({})\n",
        if args.speed > 0.0 {
            format!("at {}x real time", args.speed)
        } else {
            "as fast as they can be read".to_string()
        },
        telemetry.as_ref().map_or("off".to_string(), |a| format!("http://{a}/")),
        telemetry.as_ref().map_or("off".to_string(), |a| format!("http://{a}/metrics")),
        if args.once { "stops after one pass" } else { "Ctrl-C to stop" }
    );
}

#[cfg(feature = "embedded-broker")]
mod mqtt {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::anyhow;
    use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
    use tokio::sync::{mpsc, oneshot, watch};

    use crate::cli::DemoArgs;
    use crate::cmd::demo::banner;
    use crate::cmd::exit::Failure;
    use crate::config::Config;
    use crate::daemon::Daemon;
    use crate::decode::Format;
    use crate::sink::console::format_message;
    use crate::sink::mqtt::config::MqttOutputConfig;
    use crate::source::config::InputKind;
    use crate::source::mqtt::config::TopicEntry;
    use crate::source::replay::Replay;

    const SENSOR_TOPIC: &str = "sensors/{device}/accel";

    fn client(id: &str, broker: std::net::SocketAddr) -> (AsyncClient, rumqttc::EventLoop) {
        let mut options = MqttOptions::new(id, broker.ip().to_string(), broker.port());
        options.set_max_packet_size(1 << 20, 1 << 20);
        AsyncClient::new(options, 1024)
    }

    pub async fn run(args: &DemoArgs, mut config: Config) -> Result<(), Failure> {
        let broker = tokio::task::spawn_blocking(|| crate::cmd::embedded_broker::start(0))
            .await
            .map_err(|e| anyhow!("starting the broker: {e}"))??;
        let devices = config.input.clone();
        config.input.kind = InputKind::Mqtt;
        config.input.mqtt.url = format!("mqtt://{broker}");
        config.input.mqtt.topics = vec![TopicEntry::Filter(SENSOR_TOPIC.into())];
        config.input.mqtt.format = Format::Csv;
        config.output.mqtt = Some(MqttOutputConfig::default());
        let output = config.output.mqtt.clone().expect("set above");

        // The printer subscribes before anything is published.
        let last_message = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let (subscribed_tx, subscribed) = oneshot::channel();
        let printer = {
            let last_message = last_message.clone();
            let (client, mut events) = client("accelwatch-demo-printer", broker);
            let topics = [
                output.features_topic.replace("{device}", "+"),
                output.alert_topic.replace("{device}", "+"),
            ];
            tokio::spawn(async move {
                let mut subscribed_tx = Some(subscribed_tx);
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                            for topic in &topics {
                                let _ = client.subscribe(topic.as_str(), QoS::AtLeastOnce).await;
                            }
                        }
                        Ok(Event::Incoming(Incoming::SubAck(_))) => {
                            if let Some(tx) = subscribed_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(Event::Incoming(Incoming::Publish(p))) => {
                            last_message
                                .store(started.elapsed().as_millis() as u64, Ordering::SeqCst);
                            if let Some(line) = serde_json::from_slice(&p.payload)
                                .ok()
                                .as_ref()
                                .and_then(format_message)
                            {
                                println!("{line}");
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            })
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), subscribed).await;

        let daemon = Daemon::start(config, Vec::new()).await?;
        banner(
            args,
            &daemon,
            &format!("devices publish to {SENSOR_TOPIC} on the embedded broker mqtt://{broker}"),
        );

        // Simulated devices: the replay's frames, published one sample per message.
        let (frames_tx, mut frames) = mpsc::channel(1024);
        let (stop_devices, stop_rx) = watch::channel(false);
        let replay = tokio::spawn(Replay::open(&devices)?.run(frames_tx, stop_rx));
        let (publisher, mut events) = client("accelwatch-demo-devices", broker);
        let publisher_loop = tokio::spawn(async move { while events.poll().await.is_ok() {} });
        let signal = crate::daemon::service::wait_for_signal();
        tokio::pin!(signal);
        let interrupted = loop {
            tokio::select! {
                frame = frames.recv() => match frame {
                    Some(frame) => {
                        let topic = SENSOR_TOPIC.replace("{device}", &frame.device);
                        if publisher.publish(topic, QoS::AtLeastOnce, false, frame.payload).await.is_err() {
                            break false;
                        }
                    }
                    None => break false,
                },
                _ = &mut signal => break true,
            }
        };
        let _ = stop_devices.send(true);
        let _ = replay.await;
        if !interrupted {
            // Let the last windows go through the daemon and back.
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline
                && started.elapsed().as_millis() as u64 - last_message.load(Ordering::SeqCst) < 1500
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        daemon.shutdown();
        daemon.wait().await?;
        printer.abort();
        publisher_loop.abort();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recordings_inside_the_binary_are_the_shipped_files_byte_for_byte() {
        let shipped = |name: &str| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("data/watch")
                .join(name);
            std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        };
        assert_eq!(inflate(DEMO_TRAIN).unwrap(), shipped("train-pen.csv"));
        assert_eq!(inflate(DEMO_REPLAY).unwrap(), shipped("demo.csv"));
        // Deflated, or the cut in binary size is gone.
        assert!(DEMO_TRAIN.len() + DEMO_REPLAY.len() < shipped("train-pen.csv").len());
    }

    #[test]
    fn damaged_demo_data_is_an_error_not_a_panic() {
        let error = inflate(&DEMO_TRAIN[..DEMO_TRAIN.len() / 2]).unwrap_err();
        assert!(error.to_string().contains("damaged"), "{error}");
    }
}
