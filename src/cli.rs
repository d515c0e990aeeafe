//! Command-line definitions.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::logging::LogFormat;
use crate::model::config::Variant;
use crate::recording::RowFilter;

#[derive(Debug, Parser)]
#[command(
    name = "accelwatch",
    version,
    about = "Accelerometer streams in, autoencoder features and anomaly alerts out."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `accelwatch=debug`;
    /// default `info` (`warn` for the demo, whose console shows the events).
    #[arg(long, global = true, env = "ACCELWATCH_LOG")]
    pub log: Option<String>,
    /// Log format on stderr: text (coloured on a terminal), json, or
    /// journald (syslog priority prefixes, no timestamps).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "ACCELWATCH_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config and the model it names; exit 0 when good, 78 when not.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Train an autoencoder on a CSV recording and write one ONNX file.
    Train(TrainArgs),
    /// Score every window of a CSV recording offline; one JSON line per window.
    Score(ScoreArgs),
    /// Measure a model on a labelled recording (ROC AUC, PR AUC, alarms).
    Evaluate(EvaluateArgs),
    /// Write the sidecar metadata (`<model>.json`) of a model made by another
    /// tool, its threshold a quantile of its scores on a recording of normal data.
    Calibrate(CalibrateArgs),
    /// Train on shipped real data, then replay held-out motion live, with /metrics.
    Demo(DemoArgs),
    /// The model versions in a model directory (model.dir, online training).
    #[command(subcommand)]
    Models(ModelsCommand),
    /// The evidence kept for raised alerts (detector.evidence_dir).
    #[command(subcommand)]
    Alerts(AlertsCommand),
}

/// Where the evidence is: a directory, or the config that names it.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct EvidenceDirArgs {
    /// The evidence directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The daemon's config (its detector.evidence_dir, or <model.dir>/evidence).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Every kept evidence, newest first: id, time, device, score, threshold.
    List {
        #[command(flatten)]
        from: EvidenceDirArgs,
    },
    /// One evidence: its plot to `--out FILE.svg`, else its JSON on stdout.
    Show {
        /// The evidence id (from `alerts list`, or the alert's `evidence` key).
        id: String,
        #[command(flatten)]
        from: EvidenceDirArgs,
        /// Write the plot (SVG) here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Every version, oldest first; the served one is marked with `*`. With
    /// per-device or per-group models, every scope's (or one `--scope`'s).
    List {
        #[arg(long)]
        dir: PathBuf,
        /// One scope: `fleet`, `device:<id>` or `group:<name>`.
        #[arg(long)]
        scope: Option<String>,
    },
    /// Serve the version before the current one (or `--to NAME`); a running
    /// daemon switches on SIGHUP (any scope) or within
    /// model.watch_interval_ms (the fleet's).
    Rollback {
        #[arg(long)]
        dir: PathBuf,
        /// The scope whose model to roll back (default: the fleet's).
        #[arg(long, default_value = "fleet")]
        scope: String,
        #[arg(long)]
        to: Option<String>,
    },
}

/// How to read a CSV recording.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// The CSV recording.
    #[arg(long)]
    pub data: PathBuf,
    /// Column naming the device (default: the config's, else `device`).
    #[arg(long)]
    pub device_column: Option<String>,
    /// Column of timestamps in ms (default: the config's, else `t_ms`).
    #[arg(long)]
    pub time_column: Option<String>,
    /// Keep only rows where COLUMN is one of the values; repeatable.
    #[arg(long = "include", value_name = "COLUMN=V1,V2")]
    pub filters: Vec<RowFilter>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Config giving channels, window, model and training settings (defaults otherwise).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Where to write the model.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum)]
    pub variant: Option<Variant>,
    /// Channel columns, in order (overrides input.channels).
    #[arg(long, value_delimiter = ',')]
    pub channels: Option<Vec<String>>,
    /// Latent size (overrides model.latent).
    #[arg(long)]
    pub latent: Option<usize>,
    /// Maximum epochs (overrides training.epochs).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Random seed (overrides training.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Directory to write the loss curve (loss.svg) and history (training.json) into.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Column of activity labels: also fit a classifier of the latent code
    /// (`[training.activity]`) into the model file.
    #[arg(long, value_name = "COLUMN")]
    pub label: Option<String>,
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Output file (JSON lines); stdout when absent.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Config giving detector settings and CSV columns.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// The ONNX model (made elsewhere, without accelwatch metadata inside).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Config giving input.channels, input.sample_rate_hz, window.size,
    /// window.hop, training.threshold_quantile and model.backend (defaults otherwise).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Channel columns, in the order of the model's input (overrides input.channels).
    #[arg(long, value_delimiter = ',')]
    pub channels: Option<Vec<String>>,
    /// Samples per window (overrides window.size).
    #[arg(long)]
    pub window: Option<usize>,
    /// Samples between window starts (overrides window.hop).
    #[arg(long)]
    pub hop: Option<usize>,
    /// Sample rate in Hz (overrides input.sample_rate_hz).
    #[arg(long)]
    pub rate: Option<f64>,
    /// The threshold's quantile of the scores (overrides training.threshold_quantile).
    #[arg(long)]
    pub quantile: Option<f64>,
    /// The graph input to feed (default: its only input).
    #[arg(long)]
    pub input: Option<String>,
    /// The output holding the reconstruction (default: `reconstruction`, else the first).
    #[arg(long)]
    pub reconstruction_output: Option<String>,
    /// The output holding the latent code (default: `latent` if present, else none).
    #[arg(long)]
    pub latent_output: Option<String>,
    /// Size of the latent code, when the graph does not declare it.
    #[arg(long)]
    pub latent_dim: Option<usize>,
    /// Where to write the metadata (default: the model's path with `.json`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Column holding the label of each row.
    #[arg(long)]
    pub label: String,
    /// Label value(s) that are normal; every other value is an anomaly.
    #[arg(long, required = true)]
    pub normal: Vec<String>,
    /// Column whose values keep cross-validation folds apart (e.g. subject);
    /// the device otherwise.
    #[arg(long)]
    pub group: Option<String>,
    /// Directory to write report.json, report.md and SVG plots into.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Config giving detector settings and CSV columns.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Replay speed (1 is real time).
    #[arg(long, default_value_t = 4.0)]
    pub speed: f64,
    /// Address of the status page and /metrics (beyond loopback the page
    /// is open to all: the demo's recordings are public).
    #[arg(long, default_value = "127.0.0.1:9898")]
    pub listen: SocketAddr,
    /// Stop after the replay has run once instead of looping until Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// Feed the pipeline straight from the file instead of over the
    /// embedded MQTT broker.
    #[arg(long)]
    pub no_mqtt: bool,
}
