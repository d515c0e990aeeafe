//! The alert spool: an append-only log on disk of the alerts the broker
//! has not acknowledged yet, so that they survive a restart of the daemon
//! during an outage.
//!
//! The log is a run of segment files `<first id>.spool` (the id zero-padded
//! to 20 digits, so names sort as ids do). Every record is fsynced before
//! the alert is handed on (the alerts waiting together, one fsync for all); a segment whose alerts are all acknowledged is
//! deleted, and `acked` holds the highest id below which everything is
//! acknowledged, so a restart replays only what may not have arrived.
//! A record is `len: u32 | crc32(body): u32 | body`, the body
//! `id: u64 | qos: u8 | retain: u8 | topic_len: u16 | topic | payload`, all
//! little-endian. A torn tail (the daemon killed inside a write) or a
//! damaged record fails its length or checksum: its bytes are skipped,
//! counted and warned about, and decoding resumes at the next good record.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::scope::store::write_atomically;
use crate::sink::mqtt::outbox::Message;

/// The smallest `output.mqtt.spool_max_bytes`.
pub const MIN_BYTES: u64 = 4096;

const HEADER: usize = 8;
const BODY_FIXED: usize = 12;
const ACKED: &str = "acked";

#[derive(Debug, thiserror::Error)]
#[error("output.mqtt.spool_dir: {path}: {cause}")]
pub struct SpoolError {
    pub path: PathBuf,
    pub cause: std::io::Error,
}

/// One alert read back from the spool.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolRecord {
    pub id: u64,
    pub message: Message,
}

/// What [`Spool::open`] found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The alerts not yet acknowledged, oldest first.
    pub records: Vec<SpoolRecord>,
    /// Bytes of torn or corrupt records cut off.
    pub corrupt_bytes: u64,
    /// The highest id the spool has seen (0 for a new spool).
    pub last_id: u64,
}

struct Segment {
    path: PathBuf,
    last: u64,
    bytes: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    /// The last segment, open for appending; new segments are opened by
    /// the first append after a rotation.
    active: Option<File>,
    unacked: BTreeSet<u64>,
    acked: u64,
    last_id: u64,
    bytes: u64,
    /// Records were written to `active` since its last sync.
    unsynced: bool,
    /// The records of the batch being written, not yet in `active`: they
    /// go to the file in one write when their sync is taken, where a write
    /// each was a system call an alert in a storm.
    staged: Vec<u8>,
    /// `acked` has moved past what the file says.
    mark_owed: bool,
    /// `acked`, open for rewriting in place.
    acked_file: Option<File>,
}

/// An fsync of the active segment, owed for the records written before it
/// was taken (see [`Spool::pending_sync`]).
pub struct PendingSync {
    file: File,
    path: PathBuf,
}

