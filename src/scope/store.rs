//! The model directory: versions of trained models, the one being served,
//! and the windows collected for the next training.
//!
//! A version is `<unix ms>-<data hash>.onnx`, so names sort by age. The
//! file `current` names the version to serve (a rollback rewrites it);
//! without it the newest version is served. Every write goes to a
//! temporary file that is synced and renamed over its target, so a crash
//! leaves the old file or the new one, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::control::Mark;
use crate::model::train::WindowSet;

const CURRENT: &str = "current";
const COLLECTED: &str = "collected.awc";
const COLLECTED_MAGIC: &[u8; 4] = b"AWC1";
const MARKS: &str = "marks.json";
const CALIBRATING_SINCE: &str = "calibrating-since";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("model directory {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("model directory {dir}: no version {name:?} (see `accelwatch models list`)")]
    NoSuchVersion { dir: PathBuf, name: String },
    #[error("model directory {dir}: no version older than {current} to roll back to")]
    NothingOlder { dir: PathBuf, current: String },
    #[error("model directory {dir}: holds no model yet")]
    Empty { dir: PathBuf },
    #[error("{path}: not a list of marks ({reason}); fix or remove it")]
    BadMarks { path: PathBuf, reason: String },
    #[error("{path}: not a collection of windows ({reason})")]
    BadCollection { path: PathBuf, reason: String },
}

/// One stored model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub name: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ModelStore {
    dir: PathBuf,
}

