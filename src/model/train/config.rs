//! `[training]`: how models are trained, offline and online, and in which
//! scopes.

use crate::problem::Problems;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    #[serde(default = "TrainingConfig::default_epochs")]
    pub epochs: usize,
    #[serde(default = "TrainingConfig::default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "TrainingConfig::default_learning_rate")]
    pub learning_rate: f64,
    #[serde(default = "TrainingConfig::default_weight_decay")]
    pub weight_decay: f64,
    /// Fraction of each device's windows (its last ones) held out for
    /// validation, early stopping and threshold calibration.
    #[serde(default = "TrainingConfig::default_validation_fraction")]
    pub validation_fraction: f64,
    /// Epochs without a better validation loss before training stops.
    #[serde(default = "TrainingConfig::default_patience")]
    pub patience: usize,
    #[serde(default = "TrainingConfig::default_seed")]
    pub seed: u64,
    /// Quantile of held-out normal errors used as the anomaly threshold.
    #[serde(default = "TrainingConfig::default_threshold_quantile")]
    pub threshold_quantile: f64,
    /// Epochs of greedy layer-wise pretraining per layer before the whole
    /// stack is fine-tuned (deep only; 0 turns it off).
    #[serde(default)]
    pub pretrain_epochs: usize,
    /// `off`, or `online`: with no model in `model.dir`, the daemon collects
    /// windows and trains one itself.
    #[serde(default)]
    pub mode: TrainingMode,
    /// Windows to collect before the first online training.
    #[serde(default = "TrainingConfig::default_min_windows")]
    pub min_windows: usize,
    /// Most windows kept for an online training (memory: 4 bytes per value).
    #[serde(default = "TrainingConfig::default_max_windows")]
    pub max_windows: usize,
    /// Model versions kept in `model.dir`.
    #[serde(default = "TrainingConfig::default_keep_versions")]
    pub keep_versions: usize,
    /// With online training, retrain this often (hours since the served
    /// model was trained or last retried); 0 retrains on command only.
    #[serde(default)]
    pub retrain_every_h: f64,
    /// Calibration also lasts at least this long (seconds since its first
    /// window, across restarts); 0: min_windows alone decides.
    #[serde(default)]
    pub min_duration_s: f64,
    /// What one model serves: the whole `fleet`, each `device`, or each
    /// `group` of `training.groups` (devices in no group share the fleet
    /// model).
    #[serde(default)]
    pub scope: ScopeKind,
    /// Device groups for `scope = "group"`, first match wins.
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    /// Most scopes with a model of their own; windows of further devices or
    /// groups are scored by the fleet model (and counted).
    #[serde(default = "TrainingConfig::default_max_scopes")]
    pub max_scopes: usize,
    /// Share of one CPU core an online training may use (0 to 1]; the
    /// training thread sleeps between batches to keep to it.
    #[serde(default = "TrainingConfig::default_cpu_share")]
    pub cpu_share: f64,
    /// When a finite input (a replay) ends while a scope's first model
    /// trains, how long the daemon waits for it before it exits; the model
    /// is then stored and the windows that came meanwhile are scored.
    /// SIGTERM does not wait.
    #[serde(default = "TrainingConfig::default_end_wait_ms")]
    pub end_wait_ms: u64,
    /// Bound on the memory online training may hold in windows, over all
    /// scopes (collected and kept for retraining); the config is refused
    /// when max_scopes × max_windows could exceed it.
    #[serde(default = "TrainingConfig::default_max_memory_mb")]
    pub max_memory_mb: usize,
    /// The activity head `train --label` fits.
    #[serde(default)]
    pub activity: ActivityConfig,
}

/// `[training.activity]`: the classifier of the latent code that
/// `train --label COL` adds to the model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityConfig {
    /// Hidden units (ReLU) before the softmax layer; 0: the softmax layer
    /// alone. Unset: 0 when the head reads the front end's features (a
    /// linear head generalises best to unseen people there), 64 on the
    /// code alone (where a linear head is weak).
    #[serde(default)]
    pub hidden: Option<usize>,
    /// Most epochs of the head's own training (early stopping on the
    /// held-out windows' cross-entropy).
    #[serde(default = "ActivityConfig::default_epochs")]
    pub epochs: usize,
    #[serde(default = "ActivityConfig::default_patience")]
    pub patience: usize,
    #[serde(default = "ActivityConfig::default_learning_rate")]
    pub learning_rate: f64,
    /// 0: the head is fitted on the trained encoder's codes (frozen); above
    /// 0: the encoder is trained with it, on its loss plus this weight times
    /// the head's cross-entropy.
    #[serde(default)]
    pub joint_weight: f64,
    /// With a front end (`model.input` spectrum or mix): the head also
    /// reads its standardised features (statistics and spectrum), after the
    /// code. No effect on a raw window.
    #[serde(default = "ActivityConfig::default_front_end")]
    pub front_end: bool,
    /// A frozen head, once early stopping has chosen its epochs, is trained
    /// again from the start for as many on the training and held-out
    /// windows together (false: the early-stopped head is kept).
    #[serde(default = "ActivityConfig::default_refit")]
    pub refit: bool,
}

