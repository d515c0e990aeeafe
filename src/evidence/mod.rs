//! Alert evidence: when the detector raises an alert, the window that
//! raised it (its samples, the model's reconstruction, the errors per
//! channel, the score and the threshold) and the device's scores just
//! before it, kept in a bounded directory so that "why?" has an answer.
//!
//! The scoring path only copies the raising window (alerts are rare: the
//! detector raises once per episode); the file is written on a thread of
//! its own ([`writer`]) into the [`store`]; the HTTP endpoints
//! (`/api/alerts`) and `accelwatch alerts` read the same store, and
//! [`crate::eval::plots_evidence`] draws it.

pub mod store;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::detect::DetectorConfig;
use crate::model::config::ModelConfig;
use crate::sequence::{Sequence, SequenceError};

/// What the first key of every evidence file says.
pub const FORMAT: &str = "accelwatch-evidence/1";

/// Where the evidence goes when `detector.evidence_dir` is not set: under
/// `model.dir`, next to the model versions.
pub const DEFAULT_SUBDIR: &str = "evidence";

/// The directory evidence is kept in, if any: `detector.evidence_dir`
/// (`"off"`: none), else `<model.dir>/evidence` when `model.dir` is set.
pub fn evidence_dir(detector: &DetectorConfig, model: &ModelConfig) -> Option<PathBuf> {
    match detector.evidence_dir.as_deref() {
        Some("off") => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => model.dir.as_ref().map(|dir| dir.join(DEFAULT_SUBDIR)),
    }
}

/// One of the device's windows before the alert (its score only).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct RecentScore {
    pub seq: u64,
    pub t_end: f64,
    pub score: f32,
}

/// The per-channel normalisation the model applies before it scores
/// (errors are in these units).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvidenceNormalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// The front end's features of the raising window and the model's
/// reconstruction of them, in standardised feature units, one array per
/// channel, a value per row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvidenceFeatures {
    /// The rows' names (`mean`, `std`, `min`, `max`, `dft1`, …).
    pub rows: Vec<String>,
    pub values: Vec<Vec<f32>>,
    pub reconstruction: Vec<Vec<f32>>,
}

/// Everything kept about one raised alert: one file of the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// Always [`FORMAT`].
    pub format: String,
    pub id: String,
    /// When the alert was raised (Unix ms, wall clock).
    pub time_ms: f64,
    pub device: String,
    pub scope: String,
    pub model: String,
    /// The raising window: its sequence number and first and last samples'
    /// timestamps (ms, the data's clock).
    pub seq: u64,
    pub t_start: f64,
    pub t_end: f64,
    pub score: f32,
    pub threshold: f64,
    /// Windows over the threshold in a row that raise an alert.
    pub raise_after: u32,
    pub sample_rate_hz: f64,
    pub channels: Vec<String>,
    /// Mean squared error per channel, in normalised units (as published).
    pub channel_error: Vec<f32>,
    /// The window's samples, one array per channel (units of the input).
    pub samples: Vec<Vec<f32>>,
    /// The model's reconstruction, in the same units and layout; empty
    /// for a model with a front end, which reconstructs `features` instead.
    pub reconstruction: Vec<Vec<f32>>,
    pub normalization: Option<EvidenceNormalization>,
    /// For a model with a front end: what it reconstructed, in its terms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<EvidenceFeatures>,
    /// The device's scores up to and including the raising window, oldest
    /// first (filled in by the writer, which sees every window).
    #[serde(default)]
    pub recent: Vec<RecentScore>,
}

/// What `/api/alerts` and `accelwatch alerts list` show of each.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvidenceSummary {
    pub id: String,
    pub time_ms: f64,
    pub device: String,
    pub scope: String,
    pub model: String,
    pub seq: u64,
    pub t_end: f64,
    pub score: f32,
    pub threshold: f64,
    /// The file's size.
    pub bytes: u64,
}

impl Evidence {
    pub fn summary(&self, bytes: u64) -> EvidenceSummary {
        EvidenceSummary {
            id: self.id.clone(),
            time_ms: self.time_ms,
            device: self.device.clone(),
            scope: self.scope.clone(),
            model: self.model.clone(),
            seq: self.seq,
            t_end: self.t_end,
            score: self.score,
            threshold: self.threshold,
            bytes,
        }
    }

    /// Why this is not evidence we wrote, if it is not: the format, the
    /// id, and arrays of the channels' count and of one length.
    pub fn problem(&self) -> Option<String> {
        let channels = self.channels.len();
        let frames = self.samples.first().map_or(0, Vec::len);
        if self.format != FORMAT {
            Some(format!("format {:?}, not {FORMAT:?}", self.format))
        } else if !is_id(&self.id) {
            Some(format!("id {:?} is not an evidence id", self.id))
        } else if channels == 0
            || self.samples.len() != channels
            || self.reconstruction.len() != self.features.as_ref().map_or(channels, |_| 0)
            || self.channel_error.len() != channels
        {
            Some(format!("arrays do not match the {channels} channels"))
        } else if let Some(f) = self.features.as_ref().filter(|f| {
            f.values.len() != channels
                || f.reconstruction.len() != channels
                || f.values
                    .iter()
                    .chain(&f.reconstruction)
                    .any(|c| c.len() != f.rows.len())
        }) {
            Some(format!(
                "features do not hold {} rows for each of the {channels} channels",
                f.rows.len()
            ))
        } else if frames == 0
            || self
                .samples
                .iter()
                .chain(&self.reconstruction)
                .any(|c| c.len() != frames)
        {
            Some("channels of different lengths".into())
        } else {
            None
        }
    }
}

