//! `[pipeline]`: the queue between the daemon's stages, how long a
//! shutdown may drain it, its threads and how the scorer's is scheduled,
//! and where it keeps its state.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::problem::Problems;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Capacity of the scorer's queue of windows; a full queue holds back
    /// the source, which windows frames on its own task.
    #[serde(default = "PipelineConfig::default_queue_capacity")]
    pub queue_capacity: usize,
    /// On SIGTERM, how long the stages may take to drain before the daemon
    /// gives up and exits non-zero.
    #[serde(default = "PipelineConfig::default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// The daemon's state: the MQTT output's alert spool and its `msg_id`
    /// counter. Unset in the file, [`Config::load`](crate::config::Config::load)
    /// fills it in ([`default_state_dir`]); a config made in code without
    /// one keeps no state (no spool unless `output.mqtt.spool_dir` names one).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Once the pipeline runs, drop the binary's code pages from the
    /// daemon's memory; what still runs comes back on its next call
    /// ([`startup_code`](crate::daemon::startup_code)). Off for a debugger
    /// whose breakpoints must survive the start.
    #[serde(default = "PipelineConfig::default_release_startup_code")]
    pub release_startup_code: bool,
    /// Threads for the inputs, outputs and HTTP (the async runtime); the
    /// scorer always has a thread of its own. One keeps a wake-up from
    /// crossing to a parked thread at every message; 0 is one per core.
    #[serde(default = "PipelineConfig::default_io_threads")]
    pub io_threads: usize,
    /// The scorer's thread in Linux's `SCHED_BATCH`: woken by the input, it
    /// waits for the input's thread to block rather than preempt it
    /// ([`batch_thread`](crate::daemon::batch_thread)). Off: an ordinary
    /// thread, which scores a window as soon as it is queued even when
    /// every core is busy.
    #[serde(default = "PipelineConfig::default_scorer_sched_batch")]
    pub scorer_sched_batch: bool,
}

/// The state directory of a daemon whose config file (`config`) names
/// none: systemd's `$STATE_DIRECTORY` (the unit's `StateDirectory=`, its
/// first entry) when set, else `<stem>.state` beside the config file
/// (`/etc/x/a.toml` keeps its state in `/etc/x/a.state`).
pub fn default_state_dir(config: &Path, state_directory: Option<&str>) -> PathBuf {
    if let Some(first) = state_directory
        .and_then(|dirs| dirs.split(':').next())
        .filter(|first| !first.is_empty())
    {
        return PathBuf::from(first);
    }
    let stem = config
        .file_stem()
        .map_or_else(|| "accelwatch".into(), |s| s.to_string_lossy());
    config.with_file_name(format!("{stem}.state"))
}

/// More would be a typo: one input task and one scorer use few of them.
const MAX_IO_THREADS: usize = 64;

impl PipelineConfig {
    const fn default_queue_capacity() -> usize {
        1024
    }
    const fn default_shutdown_grace_ms() -> u64 {
        10_000
    }
    const fn default_release_startup_code() -> bool {
        true
    }
    pub(crate) const fn default_io_threads() -> usize {
        1
    }
    const fn default_scorer_sched_batch() -> bool {
        true
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            queue_capacity: Self::default_queue_capacity(),
            shutdown_grace_ms: Self::default_shutdown_grace_ms(),
            state_dir: None,
            release_startup_code: Self::default_release_startup_code(),
            io_threads: Self::default_io_threads(),
            scorer_sched_batch: Self::default_scorer_sched_batch(),
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
        check(
            self.io_threads <= MAX_IO_THREADS,
            "pipeline.io_threads",
            format!("must be at most {MAX_IO_THREADS} (0: one per core)"),
        );
        if let Some(dir) = &self.state_dir {
            check(
                !dir.as_os_str().is_empty(),
                "pipeline.state_dir",
                "must not be empty".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_state_dir_is_systemds_else_beside_the_config() {
        let config = Path::new("/etc/accelwatch/accelwatch.toml");
        assert_eq!(
            default_state_dir(config, Some("/var/lib/accelwatch:/var/lib/other")),
            Path::new("/var/lib/accelwatch")
        );
        for unset in [None, Some("")] {
            assert_eq!(
                default_state_dir(config, unset),
                Path::new("/etc/accelwatch/accelwatch.state")
            );
        }
        assert_eq!(
            default_state_dir(Path::new("site.toml"), None),
            Path::new("site.state")
        );
    }
}