impl PendingSync {
    pub fn sync(self) -> Result<(), SpoolError> {
        self.file.sync_data().map_err(|cause| SpoolError {
            path: self.path,
            cause,
        })
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |cause| SpoolError {
        path: path.to_path_buf(),
        cause,
    }
}

pub fn encode(id: u64, message: &Message) -> Vec<u8> {
    let mut record = Vec::new();
    encode_into(id, message, &mut record);
    record
}

/// A record's topic: cut at what its `u16` length can say.
fn record_topic(message: &Message) -> &[u8] {
    let topic = message.topic.as_bytes();
    &topic[..topic.len().min(usize::from(u16::MAX))]
}

/// The bytes `message`'s record takes.
fn record_len(message: &Message) -> usize {
    HEADER + BODY_FIXED + record_topic(message).len() + message.payload.len()
}

/// Appends alert `id`'s record to `out`.
fn encode_into(id: u64, message: &Message, out: &mut Vec<u8>) {
    let topic = record_topic(message);
    let topic_len = topic.len() as u16;
    let start = out.len();
    out.reserve(record_len(message));
    // The header's length and checksum are filled in once the body is there.
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&id.to_le_bytes());
    out.push(message.qos);
    out.push(u8::from(message.retain));
    out.extend_from_slice(&topic_len.to_le_bytes());
    out.extend_from_slice(topic);
    out.extend_from_slice(&message.payload);
    let body = &out[start + HEADER..];
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// The record at `at`, if a whole one with a good checksum starts there and
/// its id is above `after` (ids rise within a segment), and its length.
fn record_at(bytes: &[u8], at: usize, after: Option<u64>) -> Option<(SpoolRecord, usize)> {
    let header = bytes.get(at..at + HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len < BODY_FIXED {
        return None;
    }
    let body = bytes.get(at + HEADER..(at + HEADER).checked_add(len)?)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let id = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    if after.is_some_and(|after| id <= after) {
        return None;
    }
    let topic_len = usize::from(u16::from_le_bytes([body[10], body[11]]));
    let topic = std::str::from_utf8(body.get(BODY_FIXED..BODY_FIXED + topic_len)?).ok()?;
    let record = SpoolRecord {
        id,
        message: Message {
            topic: topic.to_string(),
            qos: body[8],
            retain: body[9] != 0,
            payload: body[BODY_FIXED + topic_len..].to_vec(),
        },
    };
    Some((record, HEADER + len))
}

/// The records of one segment's bytes, and how many bytes were skipped.
/// A damaged record costs only itself: decoding resumes at the next offset
/// where a whole record with a good checksum and a higher id starts. The
/// length, the CRC-32 and the rising id together make a false start at a
/// wrong offset a chance below 2^-32, so records carry no marker and the
/// format stays the one earlier versions wrote.
fn decode(bytes: &[u8]) -> (Vec<SpoolRecord>, usize) {
    let mut records = Vec::new();
    let mut skipped = 0;
    let mut at = 0;
    let mut last = None;
    while at < bytes.len() {
        if let Some((record, len)) = record_at(bytes, at, last) {
            last = Some(record.id);
            records.push(record);
            at += len;
            continue;
        }
        let next = (at + 1..bytes.len())
            .find(|&i| record_at(bytes, i, last).is_some())
            .unwrap_or(bytes.len());
        skipped += next - at;
        at = next;
    }
    (records, skipped)
}

impl Spool {
    /// Opens (or makes) the spool in `dir`, cutting off torn tails, and
    /// returns what is still to be delivered.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Spool, Recovered), SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let acked_path = dir.join(ACKED);
        let acked = match std::fs::read_to_string(&acked_path) {
            Ok(text) => text.trim().parse().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_error(&acked_path)(e)),
        };
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io_error(dir))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "spool"))
            .collect();
        names.sort();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(MIN_BYTES, 4 << 20),
            segments: VecDeque::new(),
            active: None,
            unacked: BTreeSet::new(),
            acked,
            last_id: acked,
            bytes: 0,
            unsynced: false,
            staged: Vec::new(),
            mark_owed: false,
            acked_file: None,
        };
        let mut replay = Recovered::default();
        for path in names {
            let bytes = std::fs::read(&path).map_err(io_error(&path))?;
            let (records, skipped) = decode(&bytes);
            let mut good = bytes.len();
            if skipped > 0 {
                tracing::warn!(
                    path = %path.display(), bytes = skipped, records = records.len(),
                    "MQTT output spool: torn or corrupt bytes were skipped; the records around \
                     them are kept"
                );
                replay.corrupt_bytes += skipped as u64;
                // Rewritten without the damage, so that it is skipped (and
                // counted) once.
                let kept: Vec<u8> = records
                    .iter()
                    .flat_map(|r| encode(r.id, &r.message))
                    .collect();
                write_atomically(&path, &kept).map_err(io_error(&path))?;
                good = kept.len();
            }
            let last = records.iter().map(|r| r.id).max().unwrap_or(0);
            spool.last_id = spool.last_id.max(last);
            let pending: Vec<SpoolRecord> = records.into_iter().filter(|r| r.id > acked).collect();
            if pending.is_empty() {
                std::fs::remove_file(&path).map_err(io_error(&path))?;
                continue;
            }
            spool.unacked.extend(pending.iter().map(|r| r.id));
            replay.records.extend(pending);
            spool.bytes += good as u64;
            spool.segments.push_back(Segment {
                path,
                last,
                bytes: good as u64,
            });
        }
        replay.last_id = spool.last_id;
        Ok((spool, replay))
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends and fsyncs `message` as alert `id`; `Ok(false)` when the
    /// spool is full (the alert is not kept).
    #[cfg(test)]
    pub fn append(&mut self, id: u64, message: &Message) -> Result<bool, SpoolError> {
        let kept = self.write(id, message)?;
        if let Some(pending) = self.pending_sync()? {
            pending.sync()?;
        }
        Ok(kept)
    }

    /// Appends `message` as alert `id` without waiting for the disk: it is
    /// durable once the [`PendingSync`] taken after it has synced, so that
    /// a storm of alerts costs one fsync a batch rather than one each.
    /// `Ok(false)` when the spool is full (the alert is not kept). After an
    /// error this segment takes no more.
    pub fn write(&mut self, id: u64, message: &Message) -> Result<bool, SpoolError> {
        let len = record_len(message) as u64;
        if self.bytes + len > self.max_bytes {
            return Ok(false);
        }
        let rotate = self
            .segments
            .back()
            .is_none_or(|s| s.bytes >= self.segment_bytes);
        if self.active.is_none() || rotate {
            // What the segment left behind holds must be on disk before
            // the next one is written: a sync covers one file.
            if let Some(pending) = self.pending_sync()? {
                pending.sync()?;
            }
            let path = self.dir.join(format!("{id:020}.spool"));
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(io_error(&path))?;
            // The new name must survive a crash as well as its contents.
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error(&self.dir))?;
            self.segments.push_back(Segment {
                path,
                last: id,
                bytes: 0,
            });
            self.active = Some(file);
        }
        encode_into(id, message, &mut self.staged);
        let segment = self.segments.back_mut().expect("an active segment");
        self.unsynced = true;
        segment.bytes += len;
        segment.last = id;
        self.bytes += len;
        self.last_id = self.last_id.max(id);
        self.unacked.insert(id);
        Ok(true)
    }

    /// What makes the records written since the last sync durable, to be
    /// run without the spool's lock (an fsync takes milliseconds, and the
    /// connection task takes the lock for each acknowledgement); `None`
    /// when nothing waits.
    pub fn pending_sync(&mut self) -> Result<Option<PendingSync>, SpoolError> {
        if !std::mem::take(&mut self.unsynced) {
            return Ok(None);
        }
        self.write_staged()?;
        let (Some(file), Some(segment)) = (&self.active, self.segments.back()) else {
            return Ok(None);
        };
        let path = segment.path.clone();
        match file.try_clone() {
            Ok(file) => Ok(Some(PendingSync { file, path })),
            Err(cause) => {
                self.active = None;
                Err(SpoolError { path, cause })
            }
        }
    }

    /// Writes the staged records to the active segment, in one write.
    fn write_staged(&mut self) -> Result<(), SpoolError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let (Some(file), Some(segment)) = (self.active.as_mut(), self.segments.back()) else {
            // No segment takes them only after a failed write or sync,
            // whose records are no longer waited for.
            self.staged.clear();
            return Ok(());
        };
        let written = file.write_all(&self.staged);
        self.staged.clear();
        written.map_err(|cause| {
            // What part reached the disk is cut off as a torn tail on the
            // next start; this segment takes no more.
            self.active = None;
            SpoolError {
                path: segment.path.clone(),
                cause,
            }
        })
    }

    /// Alerts written but not made durable (their sync failed): they are
    /// no longer waited for, and the segment takes no more. What of them
    /// reached the disk is replayed after a restart, as a duplicate at worst.
    pub fn forget(&mut self, ids: &[u64]) {
        self.active = None;
        self.staged.clear();
        for id in ids {
            self.unacked.remove(id);
        }
    }

    /// Writes `below` over the `acked` file in place, zero-padded to a
    /// fixed width: one `pwrite` into the page cache. Writing a new file
    /// and renaming it over the old made ext4 flush the new file's blocks
    /// at each acknowledgement (its replace-by-rename safeguard), a sixth
    /// of the daemon's CPU in an alert storm (docs/measured.md). Without an
    /// fsync either way: a lost or torn update only replays some delivered
    /// alerts again (a torn number reads as none acknowledged), which QoS 1
    /// allows.
    fn mark_acked(&mut self, below: u64) -> Result<(), SpoolError> {
        use std::os::unix::fs::FileExt;
        let path = self.dir.join(ACKED);
        let written = match &self.acked_file {
            Some(file) => Ok(file),
            None => OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map(|file| &*self.acked_file.insert(file)),
        }
        .and_then(|file| file.write_all_at(format!("{below:020}\n").as_bytes(), 0));
        written.map_err(|cause| {
            self.acked_file = None;
            SpoolError { path, cause }
        })
    }

    /// The broker acknowledged alert `id`: segments with nothing left to
    /// deliver are deleted. The `acked` mark is written at once when a
    /// segment goes (so the mark never falls behind a deleted segment's
    /// ids, which a restart would take its ids from); otherwise it is owed
    /// ([`Spool::write_owed_mark`]), where a write each PUBACK was a
    /// system call an alert in a storm.
    pub fn ack(&mut self, id: u64) -> Result<(), SpoolError> {
        if !self.unacked.remove(&id) {
            return Ok(());
        }
        let below = match self.unacked.first() {
            Some(first) => first - 1,
            None => self.last_id,
        };
        if below <= self.acked {
            return Ok(());
        }
        self.acked = below;
        self.mark_owed = true;
        if self
            .segments
            .front()
            .is_some_and(|segment| segment.last <= self.acked)
        {
            self.write_owed_mark()?;
        }
        while let Some(segment) = self.segments.front() {
            if segment.last > self.acked {
                break;
            }
            let segment = self.segments.pop_front().expect("a segment");
            if self.segments.is_empty() {
                self.active = None;
            }
            std::fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
            self.bytes -= segment.bytes;
        }
        Ok(())
    }

    /// Acknowledgements have moved the mark since it was written.
    pub fn mark_owed(&self) -> bool {
        self.mark_owed
    }

    /// Writes the `acked` mark if acknowledgements have moved it. Not
    /// fsynced (see `mark_acked`): a mark that lags behind after a crash
    /// only publishes again alerts the broker had.
    pub fn write_owed_mark(&mut self) -> Result<(), SpoolError> {
        if !self.mark_owed {
            return Ok(());
        }
        self.mark_acked(self.acked)?;
        self.mark_owed = false;
        Ok(())
    }
}