/// A window's values (time-major, `channels` per frame) as one array per
/// channel.
pub fn by_channel(values: &[f32], channels: usize) -> Vec<Vec<f32>> {
    let channels = channels.max(1);
    (0..channels)
        .map(|c| values.iter().skip(c).step_by(channels).copied().collect())
        .collect()
}

/// The file of the evidence directory that keeps the id counter.
pub const SEQUENCE_FILE: &str = ".sequence";

/// The id of the `n`-th evidence: `n` in 13 digits, a dash and `000000`.
/// Earlier versions wrote the raise's Unix ms and a counter of the process
/// there; the counter starts past them, so ids sort in the order the
/// alerts were raised across versions too.
pub fn id_of(n: u64) -> String {
    format!("{n:013}-000000")
}

/// The number an id sorts by.
pub fn number_of(id: &str) -> Option<u64> {
    is_id(id).then(|| id[..13].parse().ok()).flatten()
}

/// Evidence ids for the scorer, in the order alerts are raised, from a
/// counter kept in the evidence directory ([`crate::sequence`]): a clock
/// stepped back neither reorders them nor makes one twice. The time
/// recorded beside each is the clock's, shown and never sorted by.
#[derive(Debug, Clone)]
pub struct EvidenceIds {
    sequence: Arc<Mutex<Sequence>>,
    clock: Clock,
}

impl EvidenceIds {
    /// The counter of `dir`, past `floor` (the highest id there); a new
    /// one starts at the clock's Unix ms, like the ids of earlier versions.
    pub fn open(dir: &Path, floor: u64, clock: Clock) -> Result<Self, SequenceError> {
        let first = clock.unix_ms() as u64;
        let sequence = Sequence::open(&dir.join(SEQUENCE_FILE), floor, first)?;
        Ok(Self {
            sequence: Arc::new(Mutex::new(sequence)),
            clock,
        })
    }

    /// The next id, and now (Unix ms).
    pub fn next(&self) -> (String, f64) {
        let n = self
            .sequence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        (id_of(n), self.clock.unix_ms())
    }
}

/// An id [`id_of`] (or an earlier version) could have made, and so a
/// safe file name.
pub fn is_id(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 20
        && bytes[..13].iter().all(u8::is_ascii_digit)
        && bytes[13] == b'-'
        && bytes[14..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// The evidence an alert record carries to the writer: built once on the
/// scoring path, shared by reference after that.
pub type SharedEvidence = Arc<Evidence>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_as_raised_whatever_the_clock_and_are_safe_names() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::system();
        let ids = EvidenceIds::open(dir.path(), 0, clock.clone()).unwrap();
        let (a, at) = ids.next();
        clock.step(-86_400_000);
        let (b, bt) = ids.next();
        assert!(bt < at, "the clock went back");
        drop(ids);
        let (c, _) = EvidenceIds::open(dir.path(), 0, clock).unwrap().next();
        assert!(is_id(&a) && is_id(&b) && is_id(&c), "{a} {b} {c}");
        assert!(a < b && b < c, "{a} {b} {c}");
        // An earlier version's id (Unix ms, a counter) sorts before.
        let old = "1764616800000-00000f";
        assert!(is_id(old));
        assert!(old < id_of(number_of(old).unwrap() + 1).as_str());
        for bad in [
            "",
            "../../etc/passwd",
            "1764616800000-00000g",
            "1764616800000_000000",
        ] {
            assert!(!is_id(bad), "{bad}");
        }
    }

    #[test]
    fn windows_are_split_by_channel() {
        let split = by_channel(&[1.0, 10.0, 2.0, 20.0, 3.0, 30.0], 2);
        assert_eq!(split, vec![vec![1.0, 2.0, 3.0], vec![10.0, 20.0, 30.0]]);
    }

    #[test]
    fn the_default_directory_is_under_model_dir() {
        let mut detector = DetectorConfig::default();
        let mut model = ModelConfig::default();
        assert_eq!(evidence_dir(&detector, &model), None, "no model.dir: off");
        model.dir = Some(PathBuf::from("/var/lib/x/models"));
        assert_eq!(
            evidence_dir(&detector, &model),
            Some(PathBuf::from("/var/lib/x/models/evidence"))
        );
        detector.evidence_dir = Some("off".into());
        assert_eq!(evidence_dir(&detector, &model), None);
        detector.evidence_dir = Some("/tmp/e".into());
        assert_eq!(
            evidence_dir(&detector, &model),
            Some(PathBuf::from("/tmp/e"))
        );
    }
}