impl ActivityConfig {
    /// The hidden units of a head that reads the front end's features
    /// (`front_end`) or the code alone.
    pub fn hidden_units(&self, front_end: bool) -> usize {
        self.hidden.unwrap_or(if front_end { 0 } else { 64 })
    }
    const fn default_epochs() -> usize {
        500
    }
    const fn default_patience() -> usize {
        30
    }
    const fn default_learning_rate() -> f64 {
        3e-3
    }
    const fn default_front_end() -> bool {
        true
    }
    const fn default_refit() -> bool {
        true
    }

    fn problems(&self, check: &mut impl FnMut(bool, &str, String)) {
        check(
            self.epochs >= 1,
            "training.activity.epochs",
            "must be at least 1".into(),
        );
        check(
            self.hidden.is_none_or(|h| h <= 4096),
            "training.activity.hidden",
            format!("must be at most 4096, got {}", self.hidden.unwrap_or(0)),
        );
        check(
            self.learning_rate.is_finite() && self.learning_rate > 0.0,
            "training.activity.learning_rate",
            format!("must be positive, got {}", self.learning_rate),
        );
        check(
            self.joint_weight.is_finite() && self.joint_weight >= 0.0,
            "training.activity.joint_weight",
            format!("must be 0 (frozen) or positive, got {}", self.joint_weight),
        );
    }
}

impl Default for ActivityConfig {
    fn default() -> Self {
        Self {
            hidden: None,
            epochs: Self::default_epochs(),
            patience: Self::default_patience(),
            learning_rate: Self::default_learning_rate(),
            joint_weight: 0.0,
            front_end: Self::default_front_end(),
            refit: Self::default_refit(),
        }
    }
}

/// What one model serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScopeKind {
    #[default]
    Fleet,
    Device,
    Group,
}

/// A device group: the devices heard on topics matching any of `topics`
/// (MQTT filters; `+`, `#` and `{device}` allowed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub name: String,
    pub topics: Vec<String>,
}

/// Whether the daemon trains its own models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainingMode {
    #[default]
    Off,
    Online,
}

impl TrainingConfig {
    const fn default_epochs() -> usize {
        1000
    }
    const fn default_batch_size() -> usize {
        32
    }
    const fn default_learning_rate() -> f64 {
        1e-3
    }
    const fn default_weight_decay() -> f64 {
        1e-4
    }
    const fn default_validation_fraction() -> f64 {
        0.2
    }
    const fn default_patience() -> usize {
        20
    }
    const fn default_seed() -> u64 {
        42
    }
    const fn default_threshold_quantile() -> f64 {
        0.99
    }
    const fn default_min_windows() -> usize {
        2000
    }
    const fn default_max_windows() -> usize {
        20_000
    }
    const fn default_keep_versions() -> usize {
        5
    }
    const fn default_max_scopes() -> usize {
        16
    }
    const fn default_cpu_share() -> f64 {
        0.5
    }
    const fn default_end_wait_ms() -> u64 {
        600_000
    }
    const fn default_max_memory_mb() -> usize {
        1024
    }

    /// How many scopes may hold windows at once.
    fn scopes_held(&self) -> u64 {
        match self.scope {
            ScopeKind::Fleet => 1,
            // The fleet scope takes the overflow.
            _ => (self.max_scopes as u64).saturating_add(1),
        }
    }

    /// Most bytes online training may hold in windows of `features` values:
    /// per scope, the calibration collection or the retraining buffer, each
    /// up to max_windows.
    pub fn memory_bound_bytes(&self, features: usize) -> u64 {
        let scopes = self.scopes_held();
        // Saturating: any count a config can hold gives a bound, not an overflow.
        scopes
            .saturating_mul(2 * 4)
            .saturating_mul(self.max_windows as u64)
            .saturating_mul(features as u64)
    }
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            epochs: Self::default_epochs(),
            batch_size: Self::default_batch_size(),
            learning_rate: Self::default_learning_rate(),
            weight_decay: Self::default_weight_decay(),
            validation_fraction: Self::default_validation_fraction(),
            patience: Self::default_patience(),
            seed: Self::default_seed(),
            threshold_quantile: Self::default_threshold_quantile(),
            pretrain_epochs: 0,
            mode: TrainingMode::Off,
            min_windows: Self::default_min_windows(),
            max_windows: Self::default_max_windows(),
            keep_versions: Self::default_keep_versions(),
            retrain_every_h: 0.0,
            min_duration_s: 0.0,
            scope: ScopeKind::Fleet,
            groups: Vec::new(),
            max_scopes: Self::default_max_scopes(),
            cpu_share: Self::default_cpu_share(),
            end_wait_ms: Self::default_end_wait_ms(),
            max_memory_mb: Self::default_max_memory_mb(),
            activity: ActivityConfig::default(),
        }
    }
}

