//! The evidence directory: one `<id>.json` file per raised alert, at most
//! `evidence_max_count` files and `evidence_max_bytes` bytes, the oldest
//! removed first. Files are written atomically (the one
//! [`write_atomically`]), so a power cut leaves a whole file or none; a
//! file that is not ours (another name, or not evidence inside) is left
//! alone, skipped with a warning and counted.
//!
//! The index (ids, sizes, summaries) is in memory behind a mutex shared by
//! the writer thread and the HTTP handlers; the scoring path never takes
//! it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{is_id, number_of, Evidence, EvidenceIds, EvidenceSummary, SEQUENCE_FILE};
use crate::clock::Clock;
use crate::scope::store::write_atomically;

/// Why the store could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("evidence directory {}: {cause}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("no evidence {id:?} in {}", dir.display())]
    Unknown { id: String, dir: PathBuf },
    #[error("{}: not readable evidence: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

/// The store's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvidenceLimits {
    pub max_count: usize,
    pub max_bytes: u64,
}

/// A file found in the directory that is not kept evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Not named like evidence (`<id>.json`), or not a file.
    Foreign,
    /// Named like evidence, but not evidence inside.
    Corrupt,
}

impl Skipped {
    pub const fn as_str(self) -> &'static str {
        match self {
            Skipped::Foreign => "foreign",
            Skipped::Corrupt => "corrupt",
        }
    }
}

#[derive(Debug)]
struct Index {
    /// By id, which sorts by time.
    entries: BTreeMap<String, EvidenceSummary>,
    bytes: u64,
    skipped: Vec<(PathBuf, Skipped)>,
    /// The highest id a file of the directory is named after (kept or
    /// corrupt): new ids go above it.
    highest: u64,
}

/// The store; clones share it.
#[derive(Debug, Clone)]
pub struct EvidenceStore {
    dir: PathBuf,
    limits: EvidenceLimits,
    index: Arc<Mutex<Index>>,
}

impl EvidenceStore {
    /// Opens (and creates) `dir`, indexing what a previous run kept and
    /// removing the oldest beyond `limits`. Foreign and corrupt files are
    /// logged once each and left in place (see [`skipped`](Self::skipped)).
    pub fn open(dir: &Path, limits: EvidenceLimits) -> Result<Self, EvidenceError> {
        std::fs::create_dir_all(dir).map_err(|cause| EvidenceError::Io {
            path: dir.to_path_buf(),
            cause,
        })?;
        let store = Self::read(dir, limits)?;
        for (path, why) in store.skipped() {
            tracing::warn!(
                path = %path.display(), reason = why.as_str(),
                "skipping a file in the evidence directory that is not evidence we wrote \
                 (left in place; counted in accelwatch_evidence_skipped_files_total)"
            );
        }
        store.prune()?;
        Ok(store)
    }