impl Drop for Spool {
    /// What a clean stop leaves is what a restart replays: the batch's
    /// records in the file, the mark up to date.
    fn drop(&mut self) {
        if let Err(error) = self.write_staged().and_then(|()| self.write_owed_mark()) {
            tracing::error!(%error, "MQTT output spool: not all written on closing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(i: u64) -> Message {
        Message {
            topic: format!("accelwatch/d{i}/alert"),
            qos: 1,
            retain: false,
            payload: format!("{{\"msg_id\":{i}}}").into_bytes(),
        }
    }

    fn ids(replay: &Recovered) -> Vec<u64> {
        replay.records.iter().map(|r| r.id).collect()
    }

    #[test]
    fn records_round_trip_and_a_reopened_spool_replays_the_unacknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, replay) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(replay.records.is_empty());
        assert_eq!(replay.last_id, 0);
        for id in [3, 5, 9, 10] {
            assert!(spool.append(id, &message(id)).unwrap());
        }
        spool.ack(3).unwrap();
        spool.ack(9).unwrap();
        drop(spool);
        let (_, replay) = Spool::open(dir.path(), 1 << 20).unwrap();
        // 9 was acknowledged out of order: only what lies below the first
        // unacknowledged id is known delivered, so 9 comes again.
        assert_eq!(ids(&replay), [5, 9, 10]);
        assert_eq!(replay.records[0].message, message(5));
        assert_eq!(replay.last_id, 10);
        assert_eq!(replay.corrupt_bytes, 0);
    }