impl TrainingConfig {
    /// The problems of `[training]`, for windows of `features` values;
    /// online training and per-scope models need a model directory
    /// (`model_dir_set`), device groups the MQTT input (`input_is_mqtt`).
    pub fn problems(
        &self,
        features: usize,
        model_dir_set: bool,
        input_is_mqtt: bool,
        problems: &mut Problems,
    ) {
        let mut check = |ok: bool, key: &str, message: String| problems.check(ok, key, message);
        let training = self;
        check(
            training.epochs >= 1,
            "training.epochs",
            "must be at least 1".into(),
        );
        check(
            training.batch_size >= 1,
            "training.batch_size",
            "must be at least 1".into(),
        );
        check(
            training.learning_rate.is_finite() && training.learning_rate > 0.0,
            "training.learning_rate",
            format!("must be positive, got {}", training.learning_rate),
        );
        check(
            training.weight_decay.is_finite() && training.weight_decay >= 0.0,
            "training.weight_decay",
            format!("must be 0 or positive, got {}", training.weight_decay),
        );
        check(
            training.validation_fraction > 0.0 && training.validation_fraction < 1.0,
            "training.validation_fraction",
            format!(
                "must be strictly between 0 and 1, got {}",
                training.validation_fraction
            ),
        );
        check(
            training.threshold_quantile > 0.0 && training.threshold_quantile < 1.0,
            "training.threshold_quantile",
            format!(
                "must be strictly between 0 and 1, got {}",
                training.threshold_quantile
            ),
        );
        if training.mode == TrainingMode::Online {
            check(
                model_dir_set,
                "model.dir",
                "training.mode = \"online\" needs a model directory to keep its models in".into(),
            );
        }
        check(
            training.min_windows >= 20 && training.min_windows <= training.max_windows,
            "training.min_windows",
            format!(
                "must be at least 20 and at most training.max_windows ({}), got {}",
                training.max_windows, training.min_windows
            ),
        );
        if training.scope != ScopeKind::Fleet {
            let kind = if training.scope == ScopeKind::Device {
                "device"
            } else {
                "group"
            };
            check(
                model_dir_set,
                "model.dir",
                format!(
                    "training.scope = \"{kind}\" keeps a model per scope under a model directory"
                ),
            );
            check(
                training.mode == TrainingMode::Online,
                "training.mode",
                format!(
                    "training.scope = \"{kind}\" needs \"online\": a new {kind} calibrates a model of its own"
                ),
            );
        }
        if training.scope == ScopeKind::Group {
            check(
                !training.groups.is_empty(),
                "training.groups",
                "training.scope = \"group\" needs at least one [[training.groups]]".into(),
            );
            check(
                input_is_mqtt,
                "training.groups",
                "groups are topic patterns: they need input.kind = \"mqtt\"".into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, group) in training.groups.iter().enumerate() {
            let key = format!("training.groups[{i}]");
            check(
                !group.name.is_empty()
                    && group.name.len() <= 64
                    && group
                        .name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                &format!("{key}.name"),
                format!(
                    "{:?}: 1 to 64 of A-Z, a-z, 0-9, - and _ (it names a directory)",
                    group.name
                ),
            );
            check(
                names.insert(group.name.as_str()),
                &format!("{key}.name"),
                format!("{:?} is used twice", group.name),
            );
            check(
                !group.topics.is_empty(),
                &format!("{key}.topics"),
                "needs at least one topic filter".into(),
            );
            for topic in &group.topics {
                if let Err(why) = crate::mqtt::topic::DeviceFilter::parse_with(topic, true) {
                    check(false, &format!("{key}.topics"), why.0);
                }
            }
        }
        check(
            training.min_duration_s.is_finite() && training.min_duration_s >= 0.0,
            "training.min_duration_s",
            format!(
                "must be 0 (off) or positive, got {}",
                training.min_duration_s
            ),
        );
        check(
            training.max_scopes >= 1,
            "training.max_scopes",
            "must be at least 1".into(),
        );
        check(
            training.cpu_share > 0.0 && training.cpu_share <= 1.0,
            "training.cpu_share",
            format!(
                "must be more than 0 and at most 1 (of one core), got {}",
                training.cpu_share
            ),
        );
        if training.mode == TrainingMode::Online {
            let bound = training.memory_bound_bytes(features);
            check(
                bound <= (training.max_memory_mb as u64).saturating_mul(1024 * 1024),
                "training.max_memory_mb",
                format!(
                    "{} MiB, but online training may hold up to {} MiB of windows ({} scope(s) × \
                     2 × training.max_windows {} × {features} values × 4 bytes); lower \
                     training.max_windows or training.max_scopes, or raise this bound",
                    training.max_memory_mb,
                    bound.div_ceil(1024 * 1024),
                    training.scopes_held(),
                    training.max_windows
                ),
            );
        }
        training.activity.problems(&mut check);
        check(
            training.keep_versions >= 1,
            "training.keep_versions",
            "must be at least 1".into(),
        );
        check(
            training.retrain_every_h.is_finite() && training.retrain_every_h >= 0.0,
            "training.retrain_every_h",
            format!(
                "must be 0 (off) or positive, got {}",
                training.retrain_every_h
            ),
        );
    }
}
