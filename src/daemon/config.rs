//! `[pipeline]`: the queues between the daemon's stages and how long a
//! shutdown may drain them.

use serde::{Deserialize, Serialize};

use crate::problem::Problems;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Capacity of each queue between stages; a full queue blocks the stage
    /// before it, back to the source.
    #[serde(default = "PipelineConfig::default_queue_capacity")]
    pub queue_capacity: usize,
    /// On SIGTERM, how long the stages may take to drain before the daemon
    /// gives up and exits non-zero.
    #[serde(default = "PipelineConfig::default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

impl PipelineConfig {
    const fn default_queue_capacity() -> usize {
        1024
    }
    const fn default_shutdown_grace_ms() -> u64 {
        10_000
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            queue_capacity: Self::default_queue_capacity(),
            shutdown_grace_ms: Self::default_shutdown_grace_ms(),
        }
    }
}

impl PipelineConfig {
    /// The problems of `[pipeline]`.
    pub fn problems(&self, problems: &mut Problems) {
        let mut check = |ok: bool, key: &str, message: String| problems.check(ok, key, message);
        check(
            self.queue_capacity >= 1,
            "pipeline.queue_capacity",
            "must be at least 1".into(),
        );
    }
}
