//! Why a daemon did not start or did not finish, and its exit code.

use std::net::SocketAddr;

use crate::model::inference::BackendError;
use crate::model::loaded::ModelError;
use crate::problem::Problem;
use crate::scope::store::StoreError;
use crate::source::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("config and model disagree:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Mismatch(Vec<Problem>),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("model.dir: {0}")]
    Store(#[from] StoreError),
    #[error(
        "model.dir {0}: holds no model, and training.mode is \"off\" (train one with \
         `accelwatch train`, or set training.mode = \"online\")"
    )]
    NoModel(std::path::PathBuf),
    #[error("input: {0}")]
    Input(#[from] SourceError),
    #[error("output: {0}")]
    MqttOutput(crate::mqtt::broker::MqttError),
    #[error("output.jsonl: cannot open {path}: {cause}")]
    Output {
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    #[error("detector.evidence_dir: {0}")]
    Evidence(#[from] crate::evidence::store::EvidenceError),
    #[error("telemetry.listen: cannot listen on {addr}: {cause}")]
    Listen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error(
        "model.dir {dir}: holds models for {found} scopes, more than training.max_scopes \
         ({max}); raise it, or remove the directories of scopes no longer wanted"
    )]
    TooManyScopes {
        dir: std::path::PathBuf,
        found: usize,
        max: usize,
    },
    #[error("pipeline stage failed: {0}")]
    Stage(String),
    #[error("scoring failed: {0}")]
    Scoring(#[from] BackendError),
    #[error("did not drain within pipeline.shutdown_grace_ms ({grace_ms} ms): {in_flight}")]
    Drain { grace_ms: u128, in_flight: String },
}

impl DaemonError {
    /// The start-up failure as config problems, each with the key at fault
    /// (`validate` reports what `run` would refuse); `model_key` is the key
    /// that names the model (`model.path`, or `model.dir` when set).
    pub fn problems(&self, model_key: &str) -> Vec<Problem> {
        let key = match self {
            DaemonError::Mismatch(problems) => return problems.clone(),
            DaemonError::Model(_) | DaemonError::NoModel(_) | DaemonError::Store(_) => model_key,
            DaemonError::TooManyScopes { .. } => "training.max_scopes",
            DaemonError::Evidence(_) => "detector.evidence_dir",
            DaemonError::Input(_) => "input",
            DaemonError::MqttOutput(_) => "output.mqtt",
            DaemonError::Output { .. } => "output.jsonl",
            DaemonError::Listen { .. } => "telemetry.listen",
            DaemonError::Stage(_) | DaemonError::Scoring(_) | DaemonError::Drain { .. } => {
                "pipeline"
            }
        };
        vec![Problem {
            key: key.into(),
            message: self.to_string(),
        }]
    }

    /// 78 (EX_CONFIG) when the configuration or the model is at fault.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Mismatch(_)
            | DaemonError::Model(_)
            | DaemonError::Store(_)
            | DaemonError::NoModel(_)
            | DaemonError::TooManyScopes { .. }
            | DaemonError::Input(_)
            | DaemonError::MqttOutput(_)
            | DaemonError::Output { .. }
            | DaemonError::Evidence(_)
            | DaemonError::Listen { .. } => crate::EX_CONFIG,
            DaemonError::Stage(_) | DaemonError::Scoring(_) | DaemonError::Drain { .. } => 1,
        }
    }
}

crate::reason::reason_error!(
    /// Why a scope did not carry out a command (the reason is logged and the
    /// command counted as refused).
    CommandRefused
);
