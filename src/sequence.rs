//! A counter that never goes back, across restarts and crashes included,
//! whatever the wall clock says: the MQTT output's `msg_id`s and the
//! evidence ids come from one each.
//!
//! The file holds a bound: every id handed out is below it. Before an id
//! reaches it, the bound is moved [`BLOCK`] ahead, written atomically and
//! synced, so a crash costs at most the rest of a block (ids skipped, never
//! reused) and one write is made per [`BLOCK`] ids, not per id.

use std::path::{Path, PathBuf};

use crate::scope::store::write_atomically;

/// Ids reserved by one write of the file.
pub const BLOCK: u64 = 1000;

#[derive(Debug, thiserror::Error)]
#[error("{}: {cause}", path.display())]
pub struct SequenceError {
    pub path: PathBuf,
    #[source]
    pub cause: std::io::Error,
}

#[derive(Debug)]
pub struct Sequence {
    path: PathBuf,
    next: u64,
    /// What the file says: ids below it may have been handed out.
    reserved: u64,
    /// The last write of the file failed (logged once until one succeeds).
    failing: bool,
}

impl Sequence {
    /// The counter kept at `path`. Its first id is above every id handed
    /// out from this file before, and at least `floor`; a file that does
    /// not exist yet starts at `first` (at least `floor`).
    pub fn open(path: &Path, floor: u64, first: u64) -> Result<Self, SequenceError> {
        let error = |cause| SequenceError {
            path: path.to_path_buf(),
            cause,
        };
        let stored = match std::fs::read_to_string(path) {
            Ok(text) => Some(text.trim().parse::<u64>().map_err(|e| {
                error(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not a counter: {e}"),
                ))
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(error(e)),
        };
        let next = stored.unwrap_or(first).max(floor);
        let mut sequence = Self {
            path: path.to_path_buf(),
            next,
            reserved: next,
            failing: false,
        };
        sequence.reserve().map_err(error)?;
        Ok(sequence)
    }

    fn reserve(&mut self) -> std::io::Result<()> {
        let bound = self.next.saturating_add(BLOCK);
        write_atomically(&self.path, format!("{bound}\n").as_bytes())?;
        self.reserved = bound;
        Ok(())
    }

    /// The next id. When the bound cannot be moved (a full disk), ids go
    /// on rising in memory and the error is logged: a crash before the next
    /// successful write may then hand out some of them again.
    pub fn take(&mut self) -> u64 {
        if self.next >= self.reserved {
            match self.reserve() {
                Ok(()) => self.failing = false,
                Err(cause) => {
                    if !self.failing {
                        tracing::error!(
                            path = %self.path.display(), %cause,
                            "cannot reserve ids ahead; they rise in memory until a write succeeds"
                        );
                    }
                    self.failing = true;
                }
            }
        }
        let id = self.next;
        self.next += 1;
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_rise_across_reopenings_and_crashes_and_ignore_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("msg_id");
        let mut sequence = Sequence::open(&path, 0, 5_000).unwrap();
        let ids: Vec<u64> = (0..BLOCK + 10).map(|_| sequence.take()).collect();
        assert_eq!(ids[0], 5_000);
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
        let last = *ids.last().unwrap();
        // A crash: nothing but what was written before an id was handed out.
        std::mem::forget(sequence);
        // `first` (the clock, a day back) no longer matters once the file is there.
        let mut again = Sequence::open(&path, 0, 1).unwrap();
        let resumed = again.take();
        assert!(
            resumed > last && resumed <= last + BLOCK,
            "{resumed} {last}"
        );
        drop(again);
        // The floor (the spool's last id) lifts it.
        let mut lifted = Sequence::open(&path, 10 * BLOCK * BLOCK, 1).unwrap();
        assert_eq!(lifted.take(), 10 * BLOCK * BLOCK);
    }

    #[test]
    fn a_damaged_counter_file_is_an_error_not_a_restart_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("msg_id");
        std::fs::write(&path, "12x\n").unwrap();
        let error = Sequence::open(&path, 0, 0).unwrap_err();
        assert!(error.to_string().contains("not a counter"), "{error}");
    }
}