impl ModelStore {
    /// Opens (and creates) the directory.
    /// Opens (and creates) the directory of `scope` under `root`
    /// (`model.dir`); see [`crate::scope`].
    pub fn open_scope(root: &Path, scope: &str) -> Result<Self, StoreError> {
        let dir = crate::scope::dirs::prepare_dir(root, scope).map_err(|cause| StoreError::Io {
            path: crate::scope::dirs::scope_dir(root, scope),
            cause,
        })?;
        Ok(Self { dir })
    }

    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|cause| StoreError::Io {
            path: dir.to_path_buf(),
            cause,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
        let path = path.to_path_buf();
        move |cause| StoreError::Io {
            path: path.clone(),
            cause,
        }
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> Result<Vec<Version>, StoreError> {
        let mut versions: Vec<Version> = std::fs::read_dir(&self.dir)
            .map_err(self.io(&self.dir))?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let stem = name.strip_suffix(".onnx")?;
                let (millis, hash) = stem.split_once('-')?;
                (millis.len() == 13
                    && millis.bytes().all(|b| b.is_ascii_digit())
                    && !hash.is_empty())
                .then(|| Version {
                    path: entry.path(),
                    name: stem.to_string(),
                })
            })
            .collect();
        versions.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(versions)
    }

    /// The version to serve: the one `current` names, else the newest.
    pub fn current(&self) -> Result<Option<Version>, StoreError> {
        let versions = self.versions()?;
        let named = std::fs::read_to_string(self.dir.join(CURRENT))
            .ok()
            .map(|s| s.trim().to_string());
        Ok(named
            .and_then(|name| versions.iter().find(|v| v.name == name).cloned())
            .or_else(|| versions.last().cloned()))
    }

    /// Writes a new version atomically, makes it current, and keeps the
    /// newest `keep` versions (never the current one's predecessor chain
    /// beyond that).
    pub fn install(
        &self,
        onnx: &[u8],
        data_hash: &str,
        keep: usize,
    ) -> Result<Version, StoreError> {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let name = format!("{millis:013}-{data_hash}");
        let path = self.dir.join(format!("{name}.onnx"));
        self.write_atomically(&path, onnx)?;
        self.set_current(&name)?;
        let versions = self.versions()?;
        if versions.len() > keep.max(1) {
            for old in &versions[..versions.len() - keep.max(1)] {
                let _ = std::fs::remove_file(&old.path);
                let _ = std::fs::remove_file(old.path.with_extension("json"));
            }
        }
        Ok(Version { name, path })
    }

    /// Serve `name` from the next reload on.
    pub fn set_current(&self, name: &str) -> Result<(), StoreError> {
        if !self.versions()?.iter().any(|v| v.name == name) {
            return Err(StoreError::NoSuchVersion {
                dir: self.dir.clone(),
                name: name.into(),
            });
        }
        self.write_atomically(&self.dir.join(CURRENT), format!("{name}\n").as_bytes())
    }

    /// Makes the version before the current one current; returns it.
    pub fn rollback(&self) -> Result<Version, StoreError> {
        let versions = self.versions()?;
        let current = self.current()?.ok_or_else(|| StoreError::Empty {
            dir: self.dir.clone(),
        })?;
        let index = versions.iter().position(|v| *v == current).unwrap_or(0);
        let previous = index
            .checked_sub(1)
            .map(|i| versions[i].clone())
            .ok_or_else(|| StoreError::NothingOlder {
                dir: self.dir.clone(),
                current: current.name.clone(),
            })?;
        self.set_current(&previous.name)?;
        Ok(previous)
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        write_atomically(path, bytes).map_err(self.io(path))
    }

    /// Saves the windows collected so far (atomically).
    pub fn save_collected(&self, set: &WindowSet) -> Result<(), StoreError> {
        let mut bytes = Vec::with_capacity(12 + set.streams.len() * 4 + set.data.len() * 4);
        bytes.extend_from_slice(COLLECTED_MAGIC);
        bytes.extend_from_slice(&(set.features as u32).to_le_bytes());
        bytes.extend_from_slice(&(set.len() as u32).to_le_bytes());
        for stream in &set.streams {
            bytes.extend_from_slice(&(*stream as u32).to_le_bytes());
        }
        for value in &set.data {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        self.write_atomically(&self.dir.join(COLLECTED), &bytes)
    }

    /// The windows saved by [`save_collected`](Self::save_collected), if
    /// any, when they have `features` values each.
    pub fn load_collected(&self, features: usize) -> Result<Option<WindowSet>, StoreError> {
        let path = self.dir.join(COLLECTED);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(cause) => return Err(StoreError::Io { path, cause }),
        };
        let bad = |reason: String| StoreError::BadCollection {
            path: path.clone(),
            reason,
        };
        if bytes.len() < 12 || &bytes[..4] != COLLECTED_MAGIC {
            return Err(bad("no AWC1 header".into()));
        }
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let (stored_features, count) = (word(4) as usize, word(8) as usize);
        if stored_features != features {
            return Err(bad(format!(
                "windows of {stored_features} values, the pipeline's have {features}"
            )));
        }
        let expected = 12 + count * 4 + count * features * 4;
        if bytes.len() != expected {
            return Err(bad(format!("{} bytes, expected {expected}", bytes.len())));
        }
        let mut set = WindowSet::new(features);
        set.streams = (0..count).map(|i| word(12 + i * 4) as usize).collect();
        let data = &bytes[12 + count * 4..];
        set.data = data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        Ok(Some(set))
    }

    /// Saves the marked time ranges (atomically), so a restart keeps them.
    pub fn save_marks(&self, marks: &[Mark]) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(marks).expect("marks serialise");
        self.write_atomically(&self.dir.join(MARKS), &json)
    }

    /// The marks saved by [`save_marks`](Self::save_marks), oldest first.
    pub fn load_marks(&self) -> Result<Vec<Mark>, StoreError> {
        let path = self.dir.join(MARKS);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::BadMarks {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(cause) => Err(StoreError::Io { path, cause }),
        }
    }

    /// Whether windows collected for a training are saved here.
    pub fn has_collected(&self) -> bool {
        self.dir.join(COLLECTED).exists()
    }

    /// Forgets the collected windows (after a successful training).
    pub fn clear_collected(&self) {
        let _ = std::fs::remove_file(self.dir.join(COLLECTED));
        let _ = std::fs::remove_file(self.dir.join(CALIBRATING_SINCE));
    }

    /// Records when the calibration began (Unix ms).
    pub fn save_calibrating_since(&self, unix_ms: f64) -> Result<(), StoreError> {
        self.write_atomically(
            &self.dir.join(CALIBRATING_SINCE),
            format!("{unix_ms:.0}\n").as_bytes(),
        )
    }

    /// When the calibration under way began, if one is.
    pub fn calibrating_since(&self) -> Option<f64> {
        std::fs::read_to_string(self.dir.join(CALIBRATING_SINCE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// Writes to a temporary file beside `path`, syncs it, renames it into
/// place and syncs the directory, so a reader never sees half a file and
/// a power cut after the return does not lose it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    // The rename itself must reach the disk too.
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_current_install_prune_and_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::open(&dir.path().join("models")).unwrap();
        assert_eq!(store.current().unwrap(), None);
        assert!(matches!(store.rollback(), Err(StoreError::Empty { .. })));
        let mut names = Vec::new();
        for i in 0..4 {
            let v = store
                .install(format!("model {i}").as_bytes(), &format!("h{i}"), 3)
                .unwrap();
            assert_eq!(
                std::fs::read(&v.path).unwrap(),
                format!("model {i}").as_bytes()
            );
            assert_eq!(store.current().unwrap().as_ref(), Some(&v));
            names.push(v.name);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let kept: Vec<String> = store
            .versions()
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(kept, names[1..], "the oldest is pruned");
        let back = store.rollback().unwrap();
        assert_eq!(back.name, names[2]);
        assert_eq!(store.current().unwrap().unwrap().name, names[2]);
        store.rollback().unwrap();
        assert!(matches!(
            store.rollback(),
            Err(StoreError::NothingOlder { .. })
        ));
        assert!(matches!(
            store.set_current("nope"),
            Err(StoreError::NoSuchVersion { .. })
        ));
        // Stray files are not versions.
        std::fs::write(store.dir().join("notes.onnx"), b"x").unwrap();
        std::fs::write(store.dir().join("0000000000001-x.onnx.tmp"), b"x").unwrap();
        assert_eq!(store.versions().unwrap().len(), 3);
    }

    #[test]
    fn collected_windows_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::open(dir.path()).unwrap();
        assert!(store.load_collected(3).unwrap().is_none());
        let mut set = WindowSet::new(3);
        set.push(0, &[1.0, 2.0, 3.0]);
        set.push(4, &[4.0, -5.5, 6.0]);
        store.save_collected(&set).unwrap();
        let back = store.load_collected(3).unwrap().unwrap();
        assert_eq!(back.data, set.data);
        assert_eq!(back.streams, set.streams);
        assert!(matches!(
            store.load_collected(4),
            Err(StoreError::BadCollection { .. })
        ));
        std::fs::write(dir.path().join(COLLECTED), b"AWC1\x03\0\0\0\x09\0\0\0").unwrap();
        assert!(store.load_collected(3).is_err(), "truncated");
        store.clear_collected();
        assert!(store.load_collected(3).unwrap().is_none());
    }
}
