//! Alerts and status records, on a thread of their own. An alert is
//! fsynced to the spool before it is handed over, and that wait (a few
//! milliseconds on this project's test VM) held up every window's line
//! queued behind it: at 1 000 devices, 107 of the 108 sink batches slower
//! than 0.5 ms held an alert, and they made the p99 latency
//! (docs/measured.md, "Where the latency goes"). Here the sink thread only
//! queues them; this thread takes all that wait (up to [`BATCH`]), gives
//! each its `msg_id`, spools the alerts with one fsync and puts them in the
//! outbox, in the order written, so their order and ids are what they
//! were. One fsync per alert capped a storm at a few hundred alerts a
//! second, and the sink waited behind it.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::mqtt::topic::Template;
use crate::record::{AlertRecord, Output, StatusRecord};
use crate::sequence::Sequence;
use crate::sink::mqtt::connection::Shared;
use crate::sink::mqtt::outbox::Message;
use crate::sink::mqtt::spool::PendingSync;
use crate::telemetry::events::AlertsLost;
use crate::telemetry::Metrics;

/// The most records taken off the queue to be spooled with one fsync.
const BATCH: usize = 256;

/// The shortest time between two fsyncs of the spool: at most 100 a
/// second in an alert storm (an SD card wears with each), for at most
/// 10 ms more before an alert of a storm is published. An alert after a
/// quiet spell is fsynced at once.
const SYNC_INTERVAL: Duration = Duration::from_millis(10);

/// What makes and keeps the reliable messages.
pub(crate) struct ReliablePath {
    pub shared: Arc<Shared>,
    pub ids: MsgIds,
    pub alert: Template,
    pub alert_qos: u8,
    pub alert_retain: bool,
    pub status_topic: String,
    pub metrics: Metrics,
    pub warned: crate::logging::RateLimited,
}

/// The sink's end: queues alerts and status records for the thread, at
/// most `capacity` waiting; beyond that the sink waits (an alert storm
/// slows the pipeline rather than growing memory or losing an alert).
pub(crate) struct ReliableWriter {
    queue: Option<mpsc::SyncSender<Output>>,
    thread: Option<JoinHandle<()>>,
}

impl ReliableWriter {
    pub fn spawn(mut path: ReliablePath, capacity: usize) -> std::io::Result<Self> {
        let (queue, outputs) = mpsc::sync_channel::<Output>(capacity.max(1));
        let thread = std::thread::Builder::new()
            .name("mqtt-alerts".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(BATCH);
                let mut last_sync: Option<Instant> = None;
                while gather(&outputs, &mut batch, last_sync.map(|at| at + SYNC_INTERVAL)) {
                    if path.write(&mut batch) {
                        last_sync = Some(Instant::now());
                    }
                }
            })?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Queues an alert or a status record (anything else is ignored there).
    pub fn send(&self, output: &Output) -> std::io::Result<()> {
        self.queue
            .as_ref()
            .and_then(|q| q.send(output.clone()).ok())
            .ok_or_else(|| std::io::Error::other("the MQTT output's alert thread has stopped"))
    }

    /// Waits until everything queued is in the outbox (or the spool).
    pub fn finish(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("MQTT output: the alert thread panicked");
            }
        }
    }
}

