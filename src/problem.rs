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