    /// Reads an existing directory without changing it (`accelwatch alerts`).
    pub fn read(dir: &Path, limits: EvidenceLimits) -> Result<Self, EvidenceError> {
        let io = |cause| EvidenceError::Io {
            path: dir.to_path_buf(),
            cause,
        };
        let mut index = Index {
            entries: BTreeMap::new(),
            bytes: 0,
            skipped: Vec::new(),
            highest: 0,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        paths.sort();
        for path in paths {
            if path.file_name().is_some_and(|n| n == SEQUENCE_FILE) {
                continue;
            }
            let id = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|id| is_id(id) && path.is_file());
            let Some(id) = id else {
                index.skipped.push((path, Skipped::Foreign));
                continue;
            };
            index.highest = index.highest.max(number_of(id).unwrap_or(0));
            match read_file(&path) {
                Ok((evidence, bytes)) if evidence.id == id => {
                    index.bytes += bytes;
                    index
                        .entries
                        .insert(id.to_string(), evidence.summary(bytes));
                }
                _ => index.skipped.push((path, Skipped::Corrupt)),
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            limits,
            index: Arc::new(Mutex::new(index)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ids of new evidence: above every id here, in the order raised
    /// (see [`EvidenceIds`]).
    pub fn ids(&self, clock: Clock) -> Result<EvidenceIds, EvidenceError> {
        let floor = self.lock().highest + 1;
        EvidenceIds::open(&self.dir, floor, clock).map_err(|e| EvidenceError::Io {
            path: e.path,
            cause: e.cause,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn limits(&self) -> EvidenceLimits {
        self.limits
    }

    /// The files found on opening that are not kept evidence.
    pub fn skipped(&self) -> Vec<(PathBuf, Skipped)> {
        self.lock().skipped.clone()
    }

    /// Files and bytes kept.
    pub fn usage(&self) -> (usize, u64) {
        let index = self.lock();
        (index.entries.len(), index.bytes)
    }

    /// Every kept evidence's summary, newest first.
    pub fn list(&self) -> Vec<EvidenceSummary> {
        self.lock().entries.values().rev().cloned().collect()
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The evidence `id`, read from its file.
    pub fn get(&self, id: &str) -> Result<Evidence, EvidenceError> {
        let unknown = || EvidenceError::Unknown {
            id: id.to_string(),
            dir: self.dir.clone(),
        };
        if !is_id(id) || !self.lock().entries.contains_key(id) {
            return Err(unknown());
        }
        match read_file(&self.path_of(id)) {
            Ok((evidence, _)) => Ok(evidence),
            Err(EvidenceError::Io { cause, .. })
                if cause.kind() == std::io::ErrorKind::NotFound =>
            {
                // Removed from under us: forget it.
                let mut index = self.lock();
                if let Some(gone) = index.entries.remove(id) {
                    index.bytes -= gone.bytes;
                }
                Err(unknown())
            }
            Err(e) => Err(e),
        }
    }

    /// Writes `evidence` durably, then removes the oldest files beyond the
    /// limits; returns how many were removed.
    pub fn put(&self, evidence: &Evidence) -> Result<usize, EvidenceError> {
        let path = self.path_of(&evidence.id);
        let bytes = serde_json::to_vec(evidence).expect("evidence serialises");
        write_atomically(&path, &bytes).map_err(|cause| EvidenceError::Io {
            path: path.clone(),
            cause,
        })?;
        {
            let mut index = self.lock();
            let summary = evidence.summary(bytes.len() as u64);
            if let Some(old) = index.entries.insert(evidence.id.clone(), summary) {
                index.bytes -= old.bytes;
            }
            index.bytes += bytes.len() as u64;
        }
        self.prune()
    }

    /// Removes the oldest files until the count and the bytes are within
    /// the limits (the newest is always kept). Oldest is lowest id: ids
    /// are handed out in the order alerts are raised, and written in it.
    fn prune(&self) -> Result<usize, EvidenceError> {
        let mut removed = 0;
        loop {
            let oldest = {
                let index = self.lock();
                let over = index.entries.len() > self.limits.max_count
                    || index.bytes > self.limits.max_bytes;
                if !over || index.entries.len() <= 1 {
                    return Ok(removed);
                }
                index.entries.keys().next().cloned().expect("not empty")
            };
            let path = self.path_of(&oldest);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(cause) => return Err(EvidenceError::Io { path, cause }),
            }
            let mut index = self.lock();
            if let Some(gone) = index.entries.remove(&oldest) {
                index.bytes -= gone.bytes;
            }
            removed += 1;
        }
    }
}

/// One file, parsed and checked; its size.
fn read_file(path: &Path) -> Result<(Evidence, u64), EvidenceError> {
    let bytes = std::fs::read(path).map_err(|cause| EvidenceError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    let corrupt = |reason: String| EvidenceError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let evidence: Evidence = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if let Some(problem) = evidence.problem() {
        return Err(corrupt(problem));
    }
    Ok((evidence, bytes.len() as u64))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::evidence::{id_of, FORMAT};

    /// Evidence with an id of its own, each above the last.
    pub fn sample(device: &str, time_ms: f64) -> Evidence {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Evidence {
            format: FORMAT.into(),
            id: id_of(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
            time_ms,
            device: device.into(),
            scope: "fleet".into(),
            model: "basic-1".into(),
            seq: 7,
            t_start: 0.0,
            t_end: 2540.0,
            score: 2.5,
            threshold: 0.3,
            raise_after: 3,
            sample_rate_hz: 50.0,
            channels: vec!["ax".into(), "ay".into()],
            channel_error: vec![1.0, 4.0],
            samples: vec![vec![0.0, 1.0, 0.5], vec![1.0, 0.0, -0.5]],
            reconstruction: vec![vec![0.1, 0.9, 0.4], vec![0.9, 0.1, -0.4]],
            normalization: None,
            features: None,
            recent: Vec::new(),
        }
    }

    const ROOMY: EvidenceLimits = EvidenceLimits {
        max_count: 100,
        max_bytes: 1 << 30,
    };

    #[test]
    fn put_get_list_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = EvidenceStore::open(dir.path(), ROOMY).unwrap();
        let (a, b) = (sample("a", 1.0e12), sample("b", 2.0e12));
        store.put(&a).unwrap();
        store.put(&b).unwrap();
        assert_eq!(store.get(&a.id).unwrap(), a);
        let listed: Vec<String> = store.list().into_iter().map(|s| s.id).collect();
        assert_eq!(listed, [b.id.clone(), a.id.clone()], "newest first");
        let reopened = EvidenceStore::open(dir.path(), ROOMY).unwrap();
        assert_eq!(reopened.list(), store.list());
        assert_eq!(reopened.usage(), store.usage());
        assert!(matches!(
            store.get("1000000000000-000000"),
            Err(EvidenceError::Unknown { .. })
        ));
        assert!(matches!(
            store.get("../x"),
            Err(EvidenceError::Unknown { .. })
        ));
    }

    #[test]
    fn the_oldest_go_first_by_count_and_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let one = serde_json::to_vec(&sample("a", 1.0e12)).unwrap().len() as u64;
        let store = EvidenceStore::open(
            dir.path(),
            EvidenceLimits {
                max_count: 5,
                max_bytes: 3 * one + one / 2,
            },
        )
        .unwrap();
        let written: Vec<Evidence> = (0..10)
            .map(|i| sample("a", 1.0e12 + i as f64))
            .inspect(|e| {
                store.put(e).unwrap();
            })
            .collect();
        let (count, bytes) = store.usage();
        assert_eq!(count, 3, "bytes bind before the count");
        assert!(bytes <= 3 * one + one / 2);
        let kept: Vec<String> = store.list().into_iter().map(|s| s.id).rev().collect();
        let newest: Vec<String> = written[7..].iter().map(|e| e.id.clone()).collect();
        assert_eq!(kept, newest);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn a_clock_stepped_back_keeps_the_newest_written_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let limits = EvidenceLimits {
            max_count: 2,
            max_bytes: 1 << 30,
        };
        let clock = Clock::system();
        let mut written = Vec::new();
        for run in 0..2 {
            let store = EvidenceStore::open(dir.path(), limits).unwrap();
            let ids = store.ids(clock.clone()).unwrap();
            for _ in 0..2 {
                let (id, time_ms) = ids.next();
                let mut evidence = sample("a", time_ms);
                evidence.id = id;
                store.put(&evidence).unwrap();
                written.push(evidence.id);
                // A day back, as a box without a real-time clock does when
                // NTP first answers wrongly, or an operator sets it.
                clock.step(-86_400_000);
            }
            let kept: Vec<String> = store.list().into_iter().map(|s| s.id).collect();
            let newest: Vec<String> = written.iter().rev().take(2).cloned().collect();
            assert_eq!(kept, newest, "run {run}: the newest two, newest first");
        }
        assert!(
            std::fs::read_dir(dir.path()).unwrap().count() == 3,
            "two files and the counter"
        );
        let reread = EvidenceStore::read(dir.path(), limits).unwrap();
        assert!(reread.skipped().is_empty(), "the counter is not foreign");
    }
}
