//! Configuration problems: each names its key, and every section adds its
//! own to one collector, so a config is refused with all of them at once.

use std::fmt;

/// Where a configuration problem is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `window.hop`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The problems found so far.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Records `message` at `key` unless `ok`.
    pub fn check(&mut self, ok: bool, key: &str, message: String) {
        if !ok {
            self.0.push(Problem {
                key: key.into(),
                message,
            });
        }
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}

/// Why the daemon could not keep files in `dir`, if it could not: `dir`
/// must be a directory it can write in, or one it can make (its nearest
/// existing ancestor is a directory it can write in). Checked by making
/// and removing an unnamed file there.
pub fn writable_dir(dir: &std::path::Path) -> Result<(), String> {
    let existing = dir
        .ancestors()
        .map(|a| {
            if a.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.exists())
        .unwrap_or(dir);
    let made = existing != dir;
    if !existing.is_dir() {
        return Err(format!(
            "{} is not a directory{}",
            existing.display(),
            if made {
                format!(", so {} cannot be made", dir.display())
            } else {
                String::new()
            }
        ));
    }
    tempfile::tempfile_in(existing).map(drop).map_err(|e| {
        format!(
            "{} cannot be written in ({e}){}",
            existing.display(),
            if made {
                format!(", so {} cannot be made", dir.display())
            } else {
                String::new()
            }
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_directory_is_usable_when_it_or_its_nearest_ancestor_takes_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(super::writable_dir(dir.path()), Ok(()));
        assert_eq!(super::writable_dir(&dir.path().join("a/b")), Ok(()));
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        let why = super::writable_dir(&file.join("spool")).unwrap_err();
        assert!(why.contains("is not a directory, so"), "{why}");
        assert!(super::writable_dir(&file).is_err());
        assert_eq!(
            super::writable_dir(std::path::Path::new("relative/spool")),
            Ok(())
        );
    }
}
