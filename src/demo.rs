//! `accelwatch demo`: trains on shipped real recordings, then streams
//! held-out ones as live devices through the daemon's pipeline and prints a
//! line per window and per alert.

use anyhow::{anyhow, Context};

use crate::app::{serve, train_model, Failure};
use crate::cli::{DataArgs, DemoArgs};
use crate::config::{Config, ConfigError};
use crate::daemon::Daemon;
use crate::sink::console::ConsoleSink;

const DEMO_TRAIN: &str = include_str!("../data/watch/train-pen.csv");
const DEMO_REPLAY: &str = include_str!("../data/watch/demo.csv");

pub async fn run(args: DemoArgs) -> Result<(), Failure> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let train_path = dir.path().join("train-pen.csv");
    let replay_path = dir.path().join("demo.csv");
    std::fs::write(&train_path, DEMO_TRAIN).context("writing the demo data")?;
    std::fs::write(&replay_path, DEMO_REPLAY).context("writing the demo data")?;
    let mut config = Config::default();
    config.input.replay.path = replay_path;
    config.input.replay.speed = args.speed;
    config.input.replay.repeat = !args.once;
    config.model.path = dir.path().join("demo.onnx");
    config.output.jsonl = "off".into();
    config.telemetry.listen = args.listen;
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
         1. Training a basic autoencoder on the PEN (pendulum) exercise of subjects 1-7 ..."
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
        train_model(&config_for_training, &data, &model_path, true, None)
    })
    .await
    .map_err(|e| anyhow!("training task: {e}"))??;
    let daemon = Daemon::start(config, vec![Box::new(ConsoleSink::stdout())]).await?;
    banner(&args, &daemon, "replayed as two live devices");
    serve(daemon, std::time::Duration::from_secs(10)).await
}

fn banner(args: &DemoArgs, daemon: &Daemon, path: &str) {
    println!(
        "2. Streaming held-out subjects 9 and 10 at {}x ({path}): PEN, then ABD, PEN, FEL, TRAP. Motions other \
         than PEN should score over the threshold (|) and raise alerts.\n   Metrics: http://{}/metrics   ({})\n",
        args.speed,
        daemon.telemetry_addr().map_or("off".to_string(), |a| a.to_string()),
        if args.once { "stops after one pass" } else { "Ctrl-C to stop" }
    );
}