impl Drop for ReliableWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Waits for a record, then takes into `batch` what else arrives until
/// `due` (the next fsync's earliest time, in a storm) and what waits after
/// it, at most [`BATCH`] in all; `false` once the sink is gone and nothing
/// is left. Until `due` this thread sleeps instead of waiting on the
/// queue: a wake-up for each alert of a storm (the sink's thread waking
/// this one, and back) was 5.5 % of the daemon's CPU at 3 900 alerts a
/// second; the alerts taken, and when they are written, are the same.
fn gather(outputs: &mpsc::Receiver<Output>, batch: &mut Vec<Output>, due: Option<Instant>) -> bool {
    let Ok(first) = outputs.recv() else {
        return false;
    };
    batch.push(first);
    if let Some(due) = due {
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    let room = BATCH.saturating_sub(batch.len());
    batch.extend(outputs.try_iter().take(room));
    true
}

/// A record of a batch on its way to the outbox.
enum Pending {
    Alert(u64, Message, Kept),
    Status(u64, Message),
}

/// Where an alert is kept until the broker has it.
#[derive(Clone, Copy, PartialEq)]
enum Kept {
    Spooled,
    InMemory,
    Lost(AlertsLost),
}

impl ReliablePath {
    /// Gives each record of `batch` (emptied) its `msg_id`, spools its
    /// alerts with one fsync, and puts them all in the outbox in order;
    /// whether the spool was fsynced.
    fn write(&mut self, batch: &mut Vec<Output>) -> bool {
        let mut pending: Vec<Pending> = batch
            .drain(..)
            .filter_map(|output| self.message(&output))
            .collect();
        let synced = self.spool(&mut pending);
        let shared = self.shared.clone();
        // One lock for the batch: the connection task takes it too.
        let mut outbox = shared.outbox();
        let mut woken = false;
        for record in pending {
            woken |= match record {
                Pending::Alert(_, _, Kept::Lost(reason)) => {
                    self.lost(reason);
                    false
                }
                Pending::Alert(id, message, kept) => {
                    let pushed = outbox.push_alert(id, message, kept == Kept::Spooled);
                    if !pushed {
                        self.lost(AlertsLost::QueueFull);
                    }
                    pushed
                }
                Pending::Status(id, message) => {
                    let pushed = outbox.push_status(id, message);
                    if !pushed {
                        self.metrics.mqtt_publish_dropped("status", 1);
                    }
                    pushed
                }
            };
        }
        drop(outbox);
        if woken {
            self.shared.wake.notify_one();
        }
        synced
    }

    fn message(&mut self, output: &Output) -> Option<Pending> {
        match output {
            Output::Alert(a) => {
                let id = self.ids.next();
                let message = Message {
                    topic: self.alert.render(&a.device),
                    qos: self.alert_qos,
                    retain: self.alert_retain,
                    payload: alert_payload(a, id),
                };
                Some(Pending::Alert(id, message, Kept::InMemory))
            }
            // The retained status says "online" and how the model stands;
            // each scope's under a topic of its own, so none hides another.
            // Only the newest of each topic waits in the outbox.
            Output::Status(status) => {
                let id = self.ids.next();
                let message = Message {
                    topic: match &status.scope {
                        Some(scope) => scope_status_topic(&self.status_topic, scope),
                        None => self.status_topic.clone(),
                    },
                    qos: 1,
                    retain: true,
                    payload: with_msg_id(status_value(true, Some(status)), id),
                };
                Some(Pending::Status(id, message))
            }
            Output::Window(_) => None,
        }
    }

    /// Keeps the batch's alerts until the broker has them: in the spool,
    /// written under its lock and fsynced once without it, when there is
    /// one; else (or when the spool fails) in memory, where they still
    /// survive an outage. Whether an fsync was made.
    fn spool(&mut self, batch: &mut [Pending]) -> bool {
        let shared = self.shared.clone();
        let Some(mut spool) = shared.spool() else {
            return false;
        };
        let mut written = Vec::new();
        let mut failed = None;
        for record in batch.iter_mut() {
            let Pending::Alert(id, message, kept) = record else {
                continue;
            };
            match spool.write(*id, message) {
                Ok(true) => {
                    *kept = Kept::Spooled;
                    written.push(*id);
                }
                Ok(false) => *kept = Kept::Lost(AlertsLost::SpoolFull),
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        // After a failed write the records before it in this batch were
        // not synced either: all of them wait in memory.
        let owed = match failed {
            Some(error) => Err(error),
            None => spool.pending_sync(),
        };
        let bytes = spool.bytes();
        drop(spool);
        let fsynced = matches!(owed, Ok(Some(_)));
        if fsynced {
            self.metrics.mqtt_spool_synced();
        }
        let synced = owed.and_then(|owed| owed.map_or(Ok(()), PendingSync::sync));
        if let Err(error) = synced {
            tracing::error!(%error, "MQTT output: cannot spool alerts; they wait in memory");
            shared.spool().expect("a spool").forget(&written);
            for record in batch.iter_mut() {
                if let Pending::Alert(_, _, kept @ Kept::Spooled) = record {
                    *kept = Kept::InMemory;
                }
            }
            written.clear();
        }
        let dropped = batch
            .iter()
            .filter(|r| matches!(r, Pending::Alert(_, _, Kept::Lost(AlertsLost::SpoolFull))))
            .count();
        if !written.is_empty() {
            self.metrics.mqtt_spool("spooled", written.len() as u64);
        }
        if dropped > 0 {
            self.metrics.mqtt_spool("dropped", dropped as u64);
        }
        self.metrics.mqtt_spool_bytes(bytes);
        fsynced
    }

    /// An alert that could not be kept: counted and logged (at most once a
    /// minute per reason, with how many since).
    fn lost(&mut self, reason: AlertsLost) {
        self.metrics.mqtt_publish_dropped("alert", 1);
        self.metrics.alerts_lost(reason, 1);
        if let Some(held_back) = self
            .warned
            .check(reason.as_str(), std::time::Instant::now())
        {
            tracing::warn!(
                alerts = held_back + 1,
                reason = reason.as_str(),
                "MQTT output: alerts lost ({})",
                reason.cause()
            );
        }
    }
}

pub(crate) fn status_value(online: bool, model: Option<&StatusRecord>) -> serde_json::Value {
    let mut payload = serde_json::json!({
        "status": if online { "online" } else { "offline" },
        "version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(model) = model {
        payload["model_state"] = model.state.into();
        payload["collected"] = model.collected.into();
        payload["target"] = model.target.into();
        payload["progress"] = model.progress.into();
        if let Some(id) = &model.model {
            payload["model"] = id.as_ref().into();
        }
        if let Some(drift) = model.drift {
            payload["drift"] = drift.into();
        }
        if let Some(scope) = &model.scope {
            payload["scope"] = scope.as_ref().into();
        }
    }
    payload
}

/// The alert's payload, byte for byte what serde_json writes of the
/// record's `to_value` with its `msg_id` inserted (the tests hold it to
/// that): the keys in the order its map sorts them, the score as the `f64`
/// its `f32` widens to, `null` for a NaN. Written without the map, whose
/// keys and values were a dozen allocations an alert in a storm.
fn alert_payload(alert: &AlertRecord, id: u64) -> Vec<u8> {
    fn field<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, key: &[u8], value: &T) {
        out.extend_from_slice(key);
        // Strings and numbers only: serde_json writes a NaN as null rather
        // than fail.
        serde_json::to_writer(&mut *out, value).expect("strings and numbers are JSON");
    }
    let mut out = Vec::with_capacity(160 + alert.device.len());
    field(&mut out, b"{\"device\":", &*alert.device);
    field(&mut out, b",\"event\":", alert.event);
    if let Some(evidence) = &alert.evidence {
        field(&mut out, b",\"evidence\":", &**evidence);
    }
    field(&mut out, b",\"model\":", &*alert.model);
    field(&mut out, b",\"msg_id\":", &id);
    field(&mut out, b",\"score\":", &f64::from(alert.score));
    field(&mut out, b",\"seq\":", &alert.seq);
    field(&mut out, b",\"t\":", &alert.t);
    field(&mut out, b",\"threshold\":", &alert.threshold);
    field(&mut out, b",\"type\":", alert.kind);
    out.push(b'}');
    out
}

/// `value` (a JSON object) with its `msg_id`.
fn with_msg_id(mut value: serde_json::Value, id: u64) -> Vec<u8> {
    if let Some(object) = value.as_object_mut() {
        object.insert("msg_id".into(), id.into());
    }
    serde_json::to_vec(&value).expect("JSON")
}

/// Where `msg_id`s come from.
pub(crate) enum MsgIds {
    /// The counter in the state directory (or the spool's): they rise
    /// across restarts and crashes whatever the clock says.
    Kept(Sequence),
    /// No directory to keep one in (a config made in code, with neither a
    /// state directory nor a spool): from the clock once, then counted.
    Counted(u64),
}

impl MsgIds {
    fn next(&mut self) -> u64 {
        match self {
            MsgIds::Kept(sequence) => sequence.take(),
            MsgIds::Counted(next) => {
                *next += 1;
                *next - 1
            }
        }
    }
}

/// Where a scope's status is retained: `<status topic>/device/<id>` or
/// `<status topic>/group/<name>` (the id made safe for one topic level).
pub fn scope_status_topic(status_topic: &str, scope: &str) -> String {
    let (kind, name) = scope.split_once(':').unwrap_or(("scope", scope));
    format!(
        "{status_topic}/{kind}/{}",
        crate::mqtt::topic::sanitize_device(name)
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::sink::mqtt::outbox::Outbox;
    use crate::sink::mqtt::spool::{Spool, MIN_BYTES};

    fn alert(device: &str, event: &'static str) -> Output {
        Output::Alert(AlertRecord {
            kind: "alert",
            event,
            device: device.into(),
            seq: 1,
            t: 1.0,
            score: 2.0,
            threshold: 1.0,
            model: "m".into(),
            evidence: None,
            detail: None,
        })
    }

    fn path(spool: Option<Spool>, metrics: &Metrics) -> ReliablePath {
        ReliablePath {
            shared: Arc::new(Shared {
                outbox: Mutex::new(Outbox::new(16, 64)),
                spool: spool.map(Mutex::new),
                wake: tokio::sync::Notify::new(),
            }),
            ids: MsgIds::Counted(1),
            alert: Template::parse("a/{device}/alert").unwrap(),
            alert_qos: 1,
            alert_retain: false,
            status_topic: "a/status".into(),
            metrics: metrics.clone(),
            warned: crate::logging::RateLimited::new(Duration::from_secs(60)),
        }
    }

    fn sample(metrics: &Metrics, series: &str) -> f64 {
        let text = metrics.render();
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .map(|v| v.parse().unwrap())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    fn spooled(metrics: &Metrics) -> f64 {
        sample(
            metrics,
            "accelwatch_mqtt_spool_alerts_total{event=\"spooled\"}",
        )
    }

    /// The payload written by hand is the one serde_json's map made:
    /// device ids that need escaping, evidence or none, a NaN, an
    /// infinity, extremes. A field added to the record changes the map's
    /// and fails this until it is written here too.
    #[test]
    fn the_alert_payload_is_serde_jsons_map_byte_for_byte() {
        let devices = [
            "watch-9",
            "",
            "quote\"d",
            "back\\slash",
            "tab\there",
            "ünï",
            "\u{1}",
        ];
        let scores = [
            0.051_993_888,
            2.0,
            f32::NAN,
            f32::INFINITY,
            f32::MAX,
            -0.0,
            1e-40,
        ];
        for (i, (device, score)) in devices.iter().zip(scores).enumerate() {
            for evidence in [None, Some("a1b2-\"x\"")] {
                let record = AlertRecord {
                    kind: "alert",
                    event: if i % 2 == 0 { "raise" } else { "clear" },
                    device: (*device).into(),
                    seq: u64::MAX - i as u64,
                    t: 1_764_616_802_663.5 + i as f64,
                    score,
                    threshold: 0.308_684_587_478_637_7,
                    model: "basic-d05b93f487fd".into(),
                    evidence: evidence.map(Into::into),
                    detail: None,
                };
                let id = 1_764_616_800_000_000 + i as u64;
                let map = serde_json::to_value(Output::Alert(record.clone())).unwrap();
                assert_eq!(
                    String::from_utf8(alert_payload(&record, id)).unwrap(),
                    String::from_utf8(with_msg_id(map, id)).unwrap()
                );
            }
        }
    }

    #[test]
    fn a_steady_storm_is_fsynced_at_most_every_sync_interval() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), MIN_BYTES * 1024).unwrap();
        let metrics = Metrics::new();
        let mut writer = ReliableWriter::spawn(path(Some(spool), &metrics), 1024).unwrap();
        let started = Instant::now();
        // One alert a millisecond for 200 ms: one fsync each without the
        // pacing (200 in one run with it taken out).
        for i in 0..200 {
            writer.send(&alert(&format!("d{i}"), "raise")).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        writer.finish();
        let elapsed = started.elapsed();
        let syncs = sample(&metrics, "accelwatch_mqtt_spool_syncs_total");
        let most = (elapsed.as_millis() / SYNC_INTERVAL.as_millis()) as f64 + 2.0;
        assert_eq!(spooled(&metrics), 200.0);
        assert!(
            syncs >= 2.0 && syncs <= most,
            "{syncs} fsyncs in {elapsed:?}"
        );
    }

    #[test]
    fn a_batch_is_spooled_in_order_with_its_ids_and_replayed_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), MIN_BYTES * 64).unwrap();
        let metrics = Metrics::new();
        let mut path = path(Some(spool), &metrics);
        let mut batch = vec![
            alert("d1", "raise"),
            alert("d2", "raise"),
            alert("d1", "clear"),
        ];
        path.write(&mut batch);
        assert!(batch.is_empty(), "the batch is taken");
        let outbox = path.shared.outbox();
        assert_eq!(outbox.unacknowledged_alerts(), 3);
        assert_eq!(outbox.alerts_in_memory(), 0, "all three spooled");
        drop(outbox);
        assert_eq!(spooled(&metrics), 3.0);
        drop(path);
        let (_, replay) = Spool::open(dir.path(), MIN_BYTES * 64).unwrap();
        let ids: Vec<u64> = replay.records.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(replay.records[2].message.topic, "a/d1/alert");
    }

    #[test]
    fn a_spool_that_cannot_be_written_keeps_the_batch_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let (spool, _) = Spool::open(&spool_dir, MIN_BYTES * 64).unwrap();
        // The first record opens a segment file: in a directory that is gone.
        std::fs::remove_dir_all(&spool_dir).unwrap();
        let metrics = Metrics::new();
        let mut path = path(Some(spool), &metrics);
        path.write(&mut vec![alert("d1", "raise"), alert("d2", "raise")]);
        let outbox = path.shared.outbox();
        assert_eq!(outbox.unacknowledged_alerts(), 2, "none lost");
        assert_eq!(outbox.alerts_in_memory(), 2, "none claimed as spooled");
        drop(outbox);
        assert_eq!(spooled(&metrics), 0.0);
    }
}