    #[test]
    fn acknowledged_segments_are_deleted_and_the_last_id_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), MIN_BYTES * 8).unwrap();
        for id in 1..=400 {
            assert!(spool.append(id, &message(id)).unwrap());
        }
        let files = || std::fs::read_dir(dir.path()).unwrap().count();
        assert!(files() >= 3, "segments rotate at spool_max_bytes / 8");
        for id in 1..=400 {
            spool.ack(id).unwrap();
        }
        assert_eq!(spool.bytes(), 0);
        assert_eq!(files(), 1, "only the acked marker is left");
        assert!(spool.append(401, &message(401)).unwrap());
        spool.ack(401).unwrap();
        drop(spool);
        let (_, replay) = Spool::open(dir.path(), MIN_BYTES * 8).unwrap();
        assert!(replay.records.is_empty());
        assert_eq!(replay.last_id, 401, "ids keep rising across restarts");
    }

    /// What the alert thread does after writing a batch.
    fn sync_owed(spool: &mut Spool) {
        let owed = spool.pending_sync().unwrap().expect("a sync owed");
        owed.sync().unwrap();
    }

    #[test]
    fn the_acked_mark_is_rewritten_in_place_and_an_unpadded_one_is_read() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        // As written before the mark was padded: "<id>\n".
        std::fs::write(dir.path().join(ACKED), "7\n").unwrap();
        let (mut spool, replay) = Spool::open(dir.path(), MIN_BYTES * 8).unwrap();
        assert_eq!(replay.last_id, 7);
        let inode = || std::fs::metadata(dir.path().join(ACKED)).unwrap().ino();
        let before = inode();
        let segment_len = || std::fs::metadata(segment_of(dir.path())).map_or(0, |m| m.len());
        for id in 8..=30 {
            assert!(spool.write(id, &message(id)).unwrap());
        }
        assert_eq!(segment_len(), 0, "the batch waits for its sync");
        sync_owed(&mut spool);
        assert_eq!(segment_len(), spool.bytes(), "then goes in one write");
        assert!(
            spool.pending_sync().unwrap().is_none(),
            "nothing owed after it"
        );
        for id in 8..=20 {
            spool.ack(id).unwrap();
        }
        let mark = || std::fs::read_to_string(dir.path().join(ACKED)).unwrap();
        assert_eq!(mark(), "7\n", "owed, not written at each acknowledgement");
        assert!(spool.mark_owed());
        spool.write_owed_mark().unwrap();
        assert!(!spool.mark_owed());
        assert_eq!(inode(), before, "rewritten, not replaced");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(ACKED)).unwrap(),
            "00000000000000000020\n"
        );
        drop(spool);
        let (_, replay) = Spool::open(dir.path(), MIN_BYTES * 8).unwrap();
        assert_eq!(ids(&replay), (21..=30).collect::<Vec<_>>());
    }

    /// A mark that lags behind the ids of a deleted segment would let a
    /// restart take its ids from below ids already used: it is written as
    /// the segment goes. A clean stop writes what is owed.
    #[test]
    fn the_mark_is_written_with_a_segments_deletion_and_on_closing() {
        let dir = tempfile::tempdir().unwrap();
        let mark = || std::fs::read_to_string(dir.path().join(ACKED)).unwrap_or_default();
        let (mut spool, _) = Spool::open(dir.path(), MIN_BYTES * 8).unwrap();
        for id in 1..=3 {
            assert!(spool.write(id, &message(id)).unwrap());
        }
        sync_owed(&mut spool);
        spool.ack(1).unwrap();
        assert_eq!(mark(), "", "owed");
        spool.ack(2).unwrap();
        spool.ack(3).unwrap();
        assert_eq!(
            mark(),
            "00000000000000000003\n",
            "written as its segment went"
        );
        assert!(!spool.mark_owed());
        assert!(spool.write(4, &message(4)).unwrap());
        assert!(spool.write(5, &message(5)).unwrap());
        sync_owed(&mut spool);
        assert!(spool.write(6, &message(6)).unwrap());
        spool.ack(4).unwrap();
        drop(spool);
        assert_eq!(mark(), "00000000000000000004\n");
        let (_, replay) = Spool::open(dir.path(), MIN_BYTES * 8).unwrap();
        assert_eq!(
            ids(&replay),
            [5, 6],
            "the staged record was written on closing"
        );
        assert_eq!(replay.last_id, 6);
    }

    #[test]
    fn alerts_whose_sync_failed_are_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), MIN_BYTES * 8).unwrap();
        assert!(spool.append(1, &message(1)).unwrap());
        for id in 2..=4 {
            assert!(spool.write(id, &message(id)).unwrap());
        }
        // As the alert thread does when the sync of 2..=4 fails: they go
        // on in memory, and the acknowledgement of 1 trims as if they had
        // never been written.
        spool.forget(&[2, 3, 4]);
        spool.ack(1).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(ACKED))
                .unwrap()
                .trim(),
            "00000000000000000004"
        );
        assert!(
            spool.write(5, &message(5)).unwrap(),
            "a new segment takes it"
        );
        sync_owed(&mut spool);
        drop(spool);
        let (_, replay) = Spool::open(dir.path(), MIN_BYTES * 8).unwrap();
        assert_eq!(ids(&replay), vec![5]);
    }

    #[test]
    fn a_full_spool_refuses_and_takes_again_once_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), MIN_BYTES).unwrap();
        let alert = message(1);
        let fit = MIN_BYTES / encode(1, &alert).len() as u64;
        for id in 1..=fit {
            assert!(spool.append(id, &alert).unwrap(), "{id}");
        }
        assert!(!spool.append(fit + 1, &alert).unwrap());
        assert!(spool.bytes() <= MIN_BYTES);
        for id in 1..=fit {
            spool.ack(id).unwrap();
        }
        assert!(spool.append(fit + 2, &alert).unwrap());
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        for id in 1..=3 {
            spool.append(id, &message(id)).unwrap();
        }
        drop(spool);
        let segment = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "spool"))
            .unwrap();
        let torn = encode(4, &message(4));
        let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
        file.write_all(&torn[..torn.len() - 3]).unwrap();
        drop(file);
        let (mut spool, replay) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(ids(&replay), [1, 2, 3]);
        assert_eq!(replay.corrupt_bytes, torn.len() as u64 - 3);
        spool.append(5, &message(5)).unwrap();
        drop(spool);
        let (_, replay) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(ids(&replay), [1, 2, 3, 5], "the cut is not counted twice");
        assert_eq!(replay.corrupt_bytes, 0);
    }

    fn segment_of(dir: &Path) -> PathBuf {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "spool"))
            .unwrap()
    }

    #[test]
    fn one_corrupted_byte_in_mid_segment_loses_only_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        for id in 1..=5 {
            spool.append(id, &message(id)).unwrap();
        }
        drop(spool);
        let segment = segment_of(dir.path());
        let mut bytes = std::fs::read(&segment).unwrap();
        let one = encode(1, &message(1)).len();
        // A byte inside the third record's body.
        bytes[2 * one + one / 2] ^= 0x01;
        std::fs::write(&segment, &bytes).unwrap();
        let (_, replay) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(ids(&replay), [1, 2, 4, 5]);
        assert_eq!(replay.records[3].message, message(5));
        assert_eq!(replay.corrupt_bytes, one as u64);
        let (spool, replay) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            ids(&replay),
            [1, 2, 4, 5],
            "the damage is gone from the file"
        );
        assert_eq!(replay.corrupt_bytes, 0);
        assert_eq!(spool.bytes(), 4 * one as u64);
    }

    #[test]
    fn decoding_resumes_after_a_damaged_header() {
        let records: Vec<Vec<u8>> = (1..=3).map(|id| encode(id, &message(id))).collect();
        let one = records[0].len();
        for damaged in [0, 5, HEADER + 3] {
            let mut bytes = records.concat();
            bytes[one + damaged] ^= 0x80;
            let (decoded, skipped) = decode(&bytes);
            let got: Vec<u64> = decoded.iter().map(|r| r.id).collect();
            assert_eq!(got, [1, 3], "byte {damaged} of the second record");
            assert_eq!(skipped, one);
        }
        // A length past the end, or under the fixed body, costs that record.
        let mut huge = records.concat();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge).0.len(), 2);
        let mut tiny = records.concat();
        tiny[..4].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(decode(&tiny), (decode(&huge).0, one));
        // A record again with an id not above the last is no place to resume.
        let replayed = [records[1].clone(), records[0].clone()].concat();
        assert_eq!(decode(&replayed).1, one);
    }
}
